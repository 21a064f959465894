# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Doc fragment ``lifeboat.dr.redis``: options of ``common.redis_argument_spec()``."""


class ModuleDocFragment:
    """Documents how to reach a Redis server (AUTH with optional ACL user, optional TLS)."""

    DOCUMENTATION = r'''
options:
  redis_host:
    description:
      - Host name or address of the Redis server.
    type: str
    default: 127.0.0.1
  redis_port:
    description:
      - TCP port of the Redis server.
    type: int
    default: 6379
  redis_user:
    description:
      - ACL user name for C(AUTH); when unset, C(AUTH) uses only O(redis_password).
    type: str
  redis_password:
    description:
      - Password for C(AUTH). It is never passed on a command line.
    type: str
  redis_tls:
    description:
      - Connect with TLS.
    type: bool
    default: false
  redis_ca_cert:
    description:
      - CA certificate file used to verify the server certificate when O(redis_tls=true).
    type: path
  redis_validate_certs:
    description:
      - Whether to verify the server certificate when O(redis_tls=true).
    type: bool
    default: true
  redis_timeout:
    description:
      - Seconds to wait for the connection and for each command.
    type: float
    default: 10.0
'''
