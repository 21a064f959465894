"""The compose lab image's build inputs and the build's progress reports."""

from __future__ import annotations

import logging

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError
from lab.compose import images


def test_the_image_key_changes_with_every_build_input():
    inputs = {"recipe": 1, "suite": "bookworm", "packages": ["a"], "bao_sha256": "x", "pylibs": {"hvac": "2"}}
    keys = {images.image_key(inputs)}
    for name, other in (("recipe", 2), ("suite", "trixie"), ("packages", ["a", "b"]), ("bao_sha256", "y"),
                        ("pylibs", {"hvac": "3"})):
        keys.add(images.image_key(dict(inputs, **{name: other})))
    assert len(keys) == 6
    assert images.image_key(dict(inputs)) == images.image_key(inputs)


def test_mariadb_backup_is_built_from_the_same_packages_as_the_server():
    assert {"mariadb-server", "mariadb-backup", "redis-server"} <= set(images.PACKAGES)


def test_a_long_debootstrap_reports_progress_with_its_last_step(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    images.debootstrap(["sh", "-c", "echo I: Retrieving Packages; sleep 1.2; echo done"], tmp_path / "log",
                       {"PATH": "/usr/bin:/bin"}, report_every_s=0.4)
    progress = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert progress and "I: Retrieving Packages" in progress[0]


def test_a_failing_debootstrap_names_its_exit_code_and_last_lines(tmp_path):
    with pytest.raises(LifeboatError, match=r"debootstrap failed \(exit 3\)") as caught:
        images.debootstrap(["sh", "-c", "echo E: mirror unreachable; exit 3"], tmp_path / "log",
                           {"PATH": "/usr/bin:/bin"})
    assert "E: mirror unreachable" in str(caught.value)
