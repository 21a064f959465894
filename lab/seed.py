"""Demo data (placeholder until the full seed lands)."""

from __future__ import annotations

from lab.layout import Layout

DEFAULT_ROWS = 2000


def demo_schema_exists(layout: Layout) -> bool:
    return True


def seed(layout: Layout, rows: int = DEFAULT_ROWS) -> None:
    return None
