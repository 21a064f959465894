"""Backup sets: layout, manifest, atomic publish, catalog, verification records, locks (in-process)."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.store import catalog as catalog_mod
from ansible_collections.lifeboat.dr.plugins.module_utils.store import verification as verification_mod
from ansible_collections.lifeboat.dr.plugins.module_utils.store import writer as writer_mod
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import new_set_id, parse_set_id
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    load_manifest,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.verification import verify_artifact_file
from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import (
    _rename_into_place,
    codec_from,
    codec_state,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    IncompleteBackup,
    InsufficientSpace,
    KeyUnavailable,
    LockHeld,
    NotFound,
    TamperedData,
    UnknownFormatVersion,
    VerificationFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import write_file_atomic
from ansible_collections.lifeboat.dr.plugins.module_utils.util.version import __version__

MYSQL_DUMP = b"CREATE TABLE t (id INT);\n" + b"INSERT INTO t VALUES (1);\n" * 5000
REDIS_RDB = os.urandom(70_000)


@pytest.fixture()
def ring(tmp_path: Path) -> keys.KeyRing:
    keys.create_key_file(tmp_path / "primary.key")
    return keys.KeyRing(keys.FileKEK.load(tmp_path / "primary.key"))


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", reserve_bytes=0)


def write_full_set(store: Store, ring: keys.KeyRing, **kwargs) -> dict:
    """A published full set with mysql + redis artifacts, a JSON file, metadata and sources."""
    with store.begin_set("full", ["mysql", "redis"], ring, **kwargs) as writer:
        with writer.artifact("mysql", "dump.sql") as out:
            out.write(MYSQL_DUMP)
        with writer.artifact("redis", "dump.rdb") as out:
            out.write(REDIS_RDB)
        writer.write_json("mysql", "binlog_position.json", {"file": "mariadb-bin.000003", "position": 1234})
        writer.set_component_metadata("mysql", {"gtid_binlog_pos": "0-1-42"})
        writer.set_component_metadata("redis", {"keys": 17})
        writer.add_source("mysql", "db1", "11.4.2-MariaDB", server_uuid="abc")
        writer.add_source("redis", "cache1", "7.2.4")
        return writer.publish()


def modes_below(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


# --------------------------------------------------------------------------- ids


def test_set_ids_are_typed_utc_and_unique():
    when = datetime(2025, 1, 29, 2, 0, tzinfo=UTC)
    ids = {new_set_id("full", when) for _i in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"full_20250129T020000Z_[0-9a-f]{6}", i) for i in ids)
    assert parse_set_id(next(iter(ids))) == ("full", when)
    with pytest.raises(ConfigError):
        new_set_id("nightly")
    with pytest.raises(ConfigError):
        parse_set_id("../etc")


def test_version_constant_matches_galaxy_yml():
    galaxy = Path(__file__).resolve().parents[4] / "galaxy.yml"
    assert re.search(rf"^version:\s*{re.escape(__version__)}\s*$", galaxy.read_text(), re.M)


# --------------------------------------------------------------------------- round trip


def test_two_component_set_round_trips_and_is_catalogued(store, ring):
    manifest = write_full_set(store, ring)

    [info] = store.list_sets()
    assert info.set_id == manifest["id"] and info.type == "full"
    assert info.components == ("mysql", "redis")
    assert info.status == "verified" and info.verified_mode == "quick"  # publish read everything back
    assert info.plaintext_bytes == len(MYSQL_DUMP) + len(REDIS_RDB) + manifest["files"][0]["size"]
    assert info.path == store.root / manifest["id"]

    backup = store.open_set(manifest["id"])
    with backup.open_artifact("mysql", "dump.sql", ring) as reader:
        assert reader.read() == MYSQL_DUMP
    with backup.open_artifact("redis", "dump.rdb", ring) as reader:
        assert reader.read() == REDIS_RDB
    assert backup.read_json("mysql", "binlog_position.json") == {"file": "mariadb-bin.000003", "position": 1234}
    assert backup.component_metadata("mysql") == {"gtid_binlog_pos": "0-1-42"}
    assert store.latest_set(component="redis").set_id == manifest["id"]
    assert store.latest_set(component="vault") is None


def test_manifest_fields(store, ring):
    manifest = write_full_set(store, ring)
    on_disk = load_manifest(store.root / manifest["id"])
    assert on_disk == manifest
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["tool"] == {"name": "lifeboat", "version": __version__}
    assert manifest["start_time"].endswith("Z") and manifest["start_time"] <= manifest["end_time"]
    assert {s["host"] for s in manifest["sources"]} == {"db1", "cache1"}
    [wrap] = manifest["encryption"]["data_key_wraps"]
    assert set(wrap) == {"kind", "key_id", "algorithm", "wrapped"} and wrap["key_id"] == ring.primary.key_id
    paths = {a["path"]: a for a in manifest["artifacts"]}
    assert set(paths) == {"mysql/dump.sql", "redis/dump.rdb"}
    record = paths["mysql/dump.sql"]
    assert record["component"] == "mysql" and record["name"] == "dump.sql"
    assert record["plaintext_size"] == len(MYSQL_DUMP)
    assert record["stored_size"] == (store.root / manifest["id"] / "mysql/dump.sql").stat().st_size
    assert manifest["files"][0]["path"] == "mysql/binlog_position.json" and len(manifest["files"][0]["sha256"]) == 64
    assert manifest["component_metadata"] == {"mysql": {"gtid_binlog_pos": "0-1-42"}, "redis": {"keys": 17}}


def test_set_layout_and_no_plaintext_key_anywhere(store, ring, tmp_path):
    captured = {}
    original = ring.new_data_key

    def spy():
        captured["key"], wraps = original()
        return captured["key"], wraps

    ring.new_data_key = spy
    manifest = write_full_set(store, ring)
    folder = store.root / manifest["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["backup_manifest.json", "metadata", "mysql", "redis"]
    assert not list((store.root / ".partial").iterdir())
    key = captured["key"]
    for path in store.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert key not in data and key.hex().encode() not in data, path


def test_files_are_0600_and_folders_0700(store, ring):
    write_full_set(store, ring)
    modes = modes_below(store.root)
    for name, mode in modes.items():
        expected = 0o700 if (store.root / name).is_dir() else 0o600
        assert mode == expected, f"{name}: {oct(mode)}"
    assert any(n.startswith("verifications/") for n in modes) and "locks/create.lock" in modes


# --------------------------------------------------------------------------- atomic publish


def test_manifest_is_written_after_every_file_and_before_the_rename(store, ring, monkeypatch):
    events: list[str] = []
    real_write, real_rename = write_file_atomic, _rename_into_place

    def write(path, data):
        events.append(f"write {path.name}")
        real_write(path, data)

    def rename(src, dst):
        assert (src / MANIFEST_NAME).is_file()
        events.append("rename")
        real_rename(src, dst)

    monkeypatch.setattr(writer_mod, "write_file_atomic", write)
    monkeypatch.setattr(writer_mod, "_rename_into_place", rename)
    write_full_set(store, ring)
    commit = events.index("rename")
    assert events[commit - 1] == f"write {MANIFEST_NAME}"
    assert events.index("write binlog_position.json") < events.index(f"write {MANIFEST_NAME}")


def test_folder_without_manifest_is_not_a_backup(store, ring):
    manifest = write_full_set(store, ring)
    fake = store.root / new_set_id("full")
    (fake / "mysql").mkdir(parents=True)
    (fake / "mysql" / "dump.sql").write_bytes(b"x")
    with pytest.raises(IncompleteBackup, match="no backup_manifest.json"):
        load_manifest(fake)
    with pytest.raises(IncompleteBackup):
        store.open_set(fake.name)
    assert [i.set_id for i in store.list_sets()] == [manifest["id"]]
    statuses = {i.set_id: i.status for i in store.list_sets(include_partial=True)}
    assert statuses == {manifest["id"]: "verified", fake.name: "partial"}
    (fake / MANIFEST_NAME).write_text('{"format_version": 1, "id": ')  # cut short
    with pytest.raises(IncompleteBackup, match="not parseable"):
        load_manifest(fake)


def test_failed_rename_publishes_nothing_and_frees_the_lock(store, ring, monkeypatch):
    def broken(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(writer_mod, "_rename_into_place", broken)
    with pytest.raises(OSError):
        write_full_set(store, ring)
    assert store.list_sets(include_partial=True) == []
    store.lock("create").release()


def test_exception_inside_the_writer_discards_the_set(store, ring):
    with pytest.raises(RuntimeError):
        with store.begin_set("mysql", ["mysql"], ring) as writer:
            with writer.artifact("mysql", "dump.sql") as out:
                out.write(b"half a dump")
            raise RuntimeError("mysqldump died")
    assert store.list_sets(include_partial=True) == []
    assert not list(store.partial_root.iterdir())
    store.lock("create").release()


def test_publish_refuses_unclosed_artifacts(store, ring):
    writer = store.begin_set("app", ["app"], ring)
    out = writer.artifact("app", "files.tar")
    out.write(b"data")
    with pytest.raises(BackupFailed, match="app/files.tar were never closed"):
        writer.publish()
    assert [i.status for i in store.list_sets(include_partial=True)] == ["partial"]
    out.close()
    writer.publish()
    assert [i.status for i in store.list_sets(include_partial=True)] == ["verified"]


def test_names_are_checked(store, ring):
    with store.begin_set("app", ["app"], ring) as writer:
        for bad in ("../x", ".hidden", "a//b", ""):
            with pytest.raises(ConfigError):
                writer.write_json("app", bad, {})
        with pytest.raises(ConfigError, match="not writable"):
            writer.write_json("vault", "x.json", {})
        writer.write_json("app", "sub/list.json", [1])
        with pytest.raises(ConfigError, match="already has"):
            writer.write_json("app", "sub/list.json", [2])
        writer.publish(quick_verify=False)


# --------------------------------------------------------------------------- catalog


def test_catalog_orders_by_manifest_time_not_by_name(store, ring):
    later_name = new_set_id("full", datetime(2030, 1, 1, tzinfo=UTC))
    earlier_name = new_set_id("full", datetime(2020, 1, 1, tzinfo=UTC))
    first = write_full_set(store, ring, set_id=later_name)
    second = write_full_set(store, ring, set_id=earlier_name)
    assert [i.set_id for i in store.list_sets()] == [first["id"], second["id"]]
    assert store.latest_set().set_id == second["id"]


def test_binlog_sets_live_under_their_parent(store, ring):
    parent = "binlogs/3e11fa47-71ca-11e1-9e33-c80aa9429562/g1"
    with store.begin_set("binlog", ["mysql"], ring, parent=parent, lock="binlog") as writer:
        with writer.artifact("mysql", "mariadb-bin.000007") as out:
            out.write(b"\xfebin" * 100)
        manifest = writer.publish()
    assert (store.root / parent / manifest["id"] / MANIFEST_NAME).is_file()
    assert store.list_sets() == []
    assert [i.set_id for i in store.list_sets(parent=parent)] == [manifest["id"]]
    assert store.open_set(manifest["id"]).manifest["parent"] == parent
    with pytest.raises(ConfigError):
        store.begin_set("binlog", ["mysql"], ring, parent="../elsewhere", lock="binlog")


def test_verification_records_live_outside_the_set_and_drive_status(store, ring):
    manifest = write_full_set(store, ring)
    set_id = manifest["id"]
    before = sorted(p.relative_to(store.root / set_id) for p in (store.root / set_id).rglob("*"))
    store.record_verification(set_id, {"ok": True, "mode": "full", "checked_at": "2025-01-01T00:00:00Z"})
    [info] = store.list_sets()
    assert (info.status, info.verified_mode) == ("verified", "full")
    path = store.record_verification(set_id, {"ok": False, "mode": "quick", "artifacts": []})
    assert path.parent == store.root / "verifications" / set_id
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z(-\d+)?\.json", path.name)
    [info] = store.list_sets()
    assert (info.status, info.verified_mode) == ("failed", None)
    assert store.latest_set(verified_only=True) is None
    assert [r["ok"] for r in store.verifications(set_id)] == [True, True, False]  # publish's quick check first
    after = sorted(p.relative_to(store.root / set_id) for p in (store.root / set_id).rglob("*"))
    assert before == after
    with pytest.raises(NotFound):
        store.record_verification(new_set_id("full"), {"ok": True, "mode": "quick"})


def test_unknown_format_version_is_named(store, ring):
    manifest = write_full_set(store, ring)
    path = store.root / manifest["id"] / MANIFEST_NAME
    path.write_text(json.dumps(dict(manifest, format_version=7)))
    with pytest.raises(UnknownFormatVersion, match=r"format_version 7.*reads format version\(s\) 1") as err:
        store.open_set(manifest["id"])
    assert err.value.details["found"] == 7 and err.value.details["readable"] == [1]
    assert store.list_sets() == []


def test_manifest_missing_a_field_is_incomplete(store, ring):
    manifest = write_full_set(store, ring)
    path = store.root / manifest["id"] / MANIFEST_NAME
    del manifest["artifacts"][0]["stored_sha256"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(IncompleteBackup, match="stored_sha256"):
        load_manifest(path)


# --------------------------------------------------------------------------- verification and read-back errors


def test_tampered_artifact_is_named_by_quick_verify(store, ring):
    manifest = write_full_set(store, ring)
    target = store.root / manifest["id"] / "redis" / "dump.rdb"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))

    report = store.open_set(manifest["id"]).quick_verify(ring)
    assert report["ok"] is False and report["mode"] == "quick" and report["set_id"] == manifest["id"]
    by_path = {a["path"]: a for a in report["artifacts"]}
    assert by_path["mysql/dump.sql"]["ok"] is True
    assert by_path["redis/dump.rdb"]["ok"] is False and by_path["redis/dump.rdb"]["error"]
    store.record_verification(manifest["id"], report)
    assert store.list_sets()[0].status == "failed"
    with pytest.raises(TamperedData):
        with store.open_set(manifest["id"]).open_artifact("redis", "dump.rdb", ring) as reader:
            reader.read()


def test_tampered_json_file_is_refused(store, ring):
    manifest = write_full_set(store, ring)
    target = store.root / manifest["id"] / "mysql" / "binlog_position.json"
    target.write_text(target.read_text().replace("1234", "9999"))
    backup = store.open_set(manifest["id"])
    with pytest.raises(TamperedData, match="binlog_position.json"):
        backup.read_json("mysql", "binlog_position.json")
    report = backup.quick_verify(ring)
    assert [a["path"] for a in report["artifacts"] if not a["ok"]] == ["mysql/binlog_position.json"]


def test_edited_manifest_fails_authentication(store, ring):
    manifest = write_full_set(store, ring)
    path = store.root / manifest["id"] / MANIFEST_NAME
    manifest["component_metadata"]["mysql"]["gtid_binlog_pos"] = "0-1-99"  # shifts a point-in-time recovery
    path.write_text(json.dumps(manifest))
    backup = store.open_set(manifest["id"])
    with pytest.raises(TamperedData, match="modified"):
        backup.open_artifact("mysql", "dump.sql", ring)
    report = backup.quick_verify(ring)
    assert report["ok"] is False and "TamperedData" in report["error"]


def test_missing_key_is_reported_not_raised(store, ring, tmp_path):
    manifest = write_full_set(store, ring)
    keys.create_key_file(tmp_path / "other.key")
    other = keys.KeyRing(keys.FileKEK.load(tmp_path / "other.key"))
    backup = store.open_set(manifest["id"])
    with pytest.raises(KeyUnavailable):
        backup.open_artifact("mysql", "dump.sql", other)
    report = backup.quick_verify(other)
    assert report["ok"] is False and "KeyUnavailable" in report["error"]
    assert all(not a["ok"] for a in report["artifacts"] if a["kind"] == "artifact")


def test_escrow_key_alone_reads_the_set(store, tmp_path):
    keys.create_key_file(tmp_path / "p.key")
    keys.create_key_file(tmp_path / "e.key")
    both = keys.KeyRing(keys.FileKEK.load(tmp_path / "p.key"), [keys.FileKEK.load(tmp_path / "e.key")])
    manifest = write_full_set(store, both)
    escrow_only = keys.KeyRing(keys.FileKEK.load(tmp_path / "e.key"))
    with store.open_set(manifest["id"]).open_artifact("mysql", "dump.sql", escrow_only) as reader:
        assert reader.read() == MYSQL_DUMP


def test_missing_artifact_file_is_incomplete(store, ring):
    manifest = write_full_set(store, ring)
    (store.root / manifest["id"] / "mysql" / "dump.sql").unlink()
    backup = store.open_set(manifest["id"])
    with pytest.raises(IncompleteBackup, match="mysql/dump.sql"):
        backup.open_artifact("mysql", "dump.sql", ring)
    report = backup.quick_verify(ring)
    assert [a["path"] for a in report["artifacts"] if not a["ok"]] == ["mysql/dump.sql"]


# --------------------------------------------------------------------------- free space


def test_free_space_is_checked_before_anything_is_written(store, ring, monkeypatch):
    monkeypatch.setattr(catalog_mod.shutil, "disk_usage", lambda path: type("U", (), {"free": 1000})())
    with pytest.raises(InsufficientSpace) as err:
        store.begin_set("full", ["mysql"], ring, estimated_bytes=5000)
    message = str(err.value)
    assert "1000 bytes" in message and str(store.root) in message and "5500 bytes" in message
    assert err.value.details["needed"] == 5500 and err.value.details["available"] == 1000
    assert store.list_sets(include_partial=True) == []
    store.lock("create").release()  # not left held


def test_free_space_estimate_uses_the_last_sets_ratio(store, ring):
    assert store.stored_ratio() == 1.0
    manifest = write_full_set(store, ring)
    totals = manifest["totals"]
    assert store.stored_ratio("full") == pytest.approx(totals["stored_bytes"] / totals["plaintext_bytes"])
    assert store.stored_ratio("full") < 1.0  # the SQL dump compresses


# --------------------------------------------------------------------------- locks (in-process)


def test_second_writer_of_same_kind_fails_at_once_naming_the_holder(store, ring):
    first = store.begin_set("full", ["mysql"], ring)
    with pytest.raises(LockHeld, match=rf"pid {os.getpid()} .*set {first.set_id}"):
        store.begin_set("full", ["mysql"], ring)
    with store.lock("binlog"):
        pass  # another kind is free
    first.abort()
    store.lock("create").release()


# --------------------------------------------------------------------------- multi-process sets (detach/resume)


def test_detached_set_is_continued_by_component_writers_and_published(store, ring):
    main = store.begin_set("full", ["mysql", "redis"], ring, owner="ansible-run-42")
    main.write_json("metadata", "run.json", {"playbook": "backup.yml"})
    set_id = main.detach()

    with pytest.raises(LockHeld, match=rf"leased to set {set_id} \(owner ansible-run-42"):
        store.lock("create")
    assert store.clean_stale_partials(0) == []  # lease is active

    mysql = store.resume_set(set_id, ring, component="mysql")
    redis = store.resume_set(set_id, ring, component="redis")  # at the same time
    with mysql.artifact("mysql", "dump.sql") as out:
        out.write(MYSQL_DUMP)
    mysql.set_component_metadata("mysql", {"gtid_binlog_pos": "0-1-7"})
    with pytest.raises(ConfigError):
        mysql.artifact("redis", "dump.rdb")
    with redis.artifact("redis", "dump.rdb") as out:
        out.write(REDIS_RDB)
    with pytest.raises(BackupFailed, match="still writing"):
        mysql.publish()  # redis writer is active
    redis.detach()
    mysql.detach()

    final = store.resume_set(set_id, ring)
    manifest = final.publish()
    assert {a["path"] for a in manifest["artifacts"]} == {"mysql/dump.sql", "redis/dump.rdb"}
    assert manifest["owner"] == "ansible-run-42"
    assert manifest["component_metadata"]["mysql"] == {"gtid_binlog_pos": "0-1-7"}
    assert [f["path"] for f in manifest["files"]] == ["metadata/run.json"]
    assert not (store.root / set_id / ".state").exists()
    with store.open_set(set_id).open_artifact("redis", "dump.rdb", ring) as reader:
        assert reader.read() == REDIS_RDB
    store.lock("create").release()  # lease ended by publish


def test_retried_component_replaces_its_earlier_attempt(store, ring):
    set_id = store.begin_set("full", ["mysql"], ring).detach()
    first = store.resume_set(set_id, ring, component="mysql")
    with first.artifact("mysql", "dump.sql") as out:
        out.write(b"attempt 1")
    first.detach()
    with pytest.raises(RuntimeError):
        with store.resume_set(set_id, ring, component="mysql") as failing:
            with failing.artifact("mysql", "other.sql") as out:
                out.write(b"x")
            raise RuntimeError("connection lost")
    assert (store.partial_root / set_id).is_dir()  # a component failure leaves the set for a retry
    retry = store.resume_set(set_id, ring, component="mysql")
    with retry.artifact("mysql", "dump.sql") as out:
        out.write(b"attempt 2")
    manifest = retry.publish()
    assert [a["path"] for a in manifest["artifacts"]] == ["mysql/dump.sql"]
    with store.open_set(set_id).open_artifact("mysql", "dump.sql", ring) as reader:
        assert reader.read() == b"attempt 2"


def test_abort_set_removes_a_detached_set_and_frees_the_lock(store, ring):
    set_id = store.begin_set("full", ["mysql"], ring).detach()
    assert [i.status for i in store.list_sets(include_partial=True)] == ["partial"]
    active = store.resume_set(set_id, ring, component="mysql")
    with pytest.raises(LockHeld):
        store.abort_set(set_id, "while a writer is active")
    active.detach()
    store.abort_set(set_id, "redis host unreachable")
    assert store.list_sets(include_partial=True) == []
    with pytest.raises(NotFound):
        store.resume_set(set_id, ring)
    store.lock("create").release()


def test_the_sets_compression_threads_reach_every_writer_of_the_set(store, ring):
    # the thread count is not part of the manifest, but was once lost on the way to the writers
    codec = Codec("zstd", 5, threads=2)
    main = store.begin_set("full", ["mysql"], ring, codec=codec)
    assert main.codec == codec
    set_id = main.detach()
    resumed = store.resume_set(set_id, ring, component="mysql")
    assert resumed.codec == codec
    with resumed.artifact("mysql", "dump.sql") as out:
        assert out._inner.codec.threads == 2
        out.write(MYSQL_DUMP)
    manifest = resumed.publish()
    assert manifest["artifacts"][0]["compression"] == {"algorithm": "zstd", "level": 5}
    with store.open_set(set_id).open_artifact("mysql", "dump.sql", ring) as reader:
        assert reader.read() == MYSQL_DUMP


def test_a_compact_json_file_is_one_line_recorded_with_its_hash(store, ring):
    entries = [{"path": f"f{i:05d}", "size": i} for i in range(2000)]
    with store.begin_set("app", ["app"], ring) as writer:
        writer.write_json("app", "tree_files.json", {"entries": entries}, compact=True)
        with pytest.raises(ConfigError, match="app/bad.json is not JSON-serialisable"):
            writer.write_json("app", "bad.json", {"when": datetime.now(UTC)}, compact=True)
        writer.publish()
    backup_set = store.open_set(writer.set_id)
    raw = (backup_set.path / "app" / "tree_files.json").read_bytes()
    assert raw.count(b"\n") == 1 and b", " not in raw
    assert backup_set.read_json("app", "tree_files.json") == {"entries": entries}


@pytest.fixture()
def read_backs(monkeypatch) -> list[str]:
    """Paths of every artifact read back (early or at publish), in order; checks run for real."""
    seen: list[str] = []
    real = verify_artifact_file

    def spy(base, set_id, data_key, record):
        seen.append(record["path"])
        return real(base, set_id, data_key, record)

    for module in (writer_mod, verification_mod):  # the early read-back and verify_records
        monkeypatch.setattr(module, "verify_artifact_file", spy)
    return seen


def test_each_artifact_is_read_back_once_as_soon_as_it_is_closed(store, ring, read_backs):
    with store.begin_set("full", ["mysql", "redis"], ring) as writer:
        with writer.artifact("mysql", "dump.sql") as out:
            out.write(MYSQL_DUMP)
        writer._read_backs["mysql/dump.sql"][1].result(timeout=30)
        assert read_backs == ["mysql/dump.sql"]  # before the next artifact even began
        with writer.artifact("redis", "dump.rdb") as out:
            out.write(REDIS_RDB)
        writer.publish()
    assert sorted(read_backs) == ["mysql/dump.sql", "redis/dump.rdb"]  # publish read nothing again
    record = store.verifications(writer.set_id)[-1]
    assert record["ok"] and record["trigger"] == "publish" and len(record["artifacts"]) == 2


def test_a_failed_early_read_back_stops_the_publish_and_names_the_artifact(store, ring, monkeypatch):
    def tampered(base, set_id, key, record):
        return "TamperedData: chunk 3 failed authentication" if record["path"] == "redis/dump.rdb" else None

    for module in (writer_mod, verification_mod):
        monkeypatch.setattr(module, "verify_artifact_file", tampered)
    writer = store.begin_set("full", ["mysql", "redis"], ring)
    with writer.artifact("mysql", "dump.sql") as out:
        out.write(MYSQL_DUMP)
    with writer.artifact("redis", "dump.rdb") as out:
        out.write(REDIS_RDB)
    with pytest.raises(VerificationFailed, match=r"redis/dump.rdb: TamperedData: chunk 3"):
        writer.publish()
    assert store.list_sets(include_partial=True) == []  # discarded, nothing published


def test_component_writers_hand_their_read_backs_to_the_publishing_writer(store, ring, read_backs):
    set_id = store.begin_set("full", ["mysql", "redis"], ring).detach()
    for component, name, data in (("mysql", "dump.sql", MYSQL_DUMP), ("redis", "dump.rdb", REDIS_RDB)):
        part = store.resume_set(set_id, ring, component=component)
        with part.artifact(component, name) as out:
            out.write(data)
        part.detach()  # waits for its read-back and saves the result in its state
    assert sorted(read_backs) == ["mysql/dump.sql", "redis/dump.rdb"]
    store.resume_set(set_id, ring).publish()
    assert sorted(read_backs) == ["mysql/dump.sql", "redis/dump.rdb"]  # not read a second time
    assert store.verifications(set_id)[-1]["ok"]


def test_a_saved_read_back_of_another_write_of_the_artifact_is_not_trusted(store, ring, read_backs):
    set_id = store.begin_set("full", ["mysql"], ring).detach()
    part = store.resume_set(set_id, ring, component="mysql")
    with part.artifact("mysql", "dump.sql") as out:
        out.write(MYSQL_DUMP)
    part.detach()
    state_file = store.partial_root / set_id / ".state" / "writer-mysql.json"
    state = json.loads(state_file.read_text())
    state["read_back"]["mysql/dump.sql"]["stored_sha256"] = "0" * 64  # a result for other bytes
    state_file.write_text(json.dumps(state))
    store.resume_set(set_id, ring).publish()
    assert read_backs == ["mysql/dump.sql", "mysql/dump.sql"]  # checked again at publish


def test_without_early_read_back_publish_checks_everything_itself(store, ring, read_backs):
    with store.begin_set("full", ["mysql"], ring, early_read_back=False) as writer:
        with writer.artifact("mysql", "dump.sql") as out:
            out.write(MYSQL_DUMP)
        assert read_backs == []
        writer.publish()
    assert read_backs == ["mysql/dump.sql"]


def test_a_set_state_from_before_threads_were_kept_gets_the_automatic_default():
    assert codec_from({"algorithm": "zstd", "level": 3}) == Codec("zstd", 3)
    assert codec_from(codec_state(Codec("zstd", 3, 0))) == Codec("zstd", 3, 0)
    assert codec_from(None) is None
