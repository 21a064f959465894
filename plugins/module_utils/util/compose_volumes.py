# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep a Compose service's volume content aside in a new volume, through the Docker API (issue #19).

A Compose project finds its volumes by name: a replacement volume would not be adopted, and
renaming a volume's folder breaks it. So when a recovery must start a service on empty data
(a fresh MariaDB server in place of a corrupted one), the old content is *moved* into a new
volume ``<volume>-lifeboat-kept-<UTC time>`` labelled with its origin
(``lifeboat.kept-from``, ``lifeboat.kept-at``), and the original volume is left in place, empty,
for the service to initialise. Nothing kept aside stays inside the volume (a folder in a
MariaDB datadir shows up as a database), and nothing is deleted: the kept volume is the
user's to inspect and remove.

The move is a ``rename`` of each top-level entry into the new volume's folder: both volumes
live under the engine's one volume root, so it is a metadata operation whatever the data size.
It is not atomic as a whole: a run killed part-way leaves some entries in each volume, both
intact and the kept one labelled; running the keep again moves the rest into a second kept
volume. Only local-driver volumes whose folder this host can reach are handled; anything else
is refused before anything is changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    ConnectionFailure,
    DependencyMissing,
    NotFound,
)

KEPT_FROM_LABEL = "lifeboat.kept-from"
KEPT_AT_LABEL = "lifeboat.kept-at"
KEPT_INFIX = "-lifeboat-kept-"


@dataclass(frozen=True)
class KeptVolume:
    """The outcome of :func:`keep_volume_content`: where the old content now is."""

    volume: str
    kept_volume: str
    kept_path: str
    entries: int


def kept_volume_name(volume: str, at: datetime) -> str:
    """``<volume>-lifeboat-kept-<YYYYmmddTHHMMSSZ>`` (``at`` in UTC)."""
    return f"{volume}{KEPT_INFIX}{at.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def client_for(base_url: Optional[str]) -> Any:
    """A docker SDK client on ``base_url`` (else ``DOCKER_HOST``); ConnectionFailure naming it."""
    try:
        import docker
    except ImportError as exc:
        raise DependencyMissing("Lifeboat's Compose support needs the Python package 'docker'",
                                hint="pip install docker on the host that runs the task") from exc

    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise ConnectionFailure(f"the Docker API at {base_url or os.environ.get('DOCKER_HOST', '(DOCKER_HOST)')} "
                                f"does not answer: {exc}", hint="is the engine running, and is the address right?") \
            from exc


def volume_at(client: Any, path: str) -> Any:
    """The volume whose folder (``Mountpoint``) is ``path``; NotFound listing the volumes otherwise
    (e.g. a bind mount, which has no volume to keep aside)."""
    wanted = os.path.realpath(path)
    volumes = client.volumes.list()
    for volume in volumes:
        mountpoint = volume.attrs.get("Mountpoint") or ""
        if mountpoint and os.path.realpath(mountpoint) == wanted:
            return volume
    names = ", ".join(sorted(v.name for v in volumes)[:20]) or "none"
    raise NotFound(f"no volume of the engine has its folder at {path}",
                   hint=f"give the host path of a named volume (volumes: {names}); a bind mount's folder is "
                        "not a volume")


def keep_volume_content(client: Any, path: str, *, now: Optional[datetime] = None) -> Optional[KeptVolume]:
    """Move everything in the volume whose folder is ``path`` into a new labelled volume.

    Returns None when the volume is already empty (nothing to keep; no volume created).
    Refuses (ConfigError) before changing anything when the new volume's folder is not on the
    same file system. The new folder gets the owner and mode of the old one.
    """
    volume = volume_at(client, path)
    source = Path(volume.attrs["Mountpoint"])
    entries = sorted(source.iterdir())
    if not entries:
        return None
    name, target = _create_kept_volume(client, volume.name, source, now)
    for entry in entries:
        os.rename(entry, target / entry.name)
    return KeptVolume(volume=volume.name, kept_volume=name, kept_path=str(target), entries=len(entries))


def keep_folder_as_volume(client: Any, volume_name: str, folder: Path, *,
                          now: Optional[datetime] = None) -> KeptVolume:
    """Make ``folder`` (a whole former content of volume ``volume_name``, beside its folder) the
    content of a new labelled volume ``<volume_name>-lifeboat-kept-<time>``.

    One ``rename`` of ``folder`` onto the new volume's (empty) folder: atomic, whatever the
    size; ``folder`` keeps its owner and mode. ConfigError before anything moves when the new
    volume is on another file system (the new, empty volume is removed again).
    """
    name, target = _create_kept_volume(client, volume_name, folder, now)
    entries = len(list(folder.iterdir()))
    os.rename(folder, target)             # replaces the new volume's empty folder
    return KeptVolume(volume=volume_name, kept_volume=name, kept_path=str(target), entries=entries)


def _create_kept_volume(client: Any, volume_name: str, like: Path, now: Optional[datetime]) -> tuple[str, Path]:
    """A new empty local volume for content kept from ``volume_name``, its folder owned like ``like``
    and on ``like``'s file system (else the volume is removed again and ConfigError raised)."""
    at = now or datetime.now(UTC)
    name = kept_volume_name(volume_name, at)
    kept = client.volumes.create(name=name, driver="local", labels={
        KEPT_FROM_LABEL: volume_name, KEPT_AT_LABEL: at.astimezone(UTC).isoformat()})
    target = Path(kept.attrs.get("Mountpoint") or client.volumes.get(name).attrs["Mountpoint"])
    info = like.stat()
    if target.stat().st_dev != info.st_dev:
        kept.remove()
        raise ConfigError(f"volume {name} is not on the file system of {volume_name}'s content ({like})",
                          hint="keep the content aside by hand (copy it), then run again")
    os.chown(target, info.st_uid, info.st_gid)
    os.chmod(target, info.st_mode & 0o7777)
    return name, target


def volume_of_service_folder(service: Any, folder: Path) -> Optional[str]:
    """The name of the volume whose folder is ``folder`` when ``service`` is a container (the
    ``docker`` manager), else None (a host's service, or a bind mount: no volume has that folder).

    A restore on Compose keeps the data it replaces in a volume of its own
    (:func:`keep_replaced_in_volume`), never beside or inside the service's volume. Asked before
    anything changes: ConnectionFailure when the engine does not answer.
    """
    if getattr(service, "manager", "") != "docker":
        return None
    return volume_of_folder(getattr(service, "base_url", None), folder)


def volume_of_folder(base_url: Optional[str], folder: Path) -> Optional[str]:
    """The name of the engine's volume whose folder is ``folder``, None when none is (a bind mount)."""
    try:
        return volume_at(client_for(base_url), str(folder)).name
    except NotFound:
        return None


def keep_replaced_in_volume(base_url: Optional[str], volume: str, replaced: Path, what: str) -> dict[str, Any]:
    """After a successful restore: move ``replaced`` (the data it replaced, a folder beside the
    volume's ``_data``) into a new volume ``<volume>-lifeboat-kept-<time>`` labelled with its
    origin (:func:`keep_folder_as_volume`: one rename). Returns ``kept_path`` and ``kept_volume``;
    a failure is logged and returned as ``kept_volume_error`` (the data stays at ``replaced``),
    never raised: the restore itself succeeded."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

    log = get_logger("compose")
    try:
        done = keep_folder_as_volume(client_for(base_url), volume, replaced)
    except (LifeboatError, OSError) as err:
        log.warning("the replaced %s stays at %s: moving it into a volume of its own failed: %s", what, replaced, err)
        return {"kept_volume_error": str(err)}
    log.info("the replaced %s of volume %s is kept in volume %s", what, volume, done.kept_volume)
    return {"kept_path": done.kept_path, "kept_volume": done.kept_volume}
