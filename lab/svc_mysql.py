"""The lab's MariaDB: its own datadir, my.cnf, socket and port.

Accounts (passwords from ``secrets.json``; created through the socket as root,
with ``sql_log_bin=0`` so no password ever reaches a binary log):

* ``lifeboat_admin`` @127.0.0.1/@localhost: ALL PRIVILEGES WITH GRANT OPTION.
* ``lifeboat_backup`` @127.0.0.1/@localhost: :data:`BACKUP_PRIVILEGES`, the
  least a consistent ``mariadb-dump`` (incl. ``--system=users``, routines,
  events, triggers, ``--master-data``/``--gtid``), ``mariadb-backup`` and
  reading binlogs over the replication protocol need.
* ``demoapp`` @127.0.0.1/@localhost: ALL on ``demo.*``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import procs
from lab.layout import Layout
from lab.secrets import ensure_secrets, make_private_dir

NAME = "mysql"
ADMIN_USER = "lifeboat_admin"
BACKUP_USER = "lifeboat_backup"
APP_USER = "demoapp"
APP_DATABASE = "demo"
USER_HOSTS = ("127.0.0.1", "localhost")
BACKUP_PRIVILEGES = ("SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, PROCESS, "
                     "BINLOG MONITOR, REPLICATION SLAVE, SHOW DATABASES")
START_TIMEOUT_S = 60.0

log = get_logger("lab.mysql")


def marker(layout: Layout) -> str:
    """The string identifying this lab's mariadbd in its command line."""
    return f"--defaults-file={layout.mysql_cnf}"


def render_config(layout: Layout) -> str:
    """The my.cnf of the lab server (no secrets in it)."""
    lines = [
        "# Written by `python -m lab` on every start; edits are overwritten.",
        "[mariadbd]",
        f"datadir = {layout.mysql_datadir}",
        f"socket = {layout.mysql_socket}",
        f"pid-file = {layout.mysql_dir / 'mariadbd.pid'}",
        f"tmpdir = {layout.mysql_dir / 'tmp'}",
        f"bind-address = {layout.host_for(NAME)}",
        f"port = {layout.port(NAME)}",
        "server_id = 1",
        "log_bin = mysql-bin",
        "binlog_format = ROW",
        "gtid_strict_mode = ON",
        "log_slave_updates = ON",
        "max_binlog_size = 16M",
        "innodb_buffer_pool_size = 64M",
        "innodb_log_file_size = 32M",
        "performance_schema = OFF",
        "skip_name_resolve = ON",
        "event_scheduler = OFF",
        "character_set_server = utf8mb4",
        "collation_server = utf8mb4_general_ci",
        "max_connections = 200",
        "max_allowed_packet = 64M",
    ]
    if os.geteuid() == 0:
        lines.append("user = root")
    return "\n".join(lines) + "\n"


def write_config(layout: Layout) -> None:
    make_private_dir(layout.mysql_dir)
    (layout.mysql_dir / "tmp").mkdir(exist_ok=True)
    layout.mysql_cnf.write_text(render_config(layout))


def is_initialised(layout: Layout) -> bool:
    """True if the datadir holds a system database (``mysql/``)."""
    return (layout.mysql_datadir / "mysql").is_dir()


def initialise(layout: Layout) -> None:
    """Create an empty datadir with ``mariadb-install-db --no-defaults`` (root via unix socket only)."""
    install_db = procs.find_binary("mariadb-install-db", "mariadb-server")
    layout.mysql_datadir.mkdir(parents=True, exist_ok=True)
    argv = [install_db, "--no-defaults", f"--datadir={layout.mysql_datadir}",
            "--auth-root-authentication-method=socket", "--skip-test-db"]
    if os.geteuid() == 0:
        argv.append("--user=root")
    log_file = layout.log_file(NAME)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("mysql: initialising %s", layout.mysql_datadir)
    with open(log_file, "ab") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=procs.BASE_ENV)
    if result.returncode != 0:
        raise LifeboatError(f"mysql: mariadb-install-db failed (exit {result.returncode})",
                            hint=f"see {log_file}:\n{procs.log_tail(log_file)}")


def running_pid(layout: Layout) -> int | None:
    return procs.running_pid(layout.pid_file(NAME), marker(layout))


def start(layout: Layout) -> int:
    """Start mariadbd on the existing datadir (initialising and provisioning an empty one).

    Returns the pid; a running server is left alone. Ready means it accepts TCP connections.
    """
    pid = running_pid(layout)
    if pid is not None:
        return pid
    mariadbd = procs.find_binary("mariadbd", "mariadb-server")
    procs.ensure_port_free(layout.host_for(NAME), layout.port(NAME), NAME)
    fresh = not is_initialised(layout)
    if fresh:
        initialise(layout)
    write_config(layout)
    pid = procs.spawn(layout.command_prefix(NAME) + [mariadbd, marker(layout)], layout.pid_file(NAME),
                      layout.log_file(NAME))
    host = layout.host_for(NAME)
    procs.wait_until(lambda: procs.port_open(host, layout.port(NAME)) and layout.mysql_socket.exists(),
                     "mysql", START_TIMEOUT_S, pid, marker(layout), layout.log_file(NAME))
    log.info("mysql: started pid %d on %s:%d", pid, layout.host_for(NAME), layout.port(NAME))
    if fresh:
        provision(layout)
    return pid


def stop(layout: Layout) -> int | None:
    """Stop this lab's mariadbd (clean shutdown); returns its pid or None if it was not running."""
    pid = procs.stop_process(layout.pid_file(NAME), marker(layout), timeout_s=120)
    if pid:
        log.info("mysql: stopped pid %d", pid)
    return pid


@contextmanager
def option_file(user: str, password: str | None = None, socket: Path | None = None,
                host: str | None = None, port: int | None = None) -> Iterator[str]:
    """A temporary 0600 ``[client]`` option file for ``--defaults-extra-file`` (deleted afterwards)."""
    lines = ["[client]", f"user={user}"]
    if password is not None:
        lines.append(f"password={password}")
    if socket is not None:
        lines.append(f"socket={socket}")
    if host is not None:
        lines += [f"host={host}", "protocol=TCP"]
    if port is not None:
        lines.append(f"port={port}")
    fd, path = tempfile.mkstemp(prefix="lab-my-", suffix=".cnf")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, ("\n".join(lines) + "\n").encode())
        os.close(fd)
        yield path
    finally:
        os.unlink(path)


def run_sql_as_root(layout: Layout, sql: str) -> str:
    """Run ``sql`` (given on stdin, never argv) as root through the socket; return stdout."""
    client = procs.find_binary("mariadb", "mariadb-client")
    with option_file("root", socket=layout.mysql_socket) as cnf:
        result = subprocess.run([client, f"--defaults-extra-file={cnf}", "--batch", "--skip-column-names"],
                                input=sql, capture_output=True, text=True, env=procs.BASE_ENV)
    if result.returncode != 0:
        raise LifeboatError(f"mysql: SQL as root over the socket failed: {result.stderr.strip()[:500]}",
                            hint="is the lab server running? see `python -m lab status`")
    return result.stdout


def provisioning_sql(secrets: dict, client_hosts: tuple[str, ...] = ()) -> str:
    """SQL creating/refreshing the lab accounts and the ``demo`` database (idempotent).

    Each account exists for :data:`USER_HOSTS` plus ``client_hosts`` (a multi-host lab's subnet).
    """
    stmts = ["SET SESSION sql_log_bin = 0;", f"CREATE DATABASE IF NOT EXISTS {APP_DATABASE};"]
    accounts = [(ADMIN_USER, secrets["mysql_admin_password"], "ALL PRIVILEGES ON *.*", " WITH GRANT OPTION"),
                (BACKUP_USER, secrets["mysql_backup_password"], f"{BACKUP_PRIVILEGES} ON *.*", ""),
                (APP_USER, secrets["mysql_app_password"], f"ALL PRIVILEGES ON {APP_DATABASE}.*", "")]
    for user, password, grant, option in accounts:
        for host in USER_HOSTS + tuple(client_hosts):
            account = f"'{user}'@'{host}'"
            stmts += [f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}';",
                      f"ALTER USER {account} IDENTIFIED BY '{password}';",
                      f"GRANT {grant} TO {account}{option};"]
    return "\n".join(stmts) + "\n"


def provision(layout: Layout) -> None:
    """Create or refresh the lab accounts through the socket (passwords only on stdin)."""
    run_sql_as_root(layout, provisioning_sql(ensure_secrets(layout), layout.client_hosts))
    log.info("mysql: accounts %s, %s, %s ready", ADMIN_USER, BACKUP_USER, APP_USER)


def admin_login_works(layout: Layout) -> bool:
    """True if ``lifeboat_admin`` can log in over TCP with the stored password."""
    import pymysql

    secrets = ensure_secrets(layout)
    try:
        conn = pymysql.connect(host=layout.host_for(NAME), port=layout.port(NAME), user=ADMIN_USER,
                               password=secrets["mysql_admin_password"], connect_timeout=5)
    except pymysql.MySQLError:
        return False
    conn.close()
    return True


def ensure_provisioned(layout: Layout) -> None:
    """Provision the accounts unless the admin can already log in (cheap when all is well)."""
    if not admin_login_works(layout):
        provision(layout)


def connect_admin(layout: Layout, database: str | None = None, **kwargs):
    """A pymysql connection as ``lifeboat_admin`` over TCP (autocommit on)."""
    import pymysql

    secrets = ensure_secrets(layout)
    return pymysql.connect(host=layout.host_for(NAME), port=layout.port(NAME), user=ADMIN_USER,
                           password=secrets["mysql_admin_password"], database=database,
                           autocommit=True, connect_timeout=5, **kwargs)
