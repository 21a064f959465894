"""Key files, key ids, wrapping, escrow and rotation."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import (
    KEY_SIZE,
    FileKEK,
    KeyRing,
    create_key_file,
    key_id_of,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    InsecureKeyFile,
    KeyUnavailable,
    WrongKey,
)


@pytest.fixture()
def key_file(tmp_path):
    path = tmp_path / "primary.key"
    create_key_file(path)
    return path


@pytest.fixture()
def escrow_file(tmp_path):
    path = tmp_path / "escrow.key"
    create_key_file(path)
    return path


def test_create_key_file_writes_32_random_bytes_mode_0600_and_returns_the_key_id(tmp_path):
    path = tmp_path / "k"
    key_id = create_key_file(path)
    raw = path.read_bytes()
    assert len(raw) == KEY_SIZE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_id == hashlib.sha256(raw).digest()[:8].hex() == FileKEK.load(path).key_id
    assert create_key_file(tmp_path / "k2") != key_id


def test_create_key_file_refuses_to_overwrite(key_file):
    before = key_file.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        create_key_file(key_file)
    assert key_file.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700, 0o666])
def test_key_file_readable_by_others_is_refused_with_chmod_hint(key_file, mode):
    os.chmod(key_file, mode)
    with pytest.raises(InsecureKeyFile, match=f"chmod 600 {key_file}"):
        FileKEK.load(key_file)


def test_read_only_key_file_is_accepted(key_file):
    os.chmod(key_file, 0o400)
    assert FileKEK.load(key_file).key_id == key_id_of(key_file.read_bytes())


@pytest.mark.parametrize("content", [os.urandom(31), os.urandom(33), os.urandom(32).hex().encode(),
                                     base64.b64encode(os.urandom(32)), b""])
def test_key_file_of_wrong_size_is_refused(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(InsecureKeyFile, match="exactly 32 raw"):
        FileKEK.load(path)


def test_missing_key_file_is_key_unavailable(tmp_path):
    with pytest.raises(KeyUnavailable, match="does not exist"):
        FileKEK.load(tmp_path / "nope")


def test_wrap_unwrap_round_trip_and_wraps_differ_each_time(key_file):
    kek = FileKEK.load(key_file)
    data_key = os.urandom(32)
    a, b = kek.wrap(data_key), kek.wrap(data_key)
    assert a != b and data_key not in a
    assert kek.unwrap(a) == data_key == kek.unwrap(b)


def test_altered_wrap_is_wrong_key(key_file):
    kek = FileKEK.load(key_file)
    wrapped = bytearray(kek.wrap(os.urandom(32)))
    wrapped[20] ^= 1
    with pytest.raises(WrongKey, match=kek.key_id):
        kek.unwrap(bytes(wrapped))


def test_wrap_is_bound_to_the_key_id(key_file):
    """AAD = key id: a wrap cannot be passed off as made by a KEK with another id."""
    kek = FileKEK.load(key_file)
    wrapped = kek.wrap(os.urandom(32))
    impostor = FileKEK(kek._key)
    impostor.key_id = "0000000000000000"
    with pytest.raises(WrongKey):
        impostor.unwrap(wrapped)


def test_key_ring_wraps_under_primary_and_every_escrow(key_file, escrow_file):
    ring = KeyRing.from_options(key_file=key_file, escrow_key_file=escrow_file)
    data_key, wraps = ring.new_data_key()
    assert len(data_key) == 32
    assert [w["key_id"] for w in wraps] == [FileKEK.load(key_file).key_id, FileKEK.load(escrow_file).key_id]
    assert all(w["kind"] == "file" and w["algorithm"] == "AES-256-GCM" for w in wraps)
    assert all(data_key not in base64.b64decode(w["wrapped"]) for w in wraps)
    assert KeyRing(FileKEK.load(key_file)).unwrap(wraps) == data_key
    assert KeyRing(FileKEK.load(escrow_file)).unwrap(wraps) == data_key  # break-glass
    assert not ring.has_transit


def test_unwrap_without_a_matching_key_lists_the_needed_key_ids(key_file, escrow_file, tmp_path):
    wraps = KeyRing(FileKEK.load(key_file)).new_data_key()[1]
    create_key_file(tmp_path / "other")
    other = FileKEK.load(tmp_path / "other")
    with pytest.raises(KeyUnavailable) as info:
        KeyRing(other).unwrap(wraps)
    assert FileKEK.load(key_file).key_id in str(info.value) and other.key_id in str(info.value)


def test_rewrap_rotates_the_primary_without_changing_the_data_key(key_file, escrow_file, tmp_path):
    ring = KeyRing(FileKEK.load(key_file), [FileKEK.load(escrow_file)])
    data_key, wraps = ring.new_data_key()
    create_key_file(tmp_path / "new")
    new = FileKEK.load(tmp_path / "new")
    rotated = ring.rewrap(wraps, new)
    assert [w["key_id"] for w in rotated] == [new.key_id, FileKEK.load(escrow_file).key_id]
    assert KeyRing(new).unwrap(rotated) == data_key
    assert KeyRing(FileKEK.load(escrow_file)).unwrap(rotated) == data_key
    with pytest.raises(KeyUnavailable):
        KeyRing(FileKEK.load(key_file)).unwrap(rotated)  # the old primary is retired


def test_rewrap_can_keep_the_old_key(key_file, tmp_path):
    ring = KeyRing(FileKEK.load(key_file))
    data_key, wraps = ring.new_data_key()
    create_key_file(tmp_path / "new")
    rotated = ring.rewrap(wraps, FileKEK.load(tmp_path / "new"), retire=[])
    assert len(rotated) == 2 and ring.unwrap(rotated) == data_key


def test_from_options_needs_at_least_one_kek():
    with pytest.raises(ConfigError, match="no key-encryption key"):
        KeyRing.from_options()


def test_escrow_key_alone_is_enough_for_break_glass(escrow_file):
    ring = KeyRing.from_options(escrow_key_file=escrow_file)
    assert ring.primary.key_id == FileKEK.load(escrow_file).key_id


def test_the_same_key_twice_is_refused(key_file):
    with pytest.raises(ConfigError, match="twice"):
        KeyRing.from_options(key_file=key_file, escrow_key_file=key_file)


def test_repr_never_shows_the_key(key_file):
    kek = FileKEK.load(key_file)
    assert key_file.read_bytes().hex() not in repr(kek) + str(kek.__dict__.get("key_id"))
