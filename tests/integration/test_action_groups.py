"""meta/runtime.yml's action group ``store``: the modules taking the store options, usable with module_defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MODULES_DIR = REPO / "plugins" / "modules"


def test_the_store_group_is_exactly_the_modules_with_the_store_options():
    groups = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["action_groups"]
    with_store = sorted(p.stem for p in MODULES_DIR.glob("*.py") if "store_argument_spec()" in p.read_text())
    assert sorted(groups["store"]) == with_store


def test_module_defaults_for_the_group_reach_a_module(tmp_path):
    """The store and key file come only from module_defaults; the module's error names that store."""
    store = tmp_path / "grouped-store"
    store.mkdir()
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/lifeboat.dr.store:
      store: {store}
      key_file: {tmp_path / "no.key"}
  tasks:
    - lifeboat.dr.redis_verify:
      register: out
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{{{ out | to_json }}}}"
        dest: {tmp_path / "out.json"}
""")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["failed"] and "missing required arguments" not in result["msg"]
    assert str(store) in result["msg"] or "no.key" in result["msg"], result["msg"]


STORE_OPTIONS = {"store", "key_file", "escrow_key_file", "transit_url", "transit_token", "transit_mount", "transit_key",
                 "compression", "compression_level"}


def _plays_and_tasks(path):
    """(play, task) for every task of a playbook (nested blocks included), or (None, task) for a task file."""
    def walk(tasks, play):
        for task in tasks if isinstance(tasks, list) else ():
            if not isinstance(task, dict):
                continue
            for key in ("block", "rescue", "always"):
                yield from walk(task.get(key), play)
            yield play, task

    data = yaml.safe_load(path.read_text())
    for entry in data if isinstance(data, list) else ():
        if not isinstance(entry, dict):
            continue
        if "hosts" in entry:
            for key in ("pre_tasks", "tasks", "post_tasks"):
                yield from walk(entry.get(key), entry)
        else:
            yield from walk([entry], None)


def _group_module(task):
    groups = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["action_groups"]
    return next((name for name in groups["store"] if f"lifeboat.dr.{name}" in task), None)


def _group_defaults(keyword_holder):
    return ((keyword_holder or {}).get("module_defaults") or {}).get("group/lifeboat.dr.store")


def test_no_role_or_playbook_task_repeats_the_store_options():
    """The store/key/compression options reach the modules through module_defaults only; a task may
    only switch a transit KEK off (transit_url: null, the Vault tasks)."""
    files = sorted((REPO / "roles").glob("*/tasks/*.yml")) + sorted((REPO / "playbooks").rglob("*.yml"))
    repeated = []
    for path in files:
        for _play, task in _plays_and_tasks(path):
            module = _group_module(task)
            if module is None:
                continue
            given = {k: v for k, v in (task[f"lifeboat.dr.{module}"] or {}).items() if k in STORE_OPTIONS}
            if given and given != {"transit_url": None}:
                repeated.append(f"{path.relative_to(REPO)}: {task.get('name')}: {sorted(given)}")
    assert repeated == []


def test_every_play_running_store_modules_sets_their_module_defaults():
    """A playbook task of the group gets the options from its play or its own module_defaults; the plays
    that include the role task files (component backups/restores, the fresh server) set them too."""
    missing = []
    for path in sorted((REPO / "playbooks").rglob("*.yml")):
        for play, task in _plays_and_tasks(path):
            if play is None:
                continue
            includes_role_tasks = (task.get("ansible.builtin.include_role") or {}).get("tasks_from") in (
                "backup", "restore", "fresh_server")
            if (_group_module(task) or includes_role_tasks) and not (_group_defaults(task) or _group_defaults(play)):
                missing.append(f"{path.relative_to(REPO)}: {play.get('name')}: {task.get('name')}")
    assert missing == []


def test_a_templated_options_dict_reaches_the_module_with_omit_and_a_task_override(tmp_path):
    """module_defaults: {group/lifeboat.dr.store: "{{ options }}"} as the playbooks use it, seen by what the
    module does: the omitted key_file stays unset and the transit options arrive (the module tries transit);
    a task's own transit_url: null wins (no key at all); a task's own module_defaults (restore.yml's safety
    copy, pitr.yml's new base) win over the play's (the other store is searched)."""
    store, other = tmp_path / "store", tmp_path / "other-store"
    store.mkdir()
    other.mkdir()
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"""
- hosts: localhost
  gather_facts: false
  vars:
    no_key_file: ""
    options:
      store: {store}
      key_file: "{{{{ no_key_file or omit }}}}"
      transit_url: http://127.0.0.1:9
      transit_token: not-a-token
      transit_key: lifeboat
      compression: gzip
  module_defaults:
    group/lifeboat.dr.store: "{{{{ options }}}}"
  tasks:
    - lifeboat.dr.backup_set:
        action: open
        components: [app]
      register: plain
      ignore_errors: true
    - lifeboat.dr.backup_set:
        action: open
        components: [app]
        transit_url: null
      register: overridden
      ignore_errors: true
    - lifeboat.dr.backup_set:
        action: resolve
      module_defaults:
        group/lifeboat.dr.store: "{{{{ options | combine({{'store': '{other}'}}) }}}}"
      register: own_defaults
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{{{ [plain, overridden, own_defaults] | map(attribute='msg') | to_json }}}}"
        dest: {tmp_path / "msgs.json"}
""")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    plain, overridden, own_defaults = json.loads((tmp_path / "msgs.json").read_text())
    assert "transit key 'lifeboat' at http://127.0.0.1:9" in plain
    assert "no key-encryption key given" in overridden
    assert str(other) in own_defaults and str(store) not in own_defaults
