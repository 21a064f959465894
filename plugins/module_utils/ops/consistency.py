# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cross-component consistency of one backup set.

Two parts:

* :func:`capture_spread` -- when each component was captured (the windows recorded by
  :func:`orchestrate.write_component`) and the spread between them: components are
  captured one after another or in parallel, never at one instant, so a row may
  name a file written after the files were captured. The spread says how wide that
  window was.
* Per-application *reference checks*: functions registered under a name with
  :func:`reference_check` that read the set (never the live system) and check that
  references between components hold, e.g. every file a database row names is in the
  files backup. :func:`run_reference_checks` runs the named ones. A check returns
  ``{"ok": bool, "checked": int, "problems": [str]}``; it may raise
  :class:`errors.LifeboatError` (reported as a failed check).

Built in: ``demo_app_files`` -- every ``demo.files`` row's ``path`` (relative to the
``storage`` folder) is in the app files backup, with the same SHA-256.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.ops.orchestrate import capture_windows
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import parse_time
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, FormatError, LifeboatError

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet

CheckFn = Callable[[Any, Any, dict[str, Any]], dict[str, Any]]
_REGISTRY: dict[str, tuple[tuple[str, ...], CheckFn]] = {}


def reference_check(name: str, needs: tuple[str, ...]) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn(backup_set, keyring, options) -> {ok, checked, problems}`` under ``name``;
    ``needs``: the components the set must hold for the check to apply."""
    def register(fn: CheckFn) -> CheckFn:
        _REGISTRY[name] = (needs, fn)
        return fn
    return register


def registered_checks() -> list[str]:
    """Names of the registered reference checks."""
    return sorted(_REGISTRY)


def capture_spread(backup_set: BackupSet) -> dict[str, Any]:
    """``{windows: {component: {started, finished}}, spread_s, start_spread_s}``.

    ``spread_s``: seconds from the earliest start to the latest finish of any component
    (an upper bound on how far apart two captured states can be); ``start_spread_s``:
    between the earliest and latest start. ``None`` with fewer than one window.
    """
    windows = capture_windows(backup_set)
    if not windows:
        return {"windows": {}, "spread_s": None, "start_spread_s": None}
    starts = [parse_time(w["started"]) for w in windows.values()]
    ends = [parse_time(w["finished"]) for w in windows.values()]
    return {"windows": windows, "spread_s": round((max(ends) - min(starts)).total_seconds(), 3),
            "start_spread_s": round((max(starts) - min(starts)).total_seconds(), 3)}


def run_reference_checks(backup_set: BackupSet, keyring: KeyRing, names: list[str],
                         options: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Run the named checks on ``backup_set``; one result per name: ``{name, ok, checked, problems,
    skipped}``. A check whose components the set lacks is skipped (ok). Unknown name: ConfigError."""
    results = []
    for name in names:
        if name not in _REGISTRY:
            raise ConfigError(f"unknown reference check {name!r}",
                              hint=f"registered: {', '.join(registered_checks()) or 'none'}")
        needs, fn = _REGISTRY[name]
        lacking = [c for c in needs if c not in backup_set.components]
        if lacking:
            results.append({"name": name, "ok": True, "checked": 0, "problems": [],
                            "skipped": f"the set has no {', '.join(lacking)}"})
            continue
        try:
            result = fn(backup_set, keyring, dict(options or {}))
        except LifeboatError as err:
            result = {"ok": False, "checked": 0, "problems": [f"{type(err).__name__}: {err}"]}
        results.append({"name": name, "skipped": None, **result})
    return results


# --------------------------------------------------------------------------- reading dumped rows

def split_row_values(text: str) -> list[Optional[str]]:
    """The values of one dumped row text ``(v1,'v2',NULL)``: strings unquoted and unescaped
    (MySQL QUOTE() escapes), ``NULL`` as None, numbers and ``X'..'`` literals as their text."""
    if not (text.startswith("(") and text.endswith(")")):
        raise FormatError(f"not a dumped row: {text[:40]!r}")
    body, values, i = text[1:-1], [], 0
    escapes = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "Z": "\x1a", "b": "\b"}
    while i <= len(body):
        if i < len(body) and body[i] == "'":
            out, i = [], i + 1
            while i < len(body) and body[i] != "'":
                if body[i] == "\\" and i + 1 < len(body):
                    out.append(escapes.get(body[i + 1], body[i + 1]))
                    i += 2
                else:
                    out.append(body[i])
                    i += 1
            values.append("".join(out))
            i += 2  # closing quote and comma
        else:
            end = body.find(",", i)
            end = len(body) if end < 0 else end
            token = body[i:end]
            values.append(None if token == "NULL" else token)
            i = end + 1
    return values


def dumped_rows(backup_set: BackupSet, keyring: KeyRing, db: str,
                table: str) -> tuple[list[str], list[list[Optional[str]]]]:
    """Column names and rows of ``db.table`` as stored in the set's mysql dump."""
    meta = backup_set.read_json("mysql", "mysql_backup_metadata.json")
    spec = next((t for t in meta.get("tables", []) if t["db"] == db and t["table"] == table), None)
    if spec is None:
        raise FormatError(f"set {backup_set.set_id}: the mysql dump has no table {db}.{table}")
    columns = [c["name"] for c in spec["columns"]]
    rows: list[list[Optional[str]]] = []
    with backup_set.open_artifact("mysql", spec["artifact"], keyring) as reader:
        text = reader.read().decode("utf-8")
    for line in text.split("\n"):
        line = line.rstrip(";").rstrip(",")
        if line.startswith("("):
            rows.append(split_row_values(line))
    return columns, rows


@reference_check("demo_app_files", needs=("mysql", "app"))
def demo_app_files(backup_set: BackupSet, keyring: KeyRing, options: dict[str, Any]) -> dict[str, Any]:
    """Every ``demo.files`` row names a file present in folder ``storage`` of the app backup,
    with the recorded SHA-256. Options: ``db`` (demo), ``table`` (files), ``folder`` (storage)."""
    db, table, folder = options.get("db", "demo"), options.get("table", "files"), options.get("folder", "storage")
    columns, rows = dumped_rows(backup_set, keyring, db, table)
    listing = backup_set.read_json("app", f"{folder}_files.json")
    files = {e["path"]: e.get("sha256") for e in listing.get("entries", []) if e.get("type") == "file"}
    path_at, sha_at = columns.index("path"), columns.index("sha256") if "sha256" in columns else None
    problems = []
    for row in rows:
        path = row[path_at]
        if path not in files:
            problems.append(f"{db}.{table} row {path!r}: no such file in app folder {folder!r}")
        elif sha_at is not None and row[sha_at] and files[path] and row[sha_at] != files[path]:
            problems.append(f"{db}.{table} row {path!r}: SHA-256 differs from the backed-up file")
    return {"ok": not problems, "checked": len(rows), "problems": problems}
