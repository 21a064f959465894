"""Specification of the lifeboat.dr.store_info module, run as Ansible runs it (a process reading its args)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from module_runner import run_module as run_lifeboat_module

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import new_set_id


def run_store_info(tmp_path, **args):
    """Run the module with ``args``; return its JSON result (``failed`` set on failure)."""
    return run_lifeboat_module(tmp_path, "store_info", args, timeout=60)


@pytest.fixture
def keyring(tmp_path):
    key_file = tmp_path / "kek"
    keys.create_key_file(key_file)
    return keys.KeyRing(keys.FileKEK.load(key_file))


def publish_set(store, keyring, set_type, component, when, quick_verify=True):
    set_id = new_set_id(set_type, when)
    with store.begin_set(set_type, [component], keyring, set_id=set_id) as writer:
        with writer.artifact(component, "data.bin") as out:
            out.write(b"lifeboat " * 100)
        writer.publish(quick_verify=quick_verify)
    return set_id


@pytest.fixture
def store(tmp_path, keyring):
    """A store with an older verified mysql set and a newer unverified redis set."""
    root = tmp_path / "store"
    st = Store(root)
    now = datetime.now(UTC).replace(microsecond=0)
    older = publish_set(st, keyring, "mysql", "mysql", now - timedelta(hours=2))
    newer = publish_set(st, keyring, "redis", "redis", now - timedelta(hours=1), quick_verify=False)
    return st, older, newer


def test_lists_sets_oldest_first_with_type_status_size_and_age(tmp_path, store):
    st, older, newer = store
    result = run_store_info(tmp_path, store=str(st.root))
    assert result["changed"] is False and not result.get("failed")
    assert [s["set_id"] for s in result["sets"]] == [older, newer]
    assert result["count"] == 2
    first, second = result["sets"]
    assert (first["type"], first["components"], first["status"]) == ("mysql", ["mysql"], "verified")
    assert (second["type"], second["status"]) == ("redis", "complete")
    assert first["stored_bytes"] > 0 and first["plaintext_bytes"] == 900
    assert first["age_s"] > second["age_s"] >= 0
    assert first["path"] == str(st.root / older)


def test_a_failed_verification_shows_as_failed(tmp_path, store):
    st, older, _newer = store
    st.record_verification(older, {"ok": False, "mode": "full", "summary": "mysql/data.bin tampered"})
    result = run_store_info(tmp_path, store=str(st.root))
    assert result["sets"][0]["status"] == "failed"


def test_set_type_filter(tmp_path, store):
    st, _older, newer = store
    result = run_store_info(tmp_path, store=str(st.root), set_type=["redis"])
    assert [s["set_id"] for s in result["sets"]] == [newer]


def test_partial_sets_are_listed_only_on_request(tmp_path, store, keyring):
    st, _older, _newer = store
    with st.begin_set("app", ["app"], keyring) as writer:
        assert [s["status"] for s in run_store_info(tmp_path, store=str(st.root))["sets"]] == ["verified", "complete"]
        listed = run_store_info(tmp_path, store=str(st.root), include_partial=True)["sets"]
        partial = [s for s in listed if s["status"] == "partial"]
        assert [s["set_id"] for s in partial] == [writer.set_id]
        writer.abort()


def test_check_mode_gives_the_same_answer(tmp_path, store):
    st, older, newer = store
    result = run_store_info(tmp_path, store=str(st.root), _ansible_check_mode=True)
    assert result["changed"] is False
    assert [s["set_id"] for s in result["sets"]] == [older, newer]


def test_an_empty_store_lists_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_store_info(tmp_path, store=str(tmp_path / "empty"))
    assert result["sets"] == [] and result["count"] == 0


def test_a_missing_store_fails_naming_the_path(tmp_path):
    result = run_store_info(tmp_path, store=str(tmp_path / "nowhere"))
    assert result["failed"] is True
    assert "nowhere does not exist" in result["msg"]
    assert result["error_type"] == "NotFound"
