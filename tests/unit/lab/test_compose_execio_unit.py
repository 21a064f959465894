"""The Docker multiplexed-stream decoder of lab/compose/execio.py (8-byte frame headers)."""

from __future__ import annotations

import struct

from lab.compose import execio


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


def test_frames_are_split_into_stdout_and_stderr():
    buffer, out, err = bytearray(frame(1, b"hello ") + frame(2, b"oops") + frame(1, b"world")), bytearray(), bytearray()
    execio._demux(buffer, out, err)
    assert (bytes(out), bytes(err), bytes(buffer)) == (b"hello world", b"oops", b"")


def test_a_partial_frame_waits_for_the_rest():
    whole = frame(1, b"x" * 100)
    buffer, out, err = bytearray(whole[:50]), bytearray(), bytearray()
    execio._demux(buffer, out, err)
    assert (bytes(out), len(buffer)) == (b"", 50)
    buffer.extend(whole[50:])
    execio._demux(buffer, out, err)
    assert (bytes(out), bytes(buffer)) == (b"x" * 100, b"")


def test_stdin_of_yields_chunks_of_at_most_one_mebibyte():
    chunks = list(execio.stdin_of(b"a" * (execio.CHUNK * 2 + 5)))
    assert [len(c) for c in chunks] == [execio.CHUNK, execio.CHUNK, 5]
