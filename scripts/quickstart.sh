#!/usr/bin/env bash
# Set everything up on a fresh machine and run the quickstart with EdgePlane on the embedded
# default (no server needed): examples/quickstart.toml, a generator (process edge-in:orders)
# -> a filter and canonical JSON (process stages:main) -> a file sink (process edge-out:out),
# joined by shared-memory lanes. Shows the progress line, the run's summary, then where the
# output went: its path, record count, sha256 and first record.
#
# BYTEOR_QUICKSTART_INSTALL=0 skips the pip install (tests/examples/test_quickstart.py runs the
# rest). EdgePlane's own variables pass through: EDGEPLANE_NAME (default "quickstart"),
# EDGEPLANE_METRICS_ADDR (default 127.0.0.1:9464; off disables), ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=out/quickstart.ndjson

if [ "${BYTEOR_QUICKSTART_INSTALL:-1}" != 0 ]; then
    echo "==> installing byteor (with the edgeplane extra: its metrics endpoint)"
    "$PY" -m pip install --quiet --disable-pip-version-check -e ".[edgeplane]"
fi

echo "==> edgeplane run examples/quickstart.toml --progress"
echo "    (while it runs: curl -s localhost:9464/metrics; curl -s localhost:9464/ready)"
"$PY" -m byteor.edgeplane run examples/quickstart.toml --progress

"$PY" - "$OUT" <<'PY'
import hashlib
import os
import sys

path = sys.argv[1]
with open(path, "rb") as f:
    data = f.read()
records = data.count(b"\n")
first = data.split(b"\n", 1)[0].decode()
print(f"==> output: {records:,} records in {os.path.abspath(path)}")
print(f"    sha256 {hashlib.sha256(data).hexdigest()} (the same on every run and machine)")
print(f"    first record: {first}")
PY

echo "==> next: the README (EdgePlane, adapters, examples); byteor bench lanes --quick (~10 s)"
