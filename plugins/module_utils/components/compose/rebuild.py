# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rebuild a Compose project on an engine that lost it, from the files a set stored.

After :func:`engine.restore_project_files` wrote the project's folder, :func:`create_project`
runs the user's Compose implementation there with ``up --no-start``: the project's networks,
its (empty) named volumes and its containers are created, and **nothing is started** -- the
data is not back yet, and an application started against empty databases would write into
them. ``restore.yml`` then fills the volumes and starts the services in ``depends_on`` order,
each gated on its own healthcheck (a wiped Vault is re-created and unsealed with the escrow).

Every input is proven before anything is written (:func:`rebuild_problems`): the engine
answers; the project has no container there (a project that exists is restored with
``restore.yml``, never rebuilt over); every image the set names is on the engine; every
variable the compose files use that no stored file defines is given; the Compose command is
found. The command gets the variables in its environment (never argv) and ``DOCKER_HOST``.

A rebuild killed after its files were published blocks no later run: when the folder already
holds every file of the set byte for byte (:func:`folder_holds_the_set`) and the project's
containers on the engine, if any, were only created, never started (:func:`only_created`), a
new run continues it -- ``up --no-start`` again, which creates what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose.engine import (
    CHUNK,
    COMPONENT,
    PROJECT_LABEL,
    SERVICE_LABEL,
    restored_path,
    variables_to_supply,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, RestoreFailed
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet

DEFAULT_COMMAND = ("docker", "compose")
UP_TIMEOUT_S = 600.0
OUTPUT_TAIL = 1500   # characters of the Compose command's output kept in an error

log = get_logger("compose")


def containers_of(client: Any, project: str) -> list[Any]:
    """The containers (any state) labelled as Compose project ``project`` on the engine."""
    return client.containers.list(all=True, filters={"label": [f"{PROJECT_LABEL}={project}"]})


def image_present(client: Any, image: dict[str, Any]) -> bool:
    """True when the engine has the image a container ran: by id, else by reference."""
    import docker

    for ref in (image.get("image_id"), image.get("image")):
        if not ref:
            continue
        try:
            client.images.get(ref)
            return True
        except docker.errors.ImageNotFound:
            continue
    return False


def missing_images(client: Any, images: list[dict[str, Any]]) -> list[str]:
    """``service: reference`` of each stored image the engine does not have."""
    return [f"{i.get('service')}: {i.get('image') or i.get('image_id')}"
            for i in images if not image_present(client, i)]


def missing_variables(project: dict[str, Any], given: dict[str, str]) -> list[str]:
    """The variables to supply (:func:`engine.variables_to_supply`) in neither ``given`` nor this
    process's environment."""
    return [name for name in variables_to_supply(project) if name not in given and name not in os.environ]


def resolve_command(command: Sequence[str]) -> list[str]:
    """``command`` with its program made absolute; ConfigError when it is not found."""
    if not command:
        raise ConfigError("compose_command is empty", hint="give the Compose command, e.g. [docker, compose]")
    program = shutil.which(command[0])
    if not program:
        raise ConfigError(f"the Compose command {command[0]!r} is not found on this host",
                          hint="install it, or give its path in compose_command (lifeboat_compose_command)")
    return [program, *command[1:]]


def only_created(containers: list[Any]) -> bool:
    """True when every one of ``containers`` was created and never started (state ``created``)."""
    return all(c.status == "created" for c in containers)


def same_bytes(src: Any, path: Path) -> bool:
    """True when the stream ``src`` and the file ``path`` hold the same bytes."""
    with open(path, "rb") as have:
        while True:
            want = src.read(CHUNK)
            if want != have.read(len(want) or 1):
                return False
            if not want:
                return True


def folder_holds_the_set(backup_set: BackupSet, keyring: KeyRing, project: dict[str, Any], folder: str) -> bool:
    """True when ``folder`` holds every project file of the set at its restored path, byte for byte
    (what a rebuild that was interrupted after publishing its files left). Reads only."""
    root = Path(folder)
    if not root.is_dir():
        return False
    for entry in project["files"]:
        path = root / restored_path(entry, project["working_dir"])
        if not path.is_file() or path.stat().st_size != entry.get("size", path.stat().st_size):
            return False
        with backup_set.open_artifact(COMPONENT, entry["artifact"], keyring) as src:
            if not same_bytes(src, path):
                return False
    return True


def rebuild_problems(client: Any, project: dict[str, Any], command: Sequence[str],
                     given: dict[str, str], continuing: bool = False) -> list[str]:
    """Everything that stops a rebuild of ``project`` (its ``project.json``), each with its fix;
    empty when it can go ahead. ``continuing``: the folder already holds the set's files (an
    interrupted rebuild), so containers that were only created are its own. Reads only."""
    problems = []
    existing = containers_of(client, project["project"])
    if existing and not (continuing and only_created(existing)):
        names = ", ".join(sorted(f"{c.name} ({c.status})" for c in existing))
        problems.append(f"Compose project {project['project']!r} already has containers on this engine "
                        f"({names}): restore its data with restore.yml instead of rebuilding it")
    absent = missing_images(client, project["images"])
    if absent:
        problems.append(f"images not on this engine: {'; '.join(absent)} -- pull or load them first "
                        "(lifeboat-project.json lists their ids and digests)")
    unset = missing_variables(project, given)
    if unset:
        problems.append(f"variables the compose files use and no stored file defines are not given: "
                        f"{', '.join(unset)} -- set them in lifeboat_compose_environment")
    try:
        resolve_command(command)
    except ConfigError as err:
        problems.append(str(err))
    return problems


def up_argv(command: Sequence[str], project: str, compose_files: list[str]) -> list[str]:
    """``<command> -p PROJECT -f FILE... up --no-start`` (files relative to the project folder)."""
    argv = [*command, "-p", project]
    for name in compose_files:
        argv += ["-f", name]
    return argv + ["up", "--no-start"]


def create_project(project: dict[str, Any], folder: str, command: Sequence[str], given: dict[str, str],
                   docker_host: Optional[str], timeout_s: float = UP_TIMEOUT_S) -> str:
    """Run ``up --no-start`` for ``project`` in ``folder`` (the restored project folder); returns
    the command's output. Variables reach it in its environment, with ``DOCKER_HOST`` when given.
    RestoreFailed (with the output's tail) when it fails: the files stay in ``folder``."""
    argv = up_argv(resolve_command(command), project["project"], project["compose_files"])
    env = dict(os.environ, **{k: str(v) for k, v in given.items()})
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    log.info("compose: creating project %s from %s (%s up --no-start)", project["project"], folder, command[0])
    try:
        run = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout_s,
                             check=False)
    except subprocess.TimeoutExpired as exc:
        raise RestoreFailed(f"'{' '.join(command)} up --no-start' did not end in {timeout_s:.0f} s",
                            hint=f"the project's files are in {folder}; see the engine, then run it there by hand"
                            ) from exc
    output = (run.stdout or "") + (run.stderr or "")
    if run.returncode != 0:
        raise RestoreFailed(f"'{' '.join(command)} up --no-start' failed (exit {run.returncode}): "
                            f"{output.strip()[-OUTPUT_TAIL:]}",
                            hint=f"the project's files are in {folder}; fix the cause and run it there by hand")
    return output


def created_services(client: Any, project: str) -> dict[str, str]:
    """``{service: container state}`` of the project's containers after the rebuild."""
    return {c.labels.get(SERVICE_LABEL, c.name): c.status for c in containers_of(client, project)}
