# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MySQL/MariaDB connection layer shared by backup, restore, binlog archiving and PITR.

* :class:`ConnParams` holds the options of ``common.mysql_argument_spec()``;
  :func:`connect` opens a PyMySQL connection and maps failures onto the
  Lifeboat error hierarchy (wrong password -> AuthenticationFailed, refused /
  unreachable -> ConnectionFailure, missing privilege -> PermissionDenied naming it).
* :func:`option_file` writes a temporary 0600 ``[client]`` option file for the
  command line tools (``--defaults-extra-file``): passwords never go into argv.
* :class:`Flavor` is the ONE place that knows the MariaDB vs MySQL 8 differences.
* :func:`server_identity` names the server a binary log position belongs to.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailure,
    DependencyMissing,
    LifeboatError,
    NotFound,
    PermissionDenied,
)

try:
    import pymysql
    import pymysql.converters
    import pymysql.err

    HAS_PYMYSQL = True
except ImportError:  # pragma: no cover - the sanity import test runs without it
    HAS_PYMYSQL = False

# MySQL/MariaDB error numbers we translate.
ER_ACCESS_DENIED = 1045          # wrong user/password
ER_DBACCESS_DENIED = 1044        # no access to a database
ER_TABLEACCESS_DENIED = 1142     # command denied on a table (names the command)
ER_COLUMNACCESS_DENIED = 1143
ER_SPECIFIC_ACCESS_DENIED = 1227  # "you need (at least one of) the X privilege(s)"
ER_PROCACCESS_DENIED = 1370
ER_BAD_DB = 1049
ER_NO_SUCH_TABLE = 1146
CR_CONNECTION_ERRORS = {2002, 2003, 2005, 2006, 2013, 2055}

SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
#: Schemas Lifeboat's own restores create: the staging schema ``<db>__lbrestore`` (dropped at the
#: end of a restore) and the kept-aside live tables ``<db>__lbprev_<UTC %Y%m%dT%H%M%S>[_N]``.
STAGING_SUFFIX = "__lbrestore"
KEPT_ASIDE_SUFFIX = "__lbprev_"
LIFEBOAT_SCHEMA_RE = re.compile(rf"({KEPT_ASIDE_SUFFIX}\d{{8}}T\d{{6}}(_\d+)?|{STAGING_SUFFIX})$")


@dataclass(frozen=True)
class ConnParams:
    """How to reach a server (the ``lifeboat.dr.mysql`` option layer). ``repr`` hides the password."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: Optional[str] = None
    password: Optional[str] = None
    unix_socket: Optional[str] = None
    connect_timeout: int = 10
    ca_cert: Optional[str] = None
    check_hostname: Optional[bool] = None

    def __repr__(self) -> str:
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"ConnParams({self.user or '<default user>'}@{where})"

    __str__ = __repr__

    @property
    def where(self) -> str:
        """``user@host:port`` (or the socket) for messages; never the password."""
        return f"{self.user or ''}@{self.unix_socket or f'{self.host}:{self.port}'}"

    @classmethod
    def from_module_params(cls, params: Mapping[str, Any]) -> ConnParams:
        """Build from module parameters named as in ``mysql_argument_spec()``."""
        return cls(
            host=params.get("login_host") or "127.0.0.1",
            port=int(params.get("login_port") or 3306),
            user=params.get("login_user"),
            password=params.get("login_password"),
            unix_socket=params.get("login_unix_socket"),
            connect_timeout=int(params.get("connect_timeout") or 10),
            ca_cert=params.get("ca_cert"),
            check_hostname=params.get("check_hostname"),
        )

    def replace(self, **changes: Any) -> ConnParams:
        """A copy with some fields changed."""
        values = dict(self.__dict__)
        values.update(changes)
        return ConnParams(**values)


def require_pymysql() -> None:
    """Raise DependencyMissing unless PyMySQL is importable."""
    if not HAS_PYMYSQL:
        raise DependencyMissing("the Python library PyMySQL is required for MySQL/MariaDB",
                                hint="pip install PyMySQL on the host running the module")


#: Every Lifeboat session reads and writes times in UTC (events excepted: they keep their own zone).
SESSION_TIME_ZONE = "+00:00"


def connect(params: ConnParams, *, database: Optional[str] = None, autocommit: bool = True,
            raw: bool = False, read_timeout: Optional[int] = None) -> Any:
    """Open a PyMySQL connection (utf8mb4, session time_zone '+00:00').

    ``raw=True`` returns every value as ``bytes`` (no decoding/conversion; the dump/load path).
    Raises AuthenticationFailed, ConnectionFailure, PermissionDenied or NotFound (database).
    """
    require_pymysql()
    kwargs: dict[str, Any] = dict(
        host=params.host, port=params.port, user=params.user, password=params.password or "",
        unix_socket=params.unix_socket, connect_timeout=params.connect_timeout,
        charset="utf8mb4", autocommit=autocommit, database=database, use_unicode=not raw,
        read_timeout=read_timeout, init_command=f"SET time_zone = '{SESSION_TIME_ZONE}'",
    )
    if raw:
        # every value as bytes (keep only the encoders, keyed by Python type): no per-value cost
        kwargs["conv"] = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}
    if params.ca_cert:
        kwargs["ssl"] = {"ca": params.ca_cert, "check_hostname": bool(params.check_hostname)}
    try:
        return pymysql.connect(**kwargs)
    except pymysql.err.MySQLError as err:
        raise translate_error(err, f"connecting to {params.where}") from None


def translate_error(err: BaseException, doing: str, sql: Optional[str] = None) -> LifeboatError:
    """Map a PyMySQL error to a Lifeboat error whose message names the problem and the fix
    (``sql``: the statement that failed, for the privilege a denial needs when the server's
    message names none)."""
    code = err.args[0] if getattr(err, "args", None) and isinstance(err.args[0], int) else None
    text = str(err.args[1]) if code is not None and len(err.args) > 1 else str(err)
    if code == ER_ACCESS_DENIED:
        return AuthenticationFailed(f"MySQL server refused the login while {doing}: {text}",
                                    hint="check login_user/login_password (and the user's host part)")
    if code in CR_CONNECTION_ERRORS:
        return ConnectionFailure(f"cannot reach the MySQL server while {doing}: {text}",
                                 hint="check login_host/login_port and that the server is running")
    if code in (ER_DBACCESS_DENIED, ER_TABLEACCESS_DENIED, ER_COLUMNACCESS_DENIED,
                ER_SPECIFIC_ACCESS_DENIED, ER_PROCACCESS_DENIED):
        return PermissionDenied(f"missing privilege while {doing}: {text}",
                                hint=f"GRANT {privilege_from_message(text, sql)} to the login user "
                                     "(see docs/mysql.md for the privileges Lifeboat needs)")
    if code == ER_BAD_DB or code == ER_NO_SUCH_TABLE:
        return NotFound(f"{text} (while {doing})", hint="check the database/table names given")
    return LifeboatError(f"MySQL error while {doing}: {text}")


_STATEMENT_PRIVILEGES = {"DROP": "DROP", "CREATE": "CREATE", "ALTER": "ALTER", "INSERT": "INSERT",
                         "UPDATE": "UPDATE", "DELETE": "DELETE", "SELECT": "SELECT", "TRUNCATE": "DROP",
                         "RENAME": "ALTER, DROP, CREATE and INSERT", "REPLACE": "INSERT and DELETE",
                         "LOCK": "LOCK TABLES", "SHOW": "SELECT"}


def statement_summary(sql: str, limit: int = 80) -> str:
    """The start of a statement, one line (for messages): ``DROP DATABASE IF EXISTS `x```."""
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def statement_privilege(sql: Optional[str]) -> Optional[str]:
    """The privilege a statement's verb needs (``DROP DATABASE ...`` -> ``DROP``), None if unknown."""
    words = (sql or "").split(None, 1)
    return _STATEMENT_PRIVILEGES.get(words[0].upper()) if words else None


def privilege_from_message(text: str, sql: Optional[str] = None) -> str:
    """Extract the privilege a server 'access denied' message names; else the one the statement
    ``sql`` needs; else ``"the needed privilege"``."""
    m = re.search(r"need \(at least one of\) the (.+?) privilege", text)
    if m:
        return m.group(1)
    m = re.search(r"^(\w+(?: \w+)?) command denied", text)
    if m:
        return m.group(1).upper()
    needed = statement_privilege(sql)
    if needed and "Access denied for user" in text and "to database" in text:
        return f"{needed} on that database"
    if needed:
        return needed
    if "Access denied for user" in text and "to database" in text:
        return "privileges on that database"
    return "the needed privilege"


def query_all(conn: Any, sql: str, args: Any = None, doing: Optional[str] = None) -> list[tuple]:
    """Run one statement, return all rows; errors translated (``doing`` defaults to the SQL verb)."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    except pymysql.err.MySQLError as err:
        raise translate_error(err, doing or f"running {statement_summary(sql)}", sql) from None


def query_value(conn: Any, sql: str, args: Any = None) -> Any:
    """First column of the first row, or None."""
    rows = query_all(conn, sql, args)
    return rows[0][0] if rows else None


def execute(conn: Any, sql: str, args: Any = None, doing: Optional[str] = None) -> None:
    """Run one statement (no result expected); errors translated."""
    query_all(conn, sql, args, doing)


def quote_ident(name: str) -> str:
    """Quote an identifier with backticks (doubling embedded backticks)."""
    return "`" + name.replace("`", "``") + "`"


def qualified(db: str, table: str) -> str:
    """`db`.`table`."""
    return f"{quote_ident(db)}.{quote_ident(table)}"


# --------------------------------------------------------------------------- flavour
@dataclass(frozen=True)
class Flavor:
    """Server flavour and version; every MariaDB vs MySQL difference lives here.

    ``name`` is ``"mariadb"`` or ``"mysql"``; ``version`` a (major, minor, patch) tuple.
    Only MariaDB 10.11 is tested (see docs/mysql.md); the MySQL branches follow the
    MySQL 8.0/8.4 manuals.
    """

    name: str
    version: tuple[int, int, int]
    version_string: str = ""

    @property
    def is_mariadb(self) -> bool:
        return self.name == "mariadb"

    @property
    def dump_tool(self) -> str:
        """The logical dump client (``mariadb-dump`` falls back to ``mysqldump`` if absent)."""
        return self._tool("mariadb-dump", "mysqldump")

    @property
    def client_tool(self) -> str:
        return self._tool("mariadb", "mysql")

    @property
    def binlog_tool(self) -> str:
        return self._tool("mariadb-binlog", "mysqlbinlog")

    def _tool(self, mariadb_name: str, mysql_name: str) -> str:
        if self.is_mariadb and shutil.which(mariadb_name):
            return mariadb_name
        if shutil.which(mysql_name):
            return mysql_name
        if shutil.which(mariadb_name):
            return mariadb_name
        raise DependencyMissing(f"neither {mariadb_name} nor {mysql_name} is installed",
                                hint="install the MariaDB/MySQL client package (mariadb-client)")

    @property
    def binlog_status_sql(self) -> str:
        """Statement returning (File, Position, ...) of the current binary log."""
        if self.is_mariadb:
            return "SHOW BINLOG STATUS" if self.version >= (10, 5, 2) else "SHOW MASTER STATUS"
        return "SHOW BINARY LOG STATUS" if self.version >= (8, 2, 0) else "SHOW MASTER STATUS"

    @property
    def binlog_monitor_privilege(self) -> str:
        """Privilege needed to read binary log status."""
        if self.is_mariadb:
            return "BINLOG MONITOR" if self.version >= (10, 5, 2) else "REPLICATION CLIENT"
        return "REPLICATION CLIENT"

    @property
    def replication_privilege(self) -> str:
        """Privilege needed to stream binary logs from the server."""
        return "REPLICATION SLAVE"

    @property
    def gtid_variable(self) -> str:
        """System variable holding the executed/binlogged GTID set."""
        return "gtid_binlog_pos" if self.is_mariadb else "gtid_executed"

    @property
    def supports_system_users(self) -> bool:
        """``mariadb-dump --system=users`` exists (MariaDB >= 10.2.37 / 10.3.28 and later series)."""
        return self.is_mariadb and self.version >= (10, 3, 28)

    @property
    def has_binlog_snapshot_status(self) -> bool:
        """``SHOW STATUS LIKE 'binlog_snapshot_%'`` gives a consistent snapshot's binlog position."""
        return self.is_mariadb

    @property
    def skip_binlog_privilege(self) -> str:
        """Privilege needed for ``SET SESSION sql_log_bin = 0``."""
        if self.is_mariadb:
            return "BINLOG ADMIN" if self.version >= (10, 5, 2) else "SUPER"
        return "SYSTEM_VARIABLES_ADMIN"

    def to_dict(self) -> dict[str, Any]:
        return {"flavor": self.name, "version": ".".join(map(str, self.version)),
                "version_string": self.version_string}


def parse_version(version_string: str) -> Flavor:
    """Flavour from ``SELECT VERSION()`` text, e.g. ``10.11.6-MariaDB-log`` or ``8.0.36``."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version_string)
    if not m:
        raise ConfigError(f"cannot parse the server version {version_string!r}")
    version = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    name = "mariadb" if "mariadb" in version_string.lower() else "mysql"
    return Flavor(name, version, version_string)


def detect_flavor(conn: Any) -> Flavor:
    """Ask the server what it is."""
    return parse_version(str(query_value(conn, "SELECT VERSION()")))


def server_identity(conn: Any, flavor: Optional[Flavor] = None) -> str:
    """A stable name for the server a binlog position belongs to.

    MySQL: ``mysql:<server_uuid>``. MariaDB has no ``@@server_uuid``:
    ``mariadb:server_id=<id>:domain=<gtid_domain_id>``.
    """
    flavor = flavor or detect_flavor(conn)
    if flavor.is_mariadb:
        server_id, domain = query_all(conn, "SELECT @@server_id, @@gtid_domain_id")[0]
        return f"mariadb:server_id={int(server_id)}:domain={int(domain)}"
    return f"mysql:{query_value(conn, 'SELECT @@server_uuid')}"


def binlog_status(conn: Any, flavor: Flavor) -> Optional[dict[str, Any]]:
    """Current binlog file/position and GTID set, or None when binary logging is off."""
    rows = query_all(conn, flavor.binlog_status_sql, doing=f"reading binlog status (needs "
                     f"{flavor.binlog_monitor_privilege})")
    if not rows:
        return None
    gtid = query_value(conn, f"SELECT @@GLOBAL.{flavor.gtid_variable}")
    return {"file": _text(rows[0][0]), "position": int(rows[0][1]), "gtid": _text(gtid) or ""}


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, (bytes, bytearray)) else value


# --------------------------------------------------------------------------- CLI tools
def option_file_text(params: ConnParams) -> str:
    """The ``[client]`` section for ``params`` (contains the password: write it 0600 only)."""
    lines = ["[client]"]
    if params.user:
        lines.append(f"user={_opt_value(params.user)}")
    if params.password is not None:
        lines.append(f"password={_opt_value(params.password)}")
    if params.unix_socket:
        lines.append(f"socket={_opt_value(params.unix_socket)}")
    else:
        lines.append(f"host={_opt_value(params.host)}")
        lines.append(f"port={int(params.port)}")
        lines.append("protocol=TCP")
    if params.ca_cert:
        lines.append(f"ssl-ca={_opt_value(params.ca_cert)}")
        if params.check_hostname:
            lines.append("ssl-verify-server-cert")
    lines.append("default-character-set=utf8mb4")
    # only the interactive client knows connect-timeout; the dump tools reject unknown options
    lines += ["[mysql]", f"connect-timeout={int(params.connect_timeout)}"]
    return "\n".join(lines) + "\n"


def _opt_value(value: str) -> str:
    """Quote an option-file value (double quotes, backslash escapes)."""
    if "\n" in value:
        raise ConfigError("MySQL connection options may not contain newlines")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def option_file(params: ConnParams) -> Iterator[str]:
    """Yield the path of a temporary 0600 option file for ``--defaults-extra-file``; removed on exit."""
    fd, path = tempfile.mkstemp(prefix="lifeboat-my-", suffix=".cnf")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(option_file_text(params))
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def tool_argv(tool: str, defaults_file: str, *args: str) -> list[str]:
    """argv for a client tool: ``--defaults-extra-file`` MUST be first; no secrets in argv."""
    argv = [tool, f"--defaults-extra-file={defaults_file}", *args]
    for arg in argv:
        if arg.startswith(("--password", "-p")) and arg not in ("-p",):
            raise ConfigError("refusing to put a password into a command line")
    return argv
