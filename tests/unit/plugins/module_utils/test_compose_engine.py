"""The compose component's reading of a compose file and where restored files go (no engine needed)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose import engine


def test_every_services_env_file_in_each_of_its_spellings_is_found_relative_to_the_file():
    spec = {"services": {
        "a": {"env_file": "a.env"},
        "b": {"env_file": ["b1.env", {"path": "/etc/shop/b2.env", "required": False}]},
        "c": {"image": "x"},
    }}
    assert engine.env_files_of(spec, Path("/srv/shop")) == ["/srv/shop/a.env", "/srv/shop/b1.env", "/etc/shop/b2.env"]


def test_file_secrets_and_configs_are_found_unless_their_path_holds_a_variable():
    spec = {"secrets": {"db": {"file": "./secrets/db.txt"}, "env": {"environment": "X"},
                        "later": {"file": "${SECRETS}/x"}},
            "configs": {"nginx": {"file": "/etc/shop/nginx.conf"}}}
    assert engine.literal_file_secrets(spec, Path("/srv/shop")) == ["/srv/shop/secrets/db.txt", "/etc/shop/nginx.conf"]


def test_files_of_the_project_folder_keep_their_place_others_go_under_outside():
    assert engine.restored_path({"path": "/srv/shop/compose.yml"}, "/srv/shop") == PurePosixPath("compose.yml")
    assert engine.restored_path({"path": "/srv/shop/env/db.env"}, "/srv/shop") == PurePosixPath("env/db.env")
    assert engine.restored_path({"path": "/run/keys/db"}, "/srv/shop") == PurePosixPath("outside/run/keys/db")
    assert engine.restored_path({"path": "/srv/shopping/x"}, "/srv/shop") == PurePosixPath("outside/srv/shopping/x")


def test_variables_are_read_in_both_spellings():
    text = "image: ${IMAGE:?set it}\nports: ['$PORT:80']\nx: $$notavar"
    assert set(engine.VARIABLE.findall(text)) == {"IMAGE", "PORT"}, "$$ is an escaped dollar, not a variable"


def test_a_destination_that_holds_anything_is_refused_and_a_new_or_empty_one_accepted(tmp_path):
    import pytest

    from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError

    assert engine.check_destination(str(tmp_path / "new")) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert engine.check_destination(str(tmp_path / "empty")) == tmp_path / "empty"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "compose.yml").write_text("services: {}")
    with pytest.raises(ConfigError, match="exists and is not an empty folder"):
        engine.check_destination(str(tmp_path / "full"))
    assert engine.variables_to_supply({"variables": {"A": True, "B": False}}) == ["B"]
