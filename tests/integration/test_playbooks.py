"""The runbook playbooks against the lab: backup -> wipe -> restore, health-gate rollback,
check mode, two backups, full verification of a good and a tampered set.

Each test runs ``ansible-playbook -i inventories/lab playbooks/<x>.yml`` as a subprocess,
the way operators (shell, cron, AWX) run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pymysql
import pytest
import redis

from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

REPO = Path(__file__).resolve().parents[2]
CANARY = "secret/lifeboat/canary"


def run_playbook(name: str, *extra: str, check: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    """``ansible-playbook -i inventories/lab playbooks/<name>.yml [extra]`` from the repo."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    # only the demo database: other tests create and drop their own databases meanwhile
    argv = ["ansible-playbook", "-i", "inventories/lab", f"playbooks/{name}.yml",
            "-e", '{"lifeboat_mysql_databases": ["demo"]}', *extra]
    if check:
        argv.append("--check")
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


# --------------------------------------------------------------------------- lab data

def mysql_conn(env: dict[str, str]):
    return pymysql.connect(host=env["LAB_MYSQL_HOST"], port=int(env["LAB_MYSQL_PORT"]), user=env["LAB_MYSQL_USER"],
                           password=env["LAB_MYSQL_PASSWORD"], autocommit=True)


def mysql_checksums(env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Per demo base table: (row count, CHECKSUM TABLE)."""
    with mysql_conn(env) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema='demo' "
                    "AND table_type='BASE TABLE' ORDER BY table_name")
        tables = [r[0] for r in cur.fetchall()]
        out = {}
        for t in tables:
            cur.execute(f"SELECT COUNT(*) FROM demo.`{t}`")
            count = cur.fetchone()[0]
            cur.execute(f"CHECKSUM TABLE demo.`{t}`")
            out[t] = (count, cur.fetchone()[1])
        return out


def redis_client(env: dict[str, str], db: int = 0) -> redis.Redis:
    return redis.Redis(host=env["LAB_REDIS_HOST"], port=int(env["LAB_REDIS_PORT"]), password=env["LAB_REDIS_PASSWORD"],
                       db=db)


def redis_value(r: redis.Redis, key: bytes) -> object:
    """The logical value of a key (encodings may change when Redis reloads an RDB)."""
    kind = r.type(key).decode()
    readers = {"string": r.get, "hash": r.hgetall, "list": lambda k: r.lrange(k, 0, -1),
               "set": lambda k: sorted(r.smembers(k)), "zset": lambda k: r.zrange(k, 0, -1, withscores=True),
               "stream": r.xrange}
    return kind, readers[kind](key)


def redis_state(env: dict[str, str]) -> dict[int, dict[bytes, object]]:
    """Per db 0-2: key -> (type, value), leaving out keys that may expire within the hour
    (they can legitimately vanish during a test)."""
    state = {}
    for db in range(3):
        r = redis_client(env, db)
        state[db] = {k: redis_value(r, k) for k in r.scan_iter(count=1000) if not 0 <= r.pttl(k) < 3_600_000}
    return state


def vault_request(env: dict[str, str], method: str, path: str, body: dict | None = None) -> dict | None:
    req = urllib.request.Request(f"{env['LAB_VAULT_ADDR']}/v1/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-Vault-Token": env["LAB_VAULT_TOKEN"]})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def vault_canary(env: dict[str, str]) -> dict | None:
    doc = vault_request(env, "GET", "secret/data/lifeboat/canary")
    return doc["data"]["data"] if doc else None


def files_state(env: dict[str, str]) -> dict[str, str]:
    root = Path(env["LAB_APP_STORAGE"])
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def stack_state(env: dict[str, str]) -> dict:
    return {"mysql": mysql_checksums(env), "redis": redis_state(env), "vault": vault_canary(env),
            "files": files_state(env)}


def wipe_every_component(env: dict[str, str]) -> None:
    """The data of every component gone: the demo database, Redis dbs 0-2, the Vault canary, the app's files."""
    with mysql_conn(env) as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE demo")
    for db in range(3):
        redis_client(env, db).flushdb()
    vault_request(env, "DELETE", "secret/metadata/lifeboat/canary")
    for path in sorted(Path(env["LAB_APP_STORAGE"]).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()


def app_health(env: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(f"{env['LAB_APP_URL']}/health", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def newest_set_ids(env: dict[str, str]) -> list[str]:
    return [s.set_id for s in Store(env["LAB_STORE"]).list_sets()]


def backup(env: dict[str, str], *extra: str) -> str:
    before = set(newest_set_ids(env))
    ok(run_playbook("backup", *extra))
    new = [s for s in newest_set_ids(env) if s not in before]
    assert len(new) == 1, new
    return new[0]


ALL_COMPONENTS = {"mysql", "redis", "vault", "app"}


@pytest.fixture
def full_set(lab_env) -> str:
    """The newest published set holding every component (what restore.yml picks), taken now when
    the store has none: the restore tests need one, whichever tests ran before them (or none, with -k)."""
    full = [s for s in Store(lab_env["LAB_STORE"]).list_sets() if ALL_COMPONENTS <= set(s.components)]
    return full[-1].set_id if full else backup(lab_env)


# --------------------------------------------------------------------------- tests

def test_backup_wipe_restore_gives_back_equal_data_and_a_healthy_app(lab_env):
    expected = stack_state(lab_env)
    assert expected["vault"] and expected["mysql"] and expected["files"]
    set_id = backup(lab_env)
    manifest = Store(lab_env["LAB_STORE"]).open_set(set_id).manifest
    assert manifest["type"] == "full" and sorted(manifest["components"]) == ["app", "mysql", "redis", "vault"]

    wipe_every_component(lab_env)
    assert vault_canary(lab_env) is None and not files_state(lab_env)

    proc = ok(run_playbook("restore", "-e", f"backup_id={set_id}"))
    assert f"restored_set\": \"{set_id}" in proc.stdout
    assert re.search(r"PREFLIGHT passed in [0-9.]+ s: set " + set_id, proc.stdout)  # timed, on its own line
    assert "is undefined" not in proc.stdout + proc.stderr  # no template warning (issue 17 part 5)
    assert app_health(lab_env) == 200
    assert stack_state(lab_env) == expected


@pytest.mark.slow
def test_failed_health_gate_rolls_back_and_leaves_the_old_data_running(lab_env):
    old_set = backup(lab_env, "-e", "components=redis,app")
    marker = f"after-backup-{time.time_ns()}"
    redis_client(lab_env).set("lifeboat:test:marker", marker)
    (Path(lab_env["LAB_APP_STORAGE"]) / "after-backup.txt").write_text(marker)
    before = stack_state(lab_env)

    proc = run_playbook("restore", "-e", f"backup_id={old_set}", "-e", "components=redis,app",
                        "-e", "lifeboat_test_stop_after_restore=redis", "-e", "lifeboat_restore_gate_retries=2",
                        "-e", "lifeboat_restore_gate_delay=1")

    assert proc.returncode != 0
    last = proc.stdout[proc.stdout.rindex("fatal:"):]
    assert "step health gate" in last and "redis" in last and "ROLLED BACK" in last
    assert app_health(lab_env) == 200
    assert redis_client(lab_env).get("lifeboat:test:marker") == marker.encode()
    assert stack_state(lab_env) == before


def partial_sets(env: dict[str, str]) -> set[str]:
    return {p.name for p in (Path(env["LAB_STORE"]) / ".partial").glob("*_*")}


def test_a_failed_safety_copy_is_aborted_and_frees_the_store_for_the_next_backup(lab_env, full_set):
    partial_before = partial_sets(lab_env)
    # the backup account cannot log in: the mysql safety copy fails; a required copy stops the restore
    proc = run_playbook("restore", "-e", "components=mysql", "-e", "lifeboat_mysql_backup_password=wrong",
                        "-e", "lifeboat_restore_safety_copy_required=true")

    assert proc.returncode != 0
    assert "step safety" in proc.stdout[proc.stdout.rindex("fatal:"):]
    abort = proc.stdout.split("TASK [Abort the safety copy]", 1)[1].split("TASK [", 1)[0]
    assert "fatal" not in abort, abort
    assert partial_sets(lab_env) <= partial_before  # the aborted safety set is gone, its lease ended
    backup(lab_env, "-e", "components=app")  # the store's create lock is free


def test_check_mode_changes_nothing(lab_env, full_set):
    sets_before = newest_set_ids(lab_env)
    state_before = stack_state(lab_env)
    ok(run_playbook("backup", check=True))
    ok(run_playbook("restore", check=True))
    assert newest_set_ids(lab_env) == sets_before
    assert not list((Path(lab_env["LAB_STORE"]) / ".partial").glob("*_*"))
    assert stack_state(lab_env) == state_before


def test_backup_twice_gives_two_sets(lab_env):
    first = backup(lab_env, "-e", "components=vault,app")
    second = backup(lab_env, "-e", "components=vault,app")
    assert first != second
    assert Store(lab_env["LAB_STORE"]).open_set(second).components == ["vault", "app"]


def test_full_verify_marks_a_good_set_verified_and_a_tampered_set_failed_naming_the_artifact(lab_env):
    store = Store(lab_env["LAB_STORE"])
    good = backup(lab_env, "-e", "components=redis,app")
    ok(run_playbook("verify", "-e", "mode=full", "-e", f"backup_id={good}", "-e", "components=redis,app"))
    info = next(s for s in store.list_sets() if s.set_id == good)
    assert (info.status, info.verified_mode) == ("verified", "full")

    bad = backup(lab_env, "-e", "components=app")
    artifact = next(a for a in store.open_set(bad).artifacts("app") if a["name"].endswith(".enc"))
    target = store.open_set(bad).path / artifact["path"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(target, 0o600)
    target.write_bytes(bytes(data))

    proc = run_playbook("verify", "-e", "mode=full", "-e", f"backup_id={bad}", "-e", "components=app")
    assert proc.returncode != 0
    last = proc.stdout[proc.stdout.rindex("fatal:"):]
    assert artifact["path"] in last and bad in last
    assert next(s for s in store.list_sets() if s.set_id == bad).status == "failed"


def test_a_vault_restore_failing_in_the_background_fails_the_restore_naming_vault_and_why(lab_env):
    backup(lab_env, "-e", "components=vault")
    # the token the force-restore uses is refused: the module fails inside its background job
    # (the preflight, which would refuse that token first, is skipped by its test hook)
    proc = run_playbook("restore", "-e", "components=vault", "-e", "lifeboat_restore_safety_copy=false",
                        "-e", "lifeboat_vault_restore_token=not-a-token",
                        "-e", "lifeboat_test_skip_vault_token_preflight=true")

    assert proc.returncode != 0
    assert "started in the background" in proc.stdout  # the failure came through async_status
    final = proc.stdout[proc.stdout.rindex("fatal:"):]
    assert "vault" in final and "step restore" in final
    assert "not-a-token" not in proc.stdout + proc.stderr
    job = re.search(r'"ansible_job_id": "([^"]+)"', proc.stdout).group(1)
    assert not (Path.home() / ".ansible_async" / job).exists()  # its result file was cleaned up
    health = json.loads(urllib.request.urlopen(lab_env["LAB_VAULT_ADDR"] + "/v1/sys/health", timeout=5).read())
    assert health["sealed"] is False and health["standby"] is False  # nothing was restored
