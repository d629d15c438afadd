"""RabbitMQ: ``RabbitMQSource``/``RabbitMQSink`` against aio-pika used by hand.

One durable queue per run on the default exchange; both sides use a robust connection and the
same prefetch (twice the batch). Source, by hand: a consumer callback buffers deliveries; a read
takes up to ``n`` of them (waiting for the first), and the batch is acknowledged with one
``basic.ack(multiple=True)`` of its last delivery tag — what ours sends for a run of settled
tags (ours acknowledges each batch with ``ack_all``, as downstream does once the sinks confirmed
it; the multiple-ack goes with the next read). Sink, by hand: a channel with publisher confirms
and returns raising; every message persistent and ``mandatory``, a batch's publishes gathered
until all are confirmed — what ours does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from byteor.adapters.rabbitmq import RabbitMQSink, RabbitMQSource
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

__all__ = ["RabbitMQCase"]

URL = "amqp://guest:guest@127.0.0.1:5672/"
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT


class _HandSource(SourceSide[AbstractIncomingMessage | None]):
    def __init__(self, queue: str, prefetch: int) -> None:
        self._queue, self._prefetch = queue, prefetch
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._buffer: deque[AbstractIncomingMessage] = deque()
        self._wake = asyncio.Event()

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        self._buffer.append(msg)
        self._wake.set()

    async def open(self) -> None:
        self._conn = await aio_pika.connect_robust(URL)
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await channel.get_queue(self._queue)
        await queue.consume(self._on_message, no_ack=False)

    async def read(
        self, max_records: int
    ) -> tuple[Sequence[bytes], AbstractIncomingMessage | None]:
        if not self._buffer:
            self._wake.clear()
            try:
                async with asyncio.timeout(READ_WAIT_S):
                    await self._wake.wait()
            except TimeoutError:
                return [], None
        buffer = self._buffer
        msgs = [buffer.popleft() for _ in range(min(max_records, len(buffer)))]
        return [m.body for m in msgs], msgs[-1]

    async def ack(self, token: AbstractIncomingMessage | None) -> None:
        if token is not None:
            await token.ack(multiple=True)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


class _HandSink(SinkSide[list[bytes]]):
    def __init__(self, queue: str) -> None:
        self._queue = queue
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def open(self) -> None:
        self._conn = await aio_pika.connect_robust(URL)
        channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = channel.default_exchange

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[bytes]]:
        return batches(items, batch)

    async def write(self, batch: list[bytes]) -> None:
        exchange, queue = self._exchange, self._queue
        assert exchange is not None
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(p, delivery_mode=PERSISTENT), queue, mandatory=True
                )
                for p in batch
            )
        )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


class RabbitMQCase(Case):
    name = "rabbitmq"
    client = "aio-pika"
    address = "127.0.0.1:5672"
    records = 10_000
    ours_source = (
        "RabbitMQSource.next_batch + ack_all(batch) (one multiple-ack per run of settled"
        " tags, sent with the next read)"
    )
    hand_source = "aio-pika: consumer callback into a buffer, basic.ack(multiple) per batch"
    ours_sink = "RabbitMQSink.write_batch (persistent, mandatory, confirms gathered)"
    hand_sink = "aio-pika: publish persistent + mandatory with confirms, gathered per batch"

    def __init__(self) -> None:
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def _admin(self) -> aio_pika.abc.AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            if self._conn is None:
                self._conn = await aio_pika.connect_robust(URL)
            self._channel = await self._conn.channel(publisher_confirms=True)
        return self._channel

    async def create(self, tag: str) -> str:
        queue = f"byteor-bench-{tag}"
        await (await self._admin()).declare_queue(queue, durable=True)
        return queue

    async def prefill(self, target: str, items: Sequence[bytes], batch: int) -> None:
        # Without confirms (2.5x faster here), then the queue's count is awaited.
        assert self._conn is not None
        channel = await self._conn.channel(publisher_confirms=False)
        try:
            exchange = channel.default_exchange
            for i in range(0, len(items), 1000):
                await asyncio.gather(
                    *(
                        exchange.publish(aio_pika.Message(p, delivery_mode=PERSISTENT), target)
                        for p in items[i : i + 1000]
                    )
                )
            while (held := await self._count(target)) < len(items):
                await asyncio.sleep(0.01)  # bounded by the run's timeout
            if held != len(items):
                raise BenchFailure(f"pre-filled {target} holds {held} of {len(items)}")
        finally:
            await channel.close()

    async def _count(self, target: str) -> int:
        """Messages ready in ``target``, asked on a fresh channel (a channel that declared
        the queue before answers a passive declare with a stale count)."""
        assert self._conn is not None
        channel = await self._conn.channel()
        try:
            queue = await channel.declare_queue(target, passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def verify_source(self, target: str, plan: Plan) -> None:
        # The consumer's connection is closed: anything it left unacknowledged is back.
        await self._admin()
        left = await self._count(target)
        if left:
            raise BenchFailure(f"{left} messages of {target} were not acknowledged")

    async def verify_sink(self, target: str, plan: Plan) -> None:
        channel = await self._admin()
        held = await self._count(target)
        if held != plan.records:
            raise BenchFailure(f"{target} holds {held} messages, {plan.records} written")
        tally = Tally(Plan(plan.records, plan.size, 10_000))
        got: list[bytes] = []
        queue = await channel.get_queue(target)
        async with queue.iterator(no_ack=True) as messages:
            async for msg in messages:
                got.append(msg.body)
                if len(got) == 10_000 or tally.received + len(got) == plan.records:
                    tally.take(got)
                    got = []
                if tally.done:
                    break

    async def drop(self, target: str) -> None:
        await (await self._admin()).queue_delete(target)

    def source(self, impl: Impl, target: str, plan: Plan) -> SourceSide[Any]:
        prefetch = 2 * plan.batch
        if impl == "ours":
            return AdapterSource(RabbitMQSource(URL, target, prefetch=prefetch))
        return _HandSource(target, prefetch)

    def sink(self, impl: Impl, target: str, plan: Plan) -> SinkSide[Any]:
        if impl == "ours":
            return AdapterSink(RabbitMQSink(URL, queue=target))
        return _HandSink(target)

    async def server(self) -> str:
        await self._admin()
        assert self._conn is not None
        props: Any = self._conn.transport.connection.server_properties  # type: ignore[union-attr]
        return f"{props.get('product', 'RabbitMQ')} {props.get('version', '?')}"

    async def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            await conn.close()
