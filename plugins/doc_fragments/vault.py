# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Doc fragment ``lifeboat.dr.vault``: options of ``common.vault_argument_spec()``."""


class ModuleDocFragment:
    """Documents how to reach Vault/OpenBao (layered as in community.hashi_vault)."""

    DOCUMENTATION = r'''
options:
  url:
    description:
      - URL of the Vault/OpenBao server, for example C(https://vault.example.com:8200).
    type: str
    required: true
  auth_method:
    description:
      - How to authenticate. C(token) uses O(token); C(approle) logs in with
        O(role_id) and O(secret_id).
    type: str
    default: token
    choices: [token, approle]
  token:
    description:
      - Vault token, used when O(auth_method=token).
    type: str
  role_id:
    description:
      - AppRole role ID, used when O(auth_method=approle).
    type: str
  secret_id:
    description:
      - AppRole secret ID, used when O(auth_method=approle).
    type: str
  namespace:
    description:
      - Vault Enterprise namespace to work in; leave unset for OpenBao or the root namespace.
    type: str
  ca_cert:
    description:
      - CA certificate file used to verify the server's TLS certificate.
    type: path
  validate_certs:
    description:
      - Whether to verify the server's TLS certificate.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each request to the server.
    type: int
    default: 30
'''
