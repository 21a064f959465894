"""The test tree itself: pytest's default import mode needs unique test-file basenames."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_test_file_has_a_unique_basename():
    names = Counter(path.name for root in ("tests", "dr_tests") for path in (REPO / root).rglob("test_*.py"))
    duplicates = sorted(name for name, count in names.items() if count > 1)
    assert duplicates == [], f"rename these test files (pytest refuses same-named test modules): {duplicates}"
