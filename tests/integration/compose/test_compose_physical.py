"""Physical MariaDB backups on the compose lab (issues #19 and #20).

``backup.yml -e mysql_method=physical`` runs mariabackup *inside* the db container (exec through the
Docker API, the image's own mariabackup, the credentials on its stdin); ``restore.yml`` restores the
set by files: extracted and prepared beside the volume's folder on the Docker host, exchanged while
the container is stopped, the replaced datadir kept in a labelled volume of its own (never inside or
beside the volume), the container started and health-gated. The restore's safety copy is physical too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from test_compose_playbooks import compose_playbook
from test_playbooks import app_health, mysql_checksums, mysql_conn

from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util import compose_volumes
from lab.compose import lab as compose_lab_module


def test_a_physical_backup_taken_in_the_container_restores_by_files_into_the_same_volume(compose_lab,
                                                                                         docker_client):
    env = compose_lab_module.env(compose_lab.state_dir)
    store = Store(env["LAB_STORE"])
    volume = docker_client.volumes.get(compose_lab.volume_name("mysql"))
    datadir = Path(volume.attrs["Mountpoint"])          # the volume's _data
    before = {s.set_id for s in store.list_sets()}

    compose_playbook(compose_lab, "backup", "-e", "components=mysql", "-e", "mysql_method=physical")

    [set_id] = [s.set_id for s in store.list_sets() if s.set_id not in before]
    meta = store.open_set(set_id).component_metadata("mysql")
    assert (meta["method"], meta["backup_type"]) == ("physical", "full")
    assert meta["to_lsn"] > 0 and meta["binlog_position"]["gtid"], "the checkpoints came out of the container"
    verified = compose_playbook(compose_lab, "verify", "-e", "mode=full", "-e", "components=mysql",
                                "-e", f"backup_id={set_id}")
    assert '"result": "VERIFIED"' in verified.stdout
    record = sorted((store.root / "verifications" / set_id).glob("*.json"))[-1]  # the full one: the newest
    [started] = [c for c in json.loads(record.read_text())["checks"] if "prepared and started" in c["name"]]
    assert "in a container of image" in started["detail"], "the prepared datadir opens in the db service's image"
    expected = mysql_checksums(env)
    late_table = f"after_the_backup_{time.time_ns()}"
    with mysql_conn(env) as conn, conn.cursor() as cur:   # damage no binlog records
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"CREATE TABLE demo.{late_table} (id INT PRIMARY KEY)")
        cur.execute("UPDATE demo.products SET price = price + 1")
    assert mysql_checksums(env) != expected
    kept_before = {v.name for v in docker_client.volumes.list(
        filters={"label": f"{compose_volumes.KEPT_FROM_LABEL}={volume.name}"})}
    sets_before_restore = {s.set_id for s in store.list_sets()}

    restored = compose_playbook(compose_lab, "restore", "-e", "components=mysql", "-e", f"backup_id={set_id}")

    assert f'restored_set": "{set_id}' in restored.stdout
    assert mysql_checksums(env) == expected, "every table as it was at the backup"
    assert app_health(env) == 200
    [kept] = [v for v in docker_client.volumes.list(
        filters={"label": f"{compose_volumes.KEPT_FROM_LABEL}={volume.name}"}) if v.name not in kept_before]
    kept_folder = Path(kept.attrs["Mountpoint"])
    assert (kept_folder / "demo" / f"{late_table}.frm").exists(), "the replaced datadir is in the kept volume"
    assert sorted(p.name for p in datadir.parent.iterdir()) == ["_data"], \
        "nothing of the restore is left beside the volume's folder"
    assert not any(".lb" in p.name for p in datadir.iterdir()), "nor inside the datadir"
    [safety] = [s.set_id for s in store.list_sets() if s.set_id not in sets_before_restore]
    assert store.open_set(safety).component_metadata("mysql")["method"] == "physical", \
        "the safety copy of a physical restore is physical (its rollback is by files too)"
