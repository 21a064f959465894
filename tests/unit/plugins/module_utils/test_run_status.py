"""Run status files (issue 22): what a long run writes to <store>/progress while it works, how
readers judge it (running, stalled, dead), and the watchdog that stops a run whose controller died.

Real processes throughout: the "controller" and the "run" are child processes of the test.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from ansible_collections.lifeboat.dr.plugins.module_utils.edge import cli
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health
from ansible_collections.lifeboat.dr.plugins.module_utils.store import locks, runstatus
from ansible_collections.lifeboat.dr.plugins.module_utils.store.runstatus import (
    RunStatus,
    describe_run,
    judge_run,
    read_run_statuses,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util import progress
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import Progress

REPO = Path(__file__).resolve().parents[4]


def status_files(store: Path) -> list[Path]:
    return sorted((store / "progress").glob("*.json"))


def test_a_run_status_file_holds_figures_step_owner_and_is_removed_at_the_end(tmp_path):
    owner = locks.process_identity(os.getpid())
    status = RunStatus(tmp_path, "db1 mysql/backup", kind="backup", component="mysql", run_owner=owner,
                       interval_s=1.0).open()
    assert status.path == tmp_path / "progress" / "db1_mysql_backup.json"
    status.set_step("table shop.orders")
    status.set_counts(rows=1200)
    status.report(Progress("mysql dump", 4096, 1000, 10_000, 2.0))
    data = json.loads(status.path.read_text())
    assert data["operation"] == "mysql dump" and data["done_bytes"] == 4096 and data["total_bytes"] == 10_000
    assert data["rate_bps"] == 2048.0 and data["eta_s"] == 2.9
    assert data["step"] == "table shop.orders" and data["rows"] == 1200
    assert data["run_owner"] == owner and data["pid"] == os.getpid() and data["state"] == "running"
    assert data["started"].endswith("Z") and data["updated"].endswith("Z")
    status.close()
    assert status_files(tmp_path) == []


def test_writes_are_throttled_to_half_the_interval_and_heartbeats_fill_the_gaps(tmp_path):
    status = RunStatus(tmp_path, "r", kind="backup", component="redis", interval_s=2.0).open()
    status.report(Progress("redis dump", 10, 0, None, 0.1))
    first = json.loads(status.path.read_text())
    assert first["done_bytes"] == 10  # the first report after open is written at once (open wrote nothing yet)
    status.report(Progress("redis dump", 20, 0, None, 0.2))
    assert json.loads(status.path.read_text())["done_bytes"] == 10  # within 1 s: not written
    time.sleep(1.05)
    status.report(Progress("redis dump", 30, 0, None, 1.3))
    assert json.loads(status.path.read_text())["done_bytes"] == 30
    before = json.loads(status.path.read_text())["updated"]
    status.heartbeat()
    assert json.loads(status.path.read_text())["updated"] == before  # written < interval ago: no heartbeat
    time.sleep(2.05)
    status.heartbeat()
    assert json.loads(status.path.read_text())["updated"] > before


def test_a_report_a_hair_before_the_throttle_ends_is_written_so_the_file_never_lags_an_interval(tmp_path, monkeypatch):
    """The engines' meters report every 0.5 s, the throttle of a 1 s interval is 0.5 s: a report
    that arrives a few milliseconds early must still be written, else every other report is
    skipped, the file lags a whole interval and two polls print the same bytes while the run moves."""
    clock = [1_000_000.0]
    monkeypatch.setattr(runstatus, "time", SimpleNamespace(time=lambda: clock[0], gmtime=time.gmtime,
                                                           strftime=time.strftime))
    status = RunStatus(tmp_path, "r", kind="backup", component="mysql", interval_s=1.0).open()
    status.report(Progress("mysql dump", 100, 0, None, 0.1))
    clock[0] += 0.497  # the meter's next 0.5 s beat, seen a few milliseconds early
    status.report(Progress("mysql dump", 200, 0, None, 0.6))
    assert json.loads(status.path.read_text())["done_bytes"] == 200
    clock[0] += 0.3
    status.report(Progress("mysql dump", 300, 0, None, 0.9))
    assert json.loads(status.path.read_text())["done_bytes"] == 200  # still throttled: 0.5 s, less 10 % at most
    status.close()


def test_the_primary_figures_are_those_of_the_earliest_running_operation(tmp_path):
    status = RunStatus(tmp_path, "r", kind="restore", component="mysql", interval_s=0.5).open()
    status.report(Progress("mysql restore", 100, 0, 1000, 5.0))
    status.report(Progress("read mysql/a.sql.zst.enc", 900, 0, 900, 1.0, final=True))
    time.sleep(0.55)  # past the 0.5 s write throttle
    status.report(Progress("mysql restore", 200, 0, 1000, 5.5))
    data = json.loads(status.path.read_text())
    assert data["operation"] == "mysql restore" and data["done_bytes"] == 200
    assert set(data["operations"]) == {"mysql restore", "read mysql/a.sql.zst.enc"}


def test_judge_run_tells_running_stalled_dead_and_abandoned(tmp_path):
    me = locks.process_identity(os.getpid())
    now = time.time()
    base = {"worker": me, "state": "running", "interval_s": 1.0, "updated": runstatus._iso(now),
            "progress_at": runstatus._iso(now - 5)}
    assert judge_run(base, now)["liveness"] == "running"
    assert judge_run(base, now, stall_after_s=3)["liveness"] == "stalled"
    assert judge_run(dict(base, progress_at=runstatus._iso(now - 61)), now)["liveness"] == "stalled"  # default >= 60 s
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    ident = locks.process_identity(gone.pid)
    gone.wait()
    assert judge_run(dict(base, worker=ident), now)["liveness"] == "dead"
    assert judge_run(dict(base, state="abandoned"), now)["liveness"] == "abandoned"


def test_describe_run_names_figures_and_step_never_anything_else():
    line = describe_run({"component": "mysql", "kind": "backup", "liveness": "running", "operation": "mysql dump",
                         "done_bytes": 50 * 1024 * 1024, "total_bytes": 200 * 1024 * 1024, "rate_bps": 10 * 1024 * 1024,
                         "eta_s": 15.0, "step": "table shop.orders", "rows": 7})
    assert line == ("mysql backup [running]: mysql dump: 50.0 MiB of 200.0 MiB (25 %) at 10.0 MiB/s, ETA 15 s, "
                    "7 rows (table shop.orders)")


def test_log_progress_feeds_the_active_run_within_half_the_interval_and_end_removes_it(tmp_path):
    run = runstatus.activate_run_status(tmp_path, "x", kind="backup", component="app", interval_s=1.0)
    try:
        progress.log_progress()(Progress("files backup", 123, 0, None, 1.0))
        progress.set_step("folder /srv/app")
        reported = time.monotonic()
        while read_run_statuses(tmp_path)[0]["done_bytes"] != 123 and time.monotonic() - reported < 5:
            time.sleep(0.02)
        assert time.monotonic() - reported < 0.5 + 0.3  # written by the watchdog within interval / 2 (+ slack)
        [data] = read_run_statuses(tmp_path)
        assert data["step"] == "folder /srv/app" and data["liveness"] == "running"
    finally:
        run.end()
    assert status_files(tmp_path) == [] and runstatus._ACTIVE is None and progress._SINK is None


def test_an_active_run_writes_its_file_only_on_its_watchdog_thread(tmp_path, monkeypatch):
    """The engines report while holding their own locks (a dump worker holds the shared byte
    counter): the file's I/O must not happen there, where a slow disk would stall every worker."""
    writers: list[str] = []
    real_write = runstatus._atomic_write_json

    def recorded(path, data):
        writers.append(threading.current_thread().name)
        real_write(path, data)

    monkeypatch.setattr(runstatus, "_atomic_write_json", recorded)
    run = runstatus.activate_run_status(tmp_path, "x", kind="backup", component="mysql", interval_s=1.0)
    try:
        meter = progress.ProgressMeter("mysql dump", progress.log_progress(), 10**9, interval_s=0.05)
        started, done = time.monotonic(), 0
        while time.monotonic() - started < 1.6:
            done += 4096
            meter.update(done)
            time.sleep(0.01)
        meter.finish()
        time.sleep(0.6)
        assert read_run_statuses(tmp_path)[0]["done_bytes"] == done
    finally:
        run.end()
    opened, *later = writers
    assert opened == threading.current_thread().name  # open() writes the first status itself
    assert len(later) >= 3 and set(later) == {"lifeboat-progress"}, writers


RUN_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from ansible_collections.lifeboat.dr.plugins.module_utils.store import runstatus
    owner = json.loads(sys.argv[2])
    runstatus.activate_run_status(sys.argv[1], "victim", kind=sys.argv[3], component="mysql", run_owner=owner,
                                 interval_s=1.0, owner_check_s=0.5)
    print("ready", flush=True)
    time.sleep(120)
""")


def start_run(store: Path, owner: dict, kind: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, str(store), json.dumps(owner), kind],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_backup_whose_controller_dies_stops_itself_and_says_so(tmp_path):
    controller = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    run = start_run(tmp_path, locks.process_identity(controller.pid), "backup")
    try:
        time.sleep(1.0)
        assert run.poll() is None  # the controller lives: the run goes on
        controller.kill()
        controller.wait()
        killed_at = time.monotonic()
        assert run.wait(timeout=30) == 75
        assert time.monotonic() - killed_at < 5
        [data] = read_run_statuses(tmp_path)
        assert data["liveness"] == "abandoned" and "is gone" in data["reason"]
    finally:
        for proc in (run, controller):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_restore_whose_controller_dies_runs_on(tmp_path):
    controller = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = locks.process_identity(controller.pid)
    controller.wait()
    run = start_run(tmp_path, owner, "restore")
    try:
        time.sleep(2.0)
        assert run.poll() is None  # a half-done restore is never abandoned by the watchdog
    finally:
        run.kill()
        run.wait()
    assert read_run_statuses(tmp_path)[0]["liveness"] == "dead"  # killed: its file is left, judged dead


def test_polls_stop_only_once_a_promised_poll_is_overdue_by_the_grace(tmp_path):
    path = runstatus.progress_dir(tmp_path) / "remote-mysql-backup.json"
    path.parent.mkdir(parents=True)
    assert runstatus.polls_stopped(path) is None  # never polled: nobody promised to poll
    runstatus.record_poll(path, 8.0)
    polled = json.loads(runstatus.poll_path(path).read_text())["polled"]
    assert runstatus.polls_stopped(path) is None
    assert runstatus.polls_stopped(path, now=polled + 8.0 + runstatus.POLL_GRACE_S) is None
    late = runstatus.polls_stopped(path, now=polled + 8.0 + runstatus.POLL_GRACE_S + 1)
    assert late == "its controller's polls stopped 19 s ago (promised every 8 s)"


def test_a_tethered_run_stops_within_30_s_of_its_controllers_last_poll_at_worst():
    # the controller dies right after a poll; the next one was due a beat later; the grace
    # passes; the watchdog's next owner check sees it
    worst = runstatus.TETHER_BEAT_S + runstatus.POLL_GRACE_S + runstatus.OWNER_CHECK_S
    assert worst <= 25.0  # 5 s to spare for a poll in flight when the controller died


def test_a_backup_whose_controller_is_out_of_sight_runs_on_while_polled_and_not_a_restore(tmp_path):
    elsewhere = dict(locks.process_identity(os.getpid()), host="controller-elsewhere")
    assert locks.owner_state(elsewhere) == "unknown"
    backup = start_run(tmp_path / "b", elsewhere, "backup")
    restore = start_run(tmp_path / "r", elsewhere, "restore")
    try:
        for _poll in range(4):
            runstatus.record_poll(tmp_path / "b" / "progress" / "victim.json", 0.5)
            runstatus.record_poll(tmp_path / "r" / "progress" / "victim.json", 0.1)
            time.sleep(0.5)
        assert backup.poll() is None  # polled on its beat
        time.sleep(runstatus.POLL_GRACE_S + 2.0)
        assert backup.poll() == 75  # the polls stopped: it stopped itself
        assert restore.poll() is None  # a restore runs to its end, polled or not
        [data] = read_run_statuses(tmp_path / "b")
        assert data["liveness"] == "abandoned" and "polls stopped" in data["reason"]
    finally:
        for proc in (backup, restore):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def write_run(store: Path, **fields) -> None:
    folder = store / "progress"
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    data = {"id": "lab-mysql-backup", "component": "mysql", "kind": "backup", "host": "h", "pid": os.getpid(),
            "worker": locks.process_identity(os.getpid()), "state": "running", "interval_s": 1.0,
            "started": runstatus._iso(now - 30), "updated": runstatus._iso(now), "progress_at": runstatus._iso(now),
            "operation": "mysql dump", "done_bytes": 1 << 20, "total_bytes": 4 << 20, "rate_bps": 1 << 19,
            "eta_s": 6.0, "step": "table demo.orders"}
    data.update(fields)
    (folder / f"{data['id']}.json").write_text(json.dumps(data))


def test_health_lists_runs_in_progress_and_flags_a_stalled_one(tmp_path):
    write_run(tmp_path)
    report = health.build_report(tmp_path)
    assert [r["liveness"] for r in report["runs_in_progress"]] == ["running"]
    assert not [p for p in report["problems"] if "has not moved" in p["message"]]
    write_run(tmp_path, progress_at=runstatus._iso(time.time() - 120))
    report = health.build_report(tmp_path, health.Thresholds(progress_stall_s=60))
    [problem] = [p for p in report["problems"] if "has not moved" in p["message"]]
    assert problem["level"] == "warning" and problem["component"] == "mysql"
    assert "table demo.orders" in problem["message"]
    assert report["status"] in ("warning", "critical")


def test_cli_lists_runs_and_follows_them_as_plain_lines_when_piped(tmp_path, capsys):
    write_run(tmp_path)
    assert cli.main(["jobs", "--running", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mysql" in out and "running" in out and "1.0 MiB" in out and "table demo.orders" in out
    assert cli.main(["status", "--json", "--store", str(tmp_path)]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert run["done_bytes"] == 1 << 20 and run["liveness"] == "running"
    piped = io.StringIO()
    assert cli.follow_runs(cli.Store(tmp_path), 0.05, piped, max_rounds=2) == 0
    lines = piped.getvalue().splitlines()
    assert len(lines) == 2 and all("mysql backup [running]: mysql dump: 1.0 MiB of 4.0 MiB" in x for x in lines)
    assert "\x1b" not in piped.getvalue() and "\r" not in piped.getvalue()


def test_cli_follow_redraws_bars_in_place_on_a_terminal(tmp_path):
    write_run(tmp_path)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    cli.follow_runs(cli.Store(tmp_path), 0.05, out, max_rounds=2)
    text = out.getvalue()
    assert text.count("[######------------------]") == 2 and "\x1b[1F" in text


def test_the_health_report_module_option_sets_the_stall_threshold():
    assert health.thresholds_from_options({"progress_stall_minutes": 2}).progress_stall_s == 120.0
    assert health.thresholds_from_options({}).progress_stall_s == 0.0


def test_the_watchdog_checks_the_run_owner_every_owner_check_s_however_short_the_interval(tmp_path, monkeypatch):
    checks: list[float] = []
    real_state = runstatus.owner_state
    monkeypatch.setattr(runstatus, "owner_state", lambda owner: checks.append(time.monotonic()) or real_state(owner))
    run = runstatus.activate_run_status(tmp_path, "x", kind="backup", component="mysql", interval_s=0.5,
                                        run_owner=locks.process_identity(os.getpid()), owner_check_s=1.0)
    try:
        time.sleep(3.3)  # the file is written every 0.5 s meanwhile
    finally:
        run.end()
    assert 2 <= len(checks) <= 4, checks
