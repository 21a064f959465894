"""Lifeboat's demo application: a small HTTP service over MariaDB, Redis, OpenBao and files.

Run: ``python lab/demoapp/app.py --config=PATH`` (the lab does this). The config
(JSON, no secrets) names the Vault address and the file holding the app's Vault
token; the MariaDB and Redis passwords are read from Vault (KV v2). Every backend
is reached with timeouts of ``timeout_s`` (2 s) and reconnected on the next
request after a failure, so the app recovers by itself after an outage.

Endpoints (all answers JSON):

* ``GET /health``: 200 ``{"mysql": "ok", "redis": "ok", "vault": "ok"}`` only if all
  three work, else 503 with the failing ones described.
* ``POST /canary`` ``{"seq": int, "ts": float}``: records ``seq`` in MySQL
  ``demo.canary``, Redis (``ZADD canary seq seq``, db 0) and ``storage/canary.log``
  (flushed and fsynced); 200 only when all three acknowledged, else 503.
* ``GET /canary``: ``{"mysql": [seq...], "redis": [seq...], "file": [seq...]}`` (sorted).
* ``GET /canary/latest?from=A&to=B``: per store the newest canary record with
  ``A <= seq < B`` read from that store (``{"seq": n, "ts": t}``; ``ts`` null for Redis,
  which keeps only the seq), or null when it holds none; 200 when every store answered,
  else 503. A real read of stored data (the drill's RTO ends on it), unlike ``/health``.
* ``POST /files?name=NAME`` (body = content): stores ``storage/uploads/NAME`` and a
  row ``demo.files(path, sha256, size)``; ``GET /files`` lists those rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import hvac
import pymysql
import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS canary (
         seq BIGINT PRIMARY KEY,
         client_ts DOUBLE NOT NULL,
         committed_at DATETIME(6) NOT NULL
       ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS files (
         id BIGINT AUTO_INCREMENT PRIMARY KEY,
         path VARCHAR(255) NOT NULL UNIQUE,
         sha256 CHAR(64) NOT NULL,
         size BIGINT NOT NULL,
         created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
       ) ENGINE=InnoDB""",
)
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
POOL_SIZE = 8

log = logging.getLogger("demoapp")


class Backends:
    """Connections to Vault, MariaDB and Redis, (re)made on demand; thread-safe."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.timeout = float(config.get("timeout_s", 2))
        self.storage = Path(config["storage"])
        self._secrets: dict[str, dict] = {}
        self._pool: queue.LifoQueue = queue.LifoQueue(maxsize=POOL_SIZE)
        self._redis: redis.Redis | None = None
        self._lock = threading.Lock()
        self.file_lock = threading.Lock()

    # --- Vault -------------------------------------------------------------------
    def vault(self) -> hvac.Client:
        """A Vault client with the token currently in the token file (it may be replaced)."""
        token = Path(self.config["vault_token_file"]).read_text().strip()
        return hvac.Client(url=self.config["vault_addr"], token=token, timeout=self.timeout)

    def secret(self, name: str, refresh: bool = False) -> dict:
        """The KV v2 secret at config[name] (cached; ``refresh`` reads it again)."""
        if refresh or name not in self._secrets:
            response = self.vault().secrets.kv.v2.read_secret_version(
                path=self.config[name], mount_point=self.config.get("vault_mount", "secret"),
                raise_on_deleted_version=True)
            self._secrets[name] = response["data"]["data"]
        return self._secrets[name]

    # --- MariaDB -----------------------------------------------------------------
    def _connect_mysql(self) -> pymysql.connections.Connection:
        for refresh in (False, True):
            db = self.secret("db_secret", refresh=refresh)
            try:
                conn = pymysql.connect(host=db["host"], port=int(db["port"]), user=db["username"],
                                       password=db["password"], database=db["database"], autocommit=True,
                                       connect_timeout=self.timeout, read_timeout=self.timeout,
                                       write_timeout=self.timeout)
            except pymysql.err.OperationalError as err:
                if err.args and err.args[0] == 1045 and not refresh:  # access denied: password rotated?
                    continue
                raise
            with conn.cursor() as cur:
                for statement in SCHEMA:
                    cur.execute(statement)
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def mysql(self):
        """A pooled connection; a broken one is discarded (the next request connects anew)."""
        try:
            conn = self._pool.get_nowait()
            try:
                conn.ping(reconnect=False)
            except pymysql.MySQLError:
                conn.close()
                conn = self._connect_mysql()
        except queue.Empty:
            conn = self._connect_mysql()
        try:
            yield conn
        except BaseException:
            try:
                conn.close()
            except pymysql.MySQLError:
                pass
            raise
        try:
            self._pool.put_nowait(conn)
        except queue.Full:
            conn.close()

    # --- Redis -------------------------------------------------------------------
    def redis(self, refresh: bool = False) -> redis.Redis:
        with self._lock:
            if self._redis is None or refresh:
                settings = self.secret("redis_secret", refresh=refresh)
                self._redis = redis.Redis(
                    host=settings["host"], port=int(settings["port"]), password=settings["password"], db=0,
                    socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                    retry=Retry(ConstantBackoff(0.1), 1))
            return self._redis

    def redis_call(self, fn):
        """Run ``fn(client)``; on an authentication error re-read the password once."""
        try:
            return fn(self.redis())
        except redis.AuthenticationError:
            return fn(self.redis(refresh=True))


def check_health(backends: Backends) -> dict[str, str]:
    """Each backend's state: "ok" or "error: <reason>"."""
    result = {}

    def probe(name: str, fn) -> None:
        try:
            fn()
            result[name] = "ok"
        except Exception as err:  # noqa: BLE001 - any failure makes the backend unhealthy
            result[name] = f"error: {type(err).__name__}: {str(err)[:200]}"

    def mysql_ok() -> None:
        with backends.mysql() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")

    probe("vault", lambda: backends.secret("db_secret", refresh=True))
    probe("mysql", mysql_ok)
    probe("redis", lambda: backends.redis_call(lambda r: r.ping()))
    return result


def append_canary_line(backends: Backends, seq: int, ts: float) -> None:
    """Append ``"<seq> <ts>"`` to storage/canary.log and fsync it before returning."""
    backends.storage.mkdir(parents=True, exist_ok=True)
    with backends.file_lock, open(backends.storage / "canary.log", "a", encoding="ascii") as out:
        out.write(f"{seq} {ts!r}\n")
        out.flush()
        os.fsync(out.fileno())


def record_canary(backends: Backends, seq: int, ts: float) -> dict[str, str]:
    """Write one canary to the three stores; each value is "ok" or an error description."""
    result = {}

    def attempt(name: str, fn) -> None:
        try:
            fn()
            result[name] = "ok"
        except Exception as err:  # noqa: BLE001
            result[name] = f"error: {type(err).__name__}: {str(err)[:200]}"
            log.warning("canary %d: %s failed: %s", seq, name, result[name])

    def to_mysql() -> None:
        with backends.mysql() as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO canary (seq, client_ts, committed_at) VALUES (%s, %s, NOW(6)) "
                        "ON DUPLICATE KEY UPDATE seq = seq", (seq, ts))

    attempt("mysql", to_mysql)
    attempt("redis", lambda: backends.redis_call(lambda r: r.zadd("canary", {str(seq): seq})))
    attempt("file", lambda: append_canary_line(backends, seq, ts))
    return result


def read_canaries(backends: Backends) -> tuple[dict, bool]:
    """The seqs each store holds (None where the store failed) and whether all answered."""
    result: dict[str, list[int] | None] = {}

    def from_mysql() -> list[int]:
        with backends.mysql() as conn, conn.cursor() as cur:
            cur.execute("SELECT seq FROM canary ORDER BY seq")
            return [int(row[0]) for row in cur.fetchall()]

    def from_file() -> list[int]:
        path = backends.storage / "canary.log"
        if not path.exists():
            return []
        seqs = set()
        for line in path.read_text(encoding="ascii", errors="replace").splitlines():
            head = line.split(" ", 1)[0]
            if head.lstrip("-").isdigit():
                seqs.add(int(head))
        return sorted(seqs)

    readers = {"mysql": from_mysql,
               "redis": lambda: sorted(int(float(s)) for s in backends.redis_call(
                   lambda r: r.zrange("canary", 0, -1))),
               "file": from_file}
    ok = True
    for name, reader in readers.items():
        try:
            result[name] = reader()
        except Exception as err:  # noqa: BLE001
            log.warning("reading canaries from %s failed: %s", name, err)
            result[name], ok = None, False
    return result, ok


def read_newest_canaries(backends: Backends, first: int, end: int) -> tuple[dict, bool]:
    """The newest canary record with ``first <= seq < end`` in each store (None where the
    store holds none; an error description where it failed) and whether all answered."""
    result: dict[str, dict | str | None] = {}

    def from_mysql() -> dict | None:
        with backends.mysql() as conn, conn.cursor() as cur:
            cur.execute("SELECT seq, client_ts FROM canary WHERE seq >= %s AND seq < %s ORDER BY seq DESC LIMIT 1",
                        (first, end))
            row = cur.fetchone()
            return {"seq": int(row[0]), "ts": float(row[1])} if row else None

    def from_redis() -> dict | None:
        found = backends.redis_call(lambda r: r.zrevrangebyscore("canary", f"({end}", first, start=0, num=1))
        return {"seq": int(float(found[0])), "ts": None} if found else None

    def from_file() -> dict | None:
        path = backends.storage / "canary.log"
        newest = None
        if path.exists():
            for line in path.read_text(encoding="ascii", errors="replace").splitlines():
                parts = line.split(" ")
                if len(parts) == 2 and parts[0].lstrip("-").isdigit() and first <= int(parts[0]) < end:
                    if newest is None or int(parts[0]) > newest["seq"]:
                        newest = {"seq": int(parts[0]), "ts": float(parts[1])}
        return newest

    ok = True
    for name, reader in {"mysql": from_mysql, "redis": from_redis, "file": from_file}.items():
        try:
            result[name] = reader()
        except Exception as err:  # noqa: BLE001
            result[name], ok = f"error: {type(err).__name__}: {str(err)[:200]}", False
    return result, ok


def store_file(backends: Backends, name: str, body: bytes) -> dict:
    """Save ``body`` as storage/uploads/NAME (fsynced, atomic) and upsert its demo.files row."""
    folder = backends.storage / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    target, tmp = folder / name, folder / f".{name}.tmp"
    with open(tmp, "wb") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    row = {"path": f"uploads/{name}", "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    with backends.mysql() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO files (path, sha256, size) VALUES (%(path)s, %(sha256)s, %(size)s) "
                    "ON DUPLICATE KEY UPDATE sha256 = VALUES(sha256), size = VALUES(size)", row)
    backends.redis_call(lambda r: r.incr("files:uploaded"))
    return row


def list_files(backends: Backends) -> list[dict]:
    with backends.mysql() as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SELECT path, sha256, size FROM files ORDER BY path")
        return list(cur.fetchall())


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the functions above; ``server.backends`` holds the connections."""

    server_version = "lifeboat-demoapp/1"

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def send_json(self, code: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD_BYTES:
            raise ValueError(f"body larger than {MAX_UPLOAD_BYTES} bytes")
        return self.rfile.read(length)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        backends = self.server.backends
        path = urlparse(self.path).path
        if path == "/health":
            health = check_health(backends)
            self.send_json(200 if all(v == "ok" for v in health.values()) else 503, health)
        elif path == "/canary":
            seqs, ok = read_canaries(backends)
            self.send_json(200 if ok else 503, seqs)
        elif path == "/canary/latest":
            query = parse_qs(urlparse(self.path).query)
            try:
                first, end = int(query["from"][0]), int(query["to"][0])
            except (KeyError, ValueError):
                self.send_json(400, {"error": "expected /canary/latest?from=INT&to=INT"})
                return
            newest, ok = read_newest_canaries(backends, first, end)
            self.send_json(200 if ok else 503, newest)
        elif path == "/files":
            try:
                self.send_json(200, list_files(backends))
            except Exception as err:  # noqa: BLE001
                self.send_json(503, {"error": f"{type(err).__name__}: {err}"})
        else:
            self.send_json(404, {"error": "unknown path"})

    def do_POST(self) -> None:  # noqa: N802
        backends = self.server.backends
        url = urlparse(self.path)
        try:
            body = self.read_body()
        except ValueError as err:
            self.send_json(413, {"error": str(err)})
            return
        if url.path == "/canary":
            try:
                data = json.loads(body or b"{}")
                seq, ts = data["seq"], data["ts"]
                if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(ts, (int, float)):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                self.send_json(400, {"error": 'expected JSON {"seq": int, "ts": float}'})
                return
            result = record_canary(backends, seq, float(ts))
            self.send_json(200 if all(v == "ok" for v in result.values()) else 503, dict(result, seq=seq))
        elif url.path == "/files":
            name = (parse_qs(url.query).get("name") or [""])[0]
            if not FILE_NAME.match(name):
                self.send_json(400, {"error": "name must match " + FILE_NAME.pattern})
                return
            try:
                self.send_json(200, store_file(backends, name, body))
            except Exception as err:  # noqa: BLE001
                self.send_json(503, {"error": f"{type(err).__name__}: {err}"})
        else:
            self.send_json(404, {"error": "unknown path"})


def setup_logging(log_file: str) -> None:
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="path of app.json")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    setup_logging(config["log_file"])
    server = ThreadingHTTPServer((config["listen_host"], int(config["listen_port"])), Handler)
    server.daemon_threads = True
    server.backends = Backends(config)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("listening on %s:%s", config["listen_host"], config["listen_port"])
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        log.info("stopping")
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
