# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Doc fragment ``lifeboat.dr.set_member``: the ``set_id`` option of the component backup modules."""


class ModuleDocFragment:
    """Documents writing one component into an open multi-component set."""

    DOCUMENTATION = r'''
options:
  set_id:
    description:
      - Write the component into this open multi-component set (opened by M(lifeboat.dr.backup_set))
        instead of creating and publishing a set of its own; M(lifeboat.dr.backup_set) publishes it.
      - Connection-level failures are retried (3 attempts, exponential backoff); the component's
        earlier files are discarded first.
    type: str
'''
