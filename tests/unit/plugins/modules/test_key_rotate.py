"""Specification of the lifeboat.dr.key_rotate module, run as Ansible runs it (a process reading its args)."""

from __future__ import annotations

import hashlib

import pytest
from module_runner import run_module as run_lifeboat_module

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store


def run_module(tmp_path, check_mode=False, **args):
    """Run the module with ``args``; return its JSON result (``failed`` set on failure)."""
    return run_lifeboat_module(tmp_path, "key_rotate", args, check_mode=check_mode)


@pytest.fixture
def key_files(tmp_path):
    paths = {name: tmp_path / f"{name}.key" for name in ("old", "escrow", "new", "other")}
    for path in paths.values():
        keys.create_key_file(path)
    return {name: str(path) for name, path in paths.items()}


def ring(path, *escrow):
    return keys.KeyRing(keys.FileKEK.load(path), [keys.FileKEK.load(p) for p in escrow])


def publish(store, keyring, set_type, component):
    with store.begin_set(set_type, [component], keyring, lock=None) as writer:
        with writer.artifact(component, "data.bin") as out:
            out.write(b"lifeboat " * 200)
        return writer.publish(quick_verify=False)["id"]


@pytest.fixture
def store(tmp_path, key_files):
    st = Store(tmp_path / "store", reserve_bytes=0)
    old = ring(key_files["old"], key_files["escrow"])
    return st, [publish(st, old, "mysql", "mysql"), publish(st, old, "app", "app")]


def artifact_hashes(root):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("data.bin")}


def test_check_mode_then_rotation_then_no_change(tmp_path, store, key_files):
    st, set_ids = store
    args = dict(store=str(st.root), key_file=key_files["old"], escrow_key_file=key_files["escrow"],
                new_key_file=key_files["new"])
    before = artifact_hashes(st.root)
    preview = run_module(tmp_path, check_mode=True, **args)
    assert preview["changed"] is True and not preview.get("failed")
    assert sorted(e["set_id"] for e in preview["rotated"]) == sorted(set_ids)
    with pytest.raises(Exception):  # noqa: B017, PT011 - check mode changed nothing: the new key opens no set
        st.open_set(set_ids[0]).data_key(ring(key_files["new"]))
    result = run_module(tmp_path, **args)
    assert result["changed"] is True and not result.get("failed")
    assert {e["quick_verify"] for e in result["rotated"]} == {"passed"}
    assert result["new_key_id"] == keys.FileKEK.load(key_files["new"]).key_id
    assert artifact_hashes(st.root) == before
    for set_id in set_ids:
        assert st.open_set(set_id).quick_verify(ring(key_files["new"]))["ok"]
    again = run_module(tmp_path, **args)
    assert again["changed"] is False and len(again["already_rotated"]) == 2


def test_a_set_no_given_key_opens_fails_the_task_after_rotating_the_others(tmp_path, store, key_files):
    st, set_ids = store
    stranger = publish(st, ring(key_files["other"]), "redis", "redis")
    result = run_module(tmp_path, store=str(st.root), key_file=key_files["old"], new_key_file=key_files["new"])
    assert result.get("failed") is True and stranger in result["msg"] and "KeyUnavailable" in result["msg"]
    assert [e["set_id"] for e in result["failed_sets"]] == [stranger]
    assert sorted(e["set_id"] for e in result["rotated"]) == sorted(set_ids)


def test_a_new_key_is_required(tmp_path, store, key_files):
    st, _ids = store
    result = run_module(tmp_path, store=str(st.root), key_file=key_files["old"])
    assert result.get("failed") is True and "new_key_file" in result["msg"]
