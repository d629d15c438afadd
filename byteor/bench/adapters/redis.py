"""Redis Streams: ``RedisSource``/``RedisSink`` against redis.asyncio used by hand.

Source, by hand: ``XREADGROUP GROUP g c COUNT n STREAMS s >``, then ``XACK s g id...`` of the
batch — two round trips a batch, where ours sends the XACK in one pipeline with its next read
(ours acknowledges each batch with ``ack_all``, as downstream does once the sinks confirmed it).
Sink, by hand: one non-transactional pipeline of ``XADD s * p <payload>`` per batch, confirmed
when every entry got an id — the same commands ours sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from byteor.adapters.redis import RedisSink, RedisSource
from byteor.bench.adapters._harness import (
    READ_WAIT_S,
    BenchFailure,
    Case,
    Impl,
    Plan,
    SinkSide,
    SourceSide,
    Tally,
    batches,
)
from byteor.bench.adapters._ours import AdapterSink, AdapterSource

__all__ = ["RedisCase"]

URL = "redis://127.0.0.1:6379"
GROUP = "bench"
CONSUMER = "bench-1"


class _HandSource(SourceSide[list[bytes]]):
    def __init__(self, stream: str) -> None:
        self._stream = stream
        self._client = aioredis.from_url(URL)

    async def open(self) -> None:
        await self._client.xgroup_create(self._stream, GROUP, id="0")

    async def read(self, max_records: int) -> tuple[Sequence[bytes], list[bytes]]:
        reply: Any = await self._client.xreadgroup(
            GROUP, CONSUMER, {self._stream: ">"}, count=max_records, block=int(READ_WAIT_S * 1000)
        )
        if not reply:
            return [], []
        entries = reply[0][1]
        return [fields[b"p"] for _, fields in entries], [eid for eid, _ in entries]

    async def ack(self, token: list[bytes]) -> None:
        await self._client.xack(self._stream, GROUP, *token)

    async def close(self) -> None:
        await self._client.aclose()


class _HandSink(SinkSide[list[bytes]]):
    def __init__(self, stream: str) -> None:
        self._stream = stream
        self._client = aioredis.from_url(URL)

    async def open(self) -> None:
        await self._client.ping()

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[bytes]]:
        return batches(items, batch)

    async def write(self, batch: list[bytes]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for payload in batch:
            pipe.xadd(self._stream, {b"p": payload})
        ids = await pipe.execute()
        if len(ids) != len(batch) or not all(ids):
            raise BenchFailure(f"XADD confirmed {len(ids)} of {len(batch)}")

    async def close(self) -> None:
        await self._client.aclose()


class RedisCase(Case):
    name = "redis"
    client = "redis"
    address = "127.0.0.1:6379"
    records = 50_000
    ours_source = (
        "RedisSource.next_batch + ack_all(batch) (the XACKs pipelined with the next XREADGROUP)"
    )
    hand_source = "redis.asyncio: XREADGROUP COUNT n, then XACK of the batch's ids"
    ours_sink = "RedisSink.write_batch (XADD pipelined per batch)"
    hand_sink = "redis.asyncio: XADD pipelined per batch, every id checked"

    def __init__(self) -> None:
        self._admin: aioredis.Redis | None = None

    def _client(self) -> aioredis.Redis:
        if self._admin is None:
            self._admin = aioredis.from_url(URL)
        return self._admin

    async def create(self, tag: str) -> str:
        stream = f"byteor-bench-{tag}"
        await self._client().delete(stream)
        return stream

    async def prefill(self, target: str, items: Sequence[bytes], batch: int) -> None:
        client = self._client()
        for i in range(0, len(items), 1000):
            pipe = client.pipeline(transaction=False)
            for payload in items[i : i + 1000]:
                pipe.xadd(target, {b"p": payload})
            await pipe.execute()

    async def verify_source(self, target: str, plan: Plan) -> None:
        client = self._client()
        pending: Any = await client.xpending(target, GROUP)
        if pending["pending"]:
            raise BenchFailure(
                f"{pending['pending']} entries of {target} still pending (not XACKed)"
            )
        info: Any = await client.xinfo_stream(target)
        groups: Any = await client.xinfo_groups(target)
        delivered = next(g["last-delivered-id"] for g in groups if g["name"] == GROUP.encode())
        if delivered != info["last-generated-id"]:
            raise BenchFailure(f"group {GROUP} stopped at {delivered!r}, the stream goes on")

    async def verify_sink(self, target: str, plan: Plan) -> None:
        client = self._client()
        tally = Tally(Plan(plan.records, plan.size, 10_000))
        start = "-"
        while True:
            entries: Any = await client.xrange(target, min=start, count=10_000)
            if not entries:
                break
            tally.take([fields[b"p"] for _, fields in entries])
            start = "(" + entries[-1][0].decode()  # exclusive: after the last one read
        if tally.received != plan.records:
            raise BenchFailure(f"{target} holds {tally.received} records, {plan.records} written")

    async def drop(self, target: str) -> None:
        await self._client().delete(target)

    def source(self, impl: Impl, target: str, plan: Plan) -> SourceSide[Any]:
        if impl == "ours":
            return AdapterSource(RedisSource(URL, target, GROUP, CONSUMER))
        return _HandSource(target)

    def sink(self, impl: Impl, target: str, plan: Plan) -> SinkSide[Any]:
        if impl == "ours":
            return AdapterSink(RedisSink(URL, target))
        return _HandSink(target)

    async def server(self) -> str:
        info: Any = await self._client().info("server")
        return f"Redis {info['redis_version']}"

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.aclose()
