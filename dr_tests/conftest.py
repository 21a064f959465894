"""The DR drill pytest plugin: options, scenario loading, fixtures, HTML report and drill history.

Options (see docs/drills.md):
  --list-scenarios        print ``id<TAB>severity<TAB>rto_s<TAB>rpo_s<TAB>title`` per scenario and exit 0
  --inventory PATH        inventory to drill (default inventories/lab); must set lifeboat_drill_allowed: true
  --backup-id ID          restore this backup instead of taking a fresh one before the fault
  --backup-path PATH      the store to restore from (lifeboat_store of the recovery playbooks)
  --dataset-size N        seed the lab's demo data to N rows first (lab inventories only)
  --drill-profile NAME    quick | full (default: quick when -m selects quick, else full)
  --drill-target ID:KEY=N override a target (KEY rto_s or rpo_s), e.g. redis_data_loss:rpo_s=1
  --canary-rate N         canary writes per second (default 10; a drill needs >= 20 acknowledged writes
                          and >= 1 per second of the window it promises to keep)
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health
from dr_tests import measure
from dr_tests.measure import REPO_DIR, DrillInventory, NotDrillable
from dr_tests.report import (
    DrillRecord,
    canary_plot_png,
    fmt_s,
    rto_by_mysql_base,
    rto_by_mysql_base_html,
    timeline_html,
)

SCENARIOS_FILE = Path(__file__).resolve().parent / "scenarios.yml"
DEFAULT_INVENTORY = REPO_DIR / "inventories" / "lab"
MULTIHOST_INVENTORY = REPO_DIR / "inventories" / "lab-multihost"
COMPOSE_INVENTORY = REPO_DIR / "inventories" / "lab-compose"
RECORD_KEY = pytest.StashKey[DrillRecord]()
RESULTS: list[dict] = []

measure.put_venv_on_path()


def scenarios_file() -> Path:
    """``$LIFEBOAT_DRILL_SCENARIOS`` when set (your own scenarios, same format), else dr_tests/scenarios.yml."""
    chosen = os.environ.get("LIFEBOAT_DRILL_SCENARIOS")
    return Path(chosen) if chosen else SCENARIOS_FILE


def load_scenarios(path: Path | None = None) -> list[dict]:
    """The scenarios of ``scenarios.yml`` (a list of mappings, see that file's header), or of
    ``path`` / ``$LIFEBOAT_DRILL_SCENARIOS``."""
    return yaml.safe_load((path or scenarios_file()).read_text())["scenarios"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lifeboat-drills", "Lifeboat DR drills")
    group.addoption("--list-scenarios", action="store_true", help="list the drill scenarios and exit")
    group.addoption("--inventory", default=None, help="Ansible inventory to drill (default inventories/lab)")
    group.addoption("--backup-id", default=None, help="drill with this backup id instead of a fresh backup")
    group.addoption("--backup-path", default=None, help="backup store holding --backup-id")
    group.addoption("--dataset-size", type=int, default=None, help="seed the lab's demo data to N rows first")
    group.addoption("--drill-profile", choices=["quick", "full"], default=None, help="target profile")
    group.addoption("--drill-target", action="append", default=[], metavar="ID:KEY=SECONDS",
                    help="override a target, e.g. redis_data_loss:rpo_s=1 (repeatable)")
    group.addoption("--canary-rate", type=float, default=10.0, metavar="N",
                    help="canary writes per second (default 10)")


def profile_of(config: pytest.Config) -> str:
    chosen = config.getoption("--drill-profile")
    if chosen:
        return chosen
    markexpr = config.getoption("markexpr", "") or ""
    return "quick" if "quick" in markexpr and "not quick" not in markexpr else "full"


def target_overrides(config: pytest.Config) -> dict[str, dict[str, float]]:
    """``--drill-target ID:KEY=N`` options as ``{ID: {KEY: N}}``."""
    overrides: dict[str, dict[str, float]] = {}
    for text in config.getoption("--drill-target"):
        try:
            scenario, assignment = text.split(":", 1)
            key, value = assignment.split("=", 1)
            if key not in ("rto_s", "rpo_s"):
                raise ValueError
            overrides.setdefault(scenario, {})[key] = float(value)
        except ValueError:
            raise pytest.UsageError(f"--drill-target {text!r}: expected ID:rto_s=N or ID:rpo_s=N") from None
    return overrides


def targets(scenario: dict, profile: str, inventory_targets: dict | None = None,
            overrides: dict | None = None) -> tuple[float, float]:
    """``(rto_s, rpo_s)``: scenario defaults < quick_* (quick profile) < inventory
    ``lifeboat_drill_targets`` < ``--drill-target``."""
    rto, rpo = float(scenario["rto_s"]), float(scenario["rpo_s"])
    if profile == "quick":
        rto, rpo = float(scenario.get("quick_rto_s", rto)), float(scenario.get("quick_rpo_s", rpo))
    for layer in ((inventory_targets or {}).get(scenario["id"]), (overrides or {}).get(scenario["id"])):
        if layer:
            rto, rpo = float(layer.get("rto_s", rto)), float(layer.get("rpo_s", rpo))
    return rto, rpo


def pytest_cmdline_main(config: pytest.Config):
    if not config.getoption("--list-scenarios"):
        return None
    profile, overrides = profile_of(config), target_overrides(config)
    for scenario in load_scenarios():
        rto, rpo = targets(scenario, profile, overrides=overrides)
        print(f"{scenario['id']}\t{scenario['severity']}\t{rto:g}\t{rpo:g}\t{scenario['title']}")
    return 0


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def drill_inventory_path(pytestconfig: pytest.Config) -> Path:
    chosen = pytestconfig.getoption("--inventory")
    return Path(chosen).resolve() if chosen else DEFAULT_INVENTORY


@pytest.fixture(scope="session")
def drill_inventory(drill_inventory_path: Path, pytestconfig: pytest.Config) -> DrillInventory:
    """The inventory, refused unless it sets lifeboat_drill_allowed: true; the lab seeded if asked."""
    try:
        inv = measure.load_inventory(drill_inventory_path)
    except NotDrillable as err:
        pytest.exit(f"not drillable: {err}", returncode=4)
    size = pytestconfig.getoption("--dataset-size")
    if size:
        seed_lab(inv, size)
    return inv


def lab_command(inv: DrillInventory) -> list[str] | None:
    command = inv.any_var("lifeboat_lab_command")
    return str(command).split() if command else None


def seed_lab(inv: DrillInventory, rows: int) -> None:
    command = lab_command(inv)
    if not command:
        pytest.exit("--dataset-size needs a lab inventory (lifeboat_lab_command)", returncode=4)
    subprocess.run([*command, "-q", "seed", "--rows", str(rows)], check=True, cwd=REPO_DIR, timeout=1800,
                   env=lab_subprocess_env(inv))


def lab_subprocess_env(inv: DrillInventory) -> dict[str, str]:
    state = inv.any_var("lifeboat_state_dir")
    return measure.ansible_env({"LAB_STATE_DIR": str(state)} if state else {})


def bring_lab_back(inv: DrillInventory, timeout_s: float = 180) -> str:
    """Cleanup after every drill: ``python -m lab up`` and wait for /health (lab inventories);
    returns a problem description, or "" when the stack is healthy again."""
    command = lab_command(inv)
    if command:
        run = subprocess.run([*command, "-q", "up"], capture_output=True, text=True, cwd=REPO_DIR,
                             env=lab_subprocess_env(inv), timeout=600, check=False)
        if run.returncode != 0:
            return f"'lab up' failed: {run.stderr.strip()[-500:]}"
    if measure.wait_healthy(inv.app_url, timeout_s) is None:
        return f"the app is not healthy {timeout_s:.0f} s after cleanup"
    return ""


@dataclass
class MultihostLab:
    """Whether the multi-host lab (lab/netns.py) can be used by drills that need it.

    ``available`` False comes with ``reason`` (e.g. not root); ``started`` says this session
    created it (and so removes it at the end)."""

    available: bool
    reason: str = ""
    started: bool = False


def multihost_unavailable_reason() -> str:
    """Why this machine cannot run the multi-host lab ("" when it can): root and ``ip netns``."""
    if os.geteuid() != 0:
        return "not root (network namespaces need root)"
    if not shutil.which("ip"):
        return "the program 'ip' is missing (apt-get install iproute2)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True, check=False).returncode != 0:
        return "'ip netns' is not available"
    return ""


@pytest.fixture(scope="session")
def multihost_lab() -> MultihostLab:
    """The multi-host lab, brought up for the scenarios that need it (``netns.up()`` is
    idempotent: ~1 s when it already runs) and taken down after the session only if this
    session created it (no lab namespace existed before)."""
    reason = multihost_unavailable_reason()
    if reason:
        yield MultihostLab(False, reason)
        return
    from lab import netns
    started = not any(name.startswith(netns.NS_PREFIX) for name in netns.namespaces())
    try:
        netns.up()
    except Exception as err:  # noqa: BLE001 - any failure means: drill with the fallback, say why
        yield MultihostLab(False, f"'python -m lab multihost up' failed: {str(err)[:300]}", started)
    else:
        yield MultihostLab(True, "", started)
    if started:
        netns.down()


@pytest.fixture(scope="session")
def multihost_inventory(multihost_lab: MultihostLab) -> DrillInventory:
    """inventories/lab-multihost, rendered (once per session); needs the multi-host lab up."""
    try:
        return measure.load_inventory(MULTIHOST_INVENTORY)
    except NotDrillable as err:
        pytest.fail(f"not drillable: {err}", pytrace=False)


def compose_unavailable_reason() -> str:
    """Why this machine cannot run the compose lab ("" when it can): root, podman, runc, debootstrap."""
    if os.geteuid() != 0:
        return "not root (the compose lab runs rootful podman, a bridge address and a guard route)"
    for tool in ("podman", "runc", "debootstrap"):
        if not shutil.which(tool):
            return f"the program '{tool}' is missing (make setup installs it)"
    return ""


@pytest.fixture(scope="session")
def compose_lab() -> str:
    """The compose lab (lab/compose), brought up for the scenarios that drill on containers
    (``up`` is idempotent: a few seconds when it already runs; the first run on a machine builds
    the image) and left running, as the compose tests leave it. Returns "" when it runs; why this
    machine cannot run it (not root, podman missing); or, prefixed ``failed:``, why ``up`` failed."""
    reason = compose_unavailable_reason()
    if reason:
        return reason
    run = subprocess.run([str(measure.VENV_BIN / "python"), "-m", "lab", "-q", "up", "--kind", "compose"],
                         capture_output=True, text=True, cwd=REPO_DIR, env=measure.ansible_env(), timeout=1800,
                         check=False)
    return "" if run.returncode == 0 else f"failed: 'python -m lab up --kind compose': {run.stderr.strip()[-500:]}"


@pytest.fixture(scope="session")
def compose_inventory(compose_lab: str) -> DrillInventory:
    """inventories/lab-compose, rendered (once per session); the compose lab must be up. A machine that
    cannot run it (no root or podman) skips the compose drills naming why; a lab that fails to come
    up where it can is a failed drill ("not drillable"), never a skip."""
    if compose_lab.startswith("failed:"):
        pytest.fail(f"not drillable: the compose lab did not come up: {compose_lab[len('failed: '):]}", pytrace=False)
    if compose_lab:
        pytest.skip(f"the compose lab cannot run on this machine: {compose_lab}")
    try:
        return measure.load_inventory(COMPOSE_INVENTORY)
    except NotDrillable as err:
        pytest.fail(f"not drillable: {err}", pytrace=False)


def deployment_of(inv: DrillInventory) -> str:
    """What the report calls the inventory's deployment: ``compose`` (containers), ``multihost``
    (processes on several hosts) or ``process`` (processes on this host)."""
    if inv.any_var("lifeboat_deployment") == "compose":
        return "compose"
    over_ssh = any(values.get("ansible_connection") in ("ssh", "smart") for values in inv.hosts.values())
    return "multihost" if over_ssh else "process"


@pytest.fixture
def drill_record(request: pytest.FixtureRequest) -> DrillRecord:
    """The test fills this record; the report hooks and the history read it."""
    scenario = request.node.callspec.params["scenario"]
    config = request.config
    inventory_targets = None
    if "drill_inventory" in request.fixturenames:
        inventory_targets = request.getfixturevalue("drill_inventory").any_var("lifeboat_drill_targets")
    rto, rpo = targets(scenario, profile_of(config), inventory_targets, target_overrides(config))
    record = DrillRecord(scenario=scenario["id"], title=scenario["title"], severity=scenario["severity"],
                         rto_target_s=rto, rpo_target_s=rpo, mysql_base=scenario.get("mysql_base", "logical"),
                         variant_of=scenario.get("variant_of"))
    request.node.stash[RECORD_KEY] = record
    return record


# --- report --------------------------------------------------------------------------------
def pytest_html_results_table_header(cells: list) -> None:
    cells.insert(2, "<th>Scenario</th>")
    cells.insert(3, "<th>Severity</th>")
    cells.insert(4, "<th>RTO measured / target</th>")
    cells.insert(5, "<th>RPO measured / target</th>")
    cells.insert(6, "<th>Data equal</th>")
    cells.insert(7, "<th>Fault mode</th>")
    cells.insert(8, "<th>Deployment</th>")


def pytest_html_results_summary(prefix: list, summary: list, postfix: list, session: pytest.Session) -> None:
    """The RTO of each scenario drilled with a logical and with a physical MySQL base, side by side
    (this run's drills; a method not drilled now: its newest measurement in the drill history)."""
    store = record_store(session.config)
    try:
        history = health.read_drills(store) if store is not None else []
    except OSError:
        history = []
    table = rto_by_mysql_base_html(rto_by_mysql_base(load_scenarios(), RESULTS, history))
    if table:
        prefix.append(table)


def pytest_html_results_table_row(report, cells: list) -> None:
    record: DrillRecord | None = getattr(report, "drill_record", None)
    if record is None:
        values = ["", "", "", "", "", "", ""]
    else:
        equal = {True: "yes", False: "NO", None: "—"}[record.data_equal]
        scenario = record.scenario + (f"<br><small>MySQL base: {html.escape(record.mysql_base)}</small>"
                                      if record.variant_of else "")
        values = [scenario, record.severity, f"{fmt_s(record.rto_s)} / {record.rto_target_s:.0f} s",
                  f"{fmt_s(record.rpo_s)} / {record.rpo_target_s:.0f} s<br><small>"
                  f"{html.escape(record.rpo_explanation())}</small>", equal, html.escape(record.fault_mode),
                  html.escape(record.deployment)]
    for offset, value in enumerate(values):
        cells.insert(2 + offset, f"<td>{value}</td>")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    record = item.stash.get(RECORD_KEY, None)
    if record is None or report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    if not record.message and report.longrepr is not None and not report.passed:
        record.message = str(getattr(report.longrepr, "reprcrash", None) and report.longrepr.reprcrash.message
                             or report.longrepr)[:2000]
    if report.when != "call" or record.message.startswith("not drillable"):
        record.outcome = "error"
    else:
        record.outcome = "passed" if report.passed else "failed"
    report.drill_record = record
    report.user_properties.append(("drill", json.dumps(record.history_entry())))
    extras = getattr(report, "extras", [])
    try:
        from pytest_html import extras as html_extras
    except ImportError:
        return
    png = canary_plot_png(record)
    extras.append(html_extras.html(timeline_html(record, png)))
    report.extras = extras
    write_results(item.config, record)


def write_results(config: pytest.Config, record: DrillRecord) -> None:
    """Append the record to the drill history and this run's reports/dr-results.json."""
    RESULTS.append(record.summary())
    store = record_store(config)
    if store is not None and record.outcome != "skipped":
        entry = record.history_entry()
        extra = {k: v for k, v in entry.items()
                 if k not in ("time", "scenario", "rto_s", "rto_target_s", "rpo_s", "rpo_target_s", "passed")}
        health.record_drill(store, record.scenario, rto_s=entry["rto_s"], rto_target_s=entry["rto_target_s"],
                            rpo_s=entry["rpo_s"], rpo_target_s=entry["rpo_target_s"], passed=entry["passed"],
                            **extra)
    out = REPO_DIR / "reports" / "dr-results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "drills": RESULTS}, indent=1))


def record_store(config: pytest.Config) -> Path | None:
    store = config.stash.get(STORE_KEY, None)
    return Path(store) if store else None


STORE_KEY = pytest.StashKey[str]()


@pytest.fixture(scope="session", autouse=False)
def drill_store(drill_inventory: DrillInventory, pytestconfig: pytest.Config) -> Path:
    """The backup store of the inventory (where the drill history lives)."""
    store = str(drill_inventory.var("backup_store", "lifeboat_store"))
    pytestconfig.stash[STORE_KEY] = store
    return Path(store)
