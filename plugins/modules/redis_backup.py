#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: redis_backup
short_description: Back up a Redis server (RDB, optionally AOF) into an encrypted backup set
version_added: 0.1.0
description:
  - Takes the RDB of a Redis server into a new backup set as C(redis/dump.rdb.zst.enc)
    (compressed, then encrypted).
  - With O(mode=network) the RDB comes over the replication protocol, like C(redis-cli --rdb)
    (C(REPLCONF capa eof), C(REPLCONF rdb-only 1), C(SYNC)); no file access to the server is
    needed. Each run makes the server fork once; on a server with the default
    C(repl-diskless-sync-delay 5) the transfer starts only after that delay (see docs/redis.md).
  - With O(mode=file) the module runs C(BGSAVE), waits for it, and copies the RDB file from
    O(data_dir); it must run on the Redis host.
  - The RDB is checked while it streams, by Lifeboat's own check (structure, CRC64, and the
    integrity of every ziplist, listpack, intset and zipmap; empty keys are refused) and, where
    C(redis-check-rdb) is installed on the host running the module, by C(redis-check-rdb) reading
    the same bytes through a pipe; a damaged RDB fails the backup and nothing is published.
    Which checks ran is recorded in the set (C(rdb.checks) in C(redis/redis_backup_metadata.json),
    C(rdb_checks) in the manifest) and returned as RV(rdb_checks).
  - With O(include_aof=true) it also runs C(BGREWRITEAOF), waits for it, and stores the Redis 7
    multi-part AOF (base and incr files, manifest last) as C(redis/appendonly.aof.tar.zst.enc).
  - Records Redis version, role, INFO keyspace counts, last save time and the RDB's per-db key
    counts in the set (C(redis/redis_backup_metadata.json) and the manifest).
  - The ACL user needs C(sync), C(replconf), C(info) (network mode), plus C(bgsave),
    C(bgrewriteaof) and C(config|get) for file mode and the AOF.
  - Without C(set_id) (a set of its own), each run appends a C(backup) job record and an audit record to
    the store; with C(set_id) the set's record is written when M(lifeboat.dr.backup_set) publishes or aborts it.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.set_member
  - lifeboat.dr.redis
  - lifeboat.dr.attributes
options:
  mode:
    description:
      - C(network) takes the RDB over the wire (SYNC); C(file) runs C(BGSAVE) and copies the file.
    type: str
    default: network
    choices: [network, file]
  include_aof:
    description:
      - Also store the append-only file (needs file access, and C(appendonly yes) on the server).
    type: bool
    default: false
  data_dir:
    description:
      - The server's C(dir). When unset, C(CONFIG GET dir) is asked. Needed only for O(mode=file)
        and O(include_aof).
    type: path
  set_type:
    description:
      - Type of the new set.
    type: str
    default: redis
    choices: [redis, full]
attributes:
  check_mode:
    support: full
    details: >-
      Connects and authenticates, checks the prerequisites of the mode, returns the server facts;
      no SYNC, BGSAVE or write.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run creates a new backup set.
seealso:
  - module: lifeboat.dr.redis_restore
  - module: lifeboat.dr.redis_verify
'''

EXAMPLES = r'''
- name: Back up Redis over the network with the backup ACL user
  lifeboat.dr.redis_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    redis_port: 6379
    redis_user: lifeboat
    redis_password: "{{ lifeboat_redis_password }}"
  register: redis_backup

- name: BGSAVE + file copy, with the AOF, over TLS
  lifeboat.dr.redis_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    mode: file
    include_aof: true
    data_dir: /var/lib/redis
    redis_tls: true
    redis_ca_cert: /etc/redis/ca.pem
    redis_user: lifeboat
    redis_password: "{{ lifeboat_redis_password }}"
'''

RETURN = r'''
set_id:
  description: Identifier of the published set.
  returned: success, not in check mode
  type: str
  sample: redis_20250129T020000Z_a1b2c3
path:
  description: Folder of the published set.
  returned: success, not in check mode
  type: str
redis_version:
  description: Version of the Redis server.
  returned: success, not in check mode
  type: str
  sample: 7.0.15
role:
  description: Replication role of the server (master or slave).
  returned: success, not in check mode
  type: str
keyspace:
  description: INFO keyspace counts at the start of the backup, per db number.
  returned: success, not in check mode
  type: dict
  sample: {"0": {"keys": 120, "expires": 3}}
rdb_keys_per_db:
  description: Keys per db number found in the stored RDB.
  returned: success, not in check mode
  type: dict
  sample: {"0": 120}
rdb_size:
  description: Bytes of the RDB as the server sent it.
  returned: success, not in check mode
  type: int
rdb_checks:
  description:
    - The checks that ran over the whole RDB and passed, C(lifeboat-structural) always and
      C(redis-check-rdb) where it is installed.
  returned: success, not in check mode, without set_id
  type: list
  elements: str
  sample: ["lifeboat-structural", "redis-check-rdb"]
stored_bytes:
  description: Bytes the set takes in the store.
  returned: success, not in check mode
  type: int
aof:
  description: The stored AOF files (name, type, size), when O(include_aof=true).
  returned: success, not in check mode, with include_aof
  type: dict
server:
  description: Server facts (check mode).
  returned: check mode
  type: dict
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.conn import RedisParams
from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.engine import (
    backup_redis_into,
    plan_redis_backup,
    run_redis_backup,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.backup import run_backup_module
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    codec_from_params,
    keyring_from_params,
    merge_specs,
    redis_argument_spec,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress


def argument_spec():
    """The module's options: store + redis layers and its own."""
    return merge_specs(store_argument_spec(), redis_argument_spec(), dict(
        mode=dict(type="str", default="network", choices=["network", "file"]),
        include_aof=dict(type="bool", default=False),
        data_dir=dict(type="path"),
        set_type=dict(type="str", default="redis", choices=["redis", "full"]),
        set_id=dict(type="str"),
    ))


def backup(module):
    """Check mode: connection, prerequisites and facts; else one backup into a new, published set."""
    p = module.params
    keyring = keyring_from_params(p)  # check mode checks the key ring too
    conn = RedisParams.from_module_params(p)
    source = dict(mode=p["mode"], include_aof=p["include_aof"], data_dir=p["data_dir"])
    return run_backup_module(
        module, "redis", keyring=keyring,
        plan=lambda: plan_redis_backup(conn, **source),
        write_into=lambda writer, ring: backup_redis_into(writer, conn, progress=log_progress(), **source),
        own_set=lambda ring: run_redis_backup(p["store"], ring, conn, codec=codec_from_params(p),
                                              set_type=p["set_type"], progress=log_progress(), **source))


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="redis",
                            progress_kind="backup")
    run_module(module, backup)


if __name__ == "__main__":
    main()
