"""EdgePlane's data plane in one process (``run_inline``) with the in-memory adapter.

Every edge and stage runs in the test's event loop over in-memory lanes, so these tests see
the memory broker the adapters use: exact counts, order, what upstream has committed at
every write, and back-pressure from a stopped sink, without sleeps or processes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Sequence

import pytest

from byteor.adapters import AdapterUnreachable, Backoff, Health, OutRecord, Sink
from byteor.edgeplane._run import run_inline
from byteor.edgeplane._supervisor import DataPlane, PlaneConfig
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec
from byteor.testing._memory import MemoryBroker, MemorySink, MemoryTopic

_brokers = itertools.count()


def lane(name: str, capacity: int = 64) -> LaneSpec:
    return LaneSpec(name, "events", capacity, 64)


def memory_spec(
    broker: str,
    stages: Sequence[StageSpec],
    lanes: Sequence[LaneSpec],
    *,
    sink_in: str,
    name: str = "mem",
) -> PipelineSpecV1:
    return PipelineSpecV1.build(
        name,
        "lane_graph",
        lanes=list(lanes),
        stages=list(stages),
        sources=[SourceSpec("src", "memory", "raw", {"topic": "in", "broker": broker})],
        sinks=[SinkSpec("dst", "memory", (sink_in,), params={"topic": "out", "broker": broker})],
    )


def fill(broker: str, n: int) -> tuple[MemoryTopic, MemoryTopic]:
    b = MemoryBroker.named(broker)
    topic_in = b.topic("in")
    topic_in.append([OutRecord(f"k{i % 7}-{i}".encode()) for i in range(n)])
    return topic_in, b.topic("out")


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``check`` (yielding to the run between looks) until true, or fail naming it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


@pytest.fixture
def broker() -> Iterator[str]:
    name = f"ep-inline-{next(_brokers)}"
    yield name
    MemoryBroker.drop(name)


async def test_every_record_once_in_order_and_committed(broker: str) -> None:
    n = 5000
    topic_in, topic_out = fill(broker, n)
    spec = memory_spec(
        broker,
        [StageSpec("up", "byteor_edgeplane_testops:upper", ("raw",), ("out",))],
        [lane("raw"), lane("out")],
        sink_in="out",
    )
    stop = asyncio.Event()
    run = asyncio.create_task(run_inline(spec, stop=stop, batch=32))
    await until(lambda: topic_in.group("byteor").committed == n, "every record committed")
    stop.set()
    summary = await asyncio.wait_for(run, 10)
    assert [r.payload for r in topic_out.records] == [f"K{i % 7}-{i}".encode() for i in range(n)]
    assert summary["records_in"] == summary["records_out"] == summary["acked"] == n
    assert summary["stages"]["up"]["records_in"] == n
    assert summary["duplicates"] == 0 and summary["stopped"]


class WatchedSink(Sink):
    """A memory sink that checks, at every write, that upstream committed nothing that
    has not been written yet (the pipeline is 1:1, so commits count written records)."""

    def __init__(self, out: MemoryTopic, committed: Callable[[], int]) -> None:
        self.inner = MemorySink(out)
        self.out = out
        self.committed = committed
        self.worst = 0  # the most commits ahead of writes ever seen (must stay 0)

    async def start(self) -> None:
        await self.inner.start()

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        for _ in range(3):  # let the acknowledger run while this write is "in flight"
            self.worst = max(self.worst, self.committed() - len(self.out.records))
            await asyncio.sleep(0)
        await self.inner.write_batch(records)

    async def stop(self) -> None:
        await self.inner.stop()

    def health(self) -> Health:
        return self.inner.health()


@pytest.mark.parametrize(
    "stages",
    [
        pytest.param(
            [StageSpec("up", "byteor_edgeplane_testops:upper", ("raw",), ("out",))], id="map"
        ),
        pytest.param(
            [
                StageSpec("b", "batch", ("raw",), ("framed",), params={"size": "5"}),
                StageSpec("u", "unbatch", ("framed",), ("out",)),
            ],
            id="batch-holds-records",
        ),
    ],
)
async def test_upstream_commits_never_run_ahead_of_the_sink(
    broker: str, stages: list[StageSpec]
) -> None:
    n = 3003  # not a multiple of the batch op's size: finish() emits the rest
    topic_in, topic_out = fill(broker, n)
    lanes = [lane("raw"), lane("out")] + ([lane("framed")] if len(stages) > 1 else [])
    spec = memory_spec(broker, stages, lanes, sink_in="out")
    group = topic_in.group("byteor")
    sink = WatchedSink(topic_out, lambda: group.committed)
    plane = DataPlane(spec, PlaneConfig(run="mem", batch=16), sinks={"dst": sink})
    stop = asyncio.Event()
    run = asyncio.create_task(plane.run_inline(stop))
    # The batch op keeps the last n % 5 records until its input closes (the stop).
    before_stop = n - n % 5 if len(stages) > 1 else n
    worst = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not run.done():
        worst = max(worst, group.committed - len(topic_out.records))
        if len(topic_out.records) >= before_stop:
            stop.set()
        assert loop.time() < deadline, f"{len(topic_out.records)} of {n} written"
        await asyncio.sleep(0)
    await run
    assert max(worst, sink.worst) == 0
    assert group.committed == n  # the final commit on the way out
    out = [r.payload for r in topic_out.records]
    want = [f"k{i % 7}-{i}".encode() for i in range(n)]
    assert out == ([w.upper() for w in want] if len(stages) == 1 else want)


async def test_drops_splits_and_routed_errors_are_all_acknowledged(broker: str) -> None:
    n = 2000
    topic_in, _ = fill(broker, n)
    b = MemoryBroker.named(broker)
    spec = PipelineSpecV1.build(
        "mixed",
        "lane_graph",
        lanes=[lane("raw"), lane("odd"), lane("two"), lane("bad")],
        stages=[
            StageSpec("odd", "byteor_edgeplane_testops:odd_only", ("raw",), ("odd",)),
            StageSpec(
                "split",
                "byteor_edgeplane_testops:twice",
                ("odd",),
                ("two", "bad"),
                params={"on_error": "route", "error_lane": "bad"},
            ),
        ],
        sources=[SourceSpec("src", "memory", "raw", {"topic": "in", "broker": broker})],
        sinks=[
            SinkSpec("good", "memory", ("two",), params={"topic": "good", "broker": broker}),
            SinkSpec("errs", "memory", ("bad",), params={"topic": "errs", "broker": broker}),
        ],
    )
    stop = asyncio.Event()
    run = asyncio.create_task(run_inline(spec, stop=stop, batch=50))
    await until(lambda: topic_in.group("byteor").committed == n, "every record committed")
    stop.set()
    summary = await asyncio.wait_for(run, 10)
    odd = [f"k{i % 7}-{i}".encode() for i in range(n) if i % 2]
    assert [r.payload for r in b.topic("good").records] == [
        x for o in odd for x in (o + b"/a", o + b"/b")
    ]
    assert b.topic("errs").records == []
    assert summary["sinks"]["good"]["records_out"] == 2 * len(odd)
    assert summary["stages"]["odd"]["records_out"] == len(odd)


class GatedSink(Sink):
    """A sink that is stopped until ``gate`` is set: its first write waits there."""

    def __init__(self, out: MemoryTopic) -> None:
        self.inner = MemorySink(out)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def start(self) -> None:
        await self.inner.start()

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        self.waiting.set()
        await self.gate.wait()
        await self.inner.write_batch(records)

    async def stop(self) -> None:
        await self.inner.stop()

    def health(self) -> Health:
        return self.inner.health()


async def test_a_stopped_sink_fills_the_lanes_and_pauses_the_source(broker: str) -> None:
    n, capacity, batch = 20_000, 64, 16
    topic_in, topic_out = fill(broker, n)
    spec = memory_spec(
        broker,
        [StageSpec("up", "byteor_edgeplane_testops:upper", ("raw",), ("out",))],
        [lane("raw", capacity), lane("out", capacity)],
        sink_in="out",
    )
    sink = GatedSink(topic_out)
    plane = DataPlane(spec, PlaneConfig(run="bp", batch=batch), sinks={"dst": sink})
    stop = asyncio.Event()
    run = asyncio.create_task(plane.run_inline(stop))

    def source_paused() -> bool:
        return any(s.paused for s in plane.edge_states() if s.kind == "source")

    def lanes_full() -> bool:
        stats = plane.lane_statistics()
        return bool(stats) and all(st.used == st.capacity for st in stats.values())

    await asyncio.wait_for(sink.waiting.wait(), 10)
    await until(lambda: source_paused() and lanes_full(), "a paused source and full lanes")
    group = topic_in.group("byteor")
    handed_out = group.next_index
    # Memory is bounded: both lanes full, one batch in the sink's hands, one held by the
    # stage and one by the source; nothing acknowledged (nothing was written).
    assert handed_out <= 2 * capacity + 3 * batch
    assert group.committed == 0 and topic_out.records == []
    source = next(s for s in plane.edge_states() if s.kind == "source")
    assert source.records == handed_out and source.pauses >= 1

    sink.gate.set()
    await until(lambda: group.committed == n, "everything written and committed", 30)
    stop.set()
    await asyncio.wait_for(run, 10)
    assert [r.payload for r in topic_out.records] == [f"K{i % 7}-{i}".encode() for i in range(n)]
    assert plane.summary()["sources"]["src"]["pauses"] >= 1


async def test_a_sink_that_fails_retriably_is_retried_until_it_writes(broker: str) -> None:
    n = 300
    topic_in, topic_out = fill(broker, n)

    class Flaky(Sink):
        def __init__(self) -> None:
            self.inner = MemorySink(topic_out)
            self.failures = 3

        async def start(self) -> None:
            await self.inner.start()

        async def write_batch(self, records: Sequence[OutRecord]) -> None:
            if self.failures:
                self.failures -= 1
                raise AdapterUnreachable("flaky", "127.0.0.1:1", "down for a moment")
            await self.inner.write_batch(records)

        async def stop(self) -> None:
            await self.inner.stop()

        def health(self) -> Health:
            return self.inner.health()

    spec = memory_spec(
        broker,
        [StageSpec("up", "identity", ("raw",), ("out",))],
        [lane("raw"), lane("out")],
        sink_in="out",
    )
    flaky = Flaky()
    quick = Backoff(initial_s=0.001, max_s=0.001, jitter=0.0)
    plane = DataPlane(spec, PlaneConfig(run="flaky", sink_retry=quick), sinks={"dst": flaky})
    stop = asyncio.Event()
    run = asyncio.create_task(plane.run_inline(stop))
    await until(lambda: topic_in.group("byteor").committed == n, "every record committed")
    stop.set()
    await asyncio.wait_for(run, 10)
    assert [r.payload for r in topic_out.records] == [f"k{i % 7}-{i}".encode() for i in range(n)]
    assert plane.summary()["sinks"]["dst"]["failed_writes"] == 3


async def test_a_fanout_lane_waits_for_its_slowest_sink_and_sources_ack_separately(
    broker: str,
) -> None:
    n = 500
    b = MemoryBroker.named(broker)
    in1, in2 = b.topic("in1"), b.topic("in2")
    in1.append([OutRecord(b"a-%d" % i) for i in range(n)])
    in2.append([OutRecord(b"b-%d" % i) for i in range(n)])
    spec = PipelineSpecV1.build(
        "fan",
        "lane_graph",
        lanes=[LaneSpec("raw1", "fanout", 64, 64), lane("raw2")],
        sources=[
            SourceSpec("one", "memory", "raw1", {"topic": "in1", "broker": broker}),
            SourceSpec("two", "memory", "raw2", {"topic": "in2", "broker": broker}),
        ],
        sinks=[
            SinkSpec("fast", "memory", ("raw1",), params={"topic": "fast", "broker": broker}),
            SinkSpec("slow", "memory", ("raw1",), params={"topic": "slow", "broker": broker}),
            SinkSpec("other", "memory", ("raw2",), params={"topic": "other", "broker": broker}),
        ],
    )
    slow = GatedSink(b.topic("slow"))
    plane = DataPlane(spec, PlaneConfig(run="fan", batch=16), sinks={"slow": slow})
    stop = asyncio.Event()
    run = asyncio.create_task(plane.run_inline(stop))
    await asyncio.wait_for(slow.waiting.wait(), 10)
    # The second source is on its own path: all of it is committed while the first waits.
    await until(lambda: in2.group("byteor").committed == n, "the other source committed")
    await until(lambda: len(b.topic("fast").records) >= 64, "the fast sink writing")
    assert in1.group("byteor").committed == 0  # the slow sink confirmed nothing
    slow.gate.set()
    await until(lambda: in1.group("byteor").committed == n, "the first source committed")
    stop.set()
    await asyncio.wait_for(run, 10)
    want = [b"a-%d" % i for i in range(n)]
    assert [r.payload for r in b.topic("fast").records] == want
    assert [r.payload for r in b.topic("slow").records] == want
    assert [r.payload for r in b.topic("other").records] == [b"b-%d" % i for i in range(n)]
