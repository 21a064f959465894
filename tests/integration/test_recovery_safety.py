"""Recovery safety (issue 17): restore.yml and pitr.yml prove the target before touching anything.

Each refused run must leave every service as it was (same pids), write no set into the store
(no safety copy, no partial) and keep the app up; the final message names the real cause.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_playbooks import REPO, app_health, backup, ok, run_playbook

from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store


def lab_pids() -> dict[str, int | None]:
    """The pid of every lab service (None when down)."""
    proc = subprocess.run([sys.executable, "-m", "lab", "status", "--json"], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return {row["service"]: row["pid"] for row in json.loads(proc.stdout)}


def store_sets(env: dict[str, str]) -> set[str]:
    """Every set of the store, published or partial."""
    return {s.set_id for s in Store(env["LAB_STORE"]).list_sets(include_partial=True)}


def final_message(proc: subprocess.CompletedProcess) -> str:
    """The last 'fatal:' line of a playbook run."""
    assert proc.returncode != 0, proc.stdout[-3000:]
    return proc.stdout[proc.stdout.rindex("fatal:"):].splitlines()[0]


def datadir_siblings(env: dict[str, str]) -> set[str]:
    datadir = Path(env["LAB_STATE_DIR"]) / "mysql" / "data"
    return {p.name for p in datadir.parent.iterdir()}


@pytest.fixture
def nothing_changes(lab_env):
    """Asserts after the test that no service was restarted, no set written and the app is up."""
    pids, sets, siblings = lab_pids(), store_sets(lab_env), datadir_siblings(lab_env)
    assert all(pids.values()), pids
    yield
    assert lab_pids() == pids
    assert store_sets(lab_env) == sets
    assert datadir_siblings(lab_env) == siblings  # no datadir moved aside
    assert app_health(lab_env) == 200


@pytest.fixture(scope="module")
def a_set(lab_env) -> str:
    return backup(lab_env, "-e", "components=mysql,redis,app")


def test_pitr_with_a_wrong_port_refuses_and_keeps_the_healthy_server(lab_env, nothing_changes):
    real_port = int(lab_env["LAB_MYSQL_PORT"])
    wrong = real_port + 7
    proc = run_playbook("pitr", "-e", "mode=execute", "-e", "target=latest", "-e", f"lifeboat_mysql_port={wrong}")
    last = final_message(proc)
    assert f"127.0.0.1:{wrong} refused the connection" in last  # the address tried
    assert f"listens on 127.0.0.1:{real_port}" in last and "mysql is running" in last  # what runs
    assert "fix lifeboat_mysql_host/lifeboat_mysql_port" in last and "not dead" in last  # the fix
    assert "Stop the app" not in proc.stdout.split("fatal:", 1)[0]


def test_pitr_with_fresh_server_yes_still_refuses_a_server_running_elsewhere(lab_env, nothing_changes):
    wrong = int(lab_env["LAB_MYSQL_PORT"]) + 7
    proc = run_playbook("pitr", "-e", "mode=execute", "-e", "target=latest", "-e", "fresh_server=yes",
                        "-e", f"lifeboat_mysql_port={wrong}")
    assert "refusing, nothing was stopped or changed" in final_message(proc)


def test_restore_against_a_wrong_port_refuses_in_seconds_before_anything_is_stopped(lab_env, a_set,
                                                                                    nothing_changes):
    wrong = int(lab_env["LAB_REDIS_PORT"]) + 7
    started = time.monotonic()
    proc = run_playbook("restore", "-e", f"backup_id={a_set}", "-e", "components=mysql,redis,app",
                        "-e", f"lifeboat_redis_port={wrong}")
    elapsed = time.monotonic() - started
    last = final_message(proc)
    assert "restore NOT started, nothing changed" in last
    assert f"127.0.0.1:{wrong} refused the connection" in last and "redis is running" in last
    assert "fix lifeboat_redis_host/lifeboat_redis_port" in last
    assert "One or more items failed" not in last
    assert elapsed < 30, f"took {elapsed:.1f} s"


def vault_root_call(env: dict[str, str], method: str, path: str, body: dict | None = None) -> dict:
    """One Vault API call with the lab's root token (from its init file)."""
    import urllib.request

    root_token = json.loads(Path(env["LAB_VAULT_UNSEAL_KEYS_FILE"]).read_text())["root_token"]
    req = urllib.request.Request(f"{env['LAB_VAULT_ADDR']}/v1/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-Vault-Token": root_token})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
        return json.loads(text) if text else {}


@pytest.fixture(scope="module")
def a_vault_set(lab_env) -> str:
    return backup(lab_env, "-e", "components=vault")


def test_a_vault_token_without_the_snapshot_capability_is_refused_naming_path_and_capability(
        lab_env, a_vault_set, nothing_changes, tmp_path):
    policy = {"policy": 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }'}
    vault_root_call(lab_env, "PUT", "sys/policies/acl/lifeboat-test-no-snapshot", policy)
    token = vault_root_call(lab_env, "POST", "auth/token/create", {"policies": ["lifeboat-test-no-snapshot"],
                                                                   "ttl": "10m"})
    extra = tmp_path / "token.json"  # never on argv
    extra.write_text(json.dumps({"lifeboat_vault_restore_token": token["auth"]["client_token"]}))
    extra.chmod(0o600)

    proc = run_playbook("restore", "-e", f"backup_id={a_vault_set}", "-e", "components=vault", "-e", f"@{extra}")

    last = final_message(proc)
    assert "restore NOT started, nothing changed" in last
    assert "'update' sys/storage/raft/snapshot-force" in last  # the capability and the path
    assert 'path \\"sys/storage/raft/snapshot-force\\" { capabilities = [\\"update\\"] }' in last  # the fix
    assert "sys/storage/raft/snapshot (take" not in last  # the capability it has is not reported missing
    assert token["auth"]["client_token"] not in proc.stdout + proc.stderr


@pytest.mark.parametrize("damage", ["wrong key", "wrong escrow key", "flipped byte", "truncated artifact",
                                    "missing artifact", "edited manifest"])
def test_a_bad_set_or_key_refuses_the_restore_before_the_safety_copy(lab_env, nothing_changes, tmp_path, damage):
    set_id = backup(lab_env, "-e", "components=redis,app")
    store = Store(lab_env["LAB_STORE"])
    backup_set = store.open_set(set_id)
    artifact = backup_set.path / backup_set.artifacts("redis")[0]["path"]
    extra: list[str] = []
    if damage in ("wrong key", "wrong escrow key"):
        from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import create_key_file

        create_key_file(tmp_path / "other.key")
        var = "lifeboat_key_file" if damage == "wrong key" else "lifeboat_escrow_key_file"
        extra = ["-e", f"{var}={tmp_path / 'other.key'}"]
        expected = str(tmp_path / "other.key")
    elif damage == "flipped byte":
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0x01
        artifact.write_bytes(bytes(data))
        expected = artifact.name
    elif damage == "truncated artifact":
        artifact.write_bytes(artifact.read_bytes()[:-64])
        expected = artifact.name
    elif damage == "missing artifact":
        artifact.unlink()
        expected = "missing"
    else:
        manifest_file = backup_set.path / "backup_manifest.json"
        manifest = json.loads(manifest_file.read_text())
        manifest["component_metadata"]["redis"] = {"edited": True}
        manifest_file.write_text(json.dumps(manifest))
        expected = "manifest authenticates"
    sets_before = store_sets(lab_env)

    try:
        proc = run_playbook("restore", "-e", f"backup_id={set_id}", "-e", "components=redis,app", *extra)
        last = final_message(proc)
        assert "restore NOT started, nothing changed" in last and "preflight refused" in last
        assert expected in last
        assert store_sets(lab_env) == sets_before  # no safety copy
        assert "Open the pre-restore safety copy" not in proc.stdout
    finally:
        import shutil

        shutil.rmtree(backup_set.path)  # the damaged set must not be picked by later tests


def test_a_missing_privilege_is_named_by_the_statement_it_blocked(lab_env):
    """Part 5: the error names the privilege (DROP) and the statement, not ['DROP', 'DATABASE', 'IF']."""
    import secrets

    import pymysql

    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import PermissionDenied

    admin = pymysql.connect(host=lab_env["LAB_MYSQL_HOST"], port=int(lab_env["LAB_MYSQL_PORT"]),
                            user=lab_env["LAB_MYSQL_USER"], password=lab_env["LAB_MYSQL_PASSWORD"], autocommit=True)
    password = secrets.token_urlsafe(16)
    try:
        with admin.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS lifeboat_test_nodrop")
            cur.execute("CREATE USER IF NOT EXISTS 'lifeboat_test_nodrop'@'%%' IDENTIFIED BY %s", (password,))
            cur.execute("GRANT SELECT ON lifeboat_test_nodrop.* TO 'lifeboat_test_nodrop'@'%'")
        limited = pymysql.connect(host=lab_env["LAB_MYSQL_HOST"], port=int(lab_env["LAB_MYSQL_PORT"]),
                                  user="lifeboat_test_nodrop", password=password)
        with limited, pytest.raises(PermissionDenied) as err:
            my.execute(limited, "DROP DATABASE IF EXISTS `lifeboat_test_nodrop`")
        text = str(err.value)
        assert "running DROP DATABASE IF EXISTS `lifeboat_test_nodrop`" in text
        assert "GRANT DROP " in text
        assert "['DROP'" not in text
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP USER IF EXISTS 'lifeboat_test_nodrop'@'%'")
            cur.execute("DROP DATABASE IF EXISTS lifeboat_test_nodrop")
        admin.close()


def restore_outcome(tmp_path: Path, *, failures=(), warnings=(), gate=None, taken=True, safety_id="") -> dict:
    """What restore.yml's summary and final message say for these recorded facts (the real task file)."""
    out = tmp_path / "outcome.json"
    extra = {"case_failures": list(failures), "case_warnings": list(warnings), "case_gate": gate or {},
             "case_taken": taken, "case_safety_id": safety_id, "out_file": str(out)}
    proc = subprocess.run(["ansible-playbook", "-i", "inventories/lab", "-e", json.dumps(extra),
                           str(REPO / "tests" / "integration" / "playbooks" / "restore_outcome.yml")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


SAFETY = "pre-restore_20260101T000000Z_abcdef"


def test_a_failed_rollback_is_never_reported_as_rolled_back(tmp_path):
    failures = [{"host": "lab-store", "component": "health", "step": "health gate", "msg": "redis down"},
                {"host": "lab-mysql", "component": "mysql", "step": "rollback", "msg": "restore failed"}]
    outcome = restore_outcome(tmp_path, failures=failures, gate={"restore": "unhealthy", "rollback": "healthy"},
                              safety_id=SAFETY)
    assert outcome["rolled_back"] is False
    assert "ROLLED BACK" not in outcome["extra"] and "was restored" not in outcome["extra"]
    assert f"the rollback to {SAFETY} FAILED (mysql)" in " ".join(outcome["extra"].split())


def test_a_rollback_without_failures_and_a_healthy_gate_is_rolled_back(tmp_path):
    failures = [{"host": "lab-store", "component": "health", "step": "health gate", "msg": "redis down"}]
    outcome = restore_outcome(tmp_path, failures=failures, gate={"restore": "unhealthy", "rollback": "healthy"},
                              safety_id=SAFETY)
    assert outcome["rolled_back"] is True and "ROLLED BACK" in outcome["extra"]
    assert outcome["safety_copy"] == f"taken: {SAFETY}"


def test_a_safety_copy_that_was_not_kept_is_not_reported_taken(tmp_path):
    warning = {"host": "lab-store", "component": "set", "step": "safety",
               "msg": "the pre-restore safety copy is incomplete (mysql failed), so it is not kept"}
    outcome = restore_outcome(tmp_path, warnings=[warning], taken=True)
    assert outcome["safety_copy"].startswith("NOT kept: the pre-restore safety copy is incomplete")
    assert "taken" not in outcome["safety_copy"].replace("NOT kept", "")
    assert "no safety copy was kept" in outcome["extra"]


def test_verify_of_a_set_that_does_not_exist_does_not_claim_it_is_marked_failed(lab_env):
    proc = run_playbook("verify", "-e", "backup_id=full_20200101T000000Z_000000")
    last = final_message(proc)
    assert "full_20200101T000000Z_000000" in last
    assert "marked failed" not in last


def test_a_restore_that_goes_on_without_its_failed_safety_copy_is_not_recorded_as_not_started(lab_env):
    set_id = backup(lab_env, "-e", "components=redis")
    history = Path(lab_env["LAB_STORE"]) / "jobs" / "history.jsonl"
    lines_before = len(history.read_text().splitlines()) if history.exists() else 0
    # the backup account cannot log in: the redis safety copy fails; it is not required, so the restore runs
    proc = ok(run_playbook("restore", "-e", f"backup_id={set_id}", "-e", "components=redis",
                           "-e", "lifeboat_redis_backup_password=wrong"))
    summary = proc.stdout.split("TASK [Summary]", 1)[1]
    assert '"safety_copy": "NOT kept: ' in summary  # not "taken", as the warnings say
    new_jobs = [json.loads(line) for line in history.read_text().splitlines()[lines_before:]]
    assert not [j for j in new_jobs if "restore not started" in json.dumps(j)], new_jobs
    assert [j for j in new_jobs if "the restore goes on without it" in json.dumps(j)], new_jobs
    assert [j for j in new_jobs if j.get("kind", j.get("type")) == "restore"], new_jobs


def test_pitr_with_a_refused_target_leaves_the_app_running(lab_env, a_set, nothing_changes):
    proc = run_playbook("pitr", "-e", "mode=execute", "-e", "target_time=2001-01-01T00:00:00Z")
    last = final_message(proc)
    assert "2001-01-01" in last
    assert "TASK [stack_service" not in proc.stdout  # no service was stopped or started


@pytest.mark.parametrize("damaged", ["base set", "binlog set"])
def test_pitr_with_a_damaged_set_is_refused_before_anything_is_stopped(lab_env, a_set, tmp_path, damaged):
    ok(run_playbook("archive_binlogs"))
    plan_file = tmp_path / "plan.json"
    ok(run_playbook("pitr", "-e", "mode=plan", "-e", "target=latest", "-e", f"plan_file={plan_file}"))
    plan = json.loads(plan_file.read_text())["plan"]
    store = Store(lab_env["LAB_STORE"])
    if damaged == "base set":
        backup_set = store.open_set(plan["base"]["set_id"])
        artifact = backup_set.path / backup_set.artifacts("mysql")[0]["path"]
    else:
        assert plan["replay"], "the plan replays no binlog set"
        backup_set = store.open_set(plan["replay"][-1]["set_id"], parent=plan["replay"][-1]["parent"])
        artifact = backup_set.path / backup_set.artifacts()[0]["path"]
    original = artifact.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    pids, sets = lab_pids(), store_sets(lab_env)
    artifact.write_bytes(bytes(flipped))
    try:
        proc = run_playbook("pitr", "-e", "mode=execute", "-e", "target=latest")
    finally:
        artifact.write_bytes(original)
    last = final_message(proc)
    # the plan reads the binlogs to place the target, so it refuses a damaged binlog set itself;
    # the base set's dump is read by nobody before the restore: the preflight refuses it
    if damaged == "base set":
        assert "preflight refused" in last and artifact.name in last
    else:
        assert f"artifact '{backup_set.artifacts()[0]['path']}' failed authentication" in last
    assert "TASK [stack_service" not in proc.stdout
    assert lab_pids() == pids and store_sets(lab_env) == sets and app_health(lab_env) == 200


def test_a_sealed_vault_is_unsealed_and_gets_its_safety_copy_before_it_is_restored(lab_env, a_vault_set):
    vault_root_call(lab_env, "PUT", "sys/seal")
    health = json.loads(subprocess.run(["curl", "-s", f"{lab_env['LAB_VAULT_ADDR']}/v1/sys/health"],
                                       capture_output=True, text=True, check=True).stdout)
    assert health["sealed"] is True
    sets_before = store_sets(lab_env)

    proc = ok(run_playbook("restore", "-e", f"backup_id={a_vault_set}", "-e", "components=vault"))

    assert "the sealed Vault was unsealed with the escrowed keys for its safety copy" in proc.stdout
    from ansible_collections.lifeboat.dr.plugins.module_utils.ops.orchestrate import purpose_of

    store = Store(lab_env["LAB_STORE"])
    safety = [s for s in store_sets(lab_env) - sets_before
              if (purpose_of(store.open_set(s)) or {}).get("purpose") == "pre-restore"]
    assert len(safety) == 1, store_sets(lab_env) - sets_before
    assert store.open_set(safety[0]).components == ["vault"]
    summary = proc.stdout.split("TASK [Summary]", 1)[1]
    assert f'"safety_copy": "taken: {safety[0]}"' in summary


def test_a_safety_copy_is_never_written_with_keys_that_are_not_the_stores(lab_env, a_set, nothing_changes,
                                                                          tmp_path):
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import create_key_file

    create_key_file(tmp_path / "other.key")
    # the set is read from a source store with its right keys; the safety copy would be written with
    # lifeboat_key_file, which is not this store's key
    proc = run_playbook("restore", "-e", f"backup_id={a_set}", "-e", "components=redis",
                        "-e", f"lifeboat_source_store={lab_env['LAB_STORE']}",
                        "-e", f"lifeboat_source_key_file={lab_env['LAB_KEY_FILE']}",
                        "-e", f"lifeboat_source_escrow_key_file={lab_env['LAB_ESCROW_KEY_FILE']}",
                        "-e", f"lifeboat_key_file={tmp_path / 'other.key'}")
    last = final_message(proc)
    assert "restore NOT started, nothing changed" in last
    assert "safety copy keys are the store's" in last and str(tmp_path / "other.key") in last


@pytest.mark.parametrize("status, verdict_text", [
    (["true"], "where it listens cannot be known with the command manager"),
    (["false"], "cannot be confirmed with this manager"),
])
def test_pitr_never_takes_a_refused_connection_for_a_dead_server_when_the_manager_cannot_tell_where_it_listens(
        lab_env, nothing_changes, status, verdict_text):
    wrong = int(lab_env["LAB_MYSQL_PORT"]) + 7
    manager = {"lifeboat_service_manager": "command",
               "lifeboat_service_settings": {"start": ["false"], "stop": ["false"], "status": status},
               "lifeboat_mysql_port": wrong}
    proc = run_playbook("pitr", "-e", "mode=execute", "-e", "target=latest", "-e", json.dumps(manager))
    last = final_message(proc)
    assert "refusing, nothing was stopped or changed" in last and f"127.0.0.1:{wrong} refused" in last
    assert verdict_text in last
    assert "-e fresh_server=yes" in last  # the way forward when it really is dead


def test_a_separate_restore_token_needs_only_the_force_restore_capability(lab_env, a_vault_set, tmp_path):
    policy = {"policy": 'path "sys/storage/raft/snapshot-force" { capabilities = ["update"] }'}
    vault_root_call(lab_env, "PUT", "sys/policies/acl/lifeboat-test-force-only", policy)
    token = vault_root_call(lab_env, "POST", "auth/token/create", {"policies": ["lifeboat-test-force-only"],
                                                                   "ttl": "10m"})
    extra = tmp_path / "token.json"  # never on argv
    extra.write_text(json.dumps({"lifeboat_vault_restore_token": token["auth"]["client_token"]}))
    extra.chmod(0o600)

    proc = ok(run_playbook("restore", "-e", f"backup_id={a_vault_set}", "-e", "components=vault", "-e", f"@{extra}",
                           check=True))

    assert "PREFLIGHT passed in" in proc.stdout and "Vault token capabilities checked" in proc.stdout
    assert "TASK [Preflight: the Vault restore token (lifeboat_vault_restore_token) may force-restore]" in proc.stdout
