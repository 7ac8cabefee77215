#!/usr/bin/env bash
# Every quality gate, in order, stopping at the first that fails:
# lint, formatting, strict typing, then the whole test suite in parallel.
# Extra arguments go to pytest (e.g. scripts/check.sh -k roundtrip).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=.venv/bin
[ -x "$BIN/pytest" ] || { echo "check.sh: no $BIN/pytest; run scripts/setup.sh first" >&2; exit 1; }

gate() {
    printf '==> %s\n' "$*"
    "$@" || { printf 'check.sh: gate failed: %s\n' "$*" >&2; exit 1; }
}

gate "$BIN/ruff" check .
gate "$BIN/ruff" format --check .
# The generated v2c.v1 modules are excluded in pyproject.toml ([tool.mypy] overrides).
gate "$BIN/mypy" -p v2c.contract -p v2c.handlers -p v2c.gateway -p v2c.infra -p v2c.vehicle_sim
gate "$BIN/pytest" -n auto "$@"
