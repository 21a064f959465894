#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.service: start, stop or restart services of the stack, in order."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: service
short_description: Start, stop or restart services of the backed-up stack, in order
version_added: 0.1.0
description:
  - Brings one service (database, cache, secret store, application) to the requested
    state through a I(manager) - the local lab, systemd, a Docker container or
    commands you give - and optionally waits until it accepts connections (or stops
    accepting them).
  - With O(services), several services of one machine are handled in the given order,
    each one settled (its wait done) before the next is touched; one task instead of one
    per service.
  - Used by restore and DR-drill playbooks to stop a service before its data is
    replaced and start it again afterwards.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  name:
    description:
      - Name of the service, for example C(mysql), C(redis), C(vault) or C(app).
      - For O(manager=lab) it is the lab's service name; for C(systemd) the default
        unit; for C(docker) the default container name.
      - Exactly one of O(name) and O(services) is required.
    type: str
  services:
    description:
      - Several services, handled one after the other in this order, all with the same
        O(state), O(manager), O(settings) and O(wait_timeout). A failure stops the list
        there and names the service.
      - Exactly one of O(name) and O(services) is required.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the service, as O(name).
        type: str
        required: true
      wait_port:
        description: As O(wait_port), for this service.
        type: int
      wait_host:
        description: As O(wait_host), for this service.
        type: str
        default: 127.0.0.1
      wait_url:
        description: As O(wait_url), for this service.
        type: str
  state:
    description:
      - C(started) and C(stopped) change the service only when it is not already in
        that state. C(restarted) always restarts it.
    type: str
    choices: [started, stopped, restarted]
    default: started
  manager:
    description:
      - What controls the service.
      - C(lab) runs C(<python> -m lab service NAME start|stop|restart) and reads
        C(<python> -m lab status --json) in a Lifeboat repository; settings
        C(repo_dir) (default the current directory), C(python)
        (default the interpreter running the module), C(env), C(timeout_s).
      - C(systemd) runs C(systemctl start|stop|restart UNIT) and C(systemctl is-active);
        settings C(unit) (default O(name)), C(user) (bool, C(systemctl --user)),
        C(systemctl), C(timeout_s).
      - C(docker) starts/stops a container through the Docker SDK (Python package
        C(docker) needed on the managed host); settings C(container) (default O(name)),
        or C(project) (a Compose project) with C(service) (its Compose service, default
        O(name)) and C(container_number) (which one of a scaled service), resolved by the
        Compose labels; C(base_url) (default E(DOCKER_HOST)), C(stop_timeout_s).
      - C(command) runs your own commands; settings C(start), C(stop), C(status)
        (required, each a list of program and arguments, no shell), C(restart),
        C(cwd), C(env), C(timeout_s). A status command exiting 0 means running. The
        commands find the service's name in the environment variable C(LIFEBOAT_SERVICE),
        so one set of commands can serve every service of O(services).
    type: str
    choices: [lab, systemd, docker, command]
    default: lab
  settings:
    description:
      - Manager settings, see O(manager). Unknown settings are an error.
      - Do not put secrets here; commands and settings are shown in the result.
    type: dict
    default: {}
  wait_port:
    description:
      - TCP port on O(wait_host) to wait for after the change. When the service
        should run, wait until the port accepts connections; when O(state=stopped),
        until it refuses them.
    type: int
  wait_host:
    description:
      - Host of O(wait_port).
    type: str
    default: 127.0.0.1
  wait_url:
    description:
      - HTTP(S) URL that must answer with status 200 before the module returns, when
        the service should run.
    type: str
  wait_timeout:
    description:
      - Seconds to wait for O(wait_port) and O(wait_url), each.
    type: float
    default: 60
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: Reads the current state only and reports whether it would change.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: C(started) and C(stopped) are idempotent; C(restarted) always changes.
notes:
  - The status check runs even in check mode; it never changes the service.
seealso:
  - module: lifeboat.dr.store_info
'''

EXAMPLES = r'''
- name: Stop the lab's MariaDB before restoring its data directory
  lifeboat.dr.service:
    name: mysql
    state: stopped
    manager: lab
    settings:
      repo_dir: /opt/lifeboat
    wait_port: 13306

- name: Start MariaDB through systemd and wait until it listens
  lifeboat.dr.service:
    name: mysql
    manager: systemd
    settings:
      unit: mariadb.service
    wait_port: 3306

- name: Start the stack of one host in dependency order, each service up before the next
  lifeboat.dr.service:
    services:
      - {name: vault, wait_port: 18200}
      - {name: mysql, wait_port: 13306}
      - {name: app, wait_url: "http://127.0.0.1:18080/health"}
    state: started
    manager: lab

- name: Restart the application container and wait for its health page
  lifeboat.dr.service:
    name: app
    state: restarted
    manager: docker
    settings:
      container: shop-app
    wait_url: http://127.0.0.1:8080/health
'''

RETURN = r'''
services:
  description: With O(services), one result per service in order, each with the keys below.
  returned: when O(services) is given
  type: list
  elements: dict
  sample: [{"name": "vault", "changed": false, "was_running": true, "running": true, "waited_s": 0.0}]
name:
  description: The service name.
  returned: when O(name) is given
  type: str
  sample: mysql
manager:
  description: The manager used.
  returned: always
  type: str
  sample: lab
was_running:
  description: Whether the service was running before the module acted.
  returned: when O(name) is given
  type: bool
  sample: false
running:
  description: Whether the service runs afterwards (in check mode, whether it would).
  returned: when O(name) is given
  type: bool
  sample: true
waited_s:
  description: Seconds spent waiting for O(wait_port) / O(wait_url) (0 when not asked).
  returned: when O(name) is given
  type: float
  sample: 1.4
service:
  description: How the service is controlled (manager, commands, unit or container; never secret values).
  returned: when O(name) is given
  type: dict
  sample: {"manager": "systemd", "name": "mysql", "unit": "mariadb.service"}
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import (
    MANAGERS,
    get_service,
    wait_for_http,
    wait_for_port,
    wait_for_port_closed,
)


def argument_spec():
    """The module's options (no shared layer applies)."""
    return dict(
        name=dict(type="str"),
        services=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            wait_port=dict(type="int"),
            wait_host=dict(type="str", default="127.0.0.1"),
            wait_url=dict(type="str"),
        )),
        state=dict(type="str", default="started", choices=["started", "stopped", "restarted"]),
        manager=dict(type="str", default="lab", choices=list(MANAGERS)),
        settings=dict(type="dict", default={}),
        wait_port=dict(type="int"),
        wait_host=dict(type="str", default="127.0.0.1"),
        wait_url=dict(type="str"),
        wait_timeout=dict(type="float", default=60.0),
    )


def needs_change(state, was_running):
    """Whether reaching ``state`` changes a service that ``was_running``."""
    if state == "restarted":
        return True
    return was_running != (state == "started")


def wait_until_settled(params):
    """Wait for the port/URL given in the options; return the seconds waited."""
    waited = 0.0
    should_run = params["state"] != "stopped"
    if params["wait_port"]:
        if should_run:
            waited += wait_for_port(params["wait_host"], params["wait_port"], params["wait_timeout"])
        else:
            waited += wait_for_port_closed(params["wait_host"], params["wait_port"], params["wait_timeout"])
    if params["wait_url"] and should_run:
        waited += wait_for_http(params["wait_url"], params["wait_timeout"])
    return waited


def reach_state(module):
    """Bring the service (O(name)) or each of O(services), in order, to the requested state."""
    params = module.params
    if params["name"]:
        return settle_one(params, module.check_mode)
    results = []
    for spec in params["services"]:
        one = dict(params, name=spec["name"], wait_port=spec["wait_port"], wait_host=spec["wait_host"],
                   wait_url=spec["wait_url"])
        results.append(settle_one(one, module.check_mode))
    return dict(changed=any(r["changed"] for r in results), manager=params["manager"], services=results)


def settle_one(params, check_mode):
    """One service to ``params["state"]`` (or its prediction in check mode); its result dict."""
    service = get_service(params["manager"], params["name"], **(params["settings"] or {}))
    state = params["state"]
    was_running = service.is_running()
    changed = needs_change(state, was_running)
    result = dict(changed=changed, name=params["name"], manager=params["manager"], was_running=was_running,
                  running=state != "stopped", waited_s=0.0, service=service.describe())
    if check_mode:
        return result
    if state == "restarted":
        service.restart()
    elif changed and state == "started":
        service.start()
    elif changed and state == "stopped":
        service.stop()
    result["waited_s"] = round(wait_until_settled(params), 3)
    # asked again only after an action; a service already in its state is reported as found
    result["running"] = service.is_running() if changed or state == "restarted" else was_running
    return result


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="service",
                            required_one_of=[("name", "services")], mutually_exclusive=[("name", "services")])
    run_module(module, reach_state)


if __name__ == "__main__":
    main()
