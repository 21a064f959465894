"""The runbooks on the compose inventory (issue #19): ``backup.yml`` backs up the four services of the
running Compose project (over the project network and from the services' volumes), ``verify.yml
mode=full`` proves the set, and after every component's data is damaged ``restore.yml`` gives back
equal data, stopping and starting the app container through the Docker API (found by its Compose
labels) and leaving every service healthy.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from test_playbooks import app_health, mysql_checksums, mysql_conn, stack_state, wipe_every_component

from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from lab.compose import lab as compose_lab_module

REPO = Path(__file__).resolve().parents[3]
INVENTORY = REPO / "inventories" / "lab-compose"


def compose_playbook(layout, name: str, *extra: str, timeout: int = 600,
                     expect_ok: bool = True) -> subprocess.CompletedProcess:
    """``ansible-playbook -i inventories/lab-compose playbooks/<name>.yml [extra]`` on ``layout``'s lab
    (asserted to succeed unless ``expect_ok`` is False)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               LAB_COMPOSE_STATE_DIR=str(layout.state_dir),
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(["ansible-playbook", "-i", str(INVENTORY), f"playbooks/{name}.yml", *extra], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0 or not expect_ok, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def test_backup_verify_and_restore_playbooks_bring_back_every_service_of_the_project(
        compose_lab, docker_client, tmp_path):
    env = compose_lab_module.env(compose_lab.state_dir)
    store = Store(env["LAB_STORE"])
    expected = stack_state(env)
    assert expected["mysql"] and expected["redis"][0] and expected["vault"] and expected["files"]
    before = {s.set_id for s in store.list_sets()}

    compose_playbook(compose_lab, "backup")
    [set_id] = [s.set_id for s in store.list_sets() if s.set_id not in before]
    manifest = store.open_set(set_id).manifest
    assert manifest["type"] == "full"
    assert sorted(manifest["components"]) == ["app", "compose", "mysql", "redis", "vault"], \
        "a full backup on a Compose deployment also holds the project's definition"

    verified = compose_playbook(compose_lab, "verify", "-e", "mode=full", "-e", f"backup_id={set_id}")
    assert '"result": "VERIFIED"' in verified.stdout
    assert_the_project_files_come_back_from_the_set(compose_lab, set_id, tmp_path / "project")

    wipe_every_component(env)
    assert stack_state(env) != expected
    kept_before = kept_volumes_of(docker_client, compose_lab, ("redis", "app"))
    app = docker_client.containers.get(compose_lab_module.container_name(compose_lab, "app"))
    app_started = app.attrs["State"]["StartedAt"]

    restored = compose_playbook(compose_lab, "restore", "-e", f"backup_id={set_id}")

    assert f'restored_set": "{set_id}' in restored.stdout
    assert stack_state(env) == expected
    assert app_health(env) == 200
    app.reload()
    assert app.status == "running" and app.attrs["State"]["StartedAt"] != app_started, \
        "the app container was stopped and started again through the Docker API"
    for service in compose_lab_module.SERVICES.values():
        compose_lab_module.wait_healthy(compose_lab, service, timeout_s=60)
    kept_now = kept_volumes_of(docker_client, compose_lab, ("redis", "app"))
    for component in ("redis", "app"):
        [new] = kept_now[component] - kept_before[component]
        assert new.startswith(f"{compose_lab.volume_name(component)}-lifeboat-kept-"), \
            "the replaced data of each volume went into a labelled volume of its own"
        folder = Path(docker_client.volumes.get(compose_lab.volume_name(component)).attrs["Mountpoint"]).parent
        assert sorted(p.name for p in folder.iterdir()) == ["_data"], "nothing left beside the volume's data"


def kept_volumes_of(client, layout, components) -> dict[str, set[str]]:
    """Per component, the names of the volumes kept aside from its volume (label lifeboat.kept-from)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.util import compose_volumes

    return {c: {v.name for v in client.volumes.list(
        filters={"label": f"{compose_volumes.KEPT_FROM_LABEL}={layout.volume_name(c)}"})} for c in components}


def assert_the_project_files_come_back_from_the_set(layout, set_id: str, dest: Path) -> None:
    """compose_project.yml writes the project's folder as it was into a new folder: the compose file,
    its .env (0600), the secret files (0600, same bytes), the read-only bind-mounted configuration and
    the app's code at their relative paths, and the image references of the set; the lab keeps every
    variable in .env, so none is left to supply."""
    shown = compose_playbook(layout, "compose_project", "-e", f"dest={dest}", "-e", f"backup_id={set_id}")
    assert (dest / "compose.yml").read_bytes() == layout.compose_file.read_bytes()
    for name in ("mysql_init.sql", "redis_password", "app_vault_token"):
        restored = dest / "secrets" / name
        assert restored.read_bytes() == (layout.secrets_dir / name).read_bytes()
        assert restored.stat().st_mode & 0o777 == 0o600
    assert (dest / ".env").read_bytes() == layout.env_file.read_bytes()
    assert (dest / ".env").stat().st_mode & 0o777 == 0o600
    for rel in ("bin/entry.sh", "mariadb.cnf", "demoapp/app.py", "conf/bao.hcl"):  # read-only bind mounts
        assert (dest / rel).read_bytes() == (layout.project_dir / rel).read_bytes(), rel
    assert not (dest / "outside").exists(), "the lab's project folder is self-contained"
    project = json.loads((dest / "lifeboat-project.json").read_text())
    assert project["project"] == layout.project
    assert sorted(i["service"] for i in project["images"]) == sorted(compose_lab_module.SERVICES.values())
    assert all(i["image_id"] and i["image"].startswith("localhost/lifeboat-lab:") for i in project["images"])
    assert project["variables"]["LAB_SUBNET"] is True, "defined by the project's .env"
    assert "variables_to_supply\": []" in shown.stdout

    refused = compose_playbook(layout, "compose_project", "-e", f"dest={dest}", expect_ok=False)
    assert refused.returncode != 0 and "exists and is not an empty folder" in refused.stdout
    assert (dest / "compose.yml").read_bytes() == layout.compose_file.read_bytes(), "nothing overwritten"

    # a rebuild (up=true) of a project the engine still runs is refused before anything is written
    elsewhere = dest.parent / "rebuild"
    refused = compose_playbook(layout, "compose_project", "-e", "up=true", "-e", f"dest={elsewhere}",
                               "-e", f"backup_id={set_id}", expect_ok=False)
    assert refused.returncode != 0 and "already has containers on this engine" in refused.stdout
    assert "nothing was changed" in refused.stdout and "restore.yml" in refused.stdout
    assert not elsewhere.exists()


def test_pitr_playbook_recovers_the_latest_write_by_client_replay_since_the_server_is_in_a_container(compose_lab):
    """A lost database (dropped without a binlog trace, as a lost datadir would be) comes back by
    ``pitr.yml target=latest`` from the newest base plus the archived binlogs. The server's datadir
    is a path inside its container (the host may have a folder of that name: another server's), so
    the replay is the client's, and the result says why."""
    env = compose_lab_module.env(compose_lab.state_dir)
    compose_playbook(compose_lab, "backup", "-e", "components=mysql")
    mark = f"compose-pitr-{time.time_ns()}"
    with mysql_conn(env) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS demo.pitr_marks (id INT AUTO_INCREMENT PRIMARY KEY, mark VARCHAR(64))")
        cur.execute("INSERT INTO demo.pitr_marks (mark) VALUES (%s)", (mark,))
    compose_playbook(compose_lab, "archive_binlogs")
    expected = mysql_checksums(env)
    with mysql_conn(env) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute("DROP DATABASE demo")

    done = compose_playbook(compose_lab, "pitr", "-e", "mode=execute", "-e", "target=latest")

    assert '"method": "client"' in done.stdout and "is not this host's folder" in done.stdout, done.stdout[-3000:]

    assert mysql_checksums(env) == expected
    with mysql_conn(env) as conn, conn.cursor() as cur:
        cur.execute("SELECT mark FROM demo.pitr_marks WHERE mark = %s", (mark,))
        assert cur.fetchall() == ((mark,),)
    assert app_health(env) == 200
