"""``adapter = websocket``: a WebSocket ingest server and its client.

``pip install 'byteor[websocket]'`` (the ``websockets`` library, its asyncio API).

Theory of operation
-------------------

One protocol, ``byteor-ws-1``, spoken by both sides: the source is the server, the sink its
client (or any client that speaks it, down to ``python -m websockets``). Every message is a
JSON text frame; a record is the object of the HTTP batch format (:mod:`._jsonrecord`) with
an ``id`` the client chooses, unique among its records not yet answered on the connection.

Client to server: one record object, or a JSON array of them (admitted whole or not at all)::

    {"id": "17", "payload": "hello", "key": "user-1", "idempotency_key": "..."}
    [{"id": "18", "payload_b64": "AP8="}, {"id": "19", "payload": "x", "headers": [...]}]

Server to client::

    {"hello": {"protocol": "byteor-ws-1", "max_in_flight": 1000, "capacity": 10000,
               "max_message_bytes": 1048576}}               # first, on every connection
    {"ack": ["17", "18"]}      # every sink downstream confirmed these: forget them
    {"nack": ["19"]}           # downstream refused it: send it again
    {"slow": ["20", "21"], "retry_after_ms": 100, "resume_from": "20", "reason": "..."}
                               # not admitted (full or paused): send again after the wait,
                               # the next message starting with record resume_from
    {"error": "...", "ids": ["22"]}   # refused as malformed: sending it again will not help

**Source.** A ``websockets`` asyncio server on ``host:port`` (port 0 picks one:
:attr:`WebSocketSource.port`) and ``path``. Admitted records wait in a buffer that stands
for the ingress lane, a message as one block of columns (ids, payloads; keys and headers
only when a record has any; a message whose records are each their payload alone, as the
sink sends them, is read column by column without a Python step a record).
:meth:`next_batch` hands out what one connection sent as a :class:`RecordBatch` (no object a
record until one is read), and settling one queues its id for the connection's next ``ack``
/ ``nack`` frame (the ids settled in one turn of the event loop go in one frame; ``ack_all``
of a batch queues its ids at once). An ack frame is therefore sent only after downstream
confirmed the record. Back-pressure is the ``slow`` frame: a message is not admitted while
the source is paused, while ``capacity`` records are admitted and unsettled in all, or while
the connection has ``max_in_flight`` unanswered records; the connection keeps being read (so
keepalive pings go on and one slow client never holds up the others) and nothing refused is
kept. After a ``slow`` a connection's messages are refused until one starts with its first
refused record (``resume_from``), so records are admitted in the order the client sent them.
Authentication is an optional bearer token checked in the opening handshake (``401`` before
any frame). A message over ``max_message_bytes`` closes the connection with code 1009;
binary frames and malformed messages get an ``error`` frame and admit nothing. When a
connection ends, its records not yet handed out are dropped (the client sends again what was
not acked); those handed out stay downstream, and their settlement has nowhere to go — the
client's resend of those is the only duplicate. Stop sends the acks already settled, then
closes every connection (1001).

**Sink.** One connection, opened by the first write and re-opened with :func:`retry` and
:class:`Backoff`. :meth:`WebSocketSink.write_batch` gives each record an id (a counter) and an
``idempotency_key`` (:func:`idempotency_key`, the HTTP adapter's: its ``idempotency-key``
header, else a hash of its content), sends up to ``min(max_in_flight, the server's)``
unanswered records in messages of ``message_records``, and returns when every record was
acked. After a reconnect it sends every unacked record again, same id and key, in order (the
receiver can drop repeats by key). A ``nack`` resends the record (``on_nack = resend``) or
fails the write with a retriable error (``raise``); a ``slow`` waits ``retry_after_ms`` and
resends; an ``error`` frame fails the write (not retriable). No acknowledgement at all for
``ack_timeout_s`` fails it as retriable. A failed write closes the connection.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hmac
import json
import logging
import random
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from operator import itemgetter
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers as WsHeaders
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.uri import parse_uri

from byteor.adapters._backoff import Backoff, retry
from byteor.adapters._columns import Chunk, batch_or_records, take_runs
from byteor.adapters._config import ConfigField, ConfigSchema, ConfigValue
from byteor.adapters._contract import Adapter, Capabilities, Health, Sink, Source
from byteor.adapters._errors import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
    AdapterUnreachable,
)
from byteor.adapters._jsonrecord import (
    BINARY_ONLY,
    RECORD_FIELDS,
    TEXT_ONLY,
    BadRecord,
    idempotency_key,
    payload_key,
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
    RecordBatch,
    Settler,
)
from byteor.spec import Delivery

__all__ = [
    "WebSocketAdapter",
    "WebSocketSource",
    "WebSocketSink",
    "WebSocketSourceStatistics",
    "WebSocketSinkStatistics",
    "encode_message",
    "idempotency_key",
    "PROTOCOL",
    "CONNECT_BACKOFF",
]

log = logging.getLogger("byteor.adapters.websocket")

#: The protocol's name, in the server's hello frame.
PROTOCOL: Final = "byteor-ws-1"
#: Connecting: about 10 attempts over ~20 s before the error surfaces.
CONNECT_BACKOFF: Final = Backoff(initial_s=0.1, max_s=5.0, max_attempts=10)
#: The longest record id the source takes (characters).
MAX_ID_CHARS: Final = 256
#: The largest frame the sink reads (the server sends only small control messages).
_CLIENT_MAX_SIZE: Final = 16 << 20
_FIELDS: Final = RECORD_FIELDS | {"id"}
#: A message's records that are each its payload alone (base64 / text), with their ids: read
#: column by column in C (see WebSocketSource._parse).
_BINARY_ONLY: Final = BINARY_ONLY | {"id"}
_TEXT_ONLY: Final = TEXT_ONLY | {"id"}
_get_id: Final = itemgetter("id")
_get_b64: Final = itemgetter("payload_b64")
_get_text: Final = itemgetter("payload")
_a2b: Final = binascii.a2b_base64  # strict_mode: b64decode(validate=True)
_encode: Final = str.encode
#: How long the server waits for a client at stop (acks, then the closing handshake).
_CLOSE_TIMEOUT_S: Final = 5.0
_NAME: Final = "websocket"

OnNack = Literal["resend", "raise"]


#: Compact JSON, UTF-8 text kept readable (one encoder: ``json.dumps`` with arguments builds
#: a new one per call, a visible cost at one call per record).
_dumps: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: A JSON string of text, as ``_dumps`` writes it (quoted; ensure_ascii off).
_quote: Final = json.encoder.encode_basestring
#: An id written into a message without escaping (the sink's are decimal numbers).
_PLAIN_ID: Final = re.compile(r"[0-9A-Za-z_.:-]{1,256}")


def encode_message(records: Sequence[OutRecord], ids: Sequence[str]) -> str:
    """A client message carrying ``records`` with ``ids`` (and their idempotency keys): a JSON
    array, for anyone who writes their own client in Python."""
    return "[" + ",".join(_record_texts(records, ids)) + "]"


def _record_texts(records: Sequence[OutRecord], ids: Sequence[str]) -> list[str]:
    """Each record's JSON object (with its id and idempotency key), as text: a message is
    ``[`` + these joined by commas + ``]``. A record that is its payload alone is written
    straight (its id and key need no escaping: they are checked to be plain), others through
    :func:`record_object` and the encoder; both give what ``_dumps`` gives for the object."""
    out: list[str] = []
    append, key_of, b2a, quote = out.append, payload_key, binascii.b2a_base64, _quote
    for rec, rid in zip(records, ids, strict=True):
        payload = rec.payload
        if rec.key is None and not rec.headers and _PLAIN_ID.fullmatch(rid):
            key = key_of(payload)
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                b64 = b2a(payload, newline=False).decode("ascii")
                append(f'{{"payload_b64":"{b64}","idempotency_key":"{key}","id":"{rid}"}}')
                continue
            append(f'{{"payload":{quote(text)},"idempotency_key":"{key}","id":"{rid}"}}')
            continue
        obj = record_object(rec, idempotency_key(rec))
        obj["id"] = rid
        append(_dumps(obj))
    return out


# -- the source ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebSocketSourceStatistics:
    """A WebSocket source's counters.

    Attributes:
        capacity: records admitted and not yet settled that it holds at most.
        used: records admitted and not yet settled now (queued + handed out).
        peak: the highest ``used`` seen.
        queued: admitted, not yet handed out.
        connections: open connections now.
        admitted: records admitted since start.
        acked: records acknowledged to their client (ack frames) since start.
        nacked: records answered with a nack frame since start.
        slowed: messages answered ``slow`` (full, paused, or the connection's limit).
        refused: messages answered ``error``, and connections closed for a message too big.
        dropped: records of closed connections dropped before they were handed out.
    """

    capacity: int
    used: int
    peak: int
    queued: int
    connections: int
    admitted: int
    acked: int
    nacked: int
    slowed: int
    refused: int
    dropped: int


class _Conn:
    """One client connection: its unanswered ids and the settled ones waiting for a frame."""

    __slots__ = ("ws", "ids", "acks", "nacks", "wake", "open", "blocked", "peak")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.ids: set[str] = set()  # admitted, not yet settled (or settled, not yet sent)
        self.acks: list[str] = []
        self.nacks: list[str] = []
        self.wake = asyncio.Event()
        self.open = True
        self.blocked: str | None = None  # after a slow: the id its next message must start with
        self.peak = 0


class _EntryAck(Ack):
    """Settling tells the source which connection to answer (no I/O: a plain ``settled``)."""

    __slots__ = ("_src", "_conn", "_rid", "_epoch")

    def __init__(self, src: WebSocketSource, conn: _Conn, rid: str, epoch: int) -> None:
        Ack.__init__(self)
        self._src, self._conn, self._rid, self._epoch = src, conn, rid, epoch

    def settled(self, ok: bool) -> None:
        self._src._settle(self._conn, self._rid, self._epoch, ok)


class _Taken(Settler):
    """The records of one connection handed out by one ``next_batch``: their
    acknowledgement, one object for all of them. ``ack_all`` / ``nack_all`` of their
    :class:`RecordBatch` queue its ids for the connection's next frame at once
    (:meth:`settle_batch`, no look at any record); of some records, each record's id;
    reading a record's ``ack`` makes its :class:`_EntryAck`. ``rids`` are the records' client
    ids in the order handed out, ``seq`` the first one's sequence number (their ``position``
    runs on from it)."""

    __slots__ = ("_src", "_conn", "_epoch", "rids", "seq")

    def __init__(
        self, src: WebSocketSource, conn: _Conn, epoch: int, rids: list[str], seq: int
    ) -> None:
        self._src, self._conn, self._epoch = src, conn, epoch
        self.rids, self.seq = rids, seq

    def _rid(self, record: Record) -> str:
        return self.rids[cast(int, record.position) - self.seq]

    def make_ack(self, record: LazyAckRecord) -> Ack:
        return _EntryAck(self._src, self._conn, self._rid(record), self._epoch)

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        # All of them (each record comes once, so as many as there are means all): the ids
        # as handed out; else each record's own.
        rids = self.rids if len(records) == len(self.rids) else [self._rid(r) for r in records]
        self._src._settle_all(self._conn, rids, self._epoch, ok)

    def settle_batch(self, batch: RecordBatch, ok: bool) -> None:
        self._src._settle_all(self._conn, self.rids, self._epoch, ok)


class _Refused(ValueError):
    """A message that admits nothing: the error frame's text, and the ids it could read."""

    def __init__(self, message: str, ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.ids = list(ids)


def _ids_of(doc: object) -> list[str]:
    """The string ids a message carries, for attributing a refusal."""
    objs = doc if isinstance(doc, list) else [doc]
    return [o["id"] for o in objs if isinstance(o, dict) and _valid_id(o.get("id"))]


def _valid_id(rid: object) -> bool:
    return isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS


_Columns = tuple[list[str], list[bytes], list[bytes | None] | None, list[Headers] | None]


def _columns(objs: list[Any]) -> _Columns:
    """The ids, payloads, keys and headers of a message's record objects (keys / headers None
    when no record has any). Raises BadRecord, without saying why, at the first one that is
    not valid (:meth:`WebSocketSource._explain` says it).

    A message whose records are all their payload alone, all in base64 or all as text (an id
    and an idempotency key at most: what the byteor sink sends) is read column by column by
    C code (``map``), no Python step a record: every field known, every id a string of 1 to
    MAX_ID_CHARS characters, every payload a string that decodes. Anything else, or any doubt
    (a failure of the column reading is no verdict), is read record by record.
    """
    if objs:
        try:
            binary = "payload_b64" in objs[0]
            fields, get = (_BINARY_ONLY, _get_b64) if binary else (_TEXT_ONLY, _get_text)
            if all(map(fields.issuperset, objs)):
                ids: list[str] = list(map(_get_id, objs))
                if (
                    {*map(type, ids)} == {str}
                    and min(map(len, ids)) > 0
                    and max(map(len, ids)) <= MAX_ID_CHARS
                ):
                    if get is _get_b64:  # (a partial with strict_mode: a dict a call)
                        b64 = [_a2b(data, strict_mode=True) for data in map(get, objs)]
                        return ids, b64, None, None
                    return ids, list(map(_encode, map(get, objs))), None, None
        except (KeyError, TypeError, ValueError):
            pass  # read record by record, which finds what is wrong
    return _each(objs)


def _each(objs: list[Any]) -> _Columns:
    """:func:`_columns` record by record."""
    ids: list[str] = []
    payloads: list[bytes] = []
    keys: list[bytes | None] | None = None
    headers: list[Headers] | None = None
    for i, obj in enumerate(objs):
        rid = obj.get("id") if type(obj) is dict else None
        if type(rid) is not str or not 0 < len(rid) <= MAX_ID_CHARS:
            raise BadRecord(rid)
        ids.append(rid)
        rec = read_record(obj, "", _FIELDS)
        payloads.append(rec.payload)
        if rec.key is not None:
            if keys is None:
                keys = [None] * i
            keys.append(rec.key)
        elif keys is not None:
            keys.append(None)
        if rec.headers:
            if headers is None:
                headers = [()] * i
            headers.append(rec.headers)
        elif headers is not None:
            headers.append(())
    return ids, payloads, keys, headers


class WebSocketSource(Source):
    """The ingest server (see the module docstring for the protocol)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        path: str = "/records",
        token: str = "",
        capacity: int = 10_000,
        max_in_flight: int = 1_000,
        max_message_bytes: int = 1 << 20,
        retry_after_ms: int = 100,
        ping_interval_s: float = 20.0,
    ) -> None:
        if capacity < 1 or max_in_flight < 1:
            raise AdapterConfigError(
                "websocket: capacity and max_in_flight must be at least 1", adapter=_NAME
            )
        if max_message_bytes < 1024:
            raise AdapterConfigError(
                "websocket: max_message_bytes must be at least 1024", adapter=_NAME
            )
        self._host, self._want_port = host, port
        self._path = "/" + path.strip("/")
        self._expected = token.encode() if token else b""
        self._capacity, self._max_in_flight = capacity, min(max_in_flight, capacity)
        self._max_bytes, self._retry_after = max_message_bytes, max(0, retry_after_ms)
        self._ping = ping_interval_s if ping_interval_s > 0 else None
        self._hello = _dumps(
            {
                "hello": {
                    "protocol": PROTOCOL,
                    "max_in_flight": self._max_in_flight,
                    "capacity": capacity,
                    "max_message_bytes": max_message_bytes,
                }
            }
        )
        self._server: Server | None = None
        self._port = 0
        self._queue: deque[Chunk[_Conn, str]] = deque()
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._used = self._peak = self._seq = 0
        self._admitted = self._acked = self._nacked = 0
        self._slowed = self._refused = self._dropped = 0
        self._paused = False
        self._closing = False
        self._epoch = 0

    # -- where it listens

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`; useful with ``port = 0``)."""
        return self._port

    @property
    def url(self) -> str:
        """Where clients connect: ``ws://host:port/path``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"ws://{host}:{self._port}{self._path}"

    # -- lifecycle

    async def start(self) -> None:
        if self._server is not None:
            return
        self._epoch += 1
        self._closing = False
        sock = bound_socket(_NAME, self._host, self._want_port)
        self._port = int(sock.getsockname()[1])
        try:
            self._server = await serve(
                self._handle,
                sock=sock,
                process_request=self._gate,
                compression=None,  # CPU is the cost on a LAN; records are small
                max_size=self._max_bytes,
                ping_interval=self._ping,
                ping_timeout=self._ping,
                close_timeout=_CLOSE_TIMEOUT_S,
                server_header=None,
            )
        except OSError as exc:
            sock.close()
            raise AdapterError(
                f"websocket: the server on {self._host}:{self._port} did not start ({exc})",
                adapter=_NAME,
                address=f"{self._host}:{self._port}",
            ) from exc

    async def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._closing = True

        async def tell(conn: _Conn) -> None:
            with contextlib.suppress(ConnectionClosed):
                await self._answer(conn)

        # What downstream settled is told before closing (bounded: a client that reads
        # nothing must not hold the stop up).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await asyncio.gather(*(tell(c) for c in list(self._conns)))
        self._epoch += 1  # settlements of records handed out so far no longer count
        server.close()  # every connection: 1001 going away; clients resend what was unacked
        try:
            await server.wait_closed()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._server = None
            self._queue.clear()
            self._conns.clear()
            self._used = 0
            self._changed.set()

    def health(self) -> Health:
        up = self._server is not None and not self._closing
        return Health(
            connected=up,
            lag=self._queued(),
            detail=f"listening on {self.url}, {len(self._conns)} connections" if up else "stopped",
        )

    def statistics(self) -> WebSocketSourceStatistics:
        return WebSocketSourceStatistics(
            capacity=self._capacity,
            used=self._used,
            peak=self._peak,
            queued=self._queued(),
            connections=len(self._conns),
            admitted=self._admitted,
            acked=self._acked,
            nacked=self._nacked,
            slowed=self._slowed,
            refused=self._refused,
            dropped=self._dropped,
        )

    # -- handing out

    def _queued(self) -> int:
        return sum(c.left for c in self._queue)

    def _take(self, max_records: int) -> Sequence[Record]:
        """Up to ``max_records`` records, as the columns of the messages they came in: one
        :class:`RecordBatch` when they are all of one connection (the common case: no object
        per record until one is read), else the records of a batch per run of one
        connection's messages."""
        epoch = self._epoch
        return batch_or_records(
            [
                RecordBatch(
                    r.payloads,
                    r.keys,
                    r.headers,
                    range(r.seq, r.seq + len(r.ids)),
                    _Taken(self, r.origin, epoch, r.ids, r.seq),
                )
                for r in take_runs(self._queue, max_records)
            ]
        )

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> Sequence[Record]:
        """A :class:`RecordBatch` of what one connection sent (a list of records when what is
        handed out came on several), ``[]`` when nothing is there within ``timeout_s``."""
        if self._server is None or self._closing:
            raise AdapterError("websocket: source is not started", adapter=_NAME)
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
                async with asyncio.timeout(left):
                    await self._changed.wait()
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

    def _settle(self, conn: _Conn, rid: str, epoch: int, ok: bool) -> None:
        if epoch != self._epoch:
            return  # the source stopped meanwhile: the client sends it again
        self._used -= 1
        if conn.open:
            (conn.acks if ok else conn.nacks).append(rid)
            conn.wake.set()

    def _settle_all(self, conn: _Conn, rids: list[str], epoch: int, ok: bool) -> None:
        """:meth:`_settle` of each id, in order, at once."""
        if epoch != self._epoch:
            return
        self._used -= len(rids)
        if conn.open:
            (conn.acks if ok else conn.nacks).extend(rids)
            conn.wake.set()

    # -- the connections

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        """The opening handshake: 503 while stopping, 401 without the token, 404 elsewhere."""
        if self._closing:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "the source is stopping\n")
        if self._expected:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            ok = hmac.compare_digest(given.strip().encode("latin-1"), self._expected)
            if not (ok and scheme.lower() == "bearer"):
                self._refused += 1
                resp = connection.respond(
                    HTTPStatus.UNAUTHORIZED,
                    "missing or wrong bearer token (send 'Authorization: Bearer <token>')\n",
                )
                resp.headers["WWW-Authenticate"] = 'Bearer realm="byteor"'
                return resp
        if urlsplit(request.path).path != self._path:
            return connection.respond(
                HTTPStatus.NOT_FOUND, f"no WebSocket endpoint here; records go to {self._path}\n"
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Conn(ws)
        self._conns.add(conn)
        writer = asyncio.create_task(self._write_answers(conn), name="byteor-ws-answers")
        self._tasks.add(writer)
        writer.add_done_callback(self._tasks.discard)
        try:
            await ws.send(self._hello)
            async for message in ws:
                reply = self._receive(conn, message)
                if reply is not None:
                    await ws.send(reply)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self._refused += 1
                log.warning("websocket: closed a connection for a message over %d bytes",
                            self._max_bytes)  # fmt: skip
        finally:
            conn.open = False
            self._conns.discard(conn)
            writer.cancel()
            self._drop(conn)
            await asyncio.wait([writer])  # its cancellation, not ours, is swallowed

    def _drop(self, conn: _Conn) -> None:
        """A closed connection's records not yet handed out: its client sends them again."""
        if not self._queue or self._closing:
            return
        kept = deque(c for c in self._queue if c.origin is not conn)
        dropped = sum(c.left for c in self._queue if c.origin is conn)
        if dropped:
            self._queue = kept
            self._used -= dropped
            self._dropped += dropped

    async def _write_answers(self, conn: _Conn) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                await self._answer(conn)

    async def _answer(self, conn: _Conn) -> None:
        """Send the ack and nack frames of what was settled since the last ones."""
        if conn.nacks:
            nacks, conn.nacks = conn.nacks, []
            conn.ids.difference_update(nacks)
            self._nacked += len(nacks)
            await conn.ws.send(_dumps({"nack": nacks}))
        if conn.acks:
            acks, conn.acks = conn.acks, []
            conn.ids.difference_update(acks)
            self._acked += len(acks)
            await conn.ws.send(_dumps({"ack": acks}))

    def _receive(self, conn: _Conn, message: str | bytes) -> str | None:
        """Admit a message, or the frame that says why not."""
        try:
            ids, payloads, keys, headers = self._parse(conn, message)
        except _Refused as exc:
            self._refused += 1
            return _dumps({"error": str(exc), "ids": exc.ids})
        n = len(ids)
        if not n:
            return None
        if conn.blocked is not None:
            if ids[0] != conn.blocked:
                return self._slow(
                    conn, ids, f"send the refused records again from id {conn.blocked!r} first"
                )
            conn.blocked = None
        if self._closing:
            return self._slow(conn, ids, "the source is stopping")
        if self._paused:
            return self._slow(conn, ids, "the source is paused (downstream is full)")
        if self._used + n > self._capacity:
            return self._slow(
                conn,
                ids,
                f"the source is full ({self._used} of {self._capacity} records admitted and "
                f"not yet acknowledged)",
            )
        if len(conn.ids) + n > self._max_in_flight:
            return self._slow(
                conn,
                ids,
                f"this connection has {len(conn.ids)} records unanswered; at most "
                f"{self._max_in_flight} (max_in_flight)",
            )
        self._queue.append(Chunk(conn, ids, payloads, keys, headers, self._seq))
        self._seq += n
        conn.ids.update(ids)
        conn.peak = max(conn.peak, len(conn.ids))
        self._used += n
        self._peak = max(self._peak, self._used)
        self._admitted += n
        self._changed.set()
        return None

    def _slow(self, conn: _Conn, ids: list[str], reason: str) -> str:
        self._slowed += 1
        if conn.blocked is None:
            conn.blocked = ids[0]
        return _dumps(
            {
                "slow": ids,
                "retry_after_ms": self._retry_after,
                "resume_from": conn.blocked,
                "reason": reason + "; send again",
            }
        )

    def _parse(self, conn: _Conn, message: str | bytes) -> _Columns:
        """The message's ids, payloads, keys and headers; raises :class:`_Refused`."""
        if isinstance(message, bytes):
            raise _Refused(
                "binary messages are not accepted: send records as JSON text messages "
                f"(protocol {PROTOCOL}: an object with id and payload, or an array of them)"
            )
        try:
            doc = json.loads(message)
        except json.JSONDecodeError as exc:
            raise _Refused(
                f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        except (ValueError, RecursionError) as exc:  # a huge integer, nesting too deep
            raise _Refused(f"not valid JSON ({type(exc).__name__}: {exc})") from None
        objs: list[Any]
        if isinstance(doc, dict):
            objs = [doc]
        elif isinstance(doc, list):
            objs = doc
        else:
            raise _Refused(
                f"a message is a record object or an array of them, got {type(doc).__name__}"
            )
        if len(objs) > self._max_in_flight:
            raise _Refused(
                f"a message of {len(objs)} records can never be admitted: at most "
                f"{self._max_in_flight} records are in flight per connection; split it",
                _ids_of(doc),
            )
        # The fast paths check without building messages; on any problem, _explain says what.
        try:
            ids, payloads, keys, headers = _columns(objs)
            if len(set(ids)) != len(ids) or not conn.ids.isdisjoint(ids):
                raise BadRecord("a repeated id")
        except BadRecord:
            self._explain(conn, doc, objs)
            raise  # not reached: _explain raises
        return ids, payloads, keys, headers

    def _explain(self, conn: _Conn, doc: object, objs: list[Any]) -> None:
        """Raise the :class:`_Refused` that says what is wrong with a message's records."""
        ids = _ids_of(doc)
        seen: set[str] = set()
        for i, obj in enumerate(objs):
            where = "the record" if isinstance(doc, dict) else f"records[{i}]"
            if isinstance(obj, dict):
                rid = obj.get("id")
                if not isinstance(rid, str) or not _valid_id(rid):
                    raise _Refused(
                        f"{where}: id must be a non-empty string of at most {MAX_ID_CHARS} "
                        f"characters, got {rid!r:.40}",
                        ids,
                    )
                if rid in seen or rid in conn.ids:
                    raise _Refused(
                        f"{where}: id {rid!r} is already unanswered on this connection; ids "
                        f"must be unique until acked or nacked",
                        ids,
                    )
                seen.add(rid)
            try:
                read_record(obj, where, _FIELDS)
            except BadRecord as exc:
                raise _Refused(str(exc), ids) from None
        raise AssertionError("a message the fast path refused passed every check")


# -- the sink ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebSocketSinkStatistics:
    """A WebSocket sink's counters.

    Attributes:
        sent: records sent, resends included.
        confirmed: records acked by the server.
        resent: records sent again (after a reconnect, a nack or a slow frame).
        nacked: records the server nacked.
        slowed: records the server answered ``slow``.
        reconnects: connections opened after the first.
        in_flight: records sent and not yet answered now.
    """

    sent: int
    confirmed: int
    resent: int
    nacked: int
    slowed: int
    reconnects: int
    in_flight: int


_PENDING, _SENT, _DONE = 0, 1, 2
#: Marks for a run of records at once (sliced to its length; a message is at most this long).
_ALL_SENT: Final = bytes([_SENT]) * 10_000
_ALL_DONE: Final = bytes([_DONE]) * 10_000


class _Window:
    """One write's records: their JSON objects and where each stands.

    ``cursor`` is the lowest index that may still need sending; a reconnect, a nack or a
    slow frame moves it back, so resends go out in the order of the batch. ``resume`` is the
    record a ``slow`` frame's ``resume_from`` names: the next message must start with it.
    """

    __slots__ = ("records", "ids", "texts", "index", "state", "sent_before", "cursor",
                 "in_flight", "done", "not_before", "resume")  # fmt: skip

    def __init__(self, records: Sequence[OutRecord], first_id: int) -> None:
        n = len(records)
        self.records = records
        self.ids = list(map(str, range(first_id, first_id + n)))
        self.texts = _record_texts(records, self.ids)  # each record's JSON object
        self.index = dict(zip(self.ids, range(n), strict=True))
        self.state = bytearray(len(records))
        self.sent_before = bytearray(len(records))
        self.cursor = self.in_flight = self.done = 0
        self.not_before = 0.0
        self.resume: int | None = None

    def too_large(self, limit: int) -> int:
        """The encoded size of the first record that cannot fit in a message of ``limit``
        bytes, else 0. Only records whose size could come near it are encoded to know: JSON
        takes at most 6 bytes per byte of content (a control character escaped)."""
        for i, rec in enumerate(self.records):
            raw = len(rec.payload) + len(rec.key or b"")
            raw += 2 * sum(len(n) * 3 + len(v) for n, v in rec.headers)  # a key may repeat one
            if 6 * raw + 64 * len(rec.headers) + 256 > limit:
                size = len(self.texts[i].encode()) + 2  # a message of it alone
                if size > limit:
                    return size
        return 0

    def again(self, i: int) -> None:
        """Record ``i`` goes out again (it was sent and not acked)."""
        if self.state[i] == _SENT:
            self.state[i] = _PENDING
            self.in_flight -= 1
            self.cursor = min(self.cursor, i)

    def all_again(self) -> None:
        """A new connection: everything sent and not acked goes out again, in order."""
        state = self.state
        for i, s in enumerate(state):
            if s == _SENT:
                state[i] = _PENDING
        self.in_flight = 0
        self.cursor = next((i for i, s in enumerate(state) if s != _DONE), len(state))
        self.not_before = 0.0
        self.resume = None  # a new connection is not blocked


class WebSocketSink(Sink):
    """Writes batches to a byteor WebSocket source; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        max_in_flight: int = 1_000,
        message_records: int = 500,
        on_nack: OnNack = "resend",
        ack_timeout_s: float = 60.0,
        open_timeout_s: float = 10.0,
        ping_interval_s: float = 20.0,
        backoff: Backoff = CONNECT_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        try:
            uri = parse_uri(url)
        except InvalidURI:
            raise AdapterConfigError(
                f"websocket: url must be a ws:// or wss:// URL, got {url!r}", adapter=_NAME
            ) from None
        self._url = url
        scheme = "wss" if uri.secure else "ws"
        host = f"[{uri.host}]" if ":" in uri.host else uri.host
        self._origin = f"{scheme}://{host}:{uri.port}"
        self._path = urlsplit(uri.resource_name).path
        self._token = token
        self._max_in_flight = max(1, max_in_flight)
        self._message_records = max(1, message_records)
        self._on_nack: OnNack = on_nack
        self._ack_timeout = ack_timeout_s
        self._open_timeout = open_timeout_s
        self._ping = ping_interval_s if ping_interval_s > 0 else None
        self._backoff, self._sleep, self._rand = backoff, sleep, rand
        self._started = False
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._limit_in_flight = self._max_in_flight
        self._limit_bytes = 1 << 20
        self._window: _Window | None = None
        self._changed = asyncio.Event()
        self._writing = asyncio.Lock()
        self._failure: AdapterError | None = None  # what the reader found fatal for the write
        self._last_error: AdapterError | None = None
        self._next_id = 0
        self._connections = 0
        self._sent = self._confirmed = self._resent = self._nacked = self._slowed = 0

    # -- lifecycle

    async def start(self) -> None:
        """Ready to write; the first write connects (so a sink may start before its server)."""
        self._started = True

    async def stop(self) -> None:
        self._started = False
        await self._disconnect()

    def health(self) -> Health:
        ws, err = self._ws, self._last_error
        detail = f"reconnects: {max(0, self._connections - 1)}"
        if err is not None:
            detail += f"; {err}"
        return Health(connected=ws is not None and self._started, detail=detail)

    def statistics(self) -> WebSocketSinkStatistics:
        w = self._window
        return WebSocketSinkStatistics(
            sent=self._sent,
            confirmed=self._confirmed,
            resent=self._resent,
            nacked=self._nacked,
            slowed=self._slowed,
            reconnects=max(0, self._connections - 1),
            in_flight=w.in_flight if w is not None else 0,
        )

    # -- connecting

    async def _connected(self) -> ClientConnection:
        """The open connection, reconnecting with backoff if there is none."""
        if self._ws is not None:
            return self._ws

        def note(n: int, exc: AdapterError, wait: float) -> None:
            log.warning("websocket: connecting to %s failed (%s); retrying in %.2f s",
                        self._url, exc, wait)  # fmt: skip

        try:
            ws = await retry(
                self._open, self._backoff, sleep=self._sleep, rand=self._rand, on_retry=note
            )
        except AdapterError as exc:
            self._last_error = exc
            raise
        self._last_error = None
        self._ws = ws
        self._connections += 1
        if self._connections > 1:
            log.info("websocket: reconnected to %s (%d)", self._url, self._connections - 1)
        self._reader = asyncio.create_task(self._read(ws), name="byteor-ws-sink-reader")
        return ws

    def _status_error(self, exc: InvalidStatus) -> AdapterError:
        status = exc.response.status_code
        body = (exc.response.body or b"").decode("utf-8", "replace").strip()[:200]
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "(unknown status)"
        detail = f"{status} {phrase}" + (f": {body}" if body else "")
        if status in (401, 403):
            return AdapterAuthError(_NAME, self._url, detail)
        if status == 404:
            return AdapterNotFound(_NAME, self._origin, f"path {self._path!r}", detail)
        retriable = status in (408, 429, 502, 503, 504)
        return AdapterError(
            f"websocket: {self._url} refused the WebSocket handshake ({detail})"
            + ("; retrying" if retriable else ""),
            adapter=_NAME,
            address=self._url,
            retriable=retriable,
        )

    async def _open(self) -> ClientConnection:
        """One connection attempt, up to the server's hello; every failure typed."""
        headers = WsHeaders()
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            ws = await connect(
                self._url,
                additional_headers=headers,
                compression=None,
                proxy=None,
                open_timeout=self._open_timeout,
                ping_interval=self._ping,
                ping_timeout=self._ping,
                close_timeout=2,
                max_size=_CLIENT_MAX_SIZE,
            )
        except InvalidStatus as exc:
            raise self._status_error(exc) from exc
        except (OSError, TimeoutError) as exc:
            raise AdapterUnreachable(_NAME, self._url, f"{type(exc).__name__}: {exc}") from exc
        except InvalidMessage as exc:  # the connection dropped during the handshake
            raise AdapterError(
                f"websocket: {self._url} closed the connection during the handshake ({exc}); "
                f"retrying",
                adapter=_NAME,
                address=self._url,
                retriable=True,
            ) from exc
        except InvalidHandshake as exc:
            raise AdapterError(
                f"websocket: {self._url} is not a WebSocket endpoint ({type(exc).__name__}: "
                f"{exc}); check the url",
                adapter=_NAME,
                address=self._url,
                retriable=False,
            ) from exc
        try:
            async with asyncio.timeout(self._open_timeout):
                first = await ws.recv()
            hello = json.loads(first)["hello"]
            if hello["protocol"] != PROTOCOL:
                raise ValueError(f"protocol {hello['protocol']!r}")
            self._limit_in_flight = max(
                1, min(self._max_in_flight, int(hello["max_in_flight"]), int(hello["capacity"]))
            )
            self._limit_bytes = int(hello["max_message_bytes"])
        except ConnectionClosed as exc:
            raise AdapterError(
                f"websocket: {self._url} closed the connection before its hello ({exc}); retrying",
                adapter=_NAME,
                address=self._url,
                retriable=True,
            ) from exc
        except (TimeoutError, ValueError, TypeError, KeyError) as exc:
            await ws.close()
            raise AdapterError(
                f"websocket: {self._url} is not a byteor WebSocket source (its first message "
                f"is not a {PROTOCOL} hello: {type(exc).__name__}); check the url",
                adapter=_NAME,
                address=self._url,
                retriable=False,
            ) from exc
        return ws

    async def _disconnect(self) -> None:
        ws, reader = self._ws, self._reader
        self._ws = self._reader = None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if ws is not None:
            await ws.close()

    # -- the server's answers

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self._answered(message)
        except ConnectionClosed:
            pass
        finally:
            code = ws.close_code
            if code in (CloseCode.MESSAGE_TOO_BIG, CloseCode.POLICY_VIOLATION):
                self._failure = AdapterError(
                    f"websocket: {self._url} closed the connection ({code} "
                    f"{ws.close_reason or ''}); a message broke its limits",
                    adapter=_NAME,
                    address=self._url,
                    retriable=False,
                )
            if self._ws is ws:
                self._ws = None  # the writer reconnects and sends the unacked again
                self._reader = None
            self._changed.set()

    def _acked_run(self, w: _Window, acks: object) -> bool:
        """An ack frame of a run of records in flight, in order (the common case: the
        server answers a message's records together), applied by slices; False for any
        other frame, which the caller applies id by id."""
        if acks.__class__ is not list or not acks:
            return False
        ids = cast(list[str], acks)
        i = w.index.get(ids[0]) if ids[0].__class__ is str else None
        k = len(ids)
        if i is None or k > len(_ALL_DONE):
            return False
        end = i + k
        if w.ids[i:end] != ids or w.state.count(_SENT, i, end) != k:
            return False
        w.state[i:end] = _ALL_DONE[:k]
        w.in_flight -= k
        w.done += k
        self._confirmed += k
        return True

    def _answered(self, message: str | bytes) -> None:
        """Apply one server frame to the current window."""
        try:
            doc = json.loads(message)
            kind = next(iter(doc)) if isinstance(doc, dict) and doc else ""
        except ValueError:
            kind = ""
        w = self._window
        if kind == "ack":
            if w is not None and not self._acked_run(w, doc["ack"]):
                index, state = w.index, w.state
                for rid in doc["ack"]:
                    i = index.get(rid)
                    if i is not None and state[i] != _DONE:
                        if state[i] == _SENT:
                            w.in_flight -= 1
                        state[i] = _DONE
                        w.done += 1
                        self._confirmed += 1
        elif kind == "nack":
            ids = [rid for rid in doc["nack"] if w is not None and rid in w.index]
            self._nacked += len(ids)
            if w is not None and ids:
                if self._on_nack == "raise":
                    self._failure = AdapterError(
                        f"websocket: {self._url} nacked {len(ids)} records (downstream refused "
                        f"them); the write is retriable",
                        adapter=_NAME,
                        address=self._url,
                        retriable=True,
                    )
                for rid in ids:
                    w.again(w.index[rid])
        elif kind == "slow":
            ids = [rid for rid in doc["slow"] if w is not None and rid in w.index]
            self._slowed += len(ids)
            if w is not None and ids:
                for rid in ids:
                    w.again(w.index[rid])
                wait = max(0, int(doc.get("retry_after_ms", 100))) / 1000
                w.not_before = asyncio.get_running_loop().time() + wait
                resume = w.index.get(doc.get("resume_from", ids[0]))
                w.resume = resume if resume is not None else w.index[ids[0]]
        elif kind == "error":
            ids = doc.get("ids") or []
            if w is not None and (not ids or any(rid in w.index for rid in ids)):
                self._failure = AdapterError(
                    f"websocket: {self._url} refused records: {doc['error']}",
                    adapter=_NAME,
                    address=self._url,
                    retriable=False,
                )
        elif kind != "hello":
            log.warning("websocket: %s sent a message this sink does not know: %.200r",
                        self._url, message)  # fmt: skip
        self._changed.set()

    # -- writing

    def _next_message(self, w: _Window) -> bytes | None:
        """The next message of pending records that fits the window, or ``None``.

        After a ``slow`` it starts with the record the server asked for (older records sent
        again after a nack wait behind it: the server refuses anything else first); otherwise
        at the cursor. It never jumps over a record still unanswered (one slowed with it may
        be on its way back, and goes out again in its place).
        """
        room = min(self._limit_in_flight - w.in_flight, self._message_records)
        if room <= 0:
            return None
        state, n = w.state, len(w.state)
        start = w.cursor
        if w.resume is not None:
            i = w.resume
            while i < n and state[i] == _DONE:
                i += 1
            if i < n and state[i] == _SENT:
                return None  # its answer is on the way
            w.resume = None
            if i < n:
                start = i
        end = min(n, start + room)
        if state.count(_PENDING, start, end) == end - start > 0:  # a run of pending: at once
            return self._send_run(w, start, end)
        run: list[int] = []
        i = start
        while i < n and len(run) < room:
            s = state[i]
            if s == _DONE:
                i += 1
                continue
            if s == _SENT:
                break
            run.append(i)
            i += 1
        if not run:
            if start == w.cursor:
                w.cursor = i
            return None
        texts = w.texts
        message = ("[" + ",".join([texts[j] for j in run]) + "]").encode()
        while len(message) > self._limit_bytes and len(run) > 1:
            run = run[: len(run) // 2]  # big records: fewer per message (too_large said 1 fits)
            message = ("[" + ",".join([texts[j] for j in run]) + "]").encode()
        if start == w.cursor:
            w.cursor = run[-1] + 1
        sent_before = w.sent_before
        for j in run:
            state[j] = _SENT
            if sent_before[j]:
                self._resent += 1
            sent_before[j] = 1
        w.in_flight += len(run)
        self._sent += len(run)
        return message

    def _send_run(self, w: _Window, start: int, end: int) -> bytes:
        """:meth:`_next_message` of records ``start`` to ``end``, all pending: the same
        message and marks, by slices instead of a step a record."""
        message = ("[" + ",".join(w.texts[start:end]) + "]").encode()
        if len(message) > self._limit_bytes and end - start > 1:
            return self._send_run(w, start, start + (end - start) // 2)  # as _next_message does
        if start == w.cursor:
            w.cursor = end
        k = end - start
        w.state[start:end] = _ALL_SENT[:k]
        self._resent += w.sent_before.count(1, start, end)
        w.sent_before[start:end] = _ALL_SENT[:k]
        w.in_flight += k
        self._sent += k
        return message

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        if not self._started:
            raise AdapterError("websocket: sink is not started", adapter=_NAME)
        if not records:
            return
        async with self._writing:  # one write at a time: the window is the write's
            await self._write(records)

    async def _write(self, records: Sequence[OutRecord]) -> None:
        w = _Window(records, self._next_id)
        self._next_id += len(records)
        self._window, self._failure = w, None
        loop = asyncio.get_running_loop()
        ok = False
        try:
            ws: ClientConnection | None = None
            last_progress, last_done = loop.time(), 0
            while w.done < len(w.ids):
                if self._failure is not None:
                    raise self._failure
                if not self._started:
                    raise AdapterError(
                        f"websocket: the sink was stopped during a write ({len(w.ids) - w.done} "
                        f"records unconfirmed)",
                        adapter=_NAME,
                        address=self._url,
                        retriable=True,
                    )
                if self._ws is None or self._ws is not ws:
                    ws = await self._connected()
                    w.all_again()
                    if largest := w.too_large(self._limit_bytes):
                        raise AdapterError(
                            f"websocket: a record of {largest} bytes (encoded) is larger than "
                            f"{self._url} takes in a message ({self._limit_bytes} bytes, its "
                            f"max_message_bytes)",
                            adapter=_NAME,
                            address=self._url,
                            retriable=False,
                        )
                self._changed.clear()
                now = loop.time()
                if now >= w.not_before:
                    while (message := self._next_message(w)) is not None:
                        try:
                            await ws.send(message, text=True)
                        except ConnectionClosed:
                            break  # the reader notices; the next turn reconnects
                if w.done != last_done:
                    last_progress, last_done = now, w.done
                elif now - last_progress > self._ack_timeout:
                    raise AdapterError(
                        f"websocket: no acknowledgement from {self._url} for "
                        f"{self._ack_timeout:g} s ({len(w.ids) - w.done} records unconfirmed); "
                        f"the write is retriable",
                        adapter=_NAME,
                        address=self._url,
                        retriable=True,
                    )
                if w.done == len(w.ids) or self._failure is not None:
                    continue
                wait = last_progress + self._ack_timeout - now + 0.001
                if w.not_before > now:
                    wait = min(wait, w.not_before - now)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._changed.wait()
            ok = True
        except AdapterError as exc:
            self._last_error = exc
            raise
        finally:
            self._window = None
            if not ok:
                await self._disconnect()  # the server forgets what this write left in flight
        self._last_error = None


class WebSocketAdapter(Adapter):
    name = "websocket"
    summary = "WebSocket ingest server with per-record ack frames, and its client"
    extra = "websocket"
    client_module = "websockets"
    config = ConfigSchema(
        "websocket",
        (
            ConfigField("host", str, "127.0.0.1", "source: address to listen on"),
            ConfigField("port", int, 8765, "source: port to listen on (0: any free one)"),
            ConfigField("path", str, "/records", "source: the WebSocket endpoint"),
            ConfigField("capacity", int, 10_000,
                        "source: records admitted and not yet acked, all connections"),
            ConfigField("max_in_flight", int, 1_000,
                        "records unanswered per connection (source: the most it takes; "
                        "sink: the most it sends)"),
            ConfigField("max_message_bytes", int, 1 << 20,
                        "source: a larger message closes the connection (1009)"),
            ConfigField("retry_after_ms", int, 100, "source: the wait a slow frame asks for"),
            ConfigField("ping_interval_s", float, 20.0, "keepalive ping interval (0: none)"),
            ConfigField("token", str, "",
                        "bearer token: the source requires it, the sink sends it (empty: none)"),
            ConfigField("url", str, "", "sink: the ws:// or wss:// URL of the source"),
            ConfigField("message_records", int, 500, "sink: most records per message"),
            ConfigField("on_nack", str, "resend",
                        "sink: a nacked record is sent again, or fails the write (retriable)",
                        ("resend", "raise")),
            ConfigField("ack_timeout_s", float, 60.0,
                        "sink: fail the write when no ack arrives for this long"),
            ConfigField("max_attempts", int, 10, "sink: connection attempts before failing"),
        ),
    )  # fmt: skip
    capabilities = Capabilities(
        source=Delivery(
            "at-least-once",
            "per-connection",
            "ack frame after every sink confirmed; the client resends what was not acked",
        ),
        sink=Delivery(
            "at-least-once",
            "per-connection",
            "returns after every record's ack frame; unacked records resent after a reconnect",
        ),
        max_batch=10_000,
        backpressure="pause",
    )

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        return WebSocketSource(
            str(config["host"]),
            int(config["port"]),
            path=str(config["path"]),
            token=str(config["token"]),
            capacity=int(config["capacity"]),
            max_in_flight=int(config["max_in_flight"]),
            max_message_bytes=int(config["max_message_bytes"]),
            retry_after_ms=int(config["retry_after_ms"]),
            ping_interval_s=float(config["ping_interval_s"]),
        )

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        url = str(config["url"])
        if not url:
            raise AdapterConfigError("websocket: a sink needs config 'url'", adapter=_NAME)
        base = CONNECT_BACKOFF
        return WebSocketSink(
            url,
            token=str(config["token"]),
            max_in_flight=int(config["max_in_flight"]),
            message_records=int(config["message_records"]),
            on_nack="raise" if str(config["on_nack"]) == "raise" else "resend",
            ack_timeout_s=float(config["ack_timeout_s"]),
            ping_interval_s=float(config["ping_interval_s"]),
            backoff=Backoff(base.initial_s, base.max_s, base.factor, base.jitter,
                            max(1, int(config["max_attempts"]))),
        )  # fmt: skip
