"""The README's first command: the quickstart runs with no server and writes what it documents.

``scripts/quickstart.sh`` (its pip install skipped) runs from a copy of the repository's
layout in a temporary folder, so its ``out/`` and its run's shared memory are the test's own:
``edgeplane run examples/quickstart.toml`` with the progress line, then the lines saying
where the output went. The output's record count, sha256 and first record are pinned here and
must be the ones the README and the plan's comment show; ``byteor run`` on the same plan (one
process) writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from byteor.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.toml"
SCRIPT = ROOT / "scripts" / "quickstart.sh"
README = ROOT / "README.md"
# Pinned: the generator, the filter and the canonical JSON are the same on every machine.
RECORDS_IN = 1_000_000
RECORDS_OUT = 249_596
OUTPUT_SHA256 = "53ec4fc53c788225c3a2b2cb012abd63a5a336c5a8f31bf992eb0c8d46df7743"
FIRST = {"id": 0, "qty": 1674306020, "region": 0}


def _check_output(written: bytes) -> None:
    assert written.count(b"\n") == RECORDS_OUT
    assert hashlib.sha256(written).hexdigest() == OUTPUT_SHA256
    assert json.loads(written.split(b"\n", 1)[0]) == FIRST


@pytest.mark.multiprocess
def test_quickstart_script_runs_edgeplane_and_says_where_the_output_went(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "examples").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "quickstart.sh")
    shutil.copy(QUICKSTART, tmp_path / "examples" / "quickstart.toml")
    run = f"qs{os.getpid()}x{int(time.time()) % 100_000}"
    env = {
        **os.environ,
        "BYTEOR_QUICKSTART_INSTALL": "0",
        "PYTHON": sys.executable,
        "EDGEPLANE_NAME": run,
        "EDGEPLANE_METRICS_ADDR": "127.0.0.1:0",  # a free port: the default may be taken
    }
    proc = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "quickstart.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr

    output = tmp_path / "out" / "quickstart.ndjson"
    _check_output(output.read_bytes())
    assert f"==> output: {RECORDS_OUT:,} records in {output}\n" in proc.stdout
    assert f"sha256 {OUTPUT_SHA256}" in proc.stdout
    assert f"first record: {json.dumps(FIRST, separators=(',', ':'))}\n" in proc.stdout
    # The progress line (plain lines: stderr is not a terminal here), then the summary.
    assert re.search(r"^in [\d,]+  out [\d,]+  [\d,]+ rec/s", proc.stderr, re.MULTILINE)
    assert (
        f"edgeplane run {run}: {RECORDS_IN:,} in, {RECORDS_OUT:,} out, "
        f"{RECORDS_IN:,} acknowledged in"
    ) in proc.stderr
    assert "stages:main" in proc.stderr  # the stages ran in a process of their own
    assert not [f for f in os.listdir("/dev/shm") if run in f]  # nothing left behind


def test_byteor_run_writes_the_same_bytes_in_one_process(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(QUICKSTART), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["records_in"], summary["records_out"]) == (RECORDS_IN, RECORDS_OUT)
    assert summary["output_sha256"] == OUTPUT_SHA256
    _check_output((tmp_path / "out" / "quickstart.ndjson").read_bytes())


def test_the_readme_and_the_plan_show_the_pinned_output() -> None:
    for doc in (README, QUICKSTART):
        text = doc.read_text()
        assert OUTPUT_SHA256 in text, f"{doc.name} does not show the quickstart's sha256"
        assert f"{RECORDS_OUT:,}" in text, f"{doc.name} does not show the record count"
    readme = README.read_text()
    commands = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert commands is not None, "README.md opens with no bash block"
    lines = [ln.split("#")[0].strip() for ln in commands.group(1).splitlines() if ln.strip()]
    assert lines == ["bash scripts/quickstart.sh", "bash scripts/test.sh"]
