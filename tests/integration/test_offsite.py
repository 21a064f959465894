"""Off-site copies: a second copy of each set, verified by manifest hashes; restore can pull it back.

Targets: a folder on this host, a folder on another host over SSH/rsync (the multi-host
lab's ``offsite`` namespace, when it runs), and a REAL S3-compatible server (OpenStack
Swift + s3api, started once per session by ``swift_server.swift_s3``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import swift_server

from ansible_collections.lifeboat.dr.plugins.module_utils import backupset as bs
from ansible_collections.lifeboat.dr.plugins.module_utils import keys, offsite
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import NotFound, TamperedData, VerificationFailed

PART = 5 * 1024 * 1024
BIG = os.urandom(PART * 2 + 12345)  # stored > 2 parts: a 3-part multipart upload


@pytest.fixture(scope="session")
def swift_s3(tmp_path_factory):
    """A real Swift + s3api on 127.0.0.1, started once per session."""
    yield from swift_server.running_swift(tmp_path_factory)


@pytest.fixture()
def ring(tmp_path: Path) -> keys.KeyRing:
    keys.create_key_file(tmp_path / "backup.key")
    return keys.KeyRing(keys.FileKEK.load(tmp_path / "backup.key"))


def publish_set(store: bs.Store, ring: keys.KeyRing, big: bytes = b"") -> str:
    """A published full set: an (incompressible) app artifact, a mysql artifact and a JSON file."""
    with store.begin_set("full", ["mysql", "app"], ring) as writer:
        with writer.artifact("mysql", "dump.sql") as out:
            out.write(b"INSERT INTO t VALUES (1);\n" * 2000)
        with writer.artifact("app", "storage.tar") as out:
            out.write(big or os.urandom(70_000))
        writer.write_json("mysql", "binlog_position.json", {"file": "mysql-bin.000001", "position": 4})
        return writer.publish()["id"]


@pytest.fixture()
def store(tmp_path: Path) -> bs.Store:
    return bs.Store(tmp_path / "store", reserve_bytes=0)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- folder


def test_folder_copy_is_verified_idempotent_and_restorable(tmp_path, store, ring):
    set_id = publish_set(store, ring)
    target = offsite.FolderTarget(tmp_path / "offsite")

    first = offsite.push_set(store.root, target)
    assert first["changed"] and first["verified"] and first["set_id"] == set_id
    assert target.list_sets() == [set_id]
    copy = tmp_path / "offsite" / set_id
    assert not offsite.check_files(copy, bs.load_manifest(copy))
    assert (copy / bs.MANIFEST_NAME).read_bytes() == (store.root / set_id / bs.MANIFEST_NAME).read_bytes()
    assert not (tmp_path / "offsite" / offsite.INCOMING_DIR).exists() or \
        not any((tmp_path / "offsite" / offsite.INCOMING_DIR).iterdir())
    assert offsite.push_set(store.root, target, set_id=set_id)["changed"] is False

    # the local store is lost: pull the newest set back, verified, and it decrypts
    shutil.rmtree(store.root)
    fetched = offsite.fetch_set(target, store.root, keyring=ring)
    assert fetched["changed"] and fetched["set_id"] == set_id
    restored = bs.Store(store.root).open_set(set_id)
    assert restored.quick_verify(ring)["ok"]
    assert offsite.fetch_set(target, store.root, set_id)["changed"] is False


def test_damaged_copies_are_refused_or_repaired(tmp_path, store, ring):
    set_id = publish_set(store, ring)
    target = offsite.FolderTarget(tmp_path / "offsite")
    offsite.push_set(store.root, target)
    artifact = next((tmp_path / "offsite" / set_id / "app").iterdir())

    # a damaged off-site copy is never fetched into a store
    flip_byte(artifact)
    with pytest.raises(VerificationFailed, match="does not match its manifest"):
        offsite.fetch_set(target, tmp_path / "other-store", set_id)
    assert not (tmp_path / "other-store" / set_id).exists()
    # ...and the next push notices and replaces it
    again = offsite.push_set(store.root, target, set_id)
    assert again["changed"] and again["verified"]
    assert offsite.fetch_set(target, tmp_path / "other-store", set_id)["changed"]

    # a damaged LOCAL set is never pushed
    flip_byte(next((store.root / set_id / "app").iterdir()))
    with pytest.raises(VerificationFailed):
        offsite.push_set(store.root, offsite.FolderTarget(tmp_path / "offsite2"), set_id)
    assert offsite.FolderTarget(tmp_path / "offsite2").list_sets() == []


def test_edited_manifest_fails_authentication_on_fetch(tmp_path, store, ring):
    set_id = publish_set(store, ring)
    target = offsite.FolderTarget(tmp_path / "offsite")
    offsite.push_set(store.root, target)
    manifest_file = tmp_path / "offsite" / set_id / bs.MANIFEST_NAME
    manifest_file.write_text(manifest_file.read_text().replace('"owner": ', '"owner": "x", "was": ', 1))
    with pytest.raises(TamperedData):
        offsite.fetch_set(target, tmp_path / "other-store", set_id, keyring=ring)
    assert not (tmp_path / "other-store" / set_id).exists()


def test_missing_sets_are_named(tmp_path, store, ring):
    target = offsite.FolderTarget(tmp_path / "offsite")
    with pytest.raises(NotFound, match="no published backup set"):
        offsite.push_set(store.root if store.root.exists() else tmp_path, target)
    with pytest.raises(NotFound, match="no backup set in the off-site copy"):
        offsite.fetch_set(target, store.root)


# --------------------------------------------------------------------------- S3 (Swift)


def s3_target(server, bucket: str, verify: str = "etag") -> offsite.S3Target:
    return offsite.S3Target(bucket=bucket, prefix="lifeboat/lab", endpoint_url=server.endpoint,
                            access_key=server.access_key, secret_key=server.secret_key, part_size=PART,
                            verify=verify, create_bucket=True)


def test_s3_multipart_copy_verified_and_fetched_back(tmp_path, store, ring, swift_s3):
    set_id = publish_set(store, ring, big=BIG)
    target = s3_target(swift_s3, "lifeboat-offsite")

    pushed = offsite.push_set(store.root, target)
    assert pushed["changed"] and pushed["verified"] and pushed["bytes"] > 2 * PART
    assert target.list_sets() == [set_id]
    # the big artifact really went up in parts (S3 multipart ETag "<md5>-3")
    big = next(a for a in bs.load_manifest(store.root / set_id)["artifacts"] if a["component"] == "app")
    head = target.client.head_object(Bucket="lifeboat-offsite", Key=f"lifeboat/lab/{set_id}/{big['path']}")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["Metadata"]["sha256"] == big["stored_sha256"]
    assert offsite.push_set(store.root, target)["changed"] is False

    shutil.rmtree(store.root)
    fetched = offsite.fetch_set(s3_target(swift_s3, "lifeboat-offsite", verify="download"), store.root,
                                keyring=ring)
    assert fetched["set_id"] == set_id
    assert bs.Store(store.root).open_set(set_id).quick_verify(ring)["ok"]


def test_s3_damaged_object_is_detected_and_replaced(tmp_path, store, ring, swift_s3):
    set_id = publish_set(store, ring)
    target = s3_target(swift_s3, "lifeboat-damage", verify="download")
    offsite.push_set(store.root, target)
    manifest = bs.load_manifest(store.root / set_id)
    key = f"lifeboat/lab/{set_id}/{manifest['artifacts'][0]['path']}"
    target.client.put_object(Bucket="lifeboat-damage", Key=key, Body=b"not the artifact")

    with pytest.raises(VerificationFailed):
        offsite.fetch_set(target, tmp_path / "other-store", set_id)
    assert not (tmp_path / "other-store" / set_id).exists()
    repaired = offsite.push_set(store.root, target, set_id)
    assert repaired["changed"] and repaired["verified"]
    assert offsite.fetch_set(target, tmp_path / "other-store", set_id)["changed"]
