#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.compose_backup_hook: a Compose service's backup labels, before or after its backup."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: compose_backup_hook
short_description: Do what a Compose service's backup labels ask, before or after its component's backup
version_added: 0.1.0
description:
  - Reads the labels of the service's container through the Docker API (found by its Compose project and
    service labels) and does what they ask around a backup, the way docker-volume-backup users label
    their services.
  - "O(phase=before): C(lifeboat.exec-pre-backup) - a command run in the container (C(sh -c), exec through the
    API); a non-zero exit fails, naming the label. Then C(lifeboat.stop-during-backup=true) - the container is
    stopped (only for files, component C(app); on a server read over the network it is refused, naming why)."
  - "O(phase=after): the container is started again if O(stopped) (and its own healthcheck waited for), then
    C(lifeboat.exec-post-backup) is run in it. The playbooks run this phase also when the backup failed."
  - A container that is not running is left alone (nothing can run in it; it is quiescent already).
  - The commands' output is never returned nor logged; a failure names the label, the exit code and the tail
    of the command's stderr.
  - C(playbooks/includes/backup_component.yml) runs both phases around every component backup of a
    Compose deployment (C(lifeboat_deployment=compose)), the pre-restore safety copy included.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  phase:
    description:
      - C(before) or C(after) the backup.
    type: str
    required: true
    choices: [before, after]
  component:
    description:
      - The component whose backup this surrounds (C(mysql), C(redis), C(vault), C(app)).
    type: str
    required: true
    choices: [mysql, redis, vault, app]
  project:
    description:
      - The Compose project.
    type: str
    required: true
  service:
    description:
      - The Compose service of the component.
    type: str
    required: true
  docker_host:
    description:
      - The Docker API (default C(DOCKER_HOST)).
    type: str
  stopped:
    description:
      - With O(phase=after) - the O(phase=before) run stopped the container (its RV(stopped)); it is started again.
    type: bool
    default: false
  timeout_s:
    description:
      - Seconds a label's command may run.
    type: float
    default: 300
  health_timeout_s:
    description:
      - With O(phase=after) - seconds to wait for the healthcheck of a container started again (0 = do not wait).
    type: float
    default: 120
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: Reads the labels and says what they ask; runs, stops and starts nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: The label's commands run every time.
seealso:
  - module: lifeboat.dr.service
'''

EXAMPLES = r'''
- name: Before the app's backup
  lifeboat.dr.compose_backup_hook:
    phase: before
    component: app
    project: shop
    service: web
  register: before

- name: After the app's backup (also when it failed)
  lifeboat.dr.compose_backup_hook:
    phase: after
    component: app
    project: shop
    service: web
    stopped: "{{ before.stopped }}"
'''

RETURN = r'''
hooks:
  description: With O(phase=before) - the labels the service has (C(pre), C(stop), C(post)).
  returned: phase before
  type: list
  elements: str
running:
  description: With O(phase=before) - whether the container was running.
  returned: phase before
  type: bool
ran:
  description: The labels whose command ran.
  returned: always
  type: list
  elements: str
stopped:
  description: With O(phase=before) - the container was stopped for the backup (give it to O(phase=after)).
  returned: phase before
  type: bool
started:
  description: With O(phase=after) - the container was started again.
  returned: phase after
  type: bool
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose import hooks
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import DockerService


def argument_spec():
    """The module's options (no shared layer applies)."""
    return dict(
        phase=dict(type="str", required=True, choices=["before", "after"]),
        component=dict(type="str", required=True, choices=["mysql", "redis", "vault", "app"]),
        project=dict(type="str", required=True),
        service=dict(type="str", required=True),
        docker_host=dict(type="str"),
        stopped=dict(type="bool", default=False),
        timeout_s=dict(type="float", default=300.0),
        health_timeout_s=dict(type="float", default=120.0),
    )


def hook(module):
    """Run the phase's labels; changed when a command ran or the container was stopped/started."""
    p = module.params
    target = DockerService(p["service"], base_url=p["docker_host"], project=p["project"], service=p["service"])
    if p["phase"] == "before":
        result = hooks.before_backup(target, p["component"], p["timeout_s"], check_mode=module.check_mode)
        return dict(changed=bool(result["ran"] or result["stopped"]), **result)
    result = hooks.after_backup(target, p["stopped"], p["timeout_s"], p["health_timeout_s"] or None,
                                check_mode=module.check_mode)
    return dict(changed=bool(result["ran"] or result["started"]), **result)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="compose")
    run_module(module, hook)


if __name__ == "__main__":
    main()
