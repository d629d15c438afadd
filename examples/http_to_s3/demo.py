"""Set up, feed and read back the HTTP -> S3 example.

    python examples/http_to_s3/demo.py bucket                 # create the bucket
    python examples/http_to_s3/demo.py send 1000              # POST 1000 events, 4 clients
    python examples/http_to_s3/demo.py show                   # the objects and their records

It reads the same variables as ``pipeline.toml`` (``INGEST_HOST``, ``INGEST_PORT``,
``S3_ENDPOINT``, ``S3_BUCKET``, ``S3_PREFIX``, ``S3_ACCESS_KEY_ID``,
``S3_SECRET_ACCESS_KEY``) with the same defaults, and its functions are what the example's
test uses to drive the pipeline.

``send`` is a well-behaved client of a ``respond = confirmed`` ingest server: each client
POSTs NDJSON batches one after another, and sends a batch again (after ``Retry-After``)
until it is answered 200 — a 429 (full), a 503 (some records not confirmed) or a lost
connection all mean "not stored yet".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

import aioboto3
import httpx

from byteor.adapters.s3 import decode_object


def settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The example's addresses and names: the variables of ``pipeline.toml``, or defaults."""

    def get(name: str, default: str) -> str:
        return env.get(name) or default

    return {
        "ingest": f"http://{get('INGEST_HOST', '127.0.0.1')}:{get('INGEST_PORT', '8080')}",
        "endpoint": get("S3_ENDPOINT", "http://127.0.0.1:5000"),
        "bucket": get("S3_BUCKET", "lake"),
        "prefix": get("S3_PREFIX", "events").rstrip("/") + "/",
        "key_id": get("S3_ACCESS_KEY_ID", "example-key-id"),
        "secret": get("S3_SECRET_ACCESS_KEY", "example-secret"),
    }


def event(client: int, i: int) -> dict[str, Any]:
    """The ``i``-th event of client ``client``: a page view, deterministic."""
    return {"device": f"d-{client}", "n": i, "page": f"/item/{(client * 31 + i * 7) % 50}"}


def _client(s: Mapping[str, str]) -> Any:
    session = aioboto3.Session(
        aws_access_key_id=s["key_id"], aws_secret_access_key=s["secret"], region_name="us-east-1"
    )
    return session.client("s3", endpoint_url=s["endpoint"])


async def make_bucket(s: Mapping[str, str]) -> None:
    """Create the bucket (the sink refuses a missing one)."""
    async with _client(s) as s3:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            await s3.create_bucket(Bucket=s["bucket"])


async def send(
    s: Mapping[str, str], count: int, clients: int = 4, batch: int = 50, timeout_s: float = 30.0
) -> list[int]:
    """``clients`` concurrent clients POST ``count`` events in all, in NDJSON batches of
    ``batch``, each batch sent again until it is answered 200. Returns how many attempts
    each batch needed to be confirmed (1 when the first one was)."""
    attempts: list[int] = []

    async def one(c: int, n: int, http: httpx.AsyncClient) -> None:
        for start in range(0, n, batch):
            lines = [
                json.dumps({"payload": json.dumps(event(c, i), separators=(",", ":"))})
                for i in range(start, min(n, start + batch))
            ]
            body = ("\n".join(lines) + "\n").encode()
            tries = 0
            while True:
                tries += 1
                try:
                    r = await http.post(
                        f"{s['ingest']}/records/batch",
                        content=body,
                        headers={"Content-Type": "application/x-ndjson"},
                    )
                except httpx.TransportError:
                    await asyncio.sleep(0.2)  # not up yet, or went away: send it again
                    continue
                if r.status_code == 200:
                    if r.json() != {"confirmed": len(lines)}:
                        raise RuntimeError(f"unexpected answer {r.text}")
                    break
                if r.status_code in (429, 503):
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                raise RuntimeError(f"ingest answered {r.status_code}: {r.text}")
            attempts.append(tries)

    share = [count // clients + (1 if c < count % clients else 0) for c in range(clients)]
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        await asyncio.gather(*(one(c, share[c], http) for c in range(clients)))
    return attempts


async def ingest_health(s: Mapping[str, str]) -> dict[str, Any]:
    """The ingest server's counters (``GET /health``)."""
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(f"{s['ingest']}/health")
        r.raise_for_status()
        doc: dict[str, Any] = r.json()
        return doc


async def ingest_up(s: Mapping[str, str]) -> bool:
    """Whether the ingest server answers yet."""
    try:
        await ingest_health(s)
    except httpx.TransportError:
        return False
    return True


async def objects(s: Mapping[str, str]) -> list[tuple[str, list[bytes]]]:
    """Every object under the prefix, in key order, with its records' payloads."""
    out: list[tuple[str, list[bytes]]] = []
    async with _client(s) as s3:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=s["bucket"], Prefix=s["prefix"])
        keys = [o["Key"] async for page in pages for o in page.get("Contents", [])]
        for key in sorted(keys):
            body = await (await s3.get_object(Bucket=s["bucket"], Key=key))["Body"].read()
            out.append((key, [r.payload for r in decode_object(body, key)]))
    return out


async def drop_bucket(s: Mapping[str, str]) -> None:
    """Remove the bucket and everything in it."""
    async with _client(s) as s3:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=s["bucket"])
        keys = [o["Key"] async for page in pages for o in page.get("Contents", [])]
        for key in keys:
            await s3.delete_object(Bucket=s["bucket"], Key=key)
        await s3.delete_bucket(Bucket=s["bucket"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bucket", help="create the bucket")
    p = sub.add_parser("send", help="POST events to the ingest server")
    p.add_argument("count", type=int, nargs="?", default=1000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--batch", type=int, default=50)
    sub.add_parser("show", help="the objects under the prefix")
    args = parser.parse_args()
    s = settings()
    if args.command == "bucket":
        asyncio.run(make_bucket(s))
        print(f"bucket {s['bucket']} at {s['endpoint']}")
    elif args.command == "send":
        tries = asyncio.run(send(s, args.count, args.clients, args.batch))
        print(
            f"sent {args.count} events in {len(tries)} requests from {args.clients} clients: "
            f"every one answered 200 (confirmed), {sum(tries) - len(tries)} sent again"
        )
    else:
        found = asyncio.run(objects(s))
        for key, records in found[:3]:
            print(f"{key}: {len(records)} records, first {records[0].decode()}")
        print(f"... {len(found)} objects, {sum(len(r) for _, r in found)} records")


if __name__ == "__main__":
    main()
