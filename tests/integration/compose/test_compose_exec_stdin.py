"""Streamed input into an exec on this machine's podman, through the Docker API (issue #19).

Podman's exec stdin/EOF handling has a history of hangs (podman#7360, #7479): these tests
prove that 100 MB pushed through exec stdin arrive whole, with their EOF, and that the
fallback (a 0600 file copied in with put_archive, the command run on it) works too.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError
from lab.compose import execio

SIZE = 100 * 1024 * 1024
#: Counts and hashes its stdin (or the file named by argv[1]); prints "bytes sha256".
DIGEST = ("import hashlib, sys\n"
          "src = open(sys.argv[1], 'rb') if len(sys.argv) > 1 else sys.stdin.buffer\n"
          "h, n = hashlib.sha256(), 0\n"
          "for block in iter(lambda: src.read(1 << 20), b''):\n"
          "    h.update(block); n += len(block)\n"
          "print(n, h.hexdigest())\n")


def payload_chunks(seed: bytes = b"lifeboat") -> tuple[list[bytes], str]:
    """100 MB of incompressible-looking data as 1 MiB chunks, and its sha256."""
    block = hashlib.sha256(seed).digest() * (execio.CHUNK // 32)
    chunks = [bytes([i % 251]) + block[1:] for i in range(SIZE // execio.CHUNK)]
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return chunks, digest.hexdigest()


@pytest.fixture(scope="module")
def app_container(compose_lab, docker_client):
    from lab.compose import lab as compose_lab_module

    return compose_lab_module.container_name(compose_lab, "app")


def test_100_mb_through_exec_stdin_arrive_whole_with_their_eof(docker_client, app_container):
    chunks, expected = payload_chunks()
    result = execio.exec_stream(docker_client, app_container, ["python3", "-c", DIGEST], chunks, timeout_s=300)
    assert result.exit_code == 0, result.stderr[-2000:]
    assert result.stdout.decode().split() == [str(SIZE), expected]


def test_secrets_reach_the_exec_through_its_environment_not_argv(docker_client, app_container):
    secret = "s3cr3t-" + os.urandom(6).hex()
    result = execio.exec_stream(docker_client, app_container,
                                ["sh", "-c", 'test "$LIFEBOAT_SECRET" = "$(cat)" && cat /proc/self/cmdline'],
                                execio.stdin_of(secret.encode()), env={"LIFEBOAT_SECRET": secret})
    assert result.exit_code == 0, result.stderr
    assert secret.encode() not in result.stdout


def test_fallback_copies_a_0600_file_in_and_runs_on_it(docker_client, app_container):
    chunks, expected = payload_chunks(b"fallback")
    result = execio.exec_on_file(docker_client, app_container,
                                 ["sh", "-c", "stat -c %a {file} >&2; python3 -c \"$0\" {file}", DIGEST],
                                 chunks[:8], timeout_s=120)
    size = 8 * execio.CHUNK
    digest = hashlib.sha256(b"".join(chunks[:8])).hexdigest()
    assert expected and result.exit_code == 0, result.stderr
    assert result.stderr.decode().strip() == "600"
    assert result.stdout.decode().split() == [str(size), digest]
    leftovers = execio.exec_stream(docker_client, app_container, ["sh", "-c", "ls -a /tmp"], [])
    assert b".lifeboat-input-" not in leftovers.stdout


def test_a_command_that_never_ends_is_stopped_by_the_deadline(docker_client, app_container):
    with pytest.raises(LifeboatError, match="no end after 2 s"):
        execio.exec_stream(docker_client, app_container, ["sleep", "30"], [], timeout_s=2)


def test_a_failing_command_reports_its_exit_code_and_stderr(docker_client, app_container):
    result = execio.exec_stream(docker_client, app_container, ["sh", "-c", "cat >/dev/null; echo boom >&2; exit 3"],
                                execio.stdin_of(b"x" * 1000))
    assert (result.exit_code, result.stderr) == (3, b"boom\n")
