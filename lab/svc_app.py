"""The demo app as a lab service: its config file, storage, log and process.

The app itself (``lab/demoapp/app.py``) is standalone: it reads only its config
file and the Vault token file named there, and gets its database and Redis
passwords from Vault.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import procs
from lab.layout import REPO_DIR, Layout
from lab.secrets import make_private_dir

NAME = "app"
APP_SCRIPT = Path(__file__).resolve().parent / "demoapp" / "app.py"
START_TIMEOUT_S = 20.0

log = get_logger("lab.app")


def python_binary() -> str:
    venv_python = REPO_DIR / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def marker(layout: Layout) -> str:
    return f"--config={layout.app_config}"


def render_config(layout: Layout) -> dict:
    """The app's config (no secrets: it names the token file, Vault holds the passwords)."""
    return {
        "listen_host": layout.host_for(NAME),
        "listen_port": layout.port(NAME),
        "vault_addr": layout.vault_addr,
        "vault_token_file": str(layout.app_token_file),
        "vault_mount": "secret",
        "db_secret": "demoapp/db",
        "redis_secret": "demoapp/redis",
        "storage": str(layout.app_storage),
        "log_file": str(layout.app_log),
        "timeout_s": 2,
    }


def write_config(layout: Layout) -> None:
    make_private_dir(layout.app_dir)
    for folder in (layout.app_config.parent, layout.app_log.parent, layout.app_storage):
        folder.mkdir(parents=True, exist_ok=True)
    layout.app_config.write_text(json.dumps(render_config(layout), indent=2) + "\n")


def running_pid(layout: Layout) -> int | None:
    return procs.running_pid(layout.pid_file(NAME), marker(layout))


def start(layout: Layout) -> int:
    """Start the demo app (it copes with backends that are still down); returns the pid."""
    pid = running_pid(layout)
    if pid is not None:
        return pid
    procs.ensure_port_free(layout.host_for(NAME), layout.port(NAME), NAME)
    write_config(layout)
    pid = procs.spawn(layout.command_prefix(NAME) + [python_binary(), str(APP_SCRIPT), marker(layout)],
                      layout.pid_file(NAME), layout.log_file(NAME), cwd=layout.app_dir)
    host = layout.host_for(NAME)
    procs.wait_until(lambda: procs.port_open(host, layout.port(NAME)), "app", START_TIMEOUT_S, pid,
                     marker(layout), layout.log_file(NAME))
    log.info("app: started pid %d on %s", pid, layout.app_url)
    return pid


def stop(layout: Layout) -> int | None:
    pid = procs.stop_process(layout.pid_file(NAME), marker(layout), timeout_s=15)
    if pid:
        log.info("app: stopped pid %d", pid)
    return pid
