"""EdgePlane's latency histograms: the block arithmetic, the admission ring, the layout's
validation, and the histograms a run fills (in one process and across processes)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from byteor_edgeplane_testkit import edgeplane, fresh_run
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from byteor.adapters import OutRecord
from byteor.edgeplane._observe import RunCollector
from byteor.edgeplane._run import _adapter_statuses
from byteor.edgeplane._status import (
    LATENCY_BOUNDS_NS,
    HistogramCounts,
    StatusSegment,
    stale_status,
    status_path,
)
from byteor.edgeplane._supervisor import DataPlane, PlaneConfig, Topology
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec
from byteor.testing._memory import MemoryBroker

MS = 1_000_000
_brokers = itertools.count()


@pytest.fixture
def seg() -> Iterator[StatusSegment]:
    s = StatusSegment.create("latency", 4, memory=True, ring_slots=8)
    yield s
    s.close()


def bucket(ns: int) -> int:
    """The bucket a value belongs to, by the bounds' definition (le: at or below)."""
    return next((i for i, b in enumerate(LATENCY_BOUNDS_NS) if ns <= b), len(LATENCY_BOUNDS_NS))


# -- the histogram ----------------------------------------------------------------------------


def test_a_value_goes_to_the_first_bucket_whose_bound_it_does_not_exceed(
    seg: StatusSegment,
) -> None:
    h = seg.latency[0].adapter
    values = [0, 1, LATENCY_BOUNDS_NS[0], LATENCY_BOUNDS_NS[0] + 1, 3 * MS, 60_000 * MS + 1]
    for v in values:
        h.observe(v)
    h.observe(-5)  # a clock step never makes a negative latency: it counts as 0
    got = h.read()
    want = [0] * (len(LATENCY_BOUNDS_NS) + 1)
    for v in [*values, 0]:
        want[bucket(v)] += 1
    assert list(got.buckets) == want
    assert want[0] == 4 and want[1] == 1 and want[-1] == 1
    assert got.count == 7 and got.sum_ns == sum(values) and got.beyond == 0


def test_weights_count_records_and_the_sum_is_weighted(seg: StatusSegment) -> None:
    h = seg.latency[1].end_to_end
    h.observe(2 * MS, 100)
    h.observe(40 * MS, 3)
    h.beyond(7)
    got = h.read()
    assert got.count == 103 and got.beyond == 7
    assert got.sum_ns == 2 * MS * 100 + 40 * MS * 3
    assert got.buckets[bucket(2 * MS)] == 100 and got.buckets[bucket(40 * MS)] == 3
    assert seg.latency[1].adapter.read() == HistogramCounts()  # the other histogram: untouched
    assert seg.latency[0].end_to_end.read() == HistogramCounts()  # the other node's: untouched


def test_a_read_and_a_write_timed_by_an_injected_clock(seg: StatusSegment) -> None:
    source, sink = seg.latency[0], seg.latency[2]
    source.read(0, called_ns=1_000, got_ns=301_000)  # a 0.3 ms read; records 0.. admitted
    source.read(64, called_ns=5 * MS, got_ns=6 * MS)
    sink.written(source.ring, 10, 32, called_ns=7 * MS, done_ns=7 * MS + 40_000)
    sink.written(source.ring, 70, 5, called_ns=9 * MS, done_ns=10 * MS)
    reads = source.adapter.read()
    assert reads.count == 2 and reads.sum_ns == 300_000 + MS
    writes = sink.adapter.read()
    assert writes.count == 2 and writes.sum_ns == 40_000 + MS
    e2e = sink.end_to_end.read()
    first, second = 7 * MS + 40_000 - 301_000, 10 * MS - 6 * MS
    assert e2e.count == 37 and e2e.sum_ns == 32 * first + 5 * second
    assert e2e.buckets[bucket(first)] == 32 and e2e.buckets[bucket(second)] == 5


def test_quantiles_are_estimated_within_buckets() -> None:
    counts = [0] * (len(LATENCY_BOUNDS_NS) + 1)
    i = LATENCY_BOUNDS_NS.index(2_500_000)  # the bucket (1 ms, 2.5 ms]
    counts[i] = 100
    h = HistogramCounts(tuple(counts), sum_ns=100 * 2 * MS)
    assert h.quantile(0.5) == pytest.approx(0.00175)  # halfway through the bucket
    assert h.quantile(0.99) == pytest.approx(0.001 + 0.0015 * 0.99)
    counts[-1] = 900  # above the highest bound: the highest bound is all one can say
    assert HistogramCounts(tuple(counts)).quantile(0.99) == LATENCY_BOUNDS_NS[-1] / 1e9
    assert HistogramCounts().quantile(0.5) is None
    assert HistogramCounts().summary() == {"count": 0, "p50_s": None, "p99_s": None, "mean_s": None}
    assert h.summary() == {"count": 100, "p50_s": 0.00175, "p99_s": 0.002485, "mean_s": 0.002}


# -- the admission ring -----------------------------------------------------------------------


def test_the_ring_finds_the_batch_holding_a_sequence(seg: StatusSegment) -> None:
    ring = seg.latency[0].ring
    assert ring.admitted_at(0) is None  # nothing admitted yet
    for k in range(5):  # batches of 10 records: sequences 10k..10k+9 admitted at 1000 + k
        ring.admit(10 * k, 1000 + k)
    assert [ring.admitted_at(s) for s in (0, 9, 10, 19, 35, 40, 49)] == [
        1000,
        1000,
        1001,
        1001,
        1003,
        1004,
        1004,
    ]


def test_entries_the_writer_overwrote_or_may_be_overwriting_are_beyond_the_ring(
    seg: StatusSegment,
) -> None:
    ring = seg.latency[0].ring  # 8 slots
    for k in range(20):
        ring.admit(10 * k, 1000 + k)
    # head 20: entries 13..19 are whole; entry 12 shares its slot with entry 20, which the
    # writer may be storing; 0..11 were overwritten.
    assert ring.admitted_at(130) == 1013 and ring.admitted_at(199) == 1019
    assert [ring.admitted_at(s) for s in (0, 59, 120, 129)] == [None] * 4
    sink = seg.latency[1]
    sink.written(ring, 125, 4, called_ns=0, done_ns=5000)
    sink.written(ring, 131, 6, called_ns=0, done_ns=5000)
    e2e = sink.end_to_end.read()
    assert e2e.beyond == 4 and e2e.count == 6 and e2e.sum_ns == 6 * (5000 - 1013)


def test_a_new_generation_empties_the_rings_and_keeps_the_histograms(seg: StatusSegment) -> None:
    ring = seg.latency[0].ring
    ring.admit(0, 1000)
    seg.latency[1].written(ring, 0, 3, called_ns=0, done_ns=2000)
    seg.new_generation()
    assert ring.admitted_at(0) is None  # sequences start again at 0: old entries must go
    assert seg.latency[1].end_to_end.read().count == 3


def test_each_sink_looks_up_the_ring_of_its_own_source(seg: StatusSegment) -> None:
    a, b = seg.latency[0].ring, seg.latency[1].ring  # two sources, the same sequences
    a.admit(0, 1 * MS)
    b.admit(0, 3 * MS)
    seg.latency[2].written(a, 5, 10, called_ns=0, done_ns=4 * MS)
    seg.latency[3].written(b, 5, 10, called_ns=0, done_ns=4 * MS)
    assert seg.latency[2].end_to_end.read().sum_ns == 10 * 3 * MS
    assert seg.latency[3].end_to_end.read().sum_ns == 10 * 1 * MS


def test_each_sink_is_wired_to_the_source_its_lane_comes_from() -> None:
    spec = PipelineSpecV1.build(
        "two",
        "lane_graph",
        lanes=[LaneSpec(x, "events", 64, 64) for x in ("a", "a2", "b", "err")],
        stages=[
            StageSpec(
                "m",
                "byteor_edgeplane_testops:upper",
                ("a",),
                ("a2", "err"),
                params={"on_error": "route", "error_lane": "err"},
            )
        ],
        sources=[
            SourceSpec("sa", "generator", "a", {"count": "1"}),
            SourceSpec("sb", "generator", "b", {"count": "1"}),
        ],
        sinks=[
            SinkSpec("ka", "stdout", ("a2",)),
            SinkSpec("kb", "stdout", ("b",)),
            SinkSpec("kerr", "stdout", ("err",)),
        ],
    )
    topo = Topology(spec)
    assert {n.name: topo.source_of(n).name for n in topo.sinks} == {
        "ka": "sa",
        "kb": "sb",
        "kerr": "sa",
    }


# -- the layout is validated ------------------------------------------------------------------


def test_attach_refuses_segments_of_another_layout(tmp_path: Path) -> None:
    s = StatusSegment.create("v", 2, directory=str(tmp_path), ring_slots=16)
    s.close()
    path = status_path("v", str(tmp_path))
    good = Path(path).read_bytes()
    again = StatusSegment.attach("v", directory=str(tmp_path))
    assert len(again.latency) == 2 and again.latency[1].ring.slots == 16
    again.close()

    def corrupt(at: int, raw: bytes) -> None:
        Path(path).write_bytes(good[:at] + raw + good[at + len(raw) :])

    cases = [
        (0, b"EPSTAT01"),  # the layout before latency blocks
        (48, struct.pack("<I", 12)),  # ring slots not a power of two
        (48, struct.pack("<I", 0)),
        (48, struct.pack("<I", 32)),  # a ring larger than the file holds
        (52, struct.pack("<I", len(LATENCY_BOUNDS_NS))),  # other buckets
        (8, struct.pack("<I", 3)),  # more rows than the file holds
    ]
    for at, raw in cases:
        corrupt(at, raw)
        with pytest.raises(ValueError, match=r"status segment|geometry"):
            StatusSegment.attach("v", directory=str(tmp_path))
        assert stale_status("v", str(tmp_path)) is True  # not ours to read: removable
    Path(path).write_bytes(good[:-8])  # truncated
    with pytest.raises(ValueError, match="geometry"):
        StatusSegment.attach("v", directory=str(tmp_path))
    with pytest.raises(ValueError, match="power of two"):
        StatusSegment.create("w", 1, memory=True, ring_slots=3)


# -- runs ---------------------------------------------------------------------------------------


def scrape(collector: RunCollector) -> dict[str, object]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_an_inline_run_times_every_record_it_writes(tmp_path: Path) -> None:
    n = 3000
    broker = f"ep-latency-{next(_brokers)}"
    topic = MemoryBroker.named(broker).topic("in")
    topic.append([OutRecord(f"r{i}".encode()) for i in range(n)])
    out = tmp_path / "out.ndjson"
    spec = PipelineSpecV1.build(
        "lat",
        "lane_graph",
        lanes=[LaneSpec("raw", "events", 64, 64), LaneSpec("up", "events", 64, 64)],
        stages=[StageSpec("u", "byteor_edgeplane_testops:upper", ("raw",), ("up",))],
        sources=[SourceSpec("src", "memory", "raw", {"topic": "in", "broker": broker})],
        sinks=[SinkSpec("dst", "file", ("up",), params={"path": str(out)})],
    )
    plane = DataPlane(spec, PlaneConfig(run=f"lat{os.getpid()}", batch=32))
    stop = asyncio.Event()
    run = asyncio.create_task(plane.run_inline(stop))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while topic.group("byteor").committed < n:
            assert asyncio.get_running_loop().time() < deadline, "records not committed"
            await asyncio.sleep(0.001)
        families = scrape(RunCollector(plane.run_name, lanes=[], adapters=_adapter_statuses(plane)))
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
        MemoryBroker.drop(broker)
    e2e = families["byteor_end_to_end_latency_seconds"]
    assert e2e.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s for s in e2e.samples}
    assert samples[("byteor_end_to_end_latency_seconds_count", None)].value == n
    assert samples[("byteor_end_to_end_latency_seconds_count", None)].labels == {
        "run": plane.run_name,
        "sink": "dst",
        "source": "src",
        "adapter": "file",
    }
    cumulative = [s.value for s in e2e.samples if s.name.endswith("_bucket")]
    assert len(cumulative) == len(LATENCY_BOUNDS_NS) + 1 and cumulative[-1] == n
    assert cumulative == sorted(cumulative)
    assert samples[("byteor_end_to_end_latency_seconds_sum", None)].value > 0
    writes = families["byteor_adapter_latency_seconds"]
    kinds = {s.labels["kind"] for s in writes.samples if s.name.endswith("_count")}
    assert kinds == {"source", "sink"}
    beyond = families["byteor_end_to_end_beyond_ring"]
    assert [s.value for s in beyond.samples if s.name.endswith("_total")] == [0]

    summary = plane.summary()
    sink = summary["sinks"]["dst"]
    assert sink["records_out"] == n == sink["end_to_end"]["count"]
    # One timing per read and per write, each of at most a batch (32): a read's records may
    # reach the sink split across writes, so the two counts need not be equal.
    reads, writes_n = (
        summary["sources"]["src"]["read_latency"]["count"],
        sink["write_latency"]["count"],
    )
    assert reads >= -(-n // 32) and writes_n >= -(-n // 32)
    assert 0 < summary["end_to_end_p50_s"] <= summary["end_to_end_p99_s"] < 10
    assert out.read_bytes().count(b"\n") == n


@pytest.fixture
def run_name() -> Iterator[str]:
    yield from fresh_run("eplat")


def test_a_multiprocess_run_reports_end_to_end_percentiles(tmp_path: Path, run_name: str) -> None:
    out = tmp_path / "out.ndjson"
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        f"""name = "lat"
[sources.gen]
adapter = "generator"
params = {{ count = "20000", seed = "1" }}
[stages.up]
op = "byteor_edgeplane_testops:upper"
inputs = ["gen"]
[sinks.out]
adapter = "file"
inputs = ["up"]
params = {{ path = "{out}" }}
"""
    )
    proc = edgeplane("run", str(pipeline), "--json", "--metrics-addr", "off", "--name", run_name)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    doc = json.loads(stdout)
    e2e = doc["sinks"]["out"]["end_to_end"]
    assert e2e["count"] == doc["records_out"] == 20000 and "beyond_ring" not in e2e
    assert 0 < e2e["p50_s"] <= e2e["p99_s"] == doc["end_to_end_p99_s"]
    assert doc["sinks"]["out"]["write_latency"]["count"] > 0
