"""The Redis Streams adapter against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from _batches import MIXED, mixed_columns
from _net import free_port, wait_listening

from byteor.adapters import (
    AckError,
    AdapterError,
    AdapterUnreachable,
    OutRecord,
    RecordBatch,
    Sink,
    Source,
    ack_all,
    load_adapter,
    nack_all,
)
from byteor.adapters.redis import RedisAdapter, RedisSink, RedisSource, decode_entry, encode_entry
from byteor.testing import ConformanceTests, Harness

URL = "redis://127.0.0.1:6379"


class RedisHarness(Harness):
    def __init__(self) -> None:
        self.stream = f"byteor-test-{uuid.uuid4().hex}"
        self.client = aioredis.from_url(URL)

    async def new_source(self, consumer: str = "c1", claim_idle_ms: int = 30_000) -> Source:
        src = RedisSource(URL, self.stream, "g", consumer, claim_idle_ms=claim_idle_ms)
        await src.start()
        return src

    async def new_sink(self) -> Sink:
        sink = RedisSink(URL, self.stream)
        await sink.start()
        return sink

    async def produce(self, records: Sequence[OutRecord]) -> None:
        for r in records:
            await self.client.xadd(self.stream, encode_entry(r))  # type: ignore[arg-type]

    async def written(self) -> list[OutRecord]:
        return [decode_entry(f) for _, f in await self.client.xrange(self.stream)]

    async def rejecting_sink(self) -> Sink | None:
        key = self.stream + "-not-a-stream"
        await self.client.set(key, b"x")  # XADD on a string: WRONGTYPE
        self.extra_key = key
        sink = RedisSink(URL, key)
        await sink.start()
        return sink

    async def close(self) -> None:
        await self.client.delete(self.stream, self.stream + "-not-a-stream")
        await self.client.aclose()


@pytest.fixture
async def harness() -> AsyncIterator[RedisHarness]:
    h = RedisHarness()
    yield h
    await h.close()


class TestRedisConformance(ConformanceTests):
    pass  # the module-level `harness` fixture serves


def test_entry_encoding_round_trips_every_field() -> None:
    rec = OutRecord(b"\x00body", b"key", (("a", b""), ("a", b"\xff" * 70000), ("\u00e9", b"v")))
    assert decode_entry(encode_entry(rec)) == rec
    assert decode_entry(encode_entry(OutRecord(b""))) == OutRecord(b"", None, ())


async def test_ten_thousand_records_round_trip(harness: RedisHarness) -> None:
    sent = [
        OutRecord(f"payload-{i}".encode(), f"k{i % 7}".encode(), (("n", str(i).encode()),))
        for i in range(10_000)
    ]
    sink = await harness.new_sink()
    for at in range(0, len(sent), 500):
        await sink.write_batch(sent[at : at + 500])
    await sink.stop()
    src = await harness.new_source()
    got: list[OutRecord] = []
    while len(got) < len(sent):
        batch = await src.next_batch(1000, timeout_s=2.0)
        assert batch, f"stalled after {len(got)} records"
        for r in batch:
            got.append(r.out())
            await r.ack.ack()
    assert await src.next_batch(1000, timeout_s=0.2) == []
    await src.stop()
    assert got == sent  # exact content, and so per-key order
    pending = await harness.client.xpending(harness.stream, "g")
    assert pending["pending"] == 0, "every acked entry was XACKed"


async def test_a_dead_consumers_pending_entries_are_claimed(harness: RedisHarness) -> None:
    await harness.produce([OutRecord(f"r{i}".encode()) for i in range(10)])
    dead = await harness.new_source(consumer="dead")
    got = await dead.next_batch(10, timeout_s=1.0)
    assert len(got) == 10
    await got[0].ack.ack()
    await got[1].ack.ack()
    await dead.next_batch(1)  # flushes the two XACKs; the rest stay pending, then it "dies"
    alive = await harness.new_source(consumer="alive", claim_idle_ms=0)
    back = await alive.next_batch(100, timeout_s=1.0)
    assert sorted(r.payload for r in back) == sorted(f"r{i}".encode() for i in range(2, 10))
    for r in back:
        await r.ack.ack()
    await alive.stop()
    await dead.stop()
    pending = await harness.client.xpending(harness.stream, "g")
    assert pending["pending"] == 0


async def test_batches_settle_without_handles_and_nacked_entries_come_back_whole(
    harness: RedisHarness,
) -> None:
    sent = [
        OutRecord(f"r{i}".encode(), b"k" if i % 2 else None, (("n", b"%d" % i),) if i % 3 else ())
        for i in range(6)
    ]
    await harness.produce(sent)
    src = await harness.new_source()
    try:
        got = await src.next_batch(10, timeout_s=1.0)
        assert [r.out() for r in got] == sent
        await ack_all(got[:2])
        await nack_all(got[2:4])
        await got[4].ack.nack()  # through a handle
        again = await src.next_batch(10)
        assert [r.out() for r in again] == sent[2:5], "nacked: whole and in order"
        assert [r.position for r in again] == [r.position for r in got[2:5]]
        with pytest.raises(AckError):
            await ack_all(got[1:3])  # both settled: nothing happens
        await ack_all([*again, got[5]])
        assert await src.next_batch(10, timeout_s=0.2) == []  # sends the XACKs
        pending = await harness.client.xpending(harness.stream, "g")
        assert pending["pending"] == 0
    finally:
        await src.stop()


async def test_a_read_is_a_batch_of_columns_settled_whole(harness: RedisHarness) -> None:
    """A read comes as a RecordBatch: its columns straight from the entries (keys and headers
    only when an entry has them), its records made only when read; nack_all of it hands the
    same entries out again, ack_all XACKs exactly its ids; a batch one of whose records was
    acked on its own is refused whole, and its records settle one by one."""
    await harness.produce(MIXED + [OutRecord(b"plain%d" % i) for i in range(3)])
    ids = [eid for eid, _ in await harness.client.xrange(harness.stream)]
    src = await harness.new_source()

    async def pending() -> list[bytes]:
        got = await harness.client.xpending_range(harness.stream, "g", "-", "+", 100)
        return [p["message_id"] for p in got]

    try:
        got = mixed_columns(await src.next_batch(3, timeout_s=1.0), ids[:3])
        await nack_all(got)
        again = mixed_columns(await src.next_batch(10), ids[:3])
        assert [r.out() for r in again] == MIXED
        await ack_all(again)
        plain = await src.next_batch(10, timeout_s=1.0)  # sends the XACK of the three
        assert isinstance(plain, RecordBatch) and (plain.keys, plain.headers) == (None, None)
        assert plain.payloads == [b"plain%d" % i for i in range(3)]
        assert await pending() == ids[3:], "exactly the acked batch's ids were XACKed"
        await plain[1].ack.ack()
        with pytest.raises(AckError, match="settled on its own"):
            await ack_all(plain)
        assert await src.next_batch(10, timeout_s=0.1) == []  # sends the one XACK
        assert await pending() == [ids[3], ids[5]], "the batch was refused: nothing more"
        await ack_all([plain[0], plain[2]])
    finally:
        await src.stop()
    assert await pending() == []


async def test_foreign_entries_are_read_field_by_field(harness: RedisHarness) -> None:
    """Entries another producer wrote (one field that is not ``p``, ``p`` among others) read
    as records the general way, next to ours."""
    await harness.client.xadd(harness.stream, {b"x": b"1"})
    await harness.client.xadd(harness.stream, {b"x": b"2", b"p": b"two", b"k": b"key"})
    await harness.client.xadd(harness.stream, {b"p": b"ours"})
    src = await harness.new_source()
    try:
        got = await src.next_batch(10, timeout_s=1.0)
        assert [r.out() for r in got] == [
            OutRecord(b""),
            OutRecord(b"two", b"key"),
            OutRecord(b"ours"),
        ]
        await ack_all(got)
    finally:
        await src.stop()
    assert (await harness.client.xpending(harness.stream, "g"))["pending"] == 0


async def test_sink_trims_with_maxlen(harness: RedisHarness) -> None:
    sink = RedisSink(URL, harness.stream, maxlen=100, approximate=False)
    await sink.start()
    await sink.write_batch([OutRecord(str(i).encode()) for i in range(250)])
    await sink.stop()
    written = await harness.written()
    assert [r.payload for r in written] == [str(i).encode() for i in range(150, 250)]


async def test_unreachable_server_names_adapter_and_address() -> None:
    src = RedisSource("redis://127.0.0.1:1", "s", "g", "c")
    with pytest.raises(AdapterUnreachable) as info:
        await src.start()
    assert info.value.retriable
    assert str(info.value).startswith("redis: cannot reach 127.0.0.1:1")


async def test_missing_stream_without_create_is_not_found(harness: RedisHarness) -> None:
    src = RedisSource(URL, harness.stream, "g", "c", create=False)
    with pytest.raises(AdapterError) as info:
        await src.start()
    assert not info.value.retriable
    assert f"stream {harness.stream!r} does not exist on 127.0.0.1:6379" in str(info.value)


def test_registry_loads_the_redis_adapter() -> None:
    adapter = load_adapter("redis")
    assert isinstance(adapter, RedisAdapter)
    assert adapter.declaration().sink is not None
    assert adapter.config.validate({"stream": "s", "start": "middle"})[1][0].code == "AD504"


async def test_source_reconnects_when_the_server_restarts_mid_stream(tmp_path: Path) -> None:
    # A Redis of our own (the shared one must not be restarted), persisting to an AOF so the
    # stream and the group's pending list survive the restart.
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(tmp_path),
    ]

    async def serve() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL)
        await wait_listening(port, "redis-server")
        return proc

    proc = await serve()
    try:
        sink = RedisSink(url, "s")
        await sink.start()
        await sink.write_batch([OutRecord(f"r{i}".encode()) for i in range(100)])
        await sink.stop()
        src = RedisSource(url, "s", "g", "c")
        await src.start()
        first = await src.next_batch(50, timeout_s=1.0)
        assert len(first) == 50
        for r in first:
            await r.ack.ack()
        assert len(await src.next_batch(10)) == 10  # flushes the 50 XACKs; these 10 stay unacked
        proc.terminate()
        await proc.wait()

        async def restart_later() -> asyncio.subprocess.Process:
            await asyncio.sleep(0.5)
            return await serve()

        restarting = asyncio.create_task(restart_later())
        rest = await src.next_batch(100, timeout_s=1.0)  # retried until the server is back
        proc = await restarting
        assert sorted(r.payload for r in rest) == sorted(f"r{i}".encode() for i in range(60, 100))
        for r in rest:
            await r.ack.ack()
        await src.stop()
        check = aioredis.from_url(url)
        pending = await check.xpending("s", "g")
        await check.aclose()
        assert pending["pending"] == 10  # exactly the 10 handed out and never acked
    finally:
        proc.terminate()
        await proc.wait()


VICTIM = """
import asyncio, sys
from byteor.adapters.redis import RedisSource

async def main() -> None:
    src = RedisSource(sys.argv[1], sys.argv[2], "g", "victim")
    await src.start()
    got = []
    while len(got) < 30:
        got += await src.next_batch(30 - len(got), timeout_s=1.0)
    for r in got[:20]:
        await r.ack.ack()
    src.pause()
    assert await src.next_batch(1) == []  # paused: sends the 20 XACKs, takes nothing new
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_consumer_killed_mid_stream_loses_nothing(harness: RedisHarness) -> None:
    import signal
    import sys

    sent = [f"r{i}".encode() for i in range(100)]
    await harness.produce([OutRecord(p) for p in sent])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", VICTIM, URL, harness.stream, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line == b"ready\n"
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    # Restarted under the same consumer name: its 10 unacked entries first, then the rest.
    src = await harness.new_source(consumer="victim")
    got: list[bytes] = []
    while True:
        batch = await src.next_batch(1000, timeout_s=0.3)
        if not batch:
            break
        for r in batch:
            got.append(r.payload)
            await r.ack.ack()
    await src.stop()
    assert got[:10] == sent[20:30], "the unacked records come back first, in order"
    assert got == sent[20:], "nothing lost, nothing acked delivered again"
    assert (await harness.client.xpending(harness.stream, "g"))["pending"] == 0
