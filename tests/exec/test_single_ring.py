"""SingleRing: a chain over one slots ring in /dev/shm, in place; same bytes as LaneGraph SP."""

from __future__ import annotations

import glob

import pytest

from byteor.exec import ExecError, ListSink, SingleRing, StageFailed, run_sp
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec

TEMPLATE = '{"i": {i}, "region": {key}, "v": {rand}}'


def ring_spec(
    ops: list[tuple[str, dict[str, str]]],
    count: int = 3000,
    sinks: int = 1,
    capacity: int = 16,
    slot: int = 64,
) -> PipelineSpecV1:
    stages, prev = [], ()
    for i, (op, params) in enumerate(ops):
        stages.append(StageSpec(f"s{i}", op, ("ring",), after=prev, params=params))
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
