# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Doc fragment ``lifeboat.dr.mysql``: options of ``common.mysql_argument_spec()``."""


class ModuleDocFragment:
    """Documents how to reach a MySQL/MariaDB server (names as in community.mysql)."""

    DOCUMENTATION = r'''
options:
  login_host:
    description:
      - Host name or address of the MySQL/MariaDB server.
    type: str
    default: 127.0.0.1
  login_port:
    description:
      - TCP port of the server.
    type: int
    default: 3306
  login_user:
    description:
      - Account used to connect.
    type: str
  login_password:
    description:
      - Password of O(login_user). It is never passed on a command line.
    type: str
  login_unix_socket:
    description:
      - Path of a Unix socket to connect through instead of O(login_host)/O(login_port).
    type: str
  connect_timeout:
    description:
      - Seconds to wait for the connection to be established.
    type: int
    default: 10
  ca_cert:
    description:
      - CA certificate file used to verify the server's TLS certificate; enables TLS.
    type: path
    aliases: [ssl_ca]
  check_hostname:
    description:
      - Whether the server certificate's host name must match O(login_host).
      - When unset, the client library default applies.
    type: bool
'''
