"""Backup labels (issue #19: "a Compose file can say what Lifeboat protects", the way docker-volume-backup
users label their services): ``lifeboat.exec-pre-backup``, ``lifeboat.stop-during-backup`` and
``lifeboat.exec-post-backup`` on a service, read through the Docker API and done around its
component's backup -- by ``backup.yml`` on the compose lab (its app is labelled) and, case by case,
on a container of a project of its own."""

from __future__ import annotations

import pytest
from test_compose_playbooks import compose_playbook

from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose import hooks
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import BackupFailed, ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import DockerService
from lab.compose import images
from lab.compose import lab as compose_lab_module

PROJECT = "lbhooks"
TRACE = "/tmp/hooks.log"


def hook_log(container) -> list[str]:
    return container.exec_run(["sh", "-c", f"cat {TRACE} 2>/dev/null || true"]).output.decode().split()


@pytest.fixture
def labelled(compose_lab, docker_client):
    """A running container of Compose project lbhooks, service ``web``, with the labels given."""
    made = []

    def run(**labels):
        container = docker_client.containers.run(
            images.image_ref(), ["sleep", "600"], detach=True, network_mode="none", entrypoint=[],
            labels={"com.docker.compose.project": PROJECT, "com.docker.compose.service": "web", **labels})
        made.append(container)
        return container, DockerService("web", base_url=compose_lab.docker_host, project=PROJECT, service="web")

    yield run
    for container in made:
        container.remove(force=True)


def test_pre_stop_start_post_in_that_order_around_a_files_backup(labelled):
    container, web = labelled(**{hooks.PRE_LABEL: f"echo pre >> {TRACE}", hooks.STOP_LABEL: "true",
                                 hooks.POST_LABEL: f"echo post >> {TRACE}"})
    before = hooks.before_backup(web, "app")
    assert before == {"hooks": ["pre", "stop", "post"], "running": True, "ran": [hooks.PRE_LABEL], "stopped": True}
    container.reload()
    assert container.status != "running", "stopped for the backup"
    after = hooks.after_backup(web, before["stopped"], health_timeout_s=30)
    assert after == {"ran": [hooks.POST_LABEL], "started": True}
    container.reload()
    assert container.status == "running"
    assert hook_log(container) == ["pre", "post"], "/tmp survives a stop and start of the same container"


def test_a_failing_pre_command_fails_the_backup_naming_the_label_and_stops_nothing(labelled):
    container, web = labelled(**{hooks.PRE_LABEL: "echo cannot flush >&2; exit 3", hooks.STOP_LABEL: "true"})
    with pytest.raises(BackupFailed, match=r"lifeboat.exec-pre-backup .* exit code 3: cannot flush"):
        hooks.before_backup(web, "app")
    container.reload()
    assert container.status == "running"


def test_a_server_read_over_the_network_cannot_be_stopped_during_its_backup(labelled):
    container, web = labelled(**{hooks.PRE_LABEL: f"echo pre >> {TRACE}", hooks.STOP_LABEL: "true"})
    with pytest.raises(ConfigError, match=r"stop-during-backup=true, but its backup reads the running server"):
        hooks.before_backup(web, "mysql")
    assert hook_log(container) == [], "refused before anything ran"


def test_a_stopped_container_is_left_alone(labelled):
    container, web = labelled(**{hooks.PRE_LABEL: f"echo pre >> {TRACE}", hooks.STOP_LABEL: "true"})
    container.stop(timeout=1)
    assert hooks.before_backup(web, "app")["ran"] == []
    assert hooks.after_backup(web, stopped=False) == {"ran": [], "started": False}


def test_backup_yml_runs_the_labels_of_the_lab_app_around_its_files_backup(compose_lab, docker_client):
    app = docker_client.containers.get(compose_lab_module.container_name(compose_lab, "app"))
    trace = "/tmp/lifeboat-backup-hooks.log"

    def lines():
        return app.exec_run(["sh", "-c", f"cat {trace} 2>/dev/null || true"]).output.decode().split()

    before = lines()
    compose_playbook(compose_lab, "backup", "-e", "components=app")
    assert lines() == before + ["pre", "post"]
