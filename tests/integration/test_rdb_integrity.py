"""The RDB check refuses what redis-check-rdb refuses: empty aggregates and damaged encodings.

Fixtures (``rdb_fixtures.py``) are generated deterministically: hand-encoded values of
every encoding the check parses, payloads taken from a real redis-server (``DUMP``),
and damaged variants of both. Every damaged fixture must be refused by Lifeboat's
built-in check alone (redis-check-rdb not run), by the real ``redis-check-rdb`` on
its own (so the fixture really is corrupt), and by the combined check; every valid
one -- and real RDBs holding every type and encoding -- must pass all three. Backup and
verify record which checks ran.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import rdb_fixtures as fx
import redis

from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis import engine, rdb
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import BackupFailed, RestoreFailed

BOTH = [rdb.STRUCTURAL_CHECK, rdb.REFERENCE_CHECK]
BUILTIN_ONLY = [rdb.STRUCTURAL_CHECK]
CORRUPT = fx.corrupt_fixtures()
VALID = fx.valid_fixtures()


@pytest.fixture(scope="module")
def checker() -> str:
    """The installed redis-check-rdb (the machine has Debian's redis-server)."""
    path = engine.reference_checker()
    assert path, "redis-check-rdb is not installed: apt-get install redis-server redis-tools"
    return path


def redis_check_rdb_accepts(data: bytes, tmp_path: Path) -> bool:
    """The real redis-check-rdb's verdict on ``data`` as a file (not through Lifeboat's pipe)."""
    path = tmp_path / "fixture.rdb"
    path.write_bytes(data)
    ok, _tail = engine.run_reference_check("redis-check-rdb", str(path))
    assert ok is not None, "redis-check-rdb is not installed"
    return ok


def builtin(data: bytes) -> rdb.RdbReport:
    return rdb.check_rdb(io.BytesIO(data), chunk_size=13)


def combined(data: bytes, checker: str) -> rdb.RdbReport:
    return rdb.check_rdb(io.BytesIO(data), reference=checker)


# ------------------------------------------------------------------------------------ generated fixtures


def test_every_corrupt_fixture_has_its_expected_reason():
    assert sorted(CORRUPT) == sorted(fx.EXPECTED_ERROR)


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_fixture_is_refused_by_the_builtin_check_alone(name):
    report = builtin(CORRUPT[name])
    assert not report.ok and not report.structural_ok
    assert fx.EXPECTED_ERROR[name] in report.error, report.error
    assert report.error_offset is not None and 9 < report.error_offset < len(CORRUPT[name])
    assert report.checks == BUILTIN_ONLY and report.reference is None


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_fixture_is_refused_by_redis_check_rdb_itself(name, tmp_path, checker):
    assert not redis_check_rdb_accepts(CORRUPT[name], tmp_path)


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_fixture_is_refused_by_the_combined_check(name, checker):
    report = combined(CORRUPT[name], checker)
    assert not report.ok
    assert report.checks == BOTH
    assert report.reference["ran"] and report.reference["ok"] is False and report.reference["detail"]
    if "LZF" in name:  # compressed payloads are left to redis-check-rdb while it reads the same stream
        assert report.payloads["deferred_lzf"] == 1 and report.structural_ok
        assert report.error.startswith("redis-check-rdb rejects the RDB:")
    else:  # the built-in check's own finding comes first
        assert fx.EXPECTED_ERROR[name] in report.error and not report.structural_ok


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_fixture_of_every_old_encoding_passes_all_three(name, tmp_path, checker):
    report = builtin(VALID[name])
    assert report.ok, report.error
    assert report.total_keys == 1
    assert redis_check_rdb_accepts(VALID[name], tmp_path)
    both = combined(VALID[name], checker)
    assert both.ok and both.checks == BOTH and both.reference["ok"], both.reference


def test_only_redis_check_rdb_finding_damage_fails_the_combined_check(tmp_path, checker):
    """A file the built-in check passes but redis-check-rdb refuses (a zset score that is NaN)."""
    data = fx.rdb_file([(fx.T_ZSET2, b"z", fx.enc_len(1) + fx.enc_str(b"m") + struct.pack("<d", float("nan")))])
    assert builtin(data).ok
    assert not redis_check_rdb_accepts(data, tmp_path)
    report = combined(data, checker)
    assert not report.ok and report.structural_ok
    assert report.error.startswith("redis-check-rdb rejects the RDB:") and "NAN" in report.error.upper()
    assert report.to_dict()["checks"] == BOTH and report.to_dict()["reference"]["ok"] is False


def test_redis_check_rdb_quitting_early_does_not_stop_the_stream(checker):
    """redis-check-rdb stops at damage near the start; the rest still streams to the artifact tee."""
    nan_zset = fx.enc_len(1) + fx.enc_str(b"m") + struct.pack("<d", float("nan"))
    data = fx.rdb_file([(fx.T_ZSET2, b"z", nan_zset), (fx.T_STRING, b"big", fx.enc_str(bytes(range(256)) * 40_000))])
    seen = []
    report = rdb.check_rdb(io.BytesIO(data), on_chunk=seen.append, chunk_size=1 << 16, reference=checker)
    assert b"".join(seen) == data
    assert report.structural_ok and not report.ok and report.total_keys == 2
    assert report.reference["ok"] is False and report.checks == BOTH


def stand_in_checker(tmp_path: Path, message: str) -> str:
    """An executable answering as redis-check-rdb of Redis 6 does for a version-10 RDB (no Redis 6 here)."""
    path = tmp_path / "old-redis-check-rdb"
    output = f"[offset 0] Checking RDB file /dev/stdin\n--- RDB ERROR DETECTED ---\n{message}\n[info] 0 keys read\n"
    path.write_text(f"#!/bin/sh\ncat >/dev/null\ncat <<'END'\n{output}END\nexit 1\n")
    path.chmod(0o755)
    return str(path)


def test_a_redis_check_rdb_too_old_for_the_rdb_version_is_recorded_but_not_counted(tmp_path):
    too_old = stand_in_checker(tmp_path, "[offset 9] Can't handle RDB format version 10")
    report = rdb.check_rdb(io.BytesIO(VALID["hash ziplist"]), reference=too_old)
    assert report.ok and report.checks == BUILTIN_ONLY
    assert report.reference["ran"] is False and "cannot read RDB version 10" in report.reference["detail"]
    # the same program refusing for any other reason fails the check
    refusing = stand_in_checker(tmp_path, "[offset 20] Internal error in RDB reading offset 0")
    report = rdb.check_rdb(io.BytesIO(VALID["hash ziplist"]), reference=refusing)
    assert not report.ok and report.checks == BOTH and report.reference["ok"] is False
    # and a file the built-in check refuses stays refused, whatever the program says
    report = rdb.check_rdb(io.BytesIO(CORRUPT["empty set"]), reference=too_old)
    assert not report.ok and report.checks == BOTH


# ------------------------------------------------------------------------------------ a real redis-server


def client(server: engine.ScratchRedis) -> redis.Redis:
    return redis.Redis(port=server.port, password=server.password, socket_timeout=10)


def fill_every_encoding(c: redis.Redis) -> dict[str, bytes]:
    """Small and big values of every type, so that every encoding Redis 7.0 writes appears.
    Returns {key: expected OBJECT ENCODING}."""
    c.set("str", "hello")
    c.set("str:int", 42)
    c.set("str:lzf", "abc" * 5000)
    c.hset("hash:lp", mapping={"a": 1, "b": "two", "-7": 70000, "big": "x" * 60})
    c.hset("hash:ht", mapping={f"f{i}": "v" * (i % 90) for i in range(600)})
    c.rpush("list:lp", "a", 1, -300, 1 << 40, "b" * 60)  # one PACKED quicklist node (7.0 has no listpack lists)
    c.rpush("list:quick", *[f"item-{i}-" + "y" * (i % 50) for i in range(20000)])
    c.rpush("list:huge-element", "z" * 20000, "after")
    c.sadd("set:int16", 1, 2, 3, -4)
    c.sadd("set:int64", -(1 << 40), 7, 1 << 40)
    c.sadd("set:ht", *[f"m{i}" for i in range(700)])
    c.sadd("set:many-ints", *range(1000))
    c.zadd("zset:lp", {"a": 1, "b": 2.5, "c": -3})
    c.zadd("zset:skip", {f"m{i}": i / 7 for i in range(500)})
    for i in range(300):
        c.xadd("stream", {"f": i, "g": "x" * (i % 30)})
    c.xgroup_create("stream", "g1", id="0")
    c.xreadgroup("g1", "consumer-1", {"stream": ">"}, count=5)
    return {"str": b"embstr", "str:int": b"int", "str:lzf": b"raw", "hash:lp": b"listpack", "hash:ht": b"hashtable",
            "list:lp": b"quicklist", "list:quick": b"quicklist", "list:huge-element": b"quicklist",
            "set:int16": b"intset", "set:int64": b"intset", "set:ht": b"hashtable", "set:many-ints": b"hashtable",
            "zset:lp": b"listpack", "zset:skip": b"skiplist", "stream": b"stream"}


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    with engine.ScratchRedis(base_dir=str(tmp_path_factory.mktemp("redis")), appendonly=False) as server:
        server.start()
        expected = fill_every_encoding(client(server))
        assert {k: client(server).object("encoding", k) for k in expected} == expected
        yield server


@pytest.mark.parametrize("compression", ["yes", "no"])
def test_real_rdb_with_every_encoding_passes_all_three(real_server, compression, tmp_path, checker):
    c = client(real_server)
    c.config_set("rdbcompression", compression)
    c.save()
    data = (real_server.data_dir / "dump.rdb").read_bytes()
    report = builtin(data)
    assert report.ok, report.error
    assert report.keys_per_db == {0: 15}
    assert report.payloads["validated"] > 100 and report.payloads["deferred_lzf"] == 0  # every node of list:quick
    assert redis_check_rdb_accepts(data, tmp_path)
    both = combined(data, checker)
    assert both.ok and both.checks == BOTH and both.reference["ok"]
    assert both.payloads["validated"] > 0
    assert (both.payloads["deferred_lzf"] > 0) is (compression == "yes")


def dumped(server: engine.ScratchRedis, key: str) -> tuple[int, bytes]:
    """(type, uncompressed encoded value) of ``key`` as the real server serializes it."""
    c = client(server)
    c.config_set("rdbcompression", "no")
    return fx.from_dump(c.dump(key))


def damaged_real_payloads(server: engine.ScratchRedis) -> dict[str, tuple[bytes, bytes]]:
    """name -> (RDB of the real payload as it is, RDB of it damaged)."""
    out = {}
    kind, value = dumped(server, "hash:lp")
    lp, _end = fx.read_str(value)
    out["hash listpack: count off by one"] = (fx.rdb_file([(kind, b"k", value)]), fx.rdb_file([(
        kind, b"k", fx.enc_str(fx.with_count(lp, 4, struct.unpack_from("<H", lp, 4)[0] + 1)))]))
    out["hash listpack: no terminator"] = (fx.rdb_file([(kind, b"k", value)]),
                                           fx.rdb_file([(kind, b"k", fx.enc_str(fx.patched(lp, -1, b"\x00")))]))
    kind, value = dumped(server, "zset:lp")
    lp, _end = fx.read_str(value)
    out["zset listpack: total bytes wrong"] = (fx.rdb_file([(kind, b"k", value)]), fx.rdb_file([(
        kind, b"k", fx.enc_str(fx.patched(lp, 0, struct.pack("<I", len(lp) + 2))))]))
    kind, value = dumped(server, "set:int64")
    ist, _end = fx.read_str(value)
    out["intset: length off by one"] = (fx.rdb_file([(kind, b"k", value)]), fx.rdb_file([(
        kind, b"k", fx.enc_str(fx.patched(ist, 4, struct.pack("<I", 2))))]))
    kind, value = dumped(server, "list:lp")
    nodes, container = value[0], value[1]
    lp, _end = fx.read_str(value, 2)
    assert (nodes, container) == (1, 2)  # one PACKED node
    out["quicklist-v2 node: back length wrong"] = (fx.rdb_file([(kind, b"k", value)]), fx.rdb_file([(
        kind, b"k", value[:2] + fx.enc_str(fx.patched(lp, 6 + 2, b"\x05")))]))
    return out


def test_damaged_payloads_of_a_real_server_are_refused_by_all_three(real_server, tmp_path, checker):
    cases = damaged_real_payloads(real_server)
    for name, (intact, damaged) in cases.items():
        assert builtin(intact).ok and redis_check_rdb_accepts(intact, tmp_path), name
        report = builtin(damaged)
        assert not report.ok and "fails the integrity check" in report.error, (name, report.error)
        assert not redis_check_rdb_accepts(damaged, tmp_path), name
        assert not combined(damaged, checker).ok, name


# ------------------------------------------------------------------------------------ backup and verify


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


@pytest.mark.parametrize("reference_check,expected", [(True, BOTH), (False, BUILTIN_ONLY)])
def test_backup_records_which_checks_ran(real_server, store, keyring, reference_check, expected):
    with store.begin_set("redis", ["redis"], keyring) as writer:
        meta = engine.backup_redis_into(writer, real_server.params, reference_check=reference_check)
        writer.publish()
        set_id = writer.set_id
    backup_set = store.open_set(set_id)
    assert meta["rdb"]["checks"] == expected
    assert backup_set.read_json("redis", engine.METADATA_JSON)["rdb"]["checks"] == expected
    assert backup_set.component_metadata("redis")["rdb_checks"] == expected
    if reference_check:
        assert meta["rdb"]["reference_check"]["ok"] is True
    else:
        assert meta["rdb"]["reference_check"] is None


@pytest.mark.parametrize("reference_check", [True, False])
@pytest.mark.parametrize("name", ["empty set", "hash ziplist: entry count off by one",
                                  "hash listpack: no terminator", "intset: length says 4 values, holds 3"])
def test_backup_refuses_a_corrupt_rdb_stream_and_publishes_nothing(store, keyring, name, reference_check):
    with pytest.raises(BackupFailed) as caught:
        with store.begin_set("redis", ["redis"], keyring) as writer:
            engine._stream_rdb_into(io.BytesIO(CORRUPT[name]), writer, len(CORRUPT[name]), reference_check)
            writer.publish()
    assert fx.EXPECTED_ERROR[name] in caught.value.message
    assert caught.value.message.endswith(f"(checks: {', '.join(BOTH if reference_check else BUILTIN_ONLY)})")
    assert store.list_sets() == []


def set_holding(store: Store, keyring, data: bytes) -> str:
    """A published set whose RDB artifact is ``data`` as it is (what an older Lifeboat may have stored)."""
    with store.begin_set("redis", ["redis"], keyring) as writer:
        with writer.artifact("redis", engine.RDB_ARTIFACT) as out:
            out.write(data)
        writer.write_json("redis", engine.METADATA_JSON, {"format": 1})
        writer.publish()
        return writer.set_id


@pytest.mark.parametrize("mode", ["quick", "full"])
@pytest.mark.parametrize("name", ["empty set", "hash ziplist: entry count off by one",
                                  "quicklist-v2 listpack node: no terminator"])
def test_verify_fails_a_set_with_a_corrupt_rdb_and_says_which_checks_ran(store, keyring, name, mode, tmp_path):
    backup_set = store.open_set(set_holding(store, keyring, CORRUPT[name]))

    report = engine.verify_redis_set(backup_set, keyring, mode=mode, work_dir=str(tmp_path))
    checks = {c["name"]: c for c in report["checks"]}
    assert not report["ok"]
    assert report["rdb"]["checks"] == BOTH
    assert not checks["rdb structure and CRC64"]["ok"]
    assert fx.EXPECTED_ERROR[name] in checks["rdb structure and CRC64"]["detail"]
    assert checks["redis-check-rdb accepts the RDB"]["ok"] is False

    alone = engine.verify_redis_set(backup_set, keyring, mode=mode, work_dir=str(tmp_path), reference_check=False)
    assert not alone["ok"] and alone["rdb"]["checks"] == BUILTIN_ONLY
    assert "redis-check-rdb accepts the RDB" not in {c["name"] for c in alone["checks"]}
    assert fx.EXPECTED_ERROR[name] in alone["rdb"]["error"]


def test_quick_verify_of_a_good_set_runs_both_checks(store, keyring):
    backup_set = store.open_set(set_holding(store, keyring, VALID["hash ziplist, LZF"]))
    report = engine.verify_redis_set(backup_set, keyring, mode="quick")
    assert report["ok"], report["checks"]
    assert report["rdb"]["checks"] == BOTH
    assert {c["name"] for c in report["checks"]} >= {"rdb structure and CRC64", "redis-check-rdb accepts the RDB"}


@pytest.mark.parametrize("reference_check,expected", [(True, BOTH), (False, BUILTIN_ONLY)])
def test_restore_refuses_a_corrupt_rdb_before_touching_the_server(tmp_path, store, keyring, reference_check,
                                                                  expected):
    name = "hash listpack: no terminator"
    backup_set = store.open_set(set_holding(store, keyring, CORRUPT[name]))
    with engine.ScratchRedis(base_dir=str(tmp_path)) as server:
        server.start()
        client(server).set("live", "still here")
        pid = server.proc.pid

        with pytest.raises(RestoreFailed) as caught:
            engine.restore_redis_from(backup_set, keyring, service=server, data_dir=str(server.data_dir),
                                      conn=server.params, reference_check=reference_check)

        assert fx.EXPECTED_ERROR[name] in caught.value.message
        assert caught.value.message.endswith(f"(checks: {', '.join(expected)})")
        assert server.proc.pid == pid and client(server).get("live") == b"still here"


@pytest.mark.parametrize("name", ["zipmap hash", "hash ziplist, LZF", "quicklist of ziplists", "list ziplist",
                                  "quicklist-v2 with a PLAIN node"])
def test_restore_loads_older_encodings_and_records_the_checks(tmp_path, store, keyring, name):
    """What the check passes, a real redis-server loads (it converts the old encodings)."""
    backup_set = store.open_set(set_holding(store, keyring, VALID[name]))
    with engine.ScratchRedis(base_dir=str(tmp_path)) as server:
        server.start()
        summary = engine.restore_redis_from(backup_set, keyring, service=server, data_dir=str(server.data_dir),
                                            conn=server.params)
        assert summary["rdb_checks"] == BOTH
        assert summary["keys_per_db"] == {"0": 1}


_VERIFY_DIR_OWNER = """
import os, signal, sys
from ansible_collections.lifeboat.dr.plugins.module_utils.util import rundirs
path = rundirs.make_owned_tmpdir(sys.argv[1], root=sys.argv[2])
open(os.path.join(path, "dump.rdb"), "wb").write(b"plaintext of a killed verify")
print(path, flush=True)
if sys.argv[3] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def test_full_verify_removes_a_killed_verifys_plaintext_folder_but_not_a_running_ones(store, keyring, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    owners = {fate: subprocess.Popen([sys.executable, "-c", _VERIFY_DIR_OWNER, engine.VERIFY_DIR_PREFIX, str(work),
                                      fate], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
              for fate in ("die", "live")}
    folders = {fate: Path(proc.stdout.readline().strip()) for fate, proc in owners.items()}
    try:
        assert owners["die"].wait(timeout=30) == -signal.SIGKILL and (folders["die"] / "dump.rdb").is_file()
        backup_set = store.open_set(set_holding(store, keyring, VALID["hash ziplist, LZF"]))

        report = engine.verify_redis_set(backup_set, keyring, mode="full", work_dir=str(work))

        assert report["ok"], report["checks"]
        assert not folders["die"].exists()
        assert [p.name for p in work.iterdir()] == [folders["live"].name]  # this verify's own folder is gone too
    finally:
        owners["live"].stdin.close()
        owners["live"].wait(timeout=30)
