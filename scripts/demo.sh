#!/usr/bin/env bash
# `make demo`: bring the lab up, then run the main job against inventories/lab:
# the full-backup playbook, a verification of the new set, and the list of sets.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
py=.venv/bin/python

$py -m lab up
$py -m lab status
echo
echo "== app health =="
$py - <<'PY'
import json, urllib.request
from lab import env
url = env()["LAB_APP_URL"] + "/health"
with urllib.request.urlopen(url, timeout=5) as r:
    print(url, r.status, json.dumps(json.load(r)))
PY
echo
echo "== full backup: ansible-playbook -i inventories/lab playbooks/backup.yml =="
ansible-playbook -i inventories/lab playbooks/backup.yml
echo
echo "== verify the newest set: playbooks/verify.yml =="
ansible-playbook -i inventories/lab playbooks/verify.yml
echo
echo "== backup sets in the lab store =="
store="$($py -c 'from lab import env; print(env()["LAB_STORE"])')"
if command -v lifeboat >/dev/null 2>&1; then
    lifeboat list --store "$store"
else
    echo "(the lifeboat CLI is not installed yet; listing with Python instead)"
    $py - "$store" <<'PY'
import sys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
for s in Store(sys.argv[1]).list_sets():
    print(f"{s.set_id:34} {s.status:9} {s.verified_mode or '-':6} {','.join(s.components):22} {s.stored_bytes:>10} B")
PY
fi
