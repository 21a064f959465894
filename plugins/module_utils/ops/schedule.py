# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Schedules: install the backup/verify/drill timetable as a cron file or systemd timers.

An :class:`Entry` is a named job with a cron expression (``minute hour day-of-month
month day-of-week``; each field ``*``, ``*/n``, ``a``, ``a-b``, ``a-b/n`` or a comma
list of those; day-of-week 0-7, 0 and 7 = Sunday) and a command line (no secrets: they
come from files or the environment the command reads).

* ``cron``: one file (default ``/etc/cron.d/lifeboat``) with a header, ``SHELL``/``PATH``
  and one line per entry (with the user field of ``/etc/cron.d``).
* ``systemd``: ``lifeboat-<name>.service`` (oneshot) + ``lifeboat-<name>.timer``
  (``OnCalendar`` converted from the cron expression, ``Persistent=true``) in a folder
  (default ``/etc/systemd/system``); only files carrying the Lifeboat marker are ever
  removed. ``activate`` runs ``systemctl daemon-reload`` and enables/disables timers.

:func:`apply` is idempotent: files are rewritten (atomically) only when their content
differs, so a second run reports ``changed=False``. :func:`next_run` computes the next
start time of a cron expression (times in the local zone of the host running cron:
here UTC unless ``tz`` says otherwise).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

log = get_logger("schedule")

MARKER = "# Managed by Lifeboat (lifeboat.dr.schedule): changes here are overwritten."
SPEC_COMMENT = "# lifeboat-cron:"
ENTRY_COMMENT = "# lifeboat-entry:"
DEFAULT_CRON_FILE = "/etc/cron.d/lifeboat"
DEFAULT_SYSTEMD_DIR = "/etc/systemd/system"
UNIT_PREFIX = "lifeboat-"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")
_SECRET_RE = re.compile(r"(password|passwd|token|secret)\s*[=:]", re.I)
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_DOW_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")

DEFAULT_SPECS = {
    "backup-full": "0 2 * * *",
    "binlog-archive": "*/15 * * * *",
    "verify-weekly": "0 3 * * 0",
    "drill-monthly": "0 4 1 * *",
}


@dataclass(frozen=True)
class Entry:
    """One scheduled job: ``name`` (``[a-z0-9_-]``), cron ``spec``, ``command``, run as ``user``."""

    name: str
    spec: str
    command: str
    user: str = "root"
    description: str = ""

    def check(self) -> None:
        """Raise :class:`ConfigError` for a bad name, expression or a command holding a secret."""
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"schedule name {self.name!r} is not [a-z0-9_-] (max 41 characters)")
        parse_spec(self.spec)
        if not self.command.strip() or "\n" in self.command:
            raise ConfigError(f"schedule {self.name}: the command must be one non-empty line")
        if _SECRET_RE.search(self.command):
            raise ConfigError(f"schedule {self.name}: the command seems to contain a secret",
                              hint="pass secrets through files or the environment, never on the command line")
        if not re.match(r"^[a-z_][a-z0-9_-]*\$?$", self.user):
            raise ConfigError(f"schedule {self.name}: {self.user!r} is not a user name")


# --------------------------------------------------------------------------- cron expressions
def _parse_field(text: str, index: int) -> set[int]:
    lo, hi = _RANGES[index]
    values: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part.strip())
        if not m:
            raise ConfigError(f"cron {_FIELD_NAMES[index]} field {text!r} is not supported",
                              hint="use *, */n, a, a-b, a-b/n or comma lists")
        base, step = m.group(1), int(m.group(2) or 1)
        if step < 1:
            raise ConfigError(f"cron step must be >= 1 in {text!r}")
        start, end = (lo, hi) if base == "*" else (int(base.split("-")[0]), int(base.split("-")[-1]))
        if not lo <= start <= end <= hi:
            raise ConfigError(f"cron {_FIELD_NAMES[index]} field {text!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values.discard(7)
        values.add(0)
    return values


def parse_spec(spec: str) -> tuple[set[int], set[int], set[int], set[int], set[int], bool, bool]:
    """``(minutes, hours, days, months, weekdays, dom_restricted, dow_restricted)``."""
    fields = spec.split()
    if len(fields) != 5:
        raise ConfigError(f"cron expression {spec!r} needs 5 fields (minute hour day month weekday)")
    parsed = [_parse_field(f, i) for i, f in enumerate(fields)]
    return (parsed[0], parsed[1], parsed[2], parsed[3], parsed[4], fields[2] != "*", fields[4] != "*")


def _day_matches(day: datetime, days: set[int], months: set[int], weekdays: set[int], dom_r: bool,
                 dow_r: bool) -> bool:
    if day.month not in months:
        return False
    dom_ok = day.day in days
    dow_ok = (day.isoweekday() % 7) in weekdays
    if dom_r and dow_r:
        return dom_ok or dow_ok  # cron: either restricted field may match
    return dom_ok and dow_ok


def next_run(spec: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` (to the minute) matching ``spec``; same tzinfo.

    Raises :class:`ConfigError` when nothing matches within 5 years (e.g. ``0 0 31 2 *``).
    """
    minutes, hours, days, months, weekdays, dom_r, dow_r = parse_spec(spec)
    start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = start.replace(hour=0, minute=0)
    for offset in range(366 * 5):
        current = day + timedelta(days=offset)
        if not _day_matches(current, days, months, weekdays, dom_r, dow_r):
            continue
        for hour in sorted(hours):
            for minute in sorted(minutes):
                candidate = current.replace(hour=hour, minute=minute)
                if candidate >= start:
                    return candidate
    raise ConfigError(f"cron expression {spec!r} never matches", hint="check day of month against the month")


def _calendar_field(values: set[int], lo: int, hi: int, width: int) -> str:
    ordered = sorted(values)
    if ordered == list(range(lo, hi + 1)):
        return "*"
    if len(ordered) > 2:
        step = ordered[1] - ordered[0]
        if ordered == list(range(ordered[0], hi + 1, step))[:len(ordered)] and ordered[-1] + step > hi:
            return f"{ordered[0]:0{width}d}/{step}"
    return ",".join(f"{v:0{width}d}" for v in ordered)


def to_on_calendar(spec: str) -> str:
    """systemd ``OnCalendar`` for a cron expression (``0 3 * * 0`` -> ``Sun *-*-* 03:00:00``).

    Refuses expressions restricting both day of month and day of week (cron ORs them,
    systemd ANDs them).
    """
    minutes, hours, days, months, weekdays, dom_r, dow_r = parse_spec(spec)
    if dom_r and dow_r:
        raise ConfigError(f"cron expression {spec!r} restricts both day of month and weekday",
                          hint="use one of the two for systemd timers, or the cron backend")
    dow = ",".join(_DOW_NAMES[d] for d in sorted(weekdays)) + " " if dow_r else ""
    return (f"{dow}*-{_calendar_field(months, 1, 12, 2)}-{_calendar_field(days, 1, 31, 2)} "
            f"{_calendar_field(hours, 0, 23, 2)}:{_calendar_field(minutes, 0, 59, 2)}:00")


# --------------------------------------------------------------------------- rendering
def render_cron(entries: list[Entry], path_env: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                ) -> str:
    """The content of the cron.d file for ``entries``."""
    lines = [MARKER, "SHELL=/bin/sh", f"PATH={path_env}", ""]
    for entry in entries:
        entry.check()
        lines.append(f"{ENTRY_COMMENT} {entry.name}{' - ' + entry.description if entry.description else ''}")
        lines.append(f"{entry.spec} {entry.user} {entry.command}")
    return "\n".join(lines) + "\n"


def render_units(entry: Entry) -> dict[str, str]:
    """``{file name: content}`` of the service and timer of ``entry``."""
    entry.check()
    unit = f"{UNIT_PREFIX}{entry.name}"
    desc = entry.description or f"Lifeboat {entry.name}"
    service = (f"{MARKER}\n[Unit]\nDescription={desc}\n\n[Service]\nType=oneshot\nUser={entry.user}\n"
               f"ExecStart=/bin/sh -c {_systemd_quote(entry.command)}\n")
    timer = (f"{MARKER}\n{SPEC_COMMENT} {entry.spec}\n[Unit]\nDescription={desc} (timer)\n\n[Timer]\n"
             f"OnCalendar={to_on_calendar(entry.spec)}\nPersistent=true\nUnit={unit}.service\n\n"
             "[Install]\nWantedBy=timers.target\n")
    return {f"{unit}.service": service, f"{unit}.timer": timer}


def _systemd_quote(command: str) -> str:
    return '"' + command.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


# --------------------------------------------------------------------------- applying
def _write_if_different(path: Path, content: str, mode: int, check_mode: bool) -> bool:
    try:
        if path.read_text(encoding="utf-8") == content and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    if check_mode:
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _managed(path: Path) -> bool:
    try:
        return path.read_text(encoding="utf-8").startswith(MARKER)
    except OSError:
        return False


def _remove_if_managed(path: Path, check_mode: bool) -> bool:
    if not path.exists():
        return False
    if not _managed(path):
        raise ConfigError(f"{path} exists but was not written by Lifeboat; not touching it",
                          hint="move it away or choose another path")
    if not check_mode:
        path.unlink()
    return True


def _systemctl(*args: str) -> None:
    tool = shutil.which("systemctl")
    if tool is None:
        raise ConfigError("systemctl is not installed", hint="use backend=cron or activate=false")
    done = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"systemctl {' '.join(args)} failed: {done.stderr.strip()[:300]}")


def apply(entries: list[Entry], *, backend: str = "cron", state: str = "present",
          cron_file: Union[str, Path] = DEFAULT_CRON_FILE, systemd_dir: Union[str, Path] = DEFAULT_SYSTEMD_DIR,
          activate: bool = True, check_mode: bool = False) -> dict[str, Any]:
    """Install (``state=present``) or remove (``absent``) the schedule; idempotent.

    Returns ``{"changed", "backend", "state", "files_changed", "files_removed", "entries"}``.
    ``activate`` (systemd): ``daemon-reload`` and enable --now / disable the timers when
    something changed. Check mode reports what would change and writes nothing.
    """
    if backend not in ("cron", "systemd"):
        raise ConfigError(f"unknown schedule backend {backend!r}", hint="use cron or systemd")
    if state not in ("present", "absent"):
        raise ConfigError(f"unknown state {state!r}", hint="use present or absent")
    for entry in entries:
        entry.check()
    if len({e.name for e in entries}) != len(entries):
        raise ConfigError("schedule entry names must be unique")
    changed_files: list[str] = []
    removed: list[str] = []
    if backend == "cron":
        path = Path(cron_file)
        if state == "present":
            if path.exists() and not _managed(path):
                raise ConfigError(f"{path} exists but was not written by Lifeboat; not touching it")
            if _write_if_different(path, render_cron(entries), 0o644, check_mode):
                changed_files.append(str(path))
        elif _remove_if_managed(path, check_mode):
            removed.append(str(path))
    else:
        folder = Path(systemd_dir)
        wanted: dict[str, str] = {}
        if state == "present":
            for entry in entries:
                wanted.update(render_units(entry))
        for name, content in sorted(wanted.items()):
            target = folder / name
            if target.exists() and not _managed(target):
                raise ConfigError(f"{target} exists but was not written by Lifeboat; not touching it")
            if _write_if_different(target, content, 0o644, check_mode):
                changed_files.append(str(target))
        for path in sorted(folder.glob(f"{UNIT_PREFIX}*")) if folder.is_dir() else []:
            if path.name not in wanted and path.suffix in (".service", ".timer") and _managed(path):
                if not check_mode:
                    _stop_timer(path, activate)
                    path.unlink()
                removed.append(str(path))
        if activate and not check_mode and (changed_files or removed):
            _systemctl("daemon-reload")
            for name in sorted(n for n in wanted if n.endswith(".timer")):
                _systemctl("enable", "--now", name)
    changed = bool(changed_files or removed)
    if changed and not check_mode:
        log.info("schedule (%s) %s: changed %s, removed %s", backend, state, changed_files, removed)
    return {"changed": changed, "backend": backend, "state": state, "files_changed": changed_files,
            "files_removed": removed, "entries": [e.__dict__ for e in entries] if state == "present" else []}


def _stop_timer(path: Path, activate: bool) -> None:
    if activate and path.suffix == ".timer":
        _systemctl("disable", "--now", path.name)


# --------------------------------------------------------------------------- listing
def installed(cron_file: Union[str, Path] = DEFAULT_CRON_FILE, systemd_dir: Union[str, Path] = DEFAULT_SYSTEMD_DIR,
              now: Optional[datetime] = None) -> list[dict[str, Any]]:
    """Installed Lifeboat schedules (cron file and systemd timers) with their next run (UTC ISO)."""
    now = now or datetime.now(timezone.utc)  # noqa: UP017
    out: list[dict[str, Any]] = []
    cron = Path(cron_file)
    if cron.is_file() and _managed(cron):
        name = None
        for line in cron.read_text(encoding="utf-8").splitlines():
            if line.startswith(ENTRY_COMMENT):
                name = line[len(ENTRY_COMMENT):].strip().split(" - ")[0]
                continue
            fields = line.split(None, 6)
            if name and len(fields) == 7 and not line.startswith("#"):
                spec = " ".join(fields[:5])
                out.append(_listed("cron", name, spec, fields[5], fields[6], str(cron), now))
                name = None
    folder = Path(systemd_dir)
    for timer in sorted(folder.glob(f"{UNIT_PREFIX}*.timer")) if folder.is_dir() else []:
        if not _managed(timer):
            continue
        text = timer.read_text(encoding="utf-8")
        spec = next((ln[len(SPEC_COMMENT):].strip() for ln in text.splitlines() if ln.startswith(SPEC_COMMENT)), "")
        service = timer.with_suffix(".service")
        command, user = "", ""
        if service.is_file():
            for line in service.read_text(encoding="utf-8").splitlines():
                if line.startswith("ExecStart="):
                    command = line[len("ExecStart="):]
                elif line.startswith("User="):
                    user = line[len("User="):]
        out.append(_listed("systemd", timer.stem[len(UNIT_PREFIX):], spec, user, command, str(timer), now))
    return out


def _listed(backend: str, name: str, spec: str, user: str, command: str, path: str, now: datetime) -> dict[str, Any]:
    try:
        upcoming: Optional[str] = next_run(spec, now).strftime("%Y-%m-%dT%H:%M:%SZ") if spec else None
    except ConfigError:
        upcoming = None
    return {"backend": backend, "name": name, "spec": spec, "user": user, "command": command, "path": path,
            "next_run": upcoming}


def entries_from_options(jobs_option: list[dict[str, Any]], default_user: str = "root") -> list[Entry]:
    """Entries from a list of dicts ``{name, spec (or cron), command, user?, description?, enabled?}``;
    disabled entries (``enabled: false``) are left out."""
    out = []
    for item in jobs_option or []:
        if item.get("enabled", True) is False:
            continue
        try:
            out.append(Entry(name=str(item["name"]), spec=str(item.get("spec") or item["cron"]),
                             command=str(item["command"]), user=str(item.get("user") or default_user),
                             description=str(item.get("description") or "")))
        except KeyError as err:
            raise ConfigError(f"schedule entry {item!r} lacks {err.args[0]!r}",
                              hint="each entry needs name, spec and command") from None
    return out
