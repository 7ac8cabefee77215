#!/usr/bin/env bash
# Prepare this checkout for development and tests: system tools, .venv, v2c.
#
# Idempotent and quiet: every step first checks whether it is needed, so a
# second run takes a second. Works as root on a fresh Debian with Python 3.11,
# or as a user with sudo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP="$VENV/.v2c-install-stamp"

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

have() {  # a binary on PATH or in the sbin folders (mosquitto lives in /usr/sbin)
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || die "missing $* and no apt-get: install them with your package manager"
    say "installing system packages: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then  # a fresh machine has no package lists yet
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {  # the first python3.11+ on PATH, preferring python3.11
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# --- system packages: only the ones whose binary is missing -----------------
missing=()
have mosquitto || missing+=(mosquitto)
have mosquitto_pub || missing+=(mosquitto-clients)
have protoc || missing+=(protobuf-compiler)
have softhsm2-util || missing+=(softhsm2)
[ -x "$VENV/bin/python" ] || find_python >/dev/null || missing+=(python3 python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
else
    say "system packages present (mosquitto, mosquitto-clients, protoc, softhsm2)"
fi

# --- virtual environment -----------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    PYTHON=$(find_python) || die "no Python 3.11 or newer found"
    say "creating $VENV with $("$PYTHON" --version)"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"  # Debian ships venv's pip bootstrap separately
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV"
    fi
else
    say "$VENV present ($("$VENV/bin/python" --version))"
fi

# --- v2c and its dev tools, re-installed only when pyproject.toml changes ----
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
    say "v2c installed, pyproject.toml unchanged"
else
    say "installing v2c and dev tools into $VENV (pip install -e '.[dev]')"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    printf '%s\n' "$wanted" >"$STAMP"
fi

say "setup done"
