#!/usr/bin/env python3
"""Run pytest, and fail loudly when it collected no test at all (pytest exit code 5)."""
import sys

import pytest

code = pytest.main(sys.argv[1:])
if code == pytest.ExitCode.NO_TESTS_COLLECTED:
    print("ERROR: pytest collected no tests -- a run that tests nothing is a failure", file=sys.stderr)
    sys.exit(1)
sys.exit(int(code))
