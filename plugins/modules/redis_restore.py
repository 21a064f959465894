#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: redis_restore
short_description: Restore a Redis server's data from a backup set
version_added: 0.1.0
description:
  - Replaces the data of a Redis server with the RDB of a backup set, and checks that the
    server then holds the same number of keys per database as the backup.
  - "Order: the RDB is decrypted and checked (structure, CRC64) into a staging folder beside
    O(data_dir) first -- if that fails nothing was changed. Then the server is stopped through
    its service manager, its data files (RDB, AOF folder, legacy AOF file) are moved to
    C(<data_dir>.lbprev-<UTC time>) (kept, never deleted by this module), the RDB is written both
    as the RDB file and as the base of a fresh multi-part AOF, and the server is started."
  - Writing the AOF base matters. With C(appendonly yes), Redis 7 loads only the AOF and ignores
    C(dump.rdb); a restore that just puts the RDB in place would start empty, and the next save would
    overwrite the restored file.
  - If the key counts differ from the backup's, or the server does not come up, the restored files
    are moved to C(<data_dir>.lbfailed-<UTC time>), the previous files are put back, the server
    is started again, and the module fails.
  - Must run on the Redis host, as a user that may write O(data_dir) and control the service.
  - Each run (outside check mode) appends a C(restore) job record to C(<store>/jobs/history.jsonl) and an
    audit record; a restore that passed its check is recorded with C(details.verified=true) and
    C(details.kept_aside) (the C(<data_dir>.lbprev-*) folder); M(lifeboat.dr.prune) removes kept-aside data
    only after such a verified restore.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.redis
  - lifeboat.dr.attributes
options:
  backup_id:
    description:
      - The set to restore. C(latest) (default) is the newest set that holds a Redis backup.
    type: str
    default: latest
  data_dir:
    description:
      - The server's C(dir). When unset, C(CONFIG GET dir) is asked of the running server.
    type: path
  dbfilename:
    description:
      - The server's C(dbfilename); when unset, asked with C(CONFIG GET), else C(dump.rdb).
    type: str
  appenddirname:
    description:
      - The server's C(appenddirname); when unset, asked with C(CONFIG GET), else C(appendonlydir).
    type: str
  appendfilename:
    description:
      - The server's C(appendfilename); when unset, asked with C(CONFIG GET), else C(appendonly.aof).
    type: str
  service_manager:
    description:
      - What stops and starts the server (see M(lifeboat.dr.service) for the managers' settings).
    type: str
    default: lab
    choices: [lab, systemd, docker, command]
  service_name:
    description:
      - Name of the service (lab service, default systemd unit, default container name).
    type: str
    default: redis
  service_settings:
    description:
      - Settings of the service manager (for example C(unit) for systemd, C(repo_dir) for lab).
      - Do not put secrets here.
    type: dict
    default: {}
  start_timeout:
    description:
      - Seconds to wait for the server to stop, and to start and load its data.
    type: float
    default: 300
attributes:
  check_mode:
    support: full
    details: >-
      Opens the set and unwraps its key, returns the plan (files that would be moved aside,
      expected key counts); the server is not touched.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run restarts the server and replaces its data.
seealso:
  - module: lifeboat.dr.redis_backup
  - module: lifeboat.dr.redis_verify
  - module: lifeboat.dr.service
'''

EXAMPLES = r'''
- name: Restore the newest Redis backup into a systemd-managed server
  lifeboat.dr.redis_restore:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    data_dir: /var/lib/redis
    service_manager: systemd
    service_settings:
      unit: redis-server
    redis_user: lifeboat
    redis_password: "{{ lifeboat_redis_password }}"

- name: Restore a given set into the lab
  lifeboat.dr.redis_restore:
    store: "{{ lab.LAB_STORE }}"
    key_file: "{{ lab.LAB_KEY_FILE }}"
    backup_id: redis_20250129T020000Z_a1b2c3
    data_dir: "{{ lab.LAB_REDIS_DIR }}"
    redis_port: 16379
    redis_user: lifeboat
    redis_password: "{{ lab.LAB_REDIS_BACKUP_PASSWORD }}"
    service_settings:
      repo_dir: /work/lifeboat
'''

RETURN = r'''
set_id:
  description: The set restored.
  returned: always
  type: str
data_dir:
  description: The server's data folder.
  returned: always
  type: str
previous_data:
  description: Folder the previous data files were moved to (null when there were none). On a Compose
    deployment (O(service_manager=docker)) whose data dir is a named volume's folder, the folder of the
    new volume C(<volume>-lifeboat-kept-<time>) (labelled C(lifeboat.kept-from)/C(lifeboat.kept-at)).
  returned: success, not in check mode
  type: str
kept_volume:
  description: On a Compose deployment, the volume now holding the previous data files.
  returned: success with a named volume as data dir
  type: str
moved_aside:
  description: Names of the files and folders moved aside.
  returned: success, not in check mode
  type: list
  elements: str
keys_per_db:
  description: Keys per db number after the restore (INFO keyspace).
  returned: success, not in check mode
  type: dict
expected_keys_per_db:
  description: Per db number, the range of key counts accepted (keys whose TTL passed may be gone).
  returned: success, not in check mode
  type: dict
rdb_checks:
  description:
    - The checks the RDB passed before anything was changed, C(lifeboat-structural) always and
      C(redis-check-rdb) where it is installed (a failed check stops the restore before the server is stopped).
  returned: success, not in check mode
  type: list
  elements: str
  sample: ["lifeboat-structural", "redis-check-rdb"]
would_move_aside:
  description: Data files present now that a restore would move aside.
  returned: check mode
  type: list
  elements: str
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.conn import RedisParams
from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.engine import run_redis_restore
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    redis_argument_spec,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import get_service


def argument_spec():
    """The module's options: store + redis layers and its own."""
    return merge_specs(store_argument_spec(), redis_argument_spec(), dict(
        backup_id=dict(type="str", default="latest"),
        data_dir=dict(type="path"),
        dbfilename=dict(type="str"),
        appenddirname=dict(type="str"),
        appendfilename=dict(type="str"),
        service_manager=dict(type="str", default="lab", choices=["lab", "systemd", "docker", "command"]),
        service_name=dict(type="str", default="redis"),
        service_settings=dict(type="dict", default={}),
        start_timeout=dict(type="float", default=300.0),
    ))


def restore(module):
    """Check mode: the plan; else stop, swap data, start, compare key counts (rollback on mismatch)."""
    p = module.params
    keyring = keyring_from_params(p)
    service = get_service(p["service_manager"], p["service_name"], **(p["service_settings"] or {}))
    overrides = {k: p[k] for k in ("dbfilename", "appenddirname", "appendfilename")}
    return oplog.run_recorded(p["store"], "restore", lambda handle: run_redis_restore(
        p["store"], keyring, RedisParams.from_module_params(p), service=service, set_id=p["backup_id"],
        data_dir=p["data_dir"], layout_overrides=overrides, start_timeout_s=p["start_timeout"],
        check_mode=module.check_mode, progress=log_progress()), check_mode=module.check_mode,
        describe=oplog.redis_restore_fields, components=["redis"], backup_id=oplog.named_set(p["backup_id"]))


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="redis",
                            progress_kind="restore")
    run_module(module, restore)


if __name__ == "__main__":
    main()
