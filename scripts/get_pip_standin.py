#!/usr/bin/env python3
"""Stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test bootstraps pip into each of its sanity virtualenvs by running
``get-pip-<version>.py`` fetched from ci-files.testing.ansible.com, a host this
machine cannot reach. It first looks for a cached copy at
``~/.ansible/test/cache/get_pip_<version with underscores>.py``; scripts/sanity.sh
copies this file there. Called as ``python get_pip.py [pip options] pip==X.Y ...``,
it installs the interpreter's bundled pip with ``ensurepip`` and then runs
``pip install`` with the same arguments (from PyPI, which is reachable), dropping
the get-pip-only flags ``--no-setuptools`` and ``--no-wheel``.
"""

import subprocess
import sys

GET_PIP_ONLY_FLAGS = {"--no-setuptools", "--no-wheel"}


def main(argv):
    """Bootstrap pip, then install what get-pip.py would have installed; return the exit code."""
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"],
                          stdout=subprocess.DEVNULL)
    pip_args = [arg for arg in argv if arg not in GET_PIP_ONLY_FLAGS]
    if not any(not arg.startswith("-") for arg in pip_args):
        return 0
    return subprocess.call([sys.executable, "-m", "pip", "install", "-q"] + pip_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
