"""SingleRing: a chain over one slots ring in /dev/shm, in place, its stages in this process or
in processes of their own; same bytes as LaneGraph SP."""

from __future__ import annotations

import dataclasses
import glob
import multiprocessing
import signal

import pytest

from byteor.exec import (
    ExecError,
    ListSink,
    RunReport,
    SingleRing,
    StageFailed,
    WorkerDied,
    run_sp,
)
from byteor.exec._single_ring import _lay_out, _records_of
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec

TEMPLATE = '{"i": {i}, "region": {key}, "v": {rand}}'


def ring_spec(
    ops: list[tuple[str, dict[str, str]]],
    count: int = 3000,
    sinks: int = 1,
    capacity: int = 16,
    slot: int = 64,
    processes: tuple[str, ...] = (),
) -> PipelineSpecV1:
    stages, prev = [], ()
    for i, (op, params) in enumerate(ops):
        process = processes[i] if processes else "main"
        stages.append(StageSpec(f"s{i}", op, ("ring",), after=prev, process=process, params=params))
        prev = (f"s{i}",)
    return PipelineSpecV1.build(
        "ringt",
        "single_ring",
        lanes=[LaneSpec("ring", "slots", capacity, slot)],
        stages=stages,
        sources=[
            SourceSpec(
                "src",
                "generator",
                "ring",
                {"count": str(count), "seed": "3", "keys": "4", "template": TEMPLATE},
            )
        ],
        sinks=[SinkSpec(f"out{k}", "memory", ("ring",), after=prev) for k in range(sinks)],
    )


def both(spec: PipelineSpecV1, batch: int = 64) -> tuple[str, str, list[bytes]]:
    names = list(spec.sinks)
    sp_sinks = {n: ListSink() for n in names}
    sp = run_sp(spec, sinks=sp_sinks, batch=batch)
    ring_sinks = {n: ListSink() for n in names}
    ex = SingleRing(spec, sinks=ring_sinks, batch=batch)
    rr = ex.run()
    assert rr.executor == "single_ring"
    assert [s.records for s in ring_sinks.values()] == [s.records for s in sp_sinks.values()]
    assert [(n.name, n.records_in, n.records_out) for n in rr.nodes] == [
        (n.name, n.records_in, n.records_out) for n in sp.nodes
    ]
    assert glob.glob(f"/dev/shm/byteor-{ex.run_id}*") == []
    return sp.output_sha256, rr.output_sha256, ring_sinks[names[0]].records


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_filter_decode_upper_matches_sp(batch: int) -> None:
    ops = [
        ("filter", {"contains": '"region": 1,'}),
        ("json_decode", {}),
        ("byteor_exec_testops:upper", {}),
    ]
    sp_hash, ring_hash, records = both(ring_spec(ops), batch)
    assert sp_hash == ring_hash
    assert 0 < len(records) < 3000 and all(b'"REGION":1' in r for r in records)


def test_expanding_stage_and_two_sinks() -> None:
    ops = [("byteor_exec_testops:explode", {}), ("byteor_exec_testops:upper", {})]
    spec = ring_spec(ops, count=500, sinks=2, slot=128)
    sp_hash, ring_hash, records = both(spec)
    assert sp_hash == ring_hash and len(records) == 1000


def test_skip_counts_and_fail_names_the_record() -> None:
    ops = [("byteor_exec_testops:fail_on_x", {"on_error": "skip"})]
    spec = ring_spec(ops, count=10)
    text = TEMPLATE.replace('"i"', '"x"')
    spec = PipelineSpecV1.build(
        "ringt",
        "single_ring",
        lanes=list(spec.lanes.values()),
        stages=list(spec.stages.values()),
        sources=[SourceSpec("src", "generator", "ring", {"count": "10", "template": text})],
        sinks=list(spec.sinks.values()),
    )
    sink = ListSink()
    report = SingleRing(spec, sinks={"out0": sink}).run()
    assert report.node("s0").skipped == 10 and sink.records == []
    failing = PipelineSpecV1.build(
        "ringt",
        "single_ring",
        lanes=list(spec.lanes.values()),
        stages=[StageSpec("s0", "byteor_exec_testops:fail_on_x", ("ring",))],
        sources=list(spec.sources.values()),
        sinks=[SinkSpec("out0", "memory", ("ring",), after=("s0",))],
    )
    with pytest.raises(StageFailed) as info:
        SingleRing(failing, sinks={"out0": ListSink()}).run()
    assert info.value.stage == "s0" and info.value.index == 0


@pytest.mark.parametrize("batch", [1, 64])
def test_a_record_longer_than_slot_bytes_fails_the_run(batch: int) -> None:
    spec = ring_spec([("byteor_exec_testops:Nested.twice", {})], count=20, slot=64)
    ex = SingleRing(spec, sinks={"out0": ListSink()}, batch=batch)
    with pytest.raises(
        ExecError, match=r"stage 's0' emitted a record of \d+ bytes.*slot_bytes is 64"
    ):
        ex.run()
    assert leftovers(ex.run_id) == []


def test_refuses_to_restart_a_stage_that_rewrites_in_place() -> None:
    spec = ring_spec([("identity", {})], count=3, processes=("w",))
    (st,) = spec.stages.values()
    restarting = PipelineSpecV1.build(
        "ringt",
        "single_ring",
        lanes=list(spec.lanes.values()),
        stages=[dataclasses.replace(st, on_crash="restart", max_restarts=2)],
        sources=list(spec.sources.values()),
        sinks=list(spec.sinks.values()),
    )
    with pytest.raises(
        ExecError, match=r"'s0' says on_crash = restart.*run the spec as a lane_graph"
    ):
        SingleRing(restarting)


def test_refuses_a_lane_graph_and_end_of_stream_records() -> None:
    spec = ring_spec([("byteor_exec_testops:Suffix", {})], count=3)
    with pytest.raises(ExecError, match="emits records at the end of the stream"):
        SingleRing(spec, sinks={"out0": ListSink()}).run()
    graph = PipelineSpecV1.build(
        "g",
        "lane_graph",
        lanes=[LaneSpec("raw", "events", 8, 64)],
        sources=[SourceSpec("src", "memory", "raw")],
        sinks=[SinkSpec("out", "memory", ("raw",))],
    )
    with pytest.raises(ExecError, match="single_ring specs"):
        SingleRing(graph)


# -- how records of any count are laid over slots (pure functions) -----------------------------


@pytest.mark.parametrize("slots", [1, 2, 3, 7])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 20])
def test_any_number_of_records_over_any_number_of_slots(slots: int, count: int) -> None:
    limit, room = 256, 264
    records = [b"r%d" % i * (i % 3) for i in range(count)]  # empty records included
    laid = _lay_out(records, slots, limit, room, "stage 'x'")
    assert len(laid) == slots and all(len(s) <= limit or len(s) == room for s in laid)
    assert _records_of(laid, limit, room) == records
    if count == slots:
        assert laid == records  # one record a slot: written as it is, no framing


def test_slots_that_no_run_wrote_are_refused() -> None:
    with pytest.raises(ExecError, match="no record this run wrote"):
        _records_of([b"x" * 70], 64, 72)
    with pytest.raises(ExecError, match="no record this run wrote"):
        _records_of([b"x" * 71 + b"?"], 64, 72)
    with pytest.raises(ExecError, match="raise lane slot_bytes"):
        _lay_out([b"x" * 65], 2, 64, 72, "stage 'x'")
    with pytest.raises(ExecError, match="raise lane slot_bytes"):
        _lay_out([b"x" * 40, b"y" * 40], 1, 64, 72, "stage 'x'")


# -- stages in processes of their own ------------------------------------------------------------

MP_OPS = [
    ("filter", {"contains": '"region": 1,'}),  # fewer records than slots: empty slots
    ("json_decode", {}),
    ("byteor_exec_testops:explode", {}),  # more records than slots: framed slots
    ("byteor_exec_testops:upper", {}),
]


def leftovers(run_id: str) -> list[str]:
    return glob.glob(f"/dev/shm/byteor-{run_id}*")


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("processes", "batch"),
    [
        (("p0", "p1", "p2", "p3"), 64),  # each stage in its own process
        (("p0", "p1", "p2", "p3"), 7),  # batches that end anywhere in a ring of 16
        (("w", "main", "w", "main"), 1),  # grouped, not neighbours, one record at a time
    ],
)
def test_stages_in_processes_give_the_same_bytes_as_sp(
    processes: tuple[str, ...], batch: int
) -> None:
    spec = ring_spec(MP_OPS, count=4000, capacity=16, slot=128, processes=processes)
    sp_sink, ring_sink = ListSink(), ListSink()
    sp = run_sp(spec, sinks={"out0": sp_sink}, batch=batch)
    ex = SingleRing(spec, sinks={"out0": ring_sink}, batch=batch)
    assert ex.processes == ["main", *sorted(set(processes) - {"main"})]
    report = ex.run()
    assert report.executor == "single_ring"
    assert ring_sink.records == sp_sink.records and 0 < len(ring_sink.records) < 2 * 4000
    assert report.output_sha256 == sp.output_sha256
    assert [(n.name, n.records_in, n.records_out) for n in report.nodes] == [
        (n.name, n.records_in, n.records_out) for n in sp.nodes
    ]
    assert multiprocessing.active_children() == []
    assert ex.workers == {} and leftovers(ex.run_id) == []


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_a_killed_stage_process_fails_the_run_naming_the_stage() -> None:
    ops = [("identity", {}), ("byteor_exec_testops:KillAt", {"at": "700"}), ("identity", {})]
    spec = ring_spec(ops, count=5000, processes=("main", "killer", "tail"))
    ex = SingleRing(spec, sinks={"out0": ListSink()})
    with pytest.raises(WorkerDied) as info:
        ex.run()
    err = info.value
    assert err.process == "killer" and err.stages == ("s1",)
    assert err.exitcode == -signal.SIGKILL and "'s1'" in str(err)
    report = err.report
    assert isinstance(report, RunReport) and report.node("out0").records_out <= 700
    assert multiprocessing.active_children() == []
    assert ex.workers == {} and leftovers(ex.run_id) == []


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_a_failing_record_in_a_stage_process_names_stage_and_record() -> None:
    spec = ring_spec([("byteor_exec_testops:fail_on_x", {})], count=50, processes=("w",))
    text = TEMPLATE.replace('"i"', '"x"')
    spec = PipelineSpecV1.build(
        "ringt",
        "single_ring",
        lanes=list(spec.lanes.values()),
        stages=list(spec.stages.values()),
        sources=[SourceSpec("src", "generator", "ring", {"count": "50", "template": text})],
        sinks=list(spec.sinks.values()),
    )
    ex = SingleRing(spec, sinks={"out0": ListSink()})
    with pytest.raises(StageFailed) as info:
        ex.run()
    assert (info.value.stage, info.value.index, info.value.code) == ("s0", 0, "op.raised")
    assert multiprocessing.active_children() == [] and leftovers(ex.run_id) == []
