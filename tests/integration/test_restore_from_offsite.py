"""Restore when the local store is gone: backup.yml leaves a verified off-site copy, and
restore.yml pulls the set back from it (hashes and manifest MAC re-verified) and restores.

Runs ``ansible-playbook -i inventories/lab`` like the operators do. The store is a private
folder (``-e lifeboat_store=...``) so that wiping it does not take the sets of tests running
at the same time; backup.yml copies to the lab inventory's off-site folder (``<state>/offsite``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import redis

from ansible_collections.lifeboat.dr.plugins.module_utils.store import offsite
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[2]


def run_playbook(name: str, extra_vars: dict) -> subprocess.CompletedProcess:
    """``ansible-playbook -i inventories/lab playbooks/<name>.yml -e <json>`` from the repo."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    # only the demo database: other tests create and drop their own databases meanwhile
    extra = dict({"lifeboat_mysql_databases": ["demo"]}, **extra_vars)
    argv = ["ansible-playbook", "-i", "inventories/lab", f"playbooks/{name}.yml", "-e", json.dumps(extra)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def redis_client(env: dict[str, str]) -> redis.Redis:
    return redis.Redis(host=env["LAB_REDIS_HOST"], port=int(env["LAB_REDIS_PORT"]), password=env["LAB_REDIS_PASSWORD"])


def test_restore_pulls_the_set_from_the_offsite_copy_when_the_local_store_is_gone(lab_env, tmp_path):
    store = tmp_path / "store"
    offsite_root = Path(lab_env["LAB_STATE_DIR"]) / "offsite"
    token = secrets.token_hex(8)
    key = f"lifeboat:test:offsite:{token}"
    app_file = Path(lab_env["LAB_APP_STORAGE"]) / f"offsite-test-{token}.txt"
    r = redis_client(lab_env)
    r.set(key, token)
    app_file.write_text(token)
    set_id = None
    try:
        ok(run_playbook("backup", {"lifeboat_store": str(store), "components": "redis,app"}))
        (info,) = Store(store).list_sets()
        set_id = info.set_id

        # every backup leaves a verified copy in the lab's off-site folder
        copy = offsite_root / set_id
        assert (copy / MANIFEST_NAME).read_bytes() == (store / set_id / MANIFEST_NAME).read_bytes()
        offsite.verify_local_set(copy)  # raises if any file differs from the manifest

        # the off-site disk as the recovery host sees it, holding only this test's set (the lab's
        # folder also gets the sets of tests running meanwhile, and the restore takes the newest)
        recovery_offsite = tmp_path / "offsite"
        recovery_offsite.mkdir()
        shutil.move(copy, recovery_offsite / set_id)

        # disaster: the whole local store is gone, and so is some live data
        shutil.rmtree(store)
        r.delete(key)
        app_file.unlink()

        restore_vars = {"lifeboat_store": str(store), "components": "redis,app",
                        "lifeboat_offsite_target": str(recovery_offsite)}
        out = ok(run_playbook("restore", restore_vars))
        assert f"FROM OFFSITE: set {set_id} pulled from the off-site copy" in out
        assert r.get(key) == token.encode()
        assert app_file.read_text() == token
        # the set is back in the local store, whole
        assert ((store / set_id / MANIFEST_NAME).read_bytes()
                == (recovery_offsite / set_id / MANIFEST_NAME).read_bytes())
        offsite.verify_local_set(store / set_id)
    finally:
        r.delete(key)
        app_file.unlink(missing_ok=True)
        if set_id:
            shutil.rmtree(offsite_root / set_id, ignore_errors=True)
