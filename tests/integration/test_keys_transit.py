"""Wrapping data keys with the lab's real OpenBao transit engine (key 'lifeboat')."""

from __future__ import annotations

import base64
import os

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import (
    FileKEK,
    KeyRing,
    TransitKEK,
    create_key_file,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    AuthenticationFailed,
    ConnectionFailure,
    KeyUnavailable,
    PermissionDenied,
    WrongKey,
)


@pytest.fixture()
def transit(lab_env):
    return TransitKEK(url=lab_env["LAB_VAULT_ADDR"], token=lab_env["LAB_VAULT_TOKEN"], mount="transit",
                      key_name="lifeboat")


def test_transit_wrap_round_trip_and_the_key_never_appears_in_the_wrap(transit):
    data_key = os.urandom(32)
    wrapped = transit.wrap(data_key)
    assert wrapped.startswith(b"vault:v")
    assert data_key not in wrapped and base64.b64encode(data_key) not in wrapped
    assert transit.unwrap(wrapped) == data_key
    assert transit.key_id == "transit:transit/lifeboat" and transit.kind == "transit"


def test_key_ring_with_transit_primary_and_file_escrow(transit, tmp_path):
    create_key_file(tmp_path / "escrow.key")
    escrow = FileKEK.load(tmp_path / "escrow.key")
    ring = KeyRing(transit, [escrow])
    assert ring.has_transit
    data_key, wraps = ring.new_data_key()
    assert [w["kind"] for w in wraps] == ["transit", "file"]
    assert KeyRing(transit).unwrap(wraps) == data_key
    assert KeyRing(escrow).unwrap(wraps) == data_key  # break-glass without Vault


def test_from_options_builds_a_transit_ring(lab_env):
    ring = KeyRing.from_options(transit={"url": lab_env["LAB_VAULT_ADDR"], "token": lab_env["LAB_VAULT_TOKEN"],
                                         "key_name": "lifeboat"})
    data_key, wraps = ring.new_data_key()
    assert ring.unwrap(wraps) == data_key


def test_altered_transit_wrap_is_wrong_key(transit):
    wrapped = transit.wrap(os.urandom(32)).decode()
    prefix, body = wrapped.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(WrongKey, match="could not decrypt"):
        transit.unwrap(f"{prefix}:{base64.b64encode(bytes(raw)).decode()}".encode())


def test_bad_token_is_authentication_failed(lab_env):
    kek = TransitKEK(url=lab_env["LAB_VAULT_ADDR"], token="s.not-a-token", key_name="lifeboat")
    with pytest.raises(AuthenticationFailed):
        kek.wrap(os.urandom(32))


def test_transit_key_outside_the_tokens_policy_is_permission_denied_naming_the_grant(lab_env):
    kek = TransitKEK(url=lab_env["LAB_VAULT_ADDR"], token=lab_env["LAB_VAULT_TOKEN"], key_name="no-such-key")
    with pytest.raises((PermissionDenied, KeyUnavailable), match="no-such-key"):
        kek.wrap(os.urandom(32))


def test_unreachable_vault_is_a_retryable_connection_failure():
    kek = TransitKEK(url="http://127.0.0.1:9", token="t", key_name="lifeboat", timeout=2)
    with pytest.raises(ConnectionFailure) as info:
        kek.wrap(os.urandom(32))
    assert info.value.retryable
