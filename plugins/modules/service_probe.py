#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.service_probe: is a service up, dead, or only unreachable at the given address?"""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: service_probe
short_description: Tell a dead service from one that is only unreachable at the given address
version_added: 0.1.0
description:
  - Connects once to O(host):O(port). When that fails, asks the service O(manager) whether the
    service runs, which process it is, where that process listens (read from C(/proc)) and where the
    service is configured to listen, and returns a verdict. Changes nothing.
  - "Verdicts: C(up) the address accepts connections; C(dead) the manager says the service is not
    running and the address is the one it is configured for; C(stopped) not running, but its address
    cannot be confirmed with this manager; C(misaddressed) the service runs (or is configured)
    elsewhere; C(unreachable) it runs and listens on that port, yet the address refuses (host name,
    firewall); C(unknown) it runs but where it listens cannot be known (e.g. the C(command) manager)."
  - A refused connection alone is never taken for a dead server; recovery playbooks use the verdict
    to refuse before anything is stopped.
  - Fails when the verdict is in O(fail_on), with a message naming the address tried, what runs and
    the fix.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  name:
    description:
      - Name of the service, as for M(lifeboat.dr.service).
    type: str
    required: true
  manager:
    description:
      - What controls the service, as for M(lifeboat.dr.service). C(lab) knows the pid and the
        configured address; C(systemd) the main pid; C(docker) and C(command) neither.
    type: str
    choices: [lab, systemd, docker, command]
    default: lab
  settings:
    description:
      - Manager settings, as for M(lifeboat.dr.service).
    type: dict
    default: {}
  host:
    description:
      - Host the service is expected to accept connections on.
    type: str
    default: 127.0.0.1
  port:
    description:
      - TCP port the service is expected to accept connections on.
    type: int
    required: true
  timeout:
    description:
      - Seconds the one connection attempt may take.
    type: float
    default: 2
  address_source:
    description:
      - The settings the address came from (e.g. C(lifeboat_mysql_host/lifeboat_mysql_port)), named in
        the fix of the message.
    type: str
    default: ''
  fail_on:
    description:
      - Verdicts that make the module fail (the message says why and what to do).
    type: list
    elements: str
    choices: [up, dead, stopped, misaddressed, unreachable, unknown]
    default: [misaddressed, unreachable, unknown]
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: Only reads; the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: lifeboat.dr.service
'''

EXAMPLES = r'''
- name: Is MariaDB dead, or is the port in the inventory wrong?
  lifeboat.dr.service_probe:
    name: mysql
    manager: systemd
    settings:
      unit: mariadb.service
    host: 127.0.0.1
    port: 3306
    address_source: lifeboat_mysql_port
  register: mysql_probe

- name: Only a confirmed dead server gets a fresh datadir
  ansible.builtin.debug:
    msg: "fresh server needed"
  when: mysql_probe.verdict == 'dead'
'''

RETURN = r'''
verdict:
  description: One of C(up), C(dead), C(stopped), C(misaddressed), C(unreachable), C(unknown).
  returned: always
  type: str
  sample: misaddressed
message:
  description: What was tried, what runs and the fix.
  returned: always
  type: str
  sample: "127.0.0.1:3307 refused the connection ([Errno 111] Connection refused): mysql is running (lab manager,
    pid 4557) but listens on 127.0.0.1:3306, not 127.0.0.1:3307; fix lifeboat_mysql_port (the server is not dead)"
reachable:
  description: Whether O(host):O(port) accepted a TCP connection.
  returned: always
  type: bool
  sample: false
error:
  description: The connection error (none when reachable).
  returned: always
  type: str
  sample: "[Errno 111] Connection refused"
running:
  description: Whether the manager says the service runs (none when reachable; not asked).
  returned: always
  type: bool
  sample: true
pid:
  description: The service's main pid as the manager knows it (none when unknown).
  returned: always
  type: int
  sample: 4557
listening:
  description: The TCP addresses that process listens on (none when unknown).
  returned: always
  type: list
  elements: str
  sample: ["127.0.0.1:3306"]
configured:
  description: The address the service is configured for, when the manager knows it.
  returned: always
  type: str
  sample: "127.0.0.1:3306"
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConnectionFailure
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import (
    MANAGERS,
    VERDICTS,
    get_service,
    probe_service,
)


def argument_spec():
    """The module's options (no shared layer applies)."""
    return dict(
        name=dict(type="str", required=True),
        manager=dict(type="str", default="lab", choices=list(MANAGERS)),
        settings=dict(type="dict", default={}),
        host=dict(type="str", default="127.0.0.1"),
        port=dict(type="int", required=True),
        timeout=dict(type="float", default=2.0),
        address_source=dict(type="str", default=""),
        fail_on=dict(type="list", elements="str", choices=list(VERDICTS),
                     default=["misaddressed", "unreachable", "unknown"]),
    )


def probe(module):
    """Probe the service; raise ConnectionFailure (the verdict's message) for a verdict in O(fail_on)."""
    params = module.params
    service = get_service(params["manager"], params["name"], **(params["settings"] or {}))
    result = probe_service(service, params["host"], params["port"], timeout_s=params["timeout"],
                           address_source=params["address_source"])
    if result["verdict"] in params["fail_on"]:
        raise ConnectionFailure(f"{params['name']}: {result['message']}")
    return dict(changed=False, **result)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="service")
    run_module(module, probe)


if __name__ == "__main__":
    main()
