"""The HTTP adapter: ingest server and client, through real HTTP on 127.0.0.1 (ports picked
by the kernel)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from _net import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from byteor.adapters import (
    AckError,
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
    AdapterUnreachable,
    Backoff,
    OutRecord,
    Sink,
    Source,
    ack_all,
    load_adapter,
    nack_all,
)
from byteor.adapters._jsonrecord import record_object
from byteor.adapters.http import (
    HttpAdapter,
    HttpSink,
    HttpSource,
    decode_batch,
    encode_batch,
    idempotency_key,
    serve_app,
)
from byteor.testing import ConformanceTests, Harness

NDJSON = {"content-type": "application/x-ndjson"}
#: Retries without waiting (tests that count attempts inject their own sleep).
QUICK = Backoff(initial_s=0.0, max_s=0.0, jitter=0.0, max_attempts=5)


async def no_sleep(_: float) -> None:
    return None


class HttpHarness(Harness):
    """Upstream of the source is an HTTP client that keeps each record until a 2xx answer; the
    source runs with ``respond = confirmed``, so upstream forgets a record only once it is
    acked downstream — as a Kafka topic keeps what a group has not committed. The sink writes
    to a second source (the receiver), which ``written`` drains."""

    def __init__(self) -> None:
        self.client = httpx.AsyncClient(timeout=30)
        self.url: str | None = None
        self.new_url = asyncio.Event()
        self.producers: list[asyncio.Task[None]] = []
        self.receiver: HttpSource | None = None
        self.received: list[OutRecord] = []

    async def new_source(self) -> Source:
        src = HttpSource(port=0, respond="confirmed", retry_after_s=1)
        await src.start()
        self.url = src.batch_url
        self.new_url.set()
        return src

    async def produce(self, records: Sequence[OutRecord]) -> None:
        self.producers.append(asyncio.create_task(self._upstream(list(records))))

    async def _upstream(self, records: list[OutRecord]) -> None:
        todo = list(range(len(records)))
        while todo:
            url = self.url
            if url is None:
                self.new_url.clear()
                await self.new_url.wait()
                continue
            body = encode_batch([records[i] for i in todo])
            try:
                resp = await self.client.post(url, content=body, headers=NDJSON)
            except httpx.TransportError:
                # The source is gone: wait for the next one (bounded, in case it was only
                # a keep-alive connection the server closed).
                if url == self.url:
                    self.new_url.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):  # no task of its own, unlike wait_for
                            await self.new_url.wait()
                continue
            if resp.is_success:
                return
            if resp.status_code == 429:
                await asyncio.sleep(float(resp.headers["retry-after"]))  # as a client must
                continue
            assert resp.status_code == 503, resp.text
            again = resp.json().get("retry")
            if again is not None:
                todo = [todo[j] for j in again]

    async def _receiver(self) -> HttpSource:
        if self.receiver is None:
            self.receiver = HttpSource(port=0, token="s3cret")
            await self.receiver.start()
        return self.receiver

    async def new_sink(self) -> Sink:
        sink = HttpSink((await self._receiver()).batch_url, token="s3cret", backoff=QUICK)
        await sink.start()
        return sink

    async def written(self) -> list[OutRecord]:
        rcv = await self._receiver()
        while batch := await rcv.next_batch(10_000):
            for r in batch:
                self.received.append(r.out())
                await r.ack.ack()
        return list(self.received)

    async def rejecting_sink(self) -> Sink | None:
        sink = HttpSink((await self._receiver()).batch_url, token="wrong", backoff=QUICK)
        await sink.start()
        return sink

    async def close(self) -> None:
        for t in self.producers:
            t.cancel()
        await asyncio.gather(*self.producers, return_exceptions=True)
        if self.receiver is not None:
            await self.receiver.stop()
        await self.client.aclose()


@pytest.fixture
async def harness() -> AsyncIterator[HttpHarness]:
    h = HttpHarness()
    yield h
    await h.close()


class TestHttpConformance(ConformanceTests):
    pass  # the module-level `harness` fixture serves


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


async def drain(src: HttpSource) -> list[OutRecord]:
    """Everything admitted and not yet handed out, acked."""
    out: list[OutRecord] = []
    while batch := await src.next_batch(100_000):
        for r in batch:
            out.append(r.out())
            await r.ack.ack()
    return out


async def still_serving(c: httpx.AsyncClient, src: HttpSource, **headers: str) -> None:
    """A good request after a bad one is admitted, and only it is in the lane."""
    resp = await c.post(src.url, content=b"still here", headers=headers)
    assert resp.status_code == 202, resp.text
    assert await drain(src) == [OutRecord(b"still here")]


# -- the batch format ----------------------------------------------------------------------


MIXED = [
    OutRecord(b"text", b"user-1", (("trace", b"7"), ("trace", b"8"))),
    OutRecord(b"\x00\xff binary", b"\xfe", (("bin", b"\xff\x00"), ("\u00e9", b"caf\xc3\xa9"))),
    OutRecord(b"", None, ()),
    OutRecord('line\nbreak "quoted" \u2028'.encode(), b"", ()),
]


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_batch_format_round_trips_every_field(fmt: Any) -> None:
    body = encode_batch(MIXED, fmt, keys=[idempotency_key(r) for r in MIXED])
    assert decode_batch(body, fmt) == MIXED
    objs = json.loads(body) if fmt == "json" else [json.loads(x) for x in body.splitlines()]
    assert objs[0]["payload"] == "text" and objs[0]["key"] == "user-1"  # UTF-8 stays readable
    assert objs[1]["payload_b64"] == "AP8gYmluYXJ5" and objs[1]["key_b64"] == "/g=="
    assert objs[1]["headers"] == [
        {"name": "bin", "value_b64": "/wA="},
        {"name": "\u00e9", "value": "caf\u00e9"},
    ]
    assert "key" not in objs[2] and "key_b64" not in objs[2]


#: Payload-only records (the body's fast path): text that needs escaping, binary, empty.
PLAIN = [
    OutRecord(b"plain"),
    OutRecord('q"uote\\ \n\t\x01 \u00e9 \u2028 \U0001f600'.encode()),
    OutRecord(b"\x80\xff not UTF-8"),
    OutRecord(b""),
]


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
@pytest.mark.parametrize("with_keys", [True, False])
def test_a_batch_body_is_what_json_dumps_makes_of_its_objects(fmt: Any, with_keys: bool) -> None:
    # The body is built as text (payload-only records without a dict); it must be, byte for
    # byte, the JSON of record_object per record, for every kind of record mixed together.
    records = [*PLAIN, *MIXED, *PLAIN]
    keys = [idempotency_key(r) for r in records] if with_keys else None
    objs = [record_object(r, keys[i] if keys else None) for i, r in enumerate(records)]
    dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
    want = dumps(objs) if fmt == "json" else "".join(dumps(o) + "\n" for o in objs)
    assert encode_batch(records, fmt, keys) == want.encode()
    assert decode_batch(encode_batch(records, fmt, keys), fmt) == records
    assert encode_batch([], fmt) == (b"[]" if fmt == "json" else b"")


async def test_the_sinks_keys_are_the_records_idempotency_keys(serve: Any) -> None:
    # The sink hashes a payload-only record in one call; the keys on the wire must be
    # idempotency_key's, and the request's key the hash of them, one per line.
    records = [*PLAIN, *MIXED]
    rx = Receiver()
    sink = HttpSink(await serve(rx.app) + "/in", backoff=QUICK, sleep=no_sleep)
    await sink.start()
    await sink.write_batch(records)
    await sink.stop()
    want = [idempotency_key(r) for r in records]
    ((headers, body),) = rx.requests
    assert [json.loads(line)["idempotency_key"] for line in body.splitlines()] == want
    h = hashlib.blake2b(digest_size=16, person=b"byteor-http-bat")
    for k in want:
        h.update(k.encode() + b"\n")
    assert headers["idempotency-key"] == h.hexdigest()


def test_ndjson_tolerates_crlf_and_blank_lines() -> None:
    body = b'\r\n{"payload": "a"}\r\n\r\n  \n{"payload_b64": "Yg==", "key": null}'
    assert decode_batch(body) == [OutRecord(b"a"), OutRecord(b"b")]
    body = b'\xef\xbb\xbf{"payload": "a"} \n\t{"payload_b64": "Yg=="}\n{"payload": "c"}\n'
    assert decode_batch(body) == [OutRecord(b"a"), OutRecord(b"b"), OutRecord(b"c")]
    assert decode_batch(b"") == [] and decode_batch(b"[]", "json") == []


BAD_BATCHES = [
    (b'{"payload": "a"}\n{"payload": "b"', "line 2: not valid JSON"),
    (b'{"payload": "a"}\n\n[1]', "line 3: a record must be a JSON object, got list"),
    (b'{"key": "k"}', "line 1: a record needs payload (UTF-8 text) or payload_b64"),
    (b'{"payload": "a", "payload_b64": "YQ=="}', "line 1: give payload or payload_b64, not both"),
    (b'{"payload_b64": "not base64!"}', "line 1: payload_b64 is not valid base64"),
    (b'{"payload": 5}', "line 1: payload must be a string, got int"),
    (b'{"paylod": "a"}', "line 1: unknown field 'paylod'"),
    (b'{"payload": "a", "headers": {"n": "v"}}', "line 1: headers must be a list"),
    (b'{"payload": "a", "headers": [{"name": "n"}]}', "line 1, headers[0]: a header needs value"),
    (b'{"payload": "\\ud800"}', "line 1: payload is not valid Unicode"),
    (b'{"payload": "\xff"}', "line 1: not UTF-8"),
    (b'{"payload": "a"}\n\n{"payload": "b"}, {"payload": "c"}', "line 3: not valid JSON"),
    (b'{"payload": "a"}\n {"payload": "b"} x\n{"payload": "\xff"}', "line 2: not valid JSON"),
    (b'{"payload": "a"}\n{"payload": "b"}\n{"payload": "\xff"}', "line 3: not UTF-8"),
    (b"[" * 100_000, "line 1: not valid JSON (RecursionError"),
    (b'{"payload": "a", "n": ' + b"7" * 5_000 + b"}", "line 1: not valid JSON (ValueError"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BATCHES)
def test_a_bad_batch_names_the_line_and_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(ValueError) as info:
        decode_batch(body)
    assert str(info.value).startswith(message)
    with pytest.raises(ValueError, match=r"must be a JSON array of record objects, got dict"):
        decode_batch(b'{"payload": "a"}', "json")


def test_idempotency_key_is_deterministic_and_tells_records_apart() -> None:
    a = OutRecord(b"p", b"k", (("h", b"v"),))
    assert idempotency_key(a) == idempotency_key(OutRecord(b"p", b"k", (("h", b"v"),)))
    assert len(idempotency_key(a)) == 32
    others = [
        OutRecord(b"p", b"k", ()),
        OutRecord(b"p", None, (("h", b"v"),)),
        OutRecord(b"p", b"", (("h", b"v"),)),
        OutRecord(b"pk", None, (("h", b"v"),)),
        OutRecord(b"p", b"k", (("hv", b""),)),
    ]
    keys = {idempotency_key(r) for r in [a, *others]}
    assert len(keys) == 6, "length-prefixed fields: no two of these collide"
    given = OutRecord(b"p", None, (("Idempotency-Key", b"order-17"),))
    assert idempotency_key(given) == "order-17"


# -- the ingest server ---------------------------------------------------------------------


async def test_single_records_take_key_and_headers_from_request_headers(
    client: httpx.AsyncClient,
) -> None:
    src = HttpSource(port=0)
    await src.start()
    try:
        assert src.port > 0 and src.url == f"http://127.0.0.1:{src.port}/records"
        resp = await client.post(
            src.url,
            content=b"\x00body\n",
            headers=[
                ("X-Record-Key", "user-1"),
                ("X-Record-Header-Trace", "7"),
                ("X-Record-Header-Trace", "8"),
                ("Idempotency-Key", "ignored"),
                ("Content-Type", "application/json"),
            ],
        )
        assert (resp.status_code, resp.json()) == (202, {"admitted": 1})
        got = await src.next_batch(10)
        assert [r.out() for r in got] == [
            OutRecord(b"\x00body\n", b"user-1", (("trace", b"7"), ("trace", b"8")))
        ]
        assert got[0].position == 0
        health = await client.get(src.base_url + "/health")
        assert health.json()["used"] == 1 and health.json()["queued"] == 0
        await got[0].ack.ack()
        assert src.statistics().used == 0
    finally:
        await src.stop()
    assert not src.health().connected


async def test_ten_thousand_records_round_trip_through_the_sink() -> None:
    sent = [
        OutRecord(
            f"payload-{i}".encode() + (b"\xff" if i % 3 == 0 else b""),
            f"k{i % 7}".encode(),
            (("n", str(i).encode()), ("bin", bytes([i % 256]))),
        )
        for i in range(10_000)
    ]
    src = HttpSource(port=0, capacity=2_000)
    await src.start()
    sink = HttpSink(src.batch_url, batch_records=1_000, backoff=QUICK)
    await sink.start()
    got: list[OutRecord] = []

    async def consume() -> None:
        while len(got) < len(sent):
            for r in await src.next_batch(1_000, timeout_s=5.0):
                got.append(r.out())
                await r.ack.ack()

    consumer = asyncio.create_task(consume())
    try:
        await sink.write_batch(sent)
        await asyncio.wait_for(consumer, 30)
        assert got == sent  # exact content, in order, each once
        assert await src.next_batch(10) == []
        stats = src.statistics()
        assert (stats.admitted, stats.used, stats.peak <= 2_000) == (10_000, 0, True)
    finally:
        consumer.cancel()
        await sink.stop()
        await src.stop()


async def test_a_full_source_answers_429_and_the_sink_retry_loses_nothing(
    client: httpx.AsyncClient,
) -> None:
    src = HttpSource(port=0, capacity=100, retry_after_s=1)
    await src.start()
    waits: list[float] = []
    got: list[OutRecord] = []

    async def consumer_runs_while_the_sink_waits(wait: float) -> None:
        waits.append(wait)
        got.extend(await drain(src))

    sink = HttpSink(
        src.batch_url,
        batch_records=40,
        backoff=Backoff(initial_s=0.1, max_s=0.1, max_attempts=3),
        sleep=consumer_runs_while_the_sink_waits,
    )
    await sink.start()
    try:
        sent = [OutRecord(f"r{i}".encode()) for i in range(300)]
        await sink.write_batch(sent)
        got.extend(await drain(src))
        assert got == sent, "every record once, in order"
        assert waits and all(w >= 1.0 for w in waits), "Retry-After: 1 was honoured"
        assert src.statistics().rejected == len(waits)  # one 429 per wait
        assert src.statistics().peak == 80  # two batches of 40 fit, the third did not

        await client.post(src.batch_url, content=encode_batch(sent[:100]), headers=NDJSON)
        resp = await client.post(src.url, content=b"one more")
        assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
        assert "the source is full (100 of 100 records" in resp.json()["error"]
        assert len(await drain(src)) == 100  # the refused record was not kept
        src.pause()
        resp = await client.post(src.url, content=b"while paused")
        assert resp.status_code == 429 and "paused" in resp.json()["error"]
        src.resume()
        await still_serving(client, src)
    finally:
        await sink.stop()
        await src.stop()


async def test_confirmed_mode_answers_after_acks_and_503_names_what_to_resend(
    client: httpx.AsyncClient,
) -> None:
    src = HttpSource(port=0, respond="confirmed", retry_after_s=2)
    await src.start()
    try:
        body = encode_batch([OutRecord(b"a"), OutRecord(b"b"), OutRecord(b"c")])
        call = asyncio.create_task(client.post(src.batch_url, content=body, headers=NDJSON))
        got = await src.next_batch(3, timeout_s=5)
        assert [r.payload for r in got] == [b"a", b"b", b"c"]
        await got[0].ack.ack()
        await got[1].ack.nack()
        assert not call.done()
        await got[2].ack.ack()
        resp = await call
        assert resp.status_code == 503 and resp.headers["retry-after"] == "2"
        assert resp.json()["confirmed"] == [0, 2] and resp.json()["retry"] == [1]

        call = asyncio.create_task(client.post(src.url, content=b"d"))
        (rec,) = await src.next_batch(1, timeout_s=5)
        await rec.ack.ack()
        assert ((await call).status_code, (await call).json()) == (200, {"confirmed": 1})
    finally:
        await src.stop()


async def test_the_sink_resends_only_what_a_confirmed_source_nacked() -> None:
    src = HttpSource(port=0, respond="confirmed")
    await src.start()
    sink = HttpSink(src.batch_url, backoff=QUICK, sleep=no_sleep)
    await sink.start()
    deliveries: list[bytes] = []

    async def consume() -> None:
        nacked = False
        while True:
            for r in await src.next_batch(100, timeout_s=5):
                deliveries.append(r.payload)
                if r.payload == b"r3" and not nacked:
                    nacked = True
                    await r.ack.nack()
                else:
                    await r.ack.ack()

    consumer = asyncio.create_task(consume())
    try:
        await sink.write_batch([OutRecord(f"r{i}".encode()) for i in range(10)])
        assert deliveries == [f"r{i}".encode() for i in range(10)] + [b"r3"]
    finally:
        consumer.cancel()
        await sink.stop()
        await src.stop()


async def test_a_nack_in_admitted_mode_hands_the_record_out_again(
    client: httpx.AsyncClient,
) -> None:
    src = HttpSource(port=0)
    await src.start()
    try:
        await client.post(src.batch_url, content=encode_batch([OutRecord(b"a")]), headers=NDJSON)
        (rec,) = await src.next_batch(10)
        await rec.ack.nack()
        (again,) = await src.next_batch(10)
        assert again.payload == b"a" and again.position == rec.position
        await again.ack.ack()
        assert src.statistics().used == 0
    finally:
        await src.stop()


async def test_requests_are_handed_out_in_pieces_with_their_keys_and_headers(
    client: httpx.AsyncClient,
) -> None:
    """Records keep their key, headers and position whether a take ends inside a request or
    spans two, and when nacked ones are handed out again."""
    src = HttpSource(port=0)
    await src.start()
    first = [
        OutRecord(b"p0"),
        OutRecord(b"p1", b"k1", (("h", b"1"),)),
        OutRecord(b"\xff2"),
        OutRecord(b"p3", None, (("h", b"3"), ("h", b"\x00"))),
    ]
    second = [OutRecord(b"p4", b""), OutRecord(b"p5")]
    try:
        json_type = {"content-type": "application/json"}
        for body, ctype in (
            (encode_batch(first), NDJSON),
            (encode_batch(second, "json"), json_type),
        ):
            resp = await client.post(src.batch_url, content=body, headers=ctype)
            assert resp.status_code == 202, resp.text
        assert src.statistics().queued == 6
        got = await src.next_batch(3)
        assert src.statistics().queued == 3
        got += await src.next_batch(10)
        assert [r.out() for r in got] == first + second
        assert [r.position for r in got] == [0, 1, 2, 3, 4, 5]
        await nack_all([got[1], got[3], got[4]])
        await ack_all([got[0], got[2], got[5]])
        again = await src.next_batch(2)
        again += await src.next_batch(10)
        assert [(r.out(), r.position) for r in again] == [
            (first[1], 1), (first[3], 3), (second[0], 4)
        ]  # fmt: skip
        await ack_all(again)
        assert src.statistics().used == 0 and src.statistics().queued == 0
    finally:
        await src.stop()


async def test_batches_settle_without_handles_in_both_modes(client: httpx.AsyncClient) -> None:
    """ack_all / nack_all settle a batch without a handle per record (one object a record):
    admitted mode gives the room back or hands the records out again, in order; confirmed
    mode answers each request once all of its records settled, whichever way they were."""
    src = HttpSource(port=0, capacity=6)
    await src.start()
    try:
        body = encode_batch([OutRecord(f"r{i}".encode()) for i in range(6)])
        assert (await client.post(src.batch_url, content=body, headers=NDJSON)).status_code == 202
        first = await src.next_batch(4)
        assert [r.position for r in first] == [0, 1, 2, 3]
        await nack_all(first[:2])
        await ack_all(first[2:])
        assert src.statistics().used == 4  # the two nacked are still in the lane
        with pytest.raises(AckError):
            await ack_all(first[:1])  # settled once already
        again = await src.next_batch(10)
        assert [(r.payload, r.position) for r in again] == [
            (b"r0", 0), (b"r1", 1), (b"r4", 4), (b"r5", 5)
        ]  # fmt: skip
        await again[0].ack.ack()  # one handle made, the rest settled as a batch
        await ack_all(again[1:])
        assert src.statistics().used == 0 and await src.next_batch(10) == []
    finally:
        await src.stop()

    src = HttpSource(port=0, respond="confirmed", retry_after_s=2)
    await src.start()
    try:
        calls: list[asyncio.Task[httpx.Response]] = []
        got: list[Any] = []
        for body in (encode_batch([OutRecord(b"a"), OutRecord(b"b")]), b'{"payload":"c"}'):
            post = client.post(src.batch_url, content=body, headers=NDJSON)
            calls.append(asyncio.create_task(post))
            got += await src.next_batch(10, timeout_s=5)  # one request's records at a time
        assert [r.payload for r in got] == [b"a", b"b", b"c"]
        await ack_all([got[0], got[2]])
        second = await calls[1]  # its one record is acked; the first request waits for b
        assert not calls[0].done()
        await nack_all(got[1:2])
        first = await calls[0]
        assert (first.status_code, first.json()["confirmed"], first.json()["retry"]) == (
            503, [0], [1]
        )  # fmt: skip
        assert (second.status_code, second.json()) == (200, {"confirmed": 1})
        assert src.statistics().used == 0 and await src.next_batch(10) == []
    finally:
        await src.stop()


async def test_bearer_token_is_required(client: httpx.AsyncClient) -> None:
    src = HttpSource(port=0, token="s3cret")
    await src.start()
    try:
        for auth in [None, "Bearer wrong", "Bearer s3cre", "Basic s3cret", "Bearer"]:
            headers = {"authorization": auth} if auth else {}
            resp = await client.post(src.url, content=b"x", headers=headers)
            assert resp.status_code == 401, auth
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert "bearer token" in resp.json()["error"]
        resp = await client.post(src.batch_url, content=b"{", headers={"content-type": "x/y"})
        assert resp.status_code == 401, "refused unread: neither 415 nor 400"
        sink = HttpSink(src.url, mode="record", token="wrong", backoff=QUICK)
        await sink.start()
        with pytest.raises(AdapterAuthError) as info:
            await sink.write_batch([OutRecord(b"x")])
        await sink.stop()
        assert str(info.value).startswith(f"http: {src.url} refused the credentials (401")
        assert src.statistics().refused == 7, "401 is not retried"
        assert src.statistics().admitted == 0
        await still_serving(client, src, authorization="bearer s3cret")
    finally:
        await src.stop()


async def test_oversized_requests_get_413(client: httpx.AsyncClient) -> None:
    src = HttpSource(port=0, max_body_bytes=1024, capacity=50)
    await src.start()
    try:
        resp = await client.post(src.url, content=b"x" * 1025)
        assert resp.status_code == 413 and "larger than 1024 bytes" in resp.json()["error"]
        await still_serving(client, src)

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for _ in range(5):
                yield b"y" * 300

        resp = await client.post(src.url, content=chunked())
        assert resp.status_code == 413
        await still_serving(client, src)

        many = encode_batch([OutRecord(b"") for _ in range(51)])
        assert len(many) <= 1024
        resp = await client.post(src.batch_url, content=many, headers=NDJSON)
        assert resp.status_code == 413
        assert "51 records can never fit in the source's capacity of 50" in resp.json()["error"]
        await still_serving(client, src)

        sink = HttpSink(src.url, mode="record", backoff=QUICK)
        await sink.start()
        with pytest.raises(AdapterError, match="refused a record of 100000 bytes as too large"):
            await sink.write_batch([OutRecord(b"z" * 100_000)])  # more than socket buffers
        await sink.stop()
        assert src.statistics().refused == 4 and src.statistics().admitted == 3
        await still_serving(client, src)
    finally:
        await src.stop()


async def test_wrong_content_type_gets_415(client: httpx.AsyncClient) -> None:
    src = HttpSource(port=0)
    await src.start()
    try:
        good = encode_batch([OutRecord(b"a")])
        for ctype in ["text/plain", "application/octet-stream", None]:
            headers = {"content-type": ctype} if ctype else {}
            resp = await client.post(src.batch_url, content=good, headers=headers)
            assert resp.status_code == 415, ctype
            assert "application/x-ndjson or application/json" in resp.json()["error"]
        resp = await client.post(src.url, data={"a": "b"})  # what curl labels every body
        assert resp.status_code == 202  # a single record's body is the payload, whatever it is
        assert await drain(src) == [OutRecord(b"a=b")]
        resp = await client.post(
            src.batch_url, content=good, headers={"content-type": "Application/X-NDJSON; a=b"}
        )
        assert resp.status_code == 202
        assert await drain(src) == [OutRecord(b"a")]
        await still_serving(client, src)
    finally:
        await src.stop()


async def test_bad_json_gets_400_naming_the_line_and_admits_nothing(
    client: httpx.AsyncClient,
) -> None:
    src = HttpSource(port=0)
    await src.start()
    try:
        for body, message in BAD_BATCHES:
            resp = await client.post(src.batch_url, content=body, headers=NDJSON)
            assert resp.status_code == 400, body
            assert resp.json()["error"].startswith(message)
            assert src.statistics().admitted == 0, "a bad batch admits none of its records"
        resp = await client.post(
            src.batch_url, content=b"[1", headers={"content-type": "application/json"}
        )
        assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]
        assert src.statistics().refused == len(BAD_BATCHES) + 1
        await still_serving(client, src)
    finally:
        await src.stop()


# -- the client ----------------------------------------------------------------------------


class Receiver:
    """A receiver answering from a script of statuses, recording every request it gets."""

    def __init__(self, *script: tuple[int, dict[str, str]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.answer, methods=["POST"])])

    async def answer(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.body()))
        status, headers = self.script.pop(0) if self.script else (200, {})
        return JSONResponse({"status": status}, status, headers=headers)

    def keys(self) -> list[str]:
        return [h["idempotency-key"] for h, _ in self.requests]


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[Any] = []

    async def start(app: Any) -> str:
        server, task, port = await serve_app(app, "127.0.0.1", 0)
        servers.append((server, task))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


async def test_idempotency_keys_are_stable_across_retries(serve: Any) -> None:
    rx = Receiver((503, {}), (502, {}), (429, {"retry-after": "3"}), (504, {}))
    base = await serve(rx.app)
    waits: list[float] = []

    async def sleep(w: float) -> None:
        waits.append(w)

    recs = [OutRecord(b"a", b"k", (("h", b"v"),)), OutRecord(b"b"), OutRecord(b"a", b"k")]
    sink = HttpSink(base + "/in", mode="record", backoff=QUICK, sleep=sleep)
    await sink.start()
    await sink.write_batch(recs)
    assert rx.keys() == [idempotency_key(recs[0])] * 5 + [idempotency_key(r) for r in recs[1:]]
    assert [b for _, b in rx.requests] == [b"a"] * 5 + [b"b", b"a"]
    first = rx.requests[0][0]
    assert first["x-record-key"] == "k" and first["x-record-header-h"] == "v"
    assert waits[2] == 3.0 and max(waits[:2] + waits[3:]) == 0.0  # Retry-After honoured

    rx.requests.clear()
    rx.script = [(503, {}), (503, {})]
    batch = HttpSink(base + "/in", batch_format="json", backoff=QUICK, sleep=sleep)
    await batch.start()
    await batch.write_batch(recs)
    assert len(rx.requests) == 3 and len(set(rx.keys())) == 1, "the same request each time"
    for _, body in rx.requests:
        lines = json.loads(body)
        assert [x["idempotency_key"] for x in lines] == [idempotency_key(r) for r in recs]
        assert decode_batch(body, "json") == recs
    await sink.stop()
    await batch.stop()


async def test_statuses_map_to_typed_errors(serve: Any) -> None:
    rx = Receiver((403, {}), (404, {}), (400, {}), (503, {}), (503, {}))
    base = await serve(rx.app)
    sink = HttpSink(base + "/in", backoff=Backoff(0.0, 0.0, max_attempts=2), sleep=no_sleep)
    await sink.start()
    with pytest.raises(AdapterAuthError):
        await sink.write_batch([OutRecord(b"x")])
    with pytest.raises(AdapterNotFound) as nf:
        await sink.write_batch([OutRecord(b"x")])
    assert str(nf.value).startswith(f"http: path '/in' does not exist on {base} (404")
    with pytest.raises(AdapterError) as bad:
        await sink.write_batch([OutRecord(b"x")])
    assert not bad.value.retriable and "answered 400 Bad Request" in str(bad.value)
    with pytest.raises(AdapterError) as busy:
        await sink.write_batch([OutRecord(b"x")])  # two attempts, both 503
    assert busy.value.retriable and "answered 503" in str(busy.value)
    assert len(rx.requests) == 5, "only the 503s were retried"
    await sink.stop()


async def test_sink_against_a_closed_port_says_so() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/records"
    waits: list[float] = []

    async def sleep(w: float) -> None:
        waits.append(w)

    sink = HttpSink(url, backoff=Backoff(0.05, 1.0, jitter=0.0, max_attempts=3), sleep=sleep)
    await sink.start()
    with pytest.raises(AdapterUnreachable) as info:
        await sink.write_batch([OutRecord(b"x")])
    assert info.value.retriable
    assert str(info.value).startswith(f"http: cannot reach {url} (ConnectError")
    assert waits == [0.05, 0.1], "retried with exponential backoff first"
    assert not sink.health().connected
    await sink.stop()


async def test_record_mode_refuses_what_cannot_be_a_header_before_sending_any(
    serve: Any,
) -> None:
    rx = Receiver()
    sink = HttpSink(await serve(rx.app) + "/in", mode="record", backoff=QUICK)
    await sink.start()
    with pytest.raises(AdapterError, match="its header 'h' cannot travel as an HTTP header"):
        await sink.write_batch([OutRecord(b"ok"), OutRecord(b"p", None, (("h", b"a\nb"),))])
    with pytest.raises(AdapterError, match="its key cannot travel"):
        await sink.write_batch([OutRecord(b"p", b" padded", ())])
    assert rx.requests == [], "nothing of a batch that cannot be sent was sent"
    await sink.stop()


async def test_record_mode_with_concurrency_delivers_each_record_once() -> None:
    src = HttpSource(port=0)
    await src.start()
    sink = HttpSink(src.url, mode="record", concurrency=8, backoff=QUICK)
    await sink.start()
    try:
        sent = [OutRecord(f"r{i}".encode(), b"k", (("n", str(i).encode()),)) for i in range(200)]
        await sink.write_batch(sent)
        got = await drain(src)
        assert sorted(got, key=lambda r: int(r.payload[1:])) == sent
    finally:
        await sink.stop()
        await src.stop()


def test_registry_and_config() -> None:
    adapter = load_adapter("http")
    assert isinstance(adapter, HttpAdapter)
    assert adapter.declaration().source is not None and adapter.declaration().sink is not None
    _, findings = adapter.config.validate({"respond": "maybe", "mode": "stream"})
    assert [f.code for f in findings] == ["AD504", "AD504"]
    src = adapter.source({"port": "0", "respond": "confirmed", "capacity": "5"})
    assert isinstance(src, HttpSource)
    assert isinstance(adapter.sink({"url": "http://127.0.0.1:1/x", "mode": "record"}), HttpSink)
    with pytest.raises(AdapterConfigError, match="a sink needs config 'url'"):
        adapter.sink({})
    with pytest.raises(AdapterConfigError, match="must be an http:// or https:// URL"):
        adapter.sink({"url": "ftp://x"})


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        src = HttpSource(port=s.getsockname()[1])
        with pytest.raises(AdapterError, match=r"cannot listen on 127.0.0.1:\d+ .*another server"):
            await src.start()


# -- a process killed mid-stream -----------------------------------------------------------

CLIENT = """
import sys, httpx
from byteor.adapters import OutRecord
from byteor.adapters.http import encode_batch

url, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with httpx.Client() as c:
    for at in range(start, end, 10):
        body = encode_batch([OutRecord(f"r{i}".encode()) for i in range(at, at + 10)])
        r = c.post(url, content=body, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 202, r.text
        print(at + 10, flush=True)  # its progress: everything below was answered 202
"""


class KillsItsClient(HttpSource):
    """Kills the client with SIGKILL right after admitting its 25th request, before the 202
    is written: the one window in which a client cannot know its records are in."""

    victim: asyncio.subprocess.Process | None = None
    requests = 0

    async def _admit(self, batch: Any) -> Response:
        answer = await super()._admit(batch)
        self.requests += 1
        if self.requests == 25 and self.victim is not None:
            self.victim.send_signal(signal.SIGKILL)
        return answer


async def test_a_client_killed_mid_stream_finds_all_it_was_told_in_the_lane() -> None:
    """What a client was answered 202 for is in the lane, in order, once; beyond it only the
    request it had in flight. Restarted from its own progress (the 202s it saw), it repeats
    exactly that request and loses nothing."""
    src = KillsItsClient(port=0, capacity=10_000)
    await src.start()
    sent = [f"r{i}".encode() for i in range(600)]

    async def client(start: int) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, src.batch_url, str(start), "600",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        src.victim = proc
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        progress = [int(x) for x in out.split()]
        return progress[-1] if progress else start

    try:
        told = await client(0)
        assert src.victim is not None and src.victim.returncode == -signal.SIGKILL
        assert told == 240, "24 requests answered; the 25th admitted, its answer never read"
        lane = [r.payload for r in await drain(src)]
        assert lane == sent[:250], "all it was told, and the request in flight, in order"
        src.victim = None
        assert await client(told) == 600
        lane += [r.payload for r in await drain(src)]
        assert lane == sent[:250] + sent[240:], "only the in-flight request came twice"
    finally:
        await src.stop()


SERVER = """
import asyncio, sys
from byteor.adapters.http import HttpSource

async def main() -> None:
    port, ack_first = int(sys.argv[1]), int(sys.argv[2])
    src = HttpSource(port=port, respond="confirmed")
    await src.start()
    print("ready", flush=True)
    acked = 0
    while True:
        for r in await src.next_batch(100, timeout_s=1.0):
            if ack_first and acked == ack_first:
                print("stalled", flush=True)  # takes records, acks nothing more
                ack_first = -1
            if ack_first >= 0:
                await r.ack.ack()
                acked += 1
                print("ack", r.payload.decode(), flush=True)

asyncio.run(main())
"""


async def test_a_consuming_server_killed_mid_stream_and_restarted_loses_nothing() -> None:
    """The source (respond = confirmed) is killed with SIGKILL after acking 30 records: the
    sink's first request (25 records) was confirmed, the second was not. Restarted on the
    same port, the source gets exactly the records from the unconfirmed request on."""
    port = free_port()
    sent = [OutRecord(f"r{i}".encode()) for i in range(100)]

    async def server(ack_first: int) -> tuple[asyncio.subprocess.Process, list[bytes]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVER, str(port), str(ack_first), stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        return proc, []

    first, acked1 = await server(30)
    url = f"http://127.0.0.1:{port}/records/batch"
    sink = HttpSink(url, batch_records=25, backoff=Backoff(0.05, 0.2, max_attempts=200))
    await sink.start()
    writing = asyncio.create_task(sink.write_batch(sent))
    second = None
    try:
        assert first.stdout is not None
        while (line := await asyncio.wait_for(first.stdout.readline(), 30)) != b"stalled\n":
            acked1.append(line.split()[1])
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert acked1 == [r.payload for r in sent[:30]]
        second, acked2 = await server(0)
        assert second.stdout is not None
        while len(acked2) < 75:
            acked2.append((await asyncio.wait_for(second.stdout.readline(), 30)).split()[1])
        await asyncio.wait_for(writing, 30)  # every request confirmed in the end
        assert acked2 == [r.payload for r in sent[25:]], "from the unconfirmed request on"
    finally:
        writing.cancel()
        await sink.stop()
        for p in (first, second):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()
