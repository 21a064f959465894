# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lookup lifeboat.dr.run_owner: the identity of the ansible-playbook process running this play."""

from __future__ import annotations

DOCUMENTATION = r'''
name: run_owner
author:
  - Lifeboat contributors (!UNKNOWN)
version_added: 0.1.0
short_description: Identity of the controller process (ansible-playbook) that runs the play
description:
  - Returns the identity of the C(ansible-playbook) process on the controller, for the
    O(lifeboat.dr.backup_set#module:run_owner) option; the playbooks compute it once per play
    as C(lifeboat_run_owner).
  - Lookups run in a forked worker of C(ansible-playbook) (or in it directly). Workers are
    forked without exec, so they share its command line; the controller is the topmost
    process of the parent chain whose command line is the same as this process's.
  - A module cannot find this itself - it may run on another host, and its own parent is a
    worker or a shell, never the controller.
options: {}
notes:
  - Linux controllers only (reads C(/proc)).
'''

EXAMPLES = r'''
- name: Compute the run owner once
  ansible.builtin.set_fact:
    lifeboat_run_owner: "{{ lookup('lifeboat.dr.run_owner') }}"
  run_once: true
'''

RETURN = r'''
_raw:
  description:
    - One dict with C(host) (host name), C(pid) (of the ansible-playbook process), C(start_ticks)
      (its start time in clock ticks since boot, field 22 of C(/proc/<pid>/stat)), C(boot_id)
      and C(pid_ns) (its pid namespace).
  type: list
  elements: dict
'''

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.lifeboat.dr.plugins.module_utils.store.locks import controller_pid, process_identity
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError


class LookupModule(LookupBase):
    """``lookup('lifeboat.dr.run_owner')`` -> the controller's identity dict."""

    def run(self, terms, variables=None, **kwargs):
        try:
            return [process_identity(controller_pid(os.getpid()))]
        except LifeboatError as err:
            raise AnsibleLookupError(f"lifeboat.dr.run_owner: {err}") from err
