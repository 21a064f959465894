#!/usr/bin/env bash
# `ansible-test sanity` on the collection exactly as users get it (see docs/collection.md):
# build the tarball (galaxy.yml's build_ignore leaves out lab/, dr_tests/, bench/, state and
# caches), install it into .build/sanity/ansible_collections/lifeboat/dr, and run
# ansible-test there. Extra arguments go to ansible-test (e.g. --test pylint).
# Called by `make sanity` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=$ROOT/.venv
export PATH="$VENV/bin:$PATH"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
WORK=$ROOT/.build/sanity
DEST=$WORK/ansible_collections/lifeboat/dr
PYVER=${SANITY_PYTHON:-3.11}

# ansible-test bootstraps pip in its virtualenvs with get-pip.py from a host this machine
# cannot reach; it uses a cached copy when there is one. Put our stand-in there.
at_dir=$("$VENV/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',.*/\1/p" "$at_dir/_internal/python_requirements.py" | head -n1)
if [ -z "$pip_version" ]; then
  echo "sanity: cannot find ansible-test's pip version in $at_dir/_internal/python_requirements.py" >&2
  exit 1
fi
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
mkdir -p "$(dirname "$cache")"
cmp -s scripts/get_pip_standin.py "$cache" 2>/dev/null || cp scripts/get_pip_standin.py "$cache"

# One run at a time in this checkout: a second run would delete the first one's tree.
mkdir -p "$ROOT/.build"
exec 9>"$ROOT/.build/sanity.lock"
flock 9

# The collection as built and installed.
rm -rf "$WORK"
mkdir -p "$WORK"
ansible-galaxy collection build --force --output-path "$WORK" >/dev/null
ansible-galaxy collection install --force --no-deps -p "$WORK" "$WORK"/lifeboat-dr-*.tar.gz >/dev/null 2>&1

# ansible-test lists content with git when it finds a repository: without one of its own
# here it would see the outer repo (which ignores .build/) and skip everything.
cd "$DEST"
git init -q .

started=$(date +%s)
echo "sanity: ansible-test sanity --python $PYVER in ${DEST#"$ROOT"/}"
status=0
ansible-test sanity --local --python "$PYVER" --color no "$@" || status=$?
if [ "$status" = 0 ]; then
  echo "sanity: passed in $(( $(date +%s) - started )) s"
else
  echo "sanity: FAILED (exit $status) after $(( $(date +%s) - started )) s" >&2
fi
exit "$status"
