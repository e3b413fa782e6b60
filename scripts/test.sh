#!/usr/bin/env bash
# README command 2: set up (with the test extras, exiftool, Java, Chromium), lint, and
# run the whole test suite. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ALTBEAM_SETUP_EXTRAS=test bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" NO_GCE_CHECK=true
echo "[altbeam tests] ruff check ." >&2
.venv/bin/ruff check .
# The reliability tests run the CLI as the unprivileged user nobody (so a mode-000 file
# is really unreadable); nobody must be able to reach this checkout. A private
# parent folder (mktemp -d makes 0700 ones) gets search permission only (o+x: no
# listing).
if [ "$(id -u)" = 0 ]; then
    dir=""
    IFS=/ read -ra parts <<< "${PWD#/}"
    for part in "${parts[@]}"; do   # from / down, so each check sees its parents fixed
        dir="$dir/$part"
        if ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -x "$dir" 2>/dev/null; then
            echo "[altbeam tests] chmod o+x $dir (nobody must reach the checkout)" >&2
            chmod o+x "$dir"
        fi
    done
    # Python lists the checkout itself to import tests/ from it: it must be readable too,
    # as a plain `git clone` into a new folder makes it.
    if ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -r "$PWD" 2>/dev/null; then
        echo "[altbeam tests] chmod o+rx $PWD (nobody must import tests/ from it)" >&2
        chmod o+rx "$PWD"
    fi
fi
echo "[altbeam tests] pytest" >&2
.venv/bin/python -m pytest "$@"
