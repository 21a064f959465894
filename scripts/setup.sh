#!/usr/bin/env bash
# One-time (idempotent) set-up for a fresh Debian machine: system packages that are
# missing, the .venv with requirements.txt, and the collection mapping for Ansible.
# Called by `make setup` (and so by `make demo` / `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

# --- system packages (binary -> Debian package) --------------------------------
declare -A NEED=(
  [mariadbd]=mariadb-server [mariadb]=mariadb-client [mariadb-dump]=mariadb-client
  [mariadb-binlog]=mariadb-client [mariadb-install-db]=mariadb-server [mariadb-backup]=mariadb-backup
  [redis-server]=redis-server [redis-cli]=redis-tools [redis-check-rdb]=redis-server [zstd]=zstd
  [sshd]=openssh-server [ssh]=openssh-client [ip]=iproute2 [rsync]=rsync
  [swift-proxy-server]=swift-proxy [swift-account-server]=swift-account
  [swift-container-server]=swift-container [swift-object-server]=swift-object [swift-ring-builder]=swift
  [memcached]=memcached [getfattr]=attr [setfattr]=attr [getfacl]=acl [setfacl]=acl
  # the compose lab (lab/compose): podman with runc (crun fails here), its CNI plugins and iptables,
  # debootstrap to build the lab image from Debian packages
  [podman]=podman [runc]=runc [debootstrap]=debootstrap [iptables]=iptables
)
missing=()
for bin in "${!NEED[@]}"; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("${NEED[$bin]}")
  fi
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "setup: installing missing Debian packages: $pkgs"
  if [ "$(id -u)" != 0 ]; then
    echo "setup: need root to apt-get install $pkgs (run as root or install them yourself)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # policy-rc.d keeps Debian from starting the packaged services on their standard ports
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi
  apt-get install -y -q --no-install-recommends $pkgs >/dev/null
fi

# --- python virtualenv ----------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
if [ ! -f .venv/.requirements.stamp ] || ! cmp -s requirements.txt .venv/.requirements.stamp; then
  echo "setup: installing requirements.txt into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  cp requirements.txt .venv/.requirements.stamp
fi

# --- the collection, found by Ansible and Python without installing it ------------
# .collections/ansible_collections/lifeboat/dr -> this repository (ansible.cfg's collections_path)
mkdir -p .collections/ansible_collections/lifeboat
ln -sfn ../../.. .collections/ansible_collections/lifeboat/dr
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$ROOT/.collections" > "$site/lifeboat_collection.pth"
echo "$ROOT" > "$site/lifeboat_repo.pth"

# --- console commands -------------------------------------------------------------
for cmd in lifeboat lifeboat-decrypt; do
  mod=edge.cli; [ "$cmd" = lifeboat-decrypt ] && mod=edge.breakglass
  cat > ".venv/bin/$cmd" <<SHIM
#!$ROOT/.venv/bin/python
import sys
from ansible_collections.lifeboat.dr.plugins.module_utils.$mod import main
sys.exit(main())
SHIM
  chmod +x ".venv/bin/$cmd"
done
