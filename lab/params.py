"""Connection settings of the lab's services for tests and benchmarks (lab knowledge stays out of the collection)."""

from __future__ import annotations

from typing import Mapping

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.conn import ConnParams


def lab_mysql_params(env: Mapping[str, str], backup_user: bool = False) -> ConnParams:
    """MySQL connection settings from the ``LAB_MYSQL_*`` values of ``lab.env()`` (admin, or the backup user)."""
    prefix = "LAB_MYSQL_BACKUP_" if backup_user else "LAB_MYSQL_"
    return ConnParams(host=env["LAB_MYSQL_HOST"], port=int(env["LAB_MYSQL_PORT"]),
                      user=env[prefix + "USER"], password=env[prefix + "PASSWORD"])
