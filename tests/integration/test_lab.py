"""The lab: a private stack of real servers that `python -m lab` starts, reports and stops.

Most tests run a second, private lab (temporary state folder, ports shifted with
LAB_PORT_BASE) so the main lab other tests use is never disturbed; a few check
the main lab through the ``lab_env`` fixture without changing it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import hvac
import pymysql
import pytest
import redis

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import DependencyMissing
from lab import procs
from lab.envinfo import ENV_NAMES
from lab.layout import DEFAULT_PORTS

REPO_DIR = Path(__file__).resolve().parents[2]
PORT_OFFSETS = (1000, 1500, 2000, 2500, 3000)
SERVICES = ("mysql", "redis", "vault", "app")


def run_lab(*args: str, state_dir: Path | None = None, port_base: int | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m lab ARGS`` as a user would, optionally on another state folder/ports."""
    env = dict(os.environ)
    if state_dir is not None:
        env["LAB_STATE_DIR"] = str(state_dir)
        env.pop("LAB_PORT_BASE", None)
    if port_base is not None:
        env["LAB_PORT_BASE"] = str(port_base)
    result = subprocess.run([sys.executable, "-m", "lab", *args], cwd=REPO_DIR, env=env,
                            capture_output=True, text=True, timeout=180, check=False)
    if check:
        assert result.returncode == 0, f"lab {' '.join(args)} failed:\n{result.stderr}"
    return result


def parse_exports(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        words = shlex.split(line)
        assert len(words) == 2 and words[0] == "export", f"not an export line: {line!r}"
        name, _sep, value = words[1].partition("=")
        values[name] = value
    return values


def http_get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def pids(state_dir: Path) -> dict[str, int | None]:
    return {name: procs.read_pid(state_dir / "run" / f"{name}.pid") for name in SERVICES}


def free_port_offset() -> int:
    for offset in PORT_OFFSETS:
        if not any(procs.port_open("127.0.0.1", port + offset) for port in DEFAULT_PORTS.values()):
            return offset
    pytest.skip("no free port range for a private lab")


@pytest.fixture(scope="module")
def private_lab(tmp_path_factory):
    """A second lab brought up from nothing; stopped again after the module."""
    state_dir = tmp_path_factory.mktemp("lab")
    offset = free_port_offset()
    started = time.monotonic()
    run_lab("up", "--rows", "200", state_dir=state_dir, port_base=offset)
    up_seconds = time.monotonic() - started
    values = parse_exports(run_lab("env", state_dir=state_dir).stdout)
    yield {"state_dir": state_dir, "offset": offset, "env": values, "up_seconds": up_seconds}
    run_lab("down", state_dir=state_dir, check=False)


def test_private_lab_uses_shifted_ports_and_comes_up_quickly(private_lab):
    env, offset = private_lab["env"], private_lab["offset"]
    assert int(env["LAB_MYSQL_PORT"]) == DEFAULT_PORTS["mysql"] + offset
    assert int(env["LAB_REDIS_PORT"]) == DEFAULT_PORTS["redis"] + offset
    assert env["LAB_VAULT_ADDR"].endswith(f":{DEFAULT_PORTS['vault'] + offset}")
    assert env["LAB_APP_URL"].endswith(f":{DEFAULT_PORTS['app'] + offset}")
    assert env["LAB_STATE_DIR"] == str(private_lab["state_dir"])
    assert private_lab["up_seconds"] < 60


def test_private_lab_mariadb_answers_admin_and_backup_user(private_lab):
    env = private_lab["env"]
    for user, password in ((env["LAB_MYSQL_USER"], env["LAB_MYSQL_PASSWORD"]),
                           (env["LAB_MYSQL_BACKUP_USER"], env["LAB_MYSQL_BACKUP_PASSWORD"])):
        with pymysql.connect(host=env["LAB_MYSQL_HOST"], port=int(env["LAB_MYSQL_PORT"]), user=user,
                             password=password, database="demo") as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM customers")
            assert cur.fetchone()[0] == 200
            cur.execute("SELECT @@log_bin, @@binlog_format, @@gtid_strict_mode, @@server_id")
            assert cur.fetchone() == (1, "ROW", 1, 1)


def test_private_lab_backup_user_cannot_write(private_lab):
    env = private_lab["env"]
    with pymysql.connect(host=env["LAB_MYSQL_HOST"], port=int(env["LAB_MYSQL_PORT"]),
                         user=env["LAB_MYSQL_BACKUP_USER"], password=env["LAB_MYSQL_BACKUP_PASSWORD"]) as conn:
        with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
            cur.execute("DELETE FROM demo.customers")


def test_private_lab_redis_requires_auth_and_backup_user_is_read_only(private_lab):
    env = private_lab["env"]
    host, port = env["LAB_REDIS_HOST"], int(env["LAB_REDIS_PORT"])
    assert redis.Redis(host=host, port=port, password=env["LAB_REDIS_PASSWORD"]).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=port).ping()
    backup = redis.Redis(host=host, port=port, username=env["LAB_REDIS_BACKUP_USER"],
                         password=env["LAB_REDIS_BACKUP_PASSWORD"])
    assert backup.ping() and backup.dbsize() > 0
    assert backup.config_get("appendonly") == {"appendonly": "yes"}
    with pytest.raises(redis.exceptions.NoPermissionError):
        backup.set("written-by-backup-user", "1")


def test_private_lab_openbao_kv_and_transit_work_with_the_lifeboat_token(private_lab):
    env = private_lab["env"]
    client = hvac.Client(url=env["LAB_VAULT_ADDR"], token=env["LAB_VAULT_TOKEN"])
    canary = client.secrets.kv.v2.read_secret_version(path="lifeboat/canary", mount_point="secret",
                                                      raise_on_deleted_version=True)
    assert canary["data"]["data"]["value"]
    encrypted = client.secrets.transit.encrypt_data(name="lifeboat", plaintext="aGVsbG8=")
    assert encrypted["data"]["ciphertext"].startswith("vault:v1:")
    snapshot = client.adapter.get("/v1/sys/storage/raft/snapshot", stream=True)
    assert snapshot.status_code == 200 and len(snapshot.content) > 0
    init = Path(env["LAB_VAULT_UNSEAL_KEYS_FILE"])
    assert stat.S_IMODE(init.stat().st_mode) == 0o600
    assert json.loads(init.read_text())["unseal_keys_b64"]


def test_private_lab_app_is_healthy(private_lab):
    status, body = http_get(private_lab["env"]["LAB_APP_URL"] + "/health")
    assert (status, body) == (200, {"mysql": "ok", "redis": "ok", "vault": "ok"})


def http_post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_app_canary_is_acknowledged_only_when_written_to_all_three_stores(private_lab):
    url, state_dir = private_lab["env"]["LAB_APP_URL"], private_lab["state_dir"]
    assert http_post(url + "/canary", b'{"seq": 7, "ts": 1.5}')[0] == 200
    status, seqs = http_get(url + "/canary")
    assert status == 200 and all(7 in seqs[store] for store in ("mysql", "redis", "file"))
    run_lab("service", "redis", "stop", state_dir=state_dir)
    try:
        status, body = http_post(url + "/canary", b'{"seq": 8, "ts": 2.5}')
        assert status == 503 and body["redis"] != "ok"
        status, health = http_get(url + "/health")
        assert status == 503 and health["redis"] != "ok" and health["mysql"] == "ok"
    finally:
        run_lab("service", "redis", "start", state_dir=state_dir)
    assert http_get(url + "/health")[0] == 200
    assert http_post(url + "/canary", b'{"seq": "x"}')[0] == 400


def test_app_stores_uploaded_files_with_their_hash(private_lab):
    env = private_lab["env"]
    status, row = http_post(env["LAB_APP_URL"] + "/files?name=report.txt", b"quarterly numbers\n")
    assert status == 200 and row["path"] == "uploads/report.txt" and row["size"] == 18
    assert (Path(env["LAB_APP_STORAGE"]) / "uploads" / "report.txt").read_bytes() == b"quarterly numbers\n"
    status, rows = http_get(env["LAB_APP_URL"] + "/files")
    assert status == 200 and row in rows
    assert {"path": "uploads/welcome.txt"}.items() <= next(r for r in rows if r["path"].endswith("welcome.txt")).items()
    assert http_post(env["LAB_APP_URL"] + "/files?name=../escape", b"x")[0] == 400


def test_second_up_is_a_noop_that_keeps_pids(private_lab):
    state_dir = private_lab["state_dir"]
    before = pids(state_dir)
    assert all(before.values())
    run_lab("up", state_dir=state_dir)
    assert pids(state_dir) == before


def test_seed_again_changes_no_data(private_lab):
    env = private_lab["env"]

    def checksums():
        with pymysql.connect(host=env["LAB_MYSQL_HOST"], port=int(env["LAB_MYSQL_PORT"]),
                             user=env["LAB_MYSQL_USER"], password=env["LAB_MYSQL_PASSWORD"]) as conn:
            with conn.cursor() as cur:
                cur.execute("CHECKSUM TABLE demo.customers, demo.orders, demo.order_items")
                return cur.fetchall()

    before = checksums()
    run_lab("seed", "--rows", "200", state_dir=private_lab["state_dir"])
    assert checksums() == before


def test_mysql_restart_keeps_data_and_app_recovers(private_lab):
    env, state_dir = private_lab["env"], private_lab["state_dir"]
    run_lab("service", "mysql", "restart", state_dir=state_dir)
    run_lab("service", "redis", "restart", state_dir=state_dir)
    with pymysql.connect(host=env["LAB_MYSQL_HOST"], port=int(env["LAB_MYSQL_PORT"]), user=env["LAB_MYSQL_USER"],
                         password=env["LAB_MYSQL_PASSWORD"], database="demo") as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM customers")
        assert cur.fetchone()[0] == 200
    assert http_get(env["LAB_APP_URL"] + "/health")[0] == 200


def test_vault_restart_unseals_with_the_stored_key(private_lab):
    env = private_lab["env"]
    old_pid = pids(private_lab["state_dir"])["vault"]
    run_lab("service", "vault", "restart", state_dir=private_lab["state_dir"])
    assert pids(private_lab["state_dir"])["vault"] != old_pid
    client = hvac.Client(url=env["LAB_VAULT_ADDR"], token=env["LAB_VAULT_TOKEN"])
    assert not client.sys.read_seal_status()["sealed"]
    assert client.secrets.kv.v2.read_secret_version(path="lifeboat/canary", mount_point="secret",
                                                    raise_on_deleted_version=True)["data"]["data"]


def test_no_secret_appears_in_any_lab_process_command_line(private_lab):
    env = private_lab["env"]
    secrets = [env[name] for name in ENV_NAMES if name.endswith(("PASSWORD", "TOKEN"))]
    secrets.append(json.loads(Path(env["LAB_VAULT_UNSEAL_KEYS_FILE"]).read_text())["root_token"])
    for name, pid in pids(private_lab["state_dir"]).items():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert not [s for s in secrets if s in cmdline], f"{name} has a secret in its argv"
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert not [s for s in secrets if s in environ], f"{name} has a secret in its environment"


def test_state_folder_of_another_port_base_is_refused(private_lab):
    result = run_lab("status", state_dir=private_lab["state_dir"], port_base=private_lab["offset"] + 7, check=False)
    assert result.returncode == 1
    assert "LAB_PORT_BASE" in result.stderr


def test_down_closes_ports_stops_only_lab_processes(private_lab):
    state_dir, offset = private_lab["state_dir"], private_lab["offset"]
    running = pids(state_dir)
    # A stranger's process named in a pid file must survive `down`.
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        extra_pid_file = state_dir / "run" / "app.pid"
        run_lab("service", "app", "stop", state_dir=state_dir)
        extra_pid_file.write_text(f"{stranger.pid}\n")
        run_lab("down", state_dir=state_dir)
        assert stranger.poll() is None, "down killed a process the lab did not start"
    finally:
        stranger.kill()
        stranger.wait()
    for port in DEFAULT_PORTS.values():
        assert not procs.port_open("127.0.0.1", port + offset), f"port {port + offset} still open"
    for name, pid in running.items():
        assert not procs.process_matches(pid, str(state_dir)), f"{name} (pid {pid}) still runs"
    assert not any(pids(state_dir).values())
    status = json.loads(run_lab("status", "--json", state_dir=state_dir).stdout)
    assert [row["running"] for row in status] == [False] * 4


def test_missing_program_names_the_debian_package():
    with pytest.raises(DependencyMissing, match="apt-get install some-debian-package"):
        procs.find_binary("no-such-program-lifeboat", "some-debian-package")


# --- the main lab, read-only ------------------------------------------------------------

def test_env_prints_only_export_lines_with_every_contract_name(lab_env):
    output = run_lab("env").stdout
    assert all(re.match(r"^export LAB_[A-Z_]+=", line) for line in output.splitlines())
    values = parse_exports(output)
    assert list(values) == list(ENV_NAMES)
    assert values == lab_env


def test_secret_files_are_private(lab_env):
    state_dir = Path(lab_env["LAB_STATE_DIR"])
    for path in (state_dir / "secrets.json", Path(lab_env["LAB_KEY_FILE"]), Path(lab_env["LAB_ESCROW_KEY_FILE"]),
                 Path(lab_env["LAB_VAULT_UNSEAL_KEYS_FILE"]), Path(lab_env["LAB_APP_DIR"]) / "vault-token"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for key in (lab_env["LAB_KEY_FILE"], lab_env["LAB_ESCROW_KEY_FILE"]):
        assert Path(key).stat().st_size == 32
    for folder in (state_dir, Path(lab_env["LAB_KEY_FILE"]).parent, Path(lab_env["LAB_STORE"])):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_status_reports_every_main_lab_service_up(lab_env):
    rows = json.loads(run_lab("status", "--json").stdout)
    assert {row["service"]: (row["running"], row["port_open"]) for row in rows} == {
        name: (True, True) for name in SERVICES}
