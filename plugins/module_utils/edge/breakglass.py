# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``lifeboat-decrypt``: the break-glass reader of one backup artifact.

Usage::

    lifeboat-decrypt --key-file KEYFILE [-o OUTPUT] ARTIFACT

Finds the set's ``backup_manifest.json`` by walking up from ARTIFACT, unwraps the
set's data key with KEYFILE (the primary or an escrow key file), and streams the
artifact's plaintext to standard output (or to OUTPUT). Needs only Python's standard
library plus ``cryptography`` and ``zstandard``: no Ansible, no Vault, no network.

Every chunk is authenticated before its plaintext is written; the whole plaintext's
size and SHA-256 are checked against the manifest at the end. Exit status:

* 0 - the whole artifact was written and authenticated;
* 1 - any other failure (I/O, broken pipe);
* 2 - usage error;
* 3 - key problem: wrong key, a key the set was not wrapped for, unsafe key file;
* 4 - integrity failure: tampered, truncated or reordered data;
* 5 - no usable manifest (not inside a set, incomplete set, unknown format version).

On failure one line goes to standard error. When the failure happens after some
plaintext was already written to standard output, the line says the output is
INCOMPLETE and must not be used. With ``-o`` the output file appears (0600) only
when everything authenticated; otherwise no file is left.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any, BinaryIO, Optional, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    FormatError,
    IncompleteBackup,
    IntegrityError,
    KeyProblem,
    LifeboatError,
    NotFound,
)

PROG = "lifeboat-decrypt"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_KEY, EXIT_INTEGRITY, EXIT_MANIFEST = 0, 1, 2, 3, 4, 5
BUFSIZE = 1 << 20


def exit_code_for(err: BaseException) -> int:
    """The exit status documented above for an error."""
    if isinstance(err, KeyProblem):
        return EXIT_KEY
    if isinstance(err, IntegrityError):
        return EXIT_INTEGRITY
    if isinstance(err, (FormatError, IncompleteBackup, NotFound)):
        return EXIT_MANIFEST
    return EXIT_FAILURE


def find_set_dir(artifact: Path) -> Path:
    """The nearest folder above ``artifact`` holding a manifest; :class:`NotFound` if none."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import MANIFEST_NAME

    for folder in artifact.resolve().parents:
        if (folder / MANIFEST_NAME).is_file():
            return folder
    raise NotFound(f"no {MANIFEST_NAME} found in any folder above {artifact}",
                   hint="the artifact must stay inside its backup set folder (copy the whole set)")


def _record_for(manifest: dict[str, Any], rel: str, artifact: Path) -> dict[str, Any]:
    for record in manifest["artifacts"]:
        if record["path"] == rel:
            return record
    if any(f["path"] == rel for f in manifest["files"]):
        raise NotFound(f"{artifact} is a plaintext metadata file of the set, not an encrypted artifact",
                       hint="read it directly")
    raise NotFound(f"{artifact} ({rel}) is not an artifact listed in the manifest of set {manifest['id']}")


def open_plaintext(artifact: Path, key_file: Path):
    """A reader of ``artifact``'s plaintext, after unwrapping the data key with ``key_file``
    and authenticating the manifest with it."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys, pipeline
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import check_manifest_mac, load_manifest

    if not artifact.is_file():
        raise NotFound(f"artifact {artifact} does not exist")
    set_dir = find_set_dir(artifact)
    manifest = load_manifest(set_dir)
    rel = artifact.resolve().relative_to(set_dir.resolve()).as_posix()
    record = _record_for(manifest, rel, artifact)
    ring = keys.KeyRing(keys.FileKEK.load(key_file))
    data_key = ring.unwrap(manifest["encryption"]["data_key_wraps"])
    check_manifest_mac(manifest, data_key)
    return pipeline.open_artifact_reader(artifact, data_key=data_key, set_id=manifest["id"],
                                         artifact_path=rel, record=record)


def _copy(reader: Any, out: BinaryIO) -> int:
    total = 0
    read = getattr(reader, "read1", None) or reader.read
    while True:
        block = read(BUFSIZE)
        if not block:
            out.flush()
            return total
        out.write(block)
        total += len(block)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"{PROG}: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    return code


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Decrypt one Lifeboat backup artifact (break-glass).")
    parser.add_argument("--key-file", required=True, type=Path,
                        help="32-byte key file (mode 0600/0400): the primary or an escrow key")
    parser.add_argument("-o", "--output", type=Path,
                        help="write the plaintext to this new file (0600) instead of standard output; "
                             "it appears only if the whole artifact authenticates")
    parser.add_argument("artifact", type=Path, help="the artifact file inside its backup set folder")
    return parser.parse_args(argv)


def _to_file(reader: Any, output: Path) -> int:
    """Stream into a temp file next to ``output``; rename only after full success."""
    tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.incomplete")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            total = _copy(reader, out)
            os.fsync(out.fileno())
        if output.exists():
            raise FileExistsError(f"{output} already exists; not overwritten")
        os.rename(tmp, output)
        return total
    finally:
        if tmp.exists():
            tmp.unlink()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``lifeboat-decrypt``; returns the exit status (see the module docstring)."""
    try:
        args = _parse(argv)
    except SystemExit as stop:
        return int(stop.code or 0) and EXIT_USAGE
    written = 0
    try:
        reader = open_plaintext(args.artifact, args.key_file)
    except (LifeboatError, OSError) as err:
        return _fail(f"{type(err).__name__}: {err}; nothing was written", exit_code_for(err))
    try:
        with reader:
            if args.output:
                _to_file(reader, args.output)
                return EXIT_OK
            out = sys.stdout.buffer
            read = getattr(reader, "read1", None) or reader.read
            while True:
                block = read(BUFSIZE)
                if not block:
                    break
                out.write(block)
                written += len(block)
            out.flush()
        return EXIT_OK
    except BrokenPipeError:
        _silence_stdout()
        return _fail(f"output pipe closed after {written} bytes; the plaintext written is INCOMPLETE", EXIT_FAILURE)
    except (LifeboatError, OSError) as err:
        if args.output:
            tail = f"no output file was written ({args.output})"
        elif written:
            tail = f"OUTPUT IS INCOMPLETE: {written} bytes were written before the error; do not use them"
        else:
            tail = "nothing was written"
        return _fail(f"{type(err).__name__}: {err}; {tail}", exit_code_for(err))


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's exit flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
