"""pitr.yml against the lab (demo database only), as operators run it: after a PITR the run
says a new base backup is needed (and `lifeboat health` warns) or takes one when asked
(`lifeboat_mysql_base_after_recovery: true`); `mode=analyze` shows the generations and the
branch point; `-e pitr_generation=N` reaches the module (the line of history of N)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog, pitr
from ansible_collections.lifeboat.dr.plugins.module_utils.edge import cli
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

REPO = Path(__file__).resolve().parents[2]


def run_playbook(name: str, *extra: str) -> subprocess.CompletedProcess:
    """``ansible-playbook -i inventories/lab playbooks/<name>.yml [extra]`` (demo database only)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    argv = ["ansible-playbook", "-i", "inventories/lab", f"playbooks/{name}.yml",
            "-e", '{"lifeboat_mysql_databases": ["demo"]}', *extra]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def newest_set_ids(env: dict[str, str]) -> list[str]:
    return [s.set_id for s in Store(env["LAB_STORE"]).list_sets()]


def _index(store):
    identities = binlog.archived_identities(store)
    assert len(identities) == 1, identities
    return binlog.load_index(store, identities[0])


def test_pitr_playbook_says_a_base_is_needed_takes_one_when_asked_and_shows_the_branch(lab_env, capsys):
    store = Store(lab_env["LAB_STORE"])
    ok(run_playbook("archive_binlogs"))
    ok(run_playbook("backup", "-e", "components=mysql"))
    ok(run_playbook("archive_binlogs"))
    first = ok(run_playbook("pitr", "-e", "mode=execute", "-e", "target=latest"))
    index = _index(store)
    gen = index.generations[-1]
    assert gen["branch"]["by"] == "PITR" and gen["branch"]["databases"] == ["demo"]
    assert re.search(rf"NEEDED: no base backup since generation {gen['generation']} began", first.stdout)
    assert cli.main(["health", "--store", str(store.root)]) != 0
    assert f"no base backup since generation {gen['generation']} began" in capsys.readouterr().out

    analyze = ok(run_playbook("pitr", "-e", "mode=analyze"))
    assert f'"parent_generation": {gen["branch"]["parent_generation"]}' in analyze.stdout
    assert f'"position": {gen["branch"]["position"]}' in analyze.stdout
    assert '"current": true' in analyze.stdout and '"base_backup_needed": "no base backup since' in analyze.stdout

    before = set(newest_set_ids(lab_env))
    second = ok(run_playbook("pitr", "-e", "mode=execute", "-e", "target=latest",
                             "-e", "lifeboat_mysql_base_after_recovery=true"))
    new = [s for s in newest_set_ids(lab_env) if s not in before]
    assert len(new) == 1 and f"taken after the recovery: {new[0]}" in second.stdout
    assert pitr.analyze(store)["base_backup_needed"] is None
    assert _index(store).generations[-1]["generation"] == gen["generation"] + 1

    planned = ok(run_playbook("pitr", "-e", "mode=plan", "-e", "target=latest",
                              "-e", f"pitr_generation={gen['generation']}"))
    assert f'"line_generation": {gen["generation"]}' in planned.stdout
