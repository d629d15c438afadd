"""LaneGraph SP: exact outputs and counters, merges, error policies, stalls, stop, local I/O."""

from __future__ import annotations

import hashlib
import os
import pathlib

import pytest

from byteor.exec import (
    AdapterUnavailable,
    ExecError,
    GeneratorSource,
    LaneGraphSP,
    LineSource,
    ListSink,
    PipelineStalled,
    RunReport,
    StageConfigError,
    StageFailed,
    StopToken,
    frame,
    run_sp,
)
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec, decode_spec


def lane(name: str, kind: str = "events", capacity: int = 8, slot: int = 64) -> LaneSpec:
    return LaneSpec(name, kind, capacity, slot)  # type: ignore[arg-type]


def stage(name: str, op: str, ins: str, outs: str = "", **params: str) -> StageSpec:
    return StageSpec(
        name,
        op,
        tuple(ins.split(",")),
        tuple(o for o in outs.split(",") if o),
        params=params,
    )


def graph(
    lanes: list[LaneSpec],
    stages: list[StageSpec],
    sinks: list[SinkSpec] | None = None,
    sources: list[SourceSpec] | None = None,
) -> PipelineSpecV1:
    return PipelineSpecV1.build(
        "t",
        "lane_graph",
        lanes=lanes,
        stages=stages,
        sources=sources or [SourceSpec("src", "memory", "raw")],
        sinks=sinks or [SinkSpec("out", "memory", ("done",))],
    )


def run(
    spec: PipelineSpecV1,
    records: list[bytes] | None = None,
    batch: int = 64,
    **extra: list[bytes],
) -> tuple[RunReport, dict[str, list[bytes]]]:
    sinks = {name: ListSink() for name in spec.sinks}
    sources: dict[str, list[bytes]] = {"src": records or []} if "src" in spec.sources else {}
    sources |= extra
    report = run_sp(spec, sources=sources, sinks=sinks, batch=batch)
    return report, {name: s.records for name, s in sinks.items()}


def nums(n: int) -> list[bytes]:
    return [str(i).encode() for i in range(n)]


def counts(report: RunReport, name: str) -> tuple[int, int, int, int, int]:
    n = report.node(name)
    return n.records_in, n.records_out, n.errors, n.skipped, n.routed


# -- flow ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_chain_passes_every_record_in_order(batch: int) -> None:
    spec = graph(
        [lane("raw"), lane("mid"), lane("done")],
        [
            stage("up", "byteor_exec_testops:upper", "raw", "mid"),
            stage("keep", "filter", "mid", "done", contains="A"),
        ],
    )
    records = [b"a%d" % i if i % 3 else b"b%d" % i for i in range(100)]
    report, out = run(spec, records, batch)
    assert out["out"] == [r.upper() for r in records if b"a" in r]
    assert counts(report, "up") == (100, 100, 0, 0, 0)
    assert counts(report, "keep") == (100, 66, 0, 0, 0)
    assert report.records_in == 100 and report.records_out == 66
    expected = hashlib.sha256(b"".join(r + b"\n" for r in out["out"])).hexdigest()
    assert report.output_sha256 == expected == report.node("out").sha256
    assert report.node("out").bytes == sum(len(r) + 1 for r in out["out"])
    assert report.stopped is False


def test_fanout_every_reader_sees_everything_and_hashes_combine() -> None:
    spec = graph(
        [lane("raw", "fanout"), lane("a"), lane("b")],
        [
            stage("ua", "byteor_exec_testops:upper", "raw", "a"),
            stage("xb", "byteor_exec_testops:explode", "raw", "b"),
        ],
        sinks=[SinkSpec("sa", "memory", ("a",)), SinkSpec("sb", "memory", ("b",))],
    )
    report, out = run(spec, [b"x", b"y"] * 20)
    assert out["sa"] == [b"X", b"Y"] * 20
    assert out["sb"] == [b"x-0", b"x-1", b"y-0", b"y-1"] * 20
    digests = {
        name: hashlib.sha256(b"".join(r + b"\n" for r in recs)).hexdigest()
        for name, recs in out.items()
    }
    combined = hashlib.sha256(f"sa {digests['sa']}\nsb {digests['sb']}\n".encode()).hexdigest()
    assert report.output_sha256 == combined


def test_round_robin_merge_interleaves_one_by_one_then_the_longer_tail() -> None:
    spec = graph(
        [lane("raw"), lane("ev"), lane("od"), lane("done", capacity=64)],
        [
            stage(
                "split", "route", "raw", "ev,od", field="p", **{"route.e": "ev", "route.o": "od"}
            ),
            stage("join", "identity", "ev,od", "done"),
        ],
    )
    records = [b'{"p":"e","i":%d}' % i for i in range(3)] + [
        b'{"p":"o","i":%d}' % i for i in range(3, 5)
    ]
    for batch in (1, 2, 64):
        _, out = run(spec, records, batch)
        assert out["out"] == [records[0], records[3], records[1], records[4], records[2]]


def test_key_by_then_merge_back_is_the_same_for_every_batch_size() -> None:
    spec = graph(
        [
            lane("raw"),
            lane("p0", capacity=64),
            lane("p1", capacity=64),
            lane("p2", capacity=64),
            lane("done"),
        ],
        [
            stage("part", "key_by", "raw", "p0,p1,p2"),
            stage("join", "identity", "p0,p1,p2", "done"),
        ],
    )
    records = nums(60)
    outputs = {tuple(run(spec, records, batch)[1]["out"]) for batch in (1, 5, 64)}
    assert len(outputs) == 1
    (out,) = outputs
    assert sorted(out) == sorted(records)


def test_a_starved_round_robin_merge_is_reported_not_hung() -> None:
    spec = graph(
        [lane("raw"), lane("ev", capacity=4), lane("od", capacity=4), lane("done")],
        [
            stage(
                "split", "route", "raw", "ev,od", field="p", **{"route.e": "ev", "route.o": "od"}
            ),
            stage("join", "identity", "ev,od", "done"),
        ],
    )
    records = [b'{"p":"o"}'] * 50  # "ev" never gets one: join waits on it forever
    with pytest.raises(PipelineStalled) as info:
        run(spec, records)
    message = str(info.value)
    assert "stage 'split' waits for room in lane od" in message
    assert "stage 'join' waits for a record on lane ev, od" in message
    # With merge = ready the same graph drains.
    ready = graph(
        [lane("raw"), lane("ev", capacity=4), lane("od", capacity=4), lane("done")],
        [
            stage(
                "split", "route", "raw", "ev,od", field="p", **{"route.e": "ev", "route.o": "od"}
            ),
            StageSpec("join", "identity", ("ev", "od"), ("done",), merge="ready"),
        ],
    )
    report, out = run(ready, records)
    assert out["out"] == records and counts(report, "join") == (50, 50, 0, 0, 0)


def test_batch_unbatch_and_the_end_of_input_flush() -> None:
    spec = graph(
        [lane("raw"), lane("b"), lane("done")],
        [
            stage("bat", "batch", "raw", "b", size="4"),
            stage("unb", "unbatch", "b", "done"),
        ],
    )
    report, out = run(spec, nums(10))
    assert out["out"] == nums(10)
    assert counts(report, "bat") == (10, 3, 0, 0, 0)
    assert counts(report, "unb") == (3, 10, 0, 0, 0)


def test_a_terminal_stage_and_a_sink_on_a_multi_input() -> None:
    spec = graph(
        [lane("raw", "fanout"), lane("a"), lane("b")],
        [
            stage("count", "count", "raw"),
            stage("ua", "byteor_exec_testops:upper", "raw", "a"),
            stage("ub", "identity", "raw", "b"),
        ],
        sinks=[SinkSpec("out", "memory", ("a", "b"))],
    )
    report, out = run(spec, [b"p", b"q"])
    assert out["out"] == [b"P", b"p", b"Q", b"q"]
    assert report.node("count").extra == {"records": 2, "bytes": 2}
    assert counts(report, "count") == (2, 0, 0, 0, 0)


# -- error policies --------------------------------------------------------------------------------


def _policy_spec(**params: str) -> PipelineSpecV1:
    outs = "done,bad" if params.get("on_error") == "route" else "done"
    lanes = [lane("raw"), lane("done")] + ([lane("bad")] if "bad" in outs else [])
    sinks = [SinkSpec("out", "memory", ("done",))]
    if "bad" in outs:
        sinks.append(SinkSpec("dead", "memory", ("bad",)))
    return graph(
        lanes, [stage("chk", "byteor_exec_testops:fail_on_x", "raw", outs, **params)], sinks
    )


RECORDS = [b"a", b"x1", b"b", b"x2", b"c"]


def test_on_error_fail_names_the_stage_and_record() -> None:
    with pytest.raises(StageFailed) as info:
        run(_policy_spec(), RECORDS)
    err = info.value
    assert (err.stage, err.index, err.code) == ("chk", 1, "op.raised")
    assert str(err) == (
        "stage 'chk' failed on its record #1 (op.raised): byteor_exec_testops:fail_on_x raised "
        "ValueError: no x please: x1; set stage.chk.param.on_error = skip (or route with an "
        "error_lane) to go on"
    )
    assert isinstance(err.report, RunReport)
    assert err.report.node("chk").errors == 1


def test_on_error_skip_counts() -> None:
    report, out = run(_policy_spec(on_error="skip"), RECORDS)
    assert out["out"] == [b"a", b"b", b"c"]
    assert counts(report, "chk") == (5, 3, 2, 2, 0)
    assert report.node("chk").error_codes == {"op.raised": 2}


def test_on_error_route_sends_the_record_unchanged_to_the_error_lane() -> None:
    report, out = run(_policy_spec(on_error="route", error_lane="bad"), RECORDS)
    assert out == {"out": [b"a", b"b", b"c"], "dead": [b"x1", b"x2"]}
    assert counts(report, "chk") == (5, 3, 2, 0, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"on_error": "retry"}, "on_error = 'retry': use fail, skip or route"),
        ({"on_error": "route"}, "on_error = route needs param error_lane"),
        (
            {"on_error": "route", "error_lane": "zzz"},
            "error_lane = 'zzz' is not one of its outputs",
        ),
        ({"error_lane": "done"}, "error_lane is for on_error = route"),
    ],
)
def test_bad_error_policies(params: dict[str, str], message: str) -> None:
    with pytest.raises(StageConfigError, match="stage 'chk'") as info:
        LaneGraphSP(
            graph([lane("raw"), lane("done")], [stage("chk", "identity", "raw", "done", **params)])
        )
    assert message in str(info.value)


# -- single ring, adapters, stop ----------------------------------------------------------------

RING = """\
byteor.spec = 1
pipeline.name = clicks
pipeline.target = single_ring
lane.ring.kind = slots
lane.ring.capacity = 8
lane.ring.slot_bytes = 64
source.gen.adapter = generator
source.gen.out = ring
source.gen.param.count = 20
source.gen.param.template = u{i}
stage.up.op = byteor_exec_testops:upper
stage.up.in = ring
stage.tail.op = byteor_exec_testops:Suffix
stage.tail.in = ring
stage.tail.after = up
sink.a.adapter = memory
sink.a.in = ring
sink.a.after = tail
sink.b.adapter = memory
sink.b.in = ring
sink.b.after = tail
"""


def test_single_ring_runs_as_its_chain() -> None:
    spec = decode_spec(RING)
    a, b = ListSink(), ListSink()
    report = run_sp(spec, sinks={"a": a, "b": b})
    expected = [b"U%d!" % i for i in range(20)] + [b"seen=20"]
    assert a.records == expected and b.records == expected
    assert [n.name for n in report.nodes] == ["gen", "up", "tail", "a", "b"]
    assert report.target == "single_ring" and report.records_in == 20


def test_generator_is_pinned() -> None:
    gen = GeneratorSource(5, seed=7, template='{"i": {i}, "r": {rand}, "k": {key}}', keys=4)
    got = gen.poll(10)
    assert got is not None and len(got) == 5
    assert got[0].startswith(b'{"i": 0, "r": ')
    assert (
        hashlib.sha256(b"\n".join(got)).hexdigest()
        == hashlib.sha256(
            b"\n".join(
                GeneratorSource(5, 7, '{"i": {i}, "r": {rand}, "k": {key}}', 4).poll(5) or []
            )
        ).hexdigest()
    )
    # SplitMix64 from seed 0: the first output is 0xE220A8397B1DCDAF; {rand} is its top 32 bits.
    assert GeneratorSource(1, 0, "{rand}").poll(1) == [str(0xE220A839).encode()]
    assert gen.poll(10) is None


def test_file_source_and_file_sink(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"alpha\nbeta\n\ngamma")  # an empty line, and no final newline
    dst = tmp_path / "out.txt"
    spec = graph(
        [lane("raw"), lane("done")],
        [stage("up", "byteor_exec_testops:upper", "raw", "done")],
        sinks=[SinkSpec("out", "file", ("done",), params={"path": str(dst)})],
        sources=[SourceSpec("f", "file", "raw", params={"path": str(src)})],
    )
    report = run_sp(spec)
    assert dst.read_bytes() == b"ALPHA\nBETA\n\nGAMMA\n"
    assert report.output_sha256 == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert report.records_in == 4


def test_line_source_on_a_pipe_waits_without_blocking_the_loop() -> None:
    r, w = os.pipe()
    with open(r, "rb", buffering=0) as reader:
        source = LineSource(reader)  # type: ignore[arg-type]
        assert source.fileno() == r
        assert source.poll(10) == []
        os.write(w, b"one\ntw")
        assert source.poll(10) == [b"one"]
        os.write(w, b"o\n")
        os.close(w)
        assert source.poll(10) == [b"two"]
        assert source.poll(10) is None


def test_unavailable_adapters_and_unreadable_files(tmp_path: pathlib.Path) -> None:
    spec = graph(
        [lane("raw"), lane("done")],
        [stage("s", "identity", "raw", "done")],
        sources=[SourceSpec("k", "kafka", "raw", params={"topic": "t"})],
    )
    with pytest.raises(AdapterUnavailable, match="adapter 'kafka' cannot be a source"):
        run_sp(spec)
    spec = graph(
        [lane("raw"), lane("done")],
        [stage("s", "identity", "raw", "done")],
        sources=[SourceSpec("f", "file", "raw", params={"path": str(tmp_path / "nope")})],
    )
    with pytest.raises(StageConfigError, match=r"source 'f' \(file\): cannot read .*nope"):
        run_sp(spec)


def test_a_record_too_large_for_its_lane_fails_the_run_by_name() -> None:
    spec = graph([lane("raw", slot=8), lane("done")], [stage("s", "identity", "raw", "done")])
    with pytest.raises(ExecError, match="lane 'raw' is too large"):
        run(spec, [b"x" * 9])


def test_a_stop_request_drains_what_was_admitted() -> None:
    class StopAfter:
        """A source that asks for a stop after its third batch."""

        def __init__(self, token: StopToken) -> None:
            self.token, self.polls = token, 0

        def poll(self, n: int) -> list[bytes] | None:
            self.polls += 1
            if self.polls == 3:
                self.token.request()
            return [b"r"] * n

        def fileno(self) -> None:
            return None

        def close(self) -> None:
            pass

    token = StopToken()
    spec = graph(
        [lane("raw"), lane("b"), lane("done")],
        [stage("bat", "batch", "raw", "b", size="5"), stage("unb", "unbatch", "b", "done")],
    )
    sink = ListSink()
    report = LaneGraphSP(spec, sources={"src": StopAfter(token)}, sinks={"out": sink}, batch=4).run(
        token
    )
    assert report.stopped is True
    assert report.records_in == 12  # three polls of four
    assert sink.records == [b"r"] * 12  # the held partial batch is flushed too
    assert frame([b"r"]) != b"r"
