"""Where mariabackup runs (issues #19/#20): on this host, or inside the server's container.

In a container the credentials reach mariabackup on its stdin (``--defaults-extra-file=/dev/stdin``),
never in argv nor in a file there; the ``--extra-lsndir`` is a ``mktemp -d`` folder in the container,
read back with ``cat`` and removed; the server version a restored datadir will be opened by is the
container's (exec when it runs, a throwaway container of its image when it is stopped).
"""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import physical
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.conn import ConnParams
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import BackupFailed, ServiceControlFailed
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import CommandResult

CHECKPOINTS = "backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 44420\nlast_lsn = 1946661\n"
INFO = ("tool_version = 10.11.18-MariaDB\nserver_version = 10.11.18-MariaDB-log\n"
        "binlog_pos = filename 'mysql-bin.000001', position '1234', GTID of the last change '0-1-7'\n")


class FakeContainer:
    """A ``docker``-manager target: answers the commands Lifeboat execs in the container."""

    manager = "docker"
    name = "mysql"

    def __init__(self, running: bool = True, files: dict[str, str] | None = None) -> None:
        self.running = running
        self.files = files if files is not None else {"xtrabackup_checkpoints": CHECKPOINTS, "xtrabackup_info": INFO}
        self.calls: list[tuple[list[str], bytes | None]] = []
        self.image_calls: list[list[str]] = []

    def run_command(self, argv, *, stdin=None, stdout=None, secret_env=None, timeout_s=None, what=""):
        self.calls.append((list(argv), stdin.read() if stdin is not None else None))
        if argv[0] == "mktemp":
            return CommandResult(0, b"/tmp/lifeboat-lsn-AbCd1234\n", "")
        if argv[0] == "cat":
            name = argv[1].rsplit("/", 1)[1]
            if name not in self.files:
                raise ServiceControlFailed(f"cat: {argv[1]}: No such file or directory")
            return CommandResult(0, self.files[name].encode(), "")
        if argv[0] == "du":
            return CommandResult(0, f"123456789\t{argv[2]}\n".encode(), "")
        if argv[:2] == ["mariadbd", "--version"]:
            return CommandResult(0, b"mariadbd  Ver 10.11.18-MariaDB-0+deb12u1-log for debian-linux-gnu\n", "")
        return CommandResult(0, b"", "")

    def is_running(self) -> bool:
        return self.running

    def run_in_image(self, argv, *, what=""):
        self.image_calls.append(list(argv))
        return b"mariadbd  Ver 10.11.17-MariaDB for debian-linux-gnu\n"


def params() -> ConnParams:
    return ConnParams(host="10.214.0.11", port=13306, user="lifeboat_backup", password="s3cret-pass")


def test_in_a_container_the_option_file_is_read_from_stdin_and_no_secret_is_in_argv():
    lsndir = physical.LsnDir.on(FakeContainer(), None)
    with lsndir.option_file(params()) as (path, stdin):
        assert path == "/dev/stdin"
        assert b"s3cret-pass" in stdin and b"lifeboat_backup" in stdin and stdin.startswith(b"[client]")
        argv = physical.my.tool_argv("mariabackup", path, "--backup")
    assert not any("s3cret" in a for a in argv)


def test_the_lsn_folder_is_made_read_and_removed_inside_the_container():
    target = FakeContainer()
    lsndir = physical.LsnDir.on(target, None)
    assert lsndir.path == "/tmp/lifeboat-lsn-AbCd1234"
    facts = lsndir.read()
    lsndir.remove()

    assert (facts["from_lsn"], facts["to_lsn"], facts["last_lsn"]) == (0, 44420, 1946661)
    assert facts["binlog_position"] == {"file": "mysql-bin.000001", "position": 1234, "gtid": "0-1-7"}
    commands = [argv for argv, _stdin in target.calls]
    assert commands[0][:2] == ["find", "/tmp"] and "lifeboat-lsn-*" in commands[0], "old folders of killed runs"
    assert ["rm", "-rf", "/tmp/lifeboat-lsn-AbCd1234"] in commands


def test_checkpoints_missing_in_the_container_fail_the_backup_naming_the_folder():
    lsndir = physical.LsnDir.on(FakeContainer(files={"xtrabackup_info": INFO}), None)
    with pytest.raises(BackupFailed, match="xtrabackup_checkpoints into /tmp/lifeboat-lsn-AbCd1234 in the container"):
        lsndir.read()


def test_on_this_host_the_lsn_folder_is_a_private_local_folder(tmp_path):
    lsndir = physical.LsnDir.on(None, str(tmp_path))
    try:
        assert lsndir.path.startswith(str(tmp_path))
        with lsndir.option_file(params()) as (path, stdin):
            assert stdin is None and path != "/dev/stdin"
    finally:
        lsndir.remove()


def test_the_container_runs_its_own_mariabackup_and_measures_its_own_datadir():
    target = FakeContainer()
    assert physical.tool_for(target) == "mariabackup"
    assert physical.datadir_size(physical.Path("/var/lib/mysql"), target) == 123456789
    assert target.calls[-1][0] == ["du", "-sb", "/var/lib/mysql"]


def test_the_server_version_of_a_container_comes_from_the_container_or_its_image_when_stopped():
    running, stopped = FakeContainer(running=True), FakeContainer(running=False)
    assert physical.installed_server_version(running) == "10.11.18-MariaDB-0+deb12u1-log"
    assert running.calls[-1][0] == ["mariadbd", "--version"] and not running.image_calls
    assert physical.installed_server_version(stopped) == "10.11.17-MariaDB"
    assert stopped.image_calls == [["mariadbd", "--version"]] and not stopped.calls


def test_a_redo_log_that_is_not_the_servers_is_explained_with_the_fix():
    """Measured on the compose lab: a host-side mariabackup of a container's server read the host's
    own /var/lib/mysql (another server) and stopped with "Was only able to copy log"."""
    raw = BackupFailed("mariabackup --backup failed with exit code 1: Was only able to copy log from 44404 to "
                       "44760, not 1946661")
    explained = physical._explained(raw, "/var/lib/mysql/", None)
    assert "/var/lib/mysql/ on this host are not this server's" in explained.message
    assert "service_manager: docker" in explained.hint
    assert physical._explained(raw, "/var/lib/mysql/", FakeContainer()) is raw
    other = BackupFailed("mariabackup --backup failed: Access denied")
    assert physical._explained(other, "/var/lib/mysql/", None) is other
