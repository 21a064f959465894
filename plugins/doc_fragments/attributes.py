# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Doc fragment ``lifeboat.dr.attributes``: what the attributes every module documents mean.

Each module keeps its own ``support`` (and ``details``) per attribute; ansible-doc merges
them with the descriptions here.
"""


class ModuleDocFragment:
    """The descriptions of the ``check_mode``, ``diff_mode`` and ``idempotent`` attributes."""

    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description: When run twice in a row outside check mode with the same arguments, the second run reports no change.
'''
