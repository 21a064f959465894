"""What a Compose service's backup labels ask (components/compose/hooks.py; the real container:
tests/integration/compose/test_compose_backup_labels.py)."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose import hooks
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError


def test_no_label_asks_for_nothing():
    assert hooks.hooks_of({"lifeboat.component": "app"}) == {"pre": "", "post": "", "stop": False}


@pytest.mark.parametrize("value, stop", [("true", True), ("True", True), ("yes", True), ("1", True),
                                         ("false", False), ("", False), ("no", False)])
def test_stop_during_backup_takes_the_usual_spellings_of_true(value, stop):
    assert hooks.hooks_of({hooks.STOP_LABEL: value})["stop"] is stop


def test_commands_are_taken_as_written_but_for_surrounding_blanks():
    asked = hooks.hooks_of({hooks.PRE_LABEL: "  pg_dump --flush; sync ", hooks.POST_LABEL: "touch /tmp/x\n"})
    assert (asked["pre"], asked["post"]) == ("pg_dump --flush; sync", "touch /tmp/x")


@pytest.mark.parametrize("component", ["mysql", "redis", "vault"])
def test_only_files_can_be_stopped_during_their_backup(component):
    hooks.check_stoppable("app", "web")
    with pytest.raises(ConfigError, match=f"'db' \\({component}\\) has lifeboat.stop-during-backup=true"):
        hooks.check_stoppable(component, "db")
