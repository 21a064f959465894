"""Rebuilding a Compose project that an engine lost: what is proven first, and how the Compose
command is run (a fake engine and a fake Compose command; the real ones: the compose drill
``compose_project_rebuilt`` and tests/integration/compose/test_compose_playbooks.py)."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import docker
import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose import rebuild
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, RestoreFailed


class FakeEngine:
    """Containers by project label and images by id or reference, as the docker SDK shows them."""

    def __init__(self, containers=(), images=()):
        self._containers = list(containers)
        self._images = set(images)
        self.containers = SimpleNamespace(list=self._list)
        self.images = SimpleNamespace(get=self._get)

    def _list(self, all=False, filters=None):  # noqa: A002 -- the SDK's keyword
        wanted = dict(label.split("=", 1) for label in (filters or {}).get("label", []))
        return [c for c in self._containers if all_match(c.labels, wanted)]

    def _get(self, ref):
        if ref not in self._images:
            raise docker.errors.ImageNotFound(ref)
        return SimpleNamespace(id=ref)


def all_match(labels, wanted):
    return all(labels.get(k) == v for k, v in wanted.items())


def container(name, project, service, status="created"):
    return SimpleNamespace(name=name, status=status, labels={rebuild.PROJECT_LABEL: project,
                                                             rebuild.SERVICE_LABEL: service})


def project_json(variables=None):
    return {"project": "shop", "working_dir": "/srv/shop", "compose_files": ["compose.yml", "compose.prod.yml"],
            "images": [{"service": "db", "image": "mariadb:11", "image_id": "sha256:aaa"},
                       {"service": "web", "image": "shop/web:3", "image_id": "sha256:bbb"}],
            "variables": variables or {"SHOP_DOMAIN": False, "DB_IMAGE": True}}


def test_a_project_that_can_be_rebuilt_has_no_problem(monkeypatch):
    monkeypatch.delenv("SHOP_DOMAIN", raising=False)
    engine = FakeEngine(images={"sha256:aaa", "shop/web:3"})
    assert rebuild.rebuild_problems(engine, project_json(), ["sh"], {"SHOP_DOMAIN": "shop.example"}) == []


def test_every_problem_is_named_at_once_with_its_fix(monkeypatch):
    monkeypatch.delenv("SHOP_DOMAIN", raising=False)
    engine = FakeEngine(containers=[container("shop_db_1", "shop", "db"), container("other_x_1", "other", "x")],
                        images={"sha256:aaa"})
    problems = rebuild.rebuild_problems(engine, project_json(), ["no-such-compose-tool"], {})
    text = " | ".join(problems)
    assert len(problems) == 4, problems
    assert "already has containers on this engine (shop_db_1 (created))" in text and "restore.yml" in text
    assert "other_x_1" not in text, "another project's containers are none of its business"
    assert "web: shop/web:3" in text and "db: mariadb" not in text and "pull or load" in text
    assert "SHOP_DOMAIN" in text and "DB_IMAGE" not in text and "lifeboat_compose_environment" in text
    assert "'no-such-compose-tool' is not found" in text


def test_a_variable_set_in_this_hosts_environment_counts_as_given(monkeypatch):
    monkeypatch.setenv("SHOP_DOMAIN", "shop.example")
    assert rebuild.missing_variables(project_json(), {}) == []


def test_the_compose_command_names_the_project_and_every_file_and_starts_nothing():
    assert rebuild.up_argv(["docker", "compose"], "shop", ["compose.yml", "compose.prod.yml"]) == [
        "docker", "compose", "-p", "shop", "-f", "compose.yml", "-f", "compose.prod.yml", "up", "--no-start"]


def fake_compose(folder: Path, exit_code: int = 0) -> Path:
    """A Compose stand-in that records its argv, working folder and two variables, then exits."""
    script = folder / "fake-compose"
    script.write_text("#!/bin/sh\n"
                      f'echo "$@" > "{folder}/argv"; pwd > "{folder}/cwd"\n'
                      f'echo "$SHOP_DOMAIN $DOCKER_HOST" > "{folder}/env"\n'
                      f'echo "creating shop_db_1"; echo "no such image" >&2; exit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_the_command_runs_in_the_project_folder_with_the_variables_in_its_environment_not_argv(tmp_path):
    script = fake_compose(tmp_path)
    project_folder = tmp_path / "shop"
    project_folder.mkdir()
    output = rebuild.create_project(project_json(), str(project_folder), [str(script)],
                                    {"SHOP_DOMAIN": "s3cret-domain"}, "unix:///run/engine.sock")
    assert "creating shop_db_1" in output
    assert (tmp_path / "cwd").read_text().strip() == str(project_folder)
    assert (tmp_path / "env").read_text().split() == ["s3cret-domain", "unix:///run/engine.sock"]
    argv = (tmp_path / "argv").read_text()
    assert argv.split() == ["-p", "shop", "-f", "compose.yml", "-f", "compose.prod.yml", "up", "--no-start"]
    assert "s3cret" not in argv


def test_a_failing_compose_command_is_an_error_with_its_output_and_where_the_files_are(tmp_path):
    script = fake_compose(tmp_path, exit_code=3)
    with pytest.raises(RestoreFailed, match="failed \\(exit 3\\): creating shop_db_1\\nno such image") as err:
        rebuild.create_project(project_json(), str(tmp_path), [str(script)], {}, None)
    assert str(tmp_path) in err.value.hint


def test_an_empty_or_unknown_command_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match="compose_command is empty"):
        rebuild.resolve_command([])
    with pytest.raises(ConfigError, match="lifeboat_compose_command"):
        rebuild.resolve_command(["no-such-compose-tool"])


def test_the_created_services_are_reported_by_service_name():
    engine = FakeEngine(containers=[container("shop_db_1", "shop", "db"),
                                    container("shop_web_1", "shop", "web", status="created")])
    assert rebuild.created_services(engine, "shop") == {"db": "created", "web": "created"}


# --- a rebuild killed after its files were written blocks no later run -------------------------
class FakeSet:
    """The project files of a set: artifact name -> bytes (decrypted, as open_artifact gives them)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def open_artifact(self, component, name, keyring):
        import io

        assert component == "compose"
        return io.BytesIO(self.files[name])


def stored_project(tmp_path, contents: dict[str, bytes]):
    entries = [{"path": f"/srv/shop/{rel}", "role": "compose", "artifact": f"files/{i:03d}", "size": len(data)}
               for i, (rel, data) in enumerate(contents.items())]
    fake = FakeSet({e["artifact"]: contents[e["path"][len("/srv/shop/"):]] for e in entries})
    return fake, {"project": "shop", "working_dir": "/srv/shop", "files": entries}


def write_folder(folder: Path, contents: dict[str, bytes]) -> None:
    for rel, data in contents.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def test_a_folder_holding_every_file_of_the_set_byte_for_byte_is_recognised(tmp_path):
    contents = {"compose.yml": b"services: {}\n", "secrets/db": b"s3cret", ".env": b"A=1\n" * 50000}
    fake, project = stored_project(tmp_path, contents)
    folder = tmp_path / "shop"
    assert not rebuild.folder_holds_the_set(fake, None, project, str(folder)), "no folder"
    write_folder(folder, contents)
    (folder / "lifeboat-project.json").write_text("{}")  # what the restore adds does not matter
    assert rebuild.folder_holds_the_set(fake, None, project, str(folder))


@pytest.mark.parametrize("change", ["missing", "other bytes", "longer", "shorter"])
def test_a_folder_that_differs_from_the_set_in_any_file_is_not_taken_for_it(tmp_path, change):
    contents = {"compose.yml": b"services: {}\n", "secrets/db": b"s3cret"}
    fake, project = stored_project(tmp_path, contents)
    folder = tmp_path / "shop"
    write_folder(folder, contents)
    target = folder / "secrets/db"
    if change == "missing":
        target.unlink()
    elif change == "other bytes":
        target.write_bytes(b"s3creT")
    elif change == "longer":
        target.write_bytes(b"s3cret!")
    else:
        target.write_bytes(b"s3cre")
    assert not rebuild.folder_holds_the_set(fake, None, project, str(folder))


def test_containers_only_created_by_an_interrupted_rebuild_do_not_stop_it_from_continuing(monkeypatch):
    monkeypatch.delenv("SHOP_DOMAIN", raising=False)
    created = FakeEngine(containers=[container("shop_db_1", "shop", "db")], images={"sha256:aaa", "shop/web:3"})
    given = {"SHOP_DOMAIN": "x"}
    assert rebuild.rebuild_problems(created, project_json(), ["sh"], given, continuing=True) == []
    assert rebuild.rebuild_problems(created, project_json(), ["sh"], given, continuing=False), \
        "without the set's files in the folder, containers are somebody's project"
    started = FakeEngine(containers=[container("shop_db_1", "shop", "db"),
                                     container("shop_web_1", "shop", "web", status="exited")],
                         images={"sha256:aaa", "shop/web:3"})
    [problem] = rebuild.rebuild_problems(started, project_json(), ["sh"], given, continuing=True)
    assert "shop_web_1 (exited)" in problem, "a container that ran is a live project's: restore, not rebuild"
