"""HTTP: ``HttpSource``/``HttpSink`` against Starlette/uvicorn and httpx used by hand.

The counterpart runs in a peer process (:mod:`._peer`), the same for ours and the hand loop.

Source: the peer is one httpx client POSTing NDJSON batches of ``batch`` records (each body
built before the run, exactly what ``HttpSink`` sends: ``payload_b64`` and ``idempotency_key``
per line) one after the other to ``/records/batch``, resending a 429 after its Retry-After.
Ours: ``HttpSource`` (``respond = admitted``: 202 once a request's records are in its
buffer), ``next_batch`` + ``ack_all``. By hand: a Starlette app served by uvicorn the same way
(``serve_app``: same uvicorn settings) whose route reads the body, parses every line
(``json.loads``, base64 of the payload), queues the payloads, and answers 202 — or 429 with
the same capacity (10,000 records admitted and not yet acknowledged); the loop takes up to
``n`` payloads and acknowledges by giving their room back. The clock stops when the client
has its last 202. The bound: the same app answering 202 to every body without reading a line
(records counted from the bodies the client sent), the most any parser on uvicorn could do.

The hand route checks what ours must check of untrusted input, and keeps what ours delivers:
the content type (415), the body's size (413 over HttpSource's default 8 MiB, from
Content-Length and from what was read), a batch larger than the capacity (413), and every
line: JSON (400 naming the line), an object of the record's fields only (a typo would lose a
field), payload or payload_b64 and not both, a string, base64 strictly (``validate=True``),
and a record's key and headers when it has them (kept beside the payloads by admission
number; the load carries none, so that is a presence check a record). Before, it did none of
these: a bad line made a 500, base64 was decoded leniently, key and headers were dropped
(source, load 1.2-1.7: 0.99x wall, CPU a record hand 3.2 us vs ours 2.5; with the checks,
load 0.8-1.2: 1.26x / 1.47x, hand 3.6 vs ours 2.4-2.5). No token is set on either side (no
Authorization to check).

Sink: the peer hosts an ``HttpSource`` drained by a loop that checks every record's sequence
and acknowledges with ``ack_all``. Ours: ``HttpSink.write_batch`` (a request per batch). By
hand: an ``httpx.AsyncClient`` POSTing the same body — per record a BLAKE2b idempotency key
and a JSON line, the request's Idempotency-Key hashing the lines' keys — built in the timed
loop as ours builds it; a batch is confirmed by its 2xx.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from byteor.adapters import OutRecord, Record, ack_all
from byteor.adapters.http import HttpSink, HttpSource, serve_app
from byteor.bench.adapters._harness import (
    READ_WAIT_S,
    BenchFailure,
    Impl,
    Kind,
    Plan,
    SinkSide,
    SourceSide,
    payloads,
)
from byteor.bench.adapters._peer import CasePeer, LoadedSource, Peer, Reports, ServedCase

__all__ = ["HttpCase", "HttpPeer", "hand_body"]

HOST = "127.0.0.1"
#: The buffer of every server here (HttpSource's default): records admitted, not yet acked.
CAPACITY = 10_000
#: HttpSource's default max_body_bytes, which the hand-written route enforces too.
MAX_BODY = 8 << 20
RETRY_AFTER_S = 1
NDJSON = "application/x-ndjson"
_FIELDS = frozenset({"payload", "payload_b64", "key", "key_b64", "headers", "idempotency_key"})
_NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})


class _Refused(ValueError):
    """A line the hand-written route refuses (the 400's message)."""


def _text_or_b64(obj: dict[str, Any], name: str, at: str) -> bytes | None:
    """Field ``name`` of a record or header object, given as text or as ``<name>_b64``."""
    text, b64 = obj.get(name), obj.get(name + "_b64")
    if text is not None and b64 is not None:
        raise _Refused(f"{at}: give {name} or {name}_b64, not both")
    try:
        if isinstance(text, str):
            return text.encode()
        if isinstance(b64, str):
            return base64.b64decode(b64, validate=True)
    except (ValueError, UnicodeEncodeError):
        raise _Refused(f"{at}: {name} is not valid") from None
    if text is None and b64 is None:
        return None
    raise _Refused(f"{at}: {name} must be a string")


def _key_and_headers(obj: dict[str, Any], at: str) -> tuple[bytes | None, list[Any]]:
    """A record's key and headers, by hand."""
    raw = obj.get("headers")
    if raw is not None and not isinstance(raw, list):
        raise _Refused(f"{at}: headers must be a list")
    headers = []
    for h in raw or ():
        if not isinstance(h, dict) or not isinstance(h.get("name"), str):
            raise _Refused(f"{at}: a header is {{name, value or value_b64}}")
        value = _text_or_b64(h, "value", at)
        if value is None:
            raise _Refused(f"{at}: a header needs a value")
        headers.append((h["name"], value))
    return _text_or_b64(obj, "key", at), headers


# -- what the hand-written sink sends ------------------------------------------------------


def _key(payload: bytes) -> str:
    """A record's idempotency key as HttpSink makes it for a record without key or headers."""
    h = hashlib.blake2b(digest_size=16, person=b"byteor-http-v1")
    h.update(len(payload).to_bytes(8, "big"))
    h.update(payload)
    h.update(b"\x00")
    return h.hexdigest()


def hand_body(batch: Sequence[bytes]) -> tuple[bytes, str]:
    """The NDJSON body and the request's Idempotency-Key for ``batch``, written by hand."""
    lines: list[bytes] = []
    keys: list[str] = []
    for payload in batch:
        key = _key(payload)
        keys.append(key)
        try:
            obj = {"payload": payload.decode("utf-8"), "idempotency_key": key}
        except UnicodeDecodeError:
            obj = {"payload_b64": base64.b64encode(payload).decode("ascii"), "idempotency_key": key}
        lines.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    h = hashlib.blake2b(digest_size=16, person=b"byteor-http-bat")
    for key in keys:
        h.update(key.encode("latin-1") + b"\n")
    return b"".join(lines), h.hexdigest()


# -- the source sides ----------------------------------------------------------------------


class _OursSource(LoadedSource[list[Record]]):
    def __init__(self, peer: Peer, target: str, reports: Reports) -> None:
        super().__init__(peer, target, reports)
        self._src = HttpSource(HOST, 0, capacity=CAPACITY, retry_after_s=RETRY_AFTER_S)

    async def serve(self) -> str:
        await self._src.start()
        return self._src.batch_url

    async def shutdown(self) -> None:
        await self._src.stop()

    def counts(self) -> dict[str, int]:
        s = self._src.statistics()
        return {"admitted": s.admitted, "unsettled": s.used, "rejected": s.rejected}

    async def read(self, max_records: int) -> tuple[Sequence[bytes], list[Record]]:
        recs = await self._src.next_batch(max_records, timeout_s=READ_WAIT_S)
        return [r.payload for r in recs], recs

    async def ack(self, token: list[Record]) -> None:
        await ack_all(token)


class _Bare:
    """The hand-written ingest app: parse, queue, 202 (or 429 when full)."""

    def __init__(self, parse: bool) -> None:
        self.queue: deque[bytes] = deque()
        #: The key and headers of the records that have any, by admission number.
        self.extras: dict[int, tuple[bytes | None, list[Any]]] = {}
        self.changed = asyncio.Event()
        self.used = self.admitted = self.rejected = self.requests = self.size = self.taken = 0
        self.t_first_ns = self.cpu_first_ns = 0
        route = self._batch if parse else self._count
        self.app = Starlette(routes=[Route("/records/batch", route, methods=["POST"])])

    def _full(self) -> Response:
        self.rejected += 1
        return JSONResponse({"error": "full"}, 429, headers={"Retry-After": str(RETRY_AFTER_S)})

    async def _batch(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype not in _NDJSON_TYPES:
            return JSONResponse({"error": "not NDJSON"}, 415)
        if self.used >= CAPACITY:
            return self._full()
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return JSONResponse({"error": "too large"}, 413)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "too large"}, 413)
        got: list[bytes] = []
        extras: dict[int, tuple[bytes | None, list[Any]]] = {}
        fields = _FIELDS
        try:
            for n, line in enumerate(body.split(b"\n"), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):
                    raise _Refused(f"line {n}: not valid JSON") from None
                if not isinstance(obj, dict) or not fields.issuperset(obj):
                    raise _Refused(f"line {n}: not a record object")
                payload = _text_or_b64(obj, "payload", f"line {n}")
                if payload is None:
                    raise _Refused(f"line {n}: no payload")
                if "key" in obj or "key_b64" in obj or "headers" in obj:
                    extras[len(got)] = _key_and_headers(obj, f"line {n}")
                got.append(payload)
        except _Refused as exc:
            return JSONResponse({"error": str(exc)}, 400)
        n = len(got)
        if n > CAPACITY:
            return JSONResponse({"error": "larger than the capacity"}, 413)
        if self.used + n > CAPACITY:
            return self._full()
        if extras:
            base = self.admitted
            self.extras.update((base + i, kh) for i, kh in extras.items())
        self.queue.extend(got)
        self.used += n
        self.admitted += n
        self.changed.set()
        return JSONResponse({"admitted": n}, 202)

    async def _count(self, request: Request) -> Response:
        body = await request.body()
        if not self.requests:
            self.t_first_ns = time.perf_counter_ns()
            self.cpu_first_ns = time.process_time_ns()
        self.requests += 1
        self.size += len(body)
        return JSONResponse({"admitted": 0}, 202)


class _HandSource(LoadedSource[int]):
    def __init__(self, peer: Peer, target: str, reports: Reports) -> None:
        super().__init__(peer, target, reports)
        self._bare = _Bare(parse=True)
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    async def serve(self) -> str:
        self._server, self._task, port = await serve_app(self._bare.app, HOST, 0)
        return f"http://{HOST}:{port}/records/batch"

    async def shutdown(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None

    def counts(self) -> dict[str, int]:
        b = self._bare
        return {"admitted": b.admitted, "unsettled": b.used, "rejected": b.rejected}

    async def read(self, max_records: int) -> tuple[Sequence[bytes], int]:
        bare = self._bare
        if not bare.queue:
            bare.changed.clear()
            try:
                async with asyncio.timeout(READ_WAIT_S):
                    await bare.changed.wait()
            except TimeoutError:
                return [], 0
        queue = bare.queue
        got = [queue.popleft() for _ in range(min(max_records, len(queue)))]
        if bare.extras:  # the records with a key or headers among these: handed out with them
            first = bare.taken
            for i in range(first, first + len(got)):
                bare.extras.pop(i, None)
        bare.taken += len(got)
        return got, len(got)

    async def ack(self, token: int) -> None:
        self._bare.used -= token


# -- the sink sides ------------------------------------------------------------------------


class _OursSink(SinkSide[list[OutRecord]]):
    def __init__(self, case: HttpCase, target: str, plan: Plan) -> None:
        self._case, self._target, self._plan = case, target, plan
        self._sink: HttpSink | None = None

    async def open(self) -> None:
        url = await self._case.receiver(self._target, self._plan)
        self._sink = HttpSink(url, batch_records=self._plan.batch)
        await self._sink.start()

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[OutRecord]]:
        return [[OutRecord(p) for p in items[i : i + batch]] for i in range(0, len(items), batch)]

    async def write(self, batch: list[OutRecord]) -> None:
        assert self._sink is not None
        await self._sink.write_batch(batch)

    async def close(self) -> None:
        if self._sink is not None:
            await self._sink.stop()


class _HandSink(SinkSide[list[bytes]]):
    def __init__(self, case: HttpCase, target: str, plan: Plan) -> None:
        self._case, self._target, self._plan = case, target, plan
        self._client: httpx.AsyncClient | None = None
        self._url = ""

    async def open(self) -> None:
        self._url = await self._case.receiver(self._target, self._plan)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0),
            limits=httpx.Limits(max_connections=10, max_keepalive_connections=10),
        )

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[bytes]]:
        return [list(items[i : i + batch]) for i in range(0, len(items), batch)]

    async def write(self, batch: list[bytes]) -> None:
        assert self._client is not None
        body, key = hand_body(batch)
        resp = await self._client.post(
            self._url, content=body, headers={"content-type": NDJSON, "idempotency-key": key}
        )
        if not resp.is_success:
            raise BenchFailure(f"POST answered {resp.status_code}: {resp.text[:200]}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


# -- the case ------------------------------------------------------------------------------


class HttpCase(ServedCase):
    name = "http"
    client = "httpx"
    records = 100_000
    peer_entry = "byteor.bench.adapters.http:HttpPeer"
    ours_source = (
        "HttpSource (Starlette on uvicorn, 202 on admission) next_batch + ack_all(batch);"
        " loaded by one httpx client POSTing NDJSON batches in turn (peer process)"
    )
    hand_source = (
        "Starlette app on uvicorn: json.loads + strict base64 of every line, checked as ours"
        " checks (fields, types, size, content type: 400/413/415; key and headers kept when"
        " present), payloads queued, 202 (429 when 10,000 are unacknowledged); same client load"
    )
    ours_sink = "HttpSink.write_batch (a request per batch, keys per record, 2xx awaited)"
    hand_sink = (
        "httpx.AsyncClient: the same NDJSON body (BLAKE2b key + JSON line per record) POSTed"
        " per batch, 2xx checked; to the same HttpSource in a peer process"
    )
    bounds: ClassVar[dict[Kind, str]] = {
        "source": (
            "the Starlette app answering 202 to every body without reading it (records"
            " counted from what the client sent); same client load"
        )
    }

    def source(self, impl: Impl, target: str, plan: Plan) -> SourceSide[Any]:
        cls = _OursSource if impl == "ours" else _HandSource
        return cls(self.peer, target, self.reports)

    def sink(self, impl: Impl, target: str, plan: Plan) -> SinkSide[Any]:
        cls = _OursSink if impl == "ours" else _HandSink
        return cls(self, target, plan)

    async def run_bound(self, kind: Kind, target: str, plan: Plan) -> dict[str, Any]:
        bare = _Bare(parse=False)
        server, task, port = await serve_app(bare.app, HOST, 0)
        try:
            url = f"http://{HOST}:{port}/records/batch"
            report = await self.peer.send("load", target=target, address=url)
            t_end, cpu_end = time.perf_counter_ns(), time.process_time_ns()
        finally:
            server.should_exit = True
            await task
        self.check_load(target, report, plan)
        if bare.requests != report["requests"] or bare.size != report["bytes"]:
            raise BenchFailure(
                f"the server read {bare.requests} requests of {bare.size} bytes, the client"
                f" sent {report['requests']} of {report['bytes']}"
            )
        counted = plan.records - plan.batch  # after the first request, like Tally
        return {
            "rate": counted * 1e9 / max(1, t_end - bare.t_first_ns),
            "elapsed_s": (t_end - bare.t_first_ns) / 1e9,
            "records": plan.records,
            "first_batch": plan.batch,
            "cpu_us_per_record": (cpu_end - bare.cpu_first_ns) / 1e3 / max(1, counted),
        }

    async def server(self) -> str:
        import uvicorn  # noqa: PLC0415 - its version only

        return f"uvicorn {uvicorn.__version__} (h11) in this process, the peer in its own"


# -- the peer process ----------------------------------------------------------------------


class HttpPeer(CasePeer):
    """Loads a source with one httpx client; receives with an HttpSource."""

    def build(self, plan: Plan) -> list[tuple[bytes, str]]:
        items = payloads(plan)
        bodies = []
        for i in range(0, plan.records, plan.batch):
            bodies.append(hand_body(items[i : i + plan.batch]))
        return bodies

    async def load(self, prepared: list[tuple[bytes, str]], address: str) -> dict[str, Any]:
        """POST every body in turn; a 429 is sent again after its Retry-After."""
        requests = accepted = rejected = size = records = acked = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
            for body, key in prepared:
                headers = {"content-type": NDJSON, "idempotency-key": key}
                n = body.count(b"\n")
                requests += 1
                size += len(body)
                records += n
                while True:
                    resp = await client.post(address, content=body, headers=headers)
                    if resp.status_code != 429:
                        break
                    rejected += 1
                    await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
                if resp.status_code != 202:
                    raise BenchFailure(f"POST answered {resp.status_code}: {resp.text[:200]}")
                accepted += 1
                acked += n
        return {
            "records": records,
            "acked": acked,
            "requests": requests,
            "accepted": accepted,
            "rejected_429": rejected,
            "bytes": size,
        }

    async def receiver(self) -> tuple[HttpSource, str]:
        src = HttpSource(HOST, 0, capacity=CAPACITY, retry_after_s=RETRY_AFTER_S)
        await src.start()
        return src, src.batch_url
