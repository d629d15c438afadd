"""The RabbitMQ adapter against the real RabbitMQ on 127.0.0.1:5672 (guest/guest).

Each test works on queues and exchanges of its own (a fresh name) and deletes them after. The
shared server is never restarted: a dropped connection is forced from the server side with
``rabbitmqctl close_connection`` on this test's connection only (found by its name).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aio_pika
import pytest
from _net import Forwarder
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, AbstractRobustConnection

from byteor.adapters import (
    AckError,
    AdapterAuthError,
    AdapterError,
    AdapterNotFound,
    AdapterUnreachable,
    OutRecord,
    Record,
    RecordBatch,
    Sink,
    Source,
    ack_all,
    load_adapter,
    nack_all,
)
from byteor.adapters.rabbitmq import (
    AmqpPosition,
    RabbitMQAdapter,
    RabbitMQSink,
    RabbitMQSource,
    decode_headers,
    encode_headers,
    reconnect_delay,
)
from byteor.testing import ConformanceTests, Harness

URL = "amqp://guest:guest@127.0.0.1:5672/"


class RabbitHarness(Harness):
    """A topic exchange routing every key to the test queue and to a mirror queue; the mirror
    is what :meth:`written` reads, so reading back never takes from the test queue."""

    def __init__(self) -> None:
        self.queue = f"byteor-test-{uuid.uuid4().hex[:16]}"
        self.exchange = self.queue + "-x"
        self.void = self.queue + "-void"  # an exchange with no queue bound
        self.seen: list[OutRecord] = []

    async def setup(self) -> None:
        self.conn: AbstractRobustConnection = await aio_pika.connect_robust(URL)
        self.channel: AbstractChannel = await self.conn.channel()
        self.ex: AbstractExchange = await self.channel.declare_exchange(self.exchange, "topic")
        await self.channel.declare_exchange(self.void, "topic")
        self.q: AbstractQueue = await self.channel.declare_queue(self.queue)
        self.mirror: AbstractQueue = await self.channel.declare_queue(self.queue + "-mirror")
        for q in (self.q, self.mirror):
            await q.bind(self.ex, "#")

    async def new_source(self, prefetch: int = 64, name: str = "") -> RabbitMQSource:
        src = RabbitMQSource(URL, self.queue, prefetch=prefetch, name=name)
        await src.start()
        return src

    async def new_sink(self) -> Sink:
        sink = RabbitMQSink(URL, exchange=self.exchange)
        await sink.start()
        return sink

    async def produce(self, records: Sequence[OutRecord]) -> None:
        # Plain aio-pika, not our sink or our header encoding.
        await asyncio.gather(
            *(
                self.ex.publish(
                    aio_pika.Message(r.payload, headers={n: bytearray(v) for n, v in r.headers}),
                    r.key.decode() if r.key else "",
                )
                for r in records
            )
        )

    async def written(self) -> list[OutRecord]:
        while (msg := await self.mirror.get(no_ack=True, fail=False)) is not None:
            headers = tuple((n, bytes(v)) for n, v in (msg.headers or {}).items())  # type: ignore[arg-type]
            self.seen.append(OutRecord(msg.body, (msg.routing_key or "").encode() or None, headers))
        return list(self.seen)

    async def rejecting_sink(self) -> Sink | None:
        sink = RabbitMQSink(URL, exchange=self.void)  # nothing bound: every publish returns
        await sink.start()
        return sink

    async def counts(self) -> tuple[int, int]:
        """(ready messages, consumers) of the test queue, as the broker sees them now."""
        # On the underlying channel: aio-pika answers a passive declare of a queue it has
        # declared before from its cache, with the counts of that time.
        amqp = await self.channel.get_underlay_channel()
        res = await amqp.queue_declare(self.queue, passive=True)
        return res.message_count or 0, res.consumer_count or 0

    async def close(self) -> None:
        for q in (self.queue, self.queue + "-mirror"):
            await self.channel.queue_delete(q)
        for x in (self.exchange, self.void):
            await self.channel.exchange_delete(x)
        await self.conn.close()


@pytest.fixture
async def harness() -> AsyncIterator[RabbitHarness]:
    h = RabbitHarness()
    await h.setup()
    yield h
    await h.close()


class TestRabbitMQConformance(ConformanceTests):
    pass  # the module-level `harness` fixture serves


async def _drain(src: Source, quiet_s: float = 0.3) -> list[Record]:
    """Everything the source hands out until it is quiet for ``quiet_s``, each acked."""
    got: list[Record] = []
    while batch := await src.next_batch(1000, timeout_s=quiet_s):
        for r in batch:
            got.append(r)
            await r.ack.ack()
    return got


def _redelivered(r: Record) -> bool:
    assert isinstance(r.position, AmqpPosition)
    return r.position.redelivered


async def _take(src: Source, n: int) -> list[Record]:
    """Exactly ``n`` records handed out (not settled), failing if they stall."""
    got: list[Record] = []
    while len(got) < n:
        batch = await src.next_batch(n - len(got), timeout_s=5.0)
        assert batch, f"stalled after {len(got)} of {n} records"
        got += batch
    return got


async def _until(
    cond: Callable[[], bool | Awaitable[bool]], what: str, deadline_s: float = 15.0
) -> None:
    """Poll ``cond()`` (sync or async) until true, failing after ``deadline_s``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        ok = cond()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_header_encoding_round_trips_every_field() -> None:
    headers = (("a", b""), ("b", b"\xff" * 70000), ("a", b"x"), ("\u00e9", b"v"))
    table = encode_headers(headers)
    assert table == {
        "a": [bytearray(b""), bytearray(b"x")],
        "b": bytearray(b"\xff" * 70000),
        "\u00e9": bytearray(b"v"),
    }
    # A repeated name comes back as that many headers, grouped at its first place.
    assert decode_headers(table) == (("a", b""), ("a", b"x"), headers[1], headers[3])
    assert decode_headers(None) == ()
    assert decode_headers({"s": "t\u00e9", "i": 5, "n": None, "f": False}) == (
        ("s", "t\u00e9".encode()),
        ("i", b"5"),
        ("n", b""),
        ("f", b"False"),
    )


def test_reconnect_waits_grow_with_the_outage() -> None:
    assert reconnect_delay(0.0, 0.1, 5.0) == 0.1
    assert reconnect_delay(0.8, 0.1, 5.0) == 0.8  # as long again as it has been down
    assert reconnect_delay(60.0, 0.1, 5.0) == 5.0


async def test_headers_of_any_type_from_other_producers_read_as_bytes(
    harness: RabbitHarness,
) -> None:
    msg = aio_pika.Message(b"p", headers={"s": "text", "i": 7, "b": bytearray(b"\x00\x01")})
    await harness.ex.publish(msg, "rk")
    src = await harness.new_source()
    [rec] = await src.next_batch(10, timeout_s=5.0)
    await rec.ack.ack()
    await src.stop()
    assert rec.key == b"rk"
    assert dict(rec.headers) == {"s": b"text", "i": b"7", "b": b"\x00\x01"}
    assert rec.position == AmqpPosition(1, False)


async def test_ten_thousand_records_round_trip(harness: RabbitHarness) -> None:
    sent = [
        OutRecord(f"payload-{i}".encode(), f"k{i % 7}".encode(), (("n", str(i).encode()),))
        for i in range(10_000)
    ]
    sink = await harness.new_sink()
    for at in range(0, len(sent), 500):
        await sink.write_batch(sent[at : at + 500])
    await sink.stop()
    src = await harness.new_source(prefetch=1000)
    got: list[OutRecord] = []
    while len(got) < len(sent):
        batch = await src.next_batch(1000, timeout_s=5.0)
        assert batch, f"stalled after {len(got)} records"
        for r in batch:
            got.append(r.out())
            await r.ack.ack()
    assert await src.next_batch(1000, timeout_s=0.2) == []
    await src.stop()
    assert got == sent  # exact content, and so per-key order
    assert await harness.counts() == (0, 0), "every record acked, no consumer left"


async def test_a_multiple_ack_never_covers_an_unsettled_record(harness: RabbitHarness) -> None:
    sent = [OutRecord(f"r{i}".encode(), b"k") for i in range(6)]
    await harness.produce(sent)
    src = await harness.new_source()
    got = await _take(src, 6)
    assert [r.payload for r in got] == [r.payload for r in sent]
    for i in (5, 0, 1, 3, 4):  # out of order, with record 2 left unsettled
        await got[i].ack.ack()
    assert await src.next_batch(10) == []  # flushes: ack(r1, multiple) + single acks r3, r4, r5
    await src.stop()
    again = await harness.new_source()
    back = await _drain(again)
    await again.stop()
    assert [(r.payload, _redelivered(r)) for r in back] == [(b"r2", True)]


async def test_batches_settle_without_handles_and_a_stopped_channels_records_are_void(
    harness: RabbitHarness,
) -> None:
    sent = [OutRecord(b"r%d" % i, b"k", (("n", b"%d" % i),)) for i in range(8)]
    await harness.produce(sent)
    src = await harness.new_source()
    got = await _take(src, 8)
    assert [r.out() for r in got] == sent
    assert [r.position for r in got] == [AmqpPosition(t, False) for t in range(1, 9)]
    await ack_all(got[2:4] + got[6:])  # tags 3, 4, 7, 8; 1 and 2 stay unsettled below them
    await nack_all(got[4:6])  # requeued at once: they come back on this channel
    again = await _take(src, 2)  # flushes the acks (singles: tag 1 is unsettled)
    assert [(r.payload, r.position) for r in again] == [
        (b"r4", AmqpPosition(9, True)),
        (b"r5", AmqpPosition(10, True)),
    ]
    with pytest.raises(AckError):
        await ack_all([again[0], got[2]])  # got[2] is acked: the call settles nothing
    assert again[0].ack.state == "pending"
    await ack_all(again)
    await got[1].ack.ack()  # through a handle
    await src.stop()  # flushes; r0 (tag 1) was never settled: the broker requeues it
    await src.start()
    [back] = await _take(src, 1)
    assert (back.payload, back.position) == (b"r0", AmqpPosition(1, True))  # tag 1 again
    await ack_all([got[0]])  # tag 1 of the stopped channel: a no-op, not an ack of `back`
    assert await src.next_batch(10, timeout_s=0.2) == []
    await src.stop()
    fresh = await harness.new_source()
    rest = await _drain(fresh)
    await fresh.stop()
    assert [(r.payload, _redelivered(r)) for r in rest] == [(b"r0", True)]
    assert await harness.counts() == (0, 0)


async def _buffered(src: RabbitMQSource, n: int) -> None:
    """Wait (5 s at most) until ``n`` deliveries are in the source's buffer."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 5.0
    while src.buffered < n:
        assert loop.time() < end, f"{src.buffered} of {n} deliveries arrived"
        await asyncio.sleep(0.01)


async def test_a_read_is_a_batch_of_columns_settled_whole(harness: RabbitHarness) -> None:
    sent = [OutRecord(b"r%d" % i, b"k", (("n", b"%d" % i),) if i == 1 else ()) for i in range(6)]
    await harness.produce(sent)
    src = await harness.new_source()
    try:
        await _buffered(src, 6)
        first = await src.next_batch(3)
        assert isinstance(first, RecordBatch)
        assert (first.payloads, first.keys) == ([b"r0", b"r1", b"r2"], [b"k"] * 3)
        assert first.headers == [(), (("n", b"1"),), ()]
        second = await src.next_batch(10)
        assert isinstance(second, RecordBatch) and second.headers is None  # none has any
        assert list(second.positions) == [AmqpPosition(t, False) for t in (4, 5, 6)]
        await second[0].ack.ack()  # one record settled by hand: the batch is not whole
        with pytest.raises(AckError):
            await ack_all(second)
        await nack_all(first)  # sent at once: r0..r2 come back, redelivered
        await _buffered(src, 3)
        again = await src.next_batch(10)
        assert [(r.payload, r.position) for r in again] == [
            (b"r%d" % i, AmqpPosition(7 + i, True)) for i in range(3)
        ]
        await ack_all(again)  # tags 7..9 queued; 5 and 6 stay unsettled
        assert await src.next_batch(10, timeout_s=0.1) == []  # flushes the acks
    finally:
        await src.stop()  # tag 4 acked at stop; r4, r5 requeued
    fresh = await harness.new_source()
    rest = await _drain(fresh)
    await fresh.stop()
    assert [(r.payload, _redelivered(r)) for r in rest] == [(b"r4", True), (b"r5", True)]
    assert await harness.counts() == (0, 0)


async def test_prefetch_bounds_what_is_in_flight(harness: RabbitHarness) -> None:
    await harness.produce([OutRecord(f"r{i}".encode(), b"k") for i in range(20)])
    src = await harness.new_source(prefetch=5)
    try:
        first = await _take(src, 5)
        assert await src.next_batch(100, timeout_s=0.3) == [], "more than the prefetch arrived"
        assert await harness.counts() == (15, 1)
        for r in first:
            await r.ack.ack()
        more = await src.next_batch(100, timeout_s=5.0)  # the acks return the credit
        assert [r.payload for r in more][:1] == [b"r5"]
    finally:
        await src.stop()


async def test_declare_creates_queue_exchange_and_binding(harness: RabbitHarness) -> None:
    queue, exchange = harness.queue + "-declared", harness.queue + "-dx"
    src = RabbitMQSource(
        URL,
        queue,
        exchange=exchange,
        exchange_type="topic",
        binding_key="orders.*",
        declare=True,
        durable=False,
    )
    await src.start()
    try:
        sink = RabbitMQSink(URL, exchange=exchange)  # passive: the source declared it
        await sink.start()
        await sink.write_batch([OutRecord(b"a", b"orders.eu"), OutRecord(b"b", b"orders.us")])
        with pytest.raises(AdapterNotFound):  # not matched by the binding: returned
            await sink.write_batch([OutRecord(b"c", b"refunds.eu")])
        await sink.stop()
        got = await _drain(src)
        assert [(r.payload, r.key) for r in got] == [(b"a", b"orders.eu"), (b"b", b"orders.us")]
    finally:
        await src.stop()
        await harness.channel.queue_delete(queue)
        await harness.channel.exchange_delete(exchange)


async def test_unroutable_publish_raises_naming_exchange_and_routing_key(
    harness: RabbitHarness,
) -> None:
    sink = RabbitMQSink(URL, exchange=harness.void)
    await sink.start()
    with pytest.raises(AdapterNotFound) as info:
        await sink.write_batch([OutRecord(b"x", b"no.such.route")])
    assert not info.value.retriable
    msg = str(info.value)
    assert f"exchange {harness.void!r}" in msg and "'no.such.route'" in msg, msg
    assert "NO_ROUTE" in msg and "1 of 1 records returned" in msg, msg
    assert sink.health().connected  # a return is not a broken channel
    await sink.stop()
    # The default exchange routes by queue name: a routing key naming no queue also returns.
    default = RabbitMQSink(URL, routing_key=harness.queue + "-nowhere")
    await default.start()
    with pytest.raises(AdapterNotFound, match="exchange '\\(default\\)'"):
        await default.write_batch([OutRecord(b"x")])
    await default.stop()


async def test_server_down_at_start_names_rabbitmq_and_address() -> None:
    src = RabbitMQSource("amqp://guest:guest@127.0.0.1:1/", "q")
    with pytest.raises(AdapterUnreachable) as info:
        await src.start()
    assert info.value.retriable
    assert str(info.value).startswith("rabbitmq: cannot reach 127.0.0.1:1 (")
    assert "check that the server is running" in str(info.value)
    assert not src.health().connected


async def test_wrong_credentials_are_an_auth_error() -> None:
    sink = RabbitMQSink("amqp://guest:wrong@127.0.0.1:5672/")
    with pytest.raises(AdapterAuthError) as info:
        await sink.start()
    assert not info.value.retriable
    assert "rabbitmq: 127.0.0.1:5672 refused the credentials" in str(info.value)
    assert "wrong" not in str(info.value), "the password is never shown"


async def test_missing_queue_is_not_found(harness: RabbitHarness) -> None:
    src = RabbitMQSource(URL, harness.queue + "-missing")  # passive by default
    with pytest.raises(AdapterNotFound) as info:
        await src.start()
    assert f"queue '{harness.queue}-missing' does not exist on 127.0.0.1:5672" in str(info.value)
    assert not src.health().connected


def test_registry_loads_the_rabbitmq_adapter() -> None:
    adapter = load_adapter("rabbitmq")
    assert isinstance(adapter, RabbitMQAdapter)
    assert adapter.declaration().source is not None
    assert adapter.capabilities.backpressure == "credit"
    findings = adapter.config.validate({"exchange_type": "fan", "prefetch": "many"})[1]
    assert sorted(f.code for f in findings) == ["AD503", "AD504"]
    with pytest.raises(AdapterError, match="needs config 'queue'"):
        adapter.source({})
    assert isinstance(adapter.sink({"exchange": "x"}), RabbitMQSink)


async def _rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, f"rabbitmqctl {args} failed"
    return out.decode()


async def _force_close(name: str) -> None:
    """Close the connection named ``name``, and only it, from the server side."""
    listing = await _rabbitmqctl(
        "list_connections", "--no-table-headers", "pid", "client_properties"
    )
    pids = [line.split("\t")[0] for line in listing.splitlines() if f'"{name}"' in line]
    assert len(pids) == 1, listing
    await _rabbitmqctl("close_connection", pids[0], "byteor test: forced close")


def _reconnected_once(side: Source | Sink) -> bool:
    health = side.health()
    return health.connected and health.detail == "reconnects: 1"


async def test_a_connection_closed_by_the_server_is_reconnected(harness: RabbitHarness) -> None:
    name = f"byteor-test-{uuid.uuid4().hex}"
    sent = [OutRecord(f"r{i}".encode(), b"k") for i in range(100)]
    await harness.produce(sent)
    src = await harness.new_source(prefetch=30, name=name)
    try:
        first = await _take(src, 30)
        for r in first[:20]:
            await r.ack.ack()
        src.pause()
        assert await src.next_batch(1) == []  # sends the 20 acks; 20 more arrive, held
        await _until(lambda: src.buffered == 20, "the broker to refill the prefetch")
        await _force_close(name)
        await _until(lambda: _reconnected_once(src), "the source to reconnect")
        for r in first[20:]:
            await r.ack.ack()  # their channel is gone: a no-op, they come back redelivered
        src.resume()
        rest = await _drain(src)
        assert [r.payload for r in rest] == [r.payload for r in sent[20:]], "lost or repeated"
        redelivered = [r.payload for r in rest if _redelivered(r)]
        assert redelivered == [r.payload for r in sent[20:50]]  # the 30 the old channel held
    finally:
        await src.stop()
    assert await harness.counts() == (0, 0)


async def test_a_sink_publishes_again_after_the_server_closed_its_connection(
    harness: RabbitHarness,
) -> None:
    name = f"byteor-test-{uuid.uuid4().hex}"
    sink = RabbitMQSink(URL, exchange=harness.exchange, name=name)
    await sink.start()
    try:
        before = [OutRecord(f"a{i}".encode(), b"k") for i in range(5)]
        after = [OutRecord(f"b{i}".encode(), b"k") for i in range(5)]
        await sink.write_batch(before)
        await _force_close(name)
        await _until(lambda: _reconnected_once(sink), "the sink to reconnect")
        await sink.write_batch(after)  # publisher confirms again, on the reopened channel
        assert [r.payload for r in await harness.written()] == [r.payload for r in before + after]
    finally:
        await sink.stop()


async def test_server_down_mid_stream_waits_grow_and_reading_resumes(
    harness: RabbitHarness,
) -> None:
    outage = Forwarder(5672)  # RabbitMQ behind it: cut, then down
    port = await outage.start()
    sent = [OutRecord(f"r{i}".encode(), b"k") for i in range(100)]
    await harness.produce(sent)
    src = RabbitMQSource(
        f"amqp://guest:guest@127.0.0.1:{port}/", harness.queue, prefetch=30,
        reconnect_s=0.05, reconnect_max_s=0.4,
    )  # fmt: skip
    await src.start()
    try:
        first = await _take(src, 30)
        for r in first[:20]:
            await r.ack.ack()
        src.pause()
        assert await src.next_batch(1) == []  # sends the 20 acks
        await _until(lambda: src.buffered == 20, "the broker to refill the prefetch")
        loop = asyncio.get_running_loop()
        cut_at = loop.time()
        outage.down = True
        outage.cut()
        await _until(lambda: not src.health().connected, "the source to notice the outage")
        assert src.health().detail.startswith("reconnecting for ")
        src.resume()
        assert await src.next_batch(10, timeout_s=0.1) == []  # neither hangs nor raises
        await _until(lambda: len(outage.attempts) >= 5, "five reconnect attempts")
        # Waits of 0.05, 0.05, 0.1, 0.2 s at least between them (as long again as the outage
        # so far); a fixed 0.05 s would make five attempts in about 0.25 s.
        assert outage.attempts[4] - cut_at >= 0.4, [t - cut_at for t in outage.attempts]
        outage.down = False
        await _until(lambda: _reconnected_once(src), "the source to reconnect")
        rest = await _drain(src)
        assert [r.payload for r in rest] == [r.payload for r in sent[20:]], "lost or repeated"
        assert [r.payload for r in rest if _redelivered(r)] == [r.payload for r in sent[20:50]]
    finally:
        await src.stop()
        await outage.close()
    assert await harness.counts() == (0, 0)


VICTIM = """
import asyncio, sys
from byteor.adapters.rabbitmq import RabbitMQSource

async def main() -> None:
    src = RabbitMQSource(sys.argv[1], sys.argv[2], prefetch=30)
    await src.start()
    got = []
    while len(got) < 30:
        got += await src.next_batch(30 - len(got), timeout_s=1.0)
    for r in got[:20]:
        await r.ack.ack()
    src.pause()
    assert await src.next_batch(1) == []  # paused: sends the 20 acks, hands out nothing new
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while src.buffered < 20 and loop.time() < end:  # the broker refills the prefetch
        await asyncio.sleep(0.01)
    print("ready", src.buffered, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_consumer_killed_mid_stream_loses_nothing(harness: RabbitHarness) -> None:
    sent = [OutRecord(f"r{i}".encode(), b"k") for i in range(100)]
    await harness.produce(sent)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", VICTIM, URL, harness.queue, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line == b"ready 20\n"  # 20 acked, 10 out unacked, 20 more held in its prefetch
    proc.send_signal(signal.SIGKILL)
    await proc.wait()

    async def requeued() -> bool:
        return await harness.counts() == (80, 0)

    await _until(requeued, "the broker to requeue the dead consumer's 30")
    src = await harness.new_source()
    got = await _drain(src)
    await src.stop()
    assert [r.payload for r in got] == [r.payload for r in sent[20:]], "lost, or acked came back"
    redelivered = [r.payload for r in got if _redelivered(r)]
    assert redelivered == [r.payload for r in sent[20:50]], "exactly what it held unacked"
    assert await harness.counts() == (0, 0)
