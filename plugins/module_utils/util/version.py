# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Lifeboat release version, written into every backup manifest (``tool.version``).

Keep it equal to ``version`` in ``galaxy.yml`` (a unit test checks this).
"""

from __future__ import annotations

__version__ = "0.1.0"
TOOL_NAME = "lifeboat"
