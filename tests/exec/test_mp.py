"""LaneGraph MP: stage groups in worker processes over /dev/shm lanes, under a supervisor.

Few tests, each bounded: exact counts, the same output hash as SP, a killed worker named in a
typed error with no process or segment left behind.
"""

from __future__ import annotations

import glob
import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest

from byteor.exec import (
    LaneGraphMP,
    ListSink,
    RunReport,
    StageFailed,
    WorkerDied,
    processes_of,
    run_sp,
)
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(60)]

COUNT = 20_000
TEMPLATE = '{"i": {i}, "k": "k{key}", "v": {rand}}'


def fanned(count: int = COUNT, kill_at: int | None = None, fail: bool = False) -> PipelineSpecV1:
    """generator -> decode (main) -> fanout lane read by two workers -> round-robin merge
    in a third worker -> sink. Lanes small, so every process waits on the others."""
    lanes = [LaneSpec(n, "events", 64, 256) for n in ("raw", "a2", "b2", "done")]
    lanes.append(LaneSpec("dec", "fanout", 64, 256))
    left_op, left_params = "identity", {}
    if kill_at is not None:
        left_op, left_params = "byteor_exec_testops:KillAt", {"at": str(kill_at)}
    right = (
        StageSpec("right", "byteor_exec_testops:fail_on_x", ("dec",), ("b2",), process="w2")
        if fail
        else StageSpec("right", "byteor_exec_testops:upper", ("dec",), ("b2",), process="w2")
    )
    stages = [
        StageSpec("decode", "json_decode", ("raw",), ("dec",)),
        StageSpec("left", left_op, ("dec",), ("a2",), process="w1", params=left_params),
        right,
        StageSpec("join", "identity", ("a2", "b2"), ("done",), process="w3"),
    ]
    params = {"count": str(count), "seed": "7", "template": TEMPLATE}
    if fail:
        params["template"] = TEMPLATE.replace('"k{key}"', '"x{key}"')
    return PipelineSpecV1.build(
        "fan",
        "lane_graph",
        lanes=lanes,
        stages=stages,
        sources=[SourceSpec("src", "generator", "raw", params)],
        sinks=[SinkSpec("out", "memory", ("done",))],
    )


def run_mp_(spec: PipelineSpecV1, batch: int = 64) -> tuple[LaneGraphMP, RunReport, list[bytes]]:
    sink = ListSink()
    ex = LaneGraphMP(spec, sinks={"out": sink}, batch=batch)
    return ex, ex.run(), sink.records


def leftovers(run_id: str) -> list[str]:
    return glob.glob(f"/dev/shm/byteor-{run_id}*")


def no_children() -> None:
    assert multiprocessing.active_children() == []


def test_mp_matches_sp_byte_for_byte() -> None:
    spec = fanned()
    assert processes_of(LaneGraphMP(spec).graph) == ["main", "w1", "w2", "w3"]
    sp_sink = ListSink()
    sp = run_sp(spec, sinks={"out": sp_sink})
    ex, mp, records = run_mp_(spec)
    assert mp.executor == "lane_graph_mp"
    assert mp.records_in == COUNT and mp.records_out == 2 * COUNT
    assert records == sp_sink.records
    assert mp.output_sha256 == sp.output_sha256
    assert hashlib.sha256(b"".join(r + b"\n" for r in records)).hexdigest() == mp.output_sha256
    # counters come back from every worker
    assert [(n.name, n.records_in, n.records_out) for n in mp.nodes] == [
        (n.name, n.records_in, n.records_out) for n in sp.nodes
    ]
    assert mp.node("left").records_in == mp.node("right").records_in == COUNT
    no_children()
    assert leftovers(ex.run_id) == []


def test_repeated_mp_runs_under_load_give_one_hash() -> None:
    spec = fanned(count=5_000)
    want = run_sp(spec, sinks={"out": ListSink()}).output_sha256
    # A busy process competing for the 2 cores, so the workers' interleaving varies.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        hashes = {run_mp_(spec, batch=b)[1].output_sha256 for b in (1, 7, 64, 64)}
    finally:
        busy.kill()
        busy.wait()
    assert hashes == {want}
    no_children()


def test_killed_worker_fails_fast_naming_its_stage() -> None:
    spec = fanned(kill_at=500)
    ex = LaneGraphMP(spec, sinks={"out": ListSink()})
    with pytest.raises(WorkerDied) as info:
        ex.run()
    err = info.value
    assert err.process == "w1" and err.stages == ("left",)
    assert err.exitcode == -signal.SIGKILL
    assert "'left'" in str(err) and "SIGKILL" in str(err)
    no_children()
    assert ex.workers == {}
    assert leftovers(ex.run_id) == []
    report = err.report
    assert isinstance(report, RunReport) and report.node("out").records_out <= 2 * 500


def test_stage_failure_in_a_worker_is_raised_by_the_supervisor() -> None:
    ex = LaneGraphMP(fanned(count=100, fail=True), sinks={"out": ListSink()})
    with pytest.raises(StageFailed) as info:
        ex.run()
    assert info.value.stage == "right" and info.value.index == 0
    assert info.value.code == "op.raised"
    no_children()
    assert leftovers(ex.run_id) == []


def test_run_id_names_the_segments() -> None:
    spec = fanned(count=10)
    ex = LaneGraphMP(spec, sinks={"out": ListSink()}, run_id=f"t{os.getpid()}-fixed")
    assert ex.run().records_out == 20
    assert ex.run_id == f"t{os.getpid()}-fixed"
    assert leftovers(ex.run_id) == []
