"""Where a lab lives: its state folder, bind address, ports and file paths.

A lab is fully described by a :class:`Layout`. The layout of a state folder is
written once, when the folder is created, to ``<state>/lab.json`` and read back
by every later command, so ``LAB_PORT_BASE`` only has to be given to the first
``up`` of a private lab. The bind address is a field (not a constant) so that a
later variant can run the same services elsewhere, e.g. in network namespaces.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError

REPO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_HOST = "127.0.0.1"
#: Ports of the main lab; ``LAB_PORT_BASE`` (an offset) is added to each.
DEFAULT_PORTS = {"mysql": 13306, "redis": 16379, "vault": 18200, "vault_cluster": 18201, "app": 18080}
LAYOUT_FILE = "lab.json"


def resolve_state_dir(state_dir: str | os.PathLike | None = None) -> Path:
    """Absolute state folder: the argument, else ``$LAB_STATE_DIR``, else ``<repo>/.lab``."""
    chosen = state_dir or os.environ.get("LAB_STATE_DIR") or REPO_DIR / ".lab"
    return Path(chosen).expanduser().resolve()


def port_offset_from_env() -> int | None:
    """The ``LAB_PORT_BASE`` offset (an int, may be 0), or None when unset/empty."""
    raw = os.environ.get("LAB_PORT_BASE", "").strip()
    if not raw:
        return None
    try:
        offset = int(raw)
    except ValueError:
        raise ConfigError(f"LAB_PORT_BASE={raw!r} is not an integer",
                          hint="give an offset such as 1000; it is added to every lab port") from None
    if not -10000 <= offset <= 40000:
        raise ConfigError(f"LAB_PORT_BASE={offset} moves the lab ports out of range",
                          hint="use an offset between -10000 and 40000")
    return offset


@dataclass(frozen=True)
class Layout:
    """Paths and addresses of one lab (all paths absolute)."""

    state_dir: Path
    host: str = DEFAULT_HOST
    port_offset: int = 0
    #: Multi-host lab only: (service, address) pairs overriding :attr:`host` per service.
    service_hosts: tuple[tuple[str, str], ...] = ()
    #: Multi-host lab only: (service, network namespace) pairs; the service is started with
    #: ``ip netns exec NS`` (see lab/netns.py).
    netns: tuple[tuple[str, str], ...] = ()
    #: Extra MariaDB account hosts (e.g. ``10.213.0.%``) so clients on other lab hosts may log in.
    client_hosts: tuple[str, ...] = ()

    # --- addresses -------------------------------------------------------------
    def port(self, name: str) -> int:
        """TCP port of ``name`` (mysql, redis, vault, vault_cluster, app)."""
        return DEFAULT_PORTS[name] + self.port_offset

    @property
    def ports(self) -> dict[str, int]:
        return {name: self.port(name) for name in DEFAULT_PORTS}

    def host_for(self, service: str) -> str:
        """Address ``service`` listens on (``vault_cluster`` is the vault's); default :attr:`host`."""
        name = "vault" if service == "vault_cluster" else service
        return dict(self.service_hosts).get(name, self.host)

    def netns_for(self, service: str) -> str | None:
        """Network namespace ``service`` runs in, or None (the caller's namespace)."""
        return dict(self.netns).get(service)

    def command_prefix(self, service: str) -> list[str]:
        """argv prefix that starts a program in the service's namespace ([] without one)."""
        namespace = self.netns_for(service)
        return ["ip", "netns", "exec", namespace] if namespace else []

    @property
    def vault_addr(self) -> str:
        return f"http://{self.host_for('vault')}:{self.port('vault')}"

    @property
    def app_url(self) -> str:
        return f"http://{self.host_for('app')}:{self.port('app')}"

    # --- files -----------------------------------------------------------------
    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "lab.lock"

    def pid_file(self, service: str) -> Path:
        return self.state_dir / "run" / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        """Where a service's stdout/stderr go (the app logs to :attr:`app_log` itself)."""
        return self.state_dir / "logs" / f"{service}.log"

    @property
    def mysql_dir(self) -> Path:
        return self.state_dir / "mysql"

    @property
    def mysql_datadir(self) -> Path:
        return self.mysql_dir / "data"

    @property
    def mysql_cnf(self) -> Path:
        return self.mysql_dir / "my.cnf"

    @property
    def mysql_socket(self) -> Path:
        return self.mysql_dir / "mysql.sock"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def redis_conf(self) -> Path:
        return self.state_dir / "conf" / "redis.conf"

    @property
    def vault_dir(self) -> Path:
        return self.state_dir / "vault"

    @property
    def vault_datadir(self) -> Path:
        return self.vault_dir / "raft"

    @property
    def vault_conf(self) -> Path:
        return self.vault_dir / "bao.hcl"

    @property
    def vault_init_file(self) -> Path:
        return self.vault_dir / "init.json"

    @property
    def app_dir(self) -> Path:
        return self.state_dir / "app"

    @property
    def app_storage(self) -> Path:
        return self.app_dir / "storage"

    @property
    def app_config(self) -> Path:
        return self.app_dir / "config" / "app.json"

    @property
    def app_log(self) -> Path:
        return self.app_dir / "logs" / "app.log"

    @property
    def app_token_file(self) -> Path:
        return self.app_dir / "vault-token"

    @property
    def store_dir(self) -> Path:
        return self.state_dir / "store"

    @property
    def key_file(self) -> Path:
        return self.state_dir / "keys" / "backup.key"

    @property
    def escrow_key_file(self) -> Path:
        return self.state_dir / "keys" / "escrow.key"

    def to_json(self) -> dict:
        data = {"host": self.host, "port_offset": self.port_offset, "ports": self.ports}
        if self.service_hosts:
            data["service_hosts"] = dict(self.service_hosts)
        if self.netns:
            data["netns"] = dict(self.netns)
        if self.client_hosts:
            data["client_hosts"] = list(self.client_hosts)
        return data


def layout_from_json(state_dir: Path, data: dict) -> Layout:
    """The :class:`Layout` stored as ``data`` (the content of ``lab.json``) for ``state_dir``."""
    return Layout(state_dir, data.get("host", DEFAULT_HOST), int(data.get("port_offset", 0)),
                  service_hosts=tuple(sorted(data.get("service_hosts", {}).items())),
                  netns=tuple(sorted(data.get("netns", {}).items())),
                  client_hosts=tuple(data.get("client_hosts", ())))


def write_layout(layout: Layout) -> None:
    """Create the state folder (0700) and write its ``lab.json`` atomically."""
    root = layout.state_dir
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    stored = root / LAYOUT_FILE
    tmp = stored.with_suffix(".tmp")
    tmp.write_text(json.dumps(layout.to_json(), indent=2) + "\n")
    os.replace(tmp, stored)


def load_layout(state_dir: str | os.PathLike | None = None, create: bool = False) -> Layout:
    """The layout of a state folder.

    Reads ``<state>/lab.json`` when present. ``LAB_PORT_BASE`` is honoured only
    for a new folder; given with a different value for an existing one it is a
    :class:`ConfigError` (the running services use the stored ports). With
    ``create=True`` a new folder (mode 0700) and its ``lab.json`` are written.
    """
    root = resolve_state_dir(state_dir)
    wanted_offset = port_offset_from_env()
    stored = root / LAYOUT_FILE
    if stored.exists():
        data = json.loads(stored.read_text())
        layout = layout_from_json(root, data)
        if wanted_offset is not None and wanted_offset != layout.port_offset:
            raise ConfigError(
                f"lab state folder {root} was created with LAB_PORT_BASE={layout.port_offset}, "
                f"not {wanted_offset}",
                hint="unset LAB_PORT_BASE, or use another LAB_STATE_DIR for a lab on other ports")
        return layout
    layout = Layout(root, DEFAULT_HOST, wanted_offset or 0)
    if create:
        write_layout(layout)
    return layout
