"""The scratch MariaDB's configuration and folder handling (no server started here)."""

from __future__ import annotations

import os

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import scratch as mysql_scratch


def test_the_scratch_server_is_private_local_and_binlog_free():
    scratch = mysql_scratch.ScratchMariaDB(base_dir="/tmp")
    try:
        text = scratch.config_text()
        assert "bind-address = 127.0.0.1" in text and f"port = {scratch.port}" in text
        assert f"socket = {scratch.socket}" in text and f"datadir = {scratch.datadir}" in text
        assert "skip-log-bin" in text and "password" not in text
        assert (os.stat(scratch.root).st_mode & 0o777) == 0o700
        assert scratch.params.unix_socket == str(scratch.socket) and scratch.params.password is None
        assert scratch.port not in (3306, 13306)
    finally:
        scratch.cleanup()
    assert not scratch.root.exists()


def test_a_work_dir_too_long_for_a_socket_path_falls_back_to_the_temp_folder(tmp_path):
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    scratch = mysql_scratch.ScratchMariaDB(base_dir=str(deep))
    try:
        assert len(str(scratch.socket)) <= mysql_scratch.MAX_SOCKET_PATH
        assert not str(scratch.root).startswith(str(deep))
    finally:
        scratch.cleanup()


def test_cleanup_of_a_never_started_server_is_harmless_and_idempotent():
    scratch = mysql_scratch.ScratchMariaDB()
    scratch.cleanup()
    scratch.cleanup()
    assert not scratch.root.exists() and not scratch.is_running()
