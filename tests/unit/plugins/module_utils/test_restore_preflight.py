"""restore_preflight.check_set: a restore is refused before anything changes when the set, a key or
an artifact is not good (issue 17). Real sets in a temporary store, real keys, real damage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import restore_preflight as pf
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import MANIFEST_NAME
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import VerificationFailed

MYSQL_DUMP = b"CREATE TABLE t (id INT);\n" + b"INSERT INTO t VALUES (1);\n" * 5000
REDIS_RDB = os.urandom(70_000)


def key_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    keys.create_key_file(path)
    return path


@pytest.fixture()
def key_files(tmp_path: Path) -> dict[str, Path]:
    return {name: key_file(tmp_path, f"{name}.key") for name in ("primary", "escrow", "other")}


def ring_of(*paths: Path) -> keys.KeyRing:
    return keys.KeyRing.from_options(key_file=paths[0], escrow_key_file=list(paths[1:]) or None)


@pytest.fixture()
def written(tmp_path: Path, key_files) -> tuple[Store, str]:
    """A published set (mysql + redis) written with the primary and the escrow key."""
    store = Store(tmp_path / "store", reserve_bytes=0)
    with store.begin_set("full", ["mysql", "redis"], ring_of(key_files["primary"], key_files["escrow"])) as writer:
        with writer.artifact("mysql", "dump.sql") as out:
            out.write(MYSQL_DUMP)
        with writer.artifact("redis", "dump.rdb") as out:
            out.write(REDIS_RDB)
        writer.write_json("mysql", "binlog_position.json", {"file": "mariadb-bin.000003", "position": 1234})
        set_id = writer.publish()["id"]
    return store, set_id


def failed(report: dict) -> list[str]:
    return [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"]]


def check(written, ring, components=("mysql", "redis")) -> dict:
    store, set_id = written
    return pf.check_set(str(store.root), set_id, ring, list(components))


def artifact_path(written, component: str) -> Path:
    store, set_id = written
    backup_set = store.open_set(set_id)
    return backup_set.path / backup_set.artifacts(component)[0]["path"]


def test_a_good_set_passes_every_check_and_counts_the_bytes_read_back(written, key_files):
    report = check(written, ring_of(key_files["primary"], key_files["escrow"]))
    assert failed(report) == []
    names = [c["name"] for c in report["checks"]]
    assert any("escrow key" in n and "unwraps" in n for n in names)
    assert "the manifest authenticates" in names
    assert sum("reads back" in n for n in names) == 3  # two artifacts and the JSON file
    assert report["bytes_checked"] == sum(r["stored_size"] for r in written[0].open_set(written[1]).artifacts())


def test_a_wrong_key_is_refused_naming_the_key_and_the_key_ids_the_set_needs(written, key_files):
    report = check(written, ring_of(key_files["other"]))
    problems = failed(report)
    assert len(problems) == 1 and str(key_files["other"]) in problems[0]
    assert keys.FileKEK.load(key_files["primary"]).key_id in problems[0]  # what the set needs
    assert report["bytes_checked"] == 0  # nothing could be read without the key


def test_a_wrong_escrow_key_is_refused_although_the_primary_key_opens_the_set(written, key_files):
    problems = failed(check(written, ring_of(key_files["primary"], key_files["other"])))
    assert len(problems) == 1
    assert problems[0].startswith(f"escrow key {key_files['other']}")


def test_a_flipped_byte_in_an_artifact_is_refused_naming_the_artifact(written, key_files):
    path = artifact_path(written, "redis")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problems = failed(check(written, ring_of(key_files["primary"], key_files["escrow"])))
    assert len(problems) == 1 and path.name in problems[0]


def test_a_truncated_artifact_is_refused(written, key_files):
    path = artifact_path(written, "mysql")
    path.write_bytes(path.read_bytes()[:-100])
    problems = failed(check(written, ring_of(key_files["primary"], key_files["escrow"])))
    assert len(problems) == 1 and path.name in problems[0]


def test_a_missing_artifact_is_refused(written, key_files):
    path = artifact_path(written, "mysql")
    path.unlink()
    problems = failed(check(written, ring_of(key_files["primary"], key_files["escrow"])))
    assert len(problems) == 1 and "missing" in problems[0] and path.name in problems[0]


def test_only_the_components_restored_are_read(written, key_files):
    artifact_path(written, "mysql").unlink()
    assert failed(check(written, ring_of(key_files["primary"], key_files["escrow"]), components=["redis"])) == []


def test_an_edited_manifest_is_refused(written, key_files):
    store, set_id = written
    manifest_file = store.open_set(set_id).path / MANIFEST_NAME
    manifest = json.loads(manifest_file.read_text())
    manifest["component_metadata"]["mysql"] = {"gtid_binlog_pos": "0-1-999999"}
    manifest_file.write_text(json.dumps(manifest))
    problems = failed(check(written, ring_of(key_files["primary"], key_files["escrow"])))
    assert problems and "manifest authenticates" in problems[-1] and "modified" in problems[-1]


def test_a_set_without_a_component_to_restore_is_refused(written, key_files):
    problems = failed(check(written, ring_of(key_files["primary"], key_files["escrow"]), components=["vault"]))
    assert problems and "has no vault" in problems[0]


def test_refuse_unless_ok_names_every_failed_check_and_says_nothing_changed():
    with pytest.raises(VerificationFailed) as err:
        checks = [pf._check("a", True), pf._check("b", False, "why b"), pf._check("c", False, "why c")]
        pf.refuse_unless_ok("the restore of S", checks)
    text = str(err.value)
    assert "preflight refused the restore of S, nothing was changed" in text
    assert "b: why b" in text and "c: why c" in text and "a:" not in text


def test_the_safety_copy_keys_must_be_the_stores_own(written, key_files):
    store, _set_id = written
    assert [c for c in pf.check_store_keys(str(store.root), ring_of(key_files["primary"], key_files["escrow"]))
            if not c["ok"]] == []
    problems = [c for c in pf.check_store_keys(str(store.root), ring_of(key_files["other"])) if not c["ok"]]
    assert len(problems) == 1 and "safety copy keys are the store's" in problems[0]["name"]
    assert str(key_files["other"]) in problems[0]["name"]


def test_an_empty_store_has_no_keys_to_compare_with(tmp_path, key_files):
    assert pf.check_store_keys(str(tmp_path / "empty"), ring_of(key_files["other"])) == []
