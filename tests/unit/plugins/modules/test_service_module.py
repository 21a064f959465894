"""Specification of the lifeboat.dr.service module, run as Ansible runs it, with the ``command`` manager.

The fake services are marker files: start creates ``<dir>/<name>``, stop removes it, status tests it;
every command appends ``<action> <name>`` to a log, so the order of the actions is visible.
"""

from __future__ import annotations

import pytest
from module_runner import run_module


def run_service(tmp_path, check_mode=False, **args):
    return run_module(tmp_path, "service", args, check_mode=check_mode)


@pytest.fixture
def fake(tmp_path):
    state = tmp_path / "running"
    state.mkdir()
    log = tmp_path / "actions.log"

    def command(action, body):
        return ["sh", "-c", f'echo "{action} $LIFEBOAT_SERVICE" >> {log}; {body}']

    settings = {"start": command("start", f'[ "$LIFEBOAT_SERVICE" != broken ] && touch {state}/$LIFEBOAT_SERVICE'),
                "stop": command("stop", f"rm -f {state}/$LIFEBOAT_SERVICE"),
                "status": ["sh", "-c", f"test -f {state}/$LIFEBOAT_SERVICE"]}

    def actions():
        return log.read_text().split("\n")[:-1] if log.exists() else []

    return {"settings": settings, "state": state, "actions": actions}


def services(*names):
    return [{"name": n} for n in names]


def test_services_start_in_the_given_order_and_a_second_run_changes_nothing(tmp_path, fake):
    result = run_service(tmp_path, services=services("vault", "mysql", "app"), manager="command",
                         settings=fake["settings"])
    assert result["changed"] is True and not result.get("failed")
    assert fake["actions"]() == ["start vault", "start mysql", "start app"]
    assert [(r["name"], r["was_running"], r["running"]) for r in result["services"]] == [
        ("vault", False, True), ("mysql", False, True), ("app", False, True)]

    again = run_service(tmp_path, services=services("vault", "mysql", "app"), manager="command",
                        settings=fake["settings"])
    assert again["changed"] is False and fake["actions"]() == ["start vault", "start mysql", "start app"]


def test_a_failing_service_stops_the_list_and_is_named(tmp_path, fake):
    result = run_service(tmp_path, services=services("vault", "broken", "app"), manager="command",
                         settings=fake["settings"])
    assert result["failed"] is True and "'broken'" in result["msg"]
    assert fake["actions"]() == ["start vault", "start broken"]  # app was never touched
    assert sorted(p.name for p in fake["state"].iterdir()) == ["vault"]


def test_stop_in_check_mode_predicts_without_acting(tmp_path, fake):
    (fake["state"] / "mysql").touch()
    result = run_service(tmp_path, check_mode=True, services=services("app", "mysql"), state="stopped",
                         manager="command", settings=fake["settings"])
    assert result["changed"] is True
    assert [(r["name"], r["changed"]) for r in result["services"]] == [("app", False), ("mysql", True)]
    assert fake["actions"]() == [] and (fake["state"] / "mysql").exists()


@pytest.mark.parametrize("args", [{}, {"name": "mysql", "services": [{"name": "mysql"}]}])
def test_exactly_one_of_name_and_services_is_required(tmp_path, fake, args):
    result = run_service(tmp_path, manager="command", settings=fake["settings"], **args)
    assert result["failed"] is True and "name" in result["msg"] and "services" in result["msg"]
