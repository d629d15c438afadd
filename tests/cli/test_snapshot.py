"""``byteor snapshot``: lane counters read from a run's segments, --json, --watch, exit codes."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator

import pytest

from byteor import lanes
from byteor.cli import main

EXEC_TESTS = pathlib.Path(__file__).resolve().parents[1] / "exec"


@pytest.fixture
def running() -> Iterator[str]:
    """Two lanes of a 'running' pipeline: a producer that sent 5, a consumer that took 2."""
    name = f"snap{os.getpid()}"
    raw = lanes.create(f"{name}.raw", "events", 8, 64, replace=True)
    fan = lanes.create(f"{name}.fan", "fanout", 8, 64, consumers=["a", "b"], replace=True)
    tx = raw.sender()
    for i in range(5):
        tx.send(b"%d" % i)
    rx = raw.receiver()
    rx.receive_nowait()
    rx.receive_nowait()
    rx.release()
    try:
        yield name
    finally:
        for lane in (raw, fan):
            lane.close()
            lanes.unlink(lane.name)


def test_json_reads_the_counters(running: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", running, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == running and sorted(doc["lanes"]) == ["fan", "raw"]
    raw = doc["lanes"]["raw"]
    assert (raw["kind"], raw["published"], raw["consumed"], raw["used"], raw["lag"]) == (
        "events",
        5,
        2,
        3,
        3,
    )
    assert raw["producer_attached"] and not raw["closed"]
    assert sorted(doc["lanes"]["fan"]["consumers"]) == ["a", "b"]


def test_text_and_watch(running: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", running]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"byteor snapshot {running}: 2 lane(s)")
    assert "raw" in out and "3/8" in out
    assert main(["snapshot", running, "--json", "--watch", "0", "--count", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(json.loads(x)["lanes"]["raw"]["published"] == 5 for x in lines)


def test_nothing_running_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", f"nothing{os.getpid()}", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["exit_code"] == 1 and "is the run going" in captured.err
    assert main(["snapshot", "x", "--watch", "--count", "0"]) == 2


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_run_name_is_what_snapshot_reads(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage of the run itself takes the snapshot, mid-run, so no timing is involved."""
    monkeypatch.syspath_prepend(str(EXEC_TESTS))
    name = f"named{os.getpid()}"
    spec = tmp_path / "p.spec"
    spec.write_text(
        "byteor.spec = 1\npipeline.name = snap\npipeline.target = lane_graph\n"
        "lane.raw.kind = events\nlane.raw.capacity = 16\nlane.raw.slot_bytes = 64\n"
        "lane.done.kind = events\nlane.done.capacity = 16\nlane.done.slot_bytes = 64\n"
        "source.gen.adapter = generator\nsource.gen.out = raw\nsource.gen.param.count = 100\n"
        "stage.peek.op = byteor_exec_testops:SnapshotAt\nstage.peek.in = raw\n"
        f"stage.peek.out = done\nstage.peek.process = w1\nstage.peek.param.name = {name}\n"
        f"stage.peek.param.at = 50\nstage.peek.param.into = {tmp_path / 'snap.json'}\n"
        f"sink.out.adapter = file\nsink.out.in = done\nsink.out.param.path = {tmp_path / 'o'}\n"
    )
    assert main(["run", str(spec), "--json", "--name", name]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == name
    snap = json.loads((tmp_path / "snap.json").read_text())
    assert sorted(snap["lanes"]) == ["done", "raw"]
    # peek took record #50 and is inside its op; its input lane's cursor is what it has
    # finished with, which is exactly what its counters row has committed.
    peek = snap["nodes"]["peek"]
    assert (peek["kind"], peek["process"], peek["phase"]) == ("stage", "w1", "working")
    assert peek["records_in"] + peek["inflight"] >= 51
    assert snap["lanes"]["raw"]["consumers"]["default"]["position"] == peek["records_in"]
    assert sorted(snap["nodes"]) == ["gen", "out", "peek"]
    assert main(["snapshot", name]) == 1  # the run is over, its lanes are gone
    assert main(["run", str(spec), "--name", "bad.name"]) == 2
