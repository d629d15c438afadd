"""The WebSocket adapter: server and client through real WebSockets on 127.0.0.1 (ports picked
by the kernel), raw ``websockets`` clients for the protocol's edges."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from _net import Forwarder, free_port
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from byteor.adapters import (
    AckError,
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
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
from byteor.adapters.websocket import (
    PROTOCOL,
    WebSocketAdapter,
    WebSocketSink,
    WebSocketSource,
    encode_message,
    idempotency_key,
)
from byteor.testing import ConformanceTests, Harness

#: Reconnects without waiting long (a server restart takes a moment).
QUICK = Backoff(initial_s=0.01, max_s=0.1, jitter=0.0, max_attempts=300)


async def until(cond: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    """Poll ``cond`` (each turn of the loop) until it holds; fail naming ``what`` after the
    deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


class WebSocketHarness(Harness):
    """Upstream of the source is a :class:`WebSocketSink` that keeps each record until its ack
    frame, on a port fixed for the harness: a new source on it is the same upstream's next
    server, as a Kafka topic outlives its consumers. The sink writes to a second source (the
    receiver), whose records a background task takes and acks."""

    def __init__(self) -> None:
        self.port = free_port()
        self.producers: list[tuple[WebSocketSink, asyncio.Task[None]]] = []
        self.receiver: WebSocketSource | None = None
        self.draining: asyncio.Task[None] | None = None
        self.received: list[OutRecord] = []

    async def new_source(self) -> Source:
        src = WebSocketSource(port=self.port, retry_after_ms=20)
        await src.start()
        return src

    async def produce(self, records: Sequence[OutRecord]) -> None:
        sink = WebSocketSink(f"ws://127.0.0.1:{self.port}/records", backoff=QUICK)
        await sink.start()
        self.producers.append((sink, asyncio.create_task(sink.write_batch(list(records)))))

    async def _receiver(self) -> WebSocketSource:
        if self.receiver is None:
            self.receiver = WebSocketSource(port=0, token="s3cret")
            await self.receiver.start()
            self.draining = asyncio.create_task(self._drain(self.receiver))
        return self.receiver

    async def _drain(self, rcv: WebSocketSource) -> None:
        while True:
            for r in await rcv.next_batch(10_000, timeout_s=1.0):
                self.received.append(r.out())
                await r.ack.ack()

    async def new_sink(self) -> Sink:
        sink = WebSocketSink((await self._receiver()).url, token="s3cret", backoff=QUICK)
        await sink.start()
        return sink

    async def written(self) -> list[OutRecord]:
        return list(self.received)  # a write returned: its records were acked, so drained

    async def rejecting_sink(self) -> Sink | None:
        sink = WebSocketSink((await self._receiver()).url, token="wrong", backoff=QUICK)
        await sink.start()
        return sink

    async def close(self) -> None:
        tasks = [t for _, t in self.producers] + ([self.draining] if self.draining else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sink, _ in self.producers:
            await sink.stop()
        if self.receiver is not None:
            await self.receiver.stop()


@pytest.fixture
async def harness() -> AsyncIterator[WebSocketHarness]:
    h = WebSocketHarness()
    yield h
    await h.close()


class TestWebSocketConformance(ConformanceTests):
    pass  # the module-level `harness` fixture serves


@pytest.fixture
async def source() -> AsyncIterator[Callable[..., Awaitable[WebSocketSource]]]:
    """Started sources (stopped after the test)."""
    started: list[WebSocketSource] = []

    async def make(**kwargs: Any) -> WebSocketSource:
        src = WebSocketSource(port=0, **kwargs)
        await src.start()
        started.append(src)
        return src

    yield make
    for src in started:
        await src.stop()


@contextlib.asynccontextmanager
async def raw(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """A plain websockets client, past the server's hello."""
    async with connect(url, **kwargs) as ws:
        hello = json.loads(await ws.recv())["hello"]
        assert hello["protocol"] == PROTOCOL
        yield ws


async def frame(ws: ClientConnection) -> dict[str, Any]:
    doc = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert isinstance(doc, dict)
    return doc


async def take(src: WebSocketSource, n: int) -> list[Record]:
    got: list[Record] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while len(got) < n and loop.time() < end:
        got += await src.next_batch(n - len(got), timeout_s=1.0)
    assert len(got) == n, f"{len(got)} of {n} records arrived"
    return got


async def drain(src: WebSocketSource) -> list[OutRecord]:
    out: list[OutRecord] = []
    while batch := await src.next_batch(100_000):
        for r in batch:
            out.append(r.out())
            await r.ack.ack()
    return out


# -- the protocol by hand ------------------------------------------------------------------


async def test_ack_frames_follow_downstream_settlement_record_by_record(source: Any) -> None:
    src = await source(max_in_flight=64, capacity=500, max_message_bytes=4096)
    async with connect(src.url) as ws:
        assert json.loads(await ws.recv()) == {
            "hello": {
                "protocol": PROTOCOL,
                "max_in_flight": 64,
                "capacity": 500,
                "max_message_bytes": 4096,
            }
        }
        await ws.send(json.dumps({"id": "a", "payload": "one", "key": "k"}))
        await ws.send(
            json.dumps(
                [
                    {"id": "b", "payload_b64": "AP8=", "headers": [{"name": "h", "value": "v"}]},
                    {"id": "c", "payload": "three", "idempotency_key": "ignored"},
                ]
            )
        )
        a, b, c = await take(src, 3)
        assert [a.out(), b.out(), c.out()] == [
            OutRecord(b"one", b"k"),
            OutRecord(b"\x00\xff", None, (("h", b"v"),)),
            OutRecord(b"three"),
        ]
        assert [a.position, b.position, c.position] == [0, 1, 2]
        # Frames are ordered: the answer to a bad message coming first shows no ack went out.
        await ws.send("{")
        assert (await frame(ws))["error"].startswith("not valid JSON")
        await b.ack.ack()
        assert await frame(ws) == {"ack": ["b"]}
        await a.ack.nack()
        await c.ack.ack()
        assert [await frame(ws), await frame(ws)] == [{"nack": ["a"]}, {"ack": ["c"]}]
        await ws.send(json.dumps({"id": "a", "payload": "one again"}))  # answered: free again
        (again,) = await take(src, 1)
        await again.ack.ack()
        assert await frame(ws) == {"ack": ["a"]}
    s = src.statistics()
    assert (s.admitted, s.acked, s.nacked, s.refused, s.used) == (4, 3, 1, 1, 0)


async def test_batches_settle_without_handles_across_two_connections(source: Any) -> None:
    """ack_all / nack_all settle a batch without a handle per record (one object a record):
    each connection gets one frame of its ids, as its records' ack() / nack() would send;
    settling twice is refused."""
    src = await source()
    async with raw(src.url) as one, raw(src.url) as two:
        await one.send(json.dumps([{"id": f"a{i}", "payload": "x"} for i in range(3)]))
        await until(lambda: src.statistics().queued == 3, "the first message admitted")
        await two.send(json.dumps([{"id": f"b{i}", "payload": "y"} for i in range(3)]))
        got = await take(src, 6)
        assert [r.position for r in got] == [0, 1, 2, 3, 4, 5]
        await got[4].ack.ack()  # a handle made for this one; the rest settle as batches
        await ack_all([got[0], got[2], got[3]])
        await nack_all([got[1], got[5]])
        with pytest.raises(AckError):
            await ack_all(got[:1])
        assert [await frame(one), await frame(one)] == [{"nack": ["a1"]}, {"ack": ["a0", "a2"]}]
        assert [await frame(two), await frame(two)] == [
            {"nack": ["b2"]},
            {"ack": ["b1", "b0"]},
        ]
    assert src.statistics().used == 0


async def test_a_connections_messages_come_as_one_batch_of_columns(source: Any) -> None:
    """What one connection sent is handed out as a RecordBatch: payloads as a column (keys and
    headers None when no record has any), positions running on across its messages and
    into the part of a message left for the next batch; ack_all of the batch is one frame of
    its ids, nack_all one nack frame; a record settled by hand refuses the batch."""
    src = await source()
    async with raw(src.url) as ws:
        await ws.send(
            encode_message([OutRecord(bytes([i, 255])) for i in range(3)], ["a", "b", "c"])
        )
        await ws.send(json.dumps([{"id": "d", "payload": "four"}, {"id": "e", "payload": "5"}]))
        await ws.send(
            json.dumps(
                [
                    {"id": "f", "payload": "six", "key": "k"},
                    {"id": "g", "payload_b64": "/w==", "headers": [{"name": "h", "value": "v"}]},
                    {"id": "h", "payload": "eight"},
                ]
            )
        )
        await until(lambda: src.statistics().queued == 8, "the three messages admitted")
        first = await src.next_batch(4)
        assert isinstance(first, RecordBatch)
        assert first.payloads == [b"\x00\xff", b"\x01\xff", b"\x02\xff", b"four"]
        assert (first.keys, first.headers, list(first.positions)) == (None, None, [0, 1, 2, 3])
        rest = await src.next_batch(10)
        assert isinstance(rest, RecordBatch)
        assert [r.out() for r in rest] == [
            OutRecord(b"5"),
            OutRecord(b"six", b"k"),
            OutRecord(b"\xff", None, (("h", b"v"),)),
            OutRecord(b"eight"),
        ]
        assert [r.position for r in rest] == [4, 5, 6, 7]
        await rest[0].ack.ack()
        assert await frame(ws) == {"ack": ["e"]}
        with pytest.raises(AckError):
            await ack_all(rest)
        await nack_all(rest[1:])
        assert await frame(ws) == {"nack": ["f", "g", "h"]}
        await ack_all(first)
        assert await frame(ws) == {"ack": ["a", "b", "c", "d"]}
        with pytest.raises(AckError):
            await ack_all(first)
    s = src.statistics()
    assert (s.admitted, s.acked, s.nacked, s.used) == (8, 5, 3, 0)


async def test_a_connection_closed_drops_only_its_records_not_handed_out(source: Any) -> None:
    src = await source()
    async with raw(src.url) as one:
        async with raw(src.url) as two:
            await one.send(json.dumps([{"id": f"a{i}", "payload": "x"} for i in range(4)]))
            await until(lambda: src.statistics().queued == 4, "the first message admitted")
            await two.send(json.dumps([{"id": f"b{i}", "payload": "y"} for i in range(3)]))
            await until(lambda: src.statistics().queued == 7, "the second message admitted")
            (a0,) = await src.next_batch(1)
        await until(lambda: src.statistics().dropped == 3, "two's records dropped")
        got = await src.next_batch(10)
        assert [r.position for r in got] == [1, 2, 3]
        await ack_all([a0, *got])
        assert await frame(one) == {"ack": ["a0", "a1", "a2", "a3"]}
    s = src.statistics()
    assert (s.admitted, s.dropped, s.acked, s.used, s.queued) == (7, 3, 4, 0, 0)


async def test_sink_sends_ids_and_idempotency_keys_and_resends_a_nack_unchanged() -> None:
    """Against a bare server speaking the protocol: the nacked record comes again with the
    same id and the same idempotency key (a receiver can drop the repeat)."""
    received: list[list[dict[str, Any]]] = []

    async def handler(ws: ServerConnection) -> None:
        hello = {"protocol": PROTOCOL, "max_in_flight": 100, "capacity": 100}
        await ws.send(json.dumps({"hello": hello | {"max_message_bytes": 1 << 20}}))
        async for message in ws:
            objs = json.loads(message)
            received.append(objs)
            ids = [o["id"] for o in objs]
            if len(received) == 1:
                await ws.send(json.dumps({"nack": ids[1:2]}))
                ids = ids[:1] + ids[2:]
            await ws.send(json.dumps({"ack": ids}))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        sink = WebSocketSink(f"ws://127.0.0.1:{port}/any", backoff=QUICK)
        await sink.start()
        recs = [OutRecord(b"a", b"k", (("h", b"v"),)), OutRecord(b"\xff"), OutRecord(b"c")]
        await sink.write_batch(recs)
        await sink.stop()
    first, second = received
    assert [o["id"] for o in first] == ["0", "1", "2"]
    assert [o["idempotency_key"] for o in first] == [idempotency_key(r) for r in recs]
    key = idempotency_key(recs[1])
    assert first[1] == {"id": "1", "payload_b64": "/w==", "idempotency_key": key}
    assert second == [first[1]], "the nacked record, byte for byte the same object"
    s = sink.statistics()
    assert (s.sent, s.confirmed, s.resent, s.nacked) == (4, 3, 1, 1)
    assert json.loads(encode_message(recs[:1], ["x"])) == [first[0] | {"id": "x"}]


def test_a_record_reads_and_dedupes_as_in_the_http_batch_format() -> None:
    """One record format and one idempotency key for HTTP and WebSocket: a record forwarded
    from one to the other keeps its key."""
    from byteor.adapters import http

    recs = [
        OutRecord(b"text", b"user-1", (("trace", b"7"), ("trace", b"8"))),
        OutRecord(b"\x00\xff", b"\xfe", (("bin", b"\xff"),)),
        OutRecord(b"", None, (("Idempotency-Key", b"order-17"),)),
    ]
    keys = [idempotency_key(r) for r in recs]
    assert keys == [http.idempotency_key(r) for r in recs] and keys[2] == "order-17"
    lines = [json.loads(x) for x in http.encode_batch(recs, keys=keys).splitlines()]
    objs = json.loads(encode_message(recs, ["a", "b", "c"]))
    assert [o.pop("id") for o in objs] == ["a", "b", "c"]
    assert objs == lines


def test_a_payload_alone_is_written_as_the_encoder_writes_its_object() -> None:
    """The sink writes a record that is its payload alone straight as text: the same text
    the JSON encoder makes of its object (text escaped, bytes in base64, the same key), and
    the objects of other records or ids unchanged."""
    from byteor.adapters._jsonrecord import payload_key, record_object

    recs = [
        OutRecord(b'quote " backslash \\ tab \t nl \n bell \x07 \xc3\xa9 \xe2\x82\xac'),
        OutRecord(b"\x00\xff\x80 not UTF-8"),
        OutRecord(b""),
        OutRecord(b"keyed", b"k"),
        OutRecord(b"headed", None, (("h", b"v"),)),
        OutRecord(b"id needs escaping"),
    ]
    ids = ["0", "1", "x-2.y:3_Z", "4", "5", 'a "quoted" id']
    objs = [
        record_object(r, idempotency_key(r)) | {"id": i} for r, i in zip(recs, ids, strict=True)
    ]
    expected = json.dumps(objs, ensure_ascii=False, separators=(",", ":"))
    assert encode_message(recs, ids) == expected
    assert payload_key(b"abc") == idempotency_key(OutRecord(b"abc"))
    assert payload_key(b"abc") != idempotency_key(OutRecord(b"abc", b""))


async def test_on_nack_raise_fails_the_write_as_retriable(source: Any) -> None:
    src = await source()
    sink = WebSocketSink(src.url, on_nack="raise", backoff=QUICK)
    await sink.start()
    write = asyncio.create_task(sink.write_batch([OutRecord(b"x"), OutRecord(b"y")]))
    x, y = await take(src, 2)
    await y.ack.ack()
    await x.ack.nack()
    with pytest.raises(AdapterError, match="nacked 1 records") as info:
        await write
    assert info.value.retriable
    write = asyncio.create_task(sink.write_batch([OutRecord(b"z")]))
    (z,) = await take(src, 1)  # a new connection, a new write
    assert z.payload == b"z"
    await z.ack.ack()
    await asyncio.wait_for(write, 10)
    assert sink.statistics().reconnects == 1
    await sink.stop()


# -- through the sink ----------------------------------------------------------------------


async def test_ten_thousand_records_round_trip_in_order(source: Any) -> None:
    sent = [
        OutRecord(
            f"payload-{i}".encode() + (b"\xff" if i % 3 == 0 else b""),
            f"k{i % 7}".encode() if i % 5 else None,
            (("n", str(i).encode()), ("bin", bytes([i % 256]))),
        )
        for i in range(10_000)
    ]
    src = await source(max_in_flight=1_000)
    sink = WebSocketSink(src.url, message_records=250, backoff=QUICK)
    await sink.start()
    got: list[OutRecord] = []

    async def consume() -> None:
        while len(got) < len(sent):
            for r in await src.next_batch(700, timeout_s=5.0):
                got.append(r.out())
                await r.ack.ack()

    consumer = asyncio.create_task(consume())
    try:
        await sink.write_batch(sent)
        await asyncio.wait_for(consumer, 30)
        assert got == sent  # exact content, in order, each once
        assert await src.next_batch(10) == []
        s = src.statistics()
        assert (s.admitted, s.acked, s.used, s.slowed, s.peak <= 1_000) == (
            10_000, 10_000, 0, 0, True,
        )  # fmt: skip
        k = sink.statistics()
        assert (k.sent, k.confirmed, k.resent, k.in_flight) == (10_000, 10_000, 0, 0)
    finally:
        consumer.cancel()
        await sink.stop()


async def test_a_write_returns_only_after_downstream_acks(source: Any) -> None:
    src = await source()
    sink = WebSocketSink(src.url, backoff=QUICK)
    await sink.start()
    write = asyncio.create_task(sink.write_batch([OutRecord(f"r{i}".encode()) for i in range(6)]))
    got = await take(src, 6)
    assert src.statistics().admitted == 6
    assert sink.statistics().confirmed == 0 and not write.done()
    for r in got[:4]:
        await r.ack.ack()
    await until(lambda: sink.statistics().confirmed == 4, "4 acks at the sink")
    assert not write.done(), "2 records are not acked downstream yet"
    for r in got[4:]:
        await r.ack.ack()
    await asyncio.wait_for(write, 10)
    assert sink.health().connected
    write = asyncio.create_task(sink.write_batch([OutRecord(b"never acked")]))
    await take(src, 1)
    await sink.stop()
    with pytest.raises(AdapterError, match="stopped during a write"):
        await asyncio.wait_for(write, 10)
    assert not sink.health().connected


async def test_the_sink_keeps_to_the_servers_max_in_flight(source: Any) -> None:
    src = await source(max_in_flight=50)
    sink = WebSocketSink(src.url, max_in_flight=1_000, message_records=20, backoff=QUICK)
    await sink.start()
    sent = [OutRecord(f"r{i}".encode()) for i in range(400)]
    write = asyncio.create_task(sink.write_batch(sent))
    got: list[bytes] = []
    while len(got) < 400:
        batch = await src.next_batch(30, timeout_s=5)
        assert src.statistics().used <= 50
        got += [r.payload for r in batch]
        for r in batch:
            await r.ack.ack()
    await asyncio.wait_for(write, 10)
    assert got == [r.payload for r in sent]
    assert src.statistics().peak == 50, "the window was used, and never more"
    assert src.statistics().slowed == 0 and sink.statistics().slowed == 0
    await sink.stop()


async def test_a_client_over_its_limit_is_told_to_slow_down_and_order_is_kept(
    source: Any,
) -> None:
    src = await source(max_in_flight=5, retry_after_ms=250)
    async with raw(src.url) as ws:
        for i in range(0, 8, 2):  # 4 messages of 2: the third does not fit
            await ws.send(encode_message([OutRecord(b"x"), OutRecord(b"y")], [f"{i}", f"{i + 1}"]))
        slow = await frame(ws)
        assert slow["slow"] == ["4", "5"] and slow["retry_after_ms"] == 250
        assert slow["resume_from"] == "4"
        assert "4 records unanswered; at most 5 (max_in_flight)" in slow["reason"]
        # "6" fits, but would overtake "4": refused until "4" comes again
        again = await frame(ws)
        assert again["slow"] == ["6", "7"] and again["resume_from"] == "4"
        assert "from id '4' first" in again["reason"]
        assert src.statistics().admitted == 4
        for r in await take(src, 4):
            await r.ack.ack()
        assert (await frame(ws))["ack"] == ["0", "1", "2", "3"]
        await ws.send(encode_message([OutRecord(b"x"), OutRecord(b"y")], ["4", "5"]))
        await ws.send(encode_message([OutRecord(b"x"), OutRecord(b"y")], ["6", "7"]))
        await until(lambda: src.statistics().admitted == 8, "4 to 7 admitted")
        assert [r.position for r in await take(src, 4)] == [4, 5, 6, 7]
    assert src.statistics().slowed == 2


async def test_capacity_is_shared_and_paused_means_slow(source: Any) -> None:
    src = await source(capacity=30, max_in_flight=30, retry_after_ms=10)
    sinks = [WebSocketSink(src.url, message_records=10, backoff=QUICK) for _ in range(2)]
    sent = [[OutRecord(f"{s}-{i}".encode()) for i in range(60)] for s in range(2)]
    for k in sinks:
        await k.start()
    src.pause()
    writes = [asyncio.create_task(k.write_batch(b)) for k, b in zip(sinks, sent, strict=True)]
    await until(lambda: src.statistics().slowed >= 4, "slow frames while paused")
    assert src.statistics().admitted == 0
    src.resume()
    got: list[bytes] = []
    while len(got) < 120:
        batch = await src.next_batch(7, timeout_s=5)
        assert src.statistics().used <= 30
        got += [r.payload for r in batch]
        for r in batch:
            await r.ack.ack()
    await asyncio.wait_for(asyncio.gather(*writes), 10)
    for s in range(2):  # each connection's records in its order, each once
        assert [p for p in got if p.startswith(f"{s}-".encode())] == [r.payload for r in sent[s]]
    assert src.statistics().peak == 30
    assert sum(k.statistics().slowed for k in sinks) > 0
    assert sum(k.statistics().resent for k in sinks) == sum(k.statistics().slowed for k in sinks)
    for k in sinks:
        await k.stop()


async def test_a_nack_while_slowed_waits_behind_the_record_the_server_asked_for(
    source: Any,
) -> None:
    """Record 2 is nacked while the server, paused, keeps refusing 4 and 5: the sink's next
    message must start with 4 (``resume_from``), else the server would refuse it forever."""
    src = await source(capacity=4, retry_after_ms=5)
    sink = WebSocketSink(src.url, message_records=2, backoff=QUICK)
    await sink.start()
    write = asyncio.create_task(sink.write_batch([OutRecord(f"r{i}".encode()) for i in range(6)]))
    first = await take(src, 4)
    src.pause()
    for r in first[:2]:
        await r.ack.ack()
    await until(lambda: sink.statistics().slowed >= 2, "4 and 5 refused while paused")
    await first[2].ack.nack()
    await until(lambda: sink.statistics().nacked == 1, "the nack at the sink")
    slowed = sink.statistics().slowed
    await until(lambda: sink.statistics().slowed > slowed + 2, "more refusals while paused")
    src.resume()
    rest = await take(src, 3)
    assert [r.payload for r in rest] == [b"r4", b"r5", b"r2"]
    for r in [first[3], *rest]:
        await r.ack.ack()
    await asyncio.wait_for(write, 10)
    await sink.stop()


async def test_nacks_while_slowed_still_deliver_everything_in_first_send_order(
    source: Any,
) -> None:
    """Two sinks share a capacity of 10 (so slow frames come) while downstream nacks every
    7th record once: a nacked record's resend waits behind the records a slow frame asked
    for, nothing livelocks, each record arrives once (nacked ones twice), and each sink's
    records first arrive in the order it sent them."""
    src = await source(capacity=10, retry_after_ms=1)
    sinks = [WebSocketSink(src.url, message_records=4, backoff=QUICK) for _ in range(2)]
    sent = [[f"{s}-{i}".encode() for i in range(60)] for s in range(2)]
    for k in sinks:
        await k.start()
    writes = [
        asyncio.create_task(k.write_batch([OutRecord(p) for p in b]))
        for k, b in zip(sinks, sent, strict=True)
    ]
    seen: list[bytes] = []
    nacked: set[bytes] = set()
    done = asyncio.gather(*writes)
    while not done.done():
        for r in await src.next_batch(3, timeout_s=0.2):
            seen.append(r.payload)
            if int(r.payload.split(b"-")[1]) % 7 == 3 and r.payload not in nacked:
                nacked.add(r.payload)
                await r.ack.nack()
            else:
                await r.ack.ack()
    await done
    assert len(nacked) == 2 * 9
    assert sorted(seen) == sorted(sent[0] + sent[1] + list(nacked)), "each once, nacked twice"
    for s in range(2):
        mine = [p for p in seen if p.startswith(f"{s}-".encode())]
        assert list(dict.fromkeys(mine)) == sent[s], "first arrivals in the order sent"
    assert src.statistics().peak <= 10 and src.statistics().slowed > 0
    for k in sinks:
        assert k.statistics().nacked == 9
        await k.stop()


# -- connections dropped and processes killed -----------------------------------------------


async def test_a_dropped_connection_mid_batch_loses_nothing_and_repeats_only_what_was_out(
    source: Any,
) -> None:
    """40 records in flight when the connection dies: 15 handed out downstream (10 acked,
    5 not), 25 queued. The source drops the 25 queued; the sink reconnects and sends all
    40 again: downstream sees exactly the 5 unconfirmed handed-out records twice."""
    src = await source()
    fwd = Forwarder(src.port)
    await fwd.start()
    url = f"ws://127.0.0.1:{fwd.port}/records"
    sink = WebSocketSink(url, max_in_flight=40, message_records=10, backoff=QUICK)
    await sink.start()
    sent = [OutRecord(f"r{i}".encode()) for i in range(100)]
    write = asyncio.create_task(sink.write_batch(sent))
    try:
        first = await take(src, 15)
        for r in first[:10]:
            await r.ack.ack()
        await until(
            lambda: sink.statistics().confirmed == 10 and src.statistics().admitted == 50,
            "10 confirmed and the window refilled",
        )
        assert sink.statistics().in_flight == 40
        fwd.cut()
        await until(lambda: src.statistics().dropped == 35, "the queued records dropped")
        for r in first[10:]:
            await r.ack.ack()  # settled downstream, but the connection that wanted it is gone
        rest: list[Record] = []
        while len(rest) < 90:
            batch = await take(src, 10)
            rest += batch
            for r in batch:
                await r.ack.ack()
        await asyncio.wait_for(write, 10)
        downstream = [r.payload for r in first + rest]
        assert downstream == [r.payload for r in sent[:15] + sent[10:]]
        k = sink.statistics()
        assert (k.resent, k.reconnects, k.confirmed) == (40, 1, 100), "resent = in flight"
        assert src.statistics().acked == 10 + 90
    finally:
        write.cancel()
        await sink.stop()
        await fwd.close()


SERVER = """
import asyncio, sys
from byteor.adapters.websocket import WebSocketSource

async def main() -> None:
    port, ack_first = int(sys.argv[1]), int(sys.argv[2])
    src = WebSocketSource(port=port)
    await src.start()
    print("ready", flush=True)
    acked = 0
    while True:
        for r in await src.next_batch(100, timeout_s=1.0):
            if ack_first == 0 or acked < ack_first:  # then it takes records, acks no more
                await r.ack.ack()
                acked += 1
                print("ack", r.payload.decode(), flush=True)

asyncio.run(main())
"""


async def test_a_source_process_killed_mid_stream_and_restarted_gets_exactly_the_unacked() -> None:
    """The source process acks 30 records, then holds the next 20 (the sink's window) and is
    killed with SIGKILL. Restarted on the same port, it gets exactly records 30..99 in order:
    the 20 resent and the 50 never sent."""
    port = free_port()
    sent = [OutRecord(f"r{i}".encode()) for i in range(100)]

    async def server(ack_first: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVER, str(port), str(ack_first), stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        return proc

    first = await server(30)
    second = None
    sink = WebSocketSink(
        f"ws://127.0.0.1:{port}/records", max_in_flight=20, message_records=10, backoff=QUICK
    )
    await sink.start()
    writing = asyncio.create_task(sink.write_batch(sent))
    try:
        await until(
            lambda: sink.statistics().confirmed == 30 and sink.statistics().sent == 50,
            "30 acked, 20 more in flight",
            30,
        )
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert first.stdout is not None
        acked1 = (await first.stdout.read()).split()
        assert acked1 == [w for r in sent[:30] for w in (b"ack", r.payload)]
        second = await server(0)
        assert second.stdout is not None
        acked2 = []
        while len(acked2) < 70:
            acked2.append((await asyncio.wait_for(second.stdout.readline(), 30)).split()[1])
        await asyncio.wait_for(writing, 30)
        assert acked2 == [r.payload for r in sent[30:]], "from the first unacked on, once"
        k = sink.statistics()
        assert (k.resent, k.reconnects, k.confirmed) == (20, 1, 100), "resent = in flight"
    finally:
        writing.cancel()
        await sink.stop()
        for p in (first, second):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()


# -- refusals ------------------------------------------------------------------------------


async def test_a_bearer_token_is_checked_at_the_handshake(source: Any) -> None:
    src = await source(token="s3cret")
    for auth in [None, "Bearer wrong", "Basic s3cret", "Bearer"]:
        headers = {"Authorization": auth} if auth else {}
        with pytest.raises(InvalidStatus) as info:
            async with connect(src.url, additional_headers=headers):
                pass
        resp = info.value.response
        assert resp.status_code == 401, auth
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"bearer token" in resp.body
    sink = WebSocketSink(src.url, token="wrong", backoff=QUICK)
    await sink.start()
    with pytest.raises(AdapterAuthError) as denied:
        await sink.write_batch([OutRecord(b"x")])
    assert str(denied.value).startswith(
        f"websocket: {src.url} refused the credentials (401 Unauthorized"
    )
    assert src.statistics().refused == 5, "401 is not retried"
    assert not sink.health().connected and "refused the credentials" in sink.health().detail
    await sink.stop()
    good = WebSocketSink(src.url, token="s3cret", backoff=QUICK)
    await good.start()
    write = asyncio.create_task(good.write_batch([OutRecord(b"in")]))
    (rec,) = await take(src, 1)
    await rec.ack.ack()
    await write
    await good.stop()
    assert src.statistics().admitted == 1


async def test_a_wrong_path_is_not_found(source: Any) -> None:
    src = await source()
    url = src.url.replace("/records", "/nope")
    sink = WebSocketSink(url, backoff=QUICK)
    await sink.start()
    with pytest.raises(AdapterNotFound) as info:
        await sink.write_batch([OutRecord(b"x")])
    assert str(info.value).startswith(
        f"websocket: path '/nope' does not exist on ws://127.0.0.1:{src.port} (404 Not Found"
    )
    await sink.stop()


BAD_MESSAGES: list[tuple[str | bytes, str, list[str]]] = [
    (b'{"id": "b", "payload": "x"}', "binary messages are not accepted", []),
    ('{"id": "a", "payload": "x"', "not valid JSON (Expecting", []),
    ("[" * 100_000, "not valid JSON (RecursionError", []),
    ("5", "a message is a record object or an array of them, got int", []),
    ('{"payload": "x"}', "the record: id must be a non-empty string", []),
    ('{"id": 7, "payload": "x"}', "the record: id must be a non-empty string", []),
    ('{"id": "", "payload": "x"}', "the record: id must be a non-empty string", []),
    ('{"id": "a", "paylod": "x"}', "the record: unknown field 'paylod'", ["a"]),
    ('{"id": "a", "payload_b64": "!!"}', "the record: payload_b64 is not valid base64", ["a"]),
    (
        '[{"id": "a", "payload": "x"}, {"id": "a", "payload": "y"}]',
        "records[1]: id 'a' is already unanswered",
        ["a", "a"],
    ),
    (
        '[{"id": "a", "payload": "x"}, {"id": "b", "payload": 5}]',
        "records[1]: payload must be a string, got int",
        ["a", "b"],
    ),
    # What the column reading of a message starts on, and leaves to the careful one
    (
        '[{"id": "a", "payload_b64": "AA=="}, {"id": "b", "payload_b64": "A A="}]',
        "records[1]: payload_b64 is not valid base64",
        ["a", "b"],
    ),
    (
        '[{"id": "a", "payload_b64": "AA=="}, {"id": "b", "payload_b64": "AA==", "payload": ""}]',
        "records[1]: give payload or payload_b64, not both",
        ["a", "b"],
    ),
    (
        '[{"id": "a", "payload_b64": null}]',
        "records[0]: a record needs payload (UTF-8 text) or payload_b64",
        ["a"],
    ),
    (
        json.dumps([{"id": "a", "payload": "x"}, {"id": "b" * 257, "payload": "y"}]),
        "records[1]: id must be a non-empty string of at most 256 characters",
        ["a"],
    ),
    (
        '[{"id": "a", "payload": "x"}, ["id", "payload"]]',
        "records[1]: a record must be a JSON object, got list",
        ["a"],
    ),
    (
        '[{"id": "a", "payload": "x"}, {"id": "b", "payload": "\\ud800"}]',
        "records[1]: payload is not valid Unicode (a lone surrogate)",
        ["a", "b"],
    ),
    (
        json.dumps([{"id": str(i), "payload": ""} for i in range(9)]),
        "a message of 9 records can never be admitted",
        [str(i) for i in range(9)],
    ),
]


async def test_malformed_messages_get_error_frames_and_admit_nothing(source: Any) -> None:
    src = await source(max_in_flight=8, max_message_bytes=1 << 20)
    async with raw(src.url) as ws:
        for message, error, ids in BAD_MESSAGES:
            await ws.send(message)
            answer = await frame(ws)
            assert answer["error"].startswith(error), (message[:60], answer)
            assert answer["ids"] == ids
            assert src.statistics().admitted == 0
        await ws.send('{"id": "z", "payload": "still here"}')
        assert [r.out() for r in await take(src, 1)] == [OutRecord(b"still here")]
    assert src.statistics().refused == len(BAD_MESSAGES)


async def test_an_oversized_message_closes_that_connection_only(source: Any) -> None:
    src = await source(max_message_bytes=2048)
    async with raw(src.url) as bystander, raw(src.url) as offender:
        await offender.send(encode_message([OutRecord(b"x" * 3000)], ["big"]))
        with pytest.raises(ConnectionClosedError) as info:
            await offender.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        await bystander.send(encode_message([OutRecord(b"small")], ["s"]))
        (rec,) = await take(src, 1)
        assert rec.payload == b"small"
        await rec.ack.ack()
        assert await frame(bystander) == {"ack": ["s"]}
    assert src.statistics().refused == 1 and src.statistics().admitted == 1
    sink = WebSocketSink(src.url, backoff=QUICK)
    await sink.start()
    with pytest.raises(AdapterError, match=r"a record of \d+ bytes .* takes in a message \(2048"):
        await sink.write_batch([OutRecord(b"ok"), OutRecord(b"y" * 3000)])
    await sink.stop()
    assert src.statistics().admitted == 1, "a batch with a record too large sends nothing"


async def test_big_records_go_fewer_to_a_message(source: Any) -> None:
    src = await source(max_message_bytes=4096)
    sink = WebSocketSink(src.url, message_records=10, backoff=QUICK)
    await sink.start()
    sent = [OutRecord(bytes([65 + i]) * 1500) for i in range(7)]
    write = asyncio.create_task(sink.write_batch(sent))
    got: list[bytes] = []
    while len(got) < 7:
        for r in await src.next_batch(10, timeout_s=5):
            got.append(r.payload)
            await r.ack.ack()
    await asyncio.wait_for(write, 10)
    assert got == [r.payload for r in sent]
    assert src.statistics().refused == 0, "no message over the limit was sent"
    await sink.stop()


async def test_sink_against_a_closed_port_says_so() -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/records"
    waits: list[float] = []

    async def sleep(w: float) -> None:
        waits.append(w)

    sink = WebSocketSink(url, backoff=Backoff(0.05, 1.0, jitter=0.0, max_attempts=3), sleep=sleep)
    await sink.start()
    with pytest.raises(AdapterUnreachable) as info:
        await sink.write_batch([OutRecord(b"x")])
    assert info.value.retriable
    assert str(info.value).startswith(f"websocket: cannot reach {url} (ConnectionRefusedError")
    assert waits == [0.05, 0.1], "retried with exponential backoff first"
    assert not sink.health().connected
    await sink.stop()


async def test_a_server_that_is_not_a_byteor_source_is_named() -> None:
    async def echo(ws: ServerConnection) -> None:
        await ws.send("hi")
        await ws.wait_closed()

    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        sink = WebSocketSink(f"ws://127.0.0.1:{port}/", backoff=QUICK)
        await sink.start()
        with pytest.raises(AdapterError, match=f"is not a byteor WebSocket source .*{PROTOCOL}"):
            await sink.write_batch([OutRecord(b"x")])
        await sink.stop()


def test_registry_and_config() -> None:
    adapter = load_adapter("websocket")
    assert isinstance(adapter, WebSocketAdapter)
    decl = adapter.declaration()
    assert decl.source is not None and decl.sink is not None and decl.extra == "websocket"
    _, findings = adapter.config.validate({"on_nack": "drop", "max_in_flight": "many"})
    assert sorted(f.code for f in findings) == ["AD503", "AD504"]
    assert isinstance(adapter.source({"port": "0", "token": "t"}), WebSocketSource)
    assert isinstance(adapter.sink({"url": "ws://127.0.0.1:1/x", "on_nack": "raise"}), Sink)
    with pytest.raises(AdapterConfigError, match="a sink needs config 'url'"):
        adapter.sink({})
    with pytest.raises(AdapterConfigError, match="must be a ws:// or wss:// URL"):
        adapter.sink({"url": "http://x"})


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        src = WebSocketSource(port=s.getsockname()[1])
        with pytest.raises(AdapterError, match=r"cannot listen on 127.0.0.1:\d+ .*another server"):
            await src.start()
