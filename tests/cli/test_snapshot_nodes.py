"""``byteor snapshot``'s per-node table and ``byteor run``'s supervision options, end to end
through the CLI: a spec's ``on_crash = restart`` restarts a killed worker, the summary says
what it cost; the node table renders with rates."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from byteor.cli import main
from byteor.cli._snapshot import _text

EXEC_TESTS = pathlib.Path(__file__).resolve().parents[1] / "exec"

SPEC = """byteor.spec = 1
pipeline.name = nodes
pipeline.target = lane_graph
lane.raw.kind = events
lane.raw.capacity = 64
lane.raw.slot_bytes = 64
lane.mid.kind = events
lane.mid.capacity = 64
lane.mid.slot_bytes = 64
source.gen.adapter = generator
source.gen.out = raw
source.gen.param.count = 2000
stage.left.op = byteor_exec_testops:KillOnce
stage.left.in = raw
stage.left.out = mid
stage.left.process = w1
stage.left.on_crash = restart
stage.left.restart_backoff_ms = 0
stage.left.param.at = 700
stage.left.param.marker = {marker}
stage.peek.op = byteor_exec_testops:SnapshotAt
stage.peek.in = mid
stage.peek.out = done
stage.peek.process = w2
stage.peek.param.name = {name}
stage.peek.param.at = 1500
stage.peek.param.into = {into}
lane.done.kind = events
lane.done.capacity = 64
lane.done.slot_bytes = 64
sink.out.adapter = file
sink.out.in = done
sink.out.param.path = {out}
"""


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_restart_through_the_cli_and_the_node_table(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXEC_TESTS))
    name = f"nodes{os.getpid()}"
    into, out = tmp_path / "snap.json", tmp_path / "out"
    spec = tmp_path / "p.spec"
    spec.write_text(
        SPEC.format(marker=tmp_path / "killed", name=name, into=into, out=out), encoding="utf-8"
    )
    assert main(["run", str(spec), "--name", name, "--stall-timeout", "30"]) == 0
    err = capsys.readouterr().err
    assert "restarted 1x" in err and "restarts: 1; at-least-once" in err and "busy" in err
    lines = out.read_bytes().splitlines()
    assert sorted({int(x) for x in lines}) == list(range(2000))

    snap = json.loads(into.read_text())
    left = snap["nodes"]["left"]
    assert (left["restarts"], left["process"]) == (1, "w1")
    assert left["redelivered"] >= 1 and len(lines) == 2000 + left["duplicates"]
    # The table: one line per node; with a view before it, records per second.
    earlier = json.loads(json.dumps(snap))
    earlier["at_ns"] -= 2_000_000_000
    earlier["nodes"]["left"]["records_in"] -= 200
    text = _text(snap, earlier)
    assert f"byteor snapshot {name}: 3 lane(s), 4 node(s)" in text
    table = {line.split()[0]: line for line in text.splitlines()[-4:]}
    assert sorted(table) == ["gen", "left", "out", "peek"]
    assert "working" in table["peek"] and " w2 " in table["peek"]
    assert "restarts 1 (taken again" in table["left"] and " 100 " in table["left"]


def test_stall_timeout_must_not_be_negative(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    spec = tmp_path / "p.spec"
    spec.write_text(
        "byteor.spec = 1\npipeline.name = p\npipeline.target = lane_graph\n"
        "lane.raw.kind = events\nlane.raw.capacity = 8\nlane.raw.slot_bytes = 64\n"
        "source.gen.adapter = generator\nsource.gen.out = raw\n"
        "sink.out.adapter = stdout\nsink.out.in = raw\n",
        encoding="utf-8",
    )
    assert main(["run", str(spec), "--stall-timeout", "-1"]) == 2
    assert "--stall-timeout must be >= 0" in capsys.readouterr().err
