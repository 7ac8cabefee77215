#!/usr/bin/env bash
# Prepare this checkout for development and tests: system tools, .venv with v2c
# and its extras, and .venv-lint with the template linters.
#
# Idempotent and quiet: every step first checks whether it is needed, so a
# second run takes a second. Works as root on a fresh Debian with Python 3.11,
# or as a user with sudo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP="$VENV/.v2c-install-stamp"
# The extras of pyproject.toml this checkout needs: the local stack (with the
# CLI), the simulator, the tests. The Lambda handlers need none of them.
EXTRAS=local,sim,dev
# The template linters live apart: their pins (cfn-lint's and checkov's own
# dependency trees) must not move the project's.
LINT_VENV=.venv-lint
LINT_STAMP="$LINT_VENV/.v2c-lint-stamp"
LINT_TOOLS=(cfn-lint==1.58.0 checkov==3.3.30)

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
have promtool || missing+=(prometheus)  # promtool: the alert rules' check and unit tests
have chromium || missing+=(chromium)  # the dashboard's browser tests
have chromedriver || missing+=(chromium-driver)
{ [ -x "$VENV/bin/python" ] && [ -x "$LINT_VENV/bin/python" ]; } \
    || find_python >/dev/null || missing+=(python3 python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
else
    say "system packages present (mosquitto, mosquitto-clients, protoc, softhsm2, promtool, chromium, chromedriver)"
fi

# --- virtual environments --------------------------------------------------------
make_venv() {  # make_venv DIR: a venv with the first Python 3.11+ found, unless there
    if [ -x "$1/bin/python" ]; then
        say "$1 present ($("$1/bin/python" --version))"
        return 0
    fi
    local python
    python=$(find_python) || die "no Python 3.11 or newer found"
    say "creating $1 with $("$python" --version)"
    if ! "$python" -m venv "$1" >/dev/null 2>&1; then
        rm -rf "$1"  # Debian ships venv's pip bootstrap separately
        apt_install python3-venv
        "$python" -m venv "$1"
    fi
}

# Re-installs happen only when what they are made of changes: the stamp holds
# a hash of pyproject.toml and the extras (or of the tool pins). The two
# environments are independent, so they are installed side by side (a fresh
# machine waits for the longer one, not for both in turn).
install_v2c() {
    local wanted
    wanted=$( (printf 'extras=%s\n' "$EXTRAS"; cat pyproject.toml) | sha256sum | cut -d' ' -f1)
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
        say "v2c installed, pyproject.toml and extras unchanged"
    else
        say "installing v2c into $VENV (pip install -e '.[$EXTRAS]')"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]"
        printf '%s\n' "$wanted" >"$STAMP"
    fi
}

install_linters() {
    local wanted
    wanted=$(printf '%s\n' "${LINT_TOOLS[@]}" | sha256sum | cut -d' ' -f1)
    if [ -f "$LINT_STAMP" ] && [ "$(cat "$LINT_STAMP")" = "$wanted" ]; then
        say "template linters installed (${LINT_TOOLS[*]})"
    else
        say "installing ${LINT_TOOLS[*]} into $LINT_VENV"
        "$LINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${LINT_TOOLS[@]}"
        printf '%s\n' "$wanted" >"$LINT_STAMP"
    fi
}

# The environments themselves one after the other: making one may install
# python3-venv with apt, which takes a lock a second apt would fail on.
make_venv "$VENV"
make_venv "$LINT_VENV"
install_linters &
linters=$!
install_v2c
wait "$linters" || die "installing the template linters into $LINT_VENV failed"

say "setup done"
