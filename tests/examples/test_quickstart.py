"""The README's quickstart pipeline runs on the embedded default and is deterministic."""

from __future__ import annotations

import hashlib
import json
import pathlib

import pytest

from byteor.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.toml"
# Pinned: the generator, the filter and the canonical JSON are the same on every machine.
OUTPUT_SHA256 = "8d93d9e87b0cd6e0e7b8b121b988b513722bae4667cdc21887ff05cd977f3b39"


def test_quickstart_writes_the_same_bytes_every_run(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(QUICKSTART), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["records_in"], summary["records_out"]) == (200_000, 49_792)
    assert summary["output_sha256"] == OUTPUT_SHA256
    written = (tmp_path / "out" / "quickstart.ndjson").read_bytes()
    assert hashlib.sha256(written).hexdigest() == OUTPUT_SHA256
    first = json.loads(written.split(b"\n", 1)[0])
    assert first == {"id": 0, "qty": 1674306020, "region": 0}
