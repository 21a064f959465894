"""What a drill compares: an unreadable component is never "equal"; a backup's capture point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dr_tests.measure import backup_points, fingerprint_differences, unreadable_components  # noqa: E402

GOOD = {"mysql": {"demo.items": "123"}, "vault": {"secret/lifeboat/canary": "abc"}}


def test_equal_fingerprints_have_no_difference():
    assert fingerprint_differences(GOOD, json.loads(json.dumps(GOOD))) == []


def test_the_same_error_before_and_after_is_a_difference_not_equal():
    broken = {**GOOD, "vault": {"error": "ConnectionError: refused"}}
    differences = fingerprint_differences(broken, broken)
    assert differences == ["vault could not be read (before: ConnectionError: refused; after: ConnectionError: "
                           "refused): not checked, not equal"]


@pytest.mark.parametrize("side", ["before", "after"])
def test_an_error_on_one_side_is_a_difference(side):
    broken = {**GOOD, "mysql": {"error": "OperationalError: gone"}}
    before, after = (broken, GOOD) if side == "before" else (GOOD, broken)
    differences = fingerprint_differences(before, after)
    assert len(differences) == 1 and differences[0].startswith("mysql could not be read")
    assert f"{side}: OperationalError: gone" in differences[0]


def test_unreadable_components_names_each_error():
    prints = {**GOOD, "redis": {"error": "TimeoutError: x"}}
    assert unreadable_components(prints) == ["redis: TimeoutError: x"]
    assert unreadable_components(GOOD) == []


def manifest(folder: Path, set_id: str, capture: dict[str, str | None]) -> None:
    (folder / set_id).mkdir(parents=True)
    metadata = {c: ({"lifeboat_capture": {"started": "x", "finished": f}} if f else {}) for c, f in capture.items()}
    (folder / set_id / "backup_manifest.json").write_text(json.dumps({
        "id": set_id, "components": list(capture), "start_time": "2026-01-01T00:00:00.000000Z",
        "end_time": "2026-01-01T00:01:00.000000Z", "component_metadata": metadata}))


def test_backup_point_is_each_components_capture_end_else_the_set_end(tmp_path):
    set_id = "full_20260101T000000Z_abcdef"
    manifest(tmp_path, set_id, {"mysql": "2026-01-01T00:00:10.500000Z", "redis": None})
    points, source = backup_points(tmp_path, set_id)
    assert points == {"mysql": 1767225610.5, "redis": 1767225660.0}
    assert "capture end" in source


def test_without_a_manifest_the_time_in_the_set_id_is_used_and_said(tmp_path):
    points, source = backup_points(tmp_path, "redis_20260101T000005Z_abcdef")
    assert set(points.values()) == {1767225605.0}
    assert "manifest unreadable" in source


def test_an_id_without_time_and_no_manifest_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="--backup-path"):
        backup_points(tmp_path, "not-a-set")
