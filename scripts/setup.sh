#!/usr/bin/env bash
# Shared set-up for the README's two commands: a virtualenv in .venv with altbeam
# installed (editable) and the Debian tools it drives. Idempotent: a second run only
# checks, and re-installs Python packages only when the package definition changed
# (pyproject.toml, setup.py, constraints.txt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\033[1m[altbeam setup]\033[0m %s\n' "$*" >&2; }

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "altbeam needs Python >= 3.11 (found $($PYTHON --version 2>&1))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
APT_UPDATED=""
apt_install() {  # apt_install PACKAGE... (only what is missing)
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not found: please install $* yourself"; return 1
    fi
    if [ -z "$APT_UPDATED" ]; then
        say "apt-get update"; $SUDO apt-get update -qq; APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

need_debian() {  # need_debian COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

need_debian exiftool libimage-exiftool-perl
if [ "${ALTBEAM_SETUP_EXTRAS:-}" = test ]; then
    need_debian java default-jre-headless        # METEOR and the PTB tokenizer (evaluation)
    command -v chromium >/dev/null 2>&1 || apt_install chromium   # report tests
fi

if [ ! -x .venv/bin/python ]; then
    say "creating virtualenv .venv"
    "$PYTHON" -m venv .venv || { apt_install python3-venv && "$PYTHON" -m venv .venv; }
fi
STAMP=.venv/.altbeam-installed
HASH="$(cat pyproject.toml setup.py constraints.txt | sha256sum | cut -c1-16)"
MODE="${ALTBEAM_SETUP_EXTRAS:-run}"
# A test install is a superset of a run install.
if [ -f "$STAMP" ] && { grep -qx "$HASH-test" "$STAMP" || grep -qx "$HASH-$MODE" "$STAMP"; }; then
    say "environment up to date (.venv)"
else
    EXTRAS="train"
    [ "$MODE" = test ] && EXTRAS="train,test"
    say "installing altbeam[$EXTRAS] and its dependencies into .venv (first time: a few minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    # The exact tested set (constraints.txt), not whatever is newest today.
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
    echo "$HASH-$MODE" > "$STAMP"
fi
