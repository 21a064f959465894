"""The MySQL connection layer: option files, argv, flavours, error mapping (no server needed)."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailure,
    NotFound,
    PermissionDenied,
)

PARAMS = my.ConnParams(host="db.example", port=3307, user="backup", password='p"a\\ss;word#1')


def test_option_file_is_0600_holds_the_credentials_and_is_removed_afterwards():
    with my.option_file(PARAMS) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        text = open(path, encoding="utf-8").read()
    assert not os.path.exists(path)
    assert text.startswith("[client]\n")
    assert 'password="p\\"a\\\\ss;word#1"' in text
    assert 'host="db.example"' in text and "port=3307" in text and "protocol=TCP" in text


def test_option_file_uses_the_socket_instead_of_tcp_when_given():
    text = my.option_file_text(PARAMS.replace(unix_socket="/run/mysqld.sock"))
    assert 'socket="/run/mysqld.sock"' in text and "host=" not in text


def test_option_values_with_newlines_are_refused():
    with pytest.raises(ConfigError):
        my.option_file_text(PARAMS.replace(password="a\nb"))


def test_tool_argv_carries_the_defaults_file_first_and_never_a_password():
    argv = my.tool_argv("mariadb-dump", "/tmp/x.cnf", "--system=users")
    assert argv == ["mariadb-dump", "--defaults-extra-file=/tmp/x.cnf", "--system=users"]
    assert PARAMS.password not in " ".join(argv)
    for bad in ("--password=x", "-psecret"):
        with pytest.raises(ConfigError):
            my.tool_argv("mariadb", "/tmp/x.cnf", bad)


def test_repr_of_connection_parameters_hides_the_password():
    assert PARAMS.password not in repr(PARAMS) and PARAMS.password not in PARAMS.where


def test_module_params_map_onto_connection_parameters():
    p = my.ConnParams.from_module_params({"login_host": "h", "login_port": 1, "login_user": "u",
                                          "login_password": "pw", "connect_timeout": 3})
    assert (p.host, p.port, p.user, p.password, p.connect_timeout) == ("h", 1, "u", "pw", 3)


@pytest.mark.parametrize("version, name, status_sql, gtid_var, monitor", [
    ("10.11.6-MariaDB-log", "mariadb", "SHOW BINLOG STATUS", "gtid_binlog_pos", "BINLOG MONITOR"),
    ("10.4.30-MariaDB", "mariadb", "SHOW MASTER STATUS", "gtid_binlog_pos", "REPLICATION CLIENT"),
    ("8.0.36", "mysql", "SHOW MASTER STATUS", "gtid_executed", "REPLICATION CLIENT"),
    ("8.4.0", "mysql", "SHOW BINARY LOG STATUS", "gtid_executed", "REPLICATION CLIENT"),
])
def test_flavor_keeps_the_mariadb_mysql_differences(version, name, status_sql, gtid_var, monitor):
    flavor = my.parse_version(version)
    assert flavor.name == name
    assert flavor.binlog_status_sql == status_sql
    assert flavor.gtid_variable == gtid_var
    assert flavor.binlog_monitor_privilege == monitor
    assert flavor.supports_system_users == (name == "mariadb" and flavor.version >= (10, 3, 28))
    assert flavor.has_binlog_snapshot_status == (name == "mariadb")


def test_unparseable_version_is_a_config_error():
    with pytest.raises(ConfigError):
        my.parse_version("garbage")


class FakeErr(Exception):
    """Shaped like a PyMySQL error: args = (code, message)."""


@pytest.mark.parametrize("code, message, kind, named", [
    (1045, "Access denied for user 'x'@'h' (using password: YES)", AuthenticationFailed, "login_password"),
    (2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)", ConnectionFailure,
     "login_port"),
    (1227, "Access denied; you need (at least one of) the RELOAD privilege(s) for this operation",
     PermissionDenied, "GRANT RELOAD"),
    (1142, "SELECT command denied to user 'u'@'h' for table `shop`.`t`", PermissionDenied, "GRANT SELECT"),
    (1049, "Unknown database 'nope'", NotFound, "nope"),
])
def test_server_errors_become_lifeboat_errors_naming_the_fix(code, message, kind, named):
    err = my.translate_error(FakeErr(code, message), "doing it")
    assert isinstance(err, kind)
    assert named in str(err)


def test_quoting_of_identifiers_doubles_backticks():
    assert my.quote_ident("a`b") == "`a``b`"
    assert my.qualified("d", "t") == "`d`.`t`"
