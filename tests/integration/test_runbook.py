"""docs/runbook.md, break-glass section: decrypt with lifeboat-decrypt (escrow key), load with
the servers' own tools (tar, redis-check-rdb, the mariadb client), compare with the live data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pymysql
import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"


@pytest.fixture(scope="module")
def full_set(lab_env):
    """A fresh full set made by backup.yml (demo database only)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
    before = {s.set_id for s in Store(lab_env["LAB_STORE"]).list_sets()}
    proc = subprocess.run(["ansible-playbook", "-i", "inventories/lab", "playbooks/backup.yml",
                           "-e", '{"lifeboat_mysql_databases": ["demo"]}'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    new = [s for s in Store(lab_env["LAB_STORE"]).list_sets() if s.set_id not in before]
    return new[-1].path


def decrypt(lab_env, artifact: Path, out: Path) -> Path:
    proc = subprocess.run([str(BIN / "lifeboat-decrypt"), "--key-file", lab_env["LAB_ESCROW_KEY_FILE"], "-o",
                           str(out), str(artifact)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


def test_app_files_decrypt_and_untar_to_the_listed_hashes(lab_env, full_set, tmp_path):
    tar_path = decrypt(lab_env, full_set / "app" / "storage.tar.zst.enc", tmp_path / "storage.tar")
    dest = tmp_path / "storage"
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(tar_path), "-C", str(dest)], check=True)
    listing = json.loads((full_set / "app" / "storage_files.json").read_text())
    files = [e for e in listing["entries"] if e["type"] == "file"]
    assert files
    for entry in files:
        assert hashlib.sha256((dest / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry["path"]


@pytest.mark.skipif(shutil.which("redis-check-rdb") is None, reason="redis-check-rdb not installed")
def test_redis_rdb_decrypts_to_a_file_redis_check_rdb_accepts(lab_env, full_set, tmp_path):
    rdb = decrypt(lab_env, full_set / "redis" / "dump.rdb.zst.enc", tmp_path / "dump.rdb")
    proc = subprocess.run(["redis-check-rdb", str(rdb)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "RDB looks OK" in proc.stdout + proc.stderr


def test_mysql_table_dump_loads_with_the_mariadb_client(lab_env, full_set, tmp_path):
    data = decrypt(lab_env, full_set / "mysql" / "data.demo.orders.sql.zst.enc", tmp_path / "orders.sql")
    scratch = f"lbrunbook_{os.getpid()}"
    conn = pymysql.connect(host=lab_env["LAB_MYSQL_HOST"], port=int(lab_env["LAB_MYSQL_PORT"]),
                           user=lab_env["LAB_MYSQL_USER"], password=lab_env["LAB_MYSQL_PASSWORD"], autocommit=True)
    cnf = tmp_path / "client.cnf"
    fd = os.open(cnf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"[client]\nhost={lab_env['LAB_MYSQL_HOST']}\nport={lab_env['LAB_MYSQL_PORT']}\n"
                  f"user={lab_env['LAB_MYSQL_USER']}\npassword={lab_env['LAB_MYSQL_PASSWORD']}\n")
    client = shutil.which("mariadb") or shutil.which("mysql")
    assert client, "the mariadb client is needed"
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{scratch}`")
            cur.execute(f"CREATE TABLE `{scratch}`.orders LIKE demo.orders")
        with open(data, "rb") as sql:
            proc = subprocess.run([client, f"--defaults-extra-file={cnf}", scratch], stdin=sql,
                                  capture_output=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        with conn.cursor() as cur:
            cur.execute(f"CHECKSUM TABLE `{scratch}`.orders")
            restored = cur.fetchone()[1]
            cur.execute("CHECKSUM TABLE demo.orders")
            assert restored == cur.fetchone()[1]
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{scratch}`")
        conn.close()
