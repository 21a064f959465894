"""service.probe_service: a refused connection is never taken for a dead server (issue 17).

The lab manager is driven by a stand-in ``lab status --json`` (a shell script printing the row);
the process and its listening socket are real (this test process), read from /proc.
"""

from __future__ import annotations

import json
import os

from ansible_collections.lifeboat.dr.plugins.module_utils.util import service as svc


def lab_service(tmp_path, **row):
    """A lab Service whose ``lab status --json`` prints one row for service 'mysql'."""
    fake = tmp_path / "fake-python"
    rows = json.dumps([dict(service="mysql", host="127.0.0.1", **row)])
    fake.write_text(f"#!/bin/sh\ncat <<'END'\n{rows}\nEND\n")
    fake.chmod(0o755)
    return svc.get_service("lab", "mysql", python=str(fake), repo_dir=str(tmp_path))


def test_listening_addresses_reads_the_sockets_a_process_listens_on(listening_port):
    assert ("127.0.0.1", listening_port) in svc.listening_addresses(os.getpid())


def test_listening_addresses_of_a_vanished_process_is_unknown():
    assert svc.listening_addresses(2 ** 22 + 12345) is None


def test_a_reachable_address_is_up_without_asking_the_manager(tmp_path, listening_port):
    result = svc.probe_service(lab_service(tmp_path, running=True, pid=os.getpid(), port=listening_port),
                               "127.0.0.1", listening_port)
    assert result["verdict"] == "up" and result["reachable"] is True and result["running"] is None


def test_a_running_server_refusing_a_wrong_port_is_misaddressed_naming_where_it_listens(
        tmp_path, listening_port, closed_port):
    service = lab_service(tmp_path, running=True, pid=os.getpid(), port=listening_port)
    result = svc.probe_service(service, "127.0.0.1", closed_port, address_source="lifeboat_mysql_port")
    assert result["verdict"] == "misaddressed"
    assert result["running"] is True and result["pid"] == os.getpid()
    assert f"127.0.0.1:{listening_port}" in result["listening"]
    message = result["message"]
    assert f"127.0.0.1:{closed_port} refused" in message  # the address tried
    assert f"listens on 127.0.0.1:{listening_port}" in message and f"pid {os.getpid()}" in message  # what runs
    assert "fix lifeboat_mysql_port" in message and "not dead" in message  # the fix


def test_a_stopped_server_at_its_configured_address_is_dead(tmp_path, closed_port):
    result = svc.probe_service(lab_service(tmp_path, running=False, pid=None, port=closed_port),
                               "127.0.0.1", closed_port)
    assert result["verdict"] == "dead" and result["running"] is False
    assert result["configured"] == f"127.0.0.1:{closed_port}"


def test_a_stopped_server_configured_for_another_port_is_misaddressed_not_dead(tmp_path, closed_port):
    result = svc.probe_service(lab_service(tmp_path, running=False, pid=None, port=closed_port + 1),
                               "127.0.0.1", closed_port, address_source="lifeboat_mysql_port")
    assert result["verdict"] == "misaddressed"
    assert f"configured for 127.0.0.1:{closed_port + 1}" in result["message"]
    assert "fix lifeboat_mysql_port" in result["message"]


def test_the_command_manager_cannot_tell_where_a_running_server_listens_so_it_is_unknown(closed_port):
    service = svc.get_service("command", "mysql", start=["true"], stop=["true"], status=["true"])
    result = svc.probe_service(service, "127.0.0.1", closed_port)
    assert result["verdict"] == "unknown"
    assert "cannot be known with the command manager" in result["message"]
    assert "refusing to take it for a dead server" in result["message"]


def test_the_command_manager_saying_not_running_is_stopped_not_confirmed_dead(closed_port):
    service = svc.get_service("command", "mysql", start=["true"], stop=["true"], status=["false"])
    result = svc.probe_service(service, "127.0.0.1", closed_port)
    assert result["verdict"] == "stopped"
    assert "cannot be confirmed" in result["message"]
