"""Schedules: cron next-run, OnCalendar conversion, cron file and systemd units install/remove idempotently."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.ops import schedule as sc
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError

ENTRIES = [sc.Entry("backup-full", "0 2 * * *", "/usr/bin/lifeboat-run backup", description="daily full"),
           sc.Entry("binlog-archive", "*/15 * * * *", "/usr/bin/lifeboat-run binlog"),
           sc.Entry("verify-weekly", "0 3 * * 0", "/usr/bin/lifeboat-run verify", user="backup"),
           sc.Entry("drill-monthly", "0 4 1 * *", "/usr/bin/lifeboat-run drill")]


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("spec", "after", "expected"), [
    ("0 2 * * *", "2025-01-29 01:59", "2025-01-29 02:00"),
    ("0 2 * * *", "2025-01-29 02:00", "2025-01-30 02:00"),
    ("*/15 * * * *", "2025-01-29 10:07", "2025-01-29 10:15"),
    ("*/15 * * * *", "2025-01-29 23:50", "2025-01-30 00:00"),
    ("0 3 * * 0", "2025-01-29 12:00", "2025-02-02 03:00"),   # Wednesday -> Sunday
    ("0 3 * * 7", "2025-02-02 03:00", "2025-02-09 03:00"),   # 7 is Sunday too
    ("0 4 1 * *", "2025-01-29 12:00", "2025-02-01 04:00"),
    ("0 4 1 * *", "2025-12-01 04:00", "2026-01-01 04:00"),
    ("30 1-3/2 * * 1-5", "2025-02-01 00:00", "2025-02-03 01:30"),  # Saturday -> Monday
    ("0 0 29 2 *", "2025-03-01 00:00", "2028-02-29 00:00"),
])
def test_next_run(spec, after, expected):
    assert sc.next_run(spec, t(after)) == t(expected)


def test_bad_expressions_are_refused_with_the_field_named():
    for bad in ("0 2 * *", "61 * * * *", "0 2 * * mon", "*/0 * * * *"):
        with pytest.raises(ConfigError):
            sc.parse_spec(bad)
    with pytest.raises(ConfigError, match="never matches"):
        sc.next_run("0 0 31 2 *", t("2025-01-01 00:00"))


@pytest.mark.parametrize(("spec", "calendar"), [
    ("0 2 * * *", "*-*-* 02:00:00"),
    ("*/15 * * * *", "*-*-* *:00/15:00"),
    ("0 3 * * 0", "Sun *-*-* 03:00:00"),
    ("0 4 1 * *", "*-*-01 04:00:00"),
    ("5,35 8 * 1,7 *", "*-01,07-* 08:05,35:00"),
])
def test_on_calendar_conversion(spec, calendar):
    assert sc.to_on_calendar(spec) == calendar


def test_cron_install_is_idempotent_and_removable(tmp_path: Path):
    cron = tmp_path / "cron.d" / "lifeboat"
    first = sc.apply(ENTRIES, cron_file=cron)
    assert first["changed"] and first["files_changed"] == [str(cron)]
    assert cron.read_text() == (
        f"{sc.MARKER}\nSHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\n"
        "# lifeboat-entry: backup-full - daily full\n0 2 * * * root /usr/bin/lifeboat-run backup\n"
        "# lifeboat-entry: binlog-archive\n*/15 * * * * root /usr/bin/lifeboat-run binlog\n"
        "# lifeboat-entry: verify-weekly\n0 3 * * 0 backup /usr/bin/lifeboat-run verify\n"
        "# lifeboat-entry: drill-monthly\n0 4 1 * * root /usr/bin/lifeboat-run drill\n")
    assert oct(cron.stat().st_mode & 0o777) == "0o644"
    assert sc.apply(ENTRIES, cron_file=cron)["changed"] is False
    changed = [*ENTRIES[:1], sc.Entry("binlog-archive", "*/5 * * * *", "/usr/bin/lifeboat-run binlog")]
    assert sc.apply(changed, cron_file=cron, check_mode=True)["changed"] is True
    assert "*/15 * * * *" in cron.read_text()  # check mode wrote nothing
    listed = sc.installed(cron_file=cron, systemd_dir=tmp_path / "none", now=t("2025-01-29 10:07"))
    assert [(e["name"], e["next_run"]) for e in listed] == [
        ("backup-full", "2025-01-30T02:00:00Z"), ("binlog-archive", "2025-01-29T10:15:00Z"),
        ("verify-weekly", "2025-02-02T03:00:00Z"), ("drill-monthly", "2025-02-01T04:00:00Z")]
    assert sc.apply([], state="absent", cron_file=cron)["changed"] is True
    assert not cron.exists()
    assert sc.apply([], state="absent", cron_file=cron)["changed"] is False


def test_a_foreign_cron_file_is_never_overwritten(tmp_path: Path):
    cron = tmp_path / "lifeboat"
    cron.write_text("0 0 * * * root something-else\n")
    with pytest.raises(ConfigError, match="not written by Lifeboat"):
        sc.apply(ENTRIES, cron_file=cron)
    with pytest.raises(ConfigError):
        sc.apply([], state="absent", cron_file=cron)
    assert cron.read_text() == "0 0 * * * root something-else\n"


def test_systemd_units_install_idempotently_and_stale_ones_go(tmp_path: Path):
    units = tmp_path / "system"
    result = sc.apply(ENTRIES, backend="systemd", systemd_dir=units, activate=False)
    assert len(result["files_changed"]) == 8
    timer = (units / "lifeboat-verify-weekly.timer").read_text()
    assert "OnCalendar=Sun *-*-* 03:00:00" in timer and "Persistent=true" in timer
    service = (units / "lifeboat-verify-weekly.service").read_text()
    assert "Type=oneshot" in service and "User=backup" in service
    assert 'ExecStart=/bin/sh -c "/usr/bin/lifeboat-run verify"' in service
    assert sc.apply(ENTRIES, backend="systemd", systemd_dir=units, activate=False)["changed"] is False
    (units / "unrelated.service").write_text("[Unit]\n")
    fewer = sc.apply(ENTRIES[:2], backend="systemd", systemd_dir=units, activate=False)
    assert sorted(Path(p).name for p in fewer["files_removed"]) == [
        "lifeboat-drill-monthly.service", "lifeboat-drill-monthly.timer",
        "lifeboat-verify-weekly.service", "lifeboat-verify-weekly.timer"]
    assert [e["name"] for e in sc.installed(cron_file=tmp_path / "no", systemd_dir=units)] == [
        "backup-full", "binlog-archive"]
    sc.apply([], backend="systemd", state="absent", systemd_dir=units, activate=False)
    assert sorted(p.name for p in units.iterdir()) == ["unrelated.service"]


def test_secrets_in_commands_are_refused():
    with pytest.raises(ConfigError, match="secret"):
        sc.Entry("x", "0 2 * * *", "backup --password=hunter2").check()


def test_entries_from_options():
    entries = sc.entries_from_options([{"name": "a", "spec": "0 1 * * *", "command": "c"},
                                       {"name": "b", "cron": "0 2 * * *", "command": "c", "enabled": False}])
    assert entries == [sc.Entry("a", "0 1 * * *", "c")]
    with pytest.raises(ConfigError, match="lacks 'command'"):
        sc.entries_from_options([{"name": "a", "spec": "0 1 * * *"}])
