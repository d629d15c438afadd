"""Set up, feed and read back the Redis Streams -> PostgreSQL example.

    python examples/redis_to_postgres/demo.py seed 1000   # 1000 entries, every 10th a heartbeat
    python examples/redis_to_postgres/demo.py show        # the table's rows
    python examples/redis_to_postgres/demo.py pending     # the consumer group's state
    python examples/redis_to_postgres/demo.py rewind      # deliver the whole stream again

It reads the same variables as ``pipeline.toml`` (``REDIS_URL``, ``READINGS_STREAM``,
``READINGS_GROUP``, ``POSTGRES_DSN``, ``READINGS_TABLE``) with the same defaults, and its
functions are what the example's test uses to drive the pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

import asyncpg
import redis


def settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The example's addresses and names: the variables of ``pipeline.toml``, or defaults."""

    def get(name: str, default: str) -> str:
        return env.get(name) or default

    return {
        "redis": get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "stream": get("READINGS_STREAM", "readings"),
        "group": get("READINGS_GROUP", "to_postgres"),
        "dsn": get("POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
        "table": get("READINGS_TABLE", "readings"),
    }


def reading(i: int, sensors: int = 8) -> bytes:
    """The ``i``-th entry: a reading of one of 8 sensors, or (every 10th) a heartbeat; JSON
    as a device might send it (spaces, keys in no particular order)."""
    sensor = f"s-{i % sensors}"
    if i % 10 == 9:
        return json.dumps({"kind": "heartbeat", "sensor": sensor, "seq": i}).encode()
    celsius = round(18 + (i * 37 % 100) / 10, 1)
    return json.dumps({"sensor": sensor, "seq": i, "celsius": celsius, "kind": "reading"}).encode()


def seed(s: Mapping[str, str], count: int) -> list[bytes]:
    """Append ``count`` entries (payload in the field ``p``, as the redis adapter reads
    them) to the stream; returns their payloads in order."""
    payloads = [reading(i) for i in range(count)]
    client = redis.Redis.from_url(s["redis"])
    try:
        pipe = client.pipeline(transaction=False)
        for p in payloads:
            pipe.xadd(s["stream"], {"p": p})
        pipe.execute()
    finally:
        client.close()
    return payloads


def group_state(s: Mapping[str, str]) -> dict[str, Any]:
    """The consumer group: entries pending (delivered, not acknowledged), the last entry
    delivered to it and the stream's last entry."""
    client = redis.Redis.from_url(s["redis"], decode_responses=True)
    try:
        group = next(g for g in client.xinfo_groups(s["stream"]) if g["name"] == s["group"])
        last = client.xinfo_stream(s["stream"])["last-generated-id"]
        return {
            "pending": group["pending"],
            "last_delivered": group["last-delivered-id"],
            "stream_last": last,
        }
    finally:
        client.close()


def rewind(s: Mapping[str, str]) -> None:
    """Move the group back to the stream's start: every entry is delivered again."""
    client = redis.Redis.from_url(s["redis"])
    try:
        client.xgroup_setid(s["stream"], s["group"], "0")
    finally:
        client.close()


async def rows(s: Mapping[str, str]) -> list[bytes]:
    """The table's payloads in insertion order (``[]`` while the table does not exist)."""
    conn = await asyncpg.connect(s["dsn"])
    try:
        if await conn.fetchval("SELECT to_regclass($1)", s["table"]) is None:
            return []
        got = await conn.fetch(f'SELECT payload FROM "{s["table"]}" ORDER BY id')
        return [bytes(r["payload"]) for r in got]
    finally:
        await conn.close()


async def row_count(s: Mapping[str, str]) -> int:
    conn = await asyncpg.connect(s["dsn"])
    try:
        if await conn.fetchval("SELECT to_regclass($1)", s["table"]) is None:
            return 0
        return int(await conn.fetchval(f'SELECT count(*) FROM "{s["table"]}"'))
    finally:
        await conn.close()


def delete_stream(s: Mapping[str, str]) -> None:
    """Remove the stream (and its groups)."""
    client = redis.Redis.from_url(s["redis"])
    try:
        client.delete(s["stream"])
    finally:
        client.close()


async def drop(s: Mapping[str, str]) -> None:
    """Remove the table."""
    conn = await asyncpg.connect(s["dsn"])
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{s["table"]}"')
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("seed", help="append readings to the stream").add_argument(
        "count", type=int, nargs="?", default=1000
    )
    sub.add_parser("show", help="print the table's rows")
    sub.add_parser("pending", help="the consumer group's state")
    sub.add_parser("rewind", help="deliver the whole stream to the group again")
    args = parser.parse_args()
    s = settings()
    if args.command == "seed":
        seed(s, args.count)
        print(f"appended {args.count} entries to stream {s['stream']}")
    elif args.command == "show":
        got = asyncio.run(rows(s))
        for payload in got[:3]:
            print(payload.decode())
        print(f"... {len(got)} rows in table {s['table']}")
    elif args.command == "pending":
        print(json.dumps(group_state(s)))
    else:
        rewind(s)
        print(f"group {s['group']} of {s['stream']} set back to the start")


if __name__ == "__main__":
    main()
