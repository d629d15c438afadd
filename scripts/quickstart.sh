#!/usr/bin/env bash
# Set everything up on a fresh machine and run the main job on the embedded default
# (no external server needed): the quickstart pipeline, then a short lane benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
echo "==> installing byteor (with the benchmark peers)"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[bench]"
echo "==> byteor run examples/quickstart.toml"
"$PY" -m byteor run examples/quickstart.toml
echo "==> output: $(wc -l < out/quickstart.ndjson) records in out/quickstart.ndjson; first one:"
head -n 1 out/quickstart.ndjson
echo "==> byteor bench lanes --quick (our lanes against multiprocessing, pyzmq, faster-fifo)"
exec "$PY" -m byteor bench lanes --quick "$@"
