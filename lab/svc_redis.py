"""The lab's Redis: own redis.conf (0600, holds the passwords), port, data folder.

Persistence: AOF (``appendfsync everysec``) plus RDB snapshots (``save 60 1000``).
The default user needs ``requirepass``; the ACL user ``lifeboat`` (password
stored as a SHA-256 hash in the config) may read every key and run what a
backup needs: :data:`BACKUP_ACL`. Passwords never appear in argv: the server is
started with only the config file path.
"""

from __future__ import annotations

import hashlib

from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import procs
from lab.layout import Layout
from lab.secrets import ensure_secrets, make_private_dir, write_private_file

NAME = "redis"
BACKUP_USER = "lifeboat"
#: What the backup user may run, besides every read command (``+@read``) on all keys.
BACKUP_ACL = ("+@read +@connection +info +sync +psync +replconf +bgsave +bgrewriteaof +lastsave "
              "+config|get +dbsize +select +scan +type +ttl +pttl +dump +object +memory|usage "
              "+command +role +time +client|setname +client|info +client|id")
START_TIMEOUT_S = 30.0

log = get_logger("lab.redis")


def marker(layout: Layout) -> str:
    """The string identifying this lab's redis-server in its (re-titled) command line."""
    return str(layout.redis_conf)


def render_config(layout: Layout, secrets: dict) -> str:
    """The redis.conf of the lab server (contains passwords: written 0600)."""
    backup_hash = hashlib.sha256(secrets["redis_backup_password"].encode()).hexdigest()
    return "\n".join([
        "# Written by `python -m lab` on every start; edits are overwritten.",
        f"bind {layout.host_for(NAME)}",
        f"port {layout.port(NAME)}",
        "protected-mode yes",
        "daemonize no",
        'logfile ""',
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
        f"dir {layout.redis_dir}",
        "databases 16",
        "dbfilename dump.rdb",
        "save 60 1000",
        "appendonly yes",
        'appendfilename "appendonly.aof"',
        'appenddirname "appendonlydir"',
        "appendfsync everysec",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        f"requirepass {secrets['redis_password']}",
        f"user {BACKUP_USER} on #{backup_hash} ~* {BACKUP_ACL}",
    ]) + "\n"


def write_config(layout: Layout) -> None:
    make_private_dir(layout.redis_dir)
    write_private_file(layout.redis_conf, render_config(layout, ensure_secrets(layout)))


def running_pid(layout: Layout) -> int | None:
    return procs.running_pid(layout.pid_file(NAME), marker(layout))


def client(layout: Layout, db: int = 0, user: str | None = None, password: str | None = None):
    """A redis-py client as the default user (or ``user``/``password``), 2 s timeouts."""
    import redis

    secrets = ensure_secrets(layout)
    return redis.Redis(host=layout.host_for(NAME), port=layout.port(NAME), db=db, username=user,
                       password=password if password is not None else secrets["redis_password"],
                       socket_timeout=2, socket_connect_timeout=2)


def answers_ping(layout: Layout) -> bool:
    """True if the server answers an authenticated PING (not while still loading data)."""
    import redis

    try:
        with client(layout) as conn:
            return bool(conn.ping())
    except redis.RedisError:
        return False


def start(layout: Layout) -> int:
    """Start redis-server on its data folder (loading AOF/RDB found there); returns the pid."""
    pid = running_pid(layout)
    if pid is not None:
        return pid
    server = procs.find_binary("redis-server", "redis-server")
    procs.ensure_port_free(layout.host_for(NAME), layout.port(NAME), NAME)
    write_config(layout)
    pid = procs.spawn(layout.command_prefix(NAME) + [server, str(layout.redis_conf)], layout.pid_file(NAME),
                      layout.log_file(NAME))
    procs.wait_until(lambda: answers_ping(layout), "redis", START_TIMEOUT_S, pid, marker(layout),
                     layout.log_file(NAME))
    log.info("redis: started pid %d on %s:%d", pid, layout.host_for(NAME), layout.port(NAME))
    return pid


def stop(layout: Layout) -> int | None:
    """Stop this lab's redis-server (SIGTERM: it writes its AOF/RDB and exits)."""
    pid = procs.stop_process(layout.pid_file(NAME), marker(layout))
    if pid:
        log.info("redis: stopped pid %d", pid)
    return pid
