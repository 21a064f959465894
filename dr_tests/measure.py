"""What a drill measures: the inventory's view, health over time, playbook steps, data fingerprints.

Times are seconds since the epoch (``time.time()``). Secrets read from the inventory
(passwords, tokens) are used for connections only: never printed, logged or written
outside 0600 files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

REPO_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = REPO_DIR / ".venv" / "bin"
PLAYBOOK_DIR = REPO_DIR / "playbooks"
VARS_PLAYBOOK = Path(__file__).resolve().parent / "inventory_vars.yml"


class NotDrillable(Exception):
    """The inventory or the stack is not fit for a drill (the message says why and what to do)."""


# --- inventory -----------------------------------------------------------------------------
@dataclass
class DrillInventory:
    """An Ansible inventory as the drill sees it: groups and rendered ``lifeboat_*`` vars per host."""

    path: Path
    groups: dict[str, list[str]]
    hosts: dict[str, dict]

    def host_of(self, group: str) -> str:
        members = self.groups.get(group) or []
        if not members:
            raise NotDrillable(f"inventory {self.path} has no host in group '{group}' -- add one")
        return members[0]

    def var(self, group: str, name: str, default=None):
        """Variable ``name`` of the first host of ``group`` (``default`` when unset)."""
        return self.hosts[self.host_of(group)].get(name, default)

    def any_var(self, name: str, default=None):
        """``name`` from the first host that sets it."""
        for values in self.hosts.values():
            if name in values:
                return values[name]
        return default

    @property
    def app_url(self) -> str:
        return str(self.var("app", "lifeboat_app_url")).rstrip("/")

    def testinfra_host(self, host: str):
        """A testinfra host for inventory host ``host``.

        SSH hosts (``ansible_connection: ssh``) get testinfra's ssh backend with the
        connection settings *as Ansible rendered them* (user, address, port, key file,
        ``ansible_ssh_common_args``): testinfra's ansible backend reads the raw
        ``ansible-inventory --list`` and would pass a templated key path such as the
        multi-host lab's ``{{ lifeboat_state_dir }}/...`` to ssh verbatim. Other hosts go
        through testinfra's ansible backend (runs ansible-inventory: the venv must be on PATH).
        """
        import testinfra
        put_venv_on_path()
        values = self.hosts.get(host, {})
        if values.get("ansible_connection") in ("ssh", "smart"):
            return testinfra.get_host(ssh_spec(host, values), **ssh_options(values))
        return testinfra.get_host(f"ansible://{host}?ansible_inventory={self.path}")


def ssh_spec(host: str, values: dict) -> str:
    """``ssh://USER@ADDRESS[:PORT]`` of a host from its rendered connection variables."""
    user = values.get("ansible_user")
    port = values.get("ansible_port")
    return (f"ssh://{f'{user}@' if user else ''}{values.get('ansible_host') or host}"
            f"{f':{int(port)}' if port else ''}")


def ssh_options(values: dict) -> dict[str, str]:
    """testinfra ssh backend options: the key file and the ssh arguments Ansible would use."""
    options = {}
    if values.get("ansible_ssh_private_key_file"):
        options["ssh_identity_file"] = str(values["ansible_ssh_private_key_file"])
    extra = str(values.get("ansible_ssh_common_args") or "")
    # ControlMaster=no: no shared connection that could hang across a partition
    options["ssh_extra_args"] = extra if "controlmaster" in extra.lower() else f"-o ControlMaster=no {extra}".strip()
    return options


def put_venv_on_path() -> None:
    """Make this process find the venv's ansible-* (testinfra runs them) and the repo's ansible.cfg."""
    if os.environ.get("PATH", "").split(os.pathsep)[0] != str(VENV_BIN):
        os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO_DIR / "ansible.cfg"))


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ansible-* subprocesses: the repo's ansible.cfg and the venv first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO_DIR / "ansible.cfg")
    env.update(extra or {})
    return env


def raw_hostvars(inventory: Path) -> dict[str, dict]:
    """Every host's variables as ``ansible-inventory --list`` shows them (templates unrendered)."""
    listing = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
                             capture_output=True, text=True, env=ansible_env(), check=False, timeout=120)
    if listing.returncode != 0:
        raise NotDrillable(f"ansible-inventory cannot read {inventory}: {listing.stderr.strip()[-500:]}")
    return json.loads(listing.stdout).get("_meta", {}).get("hostvars", {})


def drill_allowed(inventory: Path) -> bool:
    """True only if ``ansible-inventory --list`` shows ``lifeboat_drill_allowed: true`` on every host."""
    hostvars = raw_hostvars(inventory)
    return bool(hostvars) and all(v.get("lifeboat_drill_allowed") is True for v in hostvars.values())


def inventory_sets(inventory: Path, name: str) -> bool:
    """Whether any host of ``inventory`` sets variable ``name`` (False when it cannot be read)."""
    try:
        return any(name in values for values in raw_hostvars(inventory).values())
    except NotDrillable:
        return False


def load_inventory(inventory: Path) -> DrillInventory:
    """Refuse an inventory without ``lifeboat_drill_allowed: true``; else render its variables."""
    inventory = inventory.resolve()
    if not inventory.exists():
        raise NotDrillable(f"inventory {inventory} does not exist -- give --inventory PATH")
    if not drill_allowed(inventory):
        raise NotDrillable(
            f"inventory {inventory} does not allow drills: every host needs lifeboat_drill_allowed: true "
            "(drills destroy data -- set it only for a lab or a disposable environment)")
    with tempfile.TemporaryDirectory(prefix="lifeboat-drill-") as tmp:
        out = Path(tmp) / "vars.json"
        run = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(VARS_PLAYBOOK),
             "-e", f"lifeboat_drill_vars_file={out}"],
            capture_output=True, text=True, env=ansible_env(), check=False, timeout=300)
        if run.returncode != 0 or not out.exists():
            raise NotDrillable(f"cannot render the variables of {inventory}: {run.stdout[-800:]}")
        data = json.loads(out.read_text())
    return DrillInventory(path=inventory, groups=data["groups"], hosts=data["hosts"])


LISTENER_PATTERN = re.compile(r'\(\("([^"]*)",pid=(\d+)')


def listener(host, port: int) -> tuple[int, str] | None:
    """``(pid, command name)`` of the process listening on TCP ``port`` of ``host`` (a testinfra
    host; one ``ss -Hltnp`` there), or None when nothing listens. ``ss`` lists only sockets
    held by existing processes, so a listener found is a running process."""
    out = host.run(f"ss -Hltnp 'sport = :{int(port)}'").stdout
    match = LISTENER_PATTERN.search(out)
    return (int(match.group(2)), match.group(1)) if match else None


def listener_pid(host, port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` of ``host`` (a testinfra host), or None."""
    found = listener(host, port)
    return found[0] if found else None


def app_port(inv: DrillInventory) -> int:
    return int(inv.app_url.rsplit(":", 1)[1].split("/", 1)[0])


def vault_port(inv: DrillInventory) -> int:
    return int(str(inv.var("vault", "lifeboat_vault_addr")).rstrip("/").rsplit(":", 1)[1])


SERVICES = {  # service -> (inventory group, port getter)
    "mysql": ("mysql", lambda inv: int(inv.var("mysql", "lifeboat_mysql_port"))),
    "redis": ("redis", lambda inv: int(inv.var("redis", "lifeboat_redis_port"))),
    "vault": ("vault", vault_port),
    "app": ("app", app_port),
}


def service_problem(inv: DrillInventory, service: str) -> str | None:
    """Why ``service`` is not steady (nothing listens on its port of its host; on a Compose
    deployment: its container does not run or its address refuses connections), or None."""
    from dr_tests import containers

    if containers.is_compose(inv):
        return containers.service_problem(inv, service)
    group, port_of = SERVICES[service]
    port = port_of(inv)
    if listener(inv.testinfra_host(inv.host_of(group)), port) is None:
        return f"{service}: nothing listens on port {port} of {inv.host_of(group)}"
    return None


def steady_state_problems(inv: DrillInventory) -> list[str]:
    """What is unhealthy, checked with testinfra on the inventory's hosts (all services at once:
    over SSH each check is a connection): each service's port is listened on by a running
    process, and the app's /health answers 200. Empty = steady."""
    with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
        problems = [p for p in pool.map(lambda service: service_problem(inv, service), SERVICES) if p]
    if not health_ok(inv.app_url):
        problems.append(f"app: GET {inv.app_url}/health is not 200")
    return problems


# --- health --------------------------------------------------------------------------------
def health_ok(app_url: str, timeout_s: float = 3.0) -> bool:
    """True when ``GET /health`` answers 200 within ``timeout_s``."""
    try:
        return requests.get(f"{app_url}/health", timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


def wait_healthy(app_url: str, timeout_s: float, interval_s: float = 0.5) -> float | None:
    """Poll /health; the time of the first 200, or None if none came within ``timeout_s``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if health_ok(app_url):
            return time.time()
        time.sleep(interval_s)
    return None


def newest_canaries(app_url: str, seq_range: tuple[int, int], timeout_s: float = 3.0) -> dict | None:
    """``GET /canary/latest?from=A&to=B``: the newest canary record per store in the seq
    range (a real read of data the drill wrote), or None when the app does not answer 200."""
    first, end = seq_range
    try:
        answer = requests.get(f"{app_url}/canary/latest", params={"from": first, "to": end}, timeout=timeout_s)
    except requests.RequestException:
        return None
    return answer.json() if answer.status_code == 200 else None


def serving_problem(app_url: str, seq_range: tuple[int, int], stores: list[str]) -> str | None:
    """Why the app does not serve the drill's data yet (None when it does): ``/health`` must
    answer 200 AND ``/canary/latest`` must return a record of this drill from every store in
    ``stores`` -- a read of real data, not a ping."""
    if not health_ok(app_url):
        return "GET /health is not 200"
    newest = newest_canaries(app_url, seq_range)
    if newest is None:
        return "GET /canary/latest is not 200"
    missing = [s for s in stores if not isinstance(newest.get(s), dict)]
    return f"no canary record of this drill readable from {', '.join(missing)}" if missing else None


def wait_serving(app_url: str, seq_range: tuple[int, int], stores: list[str], timeout_s: float,
                 interval_s: float = 0.5) -> float | None:
    """The time the app first served a real read of the drill's data (see :func:`serving_problem`),
    or None if it did not within ``timeout_s``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if serving_problem(app_url, seq_range, stores) is None:
            return time.time()
        time.sleep(interval_s)
    return None


class HealthMonitor(threading.Thread):
    """Polls /health every ``interval_s`` and records ``(time, ok)`` samples until ``stop()``."""

    def __init__(self, app_url: str, interval_s: float = 0.5) -> None:
        super().__init__(name="health-monitor", daemon=True)
        self.app_url = app_url
        self.interval_s = interval_s
        self.samples: list[tuple[float, bool]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.time(), health_ok(self.app_url, timeout_s=2.0)))
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


# --- timeline ------------------------------------------------------------------------------
@dataclass
class Step:
    """One step of a drill: ``start``/``end`` in epoch seconds; ``tasks`` from lifeboat_timer."""

    name: str
    kind: str  # setup | fault | recovery | check
    start: float
    end: float
    ok: bool = True
    detail: str = ""
    tasks: list[dict] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.end - self.start


class PlaybookFailed(Exception):
    """A playbook exited non-zero (or is missing); the message names it and ends with its last
    output lines; ``step`` is its timeline entry when it ran."""

    def __init__(self, message: str, step: Step | None = None) -> None:
        super().__init__(message)
        self.step = step


def run_playbook(inventory: Path, playbook: str, extra_vars: dict, log_dir: Path, kind: str = "recovery",
                 timeout_s: float = 3600) -> Step:
    """Run ``ansible-playbook -i INVENTORY playbooks/PLAYBOOK -e @vars.json`` as a user would.

    Output goes to ``log_dir/<playbook>.log``; per-task timings (the lifeboat_timer
    callback) to ``log_dir/<playbook>.timer.json``. Raises :class:`PlaybookFailed` on a
    non-zero exit, after recording nothing else.
    """
    path = PLAYBOOK_DIR / playbook
    if not path.exists():
        raise PlaybookFailed(f"recovery playbook {path} does not exist -- the scenario cannot be drilled yet")
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(playbook).stem
    timer_file = log_dir / f"{stem}.timer.json"
    vars_file = log_dir / f"{stem}.vars.json"
    fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(extra_vars, out)
    env = ansible_env({"ANSIBLE_CALLBACKS_ENABLED": "lifeboat.dr.lifeboat_timer",
                       "LIFEBOAT_TIMER_FILE": str(timer_file), "ANSIBLE_NOCOLOR": "1"})
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(path), "-e", f"@{vars_file}"]
    start = time.time()
    with open(log_dir / f"{stem}.log", "w") as log:
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
        code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_DIR,
                              check=False, timeout=timeout_s).returncode
    end = time.time()
    tasks = json.loads(timer_file.read_text())["tasks"] if timer_file.exists() else []
    step = Step(name=playbook, kind=kind, start=start, end=end, ok=code == 0, tasks=tasks,
                detail=" ".join(f"-e {k}={v}" for k, v in extra_vars.items()))
    if code != 0:
        tail = "\n".join((log_dir / f"{stem}.log").read_text().splitlines()[-25:])
        raise PlaybookFailed(f"playbook {playbook} failed (exit {code}) after {end - start:.1f} s; "
                             f"log {log_dir / (stem + '.log')}:\n{tail}", step)
    return step


# --- data fingerprints ---------------------------------------------------------------------
CANARY_TABLE, CANARY_KEY, CANARY_FILE = "canary", "canary", "canary.log"


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def mysql_fingerprint(inv: DrillInventory) -> dict[str, str]:
    """``CHECKSUM TABLE ... EXTENDED`` of every base table of ``demo`` except the canary table."""
    import pymysql
    conn = pymysql.connect(host=str(inv.var("mysql", "lifeboat_mysql_host")),
                           port=int(inv.var("mysql", "lifeboat_mysql_port")),
                           user=inv.var("mysql", "lifeboat_mysql_user"),
                           password=inv.var("mysql", "lifeboat_mysql_password"), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'demo' "
                        "AND table_type = 'BASE TABLE' AND table_name <> %s ORDER BY table_name", (CANARY_TABLE,))
            tables = [row[0] for row in cur.fetchall()]
            result = {}
            for table in tables:
                cur.execute(f"CHECKSUM TABLE `demo`.`{table}` EXTENDED")
                result[f"demo.{table}"] = str(cur.fetchone()[1])
            return result
    finally:
        conn.close()


def redis_value(client, key: bytes):
    """A canonical form of a key's value (independent of the encoding Redis chose)."""
    kind = client.type(key).decode()
    if kind == "string":
        value = client.get(key)
    elif kind == "hash":
        value = sorted(client.hgetall(key).items())
    elif kind == "list":
        value = client.lrange(key, 0, -1)
    elif kind == "set":
        value = sorted(client.smembers(key))
    elif kind == "zset":
        value = client.zrange(key, 0, -1, withscores=True)
    elif kind == "stream":
        value = [(entry_id, sorted(fields.items())) for entry_id, fields in client.xrange(key)]
    else:
        value = None
    return [kind, value, client.ttl(key) > 0]


def redis_fingerprint(inv: DrillInventory) -> dict[str, str]:
    """Digest per database of every key's canonical value and TTL presence, except db 0's canary."""
    import redis
    host, port = str(inv.var("redis", "lifeboat_redis_host")), int(inv.var("redis", "lifeboat_redis_port"))
    password = inv.var("redis", "lifeboat_redis_password")
    admin = redis.Redis(host=host, port=port, password=password, socket_timeout=5)
    try:
        databases = sorted(int(name[2:]) for name in admin.info("keyspace"))
    finally:
        admin.close()
    result = {}
    for db in databases:
        client = redis.Redis(host=host, port=port, password=password, db=db, socket_timeout=5)
        try:
            keys = sorted(k for k in client.scan_iter(count=1000) if not (db == 0 and k == CANARY_KEY.encode()))
            values = repr([(k, redis_value(client, k)) for k in keys]).encode()
            result[f"db{db}"] = hashlib.sha256(values).hexdigest()[:16]
            result[f"db{db} keys"] = str(len(keys))
        finally:
            client.close()
    return result


def vault_fingerprint(inv: DrillInventory) -> dict[str, str]:
    """Digest of the Vault canary secret ``secret/lifeboat/canary`` (KV v2)."""
    addr, token = inv.var("vault", "lifeboat_vault_addr"), inv.var("vault", "lifeboat_vault_token")
    answer = requests.get(f"{addr}/v1/secret/data/lifeboat/canary", headers={"X-Vault-Token": token}, timeout=5)
    answer.raise_for_status()
    return {"secret/lifeboat/canary": digest(answer.json()["data"]["data"])}


def files_fingerprint(inv: DrillInventory) -> dict[str, str]:
    """SHA-256 of every file under the app storage except the canary log (which keeps growing)."""
    root = Path(inv.var("app", "lifeboat_app_storage"))
    result = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != CANARY_FILE):
        result[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return result


FINGERPRINTS = {"mysql": mysql_fingerprint, "redis": redis_fingerprint, "vault": vault_fingerprint,
                "files": files_fingerprint}


def fingerprint(inv: DrillInventory) -> dict[str, dict[str, str]]:
    """Every component's fingerprint; a component that cannot be read maps to ``{"error": reason}``."""
    result = {}
    for name, fn in FINGERPRINTS.items():
        try:
            result[name] = fn(inv)
        except Exception as err:  # noqa: BLE001 - an unreadable component is a difference, not a crash
            result[name] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
    return result


def fingerprint_differences(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[str]:
    """Human-readable differences (``component item: before -> after``); empty when equal.

    A component that could not be read (``{"error": ...}``) on either side is a difference
    even when both sides hold the same error: an unreadable component was not checked, so
    it can never count as equal.
    """
    differences = []
    for component in sorted(set(before) | set(after)):
        old, new = before.get(component, {}), after.get(component, {})
        unreadable = [f"{when}: {side['error']}" for when, side in (("before", old), ("after", new)) if "error" in side]
        if unreadable:
            differences.append(f"{component} could not be read ({'; '.join(unreadable)}): not checked, not equal")
            continue
        for item in sorted(set(old) | set(new)):
            if old.get(item) != new.get(item):
                differences.append(f"{component} {item}: {old.get(item, 'missing')} -> {new.get(item, 'missing')}")
    return differences


def unreadable_components(prints: dict[str, dict[str, str]]) -> list[str]:
    """``component: error`` for every component a fingerprint could not read."""
    return [f"{name}: {value['error']}" for name, value in sorted(prints.items()) if "error" in value]


# --- backup point --------------------------------------------------------------------------
CANARY_STORE_COMPONENT = {"mysql": "mysql", "redis": "redis", "file": "app"}


def epoch_of(text: str) -> float:
    """Epoch seconds of a manifest time (``2026-01-01T00:00:00.123Z``)."""
    return datetime.fromisoformat(text[:-1] + "+00:00").timestamp() if text.endswith("Z") else float("nan")


def backup_points(store: Path, set_id: str) -> tuple[dict[str, float], str]:
    """When the data of set ``set_id`` (in ``store``) was captured, per component.

    From its ``backup_manifest.json``: each component's capture end
    (``component_metadata.<c>.lifeboat_capture.finished``: the component holds nothing
    newer), else the set's ``end_time``. Returns ``({component: epoch}, source)``; when the
    manifest cannot be read, the time in the set id (the set's start) for every component
    and a source saying so. Raises ValueError only for an id that carries no time.
    """
    try:
        manifest = json.loads((Path(store) / set_id / "backup_manifest.json").read_text())
        end = epoch_of(manifest["end_time"])
        points = {}
        for component in manifest.get("components", []):
            capture = (manifest.get("component_metadata", {}).get(component) or {}).get("lifeboat_capture") or {}
            points[component] = epoch_of(capture["finished"]) if capture.get("finished") else end
        return points, "its manifest: component capture end"
    except (OSError, ValueError, KeyError, TypeError):
        match = re.search(r"_(\d{8}T\d{6}Z)_", set_id)
        if not match:
            raise ValueError(f"backup id {set_id!r} carries no time and {store}/{set_id} has no readable manifest "
                             "-- give --backup-path STORE holding the set") from None
        when = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        return {c: when for c in CANARY_STORE_COMPONENT.values()}, "the time in its id (manifest unreadable)"


def mysql_method_of(store: Path, set_id: str) -> str | None:
    """``physical`` or ``logical``: how set ``set_id`` (in ``store``) backed MySQL up, from its manifest's
    ``component_metadata.mysql.method``; None when the set has no mysql component or no readable manifest."""
    try:
        manifest = json.loads((Path(store) / set_id / "backup_manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if "mysql" not in manifest.get("components", []):
        return None
    method = (manifest.get("component_metadata", {}).get("mysql") or {}).get("method")
    return "physical" if method == "physical" else "logical"
