"""Redis engine against real redis-server processes.

Destructive tests (restore, FLUSHALL) run against scratch servers that the tests
start themselves (ScratchRedis: the same class full verification uses); the lab's
shared Redis only sees non-destructive things (SYNC, BGSAVE, BGREWRITEAOF, a
failed AUTH).
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis import engine, rdb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.conn import RedisParams
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    AuthenticationFailed,
    ConnectionFailure,
    RestoreFailed,
)

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

TTL_TOLERANCE_MS = 5000


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def client(server: engine.ScratchRedis, db: int = 0) -> redis.Redis:
    return redis.Redis(port=server.port, password=server.password, db=db, socket_timeout=10)


def fill_all_types(server: engine.ScratchRedis) -> None:
    """Every value type and encoding of Redis 7.0 across dbs 0, 1 and 5, some with TTLs."""
    c = client(server)
    c.set("s:plain", "hello")
    c.set("s:int", 12345)
    c.set("s:long", "abc" * 2000)  # LZF-compressed in the RDB
    c.set("s:ttl", "expiring", ex=3600)
    c.set("s:pttl", "expiring-ms", px=7_200_000)
    c.hset("h:small", mapping={"a": "1", "b": "2"})
    c.hset("h:big", mapping={f"f{i}": "v" * (i % 70) for i in range(300)})  # hashtable
    c.rpush("l:small", "a", "b", 3)
    c.rpush("l:big", *[f"item{i}" for i in range(3000)])  # quicklist, many nodes
    c.sadd("set:int", 1, 2, 3)  # intset
    c.sadd("set:str", "a", "b", "c")
    c.sadd("set:big", *[f"m{i}" for i in range(600)])
    c.zadd("z:small", {"a": 1, "b": 2.5})
    c.zadd("z:big", {f"m{i}": i / 3 for i in range(400)})  # skiplist
    c.expire("z:big", 5000)
    for i in range(5):
        c.xadd("stream", {"f": i})
    c.xgroup_create("stream", "g1", id="0")
    c.xreadgroup("g1", "consumer-1", {"stream": ">"}, count=2)
    c.xadd("stream:trimmed", {"x": 1})
    c.xdel("stream:trimmed", c.xadd("stream:trimmed", {"x": 2}))
    c1 = client(server, 1)
    c1.set("db1:key", "one")
    c1.hset("db1:hash", "f", "v")
    c5 = client(server, 5)
    for i in range(50):
        c5.set(f"db5:{i}", i, ex=1000 + i)
    c.function_load("#!lua name=lifeboatlib\nredis.register_function('lbf', function() return 1 end)")


def typed_value(c: redis.Redis, key: bytes):
    """The value of ``key`` in a form that does not depend on hash-table iteration order
    (DUMP payloads of hashes and sets do, so they are not compared byte for byte)."""
    kind = c.type(key)
    if kind == b"string":
        return kind, c.get(key)
    if kind == b"hash":
        return kind, c.hgetall(key)
    if kind == b"list":
        return kind, c.lrange(key, 0, -1)
    if kind == b"set":
        return kind, sorted(c.smembers(key))
    if kind == b"zset":
        return kind, c.zrange(key, 0, -1, withscores=True)
    if kind == b"stream":
        groups = [(g["name"], g["last-delivered-id"], g["pending"]) for g in c.xinfo_groups(key)]
        return kind, (c.xrange(key), groups, c.xinfo_stream(key)["last-generated-id"])
    raise AssertionError(f"unexpected type {kind!r}")


def snapshot(server: engine.ScratchRedis, dbs=(0, 1, 5)) -> dict:
    """{db: {key: (typed value, PTTL)}}."""
    out = {}
    for db in dbs:
        c = client(server, db)
        out[db] = {k: (typed_value(c, k), c.pttl(k)) for k in c.scan_iter(count=1000)}
    return out


def assert_same_data(before: dict, after: dict, elapsed_ms: int) -> None:
    assert {db: sorted(v) for db, v in after.items()} == {db: sorted(v) for db, v in before.items()}
    for db, entries in before.items():
        for key, (payload, pttl) in entries.items():
            got_payload, got_pttl = after[db][key]
            assert got_payload == payload, f"db{db} {key!r}: value differs"
            if pttl < 0:
                assert got_pttl == pttl, f"db{db} {key!r}: TTL {got_pttl} where none was"
            else:
                assert pttl - elapsed_ms - TTL_TOLERANCE_MS <= got_pttl <= pttl, f"db{db} {key!r}: TTL {got_pttl}"


def network_backup(store: Store, keyring, params: RedisParams, **kwargs) -> str:
    with store.begin_set("redis", ["redis"], keyring) as writer:
        engine.backup_redis_into(writer, params, **kwargs)
        writer.publish()
        return writer.set_id


# --------------------------------------------------------------------------------------------- restore


def test_restore_with_appendonly_yes_loads_the_backup_not_the_newer_aof(tmp_path, store, keyring):
    with engine.ScratchRedis(base_dir=str(tmp_path), appendonly=True) as server:
        server.start()
        fill_all_types(server)
        before = snapshot(server)
        functions = client(server).function_list()
        taken = time.monotonic()
        set_id = network_backup(store, keyring, server.params)
        c = client(server)
        c.set("after-backup", "newer")  # only in memory and the AOF
        c.delete("s:plain")
        c.hset("h:small", "c", "3")

        summary = engine.restore_redis_from(store.open_set(set_id), keyring, service=server,
                                            data_dir=str(server.data_dir), conn=server.params)

        after = snapshot(server)
        assert_same_data(before, after, int((time.monotonic() - taken) * 1000))
        assert client(server).exists("after-backup") == 0
        assert client(server).function_list() == functions
        assert summary["keys_per_db"] == {str(db): len(v) for db, v in before.items()}
        kept = Path(summary["previous_data"])
        assert kept.is_dir() and "appendonlydir" in summary["moved_aside"]
        assert b"after-backup" in b"".join(p.read_bytes() for p in (kept / "appendonlydir").iterdir())
        # the restored server keeps writing an AOF that already holds the restored data
        server.stop()
        server.start()
        assert snapshot(server).keys() == before.keys()
        assert sum(len(v) for v in snapshot(server).values()) == sum(len(v) for v in before.values())


def test_restore_after_flushall_and_deleted_files_brings_everything_back(tmp_path, store, keyring):
    with engine.ScratchRedis(base_dir=str(tmp_path), appendonly=False) as server:
        server.start()
        fill_all_types(server)
        before = snapshot(server)
        taken = time.monotonic()
        set_id = network_backup(store, keyring, server.params)
        client(server).flushall()
        server.stop()
        for path in server.data_dir.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        server.start()
        assert client(server).dbsize() == 0

        summary = engine.restore_redis_from(store.open_set(set_id), keyring, service=server,
                                            data_dir=str(server.data_dir), conn=server.params)

        assert_same_data(before, snapshot(server), int((time.monotonic() - taken) * 1000))
        assert summary["previous_data"] is None  # nothing was there to keep


_STAGING_OWNER = """
import os, signal, sys
from ansible_collections.lifeboat.dr.plugins.module_utils.util import rundirs
folder = rundirs.make_owned_tmpdir(sys.argv[1], root=sys.argv[2])
with open(os.path.join(folder, "dump.rdb"), "wb") as fh:
    fh.write(b"REDIS0011 plaintext of a restore that never finished")
print(folder, flush=True)
if sys.argv[3] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def test_restore_removes_the_plaintext_staging_folder_of_a_killed_restore_but_not_a_running_ones(
        tmp_path, store, keyring):
    """A restore SIGKILLed mid-way leaves its decrypted RDB beside the data dir; the next restore
    removes that folder (its owner is gone), never the staging folder of a restore still running."""
    with engine.ScratchRedis(base_dir=str(tmp_path), appendonly=False) as server:
        server.start()
        fill_all_types(server)
        before = snapshot(server)
        taken = time.monotonic()
        set_id = network_backup(store, keyring, server.params)
        prefix = f"{server.data_dir.name}.{engine.STAGING_TAG}-"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        owners = {fate: subprocess.Popen([sys.executable, "-c", _STAGING_OWNER, prefix, str(server.data_dir.parent),
                                          fate], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                  for fate in ("die", "live")}
        folders = {fate: Path(proc.stdout.readline().strip()) for fate, proc in owners.items()}
        try:
            assert owners["die"].wait(timeout=30) == -signal.SIGKILL and (folders["die"] / "dump.rdb").is_file()

            engine.restore_redis_from(store.open_set(set_id), keyring, service=server,
                                      data_dir=str(server.data_dir), conn=server.params)

            assert not folders["die"].exists()
            assert (folders["live"] / "dump.rdb").is_file()
            staging = sorted(p.name for p in server.data_dir.parent.glob(f"{prefix}*"))
            assert staging == [folders["live"].name]  # the restore's own staging folder is gone too
            assert_same_data(before, snapshot(server), int((time.monotonic() - taken) * 1000))
        finally:
            owners["live"].stdin.close()
            owners["live"].wait(timeout=30)


def test_restore_that_loads_the_wrong_data_is_rolled_back(tmp_path, store, keyring):
    with engine.ScratchRedis(base_dir=str(tmp_path), appendonly=True) as server:
        server.start()
        client(server).set("original", "1")
        set_id = network_backup(store, keyring, server.params)
        client(server).set("newer", "2")
        wrong = {"appendfilename": "other.aof"}  # the server will not find this AOF: it starts empty

        with pytest.raises(RestoreFailed) as caught:
            engine.restore_redis_from(store.open_set(set_id), keyring, service=server, data_dir=str(server.data_dir),
                                      conn=server.params, layout=wrong)

        assert "rolled back" in str(caught.value) and "db0: 0 keys, expected 1" in str(caught.value)
        assert server.is_running()
        assert client(server).get("newer") == b"2"  # the previous data is live again
        assert list(server.data_dir.parent.glob("data.lbfailed-*"))


def test_a_damaged_backup_is_refused_before_the_server_is_touched(tmp_path, store, keyring):
    with engine.ScratchRedis(base_dir=str(tmp_path)) as server:
        server.start()
        client(server).set("k", "v")
        set_id = network_backup(store, keyring, server.params)
        pid = server.proc.pid
        artifact = store.open_set(set_id).path / "redis" / engine.RDB_ARTIFACT
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 1
        artifact.write_bytes(bytes(data))

        with pytest.raises(Exception) as caught:
            engine.restore_redis_from(store.open_set(set_id), keyring, service=server,
                                      data_dir=str(server.data_dir), conn=server.params)

        assert type(caught.value).__name__ in ("TamperedData", "IntegrityError", "RestoreFailed")
        assert server.proc.pid == pid and server.is_running()
        assert client(server).get("k") == b"v"


# --------------------------------------------------------------------------------------------- verify


def test_full_verify_loads_the_backup_into_a_scratch_server(tmp_path, store, keyring):
    with engine.ScratchRedis(base_dir=str(tmp_path)) as server:
        server.start()
        fill_all_types(server)
        set_id = network_backup(store, keyring, server.params)
    report = engine.verify_redis_set(store.open_set(set_id), keyring, mode="full", work_dir=str(tmp_path))
    assert report["ok"], report["checks"]
    names = [c["name"] for c in report["checks"]]
    assert "redis-check-rdb accepts the RDB" in names
    assert "loads into a scratch redis-server with the same key counts" in names
    assert report["rdb"]["keys_per_db"] == {"0": 16, "1": 2, "5": 50}


# --------------------------------------------------------------------------------------------- lab (read-only)


def lab_params(env: dict, password: str | None = None) -> RedisParams:
    return RedisParams(host=env["LAB_REDIS_HOST"], port=int(env["LAB_REDIS_PORT"]),
                       user=env["LAB_REDIS_BACKUP_USER"],
                       password=env["LAB_REDIS_BACKUP_PASSWORD"] if password is None else password)


def test_wrong_password_fails_clearly_and_leaves_nothing(lab_env, store, keyring):
    with pytest.raises(AuthenticationFailed) as caught:
        network_backup(store, keyring, lab_params(lab_env, password="not-the-password"))
    message = str(caught.value)
    assert "WRONGPASS" in message and "redis_password" in message
    assert "not-the-password" not in message and lab_env["LAB_REDIS_BACKUP_PASSWORD"] not in message
    assert store.list_sets(include_partial=True) == []


def test_network_backup_of_the_lab_records_server_facts_and_verifies(lab_env, store, keyring):
    set_id = network_backup(store, keyring, lab_params(lab_env))
    backup_set = store.open_set(set_id)
    meta = backup_set.read_json("redis", engine.METADATA_JSON)
    assert meta["redis_version"].startswith("7.") and meta["role"] == "master"
    assert meta["rdb"]["version"] == 10 and meta["rdb"]["framing"] == "diskless"
    assert meta["rdb_last_save_time"] > 0 and meta["keyspace"]
    assert backup_set.component_metadata("redis")["rdb_keys_per_db"] == meta["rdb"]["keys_per_db"]
    # the lab's real RDB passes the built-in check and redis-check-rdb, both run over the stream
    assert meta["rdb"]["checks"] == ["lifeboat-structural", "redis-check-rdb"]
    assert meta["rdb"]["reference_check"]["ok"] is True
    report = engine.verify_redis_set(backup_set, keyring, mode="quick")
    assert report["ok"], report["checks"]
    assert report["rdb"]["checks"] == ["lifeboat-structural", "redis-check-rdb"]
    assert {"rdb structure and CRC64", "redis-check-rdb accepts the RDB"} <= {c["name"] for c in report["checks"]}


def test_file_mode_with_aof_of_the_lab_passes_full_verify(lab_env, store, keyring, tmp_path):
    set_id = network_backup(store, keyring, lab_params(lab_env), mode="file", include_aof=True,
                            data_dir=lab_env["LAB_REDIS_DIR"])
    backup_set = store.open_set(set_id)
    meta = backup_set.read_json("redis", engine.METADATA_JSON)
    assert meta["rdb"]["source"] == "file"
    assert meta["aof"]["base_format"] == "rdb" and [f["type"] for f in meta["aof"]["files"]][0] == "b"
    report = engine.verify_redis_set(backup_set, keyring, mode="full", work_dir=str(tmp_path))
    assert report["ok"], report["checks"]
    assert "redis-check-aof accepts the AOF" in [c["name"] for c in report["checks"]]


# --------------------------------------------------------------------------------------------- rdb vs redis-check-rdb


def reference_ok(path: Path) -> bool:
    ok, _output = engine.run_reference_check("redis-check-rdb", str(path))
    assert ok is not None, "redis-check-rdb is not installed"
    return ok


@pytest.fixture(scope="module")
def real_rdb(tmp_path_factory) -> bytes:
    base = tmp_path_factory.mktemp("rdb")
    with engine.ScratchRedis(base_dir=str(base), appendonly=False) as server:
        server.start()
        fill_all_types(server)
        client(server).save()
        return (server.data_dir / "dump.rdb").read_bytes()


def test_real_rdb_is_accepted_by_both_checkers(tmp_path, real_rdb):
    path = tmp_path / "good.rdb"
    path.write_bytes(real_rdb)
    report = rdb.check_rdb_file(str(path))
    assert report.ok and report.version == 10 and report.functions == 1
    assert report.keys_per_db == {0: 16, 1: 2, 5: 50}
    assert reference_ok(path)


@pytest.mark.parametrize("where", [0.0, 0.001, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999])
def test_flipped_bytes_are_rejected_by_both_checkers(tmp_path, real_rdb, where):
    data = bytearray(real_rdb)
    pos = min(len(data) - 1, int(len(data) * where))
    data[pos] ^= 0x41
    path = tmp_path / "flipped.rdb"
    path.write_bytes(bytes(data))
    report = rdb.check_rdb_file(str(path))
    assert not report.ok
    assert report.error_offset is not None and report.error_offset >= min(pos, 5)
    assert not reference_ok(path)


@pytest.mark.parametrize("keep", [5, 100, 0.25, 0.5, 0.95, -9, -1])
def test_truncated_files_are_rejected_by_both_with_the_offset(tmp_path, real_rdb, keep):
    size = keep if isinstance(keep, int) and keep > 0 else (len(real_rdb) + keep if isinstance(keep, int)
                                                            else int(len(real_rdb) * keep))
    path = tmp_path / "cut.rdb"
    path.write_bytes(real_rdb[:size])
    report = rdb.check_rdb_file(str(path))
    assert not report.ok
    assert report.error_offset == size
    assert not reference_ok(path)


def _crafted(body: bytes) -> bytes:
    body += b"\xff"
    return body + struct.pack("<Q", rdb.crc64(0, body))


@pytest.mark.parametrize("name,body,ok", [
    ("good", b"REDIS0010\xfe\x00\x00\x01k\x01v\x04\x01h\x01\x01f\x01v", True),
    ("unknown type", b"REDIS0010\xfe\x00\x08\x01k\x01v", False),
    ("length past the end", b"REDIS0010\xfe\x00\x00\x01k\x80\x00\x01\x00\x00v", False),
    ("bad length encoding", b"REDIS0010\xfe\x00\x00\x01k\xbfv", False),
    ("future version", b"REDIS0011\xfe\x00\x00\x01k\x01v", False),
    ("not an rdb", b"REDIX0010\xfe\x00\x00\x01k\x01v", False),
])
def test_crafted_files_with_valid_checksums_get_the_same_verdict(tmp_path, name, body, ok):
    path = tmp_path / "crafted.rdb"
    path.write_bytes(_crafted(body))
    assert rdb.check_rdb_file(str(path)).ok is ok
    assert reference_ok(path) is ok


def test_check_rdb_binary_is_the_one_from_redis_server():
    out = subprocess.run([engine.find_redis_binary("redis-check-rdb"), "--version"], capture_output=True, check=False)
    assert b"7." in out.stdout + out.stderr


# --------------------------------------------------------------------------------------------- the lab manager


REPO_DIR = Path(__file__).resolve().parents[2]


def _lab_cmd(state_dir: Path, *args: str, port_base: int | None = None) -> str:
    env = {key: value for key, value in os.environ.items() if key != "LAB_PORT_BASE"}
    env["LAB_STATE_DIR"] = str(state_dir)
    if port_base is not None:
        env["LAB_PORT_BASE"] = str(port_base)
    out = subprocess.run([str(REPO_DIR / ".venv" / "bin" / "python"), "-m", "lab", *args], cwd=REPO_DIR, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


def _free_lab_offset() -> int:
    """A LAB_PORT_BASE offset (the lab accepts -10000..40000) whose Redis port is free now."""
    import random
    import socket

    for _attempt in range(50):
        offset = random.randint(20000, 40000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", 16379 + offset))
            except OSError:
                continue
        return offset
    raise AssertionError("no free port for a private lab redis")


@pytest.fixture
def private_lab_redis(tmp_path):
    """A second, private lab Redis (own state folder and port; the lab's redis.conf: appendonly yes,
    ACL user lifeboat), controlled through service.get_service("lab", "redis", ...)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import get_service

    state = tmp_path / "lab"
    offset = _free_lab_offset()
    _lab_cmd(state, "service", "redis", "start", port_base=offset)
    env = dict(line[len("export "):].split("=", 1) for line in _lab_cmd(state, "env").splitlines()
               if line.startswith("export "))
    env = {k: v.strip("'\"") for k, v in env.items()}
    # the service inherits this process's environment: name the private lab's own offset, so that a
    # LAB_PORT_BASE exported for the caller's lab does not point the service at other ports
    service = get_service("lab", "redis", repo_dir=str(REPO_DIR),
                          env={"LAB_STATE_DIR": str(state), "LAB_PORT_BASE": str(offset)})
    try:
        yield env, service
    finally:
        _lab_cmd(state, "service", "redis", "stop")


def test_restore_through_the_lab_service_manager(private_lab_redis, store, keyring):
    env, service = private_lab_redis
    admin = redis.Redis(port=int(env["LAB_REDIS_PORT"]), password=env["LAB_REDIS_PASSWORD"], socket_timeout=10)
    admin.set("before", "1")
    redis.Redis(port=int(env["LAB_REDIS_PORT"]), password=env["LAB_REDIS_PASSWORD"], db=3).hset("h", "f", "v")
    params = lab_params(env)
    set_id = network_backup(store, keyring, params)
    admin.set("after", "2")
    admin.delete("before")

    summary = engine.run_redis_restore(str(store.root), keyring, params, service=service, set_id=set_id)

    assert service.is_running()
    assert admin.get("before") == b"1" and admin.get("after") is None
    assert summary["keys_per_db"] == {"0": 1, "3": 1}
    assert summary["data_dir"] == env["LAB_REDIS_DIR"]
    assert Path(summary["previous_data"]).name.startswith("redis.lbprev-")


# --------------------------------------------------------------------------------------------- TLS


def _write_tls_material(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 (and a second, unrelated CA)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017

    def make(subject: str, issuer_key=None, issuer_name=None, ca=False, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(issuer_key or key, hashes.SHA256())

    ca_key, ca_cert = make("lifeboat test CA", ca=True)
    localhost = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    srv_key, srv_cert = make("127.0.0.1", ca_key, ca_cert.subject, san=localhost)
    _other_key, other_ca = make("some other CA", ca=True)
    paths = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key", "other_ca")}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["other_ca"].write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(srv_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


def test_network_backup_over_tls_checks_the_server_certificate(tmp_path, store, keyring):
    tls = _write_tls_material(tmp_path)
    tls_port = engine.free_port()
    config = (f"tls-port {tls_port}", f"tls-cert-file {tls['cert']}", f"tls-key-file {tls['key']}",
              f"tls-ca-cert-file {tls['ca']}", "tls-auth-clients no")
    with engine.ScratchRedis(base_dir=str(tmp_path), extra_config=config) as server:
        server.start()
        client(server).set("over-tls", "yes")
        params = RedisParams(port=tls_port, password=server.password, tls=True, ca_cert=str(tls["ca"]))

        set_id = network_backup(store, keyring, params)
        assert store.open_set(set_id).read_json("redis", engine.METADATA_JSON)["rdb"]["keys_per_db"] == {"0": 1}

        wrong_ca = RedisParams(port=tls_port, password=server.password, tls=True, ca_cert=str(tls["other_ca"]))
        with pytest.raises(ConnectionFailure) as caught:
            network_backup(store, keyring, wrong_ca)
        assert "TLS handshake" in str(caught.value) and "redis_ca_cert" in str(caught.value)
        assert len(store.list_sets(include_partial=True)) == 1


# --------------------------------------------------------------------------------------------- pure logic (no server)


def _cmd(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _complete_length(data: bytes) -> int:
    import io

    return engine.complete_commands_length(io.BytesIO(data), len(data))


def test_aof_tail_is_cut_after_the_last_whole_command():
    whole = _cmd(b"SET", b"a", b"1") + b"#TS:1700000000\r\n" + _cmd(b"DEL", b"a")
    assert _complete_length(whole) == len(whole)
    torn = whole + _cmd(b"SET", b"b", b"2")[:-3]
    assert _complete_length(torn) == len(whole)
    assert _complete_length(b"") == 0


def test_aof_tail_never_ends_inside_a_transaction():
    head = _cmd(b"SET", b"a", b"1")
    multi = _cmd(b"MULTI") + _cmd(b"INCR", b"a")
    assert _complete_length(head + multi) == len(head)
    done = head + multi + _cmd(b"EXEC")
    assert _complete_length(done) == len(done)


def test_aof_manifest_lines_are_parsed_and_unsafe_names_refused():
    text = 'file appendonly.aof.3.base.rdb seq 3 type b\nfile "appendonly.aof.3.incr.aof" type i seq 3\n'
    entries = engine.parse_aof_manifest(text)
    expected = [("appendonly.aof.3.base.rdb", 3, "b"), ("appendonly.aof.3.incr.aof", 3, "i")]
    assert [(e.name, e.seq, e.type) for e in entries] == expected
    with pytest.raises(Exception, match="outside its folder"):
        engine.parse_aof_manifest("file ../../etc/passwd seq 1 type b\n")


def test_info_and_keyspace_parsing():
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.conn import parse_info, parse_keyspace

    info = parse_info("# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=5\r\ndb12:keys=7,expires=0,avg_ttl=0\r\n"
                      "role:master\r\n")
    assert info["role"] == "master"
    assert parse_keyspace(info) == {0: {"keys": 3, "expires": 1}, 12: {"keys": 7, "expires": 0}}


def test_expected_key_range_allows_only_expired_keys_to_be_missing():
    report = rdb.RdbReport(dbs={0: rdb.DbStats(keys=10), 3: rdb.DbStats(keys=2)},
                           expiring=[(0, 1_000), (0, 5_000_000_000_000)])
    expected = engine.expected_key_range(report, counted_ms=2_000_000)
    assert expected == {0: (9, 10), 3: (2, 2)}
    assert engine.compare_counts(expected, {0: 9, 3: 2}) == []
    assert engine.compare_counts(expected, {0: 8, 3: 2}) == ["db0: 8 keys, expected 9..10"]
    assert engine.compare_counts(expected, {0: 10, 3: 2, 4: 1}) == ["db4: 1 keys, expected 0"]


def test_params_never_show_the_password():
    params = RedisParams.from_module_params({"redis_port": 6380, "redis_user": "lifeboat", "redis_password": "s3cret"})
    assert "s3cret" not in repr(params) and "s3cret" not in params.describe()
    assert params.describe() == "lifeboat@127.0.0.1:6380"


# --------------------------------------------------------------------------------------------- the modules


MODULES_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    conn: &conn
      redis_port: "{{ lab_redis_port | int }}"
      redis_user: lifeboat
      redis_password: "{{ backup_password }}"
    store_opts: &store
      store: "{{ store }}"
      key_file: "{{ key_file }}"
  tasks:
    - name: plan
      lifeboat.dr.redis_backup: {<<: [*store, *conn]}
      check_mode: true
      register: plan
    - name: backup
      lifeboat.dr.redis_backup: {<<: [*store, *conn], include_aof: true}
      register: backup
    - name: verify
      lifeboat.dr.redis_verify: {<<: *store}
      register: verify
    - name: write after the backup
      ansible.builtin.command:
        argv: ["{{ python }}", "-c", "{{ late_code }}"]
        stdin: "{{ admin_password }}"
    - name: restore plan
      lifeboat.dr.redis_restore: &restore
        <<: [*store, *conn]
        service_settings: {repo_dir: "{{ repo }}", env: {LAB_STATE_DIR: "{{ state }}"}}
      check_mode: true
      register: restore_plan
    - name: restore
      lifeboat.dr.redis_restore: *restore
      register: restore
    - name: results
      ansible.builtin.copy:
        dest: "{{ out }}"
        mode: "0600"
        content: "{{ {'plan': plan, 'backup': backup, 'verify': verify, 'restore_plan': restore_plan,
                      'restore': restore} | to_json }}"
"""


def test_modules_back_up_verify_and_restore_in_a_playbook(private_lab_redis, tmp_path, keyring):
    import json
    import sys

    env = private_lab_redis[0]
    admin = redis.Redis(port=int(env["LAB_REDIS_PORT"]), password=env["LAB_REDIS_PASSWORD"], socket_timeout=10)
    admin.set("early", "1")
    key_file = tmp_path / "kek.key"  # the keyring fixture's key
    variables = {"lab_redis_port": env["LAB_REDIS_PORT"], "ansible_python_interpreter": sys.executable,
                 "backup_password": env["LAB_REDIS_BACKUP_PASSWORD"],
                 "admin_password": env["LAB_REDIS_PASSWORD"], "store": str(tmp_path / "store"),
                 "key_file": str(key_file), "repo": str(REPO_DIR), "state": str(Path(env["LAB_REDIS_DIR"]).parent),
                 "python": sys.executable, "out": str(tmp_path / "results.json"),
                 "late_code": f"import redis, sys; redis.Redis(port={env['LAB_REDIS_PORT']}, "
                              "password=sys.stdin.read().strip()).set('late', 1)"}
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    vars_file.chmod(0o600)
    playbook = tmp_path / "redis.yml"
    playbook.write_text(MODULES_PLAYBOOK)
    # without the caller's LAB_PORT_BASE: the private lab's state folder records its own offset
    run_env = {**{k: v for k, v in os.environ.items() if k != "LAB_PORT_BASE"},
               "ANSIBLE_CONFIG": str(REPO_DIR / "ansible.cfg")}
    proc = subprocess.run([str(REPO_DIR / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,",
                           "-e", f"@{vars_file}", str(playbook)], env=run_env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert env["LAB_REDIS_BACKUP_PASSWORD"] not in proc.stdout

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["plan"]["server"]["role"] == "master" and "set_id" not in results["plan"]
    assert results["backup"]["rdb_keys_per_db"] == {"0": 1} and results["backup"]["aof"]["files"]
    assert results["backup"]["rdb_checks"] == ["lifeboat-structural", "redis-check-rdb"]
    assert results["verify"]["ok"] and results["verify"]["record"]
    assert "appendonlydir" in results["restore_plan"]["would_move_aside"]
    assert results["restore"]["set_id"] == results["backup"]["set_id"]
    assert admin.get("early") == b"1" and admin.get("late") is None


@pytest.mark.parametrize("step", [1, 7, 39, 40, 41, 1000])
def test_diskless_payload_ends_exactly_at_the_marker_however_the_bytes_arrive(step):
    import io
    from types import SimpleNamespace

    from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.conn import RdbPayload

    mark = b"0123456789abcdef0123456789abcdef01234567"
    payload = bytes(range(256)) * 3 + mark[:20]  # contains a prefix of the marker
    stream = io.BytesIO(payload + mark + b"*1\r\n$4\r\nPING\r\n")

    class Chunked:
        def read1(self, n):
            return stream.read(min(n, step))

    conn = SimpleNamespace(rfile=Chunked(), params=RedisParams())
    reader = RdbPayload(conn, None, mark, 0.0)
    got = b""
    while chunk := reader.read(4096):
        got += chunk
    assert got == payload and reader.done == len(payload)


def test_quick_verify_reports_a_tampered_rdb_artifact(tmp_path, store, keyring):
    with engine.ScratchRedis(base_dir=str(tmp_path)) as server:
        server.start()
        client(server).set("k", "v" * 1000)
        set_id = network_backup(store, keyring, server.params)
    artifact = store.open_set(set_id).path / "redis" / engine.RDB_ARTIFACT
    data = bytearray(artifact.read_bytes())
    data[-40] ^= 0x10
    artifact.write_bytes(bytes(data))
    report = engine.verify_redis_set(store.open_set(set_id), keyring, mode="quick")
    assert not report["ok"]
    assert any(not c["ok"] for c in report["checks"])
