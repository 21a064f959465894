"""A writer killed with SIGKILL mid-stream never leaves a (partial) artifact at its destination."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.format.pipeline import TEMP_SUFFIX

WRITER = r"""
import os, sys
from pathlib import Path
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.format.pipeline import open_artifact_writer

dest = Path(sys.argv[1])
block = os.urandom(1 << 20)
with open_artifact_writer(dest, data_key=b"k" * 32, set_id="full_x", artifact_path="app/files.tar",
                          codec=Codec("zstd", 1)) as writer:
    for i in range(100000):  # ~100 GB: never finishes before the kill
        writer.write(block)
        if i == 8:
            print("STREAMING", flush=True)
"""


def test_sigkill_mid_stream_leaves_no_destination(tmp_path: Path):
    dest = tmp_path / "files.tar.zst.enc"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(dest)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "STREAMING"
        time.sleep(0.2)
        temps = [p for p in tmp_path.iterdir() if p != dest]
        assert len(temps) == 1 and temps[0].stat().st_size > 0  # data was really being written
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not dest.exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1
    name = leftovers[0].name
    assert name.startswith(f".{dest.name}.") and name.endswith(TEMP_SUFFIX)  # hidden, marked incomplete
