"""The collection as users get it: it builds, installs, documents itself, and runs from playbooks."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def run(argv, cwd=REPO, **kwargs):
    """Run an ansible command with the repository's ansible.cfg; fail the test with its output."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
                          **kwargs)
    assert proc.returncode == 0, f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    run([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out)])
    (path,) = out.glob("lifeboat-dr-*.tar.gz")
    return path


def test_the_built_collection_holds_the_plugins_and_not_the_repo_tooling(tarball):
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"MANIFEST.json", "FILES.json", "meta/runtime.yml", "plugins/modules/store_info.py",
            "plugins/module_utils/util/service.py", "plugins/doc_fragments/store.py"} <= names
    top = {n.split("/")[0] for n in names}
    assert not top & {"lab", "dr_tests", "bench", ".collections", ".venv", ".lab", ".git", "scripts", "reports"}
    manifest = json.loads(tarfile.open(tarball).extractfile("MANIFEST.json").read())
    assert manifest["collection_info"]["namespace"] == "lifeboat"
    assert manifest["collection_info"]["name"] == "dr"


def test_the_tarball_installs(tarball, tmp_path):
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "--no-deps", "-p", str(tmp_path),
         str(tarball)])
    installed = tmp_path / "ansible_collections" / "lifeboat" / "dr"
    assert (installed / "plugins" / "modules" / "store_info.py").is_file()
    assert json.loads((installed / "MANIFEST.json").read_text())["collection_info"]["version"] == "0.1.0"


def test_ansible_doc_renders_every_module():
    names = [f"lifeboat.dr.{module}" for module in MODULES]
    docs = json.loads(run([str(BIN / "ansible-doc"), "--json", *names]).stdout)
    assert sorted(docs) == sorted(names)
    for name, entry in docs.items():
        assert entry["doc"]["short_description"], name
        assert entry["doc"]["options"], name
        assert entry["examples"], name
        assert entry["return"], name


@pytest.mark.parametrize("module", ["store_info", "service"])
def test_ansible_doc_renders_the_module_as_text(module):
    text = run([str(BIN / "ansible-doc"), f"lifeboat.dr.{module}"]).stdout
    assert "EXAMPLES" in text and "RETURN VALUES" in text


def test_a_playbook_on_the_lab_inventory_uses_the_collection(tmp_path):
    key_file = tmp_path / "kek"
    keys.create_key_file(key_file)
    store = Store(tmp_path / "store")
    with store.begin_set("mysql", ["mysql"], keys.KeyRing(keys.FileKEK.load(key_file))) as writer:
        writer.write_json("mysql", "position.json", {"file": "binlog.000001", "pos": 4})
        writer.publish()
    extra = {"lifeboat_store": str(store.root), "expected_sets": 1, "flag_file": str(tmp_path / "flag")}
    run([str(BIN / "ansible-playbook"), "-i", "inventories/lab", "-e", json.dumps(extra),
         str(REPO / "tests" / "integration" / "playbooks" / "collection_smoke.yml")])
    assert (tmp_path / "flag").exists()


def test_the_service_module_sees_the_running_lab_in_check_mode(lab_env):
    """Read-only against the real lab: a running service needs no start; stopping it would change it."""
    base = [str(BIN / "ansible"), "lab-redis", "-i", "inventories/lab", "-m", "lifeboat.dr.service", "--check"]
    args = {"name": "redis", "manager": "lab", "settings": {"repo_dir": str(REPO), "python": str(BIN / "python")}}
    started = run(base + ["-a", json.dumps(dict(args, state="started"))]).stdout
    stopped = run(base + ["-a", json.dumps(dict(args, state="stopped"))]).stdout
    assert '"was_running": true' in started and '"changed": false' in started
    assert '"changed": true' in stopped and '"running": false' in stopped
