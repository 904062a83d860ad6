#!/usr/bin/env bash
# Install what the tests need into a fresh virtual environment and run the whole suite.
# Usage: bash tests/run.sh [pytest args...]   (VENV=path to reuse another environment)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-test}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, pinned: the CPU wheel on this disk; a bare requirement would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e ".[dev]"
"$VENV/bin/ruff" check medr1_data medr1_train tests benchmarks
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
if [ "$rc" -eq 5 ]; then echo "tests/run.sh: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
