# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small RESP2 client for Redis: AUTH (with an ACL user), TLS, INFO, and the raw SYNC stream.

Lifeboat needs a byte-exact stream of the RDB a master sends a replica, which
client libraries do not expose, so this module speaks the protocol itself over
a socket (wrapped with :mod:`ssl` when ``tls`` is set). It implements only what
backups, restores and verifications need.

Contracts:

* :class:`RedisParams` holds the options of ``common.redis_argument_spec()``; its
  ``repr`` never shows the password. The password is sent only inside the AUTH
  command on the socket -- never in argv, logs or messages.
* :meth:`RedisConnection.connect` authenticates before returning. Failures map to
  :class:`errors.ConnectionFailure` (cannot reach / TLS handshake; retryable),
  :class:`errors.AuthenticationFailed` (WRONGPASS / NOAUTH) and
  :class:`errors.PermissionDenied` (NOPERM: the ACL lacks a command; the message
  names it). Other error replies raise :class:`RedisCommandError`.
* :meth:`RedisConnection.open_rdb_stream` sends ``REPLCONF capa eof``,
  ``REPLCONF rdb-only 1`` and ``SYNC`` as ``redis-cli --rdb`` does and returns a
  reader of exactly the RDB payload, for both the ``$<length>`` (disk-based) and the
  ``$EOF:<40 bytes>`` (diskless) framing. The payload is streamed, never held whole.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    AuthenticationFailed,
    BackupFailed,
    ConfigError,
    ConnectionFailure,
    PermissionDenied,
    RedisCommandError,
    TruncatedData,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

LOG = get_logger("redis")

EOF_MARK_LEN = 40
SYNC_READ_TIMEOUT_S = 60.0  # a master sends a newline every second while it prepares the RDB

Reply = Union[None, int, bytes, str, list]


@dataclass
class RedisParams:
    """How to reach one Redis server (the options of ``common.redis_argument_spec()``)."""

    host: str = "127.0.0.1"
    port: int = 6379
    user: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    tls: bool = False
    ca_cert: Optional[str] = None
    validate_certs: bool = True
    timeout: float = 10.0

    @classmethod
    def from_module_params(cls, params: Mapping[str, Any]) -> RedisParams:
        """Build from module parameters named as in ``redis_argument_spec()``."""
        return cls(host=params.get("redis_host") or "127.0.0.1", port=int(params.get("redis_port") or 6379),
                   user=params.get("redis_user") or None, password=params.get("redis_password"),
                   tls=bool(params.get("redis_tls")), ca_cert=params.get("redis_ca_cert"),
                   validate_certs=params.get("redis_validate_certs", True) is not False,
                   timeout=float(params.get("redis_timeout") or 10.0))

    def with_endpoint(self, host: str, port: int) -> RedisParams:
        """A copy pointing at another host/port (same credentials and TLS settings)."""
        return RedisParams(host, port, self.user, self.password, self.tls, self.ca_cert, self.validate_certs,
                           self.timeout)

    @property
    def endpoint(self) -> str:
        """``host:port`` (for messages)."""
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """``[user@]host:port`` -- never the password."""
        return f"{self.user}@{self.endpoint}" if self.user else self.endpoint


def _tls_context(params: RedisParams) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=params.ca_cert) if params.ca_cert else ssl.create_default_context()
    if not params.validate_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _encode_command(args: tuple) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, (int, float)):
            data = str(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse_info(text: str) -> dict[str, str]:
    """Parse an INFO reply into ``{field: value}`` (section headers and blank lines dropped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _sep, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def parse_keyspace(info: Mapping[str, str]) -> dict[int, dict[str, int]]:
    """``{db: {"keys": n, "expires": n}}`` from the ``dbN:keys=..,expires=..`` lines of INFO."""
    result: dict[int, dict[str, int]] = {}
    for key, value in info.items():
        if not (key.startswith("db") and key[2:].isdigit()):
            continue
        entry: dict[str, int] = {}
        for item in value.split(","):
            name, _sep, number = item.partition("=")
            if name in ("keys", "expires") and number.isdigit():
                entry[name] = int(number)
        result[int(key[2:])] = entry
    return result


class RedisConnection:
    """One authenticated connection; use as a context manager or call :meth:`close`."""

    def __init__(self, params: RedisParams) -> None:
        self.params = params
        self.sock: Optional[socket.socket] = None
        self.rfile: Any = None

    # -- connecting --------------------------------------------------------------------------
    @classmethod
    def connect(cls, params: RedisParams, *, authenticate: bool = True) -> RedisConnection:
        """Open, (TLS-wrap,) AUTH and PING; raise the mapped Lifeboat error on failure."""
        conn = cls(params)
        try:
            conn._open_socket()
            if authenticate:
                conn._auth()
            conn.command("PING")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_socket(self) -> None:
        p = self.params
        try:
            raw = socket.create_connection((p.host, p.port), timeout=p.timeout)
        except OSError as err:
            raise ConnectionFailure(f"cannot connect to Redis at {p.endpoint}: {err}",
                                    hint="check redis_host/redis_port and that redis-server is running") from err
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if p.tls:
            try:
                raw = _tls_context(p).wrap_socket(raw, server_hostname=p.host)
            except (ssl.SSLError, OSError) as err:
                raw.close()
                raise ConnectionFailure(f"TLS handshake with Redis at {p.endpoint} failed: {err}",
                                        hint="check redis_ca_cert / redis_validate_certs and that the port "
                                             "speaks TLS") from err
        self.sock = raw
        self.rfile = raw.makefile("rb", buffering=1 << 16)

    def _auth(self) -> None:
        p = self.params
        if p.password is None:
            if p.user:
                raise ConfigError(f"redis_user {p.user!r} is set but redis_password is not",
                                  hint="set redis_password for the ACL user")
            return
        args = ("AUTH", p.user, p.password) if p.user else ("AUTH", p.password)
        self._send(args)
        reply = self._read_reply()
        if isinstance(reply, _ErrorReply):
            self._raise_auth_error(reply.text)

    def _raise_auth_error(self, text: str) -> None:
        p = self.params
        who = f"user {p.user!r}" if p.user else "the default user"
        if text.startswith("WRONGPASS"):
            raise AuthenticationFailed(f"Redis at {p.endpoint} refused the password of {who} (WRONGPASS)",
                                       hint="check redis_user/redis_password (and that the ACL user is 'on')")
        if "without any password configured" in text:
            raise AuthenticationFailed(f"Redis at {p.endpoint} has no password configured but one was given",
                                       hint="drop redis_password, or configure requirepass/an ACL user")
        if "wrong number of arguments" in text and p.user:
            raise AuthenticationFailed(f"Redis at {p.endpoint} does not accept AUTH with a user name (Redis < 6)",
                                       hint="drop redis_user and use requirepass")
        raise AuthenticationFailed(f"Redis at {p.endpoint} rejected AUTH for {who}: {text.split(chr(10))[0]}")

    # -- protocol ----------------------------------------------------------------------------
    def _send(self, args: tuple) -> None:
        try:
            self.sock.sendall(_encode_command(args))
        except OSError as err:
            raise ConnectionFailure(f"connection to Redis at {self.params.endpoint} broke: {err}") from err

    def _readline(self) -> bytes:
        try:
            line = self.rfile.readline(1 << 20)
        except (OSError, ssl.SSLError) as err:
            raise ConnectionFailure(f"reading from Redis at {self.params.endpoint} failed: {err}") from err
        if not line.endswith(b"\r\n"):
            raise ConnectionFailure(f"Redis at {self.params.endpoint} closed the connection",
                                    hint="see the server log (maxclients, timeout, protected-mode?)")
        return line[:-2]

    def _read_exact(self, n: int) -> bytes:
        try:
            data = self.rfile.read(n)
        except (OSError, ssl.SSLError) as err:
            raise ConnectionFailure(f"reading from Redis at {self.params.endpoint} failed: {err}") from err
        if len(data) != n:
            raise ConnectionFailure(f"Redis at {self.params.endpoint} closed the connection mid-reply")
        return data

    def _read_reply(self) -> Any:
        line = self._readline()
        kind, body = line[:1], line[1:]
        if kind == b"+":
            return body.decode("utf-8", "replace")
        if kind == b"-":
            return _ErrorReply(body.decode("utf-8", "replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            n = int(body)
            if n < 0:
                return None
            data = self._read_exact(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(body)
            return None if n < 0 else [self._read_reply() for _i in range(n)]
        raise ConnectionFailure(f"Redis at {self.params.endpoint} sent an unexpected reply {line[:40]!r}")

    def command(self, *args: Any) -> Reply:
        """Send one command and return its reply (str, int, bytes, list or None).

        An error reply raises: NOAUTH -> AuthenticationFailed, NOPERM -> PermissionDenied,
        anything else -> RedisCommandError.
        """
        self._send(args)
        reply = self._read_reply()
        if isinstance(reply, _ErrorReply):
            self._raise_for(reply.text, args)
        return reply

    def _raise_for(self, text: str, args: tuple) -> None:
        name = " ".join(str(a) for a in args[:2]) if str(args[0]).upper() in ("CONFIG", "CLIENT", "REPLCONF") \
            else str(args[0])
        p = self.params
        if text.startswith("NOAUTH"):
            raise AuthenticationFailed(f"Redis at {p.endpoint} requires authentication",
                                       hint="set redis_password (and redis_user for an ACL user)")
        if text.startswith("NOPERM"):
            raise PermissionDenied(f"Redis user {p.user or 'default'} at {p.endpoint} may not run {name.upper()}: "
                                   f"{text}", hint=f"grant it in the ACL, e.g. +{str(args[0]).lower()}")
        raise RedisCommandError(f"Redis at {p.endpoint} answered {name.upper()} with an error: {text}")

    # -- helpers -----------------------------------------------------------------------------
    def info(self, section: Optional[str] = None) -> dict[str, str]:
        """INFO [section] parsed into ``{field: value}``."""
        reply = self.command("INFO", section) if section else self.command("INFO")
        return parse_info(reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply))

    def keyspace(self) -> dict[int, dict[str, int]]:
        """``{db: {"keys", "expires"}}`` from INFO keyspace (dbs without keys are absent)."""
        return parse_keyspace(self.info("keyspace"))

    def config_get(self, name: str) -> Optional[str]:
        """One CONFIG GET value as text (None if the server does not know the option)."""
        reply = self.command("CONFIG", "GET", name)
        if isinstance(reply, list) and len(reply) >= 2:
            value = reply[1]
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return None

    def wait_until_loaded(self, timeout_s: float) -> None:
        """Wait until the server has finished loading its data (INFO persistence ``loading:0``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.info("persistence").get("loading") == "0":
                    return
            except RedisCommandError as err:
                if "LOADING" not in str(err):
                    raise
            if time.monotonic() > deadline:
                raise ConnectionFailure(f"Redis at {self.params.endpoint} was still loading its data after "
                                        f"{timeout_s:.0f} s")
            time.sleep(0.1)

    def open_rdb_stream(self, read_timeout_s: float = SYNC_READ_TIMEOUT_S) -> RdbPayload:
        """Ask for a full resync the way ``redis-cli --rdb`` does; return the RDB payload reader.

        The connection is consumed: after the payload it must be closed.
        """
        self.command("REPLCONF", "capa", "eof")
        try:
            self.command("REPLCONF", "rdb-only", "1")  # Redis >= 7.0: no replication stream afterwards
        except RedisCommandError:
            LOG.info("redis: server does not know REPLCONF rdb-only (Redis < 7.0); continuing")
        self.sock.settimeout(max(read_timeout_s, self.params.timeout))
        self._send(("SYNC",))
        started = time.monotonic()
        while True:
            try:
                first = self.rfile.read(1)
            except (OSError, ssl.SSLError) as err:
                raise BackupFailed(f"Redis at {self.params.endpoint} sent no RDB within {read_timeout_s:.0f} s "
                                   f"after SYNC: {err}") from err
            if first != b"\n":  # newlines are keep-alives while the master prepares the RDB
                break
        if first == b"-":
            text = self._readline().decode("utf-8", "replace")
            self._raise_for(text, ("SYNC",))
        if first != b"$":
            raise BackupFailed(f"Redis at {self.params.endpoint} answered SYNC with {first!r} instead of an RDB "
                               "payload", hint="is this a Redis server that allows replication (SYNC)?")
        header = self._readline()
        waited = time.monotonic() - started
        if header.startswith(b"EOF:"):
            mark = header[4:]
            if len(mark) != EOF_MARK_LEN:
                raise BackupFailed(f"Redis at {self.params.endpoint} sent a malformed diskless EOF marker")
            return RdbPayload(self, None, mark, waited)
        return RdbPayload(self, int(header), None, waited)

    def close(self) -> None:
        for closer in (self.rfile, self.sock):
            if closer is not None:
                try:
                    closer.close()
                except OSError:
                    pass
        self.rfile = self.sock = None

    def __enter__(self) -> RedisConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _ErrorReply:
    def __init__(self, text: str) -> None:
        self.text = text


class RdbPayload:
    """Binary reader of the RDB bytes of one SYNC (``read(n)``; ``b""`` at the end).

    ``length`` is the announced size (disk-based) or ``None`` (diskless: the end is the
    40-byte marker, which is checked and not returned). ``diskless`` tells which.
    ``waited_s``: seconds from SYNC until the master started sending the payload.
    Raises :class:`errors.TruncatedData` if the connection ends before the payload does.
    """

    def __init__(self, conn: RedisConnection, length: Optional[int], mark: Optional[bytes], waited_s: float) -> None:
        self.conn = conn
        self.length = length
        self.mark = mark
        self.waited_s = waited_s
        self.diskless = mark is not None
        self.done = 0
        self._tail = b""  # diskless: bytes held back because they may be the marker
        self._finished = False

    def readable(self) -> bool:
        return True

    def _recv(self, n: int) -> bytes:
        try:
            return self.conn.rfile.read1(n)
        except (OSError, ssl.SSLError) as err:
            raise ConnectionFailure(f"the RDB stream from Redis at {self.conn.params.endpoint} broke after "
                                    f"{self.done} bytes: {err}") from err

    def read(self, n: int = -1) -> bytes:
        if self._finished:
            return b""
        if n is None or n < 0:
            n = 1 << 20
        if self.length is not None:
            want = min(n, self.length - self.done)
            if want <= 0:
                self._finished = True
                return b""
            data = self._recv(want)
            if not data:
                raise TruncatedData(f"the RDB stream from Redis at {self.conn.params.endpoint} ended after "
                                    f"{self.done} of {self.length} bytes")
            self.done += len(data)
            return data
        return self._read_diskless(n)

    def _read_diskless(self, n: int) -> bytes:
        while True:
            chunk = self._recv(n)
            if not chunk:
                raise TruncatedData(f"the diskless RDB stream from Redis at {self.conn.params.endpoint} ended after "
                                    f"{self.done} bytes without its end marker")
            data = self._tail + chunk
            end = data.find(self.mark, max(0, len(self._tail) - EOF_MARK_LEN))
            if end >= 0:
                self._finished = True
                self._tail = b""
                self.done += end
                return data[:end]
            keep = min(len(data), EOF_MARK_LEN - 1)
            out, self._tail = data[:len(data) - keep], data[len(data) - keep:]
            if out:
                self.done += len(out)
                return out
