#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.volume_keep: move a Compose volume's content into a new labelled volume."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: volume_keep
short_description: Keep a Compose volume's content aside in a new volume before a service starts on empty data
version_added: 0.1.0
description:
  - Finds the volume whose folder on this host is O(path) through the Docker API, creates a new
    volume C(<volume>-lifeboat-kept-<UTC time>) labelled C(lifeboat.kept-from=<volume>) and
    C(lifeboat.kept-at=<time>), and moves every entry of the old volume into it (renames on the
    same file system, whatever the size). The original volume stays, empty, under its own name,
    so Compose keeps using it.
  - Used by the recovery playbooks where the process lab moves a broken datadir aside (a fresh
    MariaDB server on a Compose deployment). Nothing is deleted; the kept volume is yours to
    inspect and remove (C(docker volume rm)).
  - Stop the service first. An empty volume is left alone (C(changed=false), no new volume).
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  path:
    description:
      - The volume's folder on this host (e.g. the MariaDB datadir of a Compose service, as
        C(lifeboat_mysql_datadir) of a compose inventory names it).
    type: path
    required: true
  docker_host:
    description:
      - The Docker API (C(unix://...), C(ssh://...)); default C(DOCKER_HOST).
    type: str
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: Finds the volume and says what would be moved; creates and moves nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: A second run finds the volume empty and changes nothing.
seealso:
  - module: lifeboat.dr.service
'''

EXAMPLES = r'''
- name: Keep the broken MariaDB datadir aside (the service is stopped)
  lifeboat.dr.volume_keep:
    path: "{{ lifeboat_mysql_datadir }}"
    docker_host: "{{ lifeboat_docker_host }}"
  register: kept
'''

RETURN = r'''
volume:
  description: The volume whose content was kept aside.
  returned: always
  type: str
  sample: shop_mysql-data
kept_volume:
  description: The new volume now holding the old content (none when there was nothing to keep).
  returned: always
  type: str
  sample: shop_mysql-data-lifeboat-kept-20261204T141500Z
kept_path:
  description: The kept volume's folder on this host (none when there was nothing to keep).
  returned: always
  type: str
entries:
  description: How many top-level entries were moved (in check mode, would be).
  returned: always
  type: int
  sample: 12
'''

import os

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.util.compose_volumes import (
    client_for,
    keep_volume_content,
    volume_at,
)


def argument_spec():
    """The module's options (no shared layer applies)."""
    return dict(path=dict(type="path", required=True), docker_host=dict(type="str"))


def keep(module):
    """Move the volume's content aside (check mode: only say what would move)."""
    params = module.params
    client = client_for(params["docker_host"])
    if module.check_mode:
        volume = volume_at(client, params["path"])
        entries = len(os.listdir(volume.attrs["Mountpoint"]))
        return dict(changed=entries > 0, volume=volume.name, kept_volume=None, kept_path=None, entries=entries)
    kept = keep_volume_content(client, params["path"])
    if kept is None:
        return dict(changed=False, volume=volume_at(client, params["path"]).name, kept_volume=None, kept_path=None,
                    entries=0)
    return dict(changed=True, volume=kept.volume, kept_volume=kept.kept_volume, kept_path=kept.kept_path,
                entries=kept.entries)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="volume")
    run_module(module, keep)


if __name__ == "__main__":
    main()
