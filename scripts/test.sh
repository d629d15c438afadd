#!/usr/bin/env bash
# Set everything up on a fresh machine and run the full check: lint, types, tests.
# Safe to run again: installs are idempotent, running services are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
echo "==> installing byteor with the dev and bench extras"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[dev,bench]"

if [ -x scripts/services.sh ]; then
    echo "==> making sure the test servers are up"
    bash scripts/services.sh
fi

echo "==> ruff"
"$PY" -m ruff check byteor tests
echo "==> mypy --strict byteor"
"$PY" -m mypy byteor
echo "==> pytest"
"$PY" -m pytest -q "$@"
