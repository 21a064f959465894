"""Streamed input into a command in a container: the lab's name for Lifeboat's own helper.

The code lives in ``plugins/module_utils/util/container_exec.py`` (the docker deployment
target uses it); the lab and its tests import it from here.
"""

from ansible_collections.lifeboat.dr.plugins.module_utils.util.container_exec import (  # noqa: F401
    CHUNK,
    DEFAULT_TIMEOUT_S,
    ExecResult,
    _demux,
    exec_on_file,
    exec_stream,
    stdin_of,
)
