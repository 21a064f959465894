"""Specification of plugins/module_utils/util/service.py: building service controllers and waiting for services."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.util import service as svc
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    ConnectionFailure,
    DependencyMissing,
    LifeboatError,
)

# --- building services ------------------------------------------------------------------


def test_lab_service_runs_the_lab_cli_of_the_given_python_in_the_repo_dir():
    s = svc.get_service("lab", "mysql", repo_dir="/repo", python="/repo/.venv/bin/python")
    assert s.start_argv == ["/repo/.venv/bin/python", "-m", "lab", "service", "mysql", "start"]
    assert s.stop_argv == ["/repo/.venv/bin/python", "-m", "lab", "service", "mysql", "stop"]
    assert s.restart_argv == ["/repo/.venv/bin/python", "-m", "lab", "service", "mysql", "restart"]
    assert s.status_argv == ["/repo/.venv/bin/python", "-m", "lab", "status", "--json"]
    assert s.cwd == "/repo"
    assert s.describe()["manager"] == "lab"


def _fake_lab(tmp_path, rows_json, exit_code=0):
    """A stand-in ``python`` that prints a ``lab status --json`` answer (tests the parsing only)."""
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\ncat <<'END'\n{rows_json}\nEND\nexit {exit_code}\n")
    fake.chmod(0o755)
    return str(fake)


def test_lab_service_is_running_reads_its_row_of_lab_status(tmp_path):
    rows = '[{"service": "mysql", "running": false}, {"service": "redis", "running": true}]'
    python = _fake_lab(tmp_path, rows)
    assert svc.get_service("lab", "redis", python=python, repo_dir=str(tmp_path)).is_running() is True
    assert svc.get_service("lab", "mysql", python=python, repo_dir=str(tmp_path)).is_running() is False
    with pytest.raises(svc.NotFound):
        svc.get_service("lab", "ldap", python=python, repo_dir=str(tmp_path)).is_running()


def test_lab_status_failure_is_reported(tmp_path):
    python = _fake_lab(tmp_path, "lab: error: state folder missing", exit_code=1)
    with pytest.raises(svc.ServiceControlFailed, match="state folder missing"):
        svc.get_service("lab", "mysql", python=python, repo_dir=str(tmp_path)).is_running()


def test_lab_service_defaults_to_the_running_interpreter():
    assert svc.get_service("lab", "redis").start_argv[0] == sys.executable


def test_systemd_service_uses_systemctl_with_the_unit_and_is_active_for_status():
    s = svc.get_service("systemd", "mysql", unit="mariadb.service")
    assert s.start_argv == ["systemctl", "start", "mariadb.service"]
    assert s.stop_argv == ["systemctl", "stop", "mariadb.service"]
    assert s.restart_argv == ["systemctl", "restart", "mariadb.service"]
    assert s.status_argv == ["systemctl", "is-active", "--quiet", "mariadb.service"]
    assert s.describe()["unit"] == "mariadb.service"


def test_systemd_unit_defaults_to_the_service_name_and_user_mode_adds_flag():
    s = svc.get_service("systemd", "redis", user=True)
    assert s.start_argv == ["systemctl", "--user", "start", "redis"]


def test_unknown_manager_is_a_config_error_listing_the_managers():
    with pytest.raises(ConfigError, match="unknown service manager 'upstart'") as err:
        svc.get_service("upstart", "mysql")
    assert "systemd" in str(err.value)


def test_unknown_setting_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="colour"):
        svc.get_service("systemd", "mysql", colour="blue")


def test_none_settings_are_ignored_so_module_options_can_pass_through():
    s = svc.get_service("systemd", "mysql", unit=None, user=None)
    assert s.unit == "mysql"


def test_command_manager_requires_start_stop_and_status():
    with pytest.raises(ConfigError, match="status"):
        svc.get_service("command", "app", start=["true"], stop=["true"])


def test_commands_must_be_argv_lists_not_shell_strings():
    with pytest.raises(ConfigError, match="list of strings"):
        svc.get_service("command", "app", start="service app start", stop=["true"], status=["true"])


def test_describe_names_env_variables_but_never_their_values():
    s = svc.get_service("command", "app", start=["true"], stop=["true"], status=["true"],
                        env={"APP_PASSWORD": "s3cret"})
    described = s.describe()
    assert described["env_names"] == ["APP_PASSWORD"]
    assert "s3cret" not in repr(described)


def test_docker_without_sdk_is_dependency_missing(monkeypatch):
    monkeypatch.setattr(svc, "HAS_DOCKER", False)
    with pytest.raises(DependencyMissing, match="docker"):
        svc.get_service("docker", "mysql")


# --- running commands ---------------------------------------------------------------------


def _flag_service(tmp_path, **extra):
    """A command service whose 'running' state is the existence of a flag file."""
    flag = tmp_path / "running"
    return svc.get_service("command", "app", start=["touch", str(flag)], stop=["rm", "-f", str(flag)],
                           status=["test", "-e", str(flag)], **extra), flag


def test_command_service_start_stop_and_status_follow_exit_codes(tmp_path):
    s, flag = _flag_service(tmp_path)
    assert s.is_running() is False
    s.start()
    assert flag.exists() and s.is_running() is True
    s.stop()
    assert s.is_running() is False


def test_restart_without_a_restart_command_is_stop_then_start(tmp_path):
    s, flag = _flag_service(tmp_path)
    s.restart()
    assert s.is_running()


def test_failed_start_raises_with_exit_code_and_output(tmp_path):
    s = svc.get_service("command", "app", start=["sh", "-c", "echo port in use >&2; exit 3"], stop=["true"],
                        status=["false"])
    with pytest.raises(svc.ServiceControlFailed, match="exit code 3: port in use"):
        s.start()
    assert issubclass(svc.ServiceControlFailed, LifeboatError)


def test_missing_program_is_dependency_missing():
    s = svc.get_service("command", "app", start=["/nonexistent/lifeboat-prog"], stop=["true"], status=["true"])
    with pytest.raises(DependencyMissing, match="not found"):
        s.start()


def test_a_hanging_command_is_stopped_at_the_timeout():
    s = svc.get_service("command", "app", start=["sleep", "30"], stop=["true"], status=["true"], timeout_s=0.5)
    began = time.monotonic()
    with pytest.raises(svc.ServiceControlFailed, match="did not finish within 0.5 s"):
        s.start()
    assert time.monotonic() - began < 5


def test_env_settings_reach_the_commands():
    s = svc.get_service("command", "app", start=["true"], stop=["true"],
                        status=["sh", "-c", 'test "$LIFEBOAT_T" = yes'], env={"LIFEBOAT_T": "yes"})
    assert s.is_running() is True


# --- waiting for ports and HTTP ------------------------------------------------------------


def test_wait_for_port_returns_quickly_for_a_listening_port(listening_port):
    assert svc.wait_for_port("127.0.0.1", listening_port, timeout_s=5) < 1


def test_wait_for_port_waits_until_a_late_listener_appears(closed_port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def listen_later():
        time.sleep(0.6)
        srv.bind(("127.0.0.1", closed_port))
        srv.listen(8)

    t = threading.Thread(target=listen_later)
    t.start()
    try:
        waited = svc.wait_for_port("127.0.0.1", closed_port, timeout_s=10, interval_s=0.1)
        assert 0.5 <= waited < 5
    finally:
        t.join()
        srv.close()


def test_wait_for_port_gives_up_at_the_deadline(closed_port):
    began = time.monotonic()
    with pytest.raises(ConnectionFailure, match=f"127.0.0.1:{closed_port} did not accept"):
        svc.wait_for_port("127.0.0.1", closed_port, timeout_s=0.8, interval_s=0.1)
    assert 0.6 <= time.monotonic() - began < 3


def test_wait_for_port_closed(listening_port, closed_port):
    assert svc.wait_for_port_closed("127.0.0.1", closed_port, timeout_s=2) < 1
    with pytest.raises(ConnectionFailure, match="still accepts"):
        svc.wait_for_port_closed("127.0.0.1", listening_port, timeout_s=0.5, interval_s=0.1)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        code = 200 if self.path == "/ok" else 503
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_base():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_wait_for_http_accepts_the_expected_status(http_base):
    assert svc.wait_for_http(f"{http_base}/ok", timeout_s=5) < 1
    assert svc.wait_for_http(f"{http_base}/down", timeout_s=5, expect=(200, 503)) < 1


def test_wait_for_http_reports_the_last_status_at_the_deadline(http_base):
    with pytest.raises(ConnectionFailure, match="HTTP 503"):
        svc.wait_for_http(f"{http_base}/down", timeout_s=0.5, interval_s=0.1)


def test_wait_for_http_on_a_closed_port_fails_at_the_deadline(closed_port):
    began = time.monotonic()
    with pytest.raises(ConnectionFailure):
        svc.wait_for_http(f"http://127.0.0.1:{closed_port}/", timeout_s=0.5, interval_s=0.1)
    assert time.monotonic() - began < 3


def test_wait_for_http_rejects_a_non_http_url():
    with pytest.raises(ConfigError):
        svc.wait_for_http("not a url", timeout_s=1)


# --- the deployment-target interface ------------------------------------------------------


def _command_service(tmp_path, running=True, **extra):
    return svc.get_service("command", "thing", start=["true"], stop=["true"],
                           status=["true" if running else "false"], cwd=str(tmp_path), **extra)


@pytest.mark.parametrize("manager, settings", [
    ("lab", {"repo_dir": "/repo"}), ("systemd", {}), ("command", {"start": ["a"], "stop": ["b"], "status": ["c"]}),
])
def test_every_process_manager_is_a_deployment_target(manager, settings):
    assert isinstance(svc.get_service(manager, "mysql", **settings), svc.DeploymentTarget)


def test_run_command_streams_stdin_to_stdout(tmp_path):
    source, sink = tmp_path / "in", tmp_path / "out"
    source.write_bytes(b"row\n" * 100_000)
    with open(source, "rb") as fin, open(sink, "wb") as fout:
        result = _command_service(tmp_path).run_command(["cat"], stdin=fin, stdout=fout, what="copy")
    assert result.returncode == 0 and result.stdout == b""
    assert sink.read_bytes() == source.read_bytes()


def test_run_command_passes_secrets_in_the_environment_not_argv(tmp_path, caplog):
    secret = "s3cr3t-" + str(time.time_ns())
    result = _command_service(tmp_path).run_command(["sh", "-c", 'printf %s "$LB_SECRET"'],
                                                    secret_env={"LB_SECRET": secret})
    assert result.stdout == secret.encode()
    assert secret not in caplog.text


def test_run_command_failure_names_the_exit_code_and_stderr(tmp_path):
    with pytest.raises(svc.ServiceControlFailed) as err:
        _command_service(tmp_path).run_command(["sh", "-c", "echo broken table >&2; exit 3"], what="load")
    assert "load" in err.value.message and "exit code 3" in err.value.message and "broken table" in err.value.message


def test_run_command_timeout_is_a_failure_not_a_hang(tmp_path):
    started = time.monotonic()
    with pytest.raises(svc.ServiceControlFailed, match="did not finish"):
        _command_service(tmp_path).run_command(["sleep", "30"], timeout_s=0.5)
    assert time.monotonic() - started < 10


def test_a_shell_string_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="list of strings"):
        _command_service(tmp_path).run_command("cat /etc/passwd")  # type: ignore[arg-type]


def test_the_lab_target_knows_its_data_dir(tmp_path):
    rows = '[{"service": "redis", "running": true, "pid": 1, "host": "127.0.0.1", "port": 6, "data_dir": "/d/r"}]'
    s = svc.get_service("lab", "redis", repo_dir=str(tmp_path), python=_fake_lab(tmp_path, rows))
    assert s.data_dir() == "/d/r"
    assert svc.get_service("systemd", "redis").data_dir() is None


def test_wait_healthy_waits_for_the_configured_address(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    rows = f'[{{"service": "redis", "running": true, "pid": 1, "host": "127.0.0.1", "port": {port}}}]'
    try:
        s = svc.get_service("lab", "redis", repo_dir=str(tmp_path), python=_fake_lab(tmp_path, rows))
        assert s.wait_healthy(5) < 5
    finally:
        listener.close()
    with pytest.raises(ConnectionFailure):
        s.wait_healthy(0.5)


def test_wait_healthy_without_an_address_waits_for_running(tmp_path):
    assert _command_service(tmp_path, running=True).wait_healthy(2) < 2
    with pytest.raises(ConnectionFailure, match="not running"):
        _command_service(tmp_path, running=False).wait_healthy(0.5)
