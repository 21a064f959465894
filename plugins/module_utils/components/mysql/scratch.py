# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throw-away MariaDB server for full verification: restore a set into it, then remove it.

:class:`ScratchMariaDB` initialises an empty datadir in a fresh temporary folder
(``mariadb-install-db --no-defaults``, so no ``/etc/mysql`` option file is read; the
only login is the OS user running Lifeboat, authenticated by the unix socket, so no
password exists at all; ``mariadb.sys`` is locked), starts ``mariadbd`` with its own
option file on a free TCP port of 127.0.0.1 and its own socket, binary log off, a small buffer pool and relaxed
durability (a scratch server holds nothing worth an fsync), and on :meth:`cleanup`
stops it and deletes the folder. Used as a context manager the cleanup also runs when
the body raises. Nothing of the machine's own MariaDB (port, socket, datadir) is touched.

Typical start-up (init + start) on the lab machine: about 2-5 s, depending on the load.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    RestoreFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from ansible_collections.lifeboat.dr.plugins.module_utils.util.scratch import (
    HOST,
    Launcher,
    ScratchServer,
    find_program,
    free_port,
)

log = get_logger("mysql.scratch")

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
LOG_FILE_MB = 32
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes on Linux
TOOL_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin")
CLEAN_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")


def find_mariadb_program(name: str) -> str:
    """Absolute path of a MariaDB server program (PATH, then the usual sbin/bin folders); DependencyMissing."""
    return find_program(name, why="a full MySQL verification starts a scratch MariaDB", dirs=TOOL_DIRS,
                        install_hint="install the MariaDB server package (Debian: apt-get install mariadb-server)")


def os_user() -> str:
    """Name of the OS user running this process (the scratch server's only, socket-authenticated, account)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def _clean_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in CLEAN_ENV_KEYS if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


class ScratchMariaDB(ScratchServer):
    """A temporary ``mariadbd`` on 127.0.0.1 (free port, own folder and socket, no binary log).

    ``params`` reaches it as the OS user over its socket. ``start()`` initialises and
    starts it (raises DependencyMissing / RestoreFailed naming the log tail);
    ``cleanup()`` stops it (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`) and
    removes its folder; idempotent. ``buffer_pool_mb``: InnoDB buffer pool size (MiB).
    As a context manager: started on entry (its folder removed if that fails), cleaned
    up on exit, also when the body raises.
    """

    def __init__(self, base_dir: Optional[str] = None, port: Optional[int] = None, buffer_pool_mb: int = 32,
                 max_allowed_packet_mb: int = 1024, launcher: Launcher = HOST) -> None:
        self.launcher = launcher
        socket_in_base = os.path.join(os.path.abspath(base_dir or "."), "lifeboat-mysql-xxxxxxxx", "mysqld.sock")
        if base_dir and len(socket_in_base) > MAX_SOCKET_PATH:
            log.info("work dir %s is too long for a unix socket path; the scratch MariaDB uses the system temp "
                     "folder", base_dir)
            base_dir = None
        self.root = Path(tempfile.mkdtemp(prefix="lifeboat-mysql-", dir=base_dir))  # 0700
        self.datadir = self.root / "data"
        self.tmpdir = self.root / "tmp"
        self.socket = self.root / "mysqld.sock"
        self.cnf = self.root / "my.cnf"
        self.log_path = self.root / "mariadbd.log"
        self.port = port or free_port()
        self.buffer_pool_mb = int(buffer_pool_mb)
        self.max_allowed_packet_mb = int(max_allowed_packet_mb)
        self.proc: Optional[subprocess.Popen] = None
        self.name = "mysql-scratch"
        self.stop_timeout_s = STOP_TIMEOUT_S
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            self.cleanup()
            raise ConfigError(f"the scratch MariaDB socket path would be too long ({len(str(self.socket))} bytes)",
                              hint="set TMPDIR to a shorter folder")

    @property
    def params(self) -> my.ConnParams:
        """How to reach the server: the OS user over the unix socket (no password)."""
        return my.ConnParams(user=os_user(), unix_socket=str(self.socket), port=self.port, connect_timeout=10)

    def config_text(self) -> str:
        """The server's option file (no secrets in it)."""
        lines = [
            "[mariadbd]",
            f"datadir = {self.datadir}",
            f"socket = {self.socket}",
            f"pid-file = {self.root / 'mariadbd.pid'}",
            f"tmpdir = {self.tmpdir}",
            f"log-error = {self.log_path}",
            "bind-address = 127.0.0.1",
            f"port = {self.port}",
            "skip-log-bin",
            "skip-name-resolve",
            "performance_schema = OFF",
            "event_scheduler = OFF",
            "local_infile = ON",
            f"innodb_buffer_pool_size = {self.buffer_pool_mb}M",
            f"innodb_log_file_size = {LOG_FILE_MB}M",
            "innodb_flush_log_at_trx_commit = 0",
            "innodb_doublewrite = 0",
            "innodb_flush_method = nosync",
            "character_set_server = utf8mb4",
            "collation_server = utf8mb4_general_ci",
            f"max_allowed_packet = {self.max_allowed_packet_mb}M",
            "max_connections = 50",
        ]
        if self.as_root:
            lines.append("user = root")
        return "\n".join(lines) + "\n"

    @property
    def as_root(self) -> bool:
        """The server runs as root: Lifeboat runs as root, or the server runs in a container (as its root)."""
        return os.geteuid() == 0 or self.launcher is not HOST

    def program(self, name: str) -> str:
        return self.launcher.program([name], lambda: find_mariadb_program(name))

    def initialise(self) -> None:
        """Create the system tables in the empty datadir (``mariadb-install-db --no-defaults``)."""
        install_db = self.program("mariadb-install-db")
        self.datadir.mkdir(mode=0o700)
        self.tmpdir.mkdir(mode=0o700)
        argv = [install_db, "--no-defaults", f"--datadir={self.datadir}", "--auth-root-authentication-method=socket",
                "--skip-test-db", "--skip-name-resolve", f"--innodb-buffer-pool-size={self.buffer_pool_mb}M",
                f"--innodb-log-file-size={LOG_FILE_MB}M"]
        if self.as_root:
            argv.append("--user=root")
        code = self.launcher.run(argv, mounts=[self.root], env=_clean_env(), output=self.log_path, timeout=300)
        if code != 0:
            raise RestoreFailed(f"mariadb-install-db for the scratch server ({self.launcher.where}) failed "
                                f"(exit {code}): {self.log_tail()}", hint="check the MariaDB server installation")

    def start(self) -> None:
        """Initialise (first time) and start the server; return once it accepts connections on its socket."""
        if self.is_running():
            return
        if not (self.datadir / "mysql").is_dir():
            self.initialise()
        self.cnf.write_text(self.config_text())
        self.cnf.chmod(0o600)
        self.proc = self.launcher.popen([self.program("mariadbd"), f"--defaults-file={self.cnf}"],
                                        mounts=[self.root], env=_clean_env())
        started = time.monotonic()
        while time.monotonic() - started < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RestoreFailed(f"the scratch mariadbd exited with code {self.proc.returncode}: {self.log_tail()}",
                                    hint="check the MariaDB server installation")
            if self.socket.exists() and self._accepts_connections():
                log.info("scratch mariadbd %s (%s) ready on %s (port %d) in %.1f s", self.proc.pid,
                         self.launcher.where, self.socket, self.port, time.monotonic() - started)
                return
            time.sleep(0.1)
        raise RestoreFailed(f"the scratch mariadbd did not accept connections within {START_TIMEOUT_S:.0f} s: "
                            f"{self.log_tail()}")

    def _accepts_connections(self) -> bool:
        try:
            conn = my.connect(self.params.replace(connect_timeout=2))
        except Exception:  # noqa: BLE001 - still starting
            return False
        conn.close()
        return True

    def log_tail(self, chars: Optional[int] = None) -> str:
        return super().log_tail(chars).strip() or "(empty log)"
