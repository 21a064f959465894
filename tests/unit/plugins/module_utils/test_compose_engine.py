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


class _Container:
    def __init__(self, mounts):
        self.attrs = {"Mounts": mounts}


def test_read_only_bind_mounts_are_configuration_read_write_ones_and_volumes_are_data():
    containers = [
        _Container([{"Type": "volume", "Source": "/var/lib/containers/volumes/db/_data", "RW": True},
                    {"Type": "bind", "Source": "/srv/shop/my.cnf", "Destination": "/etc/mysql/my.cnf", "RW": False},
                    {"Type": "bind", "Source": "/srv/shop/uploads", "Destination": "/data", "RW": True},
                    {"Type": "bind", "Source": "/srv/shop/secrets/db", "Destination": "/run/secrets/db", "RW": False}]),
        _Container([{"Type": "bind", "Source": "/srv/shop/bin", "Destination": "/opt/bin", "RW": False},
                    {"Type": "bind", "Source": "/srv/shop/my.cnf", "Destination": "/etc/mysql/my.cnf", "RW": False}]),
    ]
    assert engine.readonly_bind_mounts(containers) == ["/srv/shop/bin", "/srv/shop/my.cnf"], \
        "each once; secrets are stored as secrets"


def test_a_mounted_folder_gives_its_regular_files_without_links_or_caches(tmp_path):
    (tmp_path / "bin" / "__pycache__").mkdir(parents=True)
    (tmp_path / "bin" / "entry.sh").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "lib").mkdir()
    (tmp_path / "bin" / "lib" / "x.py").write_text("x = 1\n")
    (tmp_path / "bin" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "bin" / "link").symlink_to(tmp_path / "bin" / "entry.sh")
    assert engine.files_below(str(tmp_path / "bin")) == [str(tmp_path / "bin" / "entry.sh"),
                                                         str(tmp_path / "bin" / "lib" / "x.py")]
    assert engine.files_below(str(tmp_path / "bin" / "entry.sh")) == [str(tmp_path / "bin" / "entry.sh")]


def test_a_huge_read_only_folder_is_refused_as_data(tmp_path, monkeypatch):
    import pytest

    from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError

    monkeypatch.setattr(engine, "MAX_CONFIG_FILES", 3)
    for i in range(5):
        (tmp_path / f"f{i}").write_text("x")
    with pytest.raises(ConfigError, match="more than 3 files") as err:
        engine.files_below(str(tmp_path))
    assert "app files" in err.value.hint
