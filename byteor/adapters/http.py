"""``adapter = http``: an ingest server and an HTTP client (``pip install 'byteor[http]'``).

Theory of operation
-------------------

**Source: an ingest server.** A Starlette app served by uvicorn inside the source's own event
loop, on ``host:port`` (port 0 picks a free one; :attr:`HttpSource.port` tells which). Clients
``POST`` records; the source holds them in a bounded buffer that stands for the ingress lane,
of ``capacity`` records *admitted and not yet settled* (queued, or handed out and not yet
acked). A request is admitted whole or not at all:

* it fits: its records are queued and the answer is ``202 Accepted`` — the records are in the
  lane (``respond = admitted``, the default);
* it does not fit, or the source is paused (downstream is full): ``429 Too Many Requests``
  with ``Retry-After``, and nothing is kept. Back-pressure reaches the client.

So *the 202 is the admission*: a client that wants at-least-once must retry on 429, 5xx and
timeouts (a retry after a lost 202 may repeat records; see the idempotency key below). What
the source admitted but downstream has not acked yet lives in memory: with ``respond =
admitted`` a stop or crash of the source loses it. With ``respond = confirmed`` the response
waits until every record of the request is acked downstream (``200``); if one is nacked, or
the source stops first, the answer is ``503`` with ``Retry-After`` and a body naming which
records were confirmed and which to send again, so nothing is lost end to end. A nack in
admitted mode hands the record out again (the lane owns it).

Endpoints (``path`` defaults to ``/records``):

* ``POST /records`` — one record. The body is the payload, as is. ``X-Record-Key`` carries
  the key; each ``X-Record-Header-<name>`` one header (names arrive lower-cased, values as
  the raw header bytes). Any content type is taken (curl labels even ``--data-binary`` a form).
* ``POST /records/batch`` — many records, ``Content-Type: application/x-ndjson`` (one JSON
  object per line) or ``application/json`` (an array of the same objects)::

      {"payload": "text"}                            # UTF-8 text ...
      {"payload_b64": "AAE=", "key": "user-1",       # ... or base64, for any bytes field
       "headers": [{"name": "trace", "value": "7"}, {"name": "bin", "value_b64": "/w=="}],
       "idempotency_key": "..."}                     # accepted and ignored by the source

* ``GET /health`` — ``200`` with the source's counters.

Refusals are JSON ``{"error": "..."}``: 401 (``token`` set and the ``Authorization: Bearer``
header missing or wrong; compared in constant time), 413 (body over ``max_body_bytes``, or a
batch larger than ``capacity``), 415 (wrong content type), 400 (bad JSON, naming the line).
A refused request admits nothing; the server keeps serving.

**Sink: an HTTP client.** One pooled ``httpx.AsyncClient``. ``mode = batch`` sends up to
``batch_records`` records per request in the batch format above; ``mode = record`` sends one
request per record (body = payload, key and headers as ``X-Record-*`` headers). Each record
carries an idempotency key (:func:`idempotency_key`: its ``idempotency-key`` header if it has
one, else a hash of its payload, key and headers), as the ``Idempotency-Key`` header in record
mode and as ``idempotency_key`` per line in batch mode (the batch request's own
``Idempotency-Key`` hashes those), so a receiver can drop a retried repeat. A batch is
confirmed only on 2xx. 408, 429, 502, 503, 504 and transport failures are retried with
exponential backoff and jitter, waiting at least what ``Retry-After`` asks (at most
:data:`MAX_RETRY_AFTER_S`); a 503 from a confirmed-mode byteor source narrows the retry to
the records it names. 401/403, 404, 413 and other statuses are not retried.
"""

from __future__ import annotations

import asyncio
import binascii
import codecs
import contextlib
import hashlib
import hmac
import json
import json.encoder
import json.scanner
import logging
import random
import re
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from itertools import repeat
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from byteor.adapters._backoff import Backoff, retry
from byteor.adapters._config import ConfigField, ConfigSchema, ConfigValue
from byteor.adapters._contract import Adapter, Capabilities, Health, Sink, Source
from byteor.adapters._errors import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
    AdapterUnreachable,
    map_errors,
)
from byteor.adapters._jsonrecord import (
    BINARY_ONLY,
    HEADER_VALUE,
    TEXT_ONLY,
    BadRecord,
    idempotency_key,
    read_record,
    record_object,
)
from byteor.adapters._listen import bound_socket
from byteor.adapters._record import (
    Ack,
    Headers,
    LazyAckRecord,
    OutRecord,
    Record,
    Settler,
    record_blank,
)
from byteor.spec import Delivery

__all__ = [
    "HttpAdapter",
    "HttpSource",
    "HttpSink",
    "HttpSourceStatistics",
    "encode_batch",
    "decode_batch",
    "idempotency_key",
    "BatchFormat",
    "MAX_RETRY_AFTER_S",
]

log = logging.getLogger("byteor.adapters.http")

BatchFormat = Literal["ndjson", "json"]
Respond = Literal["admitted", "confirmed"]

#: The longest ``Retry-After`` the sink honours (a server asking for more gets this).
MAX_RETRY_AFTER_S: Final = 60.0

#: Sending: about 10 attempts over ~20 s before the error surfaces.
SEND_BACKOFF: Final = Backoff(initial_s=0.1, max_s=5.0, max_attempts=10)

KEY_HEADER: Final = "x-record-key"
HEADER_PREFIX: Final = "x-record-header-"
_FORMATS: Final[dict[str, BatchFormat]] = {
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/json": "json",
}
_CONTENT_TYPE: Final[dict[BatchFormat, str]] = {
    "ndjson": "application/x-ndjson",
    "json": "application/json",
}
_RETRIABLE: Final = frozenset({408, 429, 502, 503, 504})
# A header name (an HTTP token); HEADER_VALUE is what h11 accepts as a value.
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# -- the batch format ----------------------------------------------------------------------


# What json.dumps(ensure_ascii=False) makes of a str (the C encoder when there is one).
_json_str: Final[Callable[[str], str]] = json.encoder.encode_basestring
_b2a: Final = binascii.b2a_base64


def _object_text(rec: OutRecord, key: str | None) -> str:
    """``rec``'s JSON object as ``json.dumps(record_object(rec, key), ensure_ascii=False,
    separators=(",", ":"))`` writes it; a record without key and headers (the common one)
    without the dict and the encoder's setup (two thirds of its time)."""
    if rec.key is not None or rec.headers:
        return json.dumps(record_object(rec, key), ensure_ascii=False, separators=(",", ":"))
    try:
        text = '{"payload":' + _json_str(rec.payload.decode("utf-8"))
    except UnicodeDecodeError:
        text = '{"payload_b64":"' + _b2a(rec.payload, newline=False).decode("ascii") + '"'
    if key is None:
        return text + "}"
    return text + ',"idempotency_key":' + _json_str(key) + "}"


def encode_batch(
    records: Sequence[OutRecord],
    fmt: BatchFormat = "ndjson",
    keys: Sequence[str] | None = None,
) -> bytes:
    """The batch body for ``records``: a bytes field is UTF-8 text when it decodes as UTF-8,
    else base64 (``*_b64``); ``keys`` adds an ``idempotency_key`` per record. One string of
    the objects, encoded once."""
    texts = list(map(_object_text, records, keys if keys else repeat(None)))
    if fmt == "json":
        return ("[" + ",".join(texts) + "]").encode()
    if not texts:
        return b""
    texts.append("")  # the last line's newline
    return "\n".join(texts).encode()


class _BadBatch(ValueError):
    """A batch body that cannot be read; the message says where and why (the 400 body)."""


def _read_record(obj: object, where: str) -> OutRecord:
    """The record of one batch element (the shared JSON record reader), or _BadBatch."""
    try:
        return read_record(obj, where)
    except BadRecord as exc:
        raise _BadBatch(str(exc)) from None


class _Chunk:
    """Records admitted together — a request's, or nacked ones to hand out again — as
    columns: their payloads, and keys and headers by index for the records that have them.
    Their positions run from ``seq`` on (``seqs`` when they do not follow each other);
    ``req`` is their confirmed-mode request, the index in it a record's; ``at`` is the
    first not handed out yet."""

    __slots__ = ("at", "headers", "keys", "payloads", "req", "seq", "seqs")

    def __init__(
        self,
        payloads: list[bytes],
        keys: dict[int, bytes] | None = None,
        headers: dict[int, Headers] | None = None,
        seqs: list[int] | None = None,
    ) -> None:
        self.payloads, self.keys, self.headers, self.seqs = payloads, keys, headers, seqs
        self.seq = self.at = 0
        self.req: _Request | None = None


#: The value at a position of a string — the C scanner ``json.loads`` runs once per call,
#: with its settings: ``(value, end)``; StopIteration when no value starts there.
_scan: Final = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
#: What _ndjson_values gives for a blank line.
_BLANK_LINE: Final = object()
#: What ``bytes.strip()`` takes away (a blank line is made of these).
_ASCII_SPACE: Final = " \t\n\r\x0b\x0c"
_b64decode: Final = binascii.a2b_base64


def _line_value(line: bytes | str, n: int) -> object:
    """The value of NDJSON line ``n`` the careful way (_BLANK_LINE when blank), or _BadBatch
    saying what is wrong with it."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8", "surrogatepass")  # as json.loads decodes bytes
        except UnicodeDecodeError:
            raise _BadBatch(f"line {n}: not UTF-8") from None
    if not line.strip(_ASCII_SPACE):
        return _BLANK_LINE
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise _BadBatch(f"line {n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # a huge integer, nesting too deep
        raise _BadBatch(f"line {n}: not valid JSON ({type(exc).__name__}: {exc})") from None


def _ndjson_values(body: bytes) -> list[Any]:
    """The value of every line of an NDJSON body (_BLANK_LINE for a blank one: line ``n`` is
    item ``n - 1``), or _BadBatch naming the first line that is not valid JSON.

    The body is decoded once and each line read by the JSON scanner itself, which is what
    ``json.loads(line)`` does for a line without surrounding blanks minus its three Python
    calls (half the time of a line). A line the scanner does not take whole — surrounding
    blanks, ``\\r\\n``, blank, or invalid — is read again as ``json.loads`` reads it, which
    accepts or names what is wrong exactly as before.
    """
    if body.startswith(codecs.BOM_UTF8):
        body = body[len(codecs.BOM_UTF8) :]
    try:
        text = body.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # line by line, to name the first bad one
        return [_line_value(line, n) for n, line in enumerate(body.split(b"\n"), 1)]
    values: list[Any] = []
    append, scan = values.append, _scan
    for line in text.split("\n"):
        try:
            value, end = scan(line, 0)
        except (StopIteration, ValueError, RecursionError):
            value, end = None, -1
        if end != len(line):
            value = _line_value(line, len(values) + 1)
        append(value)
    return values


def _read_batch(body: bytes, fmt: BatchFormat) -> _Chunk:
    """The records of a batch body as columns; _BadBatch naming the line or element when it
    is not a valid batch (see :func:`decode_batch`).

    A record that is its payload alone (payload or payload_b64, an idempotency key at most)
    is taken straight: its payload decoded, no OutRecord made. Anything else goes through the
    shared reader, which keeps its key and headers, or says what is wrong.
    """
    if fmt == "json":
        try:
            doc = json.loads(body)
        except UnicodeDecodeError:
            raise _BadBatch("the body is not UTF-8") from None
        except json.JSONDecodeError as exc:
            raise _BadBatch(
                f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        except (ValueError, RecursionError) as exc:  # a huge integer, nesting too deep
            raise _BadBatch(f"not valid JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(doc, list):
            raise _BadBatch(
                f"the body must be a JSON array of record objects, got {type(doc).__name__}"
            )
        values: list[Any] = doc
        where, base = "records[{}]", 0
    else:
        values = _ndjson_values(body)
        where, base = "line {}", 1
    payloads: list[bytes] = []
    keys: dict[int, bytes] | None = None
    headers: dict[int, Headers] | None = None
    append, b64decode = payloads.append, _b64decode
    binary_only, text_only = BINARY_ONLY, TEXT_ONLY
    for i, obj in enumerate(values):
        if obj.__class__ is dict:
            if binary_only.issuperset(obj):
                data = obj.get("payload_b64")
                if data.__class__ is str:
                    try:
                        append(b64decode(data, strict_mode=True))
                        continue
                    except ValueError:  # binascii.Error: the shared reader names it
                        pass
            elif text_only.issuperset(obj):
                data = obj.get("payload")
                if data.__class__ is str:
                    try:
                        append(data.encode())
                        continue
                    except UnicodeEncodeError:
                        pass
        elif obj is _BLANK_LINE:
            continue
        rec = _read_record(obj, where.format(i + base))
        if rec.key is not None:
            if keys is None:
                keys = {}
            keys[len(payloads)] = rec.key
        if rec.headers:
            if headers is None:
                headers = {}
            headers[len(payloads)] = rec.headers
        append(rec.payload)
    return _Chunk(payloads, keys, headers)


def decode_batch(body: bytes, fmt: BatchFormat = "ndjson") -> list[OutRecord]:
    """The records of a batch body.

    NDJSON: one object per line; blank lines and ``\\r\\n`` endings are fine. JSON: an array.

    Raises:
        ValueError: the body is not a valid batch; the message names the line or element.
    """
    batch = _read_batch(body, fmt)
    keys, headers = batch.keys or {}, batch.headers or {}
    return [
        OutRecord(payload, keys.get(i), headers.get(i, ()))
        for i, payload in enumerate(batch.payloads)
    ]


def _batch_key(keys: Sequence[str]) -> str:
    """The batch request's Idempotency-Key: a hash of each record's key and a newline."""
    if not keys:
        return hashlib.blake2b(digest_size=16, person=b"byteor-http-bat").hexdigest()
    data = ("\n".join(keys) + "\n").encode("latin-1")  # one update, the same digest
    return hashlib.blake2b(data, digest_size=16, person=b"byteor-http-bat").hexdigest()


# -- the source ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpSourceStatistics:
    """An ingest server's counters.

    Attributes:
        capacity: records admitted and not yet settled that it holds at most.
        used: records admitted and not yet settled now (queued + handed out).
        peak: the highest ``used`` seen.
        queued: admitted, not yet handed out.
        admitted: records admitted since start (every 202 / 200).
        rejected: requests answered 429 (full or paused).
        refused: requests answered 4xx for bad input (400, 401, 413, 415).
    """

    capacity: int
    used: int
    peak: int
    queued: int
    admitted: int
    rejected: int
    refused: int


class _Request:
    """The records of one confirmed-mode request: the response waits on ``done``."""

    __slots__ = ("done", "left", "states")

    def __init__(self, n: int) -> None:
        self.states = bytearray(n)  # 0 pending, 1 acked, 2 nacked or abandoned at stop
        self.left = n
        self.done = asyncio.Event()

    def settle(self, i: int, ok: bool) -> None:
        self.states[i] = 1 if ok else 2
        self.left -= 1
        if self.left == 0:
            self.done.set()

    def abandon(self) -> None:
        for i, s in enumerate(self.states):
            if s == 0:
                self.states[i] = 2
        self.left = 0
        self.done.set()


#: The plain class a LazyAckRecord is filled in as (None: made with its constructor).
_LAZY_BLANK: Final = record_blank(LazyAckRecord)


def _hand_out(out: list[Record], chunk: _Chunk, a: int, b: int, handed: _Handed) -> None:
    """Append records ``a`` to ``b`` of ``chunk`` to ``out``: one LazyAckRecord each, filled
    in straight (no row tuple per record), ``handed`` standing in for their handles."""
    payloads = chunk.payloads if a == 0 and b == len(chunk.payloads) else chunk.payloads[a:b]
    seqs = chunk.seqs
    positions = range(chunk.seq + a, chunk.seq + b) if seqs is None else seqs[a:b]
    keys, headers = chunk.keys, chunk.headers
    blank, cls, append = _LAZY_BLANK, LazyAckRecord, out.append
    if blank is None:  # pragma: no cover - an interpreter that refuses the class change
        for j, payload, pos in zip(range(a, b), payloads, positions, strict=True):
            key = keys.get(j) if keys else None
            append(cls(payload, key, headers.get(j, ()) if headers else (), pos, handed))  # type: ignore[arg-type]
        return
    if keys is None and headers is None:
        for payload, pos in zip(payloads, positions, strict=True):
            r = blank()
            r.payload = payload
            r.key = None
            r.headers = ()
            r.position = pos
            r.ack = handed
            r.__class__ = cls
            append(r)
        return
    for j, payload, pos in zip(range(a, b), payloads, positions, strict=True):
        r = blank()
        r.payload = payload
        r.key = keys.get(j) if keys else None
        r.headers = headers.get(j, ()) if headers else ()
        r.position = pos
        r.ack = handed
        r.__class__ = cls
        append(r)


class _Handed(Settler):
    """The records of one ``next_batch``: their acknowledgement, one object for all of them.

    ``ack_all`` / ``nack_all`` settle them without a handle each; reading one record's
    ``ack`` makes a :class:`_OneAck` for it. ``reqs`` maps the sequence of each record that
    belongs to a confirmed-mode request to that request and its index there.
    """

    __slots__ = ("_epoch", "_reqs", "_src")

    def __init__(
        self, src: HttpSource, epoch: int, reqs: dict[int, tuple[_Request, int]] | None
    ) -> None:
        self._src, self._epoch, self._reqs = src, epoch, reqs

    def make_ack(self, record: LazyAckRecord) -> Ack:
        return _OneAck(self, record)

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        self._src._settle(records, ok, self._epoch, self._reqs)


class _OneAck(Ack):
    """One record's handle, made when its ``ack`` is read: settles it through its batch."""

    __slots__ = ("_handed", "_record")

    def __init__(self, handed: _Handed, record: LazyAckRecord) -> None:
        Ack.__init__(self)
        self._handed, self._record = handed, record

    def settled(self, ok: bool) -> None:
        self._handed.settle((self._record,), ok)


class _Server(uvicorn.Server):
    """uvicorn inside someone else's event loop: signals stay the host process's, and
    ``ready`` is set once the socket accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


async def serve_app(app: Any, host: str, port: int) -> tuple[_Server, asyncio.Task[None], int]:
    """Serve an ASGI ``app`` with uvicorn in this event loop: (server, its task, bound port).

    Stop it with ``server.should_exit = True; await task``.
    """
    sock = bound_socket("http", host, port)
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,  # the host process configures logging, not uvicorn
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"byteor-http-{bound}")
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        sock.close()
        exc = task.exception() if not task.cancelled() else None
        raise AdapterError(
            f"http: the server on {host}:{bound} did not start ({exc!r})",
            adapter="http",
            address=f"{host}:{bound}",
        )
    return server, task, bound


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status, headers=dict(headers or {}))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class HttpSource(Source):
    """The ingest server (see the module docstring for the protocol)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        path: str = "/records",
        respond: Respond = "admitted",
        capacity: int = 10_000,
        max_body_bytes: int = 8 << 20,
        retry_after_s: int = 1,
        token: str = "",
    ) -> None:
        if capacity < 1:
            raise AdapterConfigError("http: capacity must be at least 1", adapter="http")
        self._host, self._want_port = host, port
        base = "/" + path.strip("/")
        self._path = base
        self._batch_path = base.rstrip("/") + "/batch"
        self._respond, self._capacity = respond, capacity
        self._max_body, self._retry_after = max_body_bytes, max(0, retry_after_s)
        self._expected = token.encode() if token else b""
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._port = 0
        self._queue: deque[_Chunk] = deque()  # admitted, in order
        self._redeliver: deque[_Chunk] = deque()  # nacked in admitted mode: handed out first
        self._queued = 0  # records in both not handed out yet
        self._open: set[_Request] = set()
        self._changed = asyncio.Event()
        self._used = self._peak = self._seq = 0
        self._admitted = self._rejected = self._refused = 0
        self._paused = False
        self._closing = False
        self._epoch = 0
        self._app = Starlette(
            routes=[
                Route(self._path, self._single, methods=["POST"]),
                Route(self._batch_path, self._batch, methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

    # -- where it listens

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`; useful with ``port = 0``)."""
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def url(self) -> str:
        """Where single records go."""
        return self.base_url + self._path

    @property
    def batch_url(self) -> str:
        """Where batches go."""
        return self.base_url + self._batch_path

    # -- lifecycle

    async def start(self) -> None:
        if self._server is not None:
            return
        self._epoch += 1
        self._closing = False
        self._server, self._task, self._port = await serve_app(
            self._app, self._host, self._want_port
        )

    async def stop(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._closing = True
        self._epoch += 1  # acks of records handed out so far no longer count
        for req in list(self._open):
            req.abandon()  # confirmed mode: 503, the client sends them again
        self._open.clear()
        self._queue.clear()
        self._redeliver.clear()
        self._queued = self._used = 0
        self._changed.set()
        server.should_exit = True
        try:
            await task
        finally:
            self._server = self._task = None

    def health(self) -> Health:
        up = self._server is not None and not self._closing
        return Health(
            connected=up,
            lag=self._queued,
            detail=f"listening on {self.base_url}" if up else "stopped",
        )

    def statistics(self) -> HttpSourceStatistics:
        return HttpSourceStatistics(
            capacity=self._capacity,
            used=self._used,
            peak=self._peak,
            queued=self._queued,
            admitted=self._admitted,
            rejected=self._rejected,
            refused=self._refused,
        )

    # -- handing out

    def _take(self, max_records: int) -> list[Record]:
        """Up to ``max_records`` records, nacked ones first: one object each (a
        LazyAckRecord), the batch's :class:`_Handed` standing in for their handles."""
        if not self._queued:
            return []
        out: list[Record] = []
        handed = _Handed(self, self._epoch, None)
        reqs: dict[int, tuple[_Request, int]] | None = None
        left = max_records
        for lane in (self._redeliver, self._queue):
            while left > 0 and lane:
                chunk = lane[0]
                a, n = chunk.at, len(chunk.payloads)
                b = min(n, a + left)
                _hand_out(out, chunk, a, b, handed)
                req = chunk.req  # confirmed mode: each record's request and index in it
                if req is not None:
                    if reqs is None:
                        reqs = {}
                    seq = chunk.seq
                    for k in range(a, b):
                        reqs[seq + k] = (req, k)
                left -= b - a
                if b == n:
                    lane.popleft()
                else:
                    chunk.at = b
        self._queued -= len(out)
        handed._reqs = reqs
        return out

    def _settle(
        self,
        records: Sequence[Record],
        ok: bool,
        epoch: int,
        reqs: dict[int, tuple[_Request, int]] | None,
    ) -> None:
        """Records handed out in ``epoch`` settled: give their room back (acked), hand them
        out again (nacked in admitted mode: the lane owns them), or tell their request."""
        if epoch != self._epoch:
            return  # the source stopped meanwhile: the client was told to resend
        if reqs is None:
            if ok:
                self._used -= len(records)
            else:
                keys = {i: r.key for i, r in enumerate(records) if r.key is not None}
                headers = {i: r.headers for i, r in enumerate(records) if r.headers}
                self._redeliver.append(
                    _Chunk(
                        [r.payload for r in records],
                        keys or None,
                        headers or None,
                        [cast(int, r.position) for r in records],
                    )
                )
                self._queued += len(records)
                self._changed.set()
            return
        for r in records:
            found = reqs.get(cast(int, r.position))
            if found is None:
                self._settle((r,), ok, epoch, None)
                continue
            req, index = found
            self._used -= 1
            req.settle(index, ok)
            if req.left == 0:
                self._open.discard(req)

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> list[Record]:
        if self._server is None or self._closing:
            raise AdapterError("http: source is not started", adapter="http")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if not self._paused:
                self._changed.clear()
                got = self._take(max_records)
                if got:
                    return got
            left = deadline - loop.time()
            if left <= 0 or self._closing:
                return []
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return []

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._changed.set()

    @property
    def paused(self) -> bool:
        return self._paused

    # -- the endpoints

    def _refuse(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        self._refused += 1
        return _error(status, message, headers)

    def _busy(self) -> Response:
        self._rejected += 1
        after = {"Retry-After": str(self._retry_after)}
        if self._paused:
            why = "the source is paused (downstream is full)"
        else:
            why = (
                f"the source is full ({self._used} of {self._capacity} records admitted and "
                f"not yet acknowledged)"
            )
        return _error(429, f"{why}; retry after {self._retry_after} s", after)

    def _authorized(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        ok = hmac.compare_digest(given.strip().encode("latin-1"), self._expected)
        return ok and scheme.lower() == "bearer"

    def _gate(self, request: Request) -> Response | None:
        """Refuse a request before looking at it: the source is stopping, or no token."""
        if self._closing:
            return _error(503, "the source is stopping", {"Retry-After": str(self._retry_after)})
        if self._expected and not self._authorized(request):
            return self._refuse(
                401,
                "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                {"WWW-Authenticate": 'Bearer realm="byteor"'},
            )
        return None

    async def _body(self, request: Request) -> Response | bytes:
        """The body, read up to ``max_body_bytes`` (or the refusal)."""
        if self._paused or self._used >= self._capacity:
            return self._busy()  # before reading a body we could not keep
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            return self._too_large()
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self._max_body:
                    return self._too_large()
                chunks.append(chunk)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening any more
        return b"".join(chunks)

    def _too_large(self) -> Response:
        return self._refuse(
            413, f"the body is larger than {self._max_body} bytes (max_body_bytes); split it"
        )

    async def _single(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        body = await self._body(request)  # any content type: curl labels every body a form
        if isinstance(body, Response):
            return body
        key: bytes | None = None
        headers: list[tuple[str, bytes]] = []
        for raw_name, value in request.headers.raw:
            name = raw_name.decode("latin-1").lower()
            if name == KEY_HEADER:
                key = value
            elif name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX):
                headers.append((name[len(HEADER_PREFIX) :], value))
        return await self._admit(
            _Chunk(
                [body], None if key is None else {0: key}, {0: tuple(headers)} if headers else None
            )
        )

    async def _batch(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        fmt = _FORMATS.get(_media_type(request))
        if fmt is None:
            return self._refuse(
                415,
                f"a batch is Content-Type application/x-ndjson or application/json, got "
                f"{request.headers.get('content-type', 'none')!r}",
            )
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        try:
            batch = _read_batch(body, fmt)
        except _BadBatch as exc:
            return self._refuse(400, str(exc))
        n = len(batch.payloads)
        if n > self._capacity:
            return self._refuse(
                413,
                f"a batch of {n} records can never fit in the source's capacity "
                f"of {self._capacity}; split it",
            )
        return await self._admit(batch)

    async def _health(self, request: Request) -> Response:
        s = self.statistics()
        return JSONResponse(
            {
                "paused": self._paused,
                "capacity": s.capacity,
                "used": s.used,
                "queued": s.queued,
                "admitted": s.admitted,
                "rejected": s.rejected,
                "refused": s.refused,
            }
        )

    async def _admit(self, batch: _Chunk) -> Response:
        """Queue a request's records whole (or refuse them) and answer."""
        n = len(batch.payloads)
        if self._closing:
            return _error(503, "the source is stopping", {"Retry-After": str(self._retry_after)})
        if n and (self._paused or self._used + n > self._capacity):
            return self._busy()
        req = _Request(n) if self._respond == "confirmed" and n else None
        if n:
            batch.seq, batch.req = self._seq, req
            self._queue.append(batch)
            self._queued += n
            self._seq += n
            self._used += n
            self._peak = max(self._peak, self._used)
            self._admitted += n
            self._changed.set()
        if self._respond == "admitted":
            return JSONResponse({"admitted": n}, 202)
        if req is None:
            return JSONResponse({"confirmed": 0}, 200)
        self._open.add(req)
        await req.done.wait()
        if req.states.count(1) == n:
            return JSONResponse({"confirmed": n}, 200)
        confirmed = [i for i, s in enumerate(req.states) if s == 1]
        again = [i for i, s in enumerate(req.states) if s != 1]
        return JSONResponse(
            {
                "error": f"{len(again)} of {n} records were not processed; send those again",
                "confirmed": confirmed,
                "retry": again,
            },
            503,
            headers={"Retry-After": str(self._retry_after)},
        )


# -- the sink ------------------------------------------------------------------------------


def _retry_after(resp: httpx.Response) -> float:
    """Seconds the response asks to wait (0: it does not say), capped."""
    raw = resp.headers.get("retry-after")
    if not raw:
        return 0.0
    raw = raw.strip()
    if raw.isdigit():
        return min(MAX_RETRY_AFTER_S, float(raw))
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return 0.0
    date = resp.headers.get("date")
    try:
        now = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        now = None
    if now is None or when.tzinfo is None or now.tzinfo is None:
        return 0.0
    return min(MAX_RETRY_AFTER_S, max(0.0, (when - now).total_seconds()))


def _retry_subset(resp: httpx.Response, n: int) -> list[int] | None:
    """The indices a confirmed-mode byteor source asks to send again, if it says so."""
    try:
        doc = resp.json()
    except ValueError:
        return None
    again = doc.get("retry") if isinstance(doc, dict) else None
    if (
        not isinstance(again, list)
        or not again
        or not all(isinstance(i, int) and 0 <= i < n for i in again)
        or len(set(again)) != len(again)
    ):
        return None
    return sorted(again)


_Headers = list[tuple[bytes, bytes]]


class _Told:
    """The wait the last response asked for (``Retry-After``), in seconds."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0


def _snippet(resp: httpx.Response) -> str:
    text = resp.text.strip().replace("\n", " ")
    return text[:200] + ("..." if len(text) > 200 else "")


class HttpSink(Sink):
    """POSTs batches (or single records) to ``url``; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        mode: Literal["batch", "record"] = "batch",
        batch_format: BatchFormat = "ndjson",
        batch_records: int = 500,
        content_type: str = "application/octet-stream",
        token: str = "",
        concurrency: int = 1,
        timeout_s: float = 10.0,
        max_connections: int = 10,
        backoff: Backoff = SEND_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise AdapterConfigError(
                f"http: url must be an http:// or https:// URL, got {url!r}", adapter="http"
            )
        self._url = url
        self._origin = f"{u.scheme}://{u.netloc.rpartition('@')[2]}"
        self._path = u.path or "/"
        self._mode, self._format = mode, batch_format
        self._batch_records = max(1, batch_records)
        self._content_type = content_type
        self._token = token
        self._concurrency = max(1, concurrency)
        self._timeout_s, self._max_connections = timeout_s, max(1, max_connections)
        self._backoff, self._sleep, self._rand = backoff, sleep, rand
        self._client: httpx.AsyncClient | None = None
        self._last_error: AdapterError | None = None

    async def start(self) -> None:
        if self._client is not None:
            return
        headers = {"authorization": f"Bearer {self._token}"} if self._token else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(self._timeout_s),
            limits=httpx.Limits(
                max_connections=max(self._max_connections, self._concurrency),
                max_keepalive_connections=max(self._max_connections, self._concurrency),
            ),
        )
        self._last_error = None

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def health(self) -> Health:
        err = self._last_error
        return Health(
            connected=self._client is not None and not isinstance(err, AdapterUnreachable),
            detail=str(err) if err is not None else "",
        )

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        if self._client is None:
            raise AdapterError("http: sink is not started", adapter="http")
        if self._mode == "batch":
            for at in range(0, len(records), self._batch_records):
                await self._send_batch(records[at : at + self._batch_records])
            self._last_error = None
            return
        # Every record's headers first: one that cannot be sent fails the batch before any is.
        requests = [(r.payload, self._record_headers(r, idempotency_key(r))) for r in records]
        if self._concurrency == 1:
            for payload, headers in requests:
                await self._send_one(payload, headers)
        else:
            await self._send_many(requests)
        self._last_error = None

    async def _send_many(self, requests: Sequence[tuple[bytes, _Headers]]) -> None:
        """Record mode with ``concurrency`` requests in flight (order not kept)."""
        todo = iter(requests)

        async def worker() -> None:
            for payload, headers in todo:
                await self._send_one(payload, headers)

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(self._concurrency, len(requests))):
                    tg.create_task(worker())
        except BaseExceptionGroup as group:
            first = group.exceptions[0]
            raise first from None

    async def _post(self, content: bytes, headers: _Headers) -> httpx.Response:
        client = self._client
        if client is None:
            raise AdapterError("http: sink is not started", adapter="http")
        try:
            with map_errors(
                "http",
                self._url,
                {httpx.ConnectError: AdapterUnreachable, httpx.ConnectTimeout: AdapterUnreachable},
            ):
                return await client.post(self._url, content=content, headers=headers)
        except httpx.TransportError as exc:  # sent, or partly: the outcome is unknown
            raise AdapterError(
                f"http: {self._url}: {type(exc).__name__}: {exc or 'connection lost'}; the "
                f"request is sent again (its idempotency key lets the receiver drop a repeat)",
                adapter="http",
                address=self._url,
                retriable=True,
            ) from exc

    def _status_error(self, resp: httpx.Response, what: str) -> AdapterError:
        status = resp.status_code
        detail = f"{status} {resp.reason_phrase}: {_snippet(resp)}"
        if status in (401, 403):
            return AdapterAuthError("http", self._url, detail)
        if status == 404:
            return AdapterNotFound("http", self._origin, f"path {self._path!r}", detail)
        if status == 413:
            return AdapterError(
                f"http: {self._url} refused {what} as too large ({detail}); lower "
                f"batch_records or raise the receiver's limit",
                adapter="http",
                address=self._url,
                retriable=False,
            )
        retriable = status in _RETRIABLE
        return AdapterError(
            f"http: {self._url} answered {detail}" + ("; retrying" if retriable else ""),
            adapter="http",
            address=self._url,
            retriable=retriable,
        )

    async def _deliver(self, attempt: Callable[[_Told], Awaitable[None]]) -> None:
        """Run ``attempt`` with backoff until it returns; between tries wait at least what
        the last response's ``Retry-After`` asked (the attempt notes it in ``_Told``)."""
        told = _Told()

        async def pause(wait: float) -> None:
            wait, told.seconds = max(wait, told.seconds), 0.0
            await self._sleep(wait)

        def note(n: int, exc: AdapterError, wait: float) -> None:
            log.warning("http: attempt %d failed (%s); retrying", n + 1, exc)

        try:
            await retry(
                lambda: attempt(told), self._backoff, sleep=pause, rand=self._rand, on_retry=note
            )
        except AdapterError as exc:
            self._last_error = exc
            raise

    async def _send_batch(self, records: Sequence[OutRecord]) -> None:
        keys = list(map(idempotency_key, records))
        todo: list[int] | None = None  # indices to send again; None: all
        ctype = _CONTENT_TYPE[self._format].encode()

        async def attempt(told: _Told) -> None:
            nonlocal todo
            recs, ks = records, keys
            if todo is not None:
                recs, ks = [records[i] for i in todo], [keys[i] for i in todo]
            body = encode_batch(recs, self._format, ks)
            headers = [(b"content-type", ctype), (b"idempotency-key", _batch_key(ks).encode())]
            resp = await self._post(body, headers)
            if resp.is_success:
                return
            told.seconds = _retry_after(resp)
            what = f"a batch of {len(ks)} records, {len(body)} bytes"
            if resp.status_code == 503:
                subset = _retry_subset(resp, len(ks))
                if subset is not None:
                    todo = [todo[j] for j in subset] if todo is not None else subset
            raise self._status_error(resp, what)

        await self._deliver(attempt)

    def _record_headers(self, rec: OutRecord, key: str) -> _Headers:
        headers = [
            (b"content-type", self._content_type.encode("latin-1")),
            (b"idempotency-key", key.encode("latin-1")),
        ]
        if rec.key is not None:
            if not HEADER_VALUE.fullmatch(rec.key):
                raise self._unsendable("its key")
            headers.append((KEY_HEADER.encode(), rec.key))
        for name, value in rec.headers:
            n = name.encode("utf-8")
            if not _TOKEN.fullmatch(n) or not HEADER_VALUE.fullmatch(value):
                raise self._unsendable(f"its header {name!r}")
            headers.append((HEADER_PREFIX.encode() + n, value))
        return headers

    def _unsendable(self, what: str) -> AdapterError:
        return AdapterError(
            f"http: a record cannot be sent with mode = record: {what} cannot travel as an "
            f"HTTP header (control characters or surrounding blanks); use mode = batch",
            adapter="http",
            address=self._url,
            retriable=False,
        )

    async def _send_one(self, payload: bytes, headers: _Headers) -> None:
        async def attempt(told: _Told) -> None:
            resp = await self._post(payload, headers)
            if resp.is_success:
                return
            told.seconds = _retry_after(resp)
            raise self._status_error(resp, f"a record of {len(payload)} bytes")

        await self._deliver(attempt)


_ADMITTED_SOURCE: Final = Delivery(
    "best-effort",
    "per-request",
    "respond = admitted: 202 on admission, records not yet acked are lost if the source "
    "stops or crashes (respond = confirmed: at least once)",
)
_CONFIRMED_SOURCE: Final = Delivery(
    "at-least-once",
    "per-request",
    "respond = confirmed: 200 after every sink confirmed, clients retry otherwise",
)


class HttpAdapter(Adapter):
    name = "http"
    summary = "HTTP ingest server (webhooks) and HTTP client"
    extra = "http"
    client_module = "httpx"
    config = ConfigSchema(
        "http",
        (
            ConfigField("host", str, "127.0.0.1", "source: address to listen on"),
            ConfigField("port", int, 8080, "source: port to listen on (0: any free one)"),
            ConfigField("path", str, "/records", "source: endpoint; batches go to <path>/batch"),
            ConfigField("respond", str, "admitted",
                        "source: answer once admitted (202) or once acked downstream (200)",
                        ("admitted", "confirmed")),
            ConfigField("capacity", int, 10_000,
                        "source: records admitted and not yet acked it holds (429 beyond)"),
            ConfigField("max_body_bytes", int, 8 << 20, "source: larger bodies get 413"),
            ConfigField("retry_after_s", int, 1, "source: Retry-After of a 429 / 503"),
            ConfigField("token", str, "",
                        "bearer token: the source requires it, the sink sends it (empty: none)"),
            ConfigField("url", str, "", "sink: the URL to POST to"),
            ConfigField("mode", str, "batch", "sink: one request per batch or per record",
                        ("batch", "record")),
            ConfigField("batch_format", str, "ndjson", "sink: body of a batch request",
                        ("ndjson", "json")),
            ConfigField("batch_records", int, 500, "sink: most records per batch request"),
            ConfigField("content_type", str, "application/octet-stream",
                        "sink, mode = record: Content-Type of the payload"),
            ConfigField("concurrency", int, 1,
                        "sink, mode = record: requests in flight (above 1: order not kept)"),
            ConfigField("timeout_s", float, 10.0, "sink: timeout of one request"),
            ConfigField("max_connections", int, 10, "sink: connection pool size"),
            ConfigField("max_attempts", int, 10, "sink: tries per request before failing"),
        ),
    )  # fmt: skip
    #: As declared for the default, ``respond = admitted``; see :meth:`capabilities_with`.
    capabilities = Capabilities(
        source=_ADMITTED_SOURCE,
        sink=Delivery("at-least-once", "per-request", "2xx response, retried otherwise"),
        max_batch=10_000,
        backpressure="pause",
    )

    def capabilities_with(self, config: Mapping[str, ConfigValue]) -> Capabilities:
        """``respond = admitted`` (the default) answers before anything is confirmed: what the
        source holds when it stops or crashes is lost, so the source is best-effort there; a
        record sink with several requests in flight keeps no order."""
        source = _CONFIRMED_SOURCE if config["respond"] == "confirmed" else _ADMITTED_SOURCE
        sink = self.capabilities.sink
        if sink is not None and config["mode"] == "record" and int(config["concurrency"]) > 1:
            sink = Delivery(sink.guarantee, "none", f"{sink.condition}; concurrency > 1: unordered")
        caps = self.capabilities
        return Capabilities(source, sink, caps.max_batch, caps.backpressure)

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        respond = str(config["respond"])
        return HttpSource(
            str(config["host"]),
            int(config["port"]),
            path=str(config["path"]),
            respond="confirmed" if respond == "confirmed" else "admitted",
            capacity=int(config["capacity"]),
            max_body_bytes=int(config["max_body_bytes"]),
            retry_after_s=int(config["retry_after_s"]),
            token=str(config["token"]),
        )

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        url = str(config["url"])
        if not url:
            raise AdapterConfigError("http: a sink needs config 'url'", adapter="http")
        base = SEND_BACKOFF
        return HttpSink(
            url,
            mode="record" if str(config["mode"]) == "record" else "batch",
            batch_format="json" if str(config["batch_format"]) == "json" else "ndjson",
            batch_records=int(config["batch_records"]),
            content_type=str(config["content_type"]),
            token=str(config["token"]),
            concurrency=int(config["concurrency"]),
            timeout_s=float(config["timeout_s"]),
            max_connections=int(config["max_connections"]),
            backoff=Backoff(base.initial_s, base.max_s, base.factor, base.jitter,
                            max(1, int(config["max_attempts"]))),
        )  # fmt: skip
