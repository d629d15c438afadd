"""NATS JetStream: ``JetStreamSource``/``JetStreamSink`` against nats-py used by hand.

One stream (one subject) and one durable pull consumer per run. Source, by hand:
``pull_subscribe`` of a durable consumer with explicit acks, ``fetch(n)``, then ``ack()`` of
every message — what ours sends (ours acknowledges each batch with ``ack_all``, as downstream
does once the sinks confirmed it). Sink, by hand: ``js.publish_async`` of every message of a
batch, then the batch's PubAck futures gathered; every message with a ``Nats-Msg-Id`` (a
128-bit BLAKE2b of the payload) — the same work as ours with its default ``msg_id = hash``
(de-duplication ids on the wire, PubAcks awaited per batch)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig

from byteor.adapters.nats import ConsumerSettings, JetStreamSink, JetStreamSource, NatsOptions
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

__all__ = ["NatsCase"]

SERVER = "nats://127.0.0.1:4222"
DURABLE = "bench"
#: How long the server may take to apply acks it has received (they are fire-and-forget).
SETTLE_S = 5.0
#: How long a hand-written batch waits for its PubAcks (ours: its ack_timeout_s default).
ACK_TIMEOUT_S = 5.0


def _subject(stream: str) -> str:
    return f"{stream}.in"


class _HandSource(SourceSide[list[Msg]]):
    def __init__(self, stream: str) -> None:
        self._stream = stream
        self._nc: NATS | None = None
        self._psub: Any = None

    async def open(self) -> None:
        self._nc = await nats.connect(SERVER)
        js = self._nc.jetstream()
        self._psub = await js.pull_subscribe(
            _subject(self._stream), durable=DURABLE, stream=self._stream
        )

    async def read(self, max_records: int) -> tuple[Sequence[bytes], list[Msg]]:
        try:
            msgs = await self._psub.fetch(max_records, timeout=READ_WAIT_S)
        except (NatsTimeout, TimeoutError):
            return [], []
        return [m.data for m in msgs], msgs

    async def ack(self, token: list[Msg]) -> None:
        for msg in token:
            await msg.ack()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await self._psub.unsubscribe()  # before close: drain hangs on a pull subscription
            await nc.flush()
            await nc.close()


class _HandSink(SinkSide[list[bytes]]):
    def __init__(self, stream: str) -> None:
        self._subject = _subject(stream)
        self._nc: NATS | None = None
        self._js: Any = None

    async def open(self) -> None:
        self._nc = await nats.connect(SERVER)
        self._js = self._nc.jetstream()

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[bytes]]:
        return batches(items, batch)

    async def write(self, batch: list[bytes]) -> None:
        publish, subject = self._js.publish_async, self._subject
        futures = [
            await publish(
                subject, p, headers={"Nats-Msg-Id": hashlib.blake2b(p, digest_size=16).hexdigest()}
            )
            for p in batch
        ]
        acks = await asyncio.wait_for(asyncio.gather(*futures), ACK_TIMEOUT_S)
        if len(acks) != len(batch) or any(a.duplicate for a in acks):
            raise BenchFailure(f"{len(acks)} PubAcks for {len(batch)} records, or duplicates")

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()


class NatsCase(Case):
    name = "nats"
    client = "nats-py"
    address = "127.0.0.1:4222"
    records = 20_000
    ours_source = (
        "JetStreamSource.next_batch + ack_all(batch) (durable pull consumer, explicit"
        " ack per message)"
    )
    hand_source = "nats-py: pull_subscribe fetch(n), then ack() of every message"
    ours_sink = "JetStreamSink.write_batch (Nats-Msg-Id = hash, PubAcks awaited per batch)"
    hand_sink = "nats-py: js.publish_async of the batch, PubAcks gathered (Msg-Id = BLAKE2b)"

    def __init__(self) -> None:
        self._nc: NATS | None = None

    async def _client(self) -> NATS:
        if self._nc is None:
            self._nc = await nats.connect(SERVER)
        return self._nc

    async def create(self, tag: str) -> str:
        stream = f"byteor-bench-{tag}"
        js = (await self._client()).jetstream()
        await js.add_stream(name=stream, subjects=[_subject(stream)])
        return stream

    async def prefill(self, target: str, items: Sequence[bytes], batch: int) -> None:
        # Core publishes (the stream stores them), then wait for the stream to hold them all.
        nc = await self._client()
        subject = _subject(target)
        for payload in items:
            await nc.publish(subject, payload)
        await nc.flush()
        js = nc.jetstream()
        while (held := (await js.stream_info(target)).state.messages) < len(items):
            await asyncio.sleep(0.01)  # bounded by the run's timeout
        if held != len(items):
            raise BenchFailure(f"pre-filled {target} holds {held} of {len(items)}")

    async def verify_source(self, target: str, plan: Plan) -> None:
        # Acks are fire-and-forget: give the server a moment to apply the last ones.
        js = (await self._client()).jetstream()
        deadline = time.monotonic() + SETTLE_S
        while True:
            info = await js.consumer_info(target, DURABLE)
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            if floor == plan.records and not info.num_ack_pending and not info.num_pending:
                return
            if time.monotonic() > deadline:
                raise BenchFailure(
                    f"consumer {DURABLE} of {target}: acked up to {floor} of {plan.records},"
                    f" {info.num_ack_pending} waiting for an ack, {info.num_pending} undelivered"
                )
            await asyncio.sleep(0.02)

    async def verify_sink(self, target: str, plan: Plan) -> None:
        nc = await self._client()
        js = nc.jetstream()
        held = (await js.stream_info(target)).state.messages
        if held != plan.records:
            raise BenchFailure(f"{target} holds {held} records, {plan.records} written")
        # Read everything back through a consumer without acks (no ack-pending limit).
        psub = await js.pull_subscribe(
            _subject(target),
            durable="check",
            stream=target,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE),
        )
        tally = Tally(Plan(plan.records, plan.size, 1_000))
        try:
            while not tally.done:
                msgs = await psub.fetch(min(1_000, plan.records - tally.received), timeout=5)
                tally.take([m.data for m in msgs])
        finally:
            await psub.unsubscribe()

    async def drop(self, target: str) -> None:
        await (await self._client()).jetstream().delete_stream(target)

    def source(self, impl: Impl, target: str, plan: Plan) -> SourceSide[Any]:
        if impl == "ours":
            opts, settings = NatsOptions(servers=(SERVER,)), ConsumerSettings(target, DURABLE)
            return AdapterSource(JetStreamSource(opts, settings, batch=plan.batch))
        return _HandSource(target)

    def sink(self, impl: Impl, target: str, plan: Plan) -> SinkSide[Any]:
        if impl == "ours":
            return AdapterSink(JetStreamSink(NatsOptions(servers=(SERVER,)), _subject(target)))
        return _HandSink(target)

    async def server(self) -> str:
        info = (await self._client())._server_info
        return f"NATS {info.get('version', '?')} (JetStream)"

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()
