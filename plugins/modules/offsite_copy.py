#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.offsite_copy: copy a backup set to or from an off-site target."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: offsite_copy
short_description: Copy a Lifeboat backup set off-site (or back), verified by its manifest hashes
version_added: 0.1.0
description:
  - C(mode=push) copies a published set from the store to a second store (a folder on
    this or another host, or S3-compatible object storage) and verifies the copy against
    the hashes in the set's manifest before it becomes visible there.
  - C(mode=pull) copies a set from the off-site target back into the store (for a restore
    when the local store is gone); every hash is checked again, and the manifest's
    authentication code too when O(key_file) is given, before the set appears in the store.
  - A copy that is already present and verifies is left alone (no change).
  - Folder over SSH uses C(rsync) and C(ssh) with key authentication from the managed host;
    S3 uses boto3 (streamed multipart uploads; sizes and ETags compared after upload).
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  mode:
    description: C(push) (store to target) or C(pull) (target to store).
    type: str
    choices: [push, pull]
    default: push
  store:
    description: The local backup store folder.
    type: path
    required: true
  run_owner:
    description:
      - The controller process that drives this run (the playbooks pass C(lifeboat_run_owner));
        a copy whose controller is provably gone stops itself within 5 seconds (nothing
        half-copied is ever published). See O(lifeboat.dr.mysql_backup#module:run_owner).
    type: dict
  progress_id:
    description:
      - Name of this run's status file C(<store>/progress/<progress_id>.json), which
        M(lifeboat.dr.run_progress), C(lifeboat jobs --running) and the health report read. It shows
        C(offsite check <set>) (hashing the local set), C(offsite copy <set>) or
        C(offsite fetch <set>) (bytes moved; over rsync only once rsync is done), the step.
    type: str
  progress_interval_s:
    description: Seconds between progress lines of the status file (written about every half of it); V(0) keeps none.
    type: float
    default: 15.0
  set_id:
    description: The set to copy; C(newest) is the newest published set of the source.
    type: str
    default: newest
  parent:
    description: Sub-folder of the store holding the set (binlog archives), else the store root.
    type: str
  key_file:
    description:
      - Key file (32 bytes, 0600) of the store; with C(mode=pull) the fetched manifest's
        authentication code is checked with it.
    type: path
  target_type:
    description: C(folder) (O(path), optionally on O(host) over SSH) or C(s3).
    type: str
    choices: [folder, s3]
    required: true
  path:
    description: Folder of the off-site store (absolute; on O(host) when given).
    type: str
  host:
    description: Host holding O(path), reached with ssh/rsync; omit for a folder on the managed host.
    type: str
  ssh_user:
    description: SSH user on O(host).
    type: str
    default: root
  ssh_key_file:
    description: Private key for O(host) (key authentication only; never a password).
    type: path
  ssh_port:
    description: SSH port of O(host).
    type: int
    default: 22
  ssh_options:
    description: Extra ssh C(-o) options, for example C(StrictHostKeyChecking=accept-new).
    type: list
    elements: str
    default: []
  bucket:
    description: S3 bucket.
    type: str
  prefix:
    description: Key prefix in the bucket; sets are stored under C(<prefix>/<set_id>/).
    type: str
    default: ""
  endpoint_url:
    description: S3 endpoint URL (for S3-compatible stores); omit for AWS.
    type: str
  region:
    description: S3 region.
    type: str
    default: us-east-1
  access_key:
    description: S3 access key id; omit to use boto3's usual credential chain.
    type: str
  secret_key:
    description: S3 secret key (prefer O(credentials_file)).
    type: str
  credentials_file:
    description: AWS-style shared credentials file (0600) with the S3 keys, instead of O(access_key)/O(secret_key).
    type: path
  profile:
    description: Profile of O(credentials_file) (default C(default)).
    type: str
  part_size_mb:
    description: Multipart part size in MiB (at least 5).
    type: int
    default: 8
  verify:
    description:
      - C(etag) compares each object's size and S3 ETag (computed locally with the same part
        size) after upload; C(download) also reads every object back and compares SHA-256.
    type: str
    choices: [etag, download]
    default: etag
  create_bucket:
    description: Create the bucket if it does not exist.
    type: bool
    default: false
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: Reports whether a copy would be made; copies nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: lifeboat.dr.store_info
'''

EXAMPLES = r'''
- name: Copy the newest set to the off-site host
  lifeboat.dr.offsite_copy:
    store: /var/backups/lifeboat
    target_type: folder
    host: backup2.example.org
    path: /srv/lifeboat-offsite
    ssh_key_file: /root/.ssh/lifeboat_offsite

- name: Copy a set to S3-compatible storage
  lifeboat.dr.offsite_copy:
    store: /var/backups/lifeboat
    set_id: full_20250129T020000Z_a1b2c3
    target_type: s3
    endpoint_url: https://s3.example.org
    bucket: lifeboat
    prefix: prod
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"

- name: The local store is gone - pull the newest set back (verified) before a restore
  lifeboat.dr.offsite_copy:
    mode: pull
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/backup.key
    target_type: folder
    path: /mnt/offsite/lifeboat
'''

RETURN = r'''
set_id:
  description: The set copied (or found already copied).
  returned: success
  type: str
  sample: full_20250129T020000Z_a1b2c3
already_present:
  description: The destination already held a verified copy.
  returned: success
  type: bool
  sample: false
verified:
  description: (push) The copy was verified against the manifest.
  returned: success and mode is push
  type: bool
  sample: true
files:
  description: Number of files copied, manifest included.
  returned: when a copy was made
  type: int
  sample: 31
bytes:
  description: Bytes of the set's files.
  returned: when a copy was made
  type: int
  sample: 609156
target:
  description: (push) Where the copy went (type, path/host or bucket/prefix/endpoint).
  returned: success and mode is push
  type: dict
  sample: {"type": "folder", "path": "/srv/lifeboat-offsite", "host": "backup2", "user": "root"}
path:
  description: (pull) The set's folder in the store.
  returned: success and mode is pull
  type: str
  sample: /var/backups/lifeboat/full_20250129T020000Z_a1b2c3
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.store import offsite
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress


def argument_spec():
    """The module's options."""
    return dict(
        mode=dict(type="str", choices=["push", "pull"], default="push"),
        store=dict(type="path", required=True),
        set_id=dict(type="str", default="newest"),
        parent=dict(type="str"),
        key_file=dict(type="path", no_log=False),
        target_type=dict(type="str", choices=list(offsite.TARGET_KINDS), required=True),
        path=dict(type="str"),
        host=dict(type="str"),
        ssh_user=dict(type="str", default="root"),
        ssh_key_file=dict(type="path", no_log=False),
        ssh_port=dict(type="int", default=22),
        ssh_options=dict(type="list", elements="str", default=[]),
        bucket=dict(type="str"),
        prefix=dict(type="str", default=""),
        endpoint_url=dict(type="str"),
        region=dict(type="str", default="us-east-1"),
        access_key=dict(type="str", no_log=False),
        secret_key=dict(type="str", no_log=True),
        credentials_file=dict(type="path"),
        profile=dict(type="str"),
        part_size_mb=dict(type="int", default=8),
        verify=dict(type="str", choices=["etag", "download"], default="etag"),
        create_bucket=dict(type="bool", default=False),
        run_owner=dict(type="dict"),
        progress_id=dict(type="str"),
        progress_interval_s=dict(type="float", default=15.0),
    )


def target_options(params, check_mode):
    """The target's constructor options from the module parameters."""
    if params["target_type"] == "folder":
        if not params["path"]:
            raise ConfigError("target_type=folder needs path", hint="give the off-site folder's absolute path")
        return dict(path=params["path"], host=params["host"], user=params["ssh_user"],
                    key_file=params["ssh_key_file"], port=params["ssh_port"], ssh_options=params["ssh_options"])
    if not params["bucket"]:
        raise ConfigError("target_type=s3 needs bucket")
    return dict(bucket=params["bucket"], prefix=params["prefix"], endpoint_url=params["endpoint_url"],
                region=params["region"], access_key=params["access_key"], secret_key=params["secret_key"],
                part_size=params["part_size_mb"] * 1024 * 1024, verify=params["verify"],
                credentials_file=params["credentials_file"], profile=params["profile"],
                create_bucket=params["create_bucket"] and params["mode"] == "push" and not check_mode)


def copy_set(module):
    """Push or pull one set; check mode decides before anything is written."""
    params = module.params
    target = offsite.make_target(params["target_type"], target_options(params, module.check_mode))
    if params["mode"] == "push":
        return offsite.push_set(params["store"], target, set_id=params["set_id"], parent=params["parent"],
                                check_mode=module.check_mode, progress=log_progress())
    keyring = None
    if params["key_file"]:
        from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys

        keyring = keys.KeyRing(keys.FileKEK.load(params["key_file"]))
    return offsite.fetch_set(target, params["store"], set_id=params["set_id"], parent=params["parent"],
                             keyring=keyring, check_mode=module.check_mode, progress=log_progress())


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="offsite",
                            progress_kind="copy")
    run_module(module, copy_set)


if __name__ == "__main__":
    main()
