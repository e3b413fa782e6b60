#!/usr/bin/env bash
# README command 2: set up (with the test extras, exiftool, Java, Chromium), lint, and
# run the whole test suite. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ALTBEAM_SETUP_EXTRAS=test bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" NO_GCE_CHECK=true
echo "[altbeam tests] ruff check ." >&2
.venv/bin/ruff check .
# Tests that need the unprivileged user nobody (tests/system/test_reliability.py) build
# their own world under /tmp and skip, naming the folder in the way, when nobody cannot
# reach the virtualenv: this script changes no folder of the machine.
echo "[altbeam tests] pytest" >&2
.venv/bin/python -m pytest "$@"
