"""Set up, feed and read back the Kafka -> enrich -> NATS example.

    python examples/kafka_enrich_nats/demo.py seed 1000   # topic + stream, 1000 orders
    python examples/kafka_enrich_nats/demo.py show        # what reached the stream
    python examples/kafka_enrich_nats/demo.py committed   # the group's commits, per partition

It reads the same variables as ``pipeline.toml`` (``KAFKA_BOOTSTRAP``, ``ORDERS_TOPIC``,
``ORDERS_GROUP``, ``NATS_URL``, ``NATS_STREAM``, ``NATS_SUBJECT``) with the same defaults,
and its functions are what the example's test uses to drive the pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Mapping

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

PARTITIONS = 3
SKUS = ("apple", "bread", "cheese", "dates", "eggs")


def settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The example's addresses and names: the variables of ``pipeline.toml``, or defaults."""

    def get(name: str, default: str) -> str:
        return env.get(name) or default

    return {
        "bootstrap": get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "topic": get("ORDERS_TOPIC", "orders"),
        "group": get("ORDERS_GROUP", "enrich"),
        "nats": get("NATS_URL", "nats://127.0.0.1:4222"),
        "stream": get("NATS_STREAM", "ORDERS_ENRICHED"),
        "subject": get("NATS_SUBJECT", "orders.enriched"),
    }


def order(i: int, customers: int = 10) -> tuple[bytes, bytes]:
    """The ``i``-th sample order and its key (the customer): deterministic."""
    customer = f"c-{i % customers}"
    doc = {"order": i, "customer": customer, "sku": SKUS[(i * 7) % len(SKUS)], "qty": 1 + i % 4}
    return customer.encode(), json.dumps(doc, separators=(",", ":")).encode()


async def seed(s: Mapping[str, str], count: int) -> list[tuple[bytes, bytes, int, int]]:
    """Create the topic (3 partitions) and the stream if missing, then produce ``count``
    orders keyed by customer (so each customer's orders share a partition, in order).
    Returns what was produced: (key, payload, partition, offset) in order."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s["bootstrap"])
    await admin.start()
    try:
        if s["topic"] not in await admin.list_topics():
            await admin.create_topics([NewTopic(s["topic"], PARTITIONS, 1)])
    finally:
        await admin.close()
    nc = NATS()
    await nc.connect(s["nats"], connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        try:
            await js.stream_info(s["stream"])
        except NotFoundError:
            await js.add_stream(StreamConfig(name=s["stream"], subjects=[s["subject"]]))
    finally:
        await nc.close()
    producer = AIOKafkaProducer(bootstrap_servers=s["bootstrap"], acks="all")
    await producer.start()
    try:
        pairs = [order(i) for i in range(count)]
        futures = [await producer.send(s["topic"], payload, key=key) for key, payload in pairs]
        metas = [await f for f in futures]
    finally:
        await producer.stop()
    return [(k, p, m.partition, m.offset) for (k, p), m in zip(pairs, metas, strict=True)]


async def enriched(s: Mapping[str, str]) -> list[bytes]:
    """Every message in the stream, in stream order (read directly, no consumer made)."""
    nc = NATS()
    await nc.connect(s["nats"], connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        info = await js.stream_info(s["stream"])
        out: list[bytes] = []
        if not info.state.messages:
            return out
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(s["stream"], seq)
            out.append(msg.data or b"")
        return out
    finally:
        await nc.close()


async def stream_count(s: Mapping[str, str]) -> int:
    """Messages in the stream now."""
    nc = NATS()
    await nc.connect(s["nats"], connect_timeout=2, max_reconnect_attempts=1)
    try:
        return int((await nc.jetstream().stream_info(s["stream"])).state.messages)
    finally:
        await nc.close()


async def drop_stream(s: Mapping[str, str]) -> None:
    """Remove the NATS stream (if it exists) and what it holds."""
    nc = NATS()
    await nc.connect(s["nats"], connect_timeout=2, max_reconnect_attempts=1)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(s["stream"])
    finally:
        await nc.close()


async def committed(s: Mapping[str, str]) -> dict[int, int | None]:
    """The group's committed offset per partition (``None``: nothing committed), read
    without joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=s["bootstrap"], group_id=s["group"])
    await consumer.start()
    try:
        await consumer.topics()  # the cluster's metadata, so the partitions are known
        parts = sorted(consumer.partitions_for_topic(s["topic"]) or ())
        return {p: await consumer.committed(TopicPartition(s["topic"], p)) for p in parts}
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("seed", help="create the topic and stream, produce orders").add_argument(
        "count", type=int, nargs="?", default=1000
    )
    sub.add_parser("show", help="print what reached the stream")
    sub.add_parser("committed", help="the group's committed offsets")
    args = parser.parse_args()
    s = settings()
    if args.command == "seed":
        asyncio.run(seed(s, args.count))
        print(f"produced {args.count} orders to {s['topic']} ({PARTITIONS} partitions)")
    elif args.command == "show":
        got = asyncio.run(enriched(s))
        for payload in got[:3]:
            print(payload.decode())
        print(f"... {len(got)} enriched orders in stream {s['stream']}")
    else:
        for part, offset in asyncio.run(committed(s)).items():
            print(f"{s['topic']}[{part}]: group {s['group']} committed offset {offset}")


if __name__ == "__main__":
    main()
