"""The NATS adapter against the real nats-server (JetStream) on 127.0.0.1:4222.

Every test works on its own stream and subjects and deletes the stream afterwards. The
restart and auth tests run a nats-server of their own on a free port.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from _net import free_port, wait_listening
from nats.aio.client import Client as NATS
from nats.errors import NotJSMessageError
from nats.js.api import ConsumerInfo, StreamConfig

from byteor.adapters import (
    AckError,
    AdapterAuthError,
    AdapterConfigError,
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
from byteor.adapters.nats import (
    KEY_HEADER,
    MSG_ID_HEADER,
    PACKED_HEADER,
    ConsumerSettings,
    JetStreamSink,
    JetStreamSource,
    NatsAdapter,
    NatsCoreSink,
    NatsCoreSource,
    NatsOptions,
    decode_message,
    encode_headers,
    msg_id,
)
from byteor.testing import ConformanceTests, Harness

URL = "nats://127.0.0.1:4222"
OPTS = NatsOptions((URL,))
NATS_SERVER = "/usr/sbin/nats-server"


def _tag() -> str:
    return uuid.uuid4().hex[:12]


class JetStreamHarness(Harness):
    """A fresh stream ``BT_<tag>`` capturing the one subject ``bt.<tag>``."""

    def __init__(self) -> None:
        tag = _tag()
        self.stream, self.subject = f"BT_{tag}", f"bt.{tag}"
        self.nc: NATS | None = None

    async def open(self, url: str = URL, *, create: bool = True) -> None:
        self.nc = await nats.connect(url)
        if create:
            config = StreamConfig(name=self.stream, subjects=[self.subject])
            await self.nc.jetstream().add_stream(config)

    @property
    def js(self):  # type: ignore[no-untyped-def]
        assert self.nc is not None
        return self.nc.jetstream()

    async def new_source(self, durable: str = "g", ack_wait_s: float = 30.0) -> Source:
        src = JetStreamSource(
            OPTS, ConsumerSettings(self.stream, durable, self.subject, ack_wait_s=ack_wait_s)
        )
        await src.start()
        return src

    async def new_sink(self) -> Sink:
        sink = JetStreamSink(OPTS, self.subject, stream=self.stream)
        await sink.start()
        return sink

    async def produce(self, records: Sequence[OutRecord]) -> None:
        futures = [
            await self.js.publish_async(self.subject, r.payload, headers=encode_headers(r) or None)
            for r in records
        ]
        for f in futures:
            await f

    async def written(self) -> list[OutRecord]:
        """What the stream holds, without the Nats-Msg-Id header the sink adds."""
        state = (await self.js.stream_info(self.stream)).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            m = await self.js.get_msg(self.stream, seq)
            headers = {k: v for k, v in (m.headers or {}).items() if k != MSG_ID_HEADER}
            out.append(decode_message(m.data or b"", headers))
        return out

    async def rejecting_sink(self) -> Sink | None:
        # The server refuses every record: they would not land in the stream it expects.
        sink = JetStreamSink(OPTS, self.subject, stream=self.stream + "_ELSEWHERE")
        await sink.start()
        return sink

    async def consumer(self, durable: str = "g") -> ConsumerInfo:
        return await self.js.consumer_info(self.stream, durable)

    async def close(self) -> None:
        if self.nc is not None:
            try:
                await self.js.delete_stream(self.stream)
            finally:
                await self.nc.close()


@pytest.fixture
async def harness() -> AsyncIterator[JetStreamHarness]:
    h = JetStreamHarness()
    await h.open()
    yield h
    await h.close()


class TestJetStreamConformance(ConformanceTests):
    pass  # the module-level `harness` fixture serves


def _without_id(rec: OutRecord) -> OutRecord:
    return OutRecord(rec.payload, rec.key, tuple(h for h in rec.headers if h[0] != MSG_ID_HEADER))


async def _drain(src: Source, want: int, deadline_s: float = 10.0) -> list[Record]:
    """Records until ``want`` arrived (acking each), or the deadline passed."""
    end = time.monotonic() + deadline_s
    got: list[Record] = []
    while len(got) < want and time.monotonic() < end:
        for r in await src.next_batch(want - len(got), timeout_s=0.5):
            got.append(r)
            await r.ack.ack()
    return got


# --- records on the wire -------------------------------------------------------------------


def test_text_headers_travel_as_nats_headers_and_the_rest_packed() -> None:
    plain = OutRecord(b"p", b"user-7", (("trace", b"abc"), ("n", b""), ("Nats-Msg-Id", b"x1")))
    assert encode_headers(plain) == {
        "trace": "abc",
        "n": "",
        "Nats-Msg-Id": "x1",
        KEY_HEADER: "user-7",
    }
    for odd in (
        OutRecord(b"p", b"\xff\x00", (("a", b"1"),)),  # binary key
        OutRecord(b"p", None, (("a", b"1"), ("a", b"2"))),  # a repeated name
        OutRecord(b"p", None, (("a", b" padded"),)),  # nats-py would strip it
        OutRecord(b"p", None, (("a", b"line\r\nbreak"),)),
        OutRecord(b"p", None, (("bad name", b"v"),)),
        OutRecord(b"p", None, (("Byteor-Key", b"v"),)),  # our reserved prefix
        OutRecord(b"p", b"k", (("\u00e9", b"\xff" * 70_000),)),
    ):
        headers = encode_headers(odd)
        assert list(headers) == [PACKED_HEADER]
        assert decode_message(odd.payload, headers) == odd
    assert decode_message(b"p", encode_headers(plain)) == plain
    assert decode_message(b"", None) == OutRecord(b"")


def test_msg_id_sources() -> None:
    a = OutRecord(b"same", b"k", (("id", b"order-1"),))
    b = OutRecord(b"same", b"k", (("id", b"order-2"),))
    assert msg_id(a, "hash") == msg_id(OutRecord(b"same", b"k", (("id", b"order-1"),)), "hash")
    assert msg_id(a, "hash") != msg_id(b, "hash")
    assert msg_id(OutRecord(b"same", None), "hash") != msg_id(OutRecord(b"same", b""), "hash")
    assert msg_id(OutRecord(b"p", None, ((MSG_ID_HEADER, b"given"),)), "hash") == "given"
    assert msg_id(a, "header:id") == "order-1"
    assert msg_id(a, "none") is None
    with pytest.raises(AdapterError, match="no header 'missing'"):
        msg_id(a, "header:missing")
    with pytest.raises(AdapterConfigError, match="msg_id must be"):
        JetStreamSink(OPTS, "s", msg_id_from="random")


def test_ack_subject_parsed_like_nats_py() -> None:
    from nats.aio.msg import Msg

    from byteor.adapters.nats import _seq_and_pending

    for reply in (
        "$JS.ACK.ORDERS.d.2.1234.17.1732000000000000000.9",
        "$JS.ACK._.ACCHASH.ORDERS.d.2.1234.17.1732000000000000000.9.rAnd0m",
        "$JS.ACK.hub.ACCHASH.ORDERS.d.2.1234.17.1732000000000000000.9",
    ):
        msg = Msg(_client=None, subject="x", reply=reply)  # type: ignore[arg-type]
        meta = msg.metadata
        assert _seq_and_pending(reply) == (meta.sequence.stream, meta.num_pending) == (1234, 9)
    with pytest.raises(NotJSMessageError):
        _seq_and_pending("_INBOX.not.an.ack.subject")


async def test_batches_settle_without_handles_and_nacked_messages_come_back(
    harness: JetStreamHarness,
) -> None:
    sent = [OutRecord(b"r%d" % i, b"k" if i % 2 else None, (("n", b"%d" % i),)) for i in range(6)]
    await harness.produce(sent)
    src = await harness.new_source()
    try:
        got = await src.next_batch(10, timeout_s=1.0)
        assert [_without_id(r.out()) for r in got] == sent
        assert [r.position for r in got] == [1, 2, 3, 4, 5, 6]  # stream sequences
        assert src.health().lag == 0
        await ack_all(got[:2])
        await nack_all(got[2:4])  # nak'ed: delivered again at once
        await got[4].ack.nack()  # through a handle
        await ack_all([got[5]])
        again: list[Record] = []
        while len(again) < 3:
            batch = await src.next_batch(10, timeout_s=1.0)
            assert batch, f"only {len(again)} of the 3 nacked came back"
            again += batch
        assert [_without_id(r.out()) for r in again] == sent[2:5]
        assert [r.position for r in again] == [3, 4, 5]
        with pytest.raises(AckError):
            await ack_all([again[0], got[0]])  # got[0] is acked: the call settles nothing
        await ack_all(again)
        assert await src.next_batch(10, timeout_s=0.3) == []
    finally:
        await src.stop()
    deadline = time.monotonic() + 5
    while (info := await harness.consumer()).num_ack_pending and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # acks are fire-and-forget: the server applies them soon
    assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)


async def test_a_fetch_is_a_batch_of_columns_settled_whole(harness: JetStreamHarness) -> None:
    """A fetch comes as a RecordBatch: its columns from the messages (keys and headers only
    when a message has them), stream sequences when read; nack_all has the same messages
    delivered again, ack_all acks exactly its messages; a batch one of whose records was
    acked on its own is refused whole, and its records settle one by one."""
    sent = [OutRecord(b"a"), OutRecord(b"b", b"k", (("h", b"v"),)), OutRecord(b"c")]
    await harness.produce(sent)
    src = await harness.new_source()

    async def ack_pending(n: int) -> None:
        deadline = time.monotonic() + 5
        while (await harness.consumer()).num_ack_pending != n:  # acks are fire-and-forget
            assert time.monotonic() < deadline, f"never {n} messages waiting for an ack"
            await asyncio.sleep(0.02)

    try:
        got = await src.next_batch(3, timeout_s=1.0)
        assert isinstance(got, RecordBatch) and got.headers is not None
        assert got.payloads == [b"a", b"b", b"c"] and got.keys == [None, b"k", None]
        assert [tuple(h for h in hs if h[0] != MSG_ID_HEADER) for hs in got.headers] == [
            (),
            (("h", b"v"),),
            (),
        ]
        assert list(got.positions) == [1, 2, 3]
        await nack_all(got)
        again: list[Record] = []
        while len(again) < 3:
            batch = await src.next_batch(3, timeout_s=1.0)
            assert batch, f"only {len(again)} of the 3 nacked came back"
            again += batch
        assert [_without_id(r.out()) for r in again] == sent
        assert [r.position for r in again] == [1, 2, 3]
        await ack_all(again)
        await harness.produce([OutRecord(b"plain%d" % i) for i in range(3)])
        plain = await src.next_batch(3, timeout_s=1.0)
        assert isinstance(plain, RecordBatch) and (plain.keys, plain.headers) == (None, None)
        assert plain.payloads == [b"plain%d" % i for i in range(3)]
        await ack_pending(3)  # exactly the plain ones: the acked batch's are done
        await plain[1].ack.ack()
        with pytest.raises(AckError, match="settled on its own"):
            await ack_all(plain)
        await ack_pending(2)
        await ack_all([plain[0], plain[2]])
        await ack_pending(0)
    finally:
        await src.stop()
    info = await harness.consumer()
    assert (info.num_ack_pending, info.num_pending) == (0, 0)


def test_registry_loads_the_nats_adapter_and_its_config() -> None:
    adapter = load_adapter("nats")
    assert isinstance(adapter, NatsAdapter)
    assert adapter.declaration().source == NatsAdapter.capabilities.source
    findings = adapter.config.validate({"subject": "s", "mode": "push", "batchsize": "1"})[1]
    assert sorted(f.code for f in findings) == ["AD501", "AD504"]
    source = adapter.source({"subject": "orders.>", "stream": "ORDERS", "ack_wait_s": "2.5"})
    assert isinstance(source, JetStreamSource)
    assert isinstance(adapter.source({"subject": "s", "mode": "core"}), NatsCoreSource)
    sink = adapter.sink({"subject": "s", "msg_id": "header:id"})
    assert isinstance(sink, JetStreamSink)
    assert isinstance(adapter.sink({"subject": "s", "mode": "core"}), NatsCoreSink)
    with pytest.raises(AdapterConfigError, match="needs config 'stream'"):
        adapter.source({"subject": "s"})
    with pytest.raises(AdapterConfigError, match="msg_id must be"):
        adapter.sink({"subject": "s", "msg_id": "uuid"})
    opts = NatsAdapter.options(
        adapter.config.parse({"subject": "s", "servers": "nats://u:pw@a:4222, b"})
    )
    assert opts.address == "a:4222,b:4222"  # never the credentials


# --- JetStream -----------------------------------------------------------------------------


async def test_ten_thousand_records_round_trip(harness: JetStreamHarness) -> None:
    sent = [
        OutRecord(f"payload-{i}".encode(), f"k{i % 7}".encode(), (("n", str(i).encode()),))
        for i in range(10_000)
    ]
    sink = await harness.new_sink()
    for at in range(0, len(sent), 1000):
        await sink.write_batch(sent[at : at + 1000])
    await sink.stop()
    src = await harness.new_source()
    assert src.health().lag == 10_000
    got: list[OutRecord] = []
    while len(got) < len(sent):
        batch = await src.next_batch(1000, timeout_s=2.0)
        assert batch, f"stalled after {len(got)} records"
        for r in batch:
            got.append(r.out())
            await r.ack.ack()
    assert await src.next_batch(1000, timeout_s=0.2) == []
    assert src.health().lag == 0
    await src.stop()
    assert all(r.headers[-1][0] == MSG_ID_HEADER for r in got)  # the sink's id comes along
    assert [_without_id(r) for r in got] == sent  # exact content, and so per-key order
    info = await harness.consumer()
    assert (info.num_ack_pending, info.num_pending, info.ack_floor.stream_seq) == (0, 0, 10_000)


async def test_nats_msg_id_stores_a_batch_written_twice_once(harness: JetStreamHarness) -> None:
    batch = [OutRecord(f"r{i}".encode(), None, (("id", f"id-{i}".encode()),)) for i in range(50)]
    sink = JetStreamSink(OPTS, harness.subject, stream=harness.stream)
    await sink.start()
    await sink.write_batch(batch)
    await sink.write_batch(batch)  # a retry after, say, a lost confirmation
    assert [r.payload for r in await harness.written()] == [r.payload for r in batch]
    assert sink.duplicates == 50
    assert "duplicates=50" in sink.health().detail
    await sink.stop()
    # With header:id the id comes from the record: a new payload under an old id is a
    # duplicate, and a record without the header is refused.
    by_header = JetStreamSink(OPTS, harness.subject, msg_id_from="header:id")
    await by_header.start()
    await by_header.write_batch([OutRecord(b"new", None, (("id", b"order-1"),))])
    await by_header.write_batch([OutRecord(b"changed", None, (("id", b"order-1"),))])
    assert by_header.duplicates == 1
    with pytest.raises(AdapterError, match="no header 'id'"):
        await by_header.write_batch([OutRecord(b"no id")])
    await by_header.stop()
    # Without an id the same batch is stored twice.
    plain = JetStreamSink(OPTS, harness.subject, msg_id_from="none")
    await plain.start()
    await plain.write_batch(batch[:5])
    await plain.write_batch(batch[:5])
    await plain.stop()
    payloads = [r.payload for r in await harness.written()]
    assert payloads == [r.payload for r in batch] + [b"new"] + [r.payload for r in batch[:5]] * 2


async def test_missing_stream_consumer_and_subject_are_not_found(
    harness: JetStreamHarness,
) -> None:
    src = JetStreamSource(OPTS, ConsumerSettings("NO_SUCH_STREAM", "d", "x"))
    with pytest.raises(AdapterNotFound) as info:
        await src.start()
    assert not info.value.retriable
    assert "nats: stream 'NO_SUCH_STREAM' does not exist on 127.0.0.1:4222" in str(info.value)
    src = JetStreamSource(OPTS, ConsumerSettings(harness.stream, "absent", create=False))
    with pytest.raises(AdapterNotFound, match=f"consumer 'absent' of stream '{harness.stream}'"):
        await src.start()
    sink = JetStreamSink(OPTS, f"nobody.listens.{_tag()}")
    await sink.start()
    with pytest.raises(AdapterNotFound, match=r"a stream for subject 'nobody\.listens"):
        await sink.write_batch([OutRecord(b"x")])
    await sink.stop()


async def test_an_incompatible_existing_consumer_is_refused(harness: JetStreamHarness) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig

    await harness.js.add_consumer(
        harness.stream, ConsumerConfig(durable_name="all", ack_policy=AckPolicy.ALL)
    )
    src = JetStreamSource(OPTS, ConsumerSettings(harness.stream, "all", harness.subject))
    with pytest.raises(AdapterConfigError, match=r"has ack policy .*not explicit"):
        await src.start()


async def test_ack_wait_and_max_ack_pending_come_from_the_config(
    harness: JetStreamHarness,
) -> None:
    await harness.produce([OutRecord(f"r{i}".encode()) for i in range(10)])
    settings = ConsumerSettings(harness.stream, "g", harness.subject, 7.5, 4)
    src = JetStreamSource(OPTS, settings)
    await src.start()
    info = await harness.consumer()
    assert (info.config.ack_wait, info.config.max_ack_pending) == (7.5, 4)
    assert len(await src.next_batch(10, timeout_s=0.5)) == 4  # the server holds the rest back
    await src.stop()


# --- core NATS -----------------------------------------------------------------------------


async def test_core_round_trip_at_most_once() -> None:
    subject = f"bt.core.{_tag()}"
    src = NatsCoreSource(OPTS, subject)
    await src.start()
    sink = NatsCoreSink(OPTS, subject)
    await sink.start()
    sent = [
        OutRecord(f"c{i}".encode(), b"\x00\xff" if i % 2 else b"key", (("i", str(i).encode()),))
        for i in range(1000)
    ]
    for at in range(0, 1000, 100):
        await sink.write_batch(sent[at : at + 100])
    got: list[Record] = []
    batches: list[Sequence[Record]] = []
    end = time.monotonic() + 10
    while len(got) < len(sent) and time.monotonic() < end:
        batches.append(await src.next_batch(1000, timeout_s=0.5))
        got += batches[-1]
    assert [r.out() for r in got] == sent
    assert [r.position for r in got] == list(range(1, 1001))
    first = batches[0]  # columns, as the messages came
    assert isinstance(first, RecordBatch) and first.payloads == [
        r.payload for r in sent[: len(first)]
    ]
    assert first.keys == [r.key for r in sent[: len(first)]]
    await got[0].ack.ack()
    await got[1].ack.nack()  # settles the handle; core NATS delivers nothing again
    assert (got[0].ack.state, got[1].ack.state) == ("acked", "nacked")
    assert await src.next_batch(10, timeout_s=0.2) == []
    assert src.health().connected and "dropped=0" in src.health().detail
    await src.stop()
    await src.stop()
    assert not src.health().connected
    # Nobody subscribed: core NATS confirms the publish and keeps nothing.
    await sink.write_batch([OutRecord(b"lost")])
    await sink.stop()
    caps = NatsAdapter.capabilities_for("core")
    assert caps.source is not None and caps.source.guarantee == "best-effort"
    assert NatsAdapter.capabilities_for("jetstream") == NatsAdapter.capabilities


async def test_core_source_buffer_drops_beyond_its_bound() -> None:
    subject = f"bt.core.{_tag()}"
    src = NatsCoreSource(OPTS, subject, buffer=10)
    await src.start()
    src.pause()  # core NATS cannot be paused: the source keeps buffering, up to its bound
    sink = NatsCoreSink(OPTS, subject)
    await sink.start()
    await sink.write_batch([OutRecord(str(i).encode()) for i in range(25)])
    await sink.stop()
    end = time.monotonic() + 5
    while src.dropped < 15 and time.monotonic() < end:
        await asyncio.sleep(0.01)
    assert await src.next_batch(100) == []
    src.resume()
    got = await src.next_batch(100)
    assert [r.payload for r in got] == [str(i).encode() for i in range(10)]
    assert "dropped=15" in src.health().detail
    await src.stop()


# --- connections ---------------------------------------------------------------------------


async def test_a_server_down_at_start_gives_a_clear_error() -> None:
    port = free_port()  # closed: nothing listens there
    opts = NatsOptions((f"nats://127.0.0.1:{port}",))  # the defaults: two tries, 1 s apart
    quick = NatsOptions(opts.servers, reconnect_wait_s=0.05)
    began = time.monotonic()
    for side in (
        JetStreamSource(opts, ConsumerSettings("S", "d", "x")),
        JetStreamSink(quick, "x"),
        NatsCoreSource(quick, "x"),
    ):
        with pytest.raises(AdapterUnreachable) as info:
            await side.start()
        message = str(info.value)
        assert info.value.retriable
        assert message.startswith(f"nats: cannot reach 127.0.0.1:{port} (ConnectionRefusedError")
        assert "check that the server is running and listening there" in message
        assert not side.health().connected
    assert time.monotonic() - began < 5, "the default start gives up within seconds"


class OwnServer:
    """A nats-server of our own on a free port, stopped and started again at will."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), *args]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await wait_listening(self.port, "nats-server")

    async def stop(self) -> None:
        """A clean shutdown (SIGTERM): JetStream keeps streams and consumer state on disk."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()


@asynccontextmanager
async def own_server(*args: str) -> AsyncIterator[OwnServer]:
    server = OwnServer(*args)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_refused_credentials_are_an_auth_error() -> None:
    async with own_server("--user", "byteor", "--pass", "right") as server:
        url = server.url
        opts = NatsOptions((url,), user="byteor", password="wrong", reconnect_wait_s=0.05)
        with pytest.raises(AdapterAuthError) as info:
            await NatsCoreSink(opts, "x").start()
        assert not info.value.retriable
        assert "refused the credentials" in str(info.value)
        sink = NatsCoreSink(NatsOptions((url,), user="byteor", password="right"), "x")
        await sink.start()
        assert sink.health().connected
        await sink.stop()


async def test_server_restart_mid_stream_is_reconnected_to(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with own_server("-js", "-sd", str(tmp_path)) as server:
        url = server.url
        opts = NatsOptions((url,), reconnect_wait_s=0.05)
        h = JetStreamHarness()
        await h.open(url)
        sink = JetStreamSink(opts, h.subject, stream=h.stream, ack_timeout_s=0.5)
        await sink.start()
        await sink.write_batch([OutRecord(f"r{i}".encode()) for i in range(100)])
        src = JetStreamSource(opts, ConsumerSettings(h.stream, "g", h.subject, ack_wait_s=1.0))
        await src.start()
        first = await _drain(src, 50)
        assert [r.payload for r in first] == [f"r{i}".encode() for i in range(50)]
        held = await src.next_batch(10, timeout_s=1.0)  # handed out, never acked
        assert [r.payload for r in held] == [f"r{i}".encode() for i in range(50, 60)]
        other = JetStreamSource(opts, ConsumerSettings(h.stream, "other", h.subject))
        await other.start()
        assert len(await other.next_batch(5, timeout_s=1.0)) == 5
        end = time.monotonic() + 5
        while True:  # the 50 acks reached the server before it goes away
            info = await h.consumer()
            if (info.ack_floor.stream_seq, info.num_ack_pending) == (50, 10):
                break
            assert time.monotonic() < end, f"the acks never arrived: {info}"
            await asyncio.sleep(0.01)
        await h.nc.close()  # type: ignore[union-attr]

        await server.stop()
        end = time.monotonic() + 5
        while src.health().connected or sink.health().connected:
            assert time.monotonic() < end
            await asyncio.sleep(0.01)
        assert await src.next_batch(10, timeout_s=0.1) == []  # nothing while it is away
        assert "reconnecting" in src.health().detail
        extra = [OutRecord(f"r{i}".encode()) for i in range(100, 120)]
        with pytest.raises(AdapterUnreachable, match="no PubAck for 20 of 20") as info_:
            await sink.write_batch(extra)
        assert info_.value.retriable
        caplog.clear()
        began = time.monotonic()
        await other.stop()  # returns at once, saying what happens to what it held
        assert time.monotonic() - began < 1
        warned = [r for r in caplog.records if "stopped without reaching" in r.getMessage()]
        assert [(r.name, r.levelname) for r in warned] == [("byteor.adapters.nats", "WARNING")]

        await server.start()
        end = time.monotonic() + 10
        while not sink.health().connected:
            assert time.monotonic() < end, "the sink did not reconnect"
            await asyncio.sleep(0.01)
        # The failed batch went out when nats-py reconnected; retried, it is not stored twice.
        await sink.write_batch(extra)
        assert sink.duplicates == 20
        await sink.stop()
        # The 40 never delivered, the 10 held when the server went away, the 20 written since.
        rest = await _drain(src, 70)
        assert sorted(r.payload for r in rest) == sorted(f"r{i}".encode() for i in range(50, 120))
        assert await src.next_batch(100, timeout_s=0.2) == []
        assert src.health().connected
        assert "reconnects=1" in src.health().detail
        await src.stop()
        await h.open(url, create=False)
        info = await h.consumer()
        assert (info.num_ack_pending, info.num_pending, info.ack_floor.stream_seq) == (0, 0, 120)
        assert (await h.js.stream_info(h.stream)).state.messages == 120
        await h.close()


VICTIM = """
import asyncio, sys
from byteor.adapters.nats import ConsumerSettings, JetStreamSource, NatsOptions

async def main() -> None:
    stream, subject = sys.argv[1], sys.argv[2]
    src = JetStreamSource(NatsOptions(), ConsumerSettings(stream, "victim", subject, 1.0))
    await src.start()
    got = []
    while len(got) < 30:
        got += await src.next_batch(30 - len(got), timeout_s=1.0)
    for r in got[:20]:
        await r.ack.ack()
    src.pause()
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_consumer_killed_mid_stream_loses_nothing(harness: JetStreamHarness) -> None:
    sent = [f"r{i}".encode() for i in range(100)]
    await harness.produce([OutRecord(p) for p in sent])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        VICTIM,
        harness.stream,
        harness.subject,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        end = time.monotonic() + 5
        while True:  # kill it once the server has its 20 acks: 10 are out, unacked
            info = await harness.consumer("victim")
            if (info.ack_floor.stream_seq, info.num_ack_pending) == (20, 10):
                break
            assert time.monotonic() < end, f"acks never arrived: {info}"
            await asyncio.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    # Restarted under the same durable: the 10 unacked come back after ack_wait, with the
    # 70 never delivered; none of the 20 acked.
    src = await harness.new_source(durable="victim", ack_wait_s=1.0)
    got = [r.payload for r in await _drain(src, 80)]
    assert await src.next_batch(100, timeout_s=0.3) == []
    await src.stop()
    assert len(got) == 80 and sorted(got) == sorted(sent[20:]), "lost or repeated records"
    info = await harness.consumer("victim")
    assert (info.num_ack_pending, info.num_pending, info.ack_floor.stream_seq) == (0, 0, 100)
