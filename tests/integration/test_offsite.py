"""Off-site copies: a second copy of each set, verified by manifest hashes; restore can pull it back.

Targets: a folder on this host, a folder on another host over SSH/rsync (the multi-host
lab's ``offsite`` namespace, when it runs), and a REAL S3-compatible server (OpenStack
Swift + s3api, started once per session by ``swift_server.swift_s3``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import swift_server

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store import offsite, runstatus
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import MANIFEST_NAME, load_manifest
from ansible_collections.lifeboat.dr.plugins.module_utils.util import progress
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import NotFound, TamperedData, VerificationFailed
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import Progress

PART = 5 * 1024 * 1024
BIG = os.urandom(PART * 2 + 12345)  # stored > 2 parts: a 3-part multipart upload


@pytest.fixture(scope="session")
def swift_s3(tmp_path_factory):
    """A real Swift + s3api on 127.0.0.1, started once per session."""
    yield from swift_server.running_swift(tmp_path_factory)


def publish_set(store: Store, keyring: keys.KeyRing, big: bytes = b"") -> str:
    """A published full set: an (incompressible) app artifact, a mysql artifact and a JSON file."""
    with store.begin_set("full", ["mysql", "app"], keyring) as writer:
        with writer.artifact("mysql", "dump.sql") as out:
            out.write(b"INSERT INTO t VALUES (1);\n" * 2000)
        with writer.artifact("app", "storage.tar") as out:
            out.write(big or os.urandom(70_000))
        writer.write_json("mysql", "binlog_position.json", {"file": "mysql-bin.000001", "position": 4})
        return writer.publish()["id"]


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", reserve_bytes=0)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- folder


def test_folder_copy_is_verified_idempotent_and_restorable(tmp_path, store, keyring):
    set_id = publish_set(store, keyring)
    target = offsite.FolderTarget(tmp_path / "offsite")

    first = offsite.push_set(store.root, target)
    assert first["changed"] and first["verified"] and first["set_id"] == set_id
    assert target.list_sets() == [set_id]
    copy = tmp_path / "offsite" / set_id
    assert not offsite.check_files(copy, load_manifest(copy))
    assert (copy / MANIFEST_NAME).read_bytes() == (store.root / set_id / MANIFEST_NAME).read_bytes()
    assert not (tmp_path / "offsite" / offsite.INCOMING_DIR).exists() or \
        not any((tmp_path / "offsite" / offsite.INCOMING_DIR).iterdir())
    assert offsite.push_set(store.root, target, set_id=set_id)["changed"] is False

    # the local store is lost: pull the newest set back, verified, and it decrypts
    shutil.rmtree(store.root)
    fetched = offsite.fetch_set(target, store.root, keyring=keyring)
    assert fetched["changed"] and fetched["set_id"] == set_id
    restored = Store(store.root).open_set(set_id)
    assert restored.quick_verify(keyring)["ok"]
    assert offsite.fetch_set(target, store.root, set_id)["changed"] is False


def test_damaged_copies_are_refused_or_repaired(tmp_path, store, keyring):
    set_id = publish_set(store, keyring)
    target = offsite.FolderTarget(tmp_path / "offsite")
    offsite.push_set(store.root, target)
    artifact = next((tmp_path / "offsite" / set_id / "app").iterdir())

    # a damaged off-site copy is never fetched into a store
    flip_byte(artifact)
    with pytest.raises(VerificationFailed, match="does not match its manifest"):
        offsite.fetch_set(target, tmp_path / "other-store", set_id)
    assert not (tmp_path / "other-store" / set_id).exists()
    # ...and the next push notices and replaces it
    again = offsite.push_set(store.root, target, set_id)
    assert again["changed"] and again["verified"]
    assert offsite.fetch_set(target, tmp_path / "other-store", set_id)["changed"]

    # a damaged LOCAL set is never pushed
    flip_byte(next((store.root / set_id / "app").iterdir()))
    with pytest.raises(VerificationFailed):
        offsite.push_set(store.root, offsite.FolderTarget(tmp_path / "offsite2"), set_id)
    assert offsite.FolderTarget(tmp_path / "offsite2").list_sets() == []


def test_edited_manifest_fails_authentication_on_fetch(tmp_path, store, keyring):
    set_id = publish_set(store, keyring)
    target = offsite.FolderTarget(tmp_path / "offsite")
    offsite.push_set(store.root, target)
    manifest_file = tmp_path / "offsite" / set_id / MANIFEST_NAME
    manifest_file.write_text(manifest_file.read_text().replace('"owner": ', '"owner": "x", "was": ', 1))
    with pytest.raises(TamperedData):
        offsite.fetch_set(target, tmp_path / "other-store", set_id, keyring=keyring)
    assert not (tmp_path / "other-store" / set_id).exists()


def modes_of_tree(top: Path) -> dict[str, str]:
    """``{relative path: octal mode}`` of ``top`` itself and every folder below it."""
    folders = [top] + [p for p in top.rglob("*") if p.is_dir()]
    return {str(p.relative_to(top)): oct(p.stat().st_mode & 0o777) for p in folders}


def test_folder_copy_creates_its_root_and_every_folder_0700_like_the_main_store(tmp_path, store, keyring):
    set_id = publish_set(store, keyring)
    root = tmp_path / "offsite" / "nested" / "root"  # none of these exist yet
    old_umask = os.umask(0o022)  # the usual umask: a plain mkdir would give 0755
    try:
        offsite.push_set(store.root, offsite.FolderTarget(root))
        fetched = offsite.fetch_set(offsite.FolderTarget(root), tmp_path / "new-store" / "lifeboat", set_id)
    finally:
        os.umask(old_umask)
    assert (root / set_id / MANIFEST_NAME).is_file() and fetched["changed"]
    for top in (tmp_path / "offsite", tmp_path / "new-store"):
        modes = modes_of_tree(top)
        assert set(modes.values()) == {"0o700"}, modes
    assert {"nested", "nested/root", f"nested/root/{offsite.INCOMING_DIR}", f"nested/root/{set_id}"} <= \
        set(modes_of_tree(tmp_path / "offsite"))


def test_missing_sets_are_named(tmp_path, store, keyring):
    target = offsite.FolderTarget(tmp_path / "offsite")
    with pytest.raises(NotFound, match="no published backup set"):
        offsite.push_set(store.root if store.root.exists() else tmp_path, target)
    with pytest.raises(NotFound, match="no backup set in the off-site copy"):
        offsite.fetch_set(target, store.root)


# --------------------------------------------------------------------------- S3 (Swift)


def s3_target(server, bucket: str, verify: str = "etag") -> offsite.S3Target:
    return offsite.S3Target(bucket=bucket, prefix="lifeboat/lab", endpoint_url=server.endpoint,
                            access_key=server.access_key, secret_key=server.secret_key, part_size=PART,
                            verify=verify, create_bucket=True)


def test_s3_multipart_copy_verified_and_fetched_back(tmp_path, store, keyring, swift_s3):
    set_id = publish_set(store, keyring, big=BIG)
    target = s3_target(swift_s3, "lifeboat-offsite")

    pushed = offsite.push_set(store.root, target)
    assert pushed["changed"] and pushed["verified"] and pushed["bytes"] > 2 * PART
    assert target.list_sets() == [set_id]
    # the big artifact really went up in parts (S3 multipart ETag "<md5>-3")
    big = next(a for a in load_manifest(store.root / set_id)["artifacts"] if a["component"] == "app")
    head = target.client.head_object(Bucket="lifeboat-offsite", Key=f"lifeboat/lab/{set_id}/{big['path']}")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["Metadata"]["sha256"] == big["stored_sha256"]
    assert offsite.push_set(store.root, target)["changed"] is False

    shutil.rmtree(store.root)
    fetched = offsite.fetch_set(s3_target(swift_s3, "lifeboat-offsite", verify="download"), store.root,
                                keyring=keyring)
    assert fetched["set_id"] == set_id
    assert Store(store.root).open_set(set_id).quick_verify(keyring)["ok"]


def test_s3_damaged_object_is_detected_and_replaced(tmp_path, store, keyring, swift_s3):
    set_id = publish_set(store, keyring)
    target = s3_target(swift_s3, "lifeboat-damage", verify="download")
    offsite.push_set(store.root, target)
    manifest = load_manifest(store.root / set_id)
    key = f"lifeboat/lab/{set_id}/{manifest['artifacts'][0]['path']}"
    target.client.put_object(Bucket="lifeboat-damage", Key=key, Body=b"not the artifact")

    with pytest.raises(VerificationFailed):
        offsite.fetch_set(target, tmp_path / "other-store", set_id)
    assert not (tmp_path / "other-store" / set_id).exists()
    repaired = offsite.push_set(store.root, target, set_id)
    assert repaired["changed"] and repaired["verified"]
    assert offsite.fetch_set(target, tmp_path / "other-store", set_id)["changed"]


# --------------------------------------------------------------------------- progress


class Reports:
    """A progress callback keeping every report, and a run status file as the progress sink
    (what a module's run writes for ``run_progress`` and ``lifeboat jobs --running``)."""

    def __init__(self, store_root: Path) -> None:
        self.seen: list[Progress] = []
        self.status = runstatus.RunStatus(store_root, "offsite", kind="copy", component="offsite",
                                          interval_s=1.0).open()
        self.steps: list[str] = []
        record_step = self.status.set_step
        self.status.set_step = lambda step: (self.steps.append(step), record_step(step))

    def __call__(self, p: Progress) -> None:
        self.seen.append(p)
        self.status.report(p)

    def of(self, prefix: str) -> list[Progress]:
        return [p for p in self.seen if p.operation.startswith(prefix)]


def assert_counts_up_to(reports: list[Progress], total: int) -> None:
    done = [p.done_bytes for p in reports]
    assert done == sorted(done) and reports[-1].final and done[-1] == total, done


def test_folder_push_and_fetch_report_progress_to_the_run_status_file(tmp_path, store, keyring):
    set_id = publish_set(store, keyring, big=BIG)
    listed = sum(f.size for f in offsite.listed_files(load_manifest(store.root / set_id)))
    sent = listed + (store.root / set_id / MANIFEST_NAME).stat().st_size  # the manifest comes along
    reports = Reports(store.root)
    previous = progress.set_progress_sink(reports.status)
    try:
        offsite.push_set(store.root, offsite.FolderTarget(tmp_path / "offsite"), progress=reports)
        assert_counts_up_to(reports.of(f"offsite check {set_id}"), listed)
        copy = reports.of(f"offsite copy {set_id}")
        assert len(copy) >= 2 and copy[0].total_bytes == sent  # 1 MiB blocks: reports while it copies
        assert_counts_up_to(copy, sent)
        assert any(s.startswith(f"copying {set_id} to the folder target") for s in reports.steps)
        time.sleep(0.5)
        reports.status.flush()  # the last write due (writes are throttled to half the 1 s interval)
        data = json.loads(reports.status.path.read_text())
        assert data["operations"][f"offsite copy {set_id}"]["done_bytes"] == sent and data["step"]

        other = tmp_path / "other-store"
        reports.seen.clear()
        offsite.fetch_set(offsite.FolderTarget(tmp_path / "offsite"), other, set_id, progress=reports)
        assert_counts_up_to(reports.of(f"offsite fetch {set_id}"), sent)
        assert_counts_up_to(reports.of(f"offsite check {set_id}"), listed)
    finally:
        progress.set_progress_sink(previous)
        reports.status.close()


def test_s3_push_reports_the_bytes_sent_from_boto3s_threads(tmp_path, store, keyring, swift_s3):
    set_id = publish_set(store, keyring, big=BIG)
    listed = sum(f.size for f in offsite.listed_files(load_manifest(store.root / set_id)))
    sent = listed + (store.root / set_id / MANIFEST_NAME).stat().st_size
    reports = Reports(store.root)
    try:
        offsite.push_set(store.root, s3_target(swift_s3, "lifeboat-progress"), progress=reports)
        assert_counts_up_to(reports.of(f"offsite copy {set_id}"), sent)
        assert_counts_up_to(reports.of(f"offsite check {set_id}"), listed)
    finally:
        reports.status.close()
