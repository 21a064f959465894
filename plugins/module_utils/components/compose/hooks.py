# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup labels: what a Compose file says to do around the backup of a service.

As docker-volume-backup users label their services (``stop-during-backup``, exec pre/post), a
service's labels may say, read through the Docker API when its component is backed up:

* ``lifeboat.exec-pre-backup: <command>`` -- run in the container (``sh -c``, exec through the
  API) before the backup; a non-zero exit fails the component's backup, nothing read yet;
* ``lifeboat.stop-during-backup: "true"`` -- stop the container for the backup and start it
  again afterwards (files only: the ``app`` component; a server read over the network --
  mysql, redis, vault -- cannot be stopped while it is read, and is refused naming why);
* ``lifeboat.exec-post-backup: <command>`` -- run in the container after the backup, also when
  the backup failed (after the container was started again).

:func:`before_backup` and :func:`after_backup` are the two halves (module
``lifeboat.dr.compose_backup_hook``; ``playbooks/includes/backup_component.yml`` calls them around
every component backup on a Compose deployment). A container that is not running is left
alone: nothing can be run in it, and it is quiescent already. The commands' output is never
returned or logged (it may hold anything); a failure names the label and the exit code with the
tail of the command's stderr.
"""

from __future__ import annotations

from typing import Any, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import BackupFailed, ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

PRE_LABEL = "lifeboat.exec-pre-backup"
POST_LABEL = "lifeboat.exec-post-backup"
STOP_LABEL = "lifeboat.stop-during-backup"
STOPPABLE = ("app",)           # components backed up from files, not read from a running server
EXEC_TIMEOUT_S = 300.0
TRUE = ("true", "yes", "1", "on")

log = get_logger("compose")


def hooks_of(labels: dict[str, str]) -> dict[str, Any]:
    """``{pre, post, stop}`` the labels ask for (commands stripped; empty = none)."""
    return {"pre": (labels.get(PRE_LABEL) or "").strip(), "post": (labels.get(POST_LABEL) or "").strip(),
            "stop": (labels.get(STOP_LABEL) or "").strip().lower() in TRUE}


def check_stoppable(component: str, service: str) -> None:
    """ConfigError when ``component`` is read from a running server (its service cannot be stopped)."""
    if component not in STOPPABLE:
        raise ConfigError(f"Compose service {service!r} ({component}) has {STOP_LABEL}=true, but its backup reads "
                          "the running server: stopping it would stop the backup",
                          hint=f"remove the label (only files - {', '.join(STOPPABLE)} - can be stopped); "
                               f"quiesce it with {PRE_LABEL} instead")


def run_label(target: Any, label: str, command: str, timeout_s: float) -> None:
    """Run a label's command in the container (``sh -c``); BackupFailed naming the label when it fails."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ServiceControlFailed

    try:
        target.run_command(["/bin/sh", "-c", command], what=label, timeout_s=timeout_s)
    except ServiceControlFailed as exc:
        raise BackupFailed(exc.message, hint=f"fix the command of the label {label} on the service, or remove it") \
            from exc


def before_backup(target: Any, component: str, timeout_s: float = EXEC_TIMEOUT_S,
                  check_mode: bool = False) -> dict[str, Any]:
    """The before-backup labels of ``target`` (a DockerService): exec pre, then stop. Returns
    ``{hooks, running, ran, stopped}``; ``stopped`` goes to :func:`after_backup`."""
    hooks = hooks_of(target.labels())
    if hooks["stop"]:
        check_stoppable(component, target.name)
    running = target.is_running()
    result = {"hooks": [k for k in ("pre", "stop", "post") if hooks[k]], "running": running, "ran": [],
              "stopped": False}
    if not running or check_mode:
        return result
    if hooks["pre"]:
        run_label(target, PRE_LABEL, hooks["pre"], timeout_s)
        result["ran"].append(PRE_LABEL)
    if hooks["stop"]:
        log.info("compose: stopping %s for its backup (%s)", target.name, STOP_LABEL)
        target.stop()
        result["stopped"] = True
    return result


def after_backup(target: Any, stopped: bool, timeout_s: float = EXEC_TIMEOUT_S,
                 health_timeout_s: Optional[float] = 120.0, check_mode: bool = False) -> dict[str, Any]:
    """The after-backup labels: start the container again when :func:`before_backup` stopped it
    (and wait for its healthcheck), then exec post. Returns ``{ran, started}``."""
    result: dict[str, Any] = {"ran": [], "started": False}
    if check_mode:
        return result
    if stopped:
        target.start()
        result["started"] = True
        if health_timeout_s:
            target.wait_healthy(health_timeout_s)
    hooks = hooks_of(target.labels())
    if hooks["post"] and target.is_running():
        run_label(target, POST_LABEL, hooks["post"], timeout_s)
        result["ran"].append(POST_LABEL)
    return result
