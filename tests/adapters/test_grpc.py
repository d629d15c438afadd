"""The gRPC adapter: servers on 127.0.0.1 (ports picked by the kernel) and clients, through
real gRPC."""

from __future__ import annotations

import asyncio
import copy
import importlib
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest

from byteor.adapters import (
    AckError,
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
    AdapterUnavailable,
    AdapterUnreachable,
    Backoff,
    OutRecord,
    Record,
    RecordBatch,
    Sink,
    Source,
    ack_all,
    load_adapter,
    nack_all,
)
from byteor.adapters._grpc_gen import stream_pb2 as pb
from byteor.adapters._grpc_gen import stream_pb2_grpc as pb_grpc
from byteor.adapters.grpc import (
    PUBLISH,
    GrpcAdapter,
    GrpcNacked,
    GrpcPosition,
    GrpcServeSink,
    GrpcSink,
    GrpcSource,
    GrpcUnconfirmed,
)
from byteor.testing import ConformanceTests, Harness

#: Quick reconnects, a few tries (tests that need "forever" pass their own).
QUICK = Backoff(initial_s=0.02, max_s=0.2, jitter=0.0, max_attempts=5)
FOREVER = Backoff(initial_s=0.05, max_s=0.2, jitter=0.0, max_attempts=None)


def records(n: int, tag: str = "r") -> list[OutRecord]:
    return [
        OutRecord(
            f"{tag}{i}".encode() + (b"\xff\x00" if i % 3 == 0 else b""),
            None if i % 5 == 0 else f"k{i % 7}".encode(),
            (("n", str(i).encode()), ("n", b"again"), ("bin", bytes([i % 256]))),
        )
        for i in range(n)
    ]


async def until(cond: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    """Poll ``cond`` (each loop turn, then every 5 ms) until it holds or the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def take(src: Source, n: int, deadline_s: float = 10.0) -> list[Record]:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    got: list[Record] = []
    while len(got) < n:
        left = end - loop.time()
        assert left > 0, f"only {len(got)} of {n} records arrived"
        got.extend(await src.next_batch(n - len(got), timeout_s=min(left, 0.5)))
    return got


def content(rs: Sequence[Record | OutRecord]) -> list[tuple[bytes, bytes | None, object]]:
    return [(r.payload, r.key, tuple(r.headers)) for r in rs]


def raw_publish(channel: grpc.aio.Channel) -> Any:
    """A Publish call that sends whatever bytes it is given (a generic, schema-less client)."""
    return channel.stream_stream(
        PUBLISH, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )


# -- the conformance suite: GrpcSink -> GrpcSource ----------------------------------------


class GrpcHarness(Harness):
    """Upstream of the source is a GrpcSink in a task of its own: it keeps each record until
    acknowledged and sends what was not acknowledged again after a broken stream or a nack
    (as a Kafka topic keeps what a group has not committed). Every source of one harness
    listens on the same port. The sink under test writes to a second source (the receiver),
    drained in the background, since the sink returns only once its records are acked."""

    def __init__(self) -> None:
        self.port = 0
        self.new_port = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.receiver: GrpcSource | None = None
        self.received: list[OutRecord] = []

    async def new_source(self) -> Source:
        src = GrpcSource(port=self.port)
        await src.start()
        self.port = src.port
        self.new_port.set()
        return src

    async def produce(self, rs: Sequence[OutRecord]) -> None:
        self.tasks.append(asyncio.create_task(self._upstream(list(rs))))

    async def _upstream(self, rs: list[OutRecord]) -> None:
        await self.new_port.wait()
        sink = GrpcSink(f"127.0.0.1:{self.port}", timeout_s=0.5, backoff=FOREVER)
        while True:
            try:
                await sink.start()
                break
            except AdapterUnreachable:
                continue
        try:
            todo = rs
            while todo:
                try:
                    await sink.write_batch(todo)
                    return
                except GrpcUnconfirmed as exc:
                    todo = [todo[i] for i in exc.unconfirmed]
        finally:
            await sink.stop()

    async def _receiver(self) -> GrpcSource:
        if self.receiver is None:
            self.receiver = GrpcSource(port=0, token="s3cret")
            await self.receiver.start()
            self.tasks.append(asyncio.create_task(self._drain(self.receiver)))
        return self.receiver

    async def _drain(self, src: GrpcSource) -> None:
        while True:
            for r in await src.next_batch(10_000, timeout_s=1.0):
                self.received.append(r.out())
                await r.ack.ack()

    async def new_sink(self) -> Sink:
        rcv = await self._receiver()
        sink = GrpcSink(rcv.address, token="s3cret", backoff=QUICK)
        await sink.start()
        return sink

    async def written(self) -> list[OutRecord]:
        await self._receiver()
        return list(self.received)

    async def rejecting_sink(self) -> Sink | None:
        sink = GrpcSink((await self._receiver()).address, token="wrong", backoff=QUICK)
        await sink.start()
        return sink

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.receiver is not None:
            await self.receiver.stop()


@pytest.fixture
async def harness() -> AsyncIterator[GrpcHarness]:
    h = GrpcHarness()
    yield h
    await h.close()


class TestGrpcConformance(ConformanceTests):
    pass  # the module-level `harness` fixture serves


@pytest.fixture
async def source() -> AsyncIterator[GrpcSource]:
    src = GrpcSource(port=0)
    await src.start()
    yield src
    await src.stop()


# -- the source and the sink ---------------------------------------------------------------


async def test_ten_thousand_records_round_trip_with_exact_content(source: GrpcSource) -> None:
    sent = records(10_000)
    sink = GrpcSink(source.address, batch_records=300)
    await sink.start()
    got: list[Record] = []

    async def consume() -> None:
        while len(got) < len(sent):
            for r in await source.next_batch(1_000, timeout_s=5.0):
                got.append(r)
                await r.ack.ack()

    consumer = asyncio.create_task(consume())
    try:
        await sink.write_batch(sent)
        await asyncio.wait_for(consumer, 30)
        assert content(got) == content(sent)  # exact content, in order, each once
        assert len({r.position for r in got}) == 10_000
        assert all(isinstance(r.position, GrpcPosition) for r in got)
        assert await source.next_batch(10) == []
        assert sink.health().connected and source.health().connected
    finally:
        consumer.cancel()
        await sink.stop()


async def test_the_sink_returns_only_after_every_downstream_ack(source: GrpcSource) -> None:
    sink = GrpcSink(source.address)
    await sink.start()
    try:
        write = asyncio.create_task(sink.write_batch(records(3)))
        got = await take(source, 3)
        await got[2].ack.ack()  # out of order: an `acked` id, not `acked_through`
        await got[0].ack.ack()  # `acked_through` 1
        call = sink._call
        assert call is not None
        await until(lambda: call.unsettled == 1, "two acks back at the sink")
        assert not write.done(), "the sink returned with a record unacknowledged"
        await got[1].ack.ack()
        await asyncio.wait_for(write, 5)
    finally:
        await sink.stop()


async def test_a_nack_raises_a_retriable_error_naming_the_record(source: GrpcSource) -> None:
    sink = GrpcSink(source.address, backoff=QUICK)
    await sink.start()
    try:
        write = asyncio.create_task(sink.write_batch(records(4)))
        got = await take(source, 4)
        await got[0].ack.ack()
        await got[2].ack.nack()
        await got[1].ack.ack()
        await got[3].ack.ack()
        with pytest.raises(GrpcNacked) as info:
            await asyncio.wait_for(write, 5)
        assert info.value.retriable and info.value.unconfirmed == (2,)
        assert info.value.reasons == ("nacked downstream",)
        assert "refused 1 of 4 records (nacked downstream)" in str(info.value)
        assert await source.next_batch(10, timeout_s=0.1) == []  # not resent on its own
        await sink.write_batch([])  # the stream is still good
    finally:
        await sink.stop()


async def test_ack_timeout_names_what_to_send_again(source: GrpcSource) -> None:
    sink = GrpcSink(source.address, ack_timeout_s=0.2)
    await sink.start()
    try:
        write = asyncio.create_task(sink.write_batch(records(3)))
        got = await take(source, 3)
        await got[1].ack.ack()
        with pytest.raises(GrpcUnconfirmed, match=r"2 of 3 records not acknowledged") as info:
            await asyncio.wait_for(write, 5)
        assert info.value.retriable and info.value.unconfirmed == (0, 2)
        await got[0].ack.ack()  # late: dropped by the sink, the stream carries on
        write = asyncio.create_task(sink.write_batch(records(1)))
        for r in await take(source, 1):
            await r.ack.ack()
        await asyncio.wait_for(write, 5)
        assert sink.reconnects == 0
    finally:
        await sink.stop()


async def test_max_in_flight_bounds_what_one_stream_has_unacknowledged() -> None:
    src = GrpcSource(port=0, max_in_flight=10)
    await src.start()
    sink = GrpcSink(src.address, batch_records=1)  # one record a message: the bound is exact
    await sink.start()
    try:
        write = asyncio.create_task(sink.write_batch(records(200)))
        got = await take(src, 10)
        assert await src.next_batch(100, timeout_s=0.3) == [], "read past max_in_flight"
        for r in got[:4]:
            await r.ack.ack()
        more = await take(src, 4)
        assert await src.next_batch(100, timeout_s=0.3) == []
        assert [r.position.id for r in more] == [11, 12, 13, 14]  # type: ignore[attr-defined]
        rest, seen = got[4:] + more, 14
        while rest:
            for r in rest:
                await r.ack.ack()
            rest = await src.next_batch(10, timeout_s=5.0) if seen < 200 else []
            seen += len(rest)
            assert len(rest) <= 10
        assert seen == 200
        await asyncio.wait_for(write, 10)
    finally:
        await sink.stop()
        await src.stop()


async def test_back_pressure_reaches_the_client_writes() -> None:
    """Held at max_in_flight, the server reads no more: the client's writes fill the HTTP/2
    windows and then wait, well short of the whole batch (12.5 MiB here)."""
    src = GrpcSource(port=0, max_in_flight=10)
    await src.start()
    sink = GrpcSink(src.address, batch_records=1)
    await sink.start()
    try:
        write = asyncio.create_task(sink.write_batch([OutRecord(bytes(32 << 10))] * 400))
        held = await take(src, 10)
        call = sink._call
        assert call is not None
        sizes: list[int] = []

        def settled_down() -> bool:
            sizes.append(call.unsettled)  # written (or being written), not acknowledged
            return len(sizes) > 20 and sizes[-1] == sizes[-20]

        await until(settled_down, "the client's writes to stop")
        assert 10 <= sizes[-1] < 400 and not write.done()
        write.cancel()
        for r in held:
            await r.ack.ack()
    finally:
        await sink.stop()
        await src.stop()


async def test_a_paused_source_stops_reading_and_resume_reads_on(source: GrpcSource) -> None:
    sink = GrpcSink(source.address, batch_records=1)
    await sink.start()
    try:
        source.pause()
        write = asyncio.create_task(sink.write_batch(records(5)))
        assert await source.next_batch(10, timeout_s=0.3) == []
        source.resume()
        for r in await take(source, 5):
            await r.ack.ack()
        await asyncio.wait_for(write, 5)
    finally:
        await sink.stop()


async def test_calls_without_the_token_are_unauthenticated() -> None:
    src = GrpcSource(port=0, token="s3cret")
    await src.start()
    attempts = 0

    async def counting_sleep(_: float) -> None:
        nonlocal attempts
        attempts += 1

    try:
        for token in ("", "wrong"):
            sink = GrpcSink(src.address, token=token, backoff=QUICK, sleep=counting_sleep)
            await sink.start()
            with pytest.raises(AdapterAuthError, match=r"UNAUTHENTICATED: missing or wrong bearer"):
                await sink.write_batch(records(2))
            await sink.stop()
        assert attempts == 0, "an auth error was retried"
        async with grpc.aio.insecure_channel(src.address) as ch:
            stub = pb_grpc.RecordsStub(ch)
            call = stub.Publish(metadata=(("authorization", "Basic s3cret"),))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert src.streams == 0 and await src.next_batch(10) == []
        good = GrpcSink(src.address, token="s3cret")
        await good.start()
        write = asyncio.create_task(good.write_batch(records(1)))
        [r] = await take(src, 1)
        await r.ack.ack()
        await asyncio.wait_for(write, 5)
        await good.stop()
    finally:
        await src.stop()


async def test_broken_protobuf_and_oversized_messages_end_only_their_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    src = GrpcSource(port=0, max_message_bytes=64 << 10)
    await src.start()
    bystander = GrpcSink(src.address, max_message_bytes=64 << 10)
    await bystander.start()
    try:
        # A healthy stream with records out downstream when the bad calls come.
        write = asyncio.create_task(bystander.write_batch(records(3)))
        held = await take(src, 3)
        async with grpc.aio.insecure_channel(src.address) as ch:
            call = raw_publish(ch)()
            await call.write(b"\x0a\xff\xff\xff\xff\x0f not a message")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid byteor.v1.PublishRequest" in (info.value.details() or "")

            big = pb.PublishRequest(records=[pb.Record(id=1, payload=b"x" * (100 << 10))])
            call = raw_publish(ch)()
            await call.write(big.SerializeToString())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in (info.value.details() or "")

            backwards = pb.PublishRequest(records=[pb.Record(id=5), pb.Record(id=5)])
            call = raw_publish(ch)()
            await call.write(backwards.SerializeToString())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "ids must increase" in (info.value.details() or "")
        await until(lambda: src.streams == 1, "the refused calls to end on the server too")
        ended = [m for name, level, m in caplog.record_tuples if name == "byteor.adapters.grpc"]
        assert len(ended) == 2 and all(m.startswith("grpc: ending the stream from") for m in ended)
        assert await src.next_batch(10, timeout_s=0.1) == [], "a refused message left records"
        for r in held:
            await r.ack.ack()
        await asyncio.wait_for(write, 5)  # the bystander was not stalled
        assert src.health().connected
        # The sink refuses a record no message can carry before sending anything.
        with pytest.raises(AdapterError, match=r"record 1 of the batch is \d+ bytes") as err:
            await bystander.write_batch([OutRecord(b"ok"), OutRecord(b"y" * (70 << 10))])
        assert not err.value.retriable
        assert await src.next_batch(10, timeout_s=0.1) == []
    finally:
        await bystander.stop()
        await src.stop()


async def test_the_sink_cuts_a_batch_into_messages_by_count_and_size() -> None:
    """batch_records = 3 and 64 KiB messages: 7 small records go as 3 + 3 + 1, and 5 of
    25 KiB (each fits, not three together) as 2 + 2 + 1; ids run on across messages."""
    src = GrpcSource(port=0, max_message_bytes=64 << 10)
    await src.start()
    sink = GrpcSink(src.address, batch_records=3, max_message_bytes=64 << 10)
    await sink.start()
    try:
        big = [
            OutRecord((r.payload * (25 << 10))[: 25 << 10], r.key, r.headers) for r in records(5)
        ]
        for sent, parts in ((records(7), [3, 3, 1]), (big, [2, 2, 1])):
            write = asyncio.create_task(sink.write_batch(sent))
            n = len(sent)
            await until(lambda n=n: src.health().lag == n, "the records queued")
            assert [c.left for c in src._queue] == parts
            got = await take(src, len(sent))
            assert content(got) == content(sent)
            await ack_all(got)
            await asyncio.wait_for(write, 5)
        assert [r.position.id for r in got] == [8, 9, 10, 11, 12]  # type: ignore[attr-defined]
    finally:
        await sink.stop()
        await src.stop()


async def test_a_generated_client_publishes_and_hears_acks(source: GrpcSource) -> None:
    """What the docs show: ids chosen by the client, acks as `acked_through` and `acked`."""
    async with grpc.aio.insecure_channel(source.address) as ch:
        call = pb_grpc.RecordsStub(ch).Publish()
        await call.write(
            pb.PublishRequest(
                records=[
                    pb.Record(id=10, payload=b"a", key=b"", headers=[pb.Header(name="h")]),
                    pb.Record(id=20, payload=b"b"),
                    pb.Record(id=30, payload=b"c"),
                ]
            )
        )
        got = await take(source, 3)
        assert content(got) == [(b"a", b"", (("h", b""),)), (b"b", None, ()), (b"c", None, ())]
        await got[1].ack.ack()
        first = await call.read()
        assert (first.acked_through, list(first.acked)) == (0, [20])
        await got[0].ack.ack()
        await got[2].ack.nack()
        acks = pb.PublishResponse()
        while acks.acked_through < 30:
            resp = await call.read()
            acks.MergeFrom(resp)
            acks.acked_through = resp.acked_through
        assert [(n.id, n.reason) for n in acks.nacked] == [(30, "nacked downstream")]
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK


async def test_batches_settle_without_handles_across_two_streams(source: GrpcSource) -> None:
    """ack_all / nack_all settle a batch without a handle per record (one object a record),
    each record on its own stream, as one record's ack() would; settling twice is refused."""
    async with grpc.aio.insecure_channel(source.address) as ch:
        calls = [pb_grpc.RecordsStub(ch).Publish() for _ in range(2)]
        for n, call in enumerate(calls):  # one stream after the other: a known order
            recs = [pb.Record(id=i, payload=b"p") for i in range(10 * n + 1, 10 * n + 4)]
            await call.write(pb.PublishRequest(records=recs))
            await until(lambda n=n: source.health().lag == 3 * (n + 1), "records queued")
        got = await take(source, 6)
        where = [r.position for r in got]
        assert [p.id for p in where] == [1, 2, 3, 11, 12, 13]
        assert len({p.stream for p in where[:3]}) == 1 and where[0].stream != where[3].stream
        await got[4].ack.ack()  # a handle made for this one; the rest settle as batches
        await ack_all(got[:2] + got[3:4])
        await nack_all([got[2], got[5]])
        with pytest.raises(AckError):
            await ack_all(got[:1])
        heard: list[tuple[int, list[int], list[int]]] = []
        async with asyncio.timeout(10):
            for call in calls:  # all settled before the handlers ran: one response each
                resp = await call.read()
                heard.append((resp.acked_through, list(resp.acked), [x.id for x in resp.nacked]))
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK
        assert heard == [(3, [], [3]), (13, [], [13])]


async def test_a_streams_messages_are_one_batch_of_columns_settled_whole(
    source: GrpcSource,
) -> None:
    """What one stream sent comes as a RecordBatch: its columns as received (two messages in
    a row run together, keys and headers filled where one message has none, None when no
    record has any), its records made only when read, with GrpcPositions; nack_all of it
    nacks exactly its ids, ack_all acks them (acked_through); a batch one of whose records
    was acked on its own is refused whole, and its records settle one by one."""
    async with grpc.aio.insecure_channel(source.address) as ch:
        call = pb_grpc.RecordsStub(ch).Publish()
        await call.write(pb.PublishRequest(records=[pb.Record(id=1, payload=b"a")]))
        await until(lambda: source.health().lag == 1, "records queued")
        keyed = pb.Record(id=3, payload=b"c", key=b"k", headers=[pb.Header(name="h", value=b"v")])
        await call.write(pb.PublishRequest(records=[pb.Record(id=2, payload=b"b"), keyed]))
        await until(lambda: source.health().lag == 3, "records queued")
        got = await source.next_batch(10)
        assert isinstance(got, RecordBatch)
        assert got.payloads == [b"a", b"b", b"c"] and got.keys == [None, None, b"k"]
        assert got.headers == [(), (), (("h", b"v"),)]
        where = list(got.positions)
        assert all(type(p) is GrpcPosition for p in where)
        assert [p.id for p in where] == [1, 2, 3]  # type: ignore[attr-defined]
        assert len({p.stream for p in where}) == 1  # type: ignore[attr-defined]
        await nack_all(got)
        resp = await call.read()  # the nacked ids, settled: the prefix moves over them
        assert (resp.acked_through, [n.id for n in resp.nacked]) == (3, [1, 2, 3])

        await call.write(pb.PublishRequest(records=[pb.Record(id=i, payload=b"p") for i in (4, 5)]))
        plain = await take(source, 2)
        await call.write(
            pb.PublishRequest(records=[pb.Record(id=i, payload=b"p") for i in (6, 7, 8)])
        )
        await until(lambda: source.health().lag == 3, "records queued")
        last = await source.next_batch(10)
        assert isinstance(last, RecordBatch) and (last.keys, last.headers) == (None, None)
        await ack_all(plain)
        assert (await call.read()).acked_through == 5
        await last[1].ack.ack()
        assert (await call.read()).acked == [7]
        with pytest.raises(AckError, match="settled on its own"):
            await ack_all(last)
        assert [r.position.id for r in last] == [6, 7, 8]  # type: ignore[attr-defined]
        await ack_all([last[0], last[2]])
        resp = await call.read()
        assert (resp.acked_through, list(resp.acked), list(resp.nacked)) == (8, [], [])
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK


async def test_messages_split_across_batches_settled_in_pieces(source: GrpcSource) -> None:
    """A message of 6 handed out as 4 + 2 and settled piecemeal: acks above an unsettled id
    are listed one by one, the prefix only once it is whole; then records encoded otherwise
    than protobuf would (an overlong id, an unknown field) arrive without key or headers, and
    an empty key stays a key."""
    async with grpc.aio.insecure_channel(source.address) as ch:
        call = raw_publish(ch)()
        await call.write(
            pb.PublishRequest(
                records=[pb.Record(id=i, payload=bytes([i])) for i in range(1, 7)]
            ).SerializeToString()
        )
        await until(lambda: source.health().lag == 6, "records queued")
        first = await source.next_batch(4)
        second = await source.next_batch(4)
        assert [len(first), len(second), source.health().lag] == [4, 2, 0]
        assert first[0].ack.state == "pending"  # a handle made: its position comes from it
        heard: list[tuple[int, list[int]]] = []

        async def hear() -> None:
            resp = pb.PublishResponse.FromString(await call.read())
            assert not resp.nacked
            heard.append((resp.acked_through, list(resp.acked)))

        await ack_all(second)
        await hear()
        await ack_all(first[2:])
        await hear()
        await ack_all(first[:2])
        await hear()
        assert heard == [(0, [5, 6]), (0, [3, 4]), (6, [])]
        # Positions made when read (here after settling), each once, equal by value.
        where = [r.position for r in first + second]
        assert all(type(p) is GrpcPosition for p in where)
        assert [p.id for p in where] == [1, 2, 3, 4, 5, 6]  # type: ignore[attr-defined]
        assert len({p.stream for p in where}) == 1  # type: ignore[attr-defined]
        assert all(r.position is p for r, p in zip(first + second, where, strict=True))
        assert copy.copy(second[1]) == second[1] and "GrpcPosition(stream=" in repr(second[1])

        overlong_id = b"\x08\x87\x00\x12\x01x"  # id 7 in two bytes
        unknown_field = b"\x08\x08\x12\x01y\x48\x01"  # id 8, then field 9 = 1
        odd = b"".join(b"\x0a" + bytes([len(r)]) + r for r in (overlong_id, unknown_field))
        await call.write(odd)
        await call.write(
            pb.PublishRequest(records=[pb.Record(id=9, payload=b"z", key=b"")]).SerializeToString()
        )
        got = await take(source, 3)
        assert content(got) == [(b"x", None, ()), (b"y", None, ()), (b"z", b"", ())]
        assert [r.position.id for r in got] == [7, 8, 9]  # type: ignore[attr-defined]
        await ack_all(got)
        while heard[-1][0] < 9:
            await hear()
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK


async def test_the_source_stopping_flushes_acks_and_the_sink_resends_the_rest() -> None:
    src = GrpcSource(port=0)
    await src.start()
    port = src.port
    sink = GrpcSink(src.address, backoff=FOREVER)
    await sink.start()
    try:
        sent = records(6)
        write = asyncio.create_task(sink.write_batch(sent))
        got = await take(src, 6)
        for r in got[:4]:
            await r.ack.ack()
        await src.stop()
        assert not write.done()
        src = GrpcSource(port=port)
        await src.start()
        again = await take(src, 2)
        assert content(again) == content(sent[4:]), "acked records were sent again"
        for r in again:
            await r.ack.ack()
        await asyncio.wait_for(write, 5)
        assert sink.reconnects == 1
    finally:
        await sink.stop()
        await src.stop()


async def test_sink_against_a_closed_port_says_so() -> None:
    src = GrpcSource(port=0)
    await src.start()
    port = src.port
    await src.stop()
    sink = GrpcSink(f"127.0.0.1:{port}", timeout_s=0.3)
    with pytest.raises(AdapterUnreachable) as info:
        await sink.start()
    assert info.value.retriable
    assert str(info.value).startswith(f"grpc: cannot reach 127.0.0.1:{port} (no connection")
    assert not sink.health().connected


async def test_a_server_gone_mid_stream_is_retried_then_unreachable() -> None:
    src = GrpcSource(port=0)
    await src.start()
    sink = GrpcSink(src.address, backoff=QUICK)
    await sink.start()
    try:
        write = asyncio.create_task(sink.write_batch(records(2)))
        await take(src, 2)
        await src.stop()
        with pytest.raises(AdapterUnreachable, match=r"grpc: cannot reach 127\.0\.0\.1:\d+"):
            await asyncio.wait_for(write, 10)
        assert not sink.health().connected
    finally:
        await sink.stop()


async def test_statuses_map_to_typed_errors() -> None:
    from byteor.adapters.grpc import status_error

    code = grpc.StatusCode
    assert isinstance(status_error(code.UNAVAILABLE, "down", "h:1", PUBLISH), AdapterUnreachable)
    for c in (code.UNAUTHENTICATED, code.PERMISSION_DENIED):
        assert isinstance(status_error(c, "", "h:1", PUBLISH), AdapterAuthError)
    for c in (code.UNIMPLEMENTED, code.NOT_FOUND):
        err = status_error(c, "", "h:1", PUBLISH)
        assert isinstance(err, AdapterNotFound) and "the method /byteor.v1.Records/Publish" in str(
            err
        )
    assert status_error(code.INTERNAL, "", "h:1", PUBLISH).retriable
    assert not status_error(code.INVALID_ARGUMENT, "", "h:1", PUBLISH).retriable
    assert not status_error(code.RESOURCE_EXHAUSTED, "", "h:1", PUBLISH).retriable


async def test_publishing_to_a_server_without_publish_is_not_found() -> None:
    serve = GrpcServeSink(port=0)
    await serve.start()
    sink = GrpcSink(serve.address, backoff=QUICK)
    await sink.start()
    try:
        with pytest.raises(
            AdapterNotFound, match=r"the method /byteor.v1.Records/Publish does not"
        ):
            await sink.write_batch(records(1))
    finally:
        await sink.stop()
        await serve.stop()


async def test_a_taken_port_is_a_clear_error(source: GrpcSource) -> None:
    with pytest.raises(AdapterError, match=rf"grpc: cannot listen on 127\.0\.0\.1:{source.port}"):
        await GrpcSource(port=source.port).start()


# -- a publishing client killed with SIGKILL mid-stream -------------------------------------

CLIENT = """
import asyncio, sys
from byteor.adapters import OutRecord
from byteor.adapters.grpc import GrpcSink

async def main(target, first, last):
    sink = GrpcSink(target)
    await sink.start()
    for at in range(first, last, 10):
        await sink.write_batch([OutRecord(str(i).encode()) for i in range(at, at + 10)])
        print("confirmed", at + 10, flush=True)
    await sink.stop()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


@pytest.mark.multiprocess
async def test_a_client_killed_mid_stream_loses_nothing_it_was_told(source: GrpcSource) -> None:
    """The client writes batches of 10 and notes each confirmed one. The consumer acks the
    first 55 records and holds the rest: batch 5 (records 50-59) is in flight with 5 acked.
    Killed with SIGKILL there, the client was told records 0-49; the source has them, and
    the source survives the dead stream. Restarted from its note, it sends batch 5 again:
    exactly those 10 arrive twice, everything else once."""
    got: list[Record] = []

    async def client(first: int) -> tuple[asyncio.subprocess.Process, list[int]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, source.address, str(first), "100",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return proc, []

    async def notes(proc: asyncio.subprocess.Process, into: list[int]) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            into.append(int(line.split()[1]))

    proc, told = await client(0)
    reading = asyncio.create_task(notes(proc, told))
    try:
        while len(got) < 60:
            for r in await source.next_batch(100, timeout_s=5.0):
                got.append(r)
                if len(got) <= 55:
                    await r.ack.ack()
        await until(lambda: told[-1:] == [50], "the client noting batch 4 confirmed")
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        await reading
        assert told == [10, 20, 30, 40, 50]
        await until(lambda: source.streams == 0, "the source noticing the dead stream")
        for r in got[55:]:
            await r.ack.ack()  # late settlements of a dead stream are dropped quietly
        assert [int(r.payload) for r in got] == list(range(60))
        assert source.health().connected

        proc, told = await client(told[-1])
        reading = asyncio.create_task(notes(proc, told))
        while len(got) < 110:
            for r in await source.next_batch(100, timeout_s=5.0):
                got.append(r)
                await r.ack.ack()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await reading
        assert told == [60, 70, 80, 90, 100]
        seen = [int(r.payload) for r in got]
        assert seen == list(range(60)) + list(range(50, 100))
        assert await source.next_batch(10, timeout_s=0.1) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reading.cancel()


# -- mode = serve: Subscribe and Ack ------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[GrpcServeSink]:
    sink = GrpcServeSink(port=0, token="t", max_in_flight=4, batch_records=3)
    await sink.start()
    yield sink
    await sink.stop()


AUTH = (("authorization", "Bearer t"),)


async def first_message(call: Any) -> str:
    hello = await call.read()
    assert hello.subscription and not hello.records
    return str(hello.subscription)


async def read_records(call: Any, n: int) -> list[pb.Record]:
    out: list[pb.Record] = []
    while len(out) < n:
        out.extend((await asyncio.wait_for(call.read(), 5)).records)
    return out


async def test_serve_delivers_to_a_subscriber_and_confirms_after_its_acks(
    serve: GrpcServeSink,
) -> None:
    sent = records(10)
    write = asyncio.create_task(serve.write_batch(sent))
    async with grpc.aio.insecure_channel(serve.address) as ch:
        stub = pb_grpc.RecordsStub(ch)
        call = stub.Subscribe(pb.SubscribeRequest(max_in_flight=100), metadata=AUTH)
        name = await first_message(call)
        got = await read_records(call, 4)  # the server's bound (4) wins over the asked 100
        assert serve.health().lag == 6  # held back: the subscriber has its 4 in flight
        resp = await stub.Ack(
            pb.AckRequest(subscription=name, acked_through=got[3].id), metadata=AUTH
        )
        assert resp.settled == 4
        while len(got) < 10:
            more = await read_records(call, 1)
            got.extend(more)
            await stub.Ack(
                pb.AckRequest(subscription=name, acked=[m.id for m in more]), metadata=AUTH
            )
        await asyncio.wait_for(write, 5)
        assert [
            (
                m.payload,
                m.key if m.HasField("key") else None,
                tuple((h.name, h.value) for h in m.headers),
            )
            for m in got
        ] == content(sent)
        call.cancel()


async def test_serve_redelivers_what_a_gone_subscriber_left_unacked(serve: GrpcServeSink) -> None:
    sent = records(4)
    write = asyncio.create_task(serve.write_batch(sent))
    async with grpc.aio.insecure_channel(serve.address) as ch:
        stub = pb_grpc.RecordsStub(ch)
        first = stub.Subscribe(pb.SubscribeRequest(), metadata=AUTH)
        name = await first_message(first)
        got = await read_records(first, 4)
        await stub.Ack(pb.AckRequest(subscription=name, acked=[got[0].id]), metadata=AUTH)
        await stub.Ack(
            pb.AckRequest(subscription=name, nacked=[pb.Nack(id=got[1].id, reason="x")]),
            metadata=AUTH,
        )
        first.cancel()
        await until(lambda: serve.subscriptions == 0, "the subscription to end")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ack(pb.AckRequest(subscription=name, acked=[got[2].id]), metadata=AUTH)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        second = stub.Subscribe(pb.SubscribeRequest(), metadata=AUTH)
        name = await first_message(second)
        again = await read_records(second, 3)
        assert [m.payload for m in again] == [r.payload for r in sent[1:]]
        assert not write.done()
        await stub.Ack(pb.AckRequest(subscription=name, acked_through=again[-1].id), metadata=AUTH)
        await asyncio.wait_for(write, 5)
        second.cancel()


async def test_serve_refuses_calls_without_the_token_and_times_out_alone(
    serve: GrpcServeSink,
) -> None:
    async with grpc.aio.insecure_channel(serve.address) as ch:
        call = pb_grpc.RecordsStub(ch).Subscribe(pb.SubscribeRequest())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    lonely = GrpcServeSink(port=0, ack_timeout_s=0.2)
    await lonely.start()
    try:
        with pytest.raises(AdapterError, match=r"2 of 2 records were not acknowledged") as err:
            await lonely.write_batch(records(2))
        assert err.value.retriable and lonely.health().lag == 0  # withdrawn, not left queued
    finally:
        await lonely.stop()


# -- registry, config, install ------------------------------------------------------------


def test_registry_and_config() -> None:
    adapter = load_adapter("grpc")
    assert isinstance(adapter, GrpcAdapter) and adapter.declaration().extra == "grpc"
    src = adapter.source({"port": "0", "max_in_flight": "5", "token": "x"})
    assert isinstance(src, GrpcSource)
    assert isinstance(adapter.sink({"target": "127.0.0.1:1"}), GrpcSink)
    assert isinstance(adapter.sink({"mode": "serve", "port": "0"}), GrpcServeSink)
    with pytest.raises(AdapterConfigError, match="needs config 'target'"):
        adapter.sink({})
    with pytest.raises(AdapterConfigError, match="must be one of publish, serve"):
        adapter.sink({"mode": "pull"})
    with pytest.raises(AdapterConfigError, match="max_in_flight must be at least 1"):
        adapter.source({"max_in_flight": "0"})


def test_missing_stubs_fail_with_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import byteor.adapters._grpc_gen as gen

    monkeypatch.setitem(sys.modules, "byteor.adapters._grpc_gen.stream_pb2", None)
    monkeypatch.delattr(gen, "stream_pb2")
    monkeypatch.delitem(sys.modules, "byteor.adapters.grpc")
    with pytest.raises(AdapterUnavailable, match=r"stubs .* were not generated.*pip install -e \."):
        importlib.import_module("byteor.adapters.grpc")
