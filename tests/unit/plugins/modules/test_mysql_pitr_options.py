"""Specification of lifeboat.dr.mysql_pitr's option rules (argument spec: mutually_exclusive, required_if).

Run as Ansible runs the module. A combination the argument spec refuses is refused before the module
runs at all (not even the store folder is made); each message names the options that fix it.
"""

from __future__ import annotations

import pytest
from module_runner import run_module

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys

TARGET_NAMES = "target_time, target_position, target_gtid, before, latest"


@pytest.fixture
def base(tmp_path):
    """Options every case shares: a store folder that does not exist (nothing may be read) and a real key file."""
    key_file = tmp_path / "kek.key"
    keys.create_key_file(key_file)
    return {"store": str(tmp_path / "no-store"), "key_file": str(key_file)}


def refused(tmp_path, args, by_the_spec=True):
    result = run_module(tmp_path, "mysql_pitr", args, timeout=60)
    assert result.get("failed"), result
    if by_the_spec:
        assert not (tmp_path / "no-store").exists(), "a combination the spec refuses must not reach the module"
    return result["msg"]


def test_plan_and_execute_need_a_target_and_name_all_five(tmp_path, base):
    for mode in ("plan", "execute"):
        msg = refused(tmp_path, dict(base, mode=mode))
        assert f"mode is {mode} but any of the following are missing: {TARGET_NAMES}" in msg


def test_two_targets_are_refused_naming_the_exclusive_set(tmp_path, base):
    msg = refused(tmp_path, dict(base, mode="plan", target_time="2025-01-01T00:00:00Z", latest=True))
    assert f"parameters are mutually exclusive: {TARGET_NAMES.replace(', ', '|')}" in msg


def test_latest_false_beside_another_target_counts_as_a_second_target(tmp_path, base):
    msg = refused(tmp_path, dict(base, mode="plan", target_gtid="0-1-5", latest=False))
    assert "mutually exclusive" in msg and "latest" in msg


def test_latest_false_alone_names_no_target_and_says_what_to_give(tmp_path, base):
    msg = refused(tmp_path, dict(base, mode="plan", latest=False), by_the_spec=False)  # a value, not a combination
    assert "no recovery target: the one given is empty or latest: false" in msg
    assert "give latest: true or one of target_time, target_position, target_gtid, before" in msg


def test_find_needs_a_pattern_or_before(tmp_path, base):
    msg = refused(tmp_path, dict(base, mode="find"))
    assert "mode is find but any of the following are missing: pattern, before" in msg


@pytest.mark.parametrize("mode", ["find", "plan", "execute"])
def test_every_mode_reading_binlogs_needs_a_key(tmp_path, base, mode):
    msg = refused(tmp_path, {"store": base["store"], "mode": mode, "latest": True, "pattern": "x"})
    assert f"mode is {mode} but any of the following are missing: key_file, transit_url" in msg


def test_analyze_needs_no_key_and_no_target(tmp_path, base):
    """The spec lets analyze through without key or target: what stops it in an empty store is the module's
    own finding (no archived server to analyze), not a missing option."""
    result = run_module(tmp_path, "mysql_pitr", {"store": str(tmp_path / "empty-store"), "mode": "analyze"},
                        timeout=60)
    assert result["error_type"] == "ConfigError" and "missing" not in result["msg"]
    assert "archives binlogs of 0 servers" in result["msg"]


def test_reinit_datadir_names_the_settings_it_lacks(tmp_path, base):
    msg = refused(tmp_path, dict(base, mode="execute", latest=True, restore_mode="reinit_datadir",
                                 service_manager="lab"))
    assert "restore_mode is reinit_datadir but all of the following are missing: datadir, root_socket" in msg
