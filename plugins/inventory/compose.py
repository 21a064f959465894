# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory lifeboat.dr.compose: Lifeboat's groups and variables from a running Compose project's labels."""

from __future__ import annotations

DOCUMENTATION = r'''
name: compose
author:
  - Lifeboat contributors (!UNKNOWN)
version_added: 0.1.0
short_description: Lifeboat's groups and variables from a running Compose project's labels
description:
  - Reads a running Compose project through the Docker API (Docker Engine, or podman's
    Docker-compatible API) and builds the inventory Lifeboat's playbooks expect - the groups
    C(mysql), C(redis), C(vault), C(app) (one host each, named after its Compose service) and
    C(backup_store) - with the variables of every protected service; a user points C(-i) at a
    small YAML file naming the engine and the project instead of writing the inventory by hand.
  - A service is protected when its containers have the label C(lifeboat.component) (C(mysql),
    C(redis), C(vault) or C(app)). C(lifeboat.port) gives its port (default 3306, 6379, 8200,
    8080) and C(lifeboat.data) its data folder inside the container (default C(/var/lib/mysql),
    C(/data), C(/vault/raft), C(/srv/app/storage)); the host path of that folder is found
    through the container's mounts.
  - Addresses are the containers' on the project network (Lifeboat runs on the Docker host, or
    where that network is reachable); services are controlled by the C(docker) service manager
    on the Compose project, found by the Compose labels, never by container names.
  - Secrets never come from labels - put the passwords, tokens, store and key settings in
    C(group_vars/) beside this file, as for any inventory.
  - The configuration file's name must end in C(lifeboat.yml) or C(lifeboat.yaml).
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [lifeboat.dr.compose]
    type: str
  project:
    description: The Compose project (C(com.docker.compose.project) label).
    required: true
    type: str
  docker_host:
    description:
      - The Docker API, such as C(unix:///run/docker.sock) or C(ssh://user@host).
      - Default the environment variable C(DOCKER_HOST), else the local engine's socket.
    type: str
  network:
    description:
      - The network the services are reached on; default a container's only network, else the
        project's own (C(<project>_...)).
    type: str
  connection:
    description: C(ansible_connection) of every host (Lifeboat runs where the Docker API and the volumes are).
    type: str
    default: local
  store_host:
    description: The name of the one host of the C(backup_store) group.
    type: str
    default: backup-store
notes:
  - Needs the Python package C(docker) on the controller.
  - Tested against podman 4.3's Docker-compatible API; not against Docker Engine.
'''

EXAMPLES = r'''
# shop.lifeboat.yml, used as: ansible-playbook -i shop.lifeboat.yml lifeboat.dr.backup ...
plugin: lifeboat.dr.compose
project: shop
docker_host: unix:///run/docker.sock

# In the compose file, what Lifeboat protects:
# services:
#   db:
#     image: mariadb:10.11
#     labels:
#       lifeboat.component: mysql
#   cache:
#     image: redis:7
#     labels:
#       lifeboat.component: redis
#       lifeboat.port: "6380"
'''

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

from ansible_collections.lifeboat.dr.plugins.module_utils.util.compose_project import discover, inventory_vars
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError

try:
    import docker
    HAS_DOCKER = True
except ImportError:
    HAS_DOCKER = False


class InventoryModule(BaseInventoryPlugin):
    """``-i <name>.lifeboat.yml`` with ``plugin: lifeboat.dr.compose``."""

    NAME = "lifeboat.dr.compose"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("lifeboat.yml", "lifeboat.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        if not HAS_DOCKER:
            raise AnsibleParserError("lifeboat.dr.compose needs the Python package 'docker' on the controller "
                                     "(pip install docker)")
        base_url = self.get_option("docker_host") or os.environ.get("DOCKER_HOST") or ""
        try:
            client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
            view = discover(client, self.get_option("project"), base_url, self.get_option("network"))
        except LifeboatError as err:
            raise AnsibleParserError(f"lifeboat.dr.compose ({path}): {err}") from err
        except docker.errors.DockerException as err:
            raise AnsibleParserError(f"lifeboat.dr.compose ({path}): cannot reach the Docker engine "
                                     f"{base_url or '(DOCKER_HOST / default socket)'}: {err}") from err
        self._populate(view)

    def _populate(self, view):
        for name, value in inventory_vars(view).items():
            self.inventory.set_variable("all", name, value)
        self.inventory.set_variable("all", "ansible_connection", self.get_option("connection"))
        for component, svc in sorted(view.services.items()):
            self.inventory.add_group(component)
            self.inventory.add_host(svc.service, group=component)
            self.inventory.set_variable(svc.service, "lifeboat_compose_container", svc.container)
        self.inventory.add_group("backup_store")
        self.inventory.add_host(self.get_option("store_host"), group="backup_store")
