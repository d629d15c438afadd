#!/usr/bin/env bash
# Set everything up on a fresh machine and run the main job on the embedded default
# (no external server needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[bench]"
exec "$PY" -m byteor bench lanes --quick "$@"
