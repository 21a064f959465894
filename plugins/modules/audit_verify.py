#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.audit_verify: check the audit trail's hash chain."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: audit_verify
short_description: Check that a Lifeboat store's audit trail was not edited, cut or reordered
version_added: 0.1.0
description:
  - Recomputes the hash chain of C(<store>/audit/audit.jsonl) and compares its end with
    C(audit/head.json). Names the first line of every edited, removed or moved record.
  - Read-only.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  store:
    description: Path of the backup store.
    type: path
    required: true
  fail_on_tamper:
    description: Fail the task when the chain is broken (else only report it).
    type: bool
    default: true
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  idempotent:
    support: full
'''

EXAMPLES = r'''
- name: Check the audit trail
  lifeboat.dr.audit_verify:
    store: /var/backups/lifeboat
'''

RETURN = r'''
ok:
  description: True when the chain is intact.
  returned: always
  type: bool
records:
  description: Number of records read.
  returned: always
  type: int
problems:
  description: Each problem with its 1-based C(line) and a C(problem) text.
  returned: always
  type: list
  elements: dict
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import IntegrityError


def verify_trail(module):
    """Verify; raise when tampered and fail_on_tamper."""
    report = audit.verify(module.params["store"])
    if not report["ok"] and module.params["fail_on_tamper"]:
        raise IntegrityError("audit trail tampered: " + "; ".join(
            f"line {p['line']}: {p['problem']}" for p in report["problems"]),
            hint="compare with a backup copy of the audit trail; investigate who changed it")
    return dict(changed=False, ok=report["ok"], records=report["records"], problems=report["problems"],
                path=report["path"])


def main():
    module = LifeboatModule(argument_spec=dict(store=dict(type="path", required=True),
                                               fail_on_tamper=dict(type="bool", default=True)),
                            supports_check_mode=True, component="audit_verify")
    run_module(module, verify_trail)


if __name__ == "__main__":
    main()
