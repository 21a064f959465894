"""Live progress of long runs (issue 22) through the playbooks against the lab.

With ``lifeboat_progress_interval_s=1``, a ~560 MB MySQL backup and its restore print at least
two progress lines for the component before the task ends, with rising byte counts; a second
process (``lifeboat jobs --running``) sees the run while it works; the status files never hold
the lab's passwords or tokens; a ``kill -9`` of the controller leaves no worker running after
30 s; a run whose server is paused (SIGSTOP of this lab's own mysqld) is flagged by the health
report. The data is seeded in its own database ``progress_big`` (dropped at the end).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pymysql
import pytest
from controller_procs import descendants, read_until

from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health
from ansible_collections.lifeboat.dr.plugins.module_utils.store import locks
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

REPO = Path(__file__).resolve().parents[2]
DB = "progress_big"
ROWS_PER_TABLE = 500_000  # x 2 tables x ~560 bytes of dump: ~560 MB: 4+ lines at 1 s even at 110 MB/s
LINE_RE = re.compile(r"^lab-mysql \| mysql (backup|restore) \[[a-z]+\]: (.+?): ([0-9.]+) (B|KiB|MiB|GiB)\b", re.M)
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def mysql(env: dict[str, str]):
    return pymysql.connect(host=env["LAB_MYSQL_HOST"], port=int(env["LAB_MYSQL_PORT"]), user=env["LAB_MYSQL_USER"],
                           password=env["LAB_MYSQL_PASSWORD"], autocommit=True)


@pytest.fixture(scope="module")
def big_db(lab_env):
    """Two tables of 500k rows of 512-character text in the database ``progress_big``."""
    with mysql(lab_env) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
        cur.execute(f"USE {DB}")
        for table in ("orders", "events"):
            cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, payload VARCHAR(600)) ENGINE=InnoDB")
            cur.execute(f"INSERT INTO {table} SELECT seq, REPEAT(MD5(seq * RAND()), 16) FROM seq_1_to_{ROWS_PER_TABLE}")
            cur.execute(f"ANALYZE TABLE {table}")  # a size estimate for the progress total, as on a live server
    yield DB
    with mysql(lab_env) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")


def playbook(name: str, *extra: str, env_extra: dict[str, str] | None = None,
             stderr: int = subprocess.STDOUT) -> subprocess.Popen:
    """``ansible-playbook playbooks/<name>.yml`` on the mysql component of ``progress_big``, progress every 1 s,
    no terminal (stdin from /dev/null, output to a pipe; stderr into it unless ``stderr`` says otherwise),
    in its own process group."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1", **(env_extra or {}))
    argv = ["ansible-playbook", "-i", "inventories/lab", f"playbooks/{name}.yml", "-e", "components=mysql",
            "-e", json.dumps({"lifeboat_mysql_databases": [DB], "lifeboat_progress_interval_s": 1,
                              "lifeboat_mysql_parallel": 1}), *extra]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=stderr, text=True, start_new_session=True)


def progress_lines(output: str, kind: str) -> list[tuple[str, int]]:
    """``(operation, bytes done)`` of each ``lab-mysql | mysql <kind> [...]`` progress line."""
    return [(m.group(2), int(float(m.group(3)) * UNITS[m.group(4)])) for m in LINE_RE.finditer(output)
            if m.group(1) == kind]


def secrets_of(env: dict[str, str]) -> list[str]:
    return [v for k, v in env.items() if any(w in k for w in ("PASSWORD", "TOKEN", "SECRET")) and len(v) >= 6]


def watch_running(store: str, proc: subprocess.Popen) -> tuple[list[dict], list[str]]:
    """While ``proc`` runs: ``lifeboat jobs --running --json`` from a second process, and the raw
    text of every status file seen. Returns (runs seen, file texts seen)."""
    seen, texts = [], []
    cli = str(REPO / ".venv" / "bin" / "lifeboat")
    while proc.poll() is None:
        out = subprocess.run([cli, "jobs", "--running", "--json", "--store", store], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        seen.extend(json.loads(out))
        texts.extend(p.read_text(errors="replace") for p in (Path(store) / "progress").glob("*.json"))
        time.sleep(0.2)
    return seen, texts


def assert_rising(lines: list[tuple[str, int]], what: str, output: str) -> None:
    """The promise of the lines: 2+ of them before the end; each operation's byte count never goes
    back; and it rises over the run. Two neighbouring lines may show the same figures (a poll can
    come before the status file's next write, or the run may pause, e.g. closing an artifact), so
    the rise is judged from an operation's first line to its last, not line by line."""
    assert len(lines) >= 2, f"fewer than 2 {what} progress lines:\n{output[-4000:]}"
    by_op: dict[str, list[int]] = {}
    for op, done in lines:
        by_op.setdefault(op, []).append(done)
    assert all(v == sorted(v) for v in by_op.values()), f"a {what} byte count went back: {lines}"
    assert any(v[-1] > v[0] for v in by_op.values()), f"the {what} byte count never rose: {lines}"


@pytest.fixture(scope="module")
def backup_run(lab_env, big_db):
    """The backup, watched: (output, set id, runs seen by the CLI, status file texts seen)."""
    proc = playbook("backup")
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()  # drain the pipe while the test watches
    seen, texts = watch_running(lab_env["LAB_STORE"], proc)
    reader.join(60)
    output = "".join(chunks)
    assert proc.wait() == 0, output[-4000:]
    [set_id] = re.findall(r"mysql \| back up into set (mysql_[0-9TZ]+_[0-9a-f]+)", output)
    return output, set_id, seen, texts


def test_a_560_mb_backup_prints_rising_progress_lines_before_it_ends(backup_run):
    output = backup_run[0]
    lines = progress_lines(output, "backup")
    assert_rising(lines, "backup", output)
    assert output.index("lab-mysql | mysql backup [running]") < output.index("TASK [mysql : Remember the mysql result]")
    assert "table progress_big." in output  # the current step is named


def test_the_cli_shows_the_running_backup_from_a_second_process(backup_run, lab_env):
    seen = backup_run[2]
    mine = [r for r in seen if r.get("component") == "mysql" and r.get("kind") == "backup"]
    assert mine, "lifeboat jobs --running never showed the backup"
    assert max(r["done_bytes"] for r in mine) > 0 and all(r["liveness"] == "running" for r in mine)
    assert {r["run_owner"]["host"] for r in mine} and all(r["total_bytes"] for r in mine if r["done_bytes"])
    assert not list((Path(lab_env["LAB_STORE"]) / "progress").glob("*.json"))  # removed at the end


def test_status_files_never_hold_the_labs_passwords_or_tokens(backup_run, lab_env):
    texts = backup_run[3]
    assert texts, "no status file was seen while the backup ran"
    secrets = secrets_of(lab_env)
    assert len(secrets) >= 3
    leaked = [s for s in secrets for t in texts if s in t]
    assert leaked == []


def test_the_restore_of_that_backup_prints_rising_progress_lines(backup_run, lab_env):
    set_id = backup_run[1]
    proc = playbook("restore", "-e", f"backup_id={set_id}", "-e", "lifeboat_restore_safety_copy=false")
    output = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, output[-4000:]
    assert_rising(progress_lines(output, "restore"), "restore", output)
    with mysql(lab_env) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {DB}.orders")
        assert cur.fetchone()[0] == ROWS_PER_TABLE


def running_status(store: str) -> dict:
    [path] = list((Path(store) / "progress").glob("*-mysql-backup.json"))
    return json.loads(path.read_text())


def test_kill_9_of_the_controller_leaves_no_worker_running_after_30_s(lab_env, big_db):
    """The server is paused right after the kill, so the dump cannot simply finish (and remove its
    status file) before the watchdog sees the controller gone."""
    mysqld = lab_mysqld_pid(lab_env)
    proc = playbook("backup")
    worker, stopped = None, False
    try:
        read_until(proc, "lab-mysql | mysql backup [running]")
        status = running_status(lab_env["LAB_STORE"])
        worker = status["worker"]
        assert status["run_owner"]["pid"] == proc.pid and locks.owner_state(worker) == "alive"
        forks = [locks.process_identity(pid) for pid in descendants(proc.pid)]  # Ansible's workers
        os.kill(proc.pid, signal.SIGKILL)  # the controller only: its workers and the async job live on
        os.kill(mysqld, signal.SIGSTOP)
        stopped = True
        proc.wait(30)
        deadline = time.monotonic() + 30
        while locks.owner_state(worker) == "alive" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert locks.owner_state(worker) == "dead", f"the backup worker {worker['pid']} outlived its controller by 30 s"
        os.kill(mysqld, signal.SIGCONT)
        stopped = False
        while [f for f in forks if locks.owner_state(f) == "alive"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [f["pid"] for f in forks if locks.owner_state(f) == "alive"] == []
        runs = [r for r in json.loads(subprocess.run(
            [str(REPO / ".venv" / "bin" / "lifeboat"), "status", "--json", "--store", lab_env["LAB_STORE"]],
            capture_output=True, text=True, check=True).stdout) if r["id"] == status["id"]]
        assert [r["liveness"] for r in runs] == ["abandoned"] and "is gone" in runs[0]["reason"]
    finally:
        if stopped:
            os.kill(mysqld, signal.SIGCONT)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        if worker and locks.owner_state(worker) == "alive":
            os.kill(worker["pid"], signal.SIGKILL)
        for path in (Path(lab_env["LAB_STORE"]) / "progress").glob("*-mysql-backup.json"):
            path.unlink()
    # the next backup is not blocked by the killed one
    after = playbook("backup", "-e", "lifeboat_progress_interval_s=0")
    output = after.communicate(timeout=600)[0]
    assert after.returncode == 0, output[-4000:]


def test_kill_9_of_a_controller_the_host_cannot_see_leaves_no_worker_and_no_blocking_lease(lab_env, big_db):
    """As on a remote host: the modules get a run owner on another machine (an identity this host
    cannot judge), so nothing but the controller's polls (run_progress) tethers the worker. The
    server is paused right after the kill, so the dump cannot simply finish before the tether acts."""
    elsewhere = dict(locks.process_identity(os.getpid()), host="controller-elsewhere")
    assert locks.owner_state(elsewhere) == "unknown"
    mysqld = lab_mysqld_pid(lab_env)
    store = Store(lab_env["LAB_STORE"])
    proc = playbook("backup", "-e", json.dumps({"lifeboat_run_owner": elsewhere}))
    worker, stopped, set_id = None, False, None
    try:
        seen = read_until(proc, "lab-mysql | mysql backup [running]")
        [set_id] = set(re.findall(r"mysql \| back up into set (mysql_[0-9TZ]+_[0-9a-f]+)", seen))
        status = running_status(lab_env["LAB_STORE"])
        worker = status["worker"]
        assert status["run_owner"]["host"] == "controller-elsewhere" and locks.owner_state(worker) == "alive"
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        os.kill(mysqld, signal.SIGSTOP)
        stopped = True
        proc.wait(30)
        while locks.owner_state(worker) == "alive" and time.monotonic() - killed < 30:
            time.sleep(0.5)
        assert locks.owner_state(worker) == "dead", f"the backup worker {worker['pid']} outlived its controller by 30 s"
        os.kill(mysqld, signal.SIGCONT)
        stopped = False
        [run] = [r for r in json.loads(subprocess.run(
            [str(REPO / ".venv" / "bin" / "lifeboat"), "status", "--json", "--store", lab_env["LAB_STORE"]],
            capture_output=True, text=True, check=True).stdout) if r["id"] == status["id"]]
        assert run["liveness"] == "abandoned" and "polls stopped" in run["reason"]
        assert set_id not in [s.set_id for s in store.list_sets()]  # never published
        [lease] = [x for x in store.lease_status() if x["set_id"] == set_id]
        assert lease["state"] == "stale" and "stopped itself" in lease["reason"]
    finally:
        if stopped:
            os.kill(mysqld, signal.SIGCONT)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        if worker and locks.owner_state(worker) == "alive":
            os.kill(worker["pid"], signal.SIGKILL)
        for path in (Path(lab_env["LAB_STORE"]) / "progress").glob("*-mysql-backup.*"):
            path.unlink()
    try:
        # the next backup takes the abandoned set over at once (its lease would hold 5 minutes otherwise)
        after = playbook("backup", "-e", "lifeboat_progress_interval_s=0")
        output = after.communicate(timeout=600)[0]
        assert after.returncode == 0, output[-4000:]
        assert not (store.partial_root / set_id).exists()
    finally:
        if set_id and (store.partial_root / set_id).exists():  # never leave the lease to block later tests
            subprocess.run([str(REPO / ".venv" / "bin" / "lifeboat"), "abort", set_id, "--force", "--store",
                            lab_env["LAB_STORE"]], capture_output=True, check=False)


def lab_mysqld_pid(lab_env) -> int:
    """The pid of THIS lab's mysqld (its pid file under the lab state folder) - never another server."""
    with mysql(lab_env) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@pid_file")
        pid_file = Path(cur.fetchone()[0])
    if not pid_file.is_absolute():
        with mysql(lab_env) as conn, conn.cursor() as cur:
            cur.execute("SELECT @@datadir")
            pid_file = Path(cur.fetchone()[0]) / pid_file
    assert str(pid_file).startswith(lab_env["LAB_STATE_DIR"]), pid_file
    return int(pid_file.read_text().split()[0])


def test_a_backup_stalled_by_a_paused_server_is_flagged_by_the_health_report(lab_env, big_db):
    proc = playbook("backup")
    mysqld = lab_mysqld_pid(lab_env)
    stopped = False
    try:
        read_until(proc, "lab-mysql | mysql backup [running]")
        os.kill(mysqld, signal.SIGSTOP)
        stopped = True
        time.sleep(5)
        report = health.build_report(Store(lab_env["LAB_STORE"]), health.Thresholds(progress_stall_s=3))
        [run] = [r for r in report["runs_in_progress"] if r["component"] == "mysql" and r["kind"] == "backup"]
        assert run["liveness"] == "stalled" and run["idle_s"] > 3
        assert [p for p in report["problems"] if "has not moved" in p["message"] and p["component"] == "mysql"]
        assert report["status"] != "ok"
        os.kill(mysqld, signal.SIGCONT)
        stopped = False
        output = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, output[-4000:]
    finally:
        if stopped:
            os.kill(mysqld, signal.SIGCONT)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    report = health.build_report(Store(lab_env["LAB_STORE"]), health.Thresholds(progress_stall_s=3))
    assert report["runs_in_progress"] == []


def test_a_failing_async_backup_still_fails_its_task_with_the_modules_error(lab_env):
    started = time.monotonic()
    proc = playbook("backup", "-e", "lifeboat_mysql_backup_password=wrong-password")
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0
    failed = [line for line in output.splitlines() if line.startswith("fatal: [lab-mysql]")]
    assert failed and "Access denied" in " ".join(failed), output[-4000:]
    assert "mysql | backup in progress" in output  # it failed in the waiting task, from the async job's result
    assert time.monotonic() - started < 120
    assert not list((Path(lab_env["LAB_STORE"]) / "progress").glob("*.json"))


# --------------------------------------------------------------------------- as AWX and cron run it
# AWX cannot run here; what it (and cron) look like is no terminal and a JSON stdout callback:
# ANSIBLE_STDOUT_CALLBACK=json (ansible.posix.json, unpacked into .collections by scripts/setup.sh).
JSON_CALLBACK = {"ANSIBLE_STDOUT_CALLBACK": "json"}


def run_with_json_callback(*extra: str) -> tuple[int, str, list[tuple[float, str]], float]:
    """The backup with the JSON stdout callback: (exit code, stdout, stderr lines with the time each
    arrived, the time the playbook ended)."""
    proc = playbook("backup", *extra, env_extra=JSON_CALLBACK, stderr=subprocess.PIPE)
    err_lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: err_lines.extend((time.monotonic(), line) for line in proc.stderr),
                              daemon=True)
    reader.start()
    try:
        stdout = proc.communicate(timeout=900)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    ended = time.monotonic()
    reader.join(30)
    return proc.returncode, stdout, err_lines, ended


def task_results(document: dict, host: str, name_part: str) -> list[dict]:
    """The results of ``host`` in every task of ``document`` (the json callback's) named with ``name_part``."""
    return [t["hosts"][host] for play in document["plays"] for t in play["tasks"]
            if name_part in t["task"]["name"] and host in t["hosts"]]


def test_with_the_json_stdout_callback_stdout_is_one_document_and_progress_lines_reach_stderr_while_it_runs(
        lab_env, big_db):
    # lines every 0.5 s: on a quiet machine the ~560 MB backup takes under 3 s
    code, stdout, err_lines, ended = run_with_json_callback("-e", "lifeboat_progress_interval_s=0.5")
    stderr = "".join(line for _t, line in err_lines)
    assert code == 0, stderr[-3000:] + stdout[-3000:]
    document = json.loads(stdout)  # the whole of stdout: one JSON document, no progress line in it
    [result] = task_results(document, "lab-mysql", "mysql | backup in progress")
    assert result["finished"] is True and result["tables"] and result["rows"] >= 2 * ROWS_PER_TABLE
    assert not result.get("failed") and "progress_line" not in result
    assert document["stats"]["lab-mysql"]["failures"] == 0
    lines = [(t, line) for t, line in err_lines if LINE_RE.match(line)]
    assert_rising(progress_lines("".join(line for _t, line in lines), "backup"), "backup", stderr)
    assert lines[0][0] < ended - 1.0, "the progress lines only arrived when the playbook ended"
    assert not LINE_RE.search(stdout)


def test_a_step_of_a_second_ends_its_waiting_task_within_seconds_not_after_an_interval(lab_env):
    # the default interval (15 s): silent polls every second at first (then 1/8 of the time run so far)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    run = subprocess.run(["ansible-playbook", "-i", "inventories/lab", "playbooks/backup.yml", "-e", "components=redis",
                          "-e", "lifeboat_offsite_enabled=false"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    document = json.loads(run.stdout)
    [task] = [t for play in document["plays"] for t in play["tasks"]
              if "redis | backup in progress" in t["task"]["name"]]
    took = task["task"]["duration"]  # the json callback's: start of the task, end of its last result
    seconds = datetime.fromisoformat(took["end"].rstrip("Z")) - datetime.fromisoformat(took["start"].rstrip("Z"))
    assert task["task"]["name"].endswith("(a line every 15 s)")
    assert seconds.total_seconds() < 10, took
    assert task["hosts"]["lab-redis"]["finished"] is True and not task["hosts"]["lab-redis"].get("failed")


def test_with_the_json_stdout_callback_a_failing_backup_still_fails_its_task_at_once(lab_env):
    started = time.monotonic()
    code, stdout, err_lines, _ended = run_with_json_callback("-e", "lifeboat_mysql_backup_password=wrong-password")
    assert code != 0
    document = json.loads(stdout)
    [failed] = task_results(document, "lab-mysql", "mysql | backup in progress")
    assert failed["failed"] is True and "Access denied" in failed["msg"], failed
    assert document["stats"]["lab-store"]["failures"] >= 1  # the run's final result: failed
    assert time.monotonic() - started < 120
    assert not list((Path(lab_env["LAB_STORE"]) / "progress").glob("*.json"))


# --------------------------------------------------------------------------- off-site copies
OFFSITE_LINE_RE = re.compile(r"^lab-store \| offsite copy \[[a-z]+\]: (.+?): ([0-9.]+) (B|KiB|MiB|GiB)\b", re.M)


@pytest.fixture
def big_files(tmp_path):
    """1 GiB that neither compresses nor dedups: sixteen files of random bytes. A warm folder copy
    (hash check, copy, check of the copy) ran at 160-400 MiB/s here and part of it is done before
    the polling starts: 150 MB was always over before the second line at interval 1, 500 MB
    sometimes."""
    folder = tmp_path / "files"
    folder.mkdir()
    for n in range(16):
        (folder / f"blob{n}.bin").write_bytes(os.urandom(64 << 20))
    return folder


@pytest.mark.slow
def test_an_offsite_copy_prints_rising_progress_lines_before_it_ends(lab_env, tmp_path, big_files):
    # a warm folder copy ran at 160-400 MiB/s here, and a poll took up to 1 s under load: the first
    # line may still say "starting" (0 B: the module importing, the set's hash check not yet reported)
    target = tmp_path / "offsite"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    argv = ["ansible-playbook", "-i", "inventories/lab", "playbooks/backup.yml", "-e", "components=app",
            "-e", json.dumps({"lifeboat_app_paths": {"big": str(big_files)}, "lifeboat_progress_interval_s": 1,
                              "lifeboat_offsite_enabled": True, "lifeboat_offsite_kind": "folder",
                              "lifeboat_offsite_target": str(target)})]
    run = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=900, check=False)
    output = run.stdout + run.stderr
    [set_id] = re.findall(r"app \| back up files into set (app_[0-9TZ]+_[0-9a-f]+)", output) or [None]
    try:
        assert run.returncode == 0, output[-4000:]
        lines = [(m.group(1), int(float(m.group(2)) * UNITS[m.group(3)])) for m in OFFSITE_LINE_RE.finditer(output)]
        # starting, the hash check of the set, the copy: each line at or past the one before, the last past the first
        rank = {"starting": -1, f"offsite check {set_id}": 0, f"offsite copy {set_id}": 1}
        assert len(lines) >= 2 and {op for op, _done in lines} <= set(rank), output[-4000:]
        position = [(rank[op], done) for op, done in lines]
        assert position == sorted(position) and position[-1] > position[0], lines
        assert any(op == f"offsite copy {set_id}" and done > 0 for op, done in lines)  # the copy itself moving
        assert output.index("lab-store | offsite copy [running]") < \
            output.index("TASK [lifeboat_common : Remember the off-site result]")
        assert (target / set_id / "backup_manifest.json").is_file()
        assert not list((Path(lab_env["LAB_STORE"]) / "progress").glob("*-offsite-*"))  # status files removed
    finally:
        if set_id:
            shutil.rmtree(Path(lab_env["LAB_STORE"]) / set_id, ignore_errors=True)
