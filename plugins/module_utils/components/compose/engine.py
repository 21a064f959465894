# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``compose``: what a Compose project needs besides its data to be brought back on an empty host.

Rebuilding from the store alone needs the project's definition as well as its data. A backup
on a Compose deployment stores, encrypted like everything else:

* the compose file(s) -- from the labels every Compose implementation sets on the project's
  containers (``com.docker.compose.project.working_dir`` and ``.config_files``, relative or
  absolute), or the files given;
* the env files: ``.env`` of the working folder and every service's ``env_file``;
* the secret files: the host files bind-mounted at ``/run/secrets/<name>`` in the project's
  containers (what the engine really mounted), and top-level ``secrets: {file: ...}`` paths
  without variables;
* the configuration: every file of the host paths bind-mounted *read-only* into the containers
  (scripts, ``my.cnf``, an app's code; read-write bind mounts are data, the components' job);
* ``project.json`` (plain, no secrets): each file's original path, role, mode and owner; each
  container's image reference, image id and repo digests; the variables the compose files
  use (``${NAME}``) and whether the ``.env`` file defines them -- variables given only in the
  shell at ``up`` time are in no file, so the runbook must supply them.

:func:`restore_project_files` writes them into a new folder (built aside, renamed into place
at the end; never over existing files): files of the working folder keep their relative
paths, others go under ``outside/<their absolute path>``; secrets and env files get mode 0600.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components import base as components
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    NotFound,
    RestoreFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import ProgressFn, get_logger

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import SetWriter

COMPONENT = "compose"
PROJECT_JSON = "project.json"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
SECRETS_MOUNT = "/run/secrets/"
PRIVATE_ROLES = ("env", "secret")
MAX_FILE_BYTES = 16 << 20
MAX_CONFIG_FILES = 2000        # files below one read-only bind mount (more: it is data)
VARIABLE = re.compile(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)")  # $$ escapes a dollar
CHUNK = 1 << 20

log = get_logger(COMPONENT)


# --- what the project is made of ------------------------------------------------------------
def project_containers(client: Any, project: str) -> list[Any]:
    """The containers of Compose project ``project``; NotFound naming the projects found."""
    found = client.containers.list(all=True, filters={"label": [f"{PROJECT_LABEL}={project}"]})
    if not found:
        projects = sorted({c.labels.get(PROJECT_LABEL) for c in client.containers.list(
            all=True, filters={"label": [PROJECT_LABEL]})} - {None})
        raise NotFound(f"no container of Compose project {project!r} on this engine",
                       hint=f"projects found: {', '.join(projects) or 'none'}")
    return sorted(found, key=lambda c: (c.labels.get(SERVICE_LABEL, ""), c.name))


def compose_files_of(containers: list[Any], given: list[str]) -> tuple[str, list[str]]:
    """``(working folder, compose files as absolute paths)``: ``given`` when set, else the labels."""
    labels = containers[0].labels
    working_dir = labels.get(WORKING_DIR_LABEL) or (str(Path(given[0]).parent) if given else "")
    if given:
        return working_dir, [str(Path(working_dir, f)) for f in given]
    listed = [f.strip() for f in (labels.get(CONFIG_FILES_LABEL) or "").split(",") if f.strip()]
    if not working_dir or not listed:
        raise ConfigError(f"the containers of project {labels.get(PROJECT_LABEL)!r} do not say where their compose "
                          f"file is (no {CONFIG_FILES_LABEL} label)", hint="give the compose file(s) (compose_files)")
    return working_dir, [str(Path(working_dir, f)) for f in listed]


def env_files_of(spec: dict[str, Any], base: Path) -> list[str]:
    """Every service's ``env_file`` (string, list of strings or of ``{path, required}``), absolute."""
    found = []
    for service in (spec.get("services") or {}).values():
        entries = (service or {}).get("env_file") or []
        for entry in [entries] if isinstance(entries, (str, dict)) else entries:
            path = entry.get("path") if isinstance(entry, dict) else entry
            if path:
                found.append(str(base / str(path)))
    return found


def literal_file_secrets(spec: dict[str, Any], base: Path) -> list[str]:
    """Top-level ``secrets``/``configs`` ``file:`` paths that hold no variable, absolute."""
    found = []
    for section in ("secrets", "configs"):
        for body in (spec.get(section) or {}).values():
            path = (body or {}).get("file")
            if path and "$" not in str(path):
                found.append(str(base / str(path)))
    return found


def mounted_secrets(containers: list[Any]) -> list[str]:
    """Host files bind-mounted under ``/run/secrets/`` in the project's containers."""
    found = []
    for container in containers:
        for mount in container.attrs.get("Mounts") or []:
            if str(mount.get("Destination", "")).startswith(SECRETS_MOUNT) and mount.get("Source"):
                found.append(str(mount["Source"]))
    return found


def readonly_bind_mounts(containers: list[Any]) -> list[str]:
    """Host paths bind-mounted *read-only* into the project's containers (not under ``/run/secrets/``).

    A read-only bind mount is configuration the project ships (scripts, ``my.cnf``, an app's code):
    part of its definition, stored with it. A read-write bind mount is data: the components back
    it up (a MariaDB datadir, app storage), not this one.
    """
    found = []
    for container in containers:
        for mount in container.attrs.get("Mounts") or []:
            if (mount.get("Type") == "bind" and mount.get("RW") is False and mount.get("Source")
                    and not str(mount.get("Destination", "")).startswith(SECRETS_MOUNT)):
                found.append(str(mount["Source"]))
    return sorted(set(found))


def files_below(path: str) -> list[str]:
    """``path`` itself when it is a file, else the regular files below it (symbolic links, caches and
    anything else skipped), in order. ConfigError past MAX_CONFIG_FILES: a folder that large is data."""
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                found.append(full)
        if len(found) > MAX_CONFIG_FILES:
            raise ConfigError(f"the read-only bind mount {path} of the Compose project holds more than "
                              f"{MAX_CONFIG_FILES} files", hint="a folder this large is data: back it up as app files")
    return found


def image_refs(client: Any, containers: list[Any]) -> list[dict[str, Any]]:
    """Per container: service, name, the image it was created from, the image id and repo digests/tags."""
    refs = []
    for container in containers:
        image_id = container.attrs.get("Image") or ""
        digests: list[str] = []
        tags: list[str] = []
        try:
            image = client.images.get(image_id)
            digests, tags = list(image.attrs.get("RepoDigests") or []), list(image.tags or [])
        except Exception as err:  # noqa: BLE001 - an image gone from the engine is recorded, not fatal
            log.warning("compose: image %s of %s: %s", image_id, container.name, err)
        refs.append({"service": container.labels.get(SERVICE_LABEL), "container": container.name,
                     "image": (container.attrs.get("Config") or {}).get("Image"), "image_id": image_id,
                     "repo_digests": digests, "repo_tags": tags})
    return refs


def describe_file(path: str, role: str) -> dict[str, Any]:
    """One file of the project: its path, role and what ``stat`` says (NotFound when it is missing)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"the {role} file {path} of the Compose project does not exist",
                       hint="run the backup where the project's files are (the Docker host), or fix the path") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"the {role} file {path} of the Compose project is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"the {role} file {path} is {info.st_size} bytes (more than {MAX_FILE_BYTES})",
                          hint="a project file this large is data: back it up as app files")
    return {"path": path, "role": role, "mode": f"{stat.S_IMODE(info.st_mode):04o}", "uid": info.st_uid,
            "gid": info.st_gid, "size": info.st_size}


def discover_project(client: Any, project: str, compose_files: Optional[list[str]] = None) -> dict[str, Any]:
    """What :func:`backup_project_into` stores of ``project``: files (compose, env, secret), images, variables."""
    import yaml

    containers = project_containers(client, project)
    working_dir, files = compose_files_of(containers, list(compose_files or []))
    wanted: dict[str, str] = {}
    variables: set[str] = set()
    for path in files:
        wanted.setdefault(path, "compose")
        text = Path(path).read_text(encoding="utf-8") if os.path.isfile(path) else ""
        variables.update(VARIABLE.findall(text))
        spec = yaml.safe_load(text) or {}
        base = Path(path).parent
        for env_file in env_files_of(spec, base):
            wanted.setdefault(env_file, "env")
        for secret in literal_file_secrets(spec, base):
            wanted.setdefault(secret, "secret")
    dot_env = Path(working_dir, ".env")
    defined: set[str] = set()
    if dot_env.is_file():
        wanted.setdefault(str(dot_env), "env")
        defined = {line.split("=", 1)[0].strip() for line in dot_env.read_text(encoding="utf-8").splitlines()
                   if "=" in line and not line.lstrip().startswith("#")}
    for secret in mounted_secrets(containers):
        wanted.setdefault(secret, "secret")
    for mounted in readonly_bind_mounts(containers):
        for path in files_below(mounted):
            wanted.setdefault(path, "config")
    return {"project": project, "working_dir": working_dir,
            "compose_files": [os.path.relpath(f, working_dir) if f.startswith(working_dir + "/") else f for f in files],
            "files": [describe_file(path, role) for path, role in wanted.items()],
            "images": image_refs(client, containers),
            "variables": {name: name in defined for name in sorted(variables)}}


# --- backup ---------------------------------------------------------------------------------
def artifact_name(index: int) -> str:
    return f"files/{index:03d}"


def backup_project_into(writer: SetWriter, client: Any, project: str,
                        compose_files: Optional[list[str]] = None) -> dict[str, Any]:
    """Store the project's files as encrypted artifacts and ``project.json``; returns the metadata."""
    found = discover_project(client, project, compose_files)
    for index, entry in enumerate(found["files"]):
        entry["artifact"] = artifact_name(index)
        out = writer.artifact(COMPONENT, entry["artifact"], total_bytes=entry["size"])
        try:
            with open(entry["path"], "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
        except BaseException:
            out.abort()
            raise
        out.close()
    writer.write_json(COMPONENT, PROJECT_JSON, found)
    meta = {"project": project, "working_dir": found["working_dir"], "files": len(found["files"]),
            "images": len(found["images"]),
            "variables_not_in_files": [n for n, defined in found["variables"].items() if not defined]}
    writer.set_component_metadata(COMPONENT, meta)
    writer.add_source(COMPONENT, found["working_dir"], None, project=project)
    log.info("compose: project %s: %d files, %d images", project, len(found["files"]), len(found["images"]))
    return meta


# --- restore --------------------------------------------------------------------------------
def restored_path(entry: dict[str, Any], working_dir: str) -> PurePosixPath:
    """Where a stored file goes below the destination folder (relative): its path below the
    working folder, else ``outside/<absolute path>``."""
    path = PurePosixPath(entry["path"])
    root = PurePosixPath(working_dir)
    if root in path.parents:
        return path.relative_to(root)
    return PurePosixPath("outside", *path.parts[1:])


def check_destination(dest: str) -> Path:
    """``dest`` as a Path; ConfigError when it exists and is not an empty folder (restored project files
    never overwrite a project)."""
    target = Path(dest)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{dest} exists and is not an empty folder",
                          hint="give a new folder for the restored project files")
    return target


def variables_to_supply(project: dict[str, Any]) -> list[str]:
    """The variables the compose files use that no stored file defines (``project.json``)."""
    return [name for name, defined in project["variables"].items() if not defined]


def restore_project_files(backup_set: BackupSet, keyring: KeyRing, dest: str) -> dict[str, Any]:
    """Write the set's project files into the new folder ``dest`` (see the module doc); atomic:
    everything is written into ``<dest>.lifeboat-partial`` first and renamed at the end.

    Refuses (ConfigError) a ``dest`` that exists and is not an empty folder: restored project files
    never overwrite a project."""
    target = check_destination(dest)
    project = backup_set.read_json(COMPONENT, PROJECT_JSON)
    partial = target.with_name(target.name + ".lifeboat-partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700, parents=True)
    written = []
    try:
        for entry in project["files"]:
            rel = restored_path(entry, project["working_dir"])
            out_path = partial / rel
            out_path.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600 if entry["role"] in PRIVATE_ROLES else int(entry["mode"], 8) & 0o777
            with backup_set.open_artifact(COMPONENT, entry["artifact"], keyring) as src, \
                    open(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            os.chmod(out_path, mode)
            written.append({"path": str(rel), "role": entry["role"], "original": entry["path"]})
        (partial / "lifeboat-project.json").write_text(json.dumps(
            {k: project[k] for k in ("project", "working_dir", "compose_files", "images", "variables")}, indent=2))
        if target.exists():
            target.rmdir()
        partial.rename(target)
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, (ConfigError, NotFound)):
            raise RestoreFailed(f"restoring the project files of set {backup_set.set_id} into {dest} failed: {err}",
                                hint="nothing was left at the destination; fix the cause and run again") from err
        raise
    return {"dest": str(target), "project": project["project"], "files": written,
            "compose_files": project["compose_files"], "images": project["images"],
            "variables_to_supply": variables_to_supply(project)}


def verify_project(backup_set: BackupSet, keyring: KeyRing, mode: str) -> list[dict[str, Any]]:
    """Quick: ``project.json`` lists a stored artifact for every file. Full: each compose file also
    decrypts and parses as YAML with a ``services`` mapping."""
    import yaml

    project = backup_set.read_json(COMPONENT, PROJECT_JSON)
    stored = {a["name"] for a in backup_set.artifacts(COMPONENT)}
    missing = [e["path"] for e in project["files"] if e.get("artifact") not in stored]
    detail = f"{len(project['files'])} files, {len(project['images'])} images"
    checks = [components.check("compose project files", not missing,
                               detail + (f"; missing: {', '.join(missing)}" if missing else ""),
                               f"{COMPONENT}/{PROJECT_JSON}")]
    if mode == "full" and not missing:
        for entry in (e for e in project["files"] if e["role"] == "compose"):
            with backup_set.open_artifact(COMPONENT, entry["artifact"], keyring) as src:
                spec = yaml.safe_load(src.read().decode("utf-8")) or {}
            ok = isinstance(spec.get("services"), dict) and bool(spec["services"])
            checks.append(components.check(f"compose file {entry['path']}", ok,
                                           f"{len(spec.get('services') or {})} services" if ok else "no services",
                                           f"{COMPONENT}/{entry['artifact']}"))
    return checks


class ComposeEngine:
    """``compose``: a Compose project's definition (compose/env/secret files, image references).

    Backup ``source``: ``{"client": docker client, "project": name, "compose_files": [...]}``.
    Restore ``target``: the destination folder (a new or empty folder). Verify: see
    :func:`verify_project`. No server, so no scratch server.
    """

    name = COMPONENT
    set_noun = "a Compose project definition"
    backup_module = "lifeboat.dr.compose_backup"
    restore_method = "project files decrypted and the compose files parsed"
    progress_from_writer = True

    def codec(self, requested: Any) -> Any:
        return requested

    def plan_backup(self, source: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        found = discover_project(source["client"], source["project"], source.get("compose_files"))
        return {"project": found["project"], "files": [f"{e['role']}: {e['path']}" for e in found["files"]],
                "images": len(found["images"])}

    def prepare_backup(self, store: Store, keyring: KeyRing, source: dict[str, Any],
                       options: dict[str, Any]) -> Optional[int]:
        return None

    def backup_into(self, writer: SetWriter, source: dict[str, Any], options: dict[str, Any], *, keyring: KeyRing,
                    progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        return backup_project_into(writer, source["client"], source["project"], source.get("compose_files"))

    def backup_summary(self, meta: dict[str, Any]) -> dict[str, Any]:
        return dict(meta)

    def restore_from(self, store: Store, backup_set: BackupSet, keyring: KeyRing, target: str,
                     options: dict[str, Any], *, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        return restore_project_files(backup_set, keyring, target)

    def verify(self, store: Store, backup_set: BackupSet, keyring: KeyRing, mode: str, options: dict[str, Any],
               measured: dict[str, float]) -> list[dict[str, Any]]:
        return verify_project(backup_set, keyring, mode)

    def scratch_server(self, options: dict[str, Any]) -> None:
        return None


ENGINE = components.register(ComposeEngine())
