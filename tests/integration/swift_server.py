"""A real S3-compatible server for tests: OpenStack Swift with its s3api middleware.

Debian's swift-proxy/-account/-container/-object and memcached, started on 127.0.0.1
(free ports) with one-replica rings built by ``swift-ring-builder`` in a private
``swift_dir`` (``/etc/swift`` is never read: every config names it explicitly),
``mount_check = false``, ``user = root`` and tempauth with one test account whose
random secret lives only in 0600 files. Logs go to files; syslog output is sent to a
loopback UDP port nobody listens on (swift has no "no syslog" switch).

Usage (session fixture, started once, about 3-6 s)::

    @pytest.fixture(scope="session")
    def swift_s3(tmp_path_factory):
        yield from swift_server.running_swift(tmp_path_factory)

    def test_x(swift_s3): swift_s3.endpoint, swift_s3.access_key, swift_s3.secret_key
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROGRAMS = {"swift-proxy-server": "swift-proxy", "swift-account-server": "swift-account",
            "swift-container-server": "swift-container", "swift-object-server": "swift-object",
            "swift-ring-builder": "swift", "memcached": "memcached"}
START_TIMEOUT_S = 60.0
ACCOUNT, USER = "test", "tester"


def missing_programs() -> list[str]:
    """Debian packages to install for the programs not found on PATH."""
    return sorted({pkg for prog, pkg in PROGRAMS.items() if not shutil.which(prog)})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


@dataclass
class SwiftServer:
    """One private Swift cluster (single node, single replica) under ``root``."""

    root: Path
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ports: dict[str, int] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def access_key(self) -> str:
        return f"{ACCOUNT}:{USER}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    def _common(self, port: int) -> str:
        return (f"[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nworkers = 0\nuser = root\n"
                f"swift_dir = {self.conf_dir}\ndevices = {self.root / 'srv'}\nmount_check = false\n"
                f"log_udp_host = 127.0.0.1\nlog_udp_port = {self.ports['syslog']}\nlog_level = WARNING\n")

    def write_configs(self) -> None:
        for name in ("proxy", "account", "container", "object", "memcached", "syslog"):
            self.ports[name] = free_port()
        self.conf_dir.mkdir(mode=0o700, parents=True)
        (self.root / "srv" / "d1").mkdir(parents=True)
        write_private(self.conf_dir / "swift.conf",
                      f"[swift-hash]\nswift_hash_path_suffix = {secrets.token_hex(8)}\n"
                      "[storage-policy:0]\nname = Policy-0\ndefault = yes\n")
        for kind in ("account", "container", "object"):
            write_private(self.conf_dir / f"{kind}-server.conf",
                          self._common(self.ports[kind]) + f"[pipeline:main]\npipeline = {kind}-server\n"
                          f"[app:{kind}-server]\nuse = egg:swift#{kind}\n")
        pipeline = ("catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth "
                    "copy slo dlo proxy-logging proxy-server")
        write_private(self.conf_dir / "proxy-server.conf", self._common(self.ports["proxy"]) + f"""
[pipeline:main]
pipeline = {pipeline}
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{self.ports['memcached']}
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_{ACCOUNT}_{USER} = {self.secret_key} .admin
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
""")

    def build_rings(self) -> None:
        for kind in ("account", "container", "object"):
            builder = str(self.conf_dir / f"{kind}.builder")
            for args in (["create", "4", "1", "1"],
                         ["add", f"r1z1-127.0.0.1:{self.ports[kind]}/d1", "100"],
                         ["rebalance"]):
                result = subprocess.run(["swift-ring-builder", builder, *args], capture_output=True, text=True,
                                        check=False)
                if result.returncode not in (0, 1):  # 1 = warnings (e.g. "balance is not perfect")
                    raise RuntimeError(f"swift-ring-builder {args[0]} failed: {result.stdout}{result.stderr}")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child's life)
        self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           cwd=self.root))
        log.close()

    def start(self) -> None:
        self.write_configs()
        self.build_rings()
        self._spawn("memcached", ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(self.ports["memcached"]),
                                  "-U", "0", "-m", "16"])
        for kind in ("account", "container", "object", "proxy"):
            self._spawn(kind, [f"swift-{kind}-server", str(self.conf_dir / f"{kind}-server.conf")])
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a swift process exited during start-up (see {self.root}/*.log)")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"swift not ready after {START_TIMEOUT_S:.0f} s (see {self.root}/*.log)")
            time.sleep(0.2)

    def healthy(self) -> bool:
        """Proxy answers /healthcheck and the storage servers accept connections."""
        for kind in ("account", "container", "object"):
            try:
                socket.create_connection(("127.0.0.1", self.ports[kind]), timeout=0.3).close()
            except OSError:
                return False
        try:
            with urllib.request.urlopen(f"{self.endpoint}/healthcheck", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()


def running_swift(tmp_path_factory):
    """Generator for a session fixture: a running Swift with s3api on 127.0.0.1, stopped afterwards.

    Skips the test when Swift is not installed.
    """
    missing = missing_programs()
    if missing:
        pytest.skip(f"OpenStack Swift is not installed: apt-get install {' '.join(missing)} (make setup does)")
    server = SwiftServer(tmp_path_factory.mktemp("swift"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
