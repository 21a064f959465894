"""Vault/OpenBao raft snapshots against the lab's real OpenBao (and scratch servers).

The lab's OpenBao is shared: the restore test snapshots right before it restores, so
the lab returns to (nearly) the state it had, and it checks the lab is left unsealed
with LAB_VAULT_TOKEN valid.
"""

from __future__ import annotations

import secrets

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault import engine as ve
from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault.conn import VaultOptions, connect
from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import (
    FileKEK,
    KeyRing,
    TransitKEK,
    create_key_file,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.runstatus import RunStatus
from ansible_collections.lifeboat.dr.plugins.module_utils.util import progress
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import Progress


@pytest.fixture()
def conn(lab_env):
    return connect(VaultOptions(url=lab_env["LAB_VAULT_ADDR"], token=lab_env["LAB_VAULT_TOKEN"]))


@pytest.fixture()
def keyring(tmp_path):
    create_key_file(tmp_path / "kek.key")
    return KeyRing(FileKEK.load(tmp_path / "kek.key"))


def write_secret(conn, path: str, data: dict) -> None:
    conn.client.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def test_snapshot_restore_brings_back_overwritten_and_deleted_secrets(lab_env, conn, keyring, tmp_path):
    tag = secrets.token_hex(4)
    write_secret(conn, f"lifeboat/test-{tag}/kept", {"v": "original"})
    write_secret(conn, f"lifeboat/test-{tag}/gone", {"v": "will be deleted"})
    store = tmp_path / "store"
    backup = ve.run_vault_backup(str(store), keyring, conn)
    assert backup["raft_index"] > 0 and backup["cluster_id"]
    assert Store(store).open_set(backup["set_id"]).artifact_record("vault", ve.SNAPSHOT_ARTIFACT)

    write_secret(conn, f"lifeboat/test-{tag}/kept", {"v": "overwritten"})
    conn.client.secrets.kv.v2.delete_metadata_and_all_versions(f"lifeboat/test-{tag}/gone", mount_point="secret")
    assert ve.read_kv2(conn, f"secret/lifeboat/test-{tag}/gone") is None

    reports: list[Progress] = []
    status = RunStatus(store, "vault-restore", kind="restore", component="vault", interval_s=1.0).open()
    steps: list[str] = []
    record_step = status.set_step
    status.set_step = lambda step: (steps.append(step), record_step(step))
    previous = progress.set_progress_sink(status)
    try:
        result = ve.run_vault_restore(str(store), keyring, conn, backup["set_id"],
                                      unseal_keys_file=lab_env["LAB_VAULT_UNSEAL_KEYS_FILE"],
                                      check_path="secret/lifeboat/canary",
                                      progress=lambda p: (reports.append(p), progress.log_progress()(p)))
    finally:
        progress.set_progress_sink(previous)
        status.close()
    # the run's progress: the artifact read, the live cluster kept aside, the snapshot sent; every step named
    finals = {p.operation: p for p in reports if p.final}
    assert finals["vault force-restore"].done_bytes == finals["vault force-restore"].total_bytes > 0
    assert finals["vault snapshot"].done_bytes > 0 and any(op.startswith("read vault/") for op in finals)
    assert [s.split(" ")[0] for s in steps] == ["decrypting", "checking", "keeping", "force-restoring", "waiting"]
    assert ve.read_kv2(conn, f"secret/lifeboat/test-{tag}/kept") == {"v": "original"}
    assert ve.read_kv2(conn, f"secret/lifeboat/test-{tag}/gone") == {"v": "will be deleted"}
    # the live state was kept aside as its own vault set, and it holds the overwritten value's time
    kept = Store(store).open_set(result["kept_aside_set_id"])
    assert kept.component_metadata("vault")["kept_aside_before"] == backup["set_id"]
    # the lab is left unsealed, active and its token valid
    assert result["token_valid"] and result["check_path_ok"]
    health = conn.health()
    assert not health["sealed"] and not health["standby"]
    conn.client.secrets.kv.v2.delete_metadata_and_all_versions(f"lifeboat/test-{tag}/kept", mount_point="secret")
    conn.client.secrets.kv.v2.delete_metadata_and_all_versions(f"lifeboat/test-{tag}/gone", mount_point="secret")


def test_restore_check_mode_changes_nothing(lab_env, conn, keyring, tmp_path):
    store = tmp_path / "store"
    backup = ve.run_vault_backup(str(store), keyring, conn)
    before = conn.raw("GET", "/v1/sys/leader", "leader", expect_json=True)["raft_committed_index"]
    result = ve.run_vault_restore(str(store), keyring, conn, "latest", check_mode=True)
    assert result["changed"] and result["snapshot"]["index"] == backup["raft_index"]
    assert len(Store(store).list_sets()) == 1  # nothing kept aside, nothing restored
    after = conn.raw("GET", "/v1/sys/leader", "leader", expect_json=True)["raft_committed_index"]
    assert after - before < 5


def test_full_verify_restores_into_a_scratch_server_and_reads_the_canary(lab_env, conn, keyring, tmp_path):
    store = tmp_path / "store"
    backup = ve.run_vault_backup(str(store), keyring, conn)
    canary = ve.read_kv2(conn, "secret/lifeboat/canary")
    report = ve.verify_vault_set(Store(store).open_set(backup["set_id"]), keyring, scratch=True,
                                 unseal_keys_file=lab_env["LAB_VAULT_UNSEAL_KEYS_FILE"],
                                 token=lab_env["LAB_VAULT_TOKEN"], check_path="secret/lifeboat/canary",
                                 expected=canary)
    assert report["ok"] and report["check_path_read"] and report["unsealed_with_escrowed_keys"]
    assert report["cluster_id_after"] == backup["cluster_id"]


def test_transit_kek_is_refused_before_anything_is_written(lab_env, conn, tmp_path):
    create_key_file(tmp_path / "kek.key")
    transit = TransitKEK(url=lab_env["LAB_VAULT_ADDR"], token=lab_env["LAB_VAULT_TOKEN"], key_name="lifeboat")
    ring = KeyRing(FileKEK.load(tmp_path / "kek.key"), [transit])
    with pytest.raises(ConfigError, match="transit") as err:
        ve.run_vault_backup(str(tmp_path / "store"), ring, conn)
    assert "key_file" in str(err.value)
    assert not (tmp_path / "store").exists() or not Store(tmp_path / "store").list_sets()


def test_non_raft_storage_is_refused_with_what_to_do(tmp_path):
    with ve.ScratchBao(storage="inmem") as bao:
        with pytest.raises(ConfigError, match="not integrated storage") as err:
            ve.require_raft(bao.conn)
    assert "migrate" in str(err.value)
