#!/usr/bin/env bash
# The test command: sets the project up on a fresh machine (as run_all.sh does), then runs
# pytest. Extra arguments go to pytest, e.g. ./run_tests.sh -x tests/test_stages.py
# or ./run_tests.sh --hypothesis-profile=long for the long fuzzing run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY="$(./run_all.sh --setup-only | tail -n 1)"
exec "$PY" -m pytest "$@"
