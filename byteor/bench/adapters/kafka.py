"""Kafka: ``KafkaSource``/``KafkaSink`` against aiokafka used by hand.

One topic of one partition per run (so the order is total), one consumer group per run.
Source, by hand: an ``AIOKafkaConsumer`` with automatic commits off, ``getmany(max_records=n)``,
then ``await commit({tp: last + 1})`` of the batch — the at-least-once loop of aiokafka's
documentation. Ours acknowledges each batch with ``ack_all`` (every record settles, as
downstream does once the sinks confirmed a batch) and commits the acknowledgement watermark in
the background after a batch (one commit in flight), and at stop. Sink, by hand: an
``AIOKafkaProducer`` with ``acks="all"``, ``send`` of every record of a batch, then the batch's
delivery futures awaited — what ours does. Both consumers use the same short group timeouts, so
that joining (untimed) takes about a second on Tansu.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from byteor.adapters.kafka import KafkaSink, KafkaSource
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

__all__ = ["KafkaCase"]

BOOTSTRAP = "127.0.0.1:9092"
#: The group timeouts of both consumers (a fresh group joins in about a second on Tansu).
SESSION_MS, HEARTBEAT_MS = 1000, 200


class _HandSource(SourceSide[dict[Any, int]]):
    def __init__(self, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=BOOTSTRAP,
            group_id=topic,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
        )
        self._open = False

    async def open(self) -> None:
        await self._consumer.start()
        self._open = True

    async def read(self, max_records: int) -> tuple[Sequence[bytes], dict[Any, int]]:
        fetched = await self._consumer.getmany(
            timeout_ms=int(READ_WAIT_S * 1000), max_records=max_records
        )
        payloads = [m.value for msgs in fetched.values() for m in msgs]
        return payloads, {tp: msgs[-1].offset + 1 for tp, msgs in fetched.items() if msgs}

    async def ack(self, token: dict[Any, int]) -> None:
        await self._consumer.commit(token)

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self._consumer.stop()


class _HandSink(SinkSide[list[bytes]]):
    def __init__(self, topic: str) -> None:
        self._topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=False
        )

    async def open(self) -> None:
        await self._producer.start()

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[bytes]]:
        return batches(items, batch)

    async def write(self, batch: list[bytes]) -> None:
        send, topic = self._producer.send, self._topic
        futures = [await send(topic, payload) for payload in batch]
        await asyncio.gather(*futures)

    async def close(self) -> None:
        await self._producer.stop()


class KafkaCase(Case):
    name = "kafka"
    client = "aiokafka"
    address = BOOTSTRAP
    records = 100_000
    ours_source = (
        "KafkaSource.next_batch + ack_all(batch) (commits of the watermark in the"
        " background, one in flight)"
    )
    hand_source = "aiokafka: getmany(max_records=n), then await commit() of the batch's end"
    ours_sink = "KafkaSink.write_batch (send of each record, acks=all, futures gathered)"
    hand_sink = "aiokafka: send of each record of the batch (acks=all), futures gathered"

    def __init__(self) -> None:
        self._admin: Any = None

    async def _client(self) -> Any:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
            await admin.start()
            self._admin = admin
        return self._admin

    async def create(self, tag: str) -> str:
        topic = f"byteor-bench-{tag}"
        await (await self._client()).create_topics([NewTopic(topic, 1, 1)])
        return topic

    async def prefill(self, target: str, items: Sequence[bytes], batch: int) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=False, linger_ms=5
        )
        await producer.start()
        try:
            for i in range(0, len(items), 1000):
                await asyncio.gather(*[await producer.send(target, p) for p in items[i : i + 1000]])
        finally:
            await producer.stop()

    async def verify_source(self, target: str, plan: Plan) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=target)
        await consumer.start()
        try:
            committed = await consumer.committed(TopicPartition(target, 0))
        finally:
            await consumer.stop()
        if committed != plan.records:
            raise BenchFailure(
                f"group {target} committed offset {committed}, expected {plan.records}"
            )

    async def verify_sink(self, target: str, plan: Plan) -> None:
        # Read everything back: Tansu's ListOffsets answers a "latest" offset below the real
        # end once a partition holds many batches, so end_offsets() cannot be the count.
        tp = TopicPartition(target, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            tally = Tally(Plan(plan.records, plan.size, 10_000))
            while True:
                wait_ms = 200 if tally.done else 2000  # once all arrived: is there more?
                fetched = await consumer.getmany(tp, timeout_ms=wait_ms, max_records=10_000)
                if not fetched.get(tp):
                    break
                tally.take([m.value for m in fetched[tp]])
        finally:
            await consumer.stop()
        if not tally.done:
            raise BenchFailure(f"{target} holds {tally.received} records, {plan.records} written")

    async def drop(self, target: str) -> None:
        with contextlib.suppress(Exception):  # a broker that cannot delete keeps it (Tansu: memory)
            await (await self._client()).delete_topics([target])

    def source(self, impl: Impl, target: str, plan: Plan) -> SourceSide[Any]:
        if impl == "ours":
            return AdapterSource(
                KafkaSource(
                    BOOTSTRAP,
                    [target],
                    target,
                    session_timeout_ms=SESSION_MS,
                    heartbeat_interval_ms=HEARTBEAT_MS,
                )
            )
        return _HandSource(target)

    def sink(self, impl: Impl, target: str, plan: Plan) -> SinkSide[Any]:
        if impl == "ours":
            return AdapterSink(KafkaSink(BOOTSTRAP, target))
        return _HandSink(target)

    async def server(self) -> str:
        info: Any = await (await self._client()).describe_cluster()
        return f"Kafka protocol, cluster {info['cluster_id']!r} ({len(info['brokers'])} broker)"

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()
