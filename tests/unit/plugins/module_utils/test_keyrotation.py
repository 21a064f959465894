"""Key rotation: every set's data key is rewrapped under a new KEK; no artifact byte changes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, keyrotation
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import PARTIAL_DIR
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import MANIFEST_NAME, load_manifest
from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, KeyUnavailable, LockHeld


def make_key(path: Path) -> keys.FileKEK:
    keys.create_key_file(path)
    return keys.FileKEK.load(path)


@pytest.fixture()
def kek(tmp_path: Path) -> dict[str, keys.FileKEK]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: make_key(folder / f"{name}.key") for name in ("old", "escrow", "new", "other")}


def publish(store: Store, ring: keys.KeyRing, set_type: str, components: list[str], parent: str | None = None,
            payload: bytes = b"lifeboat " * 300) -> str:
    with store.begin_set(set_type, components, ring, parent=parent, lock=None) as writer:
        for component in components:
            with writer.artifact(component, "data.bin") as out:
                out.write(payload + component.encode())
        writer.write_json(components[0], "meta.json", {"n": 1})
        return writer.publish(quick_verify=False)["id"]


@pytest.fixture()
def store(tmp_path: Path, kek) -> Store:
    """Three sets under old+escrow: a full set, a vault set and a binlog set in binlogs/<uuid>/g1."""
    st = Store(tmp_path / "store", reserve_bytes=0)
    ring = keys.KeyRing(kek["old"], [kek["escrow"]])
    publish(st, ring, "full", ["mysql", "app"])
    publish(st, ring, "vault", ["vault"])
    publish(st, ring, "binlog", ["binlog"], parent="binlogs/uuid-1/g1")
    return st


def hashes(root: Path, skip_manifests: bool = True) -> dict[str, str]:
    """SHA-256 of every file below ``root`` (manifests and the store's bookkeeping folders left out)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in ("audit", "jobs", "locks", "verifications"):
            continue
        if skip_manifests and path.name == MANIFEST_NAME:
            continue
        out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def opens_and_verifies(set_dir: Path, ring: keys.KeyRing) -> bool:
    return bool(BackupSet(set_dir).quick_verify(ring)["ok"])


def test_finds_root_and_binlog_sets_but_not_partials_or_bookkeeping(store):
    paths = keyrotation.published_set_paths(store.root)
    assert len(paths) == 3
    assert any(p.parent.name == "g1" and p.parent.parent.parent.name == "binlogs" for p in paths)
    assert all(PARTIAL_DIR not in p.parts for p in paths)


def test_rotation_rewraps_every_set_without_touching_any_artifact(store, kek):
    before = hashes(store.root)
    result = keyrotation.rotate_store(store, keys.KeyRing(kek["old"], [kek["escrow"]]), kek["new"])
    assert result["ok"] and result["changed"]
    assert len(result["rotated"]) == 3 and not result["failed_sets"] and not result["already_rotated"]
    assert all(e["quick_verify"] == "passed" for e in result["rotated"])
    assert all(e["removed_key_ids"] == [kek["old"].key_id] for e in result["rotated"])
    assert hashes(store.root) == before  # every artifact and JSON file byte-identical
    only_new, only_old, only_escrow = (keys.KeyRing(kek[n]) for n in ("new", "old", "escrow"))
    for set_dir in keyrotation.published_set_paths(store.root):
        wraps = load_manifest(set_dir)["encryption"]["data_key_wraps"]
        assert [w["key_id"] for w in wraps] == [kek["new"].key_id, kek["escrow"].key_id]
        assert opens_and_verifies(set_dir, only_new)
        assert opens_and_verifies(set_dir, only_escrow)  # the escrow wrap is kept
        with pytest.raises(KeyUnavailable):
            BackupSet(set_dir).data_key(only_old)


def test_manifest_changes_only_in_its_wraps_and_its_mac_still_verifies(store, kek):
    set_dir = keyrotation.published_set_paths(store.root)[0]
    before = load_manifest(set_dir)
    keyrotation.rotate_store(store, keys.KeyRing(kek["old"], [kek["escrow"]]), kek["new"], verify=False)
    after = load_manifest(set_dir)
    assert after["manifest_mac"] == before["manifest_mac"]
    for manifest in (before, after):
        manifest["encryption"].pop("data_key_wraps")
    assert after == before
    BackupSet(set_dir).data_key(keys.KeyRing(kek["new"]))  # MAC checked with the unwrapped key


def test_second_run_is_a_no_op(store, kek):
    ring = keys.KeyRing(kek["old"], [kek["escrow"]])
    keyrotation.rotate_store(store, ring, kek["new"])
    manifests = {p: (p / MANIFEST_NAME).read_bytes() for p in keyrotation.published_set_paths(store.root)}
    again = keyrotation.rotate_store(store, ring, kek["new"])
    assert again["ok"] and not again["changed"]
    assert len(again["already_rotated"]) == 3 and not again["rotated"]
    assert {p: (p / MANIFEST_NAME).read_bytes() for p in manifests} == manifests


def test_check_mode_lists_what_would_change_and_writes_nothing(store, kek):
    before = hashes(store.root, skip_manifests=False)
    result = keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["new"], check_mode=True)
    assert result["check_mode"] and result["changed"]
    assert {e["status"] for e in result["rotated"]} == {"would_rotate"} and len(result["rotated"]) == 3
    assert hashes(store.root, skip_manifests=False) == before
    assert not audit.audit_path(store.root).exists()


def test_keep_old_keeps_the_old_wrap(store, kek):
    keyrotation.rotate_store(store, keys.KeyRing(kek["old"], [kek["escrow"]]), kek["new"], keep_old=True)
    for set_dir in keyrotation.published_set_paths(store.root):
        ids = [w["key_id"] for w in load_manifest(set_dir)["encryption"]["data_key_wraps"]]
        assert ids == [kek["new"].key_id, kek["old"].key_id, kek["escrow"].key_id]
        assert opens_and_verifies(set_dir, keys.KeyRing(kek["old"]))


def test_escrow_alone_can_rotate_when_the_old_key_is_lost(store, kek):
    result = keyrotation.rotate_store(store, keys.KeyRing(kek["escrow"]), kek["new"],
                                      retire_key_ids=[kek["old"].key_id])
    assert result["ok"] and len(result["rotated"]) == 3
    for set_dir in keyrotation.published_set_paths(store.root):
        ids = [w["key_id"] for w in load_manifest(set_dir)["encryption"]["data_key_wraps"]]
        assert ids == [kek["new"].key_id, kek["escrow"].key_id]  # the escrow key is never retired


def test_a_set_the_given_keys_cannot_unwrap_is_reported_and_the_others_are_rotated(store, kek):
    stranger = publish(store, keys.KeyRing(kek["other"]), "redis", ["redis"])
    result = keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["new"])
    assert not result["ok"] and result["changed"]
    assert [e["set_id"] for e in result["failed_sets"]] == [stranger]
    assert result["failed_sets"][0]["error_type"] == "KeyUnavailable" and keyrotation.is_key_failure(result)
    assert len(result["rotated"]) == 3
    record = audit.read_records(store.root)[-1]
    assert record["result"] == "failed" and record["details"]["failed_sets"][0]["set_id"] == stranger


def test_a_transit_kek_is_refused_for_sets_holding_vault(store, kek):
    # a real TransitKEK aimed at a closed local port: the refusal comes before any call to Vault
    transit = keys.TransitKEK(url="http://127.0.0.1:9", token="not-used", key_name="lifeboat", timeout=2.0)
    result = keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), transit, check_mode=True)
    by_kind = {e["set_id"].split("_")[0]: e["error_type"] for e in result["failed_sets"]}
    assert by_kind["vault"] == "ConfigError"
    assert "transit" in next(e["error"] for e in result["failed_sets"] if e["set_id"].startswith("vault_"))
    assert by_kind["full"] == by_kind["binlog"] == "ConnectionFailure"  # the others were tried with Vault


def test_a_set_damaged_before_the_rotation_is_rotated_but_reported_by_its_quick_verify(store, kek):
    set_dir = next(p for p in keyrotation.published_set_paths(store.root) if p.name.startswith("full_"))
    artifact = set_dir / "mysql" / "data.bin"
    data = bytearray(artifact.read_bytes())
    data[100] ^= 1
    artifact.write_bytes(bytes(data))
    result = keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["new"])
    assert not result["ok"] and result["verify_failed"] == [set_dir.name]
    entry = next(e for e in result["rotated"] if e["set_id"] == set_dir.name)
    assert entry["quick_verify"].startswith("FAILED") and "mysql/data.bin" in entry["quick_verify"]
    BackupSet(set_dir).data_key(keys.KeyRing(kek["new"]))  # the rotation itself succeeded


def test_the_new_key_must_differ_from_the_old_and_escrow_keys(store, kek):
    with pytest.raises(ConfigError):
        keyrotation.rotate_store(store, keys.KeyRing(kek["old"], [kek["escrow"]]), kek["escrow"])
    with pytest.raises(ConfigError):
        keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["old"])


def test_a_crash_between_write_and_rename_leaves_the_old_manifest_intact(store, kek, monkeypatch):
    set_dir = keyrotation.published_set_paths(store.root)[0]
    old_bytes = (set_dir / MANIFEST_NAME).read_bytes()
    written = []
    real_replace = os.replace

    def crash(src, dst):
        if Path(dst).name != MANIFEST_NAME:
            return real_replace(src, dst)
        written.append(Path(src).name)
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(keyrotation.os, "replace", crash)
    result = keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["new"])
    assert len(result["failed_sets"]) == 3 and "cannot write the manifest" in result["failed_sets"][0]["error"]
    assert len(written) == 3  # a temporary file was written and only it would have been renamed
    assert all(name.startswith(keyrotation.TEMP_PREFIX) for name in written)
    assert (set_dir / MANIFEST_NAME).read_bytes() == old_bytes
    assert not list(set_dir.glob(".*"))  # the temporary file is gone too
    assert opens_and_verifies(set_dir, keys.KeyRing(kek["old"]))


def test_a_temp_file_left_by_a_killed_rotation_is_removed_by_the_next_one(store, kek):
    set_dir = keyrotation.published_set_paths(store.root)[0]
    leftover = set_dir / f"{keyrotation.TEMP_PREFIX}deadbeef"
    leftover.write_bytes(b"{half a manif")
    keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["new"])
    assert not leftover.exists()


def test_a_manifest_that_fails_authentication_is_not_rewritten(store, kek):
    set_dir = keyrotation.published_set_paths(store.root)[0]
    manifest = json.loads((set_dir / MANIFEST_NAME).read_text())
    manifest["component_metadata"] = {"mysql": {"gtid_binlog_pos": "0-1-999"}}
    (set_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    tampered = (set_dir / MANIFEST_NAME).read_bytes()
    result = keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["new"])
    assert [e["error_type"] for e in result["failed_sets"]] == ["TamperedData"]
    assert (set_dir / MANIFEST_NAME).read_bytes() == tampered


def test_rotation_waits_for_no_backup_but_not_alongside_a_prune(store, kek):
    with store.lock("create"), store.lock("binlog"):
        assert keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["new"])["ok"]
    with store.lock("prune"), pytest.raises(LockHeld):
        keyrotation.rotate_store(store, keys.KeyRing(kek["new"]), kek["other"])


def test_partial_sets_under_the_old_key_are_reported_as_pending(store, kek):
    writer = store.begin_set("mysql", ["mysql"], keys.KeyRing(kek["old"]), lock=None)
    try:
        result = keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["new"])
        assert result["pending_partials"] == [writer.set_id]
    finally:
        writer.abort()


def test_a_run_leaves_an_audit_record_with_key_ids_only(store, kek):
    keyrotation.rotate_store(store, keys.KeyRing(kek["old"], [kek["escrow"]]), kek["new"])
    record = audit.read_records(store.root)[-1]
    assert record["action"] == "key_rotation" and record["result"] == "changed"
    assert record["details"]["new_key_id"] == kek["new"].key_id
    assert len(record["details"]["rotated_sets"]) == 3
    assert audit.verify(store.root)["ok"]
    text = audit.audit_path(store.root).read_text()
    for name in ("old", "new", "escrow"):
        assert kek[name]._key.hex() not in text


def test_files_stay_private_after_rotation(store, kek):
    keyrotation.rotate_store(store, keys.KeyRing(kek["old"]), kek["new"])
    for set_dir in keyrotation.published_set_paths(store.root):
        assert os.stat(set_dir / MANIFEST_NAME).st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- the lifeboat key commands


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from ansible_collections.lifeboat.dr.plugins.module_utils.edge import cli

    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_key_create_makes_a_private_32_byte_key_prints_its_id_and_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "new.key"
    code, out, _err = run_cli(capsys, "key", "create", str(path))
    key = path.read_bytes()
    assert code == 0 and len(key) == 32 and os.stat(path).st_mode & 0o777 == 0o600
    assert out.strip() == keys.key_id_of(key) and key.hex() not in out
    code, _out, err = run_cli(capsys, "key", "create", str(path))
    assert code != 0 and "already exists" in err
    assert path.read_bytes() == key


def test_key_id_prints_the_id_of_a_key_file(tmp_path, capsys, kek):
    code, out, _err = run_cli(capsys, "key", "id", kek["old"].source)
    assert code == 0 and out.strip() == kek["old"].key_id
    (tmp_path / "loose.key").write_bytes(os.urandom(32))
    os.chmod(tmp_path / "loose.key", 0o644)
    code, _out, err = run_cli(capsys, "key", "id", str(tmp_path / "loose.key"))
    assert code == 3 and "InsecureKeyFile" in err


def test_key_rotate_dry_run_then_rotate_then_nothing_left(store, kek, capsys):
    base = ["key", "rotate", "--store", str(store.root), "--key-file", kek["old"].source,
            "--escrow-key-file", kek["escrow"].source, "--new-key-file", kek["new"].source]
    before = hashes(store.root, skip_manifests=False)
    code, out, _err = run_cli(capsys, *base, "--dry-run")
    assert code == 0 and len([ln for ln in out.splitlines() if ln.startswith("would rotate ")]) == 3
    assert hashes(store.root, skip_manifests=False) == before
    code, out, _err = run_cli(capsys, *base, "--json")
    result = json.loads(out)
    assert code == 0 and len(result["rotated"]) == 3 and result["ok"]
    code, out, _err = run_cli(capsys, *base)
    assert code == 0 and "0 set(s) rotated, 3 already under key" in out


def test_key_rotate_exits_3_when_a_set_cannot_be_unwrapped(store, kek, capsys):
    publish(store, keys.KeyRing(kek["other"]), "redis", ["redis"])
    code, out, _err = run_cli(capsys, "key", "rotate", "--store", str(store.root), "--key-file", kek["old"].source,
                              "--new-key-file", kek["new"].source)
    assert code == 3 and "FAILED redis_" in out and "KeyUnavailable" in out
