#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.backup_verify: quick or full verification of a whole backup set."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: backup_verify
short_description: Verify every component of a backup set, quick or full, and record the result
version_added: 0.1.0
description:
  - "O(mode=quick): every artifact and file of the set is read back (size, SHA-256, every chunk
    authenticated; nothing written to disk), plus the engines' quick checks (Redis RDB structure and
    CRC64, Vault snapshot checksums)."
  - "O(mode=full): additionally MySQL is restored into a scratch MariaDB (started and removed by the
    module) through the same code as a real restore, and every table's row count and checksum is
    compared with those recorded at backup time; Redis is loaded into a scratch redis-server; Vault is
    restored into a scratch OpenBao and unsealed with the escrowed keys (and O(vault_check_path) read);
    every app file is hashed against its list."
  - Both modes report the capture-time spread of the components and run the reference checks named in
    O(reference_checks) (see C(plugins/module_utils/ops/consistency.py)).
  - The report is stored as the set's verification record in C(<store>/verifications/<set_id>/)
    (a published set is never modified); the catalog then shows the set as verified or failed.
  - O(mode=full) reports RV(restore_durations_s), the measured time of each component's load/restore
    check; the health report's "if disaster struck now" RTO is the sum of these.
  - Each run (outside check mode) appends a C(verify) job record and an audit record to the store.
  - Fails when a check fails; the message names each failed artifact and check.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.attributes
options:
  backup_id:
    description:
      - The set to verify. Unset or C(latest) picks the newest set holding O(components) without a passing
        full verification (and whose latest verification did not fail).
    type: str
  mode:
    description:
      - C(quick) or C(full).
    type: str
    default: quick
    choices: [quick, full]
  components:
    description:
      - Components the picked set must hold (when O(backup_id) is unset).
    type: list
    elements: str
    default: [mysql, redis, vault, app]
  reference_checks:
    description:
      - Names of registered cross-component reference checks to run (e.g. C(demo_app_files)).
    type: list
    elements: str
    default: []
  vault_unseal_keys_file:
    description:
      - Escrowed unseal keys of the source cluster, to unseal the scratch OpenBao (O(mode=full)).
    type: path
  vault_token:
    description:
      - A token valid at snapshot time, to read O(vault_check_path) in the scratch OpenBao.
    type: str
  vault_check_path:
    description:
      - A KV v2 secret (C(<mount>/<path>)) that must be readable in the restored snapshot.
    type: str
  work_dir:
    description:
      - Folder for temporary files of O(mode=full) (default the system temp folder).
    type: path
  compose_project:
    description:
      - On a Compose deployment, the project whose services' images the scratch servers of O(mode=full) run
        in - each scratch MariaDB, redis-server and OpenBao then runs in a throw-away container of the image its
        service runs (the same server version; entrypoint the server program, this host's network, its folder
        bind-mounted), removed afterwards. Unset - the servers installed on this host. Needs a Docker API on
        this host (the folder is bind-mounted).
    type: str
  compose_services:
    description:
      - With O(compose_project) - the Compose service of each component (C(mysql), C(redis), C(vault)); a
        component not named runs its scratch server on this host.
    type: dict
    default: {}
  docker_host:
    description:
      - With O(compose_project) - the Docker API (default C(DOCKER_HOST)).
    type: str
  record:
    description:
      - Store the report as the set's verification record.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Runs the checks but stores no verification record, job record or audit record.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: The set is never changed; each run adds one verification record (reported as changed).
seealso:
  - module: lifeboat.dr.backup_set
'''

EXAMPLES = r'''
- name: Full verification of the newest set not yet fully verified
  lifeboat.dr.backup_verify:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    mode: full
    vault_unseal_keys_file: /root/escrow/openbao-init.json
    reference_checks: [demo_app_files]
'''

RETURN = r'''
ok:
  description: Whether every check passed.
  returned: always
  type: bool
set_id:
  description: The set verified.
  returned: always
  type: str
checks:
  description: Every check with name, ok, detail and the artifact it concerns.
  returned: always
  type: list
  elements: dict
failed:
  description: One line per failed check, starting with the artifact.
  returned: always
  type: list
  elements: str
consistency:
  description: Capture windows per component, their spread in seconds, and the reference check results.
  returned: always
  type: dict
restore_durations_s:
  description:
    - O(mode=full) only. Per component, seconds its restore took (scratch restore for MySQL, Redis and
      Vault; decrypting and hashing every file for app). The health report's measured RTO reads these.
  returned: mode full
  type: dict
  sample: {mysql: 12.4, redis: 3.1}
record:
  description: Path of the stored verification record.
  returned: when recorded
  type: str
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import orchestrate
from ansible_collections.lifeboat.dr.plugins.module_utils.ops.set_verify import verify_set
from ansible_collections.lifeboat.dr.plugins.module_utils.store.oplog import run_recorded, verify_fields
from ansible_collections.lifeboat.dr.plugins.module_utils.util.compose_project import service_images
from ansible_collections.lifeboat.dr.plugins.module_utils.util.compose_volumes import client_for
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import VerificationFailed

#: The components whose full verification starts a scratch server.
SCRATCH_COMPONENTS = ("mysql", "redis", "vault")


def argument_spec():
    """The module's options: the store layer and its own."""
    return merge_specs(store_argument_spec(), dict(
        backup_id=dict(type="str"),
        mode=dict(type="str", default="quick", choices=["quick", "full"]),
        components=dict(type="list", elements="str", default=["mysql", "redis", "vault", "app"]),
        reference_checks=dict(type="list", elements="str", default=[]),
        vault_unseal_keys_file=dict(type="path"),
        vault_token=dict(type="str", no_log=True),
        vault_check_path=dict(type="str"),
        work_dir=dict(type="path"),
        compose_project=dict(type="str"),
        compose_services=dict(type="dict", default={}),
        docker_host=dict(type="str"),
        record=dict(type="bool", default=True),
    ))


def verify(module):
    """Pick the set, verify it, record the report and the job; fail naming the failed artifacts."""
    p = module.params
    components = orchestrate.parse_components(p["components"])
    return run_recorded(p["store"], "verify", lambda handle: _verify(module, components, handle),
                        check_mode=module.check_mode, describe=verify_fields, components=components, mode=p["mode"])


def _verify(module, components, handle):
    p = module.params
    set_id = orchestrate.resolve_set(p["store"], components, p["backup_id"], want="unverified_full")["set_id"]
    handle.update(backup_id=set_id)
    handle.target = set_id
    record = p["record"] and not module.check_mode
    options = {k: p[k] for k in ("vault_unseal_keys_file", "vault_token", "vault_check_path", "work_dir",
                                 "docker_host")}
    options["scratch_images"] = scratch_images(p) if p["mode"] == "full" else {}
    report = verify_set(p["store"], set_id, keyring_from_params(p), mode=p["mode"],
                        reference_checks=p["reference_checks"], options=options, record=record)
    if not report["ok"]:
        where = f" (recorded as failed in {report['record']})" if report.get("record") else ""
        raise VerificationFailed(f"set {set_id} failed {p['mode']} verification{where}: "
                                 + "; ".join(report["failed"][:10]),
                                 hint="do not restore from this set; restore from another one and check the store")
    return dict(changed=record, **report)


def scratch_images(p):
    """``{component: image}`` of the scratch servers that run in containers (``compose_project``), else ``{}``."""
    if not p["compose_project"]:
        return {}
    wanted = {c: s for c, s in p["compose_services"].items() if c in SCRATCH_COMPONENTS}
    return service_images(client_for(p["docker_host"]), p["compose_project"], wanted)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="verify",
                            progress_kind="verify")
    run_module(module, verify)


if __name__ == "__main__":
    main()
