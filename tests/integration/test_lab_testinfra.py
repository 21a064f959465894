"""The lab inventory describes the running lab: each role's host listens on its port.

Uses pytest-testinfra's ansible backend on ``inventories/lab`` (it runs
``ansible-inventory`` from the venv, which conftest puts first on PATH).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import testinfra

INVENTORY = Path(__file__).resolve().parents[2] / "inventories" / "lab"

CASES = [
    ("lab-mysql", "LAB_MYSQL_HOST", "LAB_MYSQL_PORT", "mariadbd"),
    ("lab-redis", "LAB_REDIS_HOST", "LAB_REDIS_PORT", "redis-server"),
    ("lab-vault", "LAB_VAULT_ADDR", None, "bao"),
    ("lab-app", "LAB_APP_URL", None, "python"),
]


def host_port(lab_env: dict[str, str], host_key: str, port_key: str | None) -> tuple[str, int]:
    if port_key is None:  # a URL: http://HOST:PORT
        host, port = lab_env[host_key].split("://", 1)[1].rsplit(":", 1)
        return host, int(port)
    return lab_env[host_key], int(lab_env[port_key])


def inventory_host(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


@pytest.mark.parametrize("name, host_key, port_key, program", CASES, ids=[c[0] for c in CASES])
def test_role_host_listens_on_its_lab_port(lab_env, name, host_key, port_key, program):
    host = inventory_host(name)
    address, port = host_port(lab_env, host_key, port_key)
    assert host.socket(f"tcp://{address}:{port}").is_listening
    pid = int((Path(lab_env["LAB_STATE_DIR"]) / "run" / f"{name.split('-', 1)[1]}.pid").read_text())
    assert program in host.process.get(pid=pid).comm


def test_backup_store_host_has_private_store_and_keys(lab_env):
    host = inventory_host("lab-store")
    assert host.file(lab_env["LAB_STORE"]).is_directory
    assert host.file(lab_env["LAB_STORE"]).mode == 0o700
    for key in (lab_env["LAB_KEY_FILE"], lab_env["LAB_ESCROW_KEY_FILE"]):
        assert host.file(key).mode == 0o600
        assert host.file(key).size == 32
