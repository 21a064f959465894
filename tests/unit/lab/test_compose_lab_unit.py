"""The compose lab's pure parts: the compose file's contract, start levels, subnet and podman config."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from lab.compose import lab as compose_lab


@pytest.fixture(scope="module")
def spec() -> dict:
    return compose_lab.load_compose_file()


def test_every_service_is_labelled_with_its_lifeboat_component(spec):
    labels = {name: body["labels"]["lifeboat.component"] for name, body in spec["services"].items()}
    assert labels == {service: component for component, service in compose_lab.SERVICES.items()}


def test_every_service_has_a_healthcheck_a_restart_policy_and_a_named_volume(spec):
    for name, body in spec["services"].items():
        assert body["healthcheck"]["test"], name
        assert body["restart"] == "unless-stopped", name
        named = [v.split(":")[0] for v in body["volumes"] if not v.startswith((".", "/", "$"))]
        assert named and set(named) <= set(spec["volumes"]), name


def test_the_app_waits_for_its_backends_to_be_healthy(spec):
    assert spec["services"]["app"]["depends_on"] == {
        svc: {"condition": "service_healthy"} for svc in ("db", "cache", "vault")}


def test_one_internal_project_network_with_an_explicit_subnet(spec):
    assert list(spec["networks"]) == ["lab"]
    assert spec["networks"]["lab"]["internal"] is True
    assert spec["networks"]["lab"]["ipam"]["config"] == [{"subnet": "${LAB_SUBNET}"}]
    for name, body in spec["services"].items():
        assert list(body["networks"]) == ["lab"], name
        assert "ports" not in body, f"{name} publishes a port: the host reaches the subnet directly"


def test_credentials_are_compose_secret_files_never_values_in_the_compose_file(spec):
    text = compose_lab.COMPOSE_FILE.read_text().lower()
    for word in ("password=", "token=", "requirepass", "identified by"):
        assert word not in text
    for name, secret in spec["secrets"].items():
        assert set(secret) == {"file"}, name
        assert secret["file"].startswith("./secrets/"), f"{name}: a 0600 file of the project's secrets/ folder"
    for body in spec["services"].values():
        assert not any("PASSWORD" in key or "TOKEN" in key for key in body.get("environment", {}))


def test_start_levels_follow_depends_on(spec):
    assert compose_lab.start_levels(spec) == [["cache", "db", "vault"], ["app"]]
    chain = {"services": {"a": {}, "b": {"depends_on": ["a"]}, "c": {"depends_on": {"b": {}}}}}
    assert compose_lab.start_levels(chain) == [["a"], ["b"], ["c"]]


def test_start_levels_refuse_cycles_and_unknown_services():
    with pytest.raises(ConfigError, match="cycle"):
        compose_lab.start_levels({"services": {"a": {"depends_on": ["b"]}, "b": {"depends_on": ["a"]}}})
    with pytest.raises(ConfigError, match="unknown service"):
        compose_lab.start_levels({"services": {"a": {"depends_on": ["nope"]}}})


@pytest.mark.parametrize("offset", [0, 200, 300, 1000])
def test_the_subnet_is_private_to_the_lab_and_never_the_multihost_one(offset):
    subnet = compose_lab.subnet_for(offset)
    assert subnet.prefixlen == 24 and subnet.subnet_of(ipaddress.ip_network("10.214.0.0/16"))
    assert not subnet.overlaps(ipaddress.ip_network("10.213.0.0/24"))


def test_parallel_labs_get_their_own_subnet_and_project():
    assert compose_lab.subnet_for(200) != compose_lab.subnet_for(300)
    assert compose_lab.project_for(200) != compose_lab.project_for(300)


def test_layout_addresses_lie_in_the_subnet_and_data_folders_are_the_volumes(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_PORT_BASE", "200")
    layout = compose_lab.load_compose_layout(tmp_path)
    subnet = ipaddress.ip_network(layout.subnet)
    for component in compose_lab.SERVICES:
        assert ipaddress.ip_address(layout.host_for(component)) in subnet
    assert layout.mysql_datadir == layout.graphroot / "volumes" / "lifeboat200_mysql-data" / "_data"
    assert layout.app_storage.is_relative_to(layout.state_dir)
    assert layout.client_hosts == (str(subnet.network_address).rsplit(".", 1)[0] + ".%",)


def test_podman_config_uses_runc_and_ulimits_within_the_hard_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_PORT_BASE", "200")
    layout = compose_lab.load_compose_layout(tmp_path)
    conf = compose_lab.render_containers_conf(layout)
    assert 'runtime = "runc"' in conf
    assert '"nofile=10000:10000"' in conf and '"nproc=4096:4096"' in conf and "host" not in conf
    assert f'network_config_dir = "{layout.network_dir}"' in conf
    storage = compose_lab.render_storage_conf(layout)
    assert f'graphroot = "{layout.graphroot}"' in storage


def test_service_configs_bind_inside_the_container_and_hold_no_secret_in_argv(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_PORT_BASE", "200")
    layout = compose_lab.load_compose_layout(tmp_path)
    secrets = {"redis_password": "pw-redis", "redis_backup_password": "pw-backup"}
    redis_conf = compose_lab.render_redis_conf(layout, secrets)
    assert "bind 0.0.0.0" in redis_conf and "dir /data" in redis_conf
    assert "requirepass pw-redis" in redis_conf  # a 0600 secret file, mounted as a Compose secret
    hcl = compose_lab.render_bao_hcl(layout)
    assert 'path    = "/bao/raft"' in hcl and "disable_mlock = true" in hcl
    app = compose_lab.render_app_config(layout)
    assert app["vault_token_file"] == "/run/secrets/app_vault_token"
    assert not any("password" in key for key in app)


def test_every_path_of_the_compose_file_is_inside_its_project_folder(spec):
    """The lab's project folder is self-contained (compose file, bin/, conf/, secrets/, demoapp/,
    .env), so a rebuild from the store alone finds every file where the compose file expects it."""
    for name, body in spec["services"].items():
        for volume in body.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith(("/", "..", "$")), f"{name}: {volume}"
    assert all(secret["file"].startswith("./") for secret in spec["secrets"].values())


def test_the_project_env_file_defines_every_variable_of_the_compose_file(tmp_path):
    import re

    layout = compose_lab.load_compose_layout(tmp_path)
    text = compose_lab.render_env_file(compose_lab.project_variables(layout, "localhost/lifeboat-lab:x"))
    defined = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}
    used = set(re.findall(r"\$\{([A-Z_]+)", compose_lab.COMPOSE_FILE.read_text()))
    assert used <= defined, sorted(used - defined)
