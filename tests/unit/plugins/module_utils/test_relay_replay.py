"""Pure parts of the parallel-applier replay (relay_replay.py): options, the temporary server_id."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import relay_replay as rr
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError


def test_workers_default_to_the_machine_and_never_below_two(monkeypatch):
    monkeypatch.setattr(rr.os, "cpu_count", lambda: 1)
    assert rr.ApplierOptions().checked().workers == 2
    monkeypatch.setattr(rr.os, "cpu_count", lambda: 8)
    assert rr.ApplierOptions().checked().workers == 8
    assert rr.ApplierOptions(workers=3).checked().workers == 3


@pytest.mark.parametrize("bad, word", [({"workers": -1}, "applier_workers"), ({"mode": "aggressive"}, "parallel_mode"),
                                       ({"timeout_s": 0}, "applier_timeout"),
                                       ({"connection": "x'; DROP"}, "connection name")])
def test_bad_options_are_refused_naming_the_option(bad, word):
    with pytest.raises(ConfigError, match=word):
        rr.ApplierOptions(**bad).checked()


def test_server_ids_come_from_gtids_and_the_identity():
    assert rr.server_ids_of(["0-1-5,1-7-9", None, "junk"], "mariadb:server_id=3:domain=0") == {1, 7, 3}


def test_the_temporary_server_id_is_none_the_replayed_events_carry():
    top = rr._MAX_SERVER_ID
    assert rr._temporary_server_id(1, {1}) == top
    assert rr._temporary_server_id(top, {top - 1}) == top - 2


def test_an_unknown_replay_method_is_refused():
    with pytest.raises(ConfigError, match="replay_method"):
        rr.choose_method(None, "fast", log_replayed=False, databases=None)
    assert rr.choose_method(None, "client", log_replayed=False, databases=None)[0] == "client"


def test_a_server_with_another_host_name_is_not_on_this_host_even_if_its_datadir_path_exists_here(monkeypatch):
    """A container's MariaDB says /var/lib/mysql: a system MariaDB's folder of that name may exist here."""
    monkeypatch.setattr(rr.socket, "gethostname", lambda: "backup-host")
    in_container = {"hostname": "3f2a9c1d0b7e", "datadir": "/var/lib/mysql/"}
    why = rr.server_on_another_host(in_container)
    assert "3f2a9c1d0b7e" in why and "backup-host" in why and "/var/lib/mysql/" in why
    assert rr.server_on_another_host({"hostname": "backup-host", "datadir": "/var/lib/mysql/"}) is None
    assert rr.server_on_another_host({"hostname": "", "datadir": "/srv/db"}) is None
