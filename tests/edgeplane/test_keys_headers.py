"""Keys and headers travelling with records through EdgePlane: stamped stages pass each
input's key and headers to its outputs (``key_by`` sets the key, holding ops take the first
held record's), the edge-out stops on a corrupt frame naming its lane, and end to end with
the in-memory adapter (one event loop) and with Kafka (``edgeplane run``, real processes).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from byteor_edgeplane_testkit import (
    cleanup_run,
    edgeplane,
    memory_status,
    one_stage_spec,
    op,
    unique,
)

from byteor import lanes
from byteor.adapters import Headers, OutRecord
from byteor.edgeplane._edge import EdgeFailed, EdgeOut
from byteor.edgeplane._frame import FrameError, frame, out_record, stamp_of
from byteor.edgeplane._run import run_inline
from byteor.edgeplane._stages import StampedStage
from byteor.edgeplane._status import StatusSegment
from byteor.kernel import BatchResult
from byteor.lanes.router import route_of
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec
from byteor.testing._memory import MemoryBroker, MemorySink

_ids = itertools.count()

A: tuple[bytes | None, Headers] = (b"a", (("trace", b"t-a"), ("hop", b"")))
B: tuple[bytes | None, Headers] = (b"", (("ünï", b"\x00\xff"),))  # an empty key is a key
C: tuple[bytes | None, Headers] = (None, (("only", b"headers"),))
D: tuple[bytes | None, Headers] = (b"only-key", ())
NONE: tuple[bytes | None, Headers] = (None, ())


def key_fn(record: bytes) -> str:
    """A ``key_by`` fn: the record's text up to its first '-'."""
    return record.split(b"-", 1)[0].decode()


@pytest.fixture
def status() -> StatusSegment:
    return memory_status("keys")


def stage(status: StatusSegment, name: str, outputs: int = 1, **params: str) -> StampedStage:
    return StampedStage(op(name, outputs, **params), status.rows[0])


def framed(stamp: int, payload: bytes, tag: tuple[bytes | None, Headers] = NONE) -> bytes:
    return frame(stamp, payload, *tag)


def read(port: Sequence[bytes]) -> list[tuple[int, OutRecord]]:
    return [(stamp_of(r), out_record(r)) for r in port]


def rec(payload: bytes, tag: tuple[bytes | None, Headers]) -> OutRecord:
    return OutRecord(payload, *tag)


# -- stamped stages -----------------------------------------------------------------------------


def test_a_map_gives_each_output_its_inputs_key_and_headers(status: StatusSegment) -> None:
    tags = [A, A, NONE, B, A, C, D, D]
    inputs = [framed(10 + i, b"r-%d" % i, t) for i, t in enumerate(tags)]
    result = stage(status, "byteor_edgeplane_testops:upper").step_batch(inputs)
    assert read(result.ports[0]) == [(10, rec(b"R-%d" % i, t)) for i, t in enumerate(tags)]
    assert not result.failures


def test_an_untagged_batch_comes_out_as_stamp_and_payload(status: StatusSegment) -> None:
    result = stage(status, "byteor_edgeplane_testops:upper").step_batch(
        [framed(4, b"x-1"), framed(5, b"y-2")]
    )
    assert result.ports[0] == [frame(4, b"X-1"), frame(4, b"Y-2")]
    assert result.ports[0][0] == (4).to_bytes(8, "little") + b"X-1"


def test_a_filter_keeps_the_key_and_headers_of_what_it_keeps(status: StatusSegment) -> None:
    tags = [A, B, B, NONE, C, D]
    inputs = [framed(7 + i, b"r-%d" % i, t) for i, t in enumerate(tags)]
    result = stage(status, "byteor_edgeplane_testops:odd_only").step_batch(inputs)
    assert read(result.ports[0]) == [(7, rec(b"r-%d" % i, tags[i])) for i in (1, 3, 5)]


def test_a_splitter_gives_every_output_of_an_input_its_key_and_headers(
    status: StatusSegment,
) -> None:
    tags = [NONE, A, A, B, NONE]
    inputs = [framed(3 + i, b"r-%d" % i, t) for i, t in enumerate(tags)]
    result = stage(status, "byteor_edgeplane_testops:twice").step_batch(inputs)
    want = [(3, rec(b"r-%d/%s" % (i, s), t)) for i, t in enumerate(tags) for s in (b"a", b"b")]
    assert read(result.ports[0]) == want


def test_failures_point_at_their_own_frame_across_runs_of_tags(status: StatusSegment) -> None:
    """The node routes ``records[index]`` to the error lane: the indices must be the batch's,
    not the run's, so the routed record keeps its own stamp, key and headers."""
    tags = [A, A, B, NONE, NONE, C]
    payloads = [b"x-1", b"x-7", b"y-7", b"z-2", b"z-17", b"w-3"]
    inputs = [framed(20 + i, p, t) for i, (p, t) in enumerate(zip(payloads, tags, strict=True))]
    result = stage(status, "byteor_edgeplane_testops:reject_sevens").step_batch(inputs)
    assert [f.index for f in result.failures] == [1, 2, 4]
    assert [f.error.code for f in result.failures] == ["test.seven"] * 3
    routed = [inputs[f.index] for f in result.failures]
    assert read(routed) == [(21, rec(b"x-7", A)), (22, rec(b"y-7", B)), (24, rec(b"z-17", NONE))]
    assert read(result.ports[0]) == [
        (20, rec(p, tags[i])) for i, p in enumerate(payloads) if i in (0, 3, 5)
    ]


def test_key_by_a_field_sets_the_key_it_routed_by_and_keeps_the_headers(
    status: StatusSegment,
) -> None:
    values: list[Any] = ["alice", "", 42, -7, 1.5, [1, "x"], {"b": 1, "a": 2}, True, None, 2**64]
    keys = [b"alice", b"", b"42", b"-7", b"1.5", b'[1,"x"]', b'{"a":2,"b":1}', b"true", b"null"]
    keys.append(b"18446744073709551616")
    routed: list[Any] = ["alice", "", 42, -7, *keys[4:]]  # what route_of hashes
    tags = [A, B, C, D, NONE, A, B, C, D, NONE]
    payloads = [json.dumps({"user": v}).encode() for v in values]
    inputs = [framed(50 + i, p, t) for i, (p, t) in enumerate(zip(payloads, tags, strict=True))]
    inputs.insert(3, framed(99, b'{"other": 1}', A))  # no field: fails, keeps its frame
    result = stage(status, "key_by", 3, field="user").step_batch(inputs)
    assert [f.index for f in result.failures] == [3]
    assert result.failures[0].error.code == "key_by.no_field"
    got = {
        (stamp, r.payload): (port, r) for port in range(3) for stamp, r in read(result.ports[port])
    }
    assert len(got) == len(values)
    for p, t, k, r in zip(payloads, tags, keys, routed, strict=True):
        assert got[(50, p)] == (route_of(r, 3), OutRecord(p, k, t[1]))


def test_key_by_a_fn_sets_its_key_and_key_by_the_whole_record_leaves_it(
    status: StatusSegment,
) -> None:
    tags = [A, NONE, C, D]
    payloads = [b"eu-1", b"us-2", b"eu-3", b"ap-4"]
    inputs = [framed(i, p, t) for i, (p, t) in enumerate(zip(payloads, tags, strict=True))]
    result = stage(status, "key_by", 2, fn="test_keys_headers:key_fn").step_batch(inputs)
    for port in range(2):
        want = [
            (0, OutRecord(p, p[:2], t[1]))
            for p, t in zip(payloads, tags, strict=True)
            if route_of(key_fn(p), 2) == port
        ]
        assert read(result.ports[port]) == want
    assert sum(len(port) for port in result.ports) == len(payloads)

    result = stage(status, "key_by", 2).step_batch(inputs)
    for port in range(2):
        want = [
            (0, rec(p, t)) for p, t in zip(payloads, tags, strict=True) if route_of(p, 2) == port
        ]
        assert read(result.ports[port]) == want


def test_batch_takes_the_key_and_headers_of_the_first_record_it_held(
    status: StatusSegment,
) -> None:
    s = stage(status, "batch", size="2")
    assert s.holds
    r = [framed(i, b"r%d" % i, t) for i, t in enumerate([A, B, C, NONE, D])]
    out = s.step_batch(r[:3])  # (r0, r1) out, r2 held: A's
    assert [(st, o.key, o.headers) for st, o in read(out.ports[0])] == [(0, *A)]
    out = s.step_batch(r[3:4])  # (r2, r3): C's, r2 came in the batch before
    assert [(st, o.key, o.headers) for st, o in read(out.ports[0])] == [(0, *C)]
    assert s.step_batch(r[4:]).count == 0  # r4 held
    emit = s.finish()
    assert [(o.key, o.headers) for _, o in read(emit.ports[0])] == [D]


def test_a_held_record_that_fails_does_not_lend_its_key(status: StatusSegment) -> None:
    """``batch`` of JSON records through an op class that holds and rejects bad records:
    the key of what it emits is the first record it *kept*."""
    s = StampedStage(_HoldTwoRejectBad(), status.rows[1])
    assert s.holds
    out = s.step_batch([framed(0, b"bad", A), framed(1, b"ok1", B), framed(2, b"ok2", C)])
    assert [f.index for f in out.failures] == [0]
    assert [(o.payload, o.key, o.headers) for _, o in read(out.ports[0])] == [(b"ok1+ok2", *B)]


class _HoldTwoRejectBad:
    """Holds two good records, emits them joined; ``bad`` fails."""

    holds_records = True

    def __init__(self) -> None:
        self.held: list[bytes] = []

    @property
    def outputs(self) -> int:
        return 1

    def step(self, record: bytes) -> Any:
        from byteor.kernel import Emit, StageError

        if record == b"bad":
            return StageError("test.bad", "bad")
        self.held.append(record)
        if len(self.held) < 2:
            return Emit.nothing(1)
        out, self.held = b"+".join(self.held), []
        return Emit.to_all(1, out)

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        raise AssertionError("a holding op is stepped record by record")

    def finish(self) -> Any:
        from byteor.kernel import Emit

        return Emit.nothing(1)


# -- the edge-out -------------------------------------------------------------------------------


async def test_the_edge_out_stops_on_a_corrupt_frame_naming_its_lane_and_writes_nothing(
    status: StatusSegment,
) -> None:
    lane = lanes.create(f"keys{next(_ids)}.out", "events", 16, 128, backing="memory")
    try:
        good = framed(5, b"fine", A)
        bad = bytearray(framed(6, b"broken", B))
        bad[8:12] = (200).to_bytes(4, "little")  # metadata "longer" than the frame
        tx = lane.sender()
        tx.send_batch_nowait([good, bytes(bad)])
        tx.close()
        topic = MemoryBroker.named(f"keys-edge-{next(_ids)}").topic("out")
        edge = EdgeOut(
            "dst",
            "memory",
            MemorySink(topic),
            lane.receiver(explicit=True),
            status.rows[2],
            lane="enriched",
        )
        with pytest.raises(EdgeFailed) as caught:
            await asyncio.wait_for(edge.run(), 10)
        message = str(caught.value)
        assert message.startswith("sink 'dst' (memory) read a corrupt frame from lane 'enriched'")
        assert "record 2 of a batch of 2, stamp 6" in message
        assert "metadata of 200 bytes announced, only" in message
        assert not caught.value.retriable
        assert topic.records == [] and edge.confirmed == 0  # nothing of the batch written
        with pytest.raises(FrameError):  # what the edge-out turned into EdgeFailed
            out_record(bytes(bad))
    finally:
        lane.close()


# -- end to end, one event loop -----------------------------------------------------------------


def _tags(i: int) -> tuple[bytes | None, Headers]:
    """Record ``i``'s key and headers: some with both, some with one, some with neither."""
    kind = i % 5
    if kind == 0:
        return NONE
    if kind == 1:
        return b"k%d" % (i % 7), (("seq", b"%d" % i), ("trace-ü", b"t" * (i % 3)))
    if kind == 2:
        return b"", ()
    if kind == 3:
        return None, (("seq", b"%d" % i),)
    return b"k%d" % (i % 7), ()


async def test_inline_keys_and_headers_reach_the_sinks_through_a_map_and_an_error_lane() -> None:
    n = 3000
    name = f"keys-inline-{next(_ids)}"
    broker = MemoryBroker.named(name)
    try:
        sent = [OutRecord(b"r-%d" % i, *_tags(i)) for i in range(n)]
        topic_in = broker.topic("in")
        topic_in.append(sent)
        spec = PipelineSpecV1.build(
            "keys",
            "lane_graph",
            lanes=[LaneSpec(x, "events", 64, 128) for x in ("raw", "mid", "out", "bad")],
            stages=[
                StageSpec("up", "byteor_edgeplane_testops:upper", ("raw",), ("mid",)),
                StageSpec(
                    "sevens",
                    "byteor_edgeplane_testops:reject_sevens",
                    ("mid",),
                    ("out", "bad"),
                    params={"on_error": "route", "error_lane": "bad"},
                ),
            ],
            sources=[SourceSpec("src", "memory", "raw", {"topic": "in", "broker": name})],
            sinks=[
                SinkSpec("dst", "memory", ("out",), params={"topic": "out", "broker": name}),
                SinkSpec("errs", "memory", ("bad",), params={"topic": "errs", "broker": name}),
            ],
        )
        stop = asyncio.Event()
        run = asyncio.create_task(run_inline(spec, stop=stop, batch=32))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while topic_in.group("byteor").committed < n:
            assert loop.time() < deadline and not run.done(), "every record committed"
            await asyncio.sleep(0.001)
        stop.set()
        summary = await asyncio.wait_for(run, 10)
        assert summary["duplicates"] == 0
        upper = [OutRecord(r.payload.upper(), r.key, r.headers) for r in sent]
        assert broker.topic("out").records == [r for r in upper if not r.payload.endswith(b"7")]
        assert broker.topic("errs").records == [r for r in upper if r.payload.endswith(b"7")]
        # and the records with neither key nor headers came out with neither
        plain = [r for r in broker.topic("out").records if r.key is None and not r.headers]
        assert len(plain) == n // 5  # every fifth (none of them ends in 7)
    finally:
        MemoryBroker.drop(name)


# -- end to end, real processes: Kafka -> stage -> Kafka ----------------------------------------

KAFKA = "127.0.0.1:9092"
PARTITIONS = 3


def _kafka_record(i: int) -> OutRecord:
    """Nine in ten records keyed (17 keys) with headers, one in ten with neither."""
    if i % 10 == 0:
        return OutRecord(b"none-%d" % i)
    headers = (("seq", b"%d" % i), ("src", "ü-%d".encode() % (i % 3)), ("empty", b""))
    return OutRecord(b"k%d-%d" % (i % 17, i), b"k%d" % (i % 17), headers)


def _kafka_spec(path: Path, run: str, topic_in: str, topic_out: str, group: str) -> Path:
    source = {
        "bootstrap_servers": KAFKA,
        "topic": topic_in,
        "group": group,
        "session_timeout_ms": 1000,
        "heartbeat_interval_ms": 200,
        "fetch_max_wait_ms": 100,
    }
    sink = {"bootstrap_servers": KAFKA, "topic": topic_out}
    return one_stage_spec(path, run, ("kafka", source), ("kafka", sink), slot_bytes=(256, 256))


async def _until(check: Any, what: str, proc: subprocess.Popen[str], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if proc.poll() is not None:
            raise AssertionError(f"edgeplane exited ({proc.returncode}) before {what}")
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.multiprocess
@pytest.mark.timeout(150)
async def test_kafka_to_kafka_in_processes_keeps_every_key_and_header_in_per_key_order(
    tmp_path: Path,
) -> None:
    from aiokafka import (  # type: ignore[import-untyped]
        AIOKafkaConsumer,
        AIOKafkaProducer,
        TopicPartition,
    )
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

    n = 3000
    run = unique("epkeys")
    tag = uuid.uuid4().hex[:10]
    topic_in, topic_out, group = f"keys-in-{tag}", f"keys-out-{tag}", f"keys-{tag}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (topic_in, topic_out)])
    finally:
        await admin.close()
    sent = [_kafka_record(i) for i in range(n)]
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        futures = [
            await producer.send(topic_in, r.payload, key=r.key, headers=list(r.headers) or None)
            for r in sent
        ]
        placed = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    # Where each partition ends (Tansu's ListOffsets is no help: it answers 1, or a count
    # short of what was written).
    ends_in = {
        TopicPartition(topic_in, p): 1 + max(m.offset for m in placed if m.partition == p)
        for p in range(PARTITIONS)
    }
    assert sum(ends_in.values()) == n

    tps_out = [TopicPartition(topic_out, p) for p in range(PARTITIONS)]
    reader = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    watcher = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=group, enable_auto_commit=False)
    await reader.start()
    await watcher.start()
    reader.assign(tps_out)
    await reader.seek_to_beginning(*tps_out)
    got: dict[int, list[OutRecord]] = {p: [] for p in range(PARTITIONS)}
    proc = edgeplane(
        "run", str(_kafka_spec(tmp_path / "k.spec", run, topic_in, topic_out, group)),
        "--metrics-addr", "off", "--json",
    )  # fmt: skip
    try:

        async def read_more(timeout_ms: int = 100) -> int:
            batch = await reader.getmany(*tps_out, timeout_ms=timeout_ms)
            for tp, messages in batch.items():
                got[tp.partition] += [
                    OutRecord(m.value, m.key, tuple((k, v or b"") for k, v in m.headers))
                    for m in messages
                ]
            return sum(len(m) for m in batch.values())

        async def all_written() -> bool:
            await read_more()
            return sum(map(len, got.values())) >= n

        async def all_committed() -> bool:
            return all([await watcher.committed(tp) == end for tp, end in ends_in.items()])

        await _until(all_written, f"{n} records in {topic_out}", proc, 90)
        await _until(all_committed, "the source's commits at the end of every partition", proc, 30)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=40)
        assert proc.returncode == 0, err
        summary = json.loads(out)
        assert summary["records_in"] == summary["records_out"] == summary["acked"] == n
        assert summary["restarts"] == summary["duplicates"] == 0
        assert await read_more(500) == 0  # the run is over: nothing more arrives
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        await reader.stop()
        await watcher.stop()
        cleanup_run(run)

    want = [OutRecord(r.payload.upper(), r.key, r.headers) for r in sent]
    every = [r for part in got.values() for r in part]
    assert len(every) == n
    assert sorted(every, key=_order) == sorted(want, key=_order)  # each record, key, header once
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for r in every:  # per output partition in offset order (a key lives in one partition)
        if r.key is not None:
            by_key[r.key].append(int(r.payload.rsplit(b"-", 1)[1]))
    assert len(by_key) == 17
    assert all(seqs == sorted(seqs) for seqs in by_key.values()), "a key's records reordered"
    assert sum(len(s) for s in by_key.values()) == n - n // 10


def _order(r: OutRecord) -> tuple[bytes, bytes, Headers]:
    return r.payload, r.key or b"", r.headers
