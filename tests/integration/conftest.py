"""Fixtures the integration tests share (defined once here; ``tests/conftest.py`` has ``lab_env``).

* ``admin`` / ``backup_user``: connection parameters of the lab's MariaDB as its admin and as the
  backup account (module-scoped: the lab is up for the whole session);
* ``keyring``: a key ring with one fresh key-encryption key, its key file at ``tmp_path / "kek.key"``
  (tests that hand the key file to a module or a child process use that path).
"""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from lab.params import lab_mysql_params


@pytest.fixture(scope="module")
def admin(lab_env):
    """The lab MariaDB as its admin account."""
    return lab_mysql_params(lab_env)


@pytest.fixture(scope="module")
def backup_user(lab_env):
    """The lab MariaDB as the backup account (the privileges a backup needs, no more)."""
    return lab_mysql_params(lab_env, backup_user=True)


@pytest.fixture
def keyring(tmp_path):
    """A key ring of one new 32-byte key file, ``tmp_path / "kek.key"`` (mode 0600)."""
    key_file = tmp_path / "kek.key"
    keys.create_key_file(key_file)
    return keys.KeyRing.from_options(key_file=key_file)
