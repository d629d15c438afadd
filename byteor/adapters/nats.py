"""``adapter = nats``: NATS core subjects and JetStream streams (``pip install 'byteor[nats]'``).

Two modes, chosen by ``mode``:

``jetstream`` (the default; at-least-once)
    Source: a durable *pull* consumer of ``stream`` (filter ``subject``, explicit ack policy,
    ``ack_wait_s`` and ``max_ack_pending`` from the config). ``start`` creates the consumer, or
    updates an existing one to the config (a new consumer starts at ``start``; an existing
    one keeps its position). Records are fetched only while the source is not paused and a
    batch is asked for, so a paused source leaves everything in the stream. Our ``ack``
    sends the message's JetStream ack; ``nack`` sends a ``nak`` (redelivered at once).
    ``stop`` naks what was handed out and never settled, so it comes back at once; what a
    crashed process held comes back when its ``ack_wait`` runs out. Sink: publishes the
    batch and returns once the stream acknowledged (PubAck) every record. Each message
    carries a ``Nats-Msg-Id`` (see ``msg_id``) so that a batch written again after a failure
    or a crash is stored once, within the stream's duplicate window (two minutes unless the
    stream says otherwise).

``core`` (at most once)
    Source: a plain subscription (optionally in a ``queue`` group). Core NATS keeps nothing:
    a record published while no source is subscribed, or held in the source's buffer when
    the process dies, is gone; ``ack``/``nack`` settle the handle and do nothing else.
    Sink: publishes, then ``flush()``es; confirmed means the server received the batch.

Where the id for ``Nats-Msg-Id`` comes from (``msg_id``):

- ``hash`` (default): the record's own ``Nats-Msg-Id`` header when it has one, else a
  128-bit BLAKE2b hash of its key, headers and payload. Deterministic, so a retried batch
  gets the same ids — but two records identical in key, headers and payload inside the
  duplicate window are also stored once. If your records can legitimately repeat, give
  them an id header and use ``header:NAME``.
- ``header:NAME``: the value of the record's header ``NAME`` (a record without it is
  refused).
- ``none``: no id is set.

A record's key travels in the header ``Byteor-Key``; its headers become NATS headers one
for one (order kept) when that is lossless — unique token names, UTF-8 text values without
control characters or surrounding blanks. Otherwise key and headers travel together,
packed, in the single header ``Byteor-Packed``. Headers whose names start with ``Byteor-``
are ours and never reach a record.

Connections: at start every server of ``servers`` is tried twice, ``reconnect_wait_s``
apart, then the start fails with :class:`AdapterUnreachable` naming the addresses. Once
connected, nats-py reconnects by itself (``reconnect_attempts`` tries per server,
``reconnect_wait_s`` apart, ``-1`` for ever); ``health()`` shows the state, the number of
reconnects and the last error. Records fetched while the server is away are simply not
there (``next_batch`` returns ``[]``); acks are buffered and sent after the reconnect.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import string
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from nats import errors as nerr
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api as jsapi
from nats.js import errors as jserr
from nats.js.client import JetStreamContext

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
    "NatsAdapter",
    "NatsOptions",
    "NatsCoreSource",
    "NatsCoreSink",
    "ConsumerSettings",
    "JetStreamSource",
    "JetStreamSink",
    "encode_headers",
    "decode_message",
    "msg_id",
    "KEY_HEADER",
    "PACKED_HEADER",
    "MSG_ID_HEADER",
]

log = logging.getLogger("byteor.adapters.nats")

KEY_HEADER: Final = "Byteor-Key"
PACKED_HEADER: Final = "Byteor-Packed"
MSG_ID_HEADER: Final = "Nats-Msg-Id"
_OURS: Final = "byteor-"
_EXPECTED: Final = "nats-expected-"
_EXPECTED_STREAM: Final = "Nats-Expected-Stream"

#: How long a source's stop waits for the server to confirm it has every ack.
FLUSH_TIMEOUT_S: Final = 2.0
#: The shortest fetch we ask JetStream for: a fetch is a round trip even when nothing waits.
FETCH_MIN_S: Final = 0.05

_ERRORS: dict[type[BaseException], type[AdapterError]] = {
    nerr.AuthorizationError: AdapterAuthError,
    nerr.NoServersError: AdapterUnreachable,
    nerr.ConnectionClosedError: AdapterUnreachable,
    nerr.StaleConnectionError: AdapterUnreachable,
    nerr.OutboundBufferLimitError: AdapterUnreachable,
    nerr.ConnectionReconnectingError: AdapterUnreachable,
    nerr.TimeoutError: AdapterUnreachable,
    jserr.NoStreamResponseError: AdapterNotFound,
    jserr.NotFoundError: AdapterNotFound,
    jserr.ServiceUnavailableError: AdapterUnreachable,
    jserr.APIError: AdapterError,
    nerr.Error: AdapterError,
    OSError: AdapterUnreachable,
    asyncio.TimeoutError: AdapterUnreachable,
}

# --- records on the wire -------------------------------------------------------------------

_H = struct.Struct(">H")
_V = struct.Struct(">I")
_TOKEN: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


def _as_text(value: bytes) -> str | None:
    """``value`` as a header value nats-py carries unchanged, else ``None``."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return None
    # Printable (no control characters or separators but the space) and no blank at either
    # end, which nats-py would strip.
    if text and not (text.isprintable() and text[0] != " " and text[-1] != " "):
        return None
    return text


def _pack(key: bytes | None, headers: Headers) -> str:
    parts = [b"\x00"] if key is None else [b"\x01", _V.pack(len(key)), key]
    for name, value in headers:
        n = name.encode()
        parts += [_H.pack(len(n)), n, _V.pack(len(value)), value]
    return base64.b64encode(b"".join(parts)).decode()


def _unpack(text: str) -> tuple[bytes | None, Headers]:
    raw = base64.b64decode(text)
    key: bytes | None = None
    at = 1
    if raw[0] == 1:
        (kl,) = _V.unpack_from(raw, 1)
        key, at = raw[5 : 5 + kl], 5 + kl
    headers: list[tuple[str, bytes]] = []
    while at < len(raw):
        (nl,) = _H.unpack_from(raw, at)
        name = raw[at + 2 : at + 2 + nl].decode()
        at += 2 + nl
        (vl,) = _V.unpack_from(raw, at)
        headers.append((name, raw[at + 4 : at + 4 + vl]))
        at += 4 + vl
    return key, tuple(headers)


def encode_headers(rec: OutRecord) -> dict[str, str]:
    """The NATS headers carrying ``rec``'s key and headers (see the module docstring)."""
    out: dict[str, str] = {}
    native = True
    for name, value in rec.headers:
        text = _as_text(value)
        if (
            text is None
            or name in out
            or not name
            or not _TOKEN.issuperset(name)
            or name.lower().startswith(_OURS)
        ):
            native = False
            break
        out[name] = text
    key_text = None if rec.key is None else _as_text(rec.key)
    if native and (rec.key is None or key_text is not None):
        if key_text is not None:
            out[KEY_HEADER] = key_text
        return out
    return {PACKED_HEADER: _pack(rec.key, rec.headers)}


@functools.lru_cache(maxsize=1024)
def _kept(name: str) -> bool:
    """Whether a NATS header becomes a record header: not ours, not a publish instruction.
    (Cached: a stream's messages carry the same few names over and over.)"""
    low = name.lower()
    return not low.startswith(_OURS) and not low.startswith(_EXPECTED)


def _decode(headers: Mapping[str, str] | None) -> tuple[bytes | None, Headers]:
    """Key and headers of a message (the hot half of :func:`decode_message`)."""
    if not headers:
        return None, ()
    rest = tuple([(n, v.encode()) for n, v in headers.items() if _kept(n)])
    packed = headers.get(PACKED_HEADER)
    if packed is not None:
        key, hdrs = _unpack(packed)
        return key, hdrs + rest
    key_text = headers.get(KEY_HEADER)
    return (None if key_text is None else key_text.encode()), rest


def decode_message(payload: bytes, headers: Mapping[str, str] | None) -> OutRecord:
    """The record a message carries (the inverse of :func:`encode_headers`).

    ``Nats-Expected-*`` headers (instructions to the server about a publish) are dropped;
    ``Nats-Msg-Id`` stays, so a record copied to another stream keeps its id.
    """
    key, headers_ = _decode(headers)
    return OutRecord(payload, key, headers_)


_reply_of: Callable[[Msg], str] = attrgetter("reply")
_data_of: Callable[[Msg], bytes] = attrgetter("data")
_headers_of: Callable[[Msg], dict[str, str] | None] = attrgetter("headers")


def _columns(
    msgs: Sequence[Msg],
) -> tuple[list[bytes], list[bytes | None] | None, list[Headers] | None]:
    """Payloads, keys (None when no message has one) and headers (None when no message has
    any) of messages, as a :class:`RecordBatch` takes them."""
    payloads: list[bytes] = list(map(_data_of, msgs))
    raw: list[dict[str, str] | None] = list(map(_headers_of, msgs))
    if not any(raw):
        return payloads, None, None
    decoded = list(map(_decode, raw))
    keys: list[bytes | None] | None = [d[0] for d in decoded]
    if keys is not None and keys.count(None) == len(keys):
        keys = None
    headers: list[Headers] | None = [d[1] for d in decoded]
    return payloads, keys, headers if any(headers or ()) else None


def msg_id(rec: OutRecord, source: str) -> str | None:
    """The ``Nats-Msg-Id`` of ``rec`` for a ``msg_id`` setting (``hash``, ``header:NAME``,
    ``none``); raises :class:`AdapterError` when ``header:NAME`` is missing from ``rec``."""
    if source == "none":
        return None
    if source == "hash":
        for name, value in rec.headers:
            if name == MSG_ID_HEADER:
                return value.decode(errors="replace")
        h = hashlib.blake2b(digest_size=16)
        h.update(b"\x00" if rec.key is None else b"\x01" + _V.pack(len(rec.key)) + rec.key)
        for name, value in rec.headers:
            n = name.encode()
            h.update(_H.pack(len(n)) + n + _V.pack(len(value)) + value)
        h.update(rec.payload)
        return h.hexdigest()
    wanted = source.removeprefix("header:")
    for name, value in rec.headers:
        if name == wanted:
            return value.decode(errors="replace")
    raise AdapterError(
        f"nats: a record has no header {wanted!r}, which msg_id = {source!r} takes the "
        f"Nats-Msg-Id from; add it upstream, or use msg_id = hash",
        adapter="nats",
        retriable=False,
    )


def _valid_msg_id_source(source: str) -> bool:
    return source in ("hash", "none") or (source.startswith("header:") and len(source) > 7)


# --- the connection ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """How to reach the servers. ``reconnect_attempts`` is per server (``-1``: for ever)."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    user: str = ""
    password: str = ""
    token: str = ""
    creds: str = ""
    name: str = ""
    connect_timeout_s: float = 2.0
    reconnect_wait_s: float = 1.0
    reconnect_attempts: int = 60

    @property
    def address(self) -> str:
        """``host:port`` of every server, comma-separated (never credentials)."""
        parts = []
        for url in self.servers:
            u = urlsplit(url if "://" in url else f"nats://{url}")
            parts.append(f"{u.hostname or '127.0.0.1'}:{u.port or 4222}")
        return ",".join(parts)


def _is_refusal(exc: BaseException | None) -> bool:
    """Whether ``exc`` is the server refusing the credentials."""
    if exc is None:
        return False
    return isinstance(exc, nerr.AuthorizationError) or "authorization" in str(exc).lower()


class _Link:
    """One nats-py connection and what health reports about it."""

    def __init__(self, opts: NatsOptions) -> None:
        self.opts = opts
        self.address = opts.address
        self.nc: NATS | None = None
        self.last_error: BaseException | None = None
        # The server's refusal of the credentials, when it said so during open(): it closes
        # the connection right after, and the retry's reset must not hide why.
        self.refused: BaseException | None = None

    def errors(self, what: str = "") -> Any:
        return map_errors("nats", self.address, _ERRORS, what=what)

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = exc
        if self.nc is None and _is_refusal(exc):
            self.refused = exc
        # Before the first connection, open() raises the last error as one AdapterError.
        level = logging.WARNING if self.nc is not None else logging.DEBUG
        log.log(level, "nats %s: %s: %s", self.address, type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            log.warning("nats %s: disconnected, reconnecting", self.address)

    async def _on_reconnected(self) -> None:
        log.info("nats %s: reconnected", self.address)

    async def open(self) -> NATS:
        o = self.opts
        nc = NATS()
        kwargs: dict[str, Any] = {}
        if o.user:
            kwargs["user"], kwargs["password"] = o.user, o.password
        if o.token:
            kwargs["token"] = o.token
        if o.creds:
            kwargs["user_credentials"] = o.creds
        if o.name:
            kwargs["name"] = o.name
        self.refused = None
        try:
            # nats-py spends one attempt budget on the first connect and on reconnects. At
            # start we want a quick, clear failure (two tries per server; 0 would mean for
            # ever), later the configured patience: the budget is raised once connected.
            await nc.connect(
                list(o.servers),
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                connect_timeout=o.connect_timeout_s,  # type: ignore[arg-type]
                reconnect_time_wait=o.reconnect_wait_s,  # type: ignore[arg-type]
                max_reconnect_attempts=1,
                dont_randomize=len(o.servers) == 1,
                **kwargs,
            )
        except Exception as exc:
            await nc.close()
            cause = self.last_error if isinstance(exc, nerr.NoServersError) else exc
            refusal = cause if _is_refusal(cause) else self.refused
            if refusal is not None:
                raise AdapterAuthError("nats", self.address, f"{refusal}") from exc
            detail = f"{type(cause).__name__}: {cause}" if cause is not None else ""
            raise AdapterUnreachable("nats", self.address, detail) from exc
        nc.options["max_reconnect_attempts"] = o.reconnect_attempts
        self.nc = nc
        return nc

    async def close(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def detail(self) -> str:
        nc = self.nc
        if nc is None:
            return "not connected"
        state = (
            "connected" if nc.is_connected else "reconnecting" if nc.is_reconnecting else "closed"
        )
        parts = [f"{state} to {self.address}", f"reconnects={nc.stats['reconnects']}"]
        if self.last_error is not None:
            parts.append(f"last error: {type(self.last_error).__name__}: {self.last_error}")
        return "; ".join(parts)


def _not_started(kind: str) -> AdapterError:
    return AdapterError(f"nats: {kind} is not started", adapter="nats")


# --- core NATS -----------------------------------------------------------------------------


class _AtMostOnce(Settler):
    """The Settler of a core NATS batch: settling tells nobody (core NATS has no acks)."""

    __slots__ = ()

    def make_ack(self, record: LazyAckRecord) -> Ack:
        return Ack()

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        return None

    def settle_batch(self, batch: RecordBatch, ok: bool) -> None:
        return None


_AT_MOST_ONCE: Final = _AtMostOnce()


class NatsCoreSource(Source):
    """A subscription to ``subject``: at most once, ``ack``/``nack`` settle and do nothing.

    Messages are buffered (up to ``buffer``; more are dropped and counted) until handed out;
    a paused source keeps buffering, since core NATS cannot be asked to hold them.
    """

    def __init__(
        self, opts: NatsOptions, subject: str, *, queue: str = "", buffer: int = 65_536
    ) -> None:
        self._link = _Link(opts)
        self._subject, self._queue, self._buffer = subject, queue, buffer
        self._ready: deque[Msg] = deque()
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._paused = False
        self._seq = 0
        self.dropped = 0

    async def _on_msg(self, msg: Msg) -> None:
        if len(self._ready) >= self._buffer:
            self.dropped += 1
            return
        self._ready.append(msg)
        self._wake.set()

    async def start(self) -> None:
        nc = await self._link.open()
        try:
            with self._link.errors(f"subject {self._subject!r}"):
                self._sub = await nc.subscribe(self._subject, queue=self._queue, cb=self._on_msg)
                await nc.flush()  # the server knows the subscription before start returns
        except BaseException:
            await self._link.close()
            raise

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> Sequence[Record]:
        """A :class:`RecordBatch` of the buffered messages (positions: their number since
        start, from 1), ``[]`` when none came within ``timeout_s``."""
        if self._sub is None:
            raise _not_started("source")
        if self._paused:
            return []
        if not self._ready and timeout_s > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout_s)
            except TimeoutError:
                return []
        ready = self._ready
        msgs = [ready.popleft() for _ in range(min(max_records, len(ready)))]
        if not msgs:
            return []
        first = self._seq + 1
        self._seq += len(msgs)
        payloads, keys, headers = _columns(msgs)
        return RecordBatch(payloads, keys, headers, range(first, self._seq + 1), _AT_MOST_ONCE)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        self._ready.clear()
        try:
            if sub is not None and self._link.connected:
                with self._link.errors():
                    await sub.unsubscribe()
        finally:
            await self._link.close()

    def health(self) -> Health:
        return Health(
            connected=self._sub is not None and self._link.connected,
            detail=f"{self._link.detail()}; buffered={len(self._ready)}; dropped={self.dropped}",
        )


class NatsCoreSink(Sink):
    """Publishes to ``subject``; a batch is confirmed once ``flush()`` saw it reach the server."""

    def __init__(self, opts: NatsOptions, subject: str, *, ack_timeout_s: float = 5.0) -> None:
        self._link = _Link(opts)
        self._subject, self._ack_timeout_s = subject, ack_timeout_s
        self._nc: NATS | None = None

    async def start(self) -> None:
        self._nc = await self._link.open()

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        nc = self._nc
        if nc is None:
            raise _not_started("sink")
        with self._link.errors(f"subject {self._subject!r}"):
            for rec in records:
                await nc.publish(self._subject, rec.payload, headers=encode_headers(rec) or None)
            await nc.flush(timeout=self._ack_timeout_s)  # type: ignore[arg-type]

    async def stop(self) -> None:
        self._nc = None
        await self._link.close()

    def health(self) -> Health:
        return Health(
            connected=self._nc is not None and self._link.connected, detail=self._link.detail()
        )


# --- JetStream -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """The durable pull consumer a :class:`JetStreamSource` reads through."""

    stream: str
    durable: str = "byteor"
    filter_subject: str = ""  # "": every subject of the stream
    ack_wait_s: float = 30.0
    max_ack_pending: int = 5_000
    start: Literal["earliest", "latest"] = "earliest"
    create: bool = True


def _seq_and_pending(reply: str) -> tuple[int, int]:
    """Stream sequence and records still pending for the consumer, from a message's ack
    subject (its reply subject).

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or with ``<domain>.<account hash>`` after ``ACK`` (and a token at the end). nats-py's
    ``msg.metadata`` parses the same, with dataclasses and datetimes: about 7 us a record,
    a fifth of what reading a record costs.
    """
    t = reply.split(".")
    if len(t) == 9:
        return int(t[5]), int(t[8])
    if len(t) >= 11:
        return int(t[7]), int(t[10])
    # nats-py raises its NotJSMessageError for anything else
    meta = Msg(_client=None, reply=reply).metadata  # type: ignore[arg-type]
    return meta.sequence.stream, meta.num_pending


_stored_position = vars(Record)["position"].__get__
#: A JetStream ack and nak, published to a message's reply subject (what nats-py's
#: ``msg.ack()`` and ``msg.nak()`` send).
_ACK, _NAK = b"", Msg.Ack.Nak


class _Fetch(Settler):
    """The messages of one fetch, as the :class:`Settler` in their records' ``ack`` field:
    ``ack_all`` publishes each message's JetStream ack (``nack_all``: its nak) from one
    loop, without a handle per record; of the whole fetch's :class:`_NatsBatch`, from the
    ack subjects it holds (``replies``), without a record made."""

    __slots__ = ("source", "epoch", "replies")

    def __init__(self, source: JetStreamSource, epoch: int, replies: list[str]) -> None:
        self.source, self.epoch, self.replies = source, epoch, replies

    def make_ack(self, record: LazyAckRecord) -> Ack:
        return _MsgAck(self, _stored_position(record))

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> Awaitable[None] | None:
        replies: list[str] = [_stored_position(r) for r in records]
        return self.source._settled(replies, self.epoch, ok)

    def settle_batch(self, batch: RecordBatch, ok: bool) -> Awaitable[None] | None:
        return self.source._settled(self.replies, self.epoch, ok)


class _MsgAck(Ack):
    """A JetStream message's acknowledgement handle, made when ``record.ack`` is first read:
    ``ack`` publishes the message's ack, ``nack`` its nak (no closure)."""

    __slots__ = ("_fetch", "_reply")

    def __init__(self, fetch: _Fetch, reply: str) -> None:
        Ack.__init__(self)
        self._fetch, self._reply = fetch, reply

    async def settled(self, ok: bool) -> None:
        await self._fetch.source._settled([self._reply], self._fetch.epoch, ok)


class _NatsRecord(LazyAckRecord):
    """A JetStream record, handed out with its message's ack subject in the ``position``
    field and its fetch in the ``ack`` field: the stream sequence (parsed from the subject)
    and the ack handle are made when asked for (see :class:`Settler`), and nats-py's
    message object is let go at once. Otherwise a :class:`Record` (a position given to the
    constructor is kept)."""

    __slots__ = ()

    @property
    def position(self) -> object:
        stored = _stored_position(self)
        return _seq_and_pending(stored)[0] if stored.__class__ is str else stored

    @position.setter
    def position(self, value: object) -> None:
        # Reached only through object.__setattr__ (copy, pickle): Record.__setattr__ refuses.
        _store_position(self, value)


_store_position = vars(Record)["position"].__set__


class _NatsBatch(RecordBatch):
    """The messages of one fetch as columns (a :class:`RecordBatch` with one
    :class:`_Fetch`); ``positions`` are the stream sequences, parsed from the ack subjects
    when first read. Its records, when made, are :class:`_NatsRecord` objects holding their
    ack subject in the position slot, as without a batch (what their handle needs)."""

    record_class = _NatsRecord
    __slots__ = ()

    def __init__(
        self,
        payloads: list[bytes],
        keys: list[bytes | None] | None,
        headers: list[Headers] | None,
        fetch: _Fetch,
    ) -> None:
        replies = fetch.replies

        def positions() -> list[int]:
            return [_seq_and_pending(reply)[0] for reply in replies]

        super().__init__(payloads, keys, headers, positions, fetch)

    def slot_positions(self) -> list[str]:
        return cast(_Fetch, self.settler).replies  # a _NatsRecord's position slot


class JetStreamSource(Source):
    """Reads a stream through a durable pull consumer; acks only what was acked downstream."""

    def __init__(self, opts: NatsOptions, consumer: ConsumerSettings, *, batch: int = 500) -> None:
        self._link = _Link(opts)
        self._c, self._batch = consumer, batch
        self._what = f"stream {consumer.stream!r}"
        self._psub: JetStreamContext.PullSubscription | None = None
        self._unsettled: set[str] = set()  # ack subjects of messages handed out, not settled
        self._paused = False
        self._stopped = True
        self._epoch = 0
        self._lag: int | None = None

    async def start(self) -> None:
        c = self._c
        nc = await self._link.open()
        try:
            js = nc.jetstream()
            with self._link.errors(self._what):
                await js.stream_info(c.stream)
            try:
                with self._link.errors(self._what):
                    info: jsapi.ConsumerInfo | None = await js.consumer_info(c.stream, c.durable)
            except AdapterNotFound:
                info = None
            if info is None and not c.create:
                raise AdapterNotFound(
                    "nats", self._link.address, f"consumer {c.durable!r} of stream {c.stream!r}"
                )
            if info is not None:
                self._check_existing(info)
            if c.create:
                info = await self._create_or_update(js, info)
            assert info is not None
            self._lag = info.num_pending
            with self._link.errors(self._what):
                self._psub = await js.pull_subscribe_bind(durable=c.durable, stream=c.stream)
        except BaseException:
            await self._link.close()
            raise
        self._stopped = False
        self._epoch += 1

    def _check_existing(self, info: jsapi.ConsumerInfo) -> None:
        cfg, c = info.config, self._c
        problem = ""
        if cfg.deliver_subject:
            problem = "is a push consumer"
        elif cfg.ack_policy != jsapi.AckPolicy.EXPLICIT:
            problem = f"has ack policy {cfg.ack_policy}, not explicit"
        elif not c.create and (cfg.filter_subject or "") != c.filter_subject:
            problem = f"filters {cfg.filter_subject!r}, not {c.filter_subject!r}"
        if problem:
            raise AdapterConfigError(
                f"nats: durable consumer {c.durable!r} of stream {c.stream!r} on "
                f"{self._link.address} {problem}; delete it or choose another durable name",
                adapter="nats",
                address=self._link.address,
            )

    async def _create_or_update(
        self, js: JetStreamContext, info: jsapi.ConsumerInfo | None
    ) -> jsapi.ConsumerInfo:
        c = self._c
        config = jsapi.ConsumerConfig(
            durable_name=c.durable,
            ack_policy=jsapi.AckPolicy.EXPLICIT,
            ack_wait=c.ack_wait_s,
            max_ack_pending=c.max_ack_pending,
            filter_subject=c.filter_subject or None,
            deliver_policy=(
                jsapi.DeliverPolicy.ALL if c.start == "earliest" else jsapi.DeliverPolicy.NEW
            ),
        )
        if info is not None:  # an existing consumer keeps where it starts from
            config.deliver_policy = info.config.deliver_policy
            config.opt_start_seq = info.config.opt_start_seq
            config.opt_start_time = info.config.opt_start_time
        try:
            with self._link.errors(self._what):
                return await js.add_consumer(c.stream, config)
        except AdapterNotFound:
            raise
        except AdapterError as exc:
            if exc.retriable:
                raise
            raise AdapterConfigError(
                f"nats: cannot create or update durable consumer {c.durable!r} of stream "
                f"{c.stream!r} on {self._link.address} ({exc.__cause__}); delete it or choose "
                f"another durable name",
                adapter="nats",
                address=self._link.address,
            ) from exc

    def _handed(self, msgs: list[Msg]) -> Sequence[Record]:
        """A fetch's messages as one batch of columns: payloads, keys and headers (None when
        no message has any), and in its :class:`_Fetch` their ack subjects (each record's
        stream sequence and handle are made from it when read). nats-py's message objects
        are let go once the columns are made: objects that outlive the batch make the
        garbage collector's work."""
        if not msgs:
            return []
        replies: list[str] = list(map(_reply_of, msgs))
        self._lag = _seq_and_pending(replies[-1])[1]
        self._unsettled.update(replies)
        payloads, keys, headers = _columns(msgs)
        msgs.clear()
        return _NatsBatch(payloads, keys, headers, _Fetch(self, self._epoch, replies))

    async def _settled(self, replies: Sequence[str], epoch: int, ok: bool) -> None:
        """Publish the ack (``ok``) or nak of each message, by its ack subject."""
        if self._stopped or epoch != self._epoch:
            return  # stop nak'ed them already: they will be delivered again
        nc = self._link.nc
        if nc is None:
            raise _not_started("source")
        self._unsettled.difference_update(replies)
        publish, payload = nc.publish, _ACK if ok else _NAK
        try:
            for reply in replies:
                await publish(reply, payload)
        except Exception:
            with self._link.errors(self._what):  # (no context manager on the happy path)
                raise

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> Sequence[Record]:
        """A :class:`RecordBatch` of one fetch, ``[]`` when nothing came within
        ``timeout_s``."""
        psub = self._psub
        if psub is None or self._stopped:
            raise _not_started("source")
        if self._paused or max_records < 1:
            return []
        with self._link.errors(self._what):
            try:
                msgs = await psub.fetch(
                    min(max_records, self._batch), timeout=max(timeout_s, FETCH_MIN_S)
                )
            except TimeoutError:  # nats-py raises its own subclass, and sometimes the builtin
                # Nothing came in time: an empty answer, also while nats-py reconnects
                # (once it gives up, the fetch raises ConnectionClosedError instead).
                return []
        return self._handed(msgs)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    async def stop(self) -> None:
        """Nak what was handed out and not settled, make sure the acks reached the server,
        then unsubscribe and close (we never ``drain()``: it hangs on a bound pull
        subscription). With the server away nothing can be sent: the source says so once,
        on ``byteor.adapters.nats``, and closes; JetStream delivers those records again."""
        if self._stopped:
            return
        self._stopped = True
        psub, self._psub = self._psub, None
        held, self._unsettled = list(self._unsettled), set()
        nc = self._link.nc
        try:
            failed = "not connected"
            if nc is not None and nc.is_connected:
                try:
                    for reply in held:
                        await nc.publish(reply, _NAK)
                    if psub is not None:
                        await psub.unsubscribe()
                    await nc.flush(timeout=FLUSH_TIMEOUT_S)  # type: ignore[arg-type]
                    failed = ""
                except (nerr.Error, OSError) as exc:
                    failed = type(exc).__name__
            if failed and nc is not None:
                log.warning(
                    "nats %s: stopped without reaching the server (%s): acks not yet sent, "
                    "and the %d records handed out and not settled, will be delivered again "
                    "once ack_wait runs out",
                    self._link.address,
                    failed,
                    len(held),
                )
        finally:
            await self._link.close()

    def health(self) -> Health:
        return Health(
            connected=not self._stopped and self._link.connected,
            lag=self._lag,
            detail=self._link.detail(),
        )


class JetStreamSink(Sink):
    """Publishes a batch and returns once the stream acknowledged every record.

    Each record is published with a reply subject of our own (one wildcard subscription per
    sink); the stream answers there with a PubAck or an error, and the server with "no
    responders" when no stream captures the subject. (nats-py's ``publish_async`` leaves a
    refused record's future unresolved, so we collect the answers ourselves.)

    ``stream`` (optional) is the stream the records must land in: the server refuses them
    otherwise. ``duplicates`` counts records the stream already held (same ``Nats-Msg-Id``).
    """

    def __init__(
        self,
        opts: NatsOptions,
        subject: str,
        *,
        stream: str = "",
        msg_id_from: str = "hash",
        ack_timeout_s: float = 5.0,
    ) -> None:
        if not _valid_msg_id_source(msg_id_from):
            raise AdapterConfigError(
                f"nats: msg_id must be hash, none or header:NAME, got {msg_id_from!r}",
                adapter="nats",
            )
        self._link = _Link(opts)
        self._subject, self._stream = subject, stream
        self._msg_id_from, self._ack_timeout_s = msg_id_from, ack_timeout_s
        self._what = f"a stream for subject {subject!r}"
        self._nc: NATS | None = None
        self._inbox = ""
        self._sent = 0
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self.duplicates = 0

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._waiting.pop(msg.subject, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def start(self) -> None:
        nc = await self._link.open()
        try:
            with self._link.errors():
                self._inbox = nc.new_inbox()
                await nc.subscribe(self._inbox + ".*", cb=self._on_reply)
        except BaseException:
            await self._link.close()
            raise
        self._nc = nc

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        nc = self._nc
        if nc is None:
            raise _not_started("sink")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Msg]] = []
        try:
            with self._link.errors(self._what):
                for rec in records:
                    headers = encode_headers(rec)
                    mid = msg_id(rec, self._msg_id_from)
                    if mid is not None:
                        headers[MSG_ID_HEADER] = mid
                    if self._stream:
                        headers[_EXPECTED_STREAM] = self._stream
                    self._sent += 1
                    reply = f"{self._inbox}.{self._sent}"
                    fut: asyncio.Future[Msg] = loop.create_future()
                    self._waiting[reply] = fut
                    futures.append(fut)
                    await nc.publish(
                        self._subject, rec.payload, reply=reply, headers=headers or None
                    )
            if futures:
                await asyncio.wait(futures, timeout=self._ack_timeout_s)
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()
            self._waiting.clear()
        self._check(futures, len(records))

    def _check(self, futures: Sequence[asyncio.Future[Msg]], n: int) -> None:
        """Raise unless every record got a PubAck; count the duplicates."""
        missing = refused = 0
        first: AdapterError | None = None
        duplicates = 0
        for fut in futures:
            if fut.cancelled():
                missing += 1
                continue
            msg = fut.result()
            data = msg.data
            if data.startswith(b'{"stream":') and b'"duplicate"' not in data:
                # A plain PubAck, {"stream":..., "seq":...} (the server writes an error as
                # {"error":...}, and the duplicate flag as a field that is parsed below).
                # Not parsing the JSON of every PubAck saves a sixth of a sink's time per
                # record; strings in it are JSON-escaped, so a stream's name cannot match.
                continue
            status = (msg.headers or {}).get("Status")
            if status == "503":  # no responders: no stream captures the subject
                raise AdapterNotFound("nats", self._link.address, self._what)
            reply = json.loads(data) if data else {}
            error = reply.get("error")
            if error is None and "seq" in reply:
                duplicates += bool(reply.get("duplicate"))
                continue
            refused += 1
            if first is None:
                error = error or {}
                code = error.get("code")
                why = error.get("description", f"unexpected reply {reply}")
                first = AdapterError(
                    f"nats: the stream refused records for subject {self._subject!r} on "
                    f"{self._link.address}: {why} (code {code}, err_code "
                    f"{error.get('err_code')}); check the stream's limits and the sink's "
                    f"'stream'",
                    adapter="nats",
                    address=self._link.address,
                    retriable=code is None or code >= 500,
                )
        self.duplicates += duplicates
        if refused or missing:
            log.warning(
                "nats %s: %d of %d records not acknowledged (%d refused, %d timed out)",
                self._link.address,
                refused + missing,
                n,
                refused,
                missing,
            )
        if first is not None:
            raise first
        if missing:
            raise AdapterUnreachable(
                "nats",
                self._link.address,
                f"no PubAck for {missing} of {n} records within {self._ack_timeout_s} s",
            )

    async def stop(self) -> None:
        self._nc = None
        await self._link.close()

    def health(self) -> Health:
        return Health(
            connected=self._nc is not None and self._link.connected,
            detail=f"{self._link.detail()}; duplicates={self.duplicates}",
        )


# --- the adapter ---------------------------------------------------------------------------

_MODES: Final = ("jetstream", "core")
_STARTS: Final = ("earliest", "latest")

_CORE = Capabilities(
    source=Delivery("best-effort", "per-subject", "core NATS: at most once, nothing is kept"),
    sink=Delivery("best-effort", "per-subject", "flushed to the server; kept only if subscribed"),
    max_batch=65_536,
    backpressure="none",
)


class NatsAdapter(Adapter):
    name = "nats"
    summary = "NATS subjects and JetStream streams"
    extra = "nats"
    client_module = "nats"
    config = ConfigSchema(
        "nats",
        (
            ConfigField("servers", str, "nats://127.0.0.1:4222", "nats:// URLs, comma-separated"),
            ConfigField("subject", str, doc="subject (jetstream source: filter, '>' = all)"),
            ConfigField("mode", str, "jetstream", "at least once, or core: at most once", _MODES),
            ConfigField("stream", str, "", "jetstream: the stream (a source needs it)"),
            ConfigField("durable", str, "byteor", "jetstream source: durable consumer name"),
            ConfigField("create", bool, True, "jetstream source: create/update the consumer"),
            ConfigField("start", str, "earliest", "where a new consumer starts", _STARTS),
            ConfigField("ack_wait_s", float, 30.0, "redeliver what a dead reader held after"),
            ConfigField("max_ack_pending", int, 5_000, "most records out and not yet acked"),
            ConfigField("batch", int, 500, "jetstream source: most records one fetch asks for"),
            ConfigField("queue", str, "", "core source: queue group sharing the messages"),
            ConfigField("buffer", int, 65_536, "core source: records held (more are dropped)"),
            ConfigField("msg_id", str, "hash", "Nats-Msg-Id from hash, header:NAME or none"),
            ConfigField("ack_timeout_s", float, 5.0, "sink: longest wait for confirmation"),
            ConfigField("user", str, "", "user name"),
            ConfigField("password", str, "", "password"),
            ConfigField("token", str, "", "auth token"),
            ConfigField("creds", str, "", "path of a .creds file (JWT and NKey)"),
            ConfigField("name", str, "", "connection name shown by the server"),
            ConfigField("connect_timeout_s", float, 2.0, "per connection attempt"),
            ConfigField("reconnect_wait_s", float, 1.0, "between attempts to one server"),
            ConfigField("reconnect_attempts", int, 60, "per server once connected (-1: ever)"),
        ),
    )
    #: As declared for the default mode, ``jetstream``; see :meth:`capabilities_for`.
    capabilities = Capabilities(
        source=Delivery(
            "at-least-once",
            "per-subject",
            "mode=jetstream: acked after every sink confirmed (core: at most once)",
        ),
        sink=Delivery(
            "at-least-once",
            "per-subject",
            "mode=jetstream: every PubAck received (core: best effort)",
        ),
        max_batch=10_000,
        backpressure="pause",
    )

    @classmethod
    def capabilities_for(cls, mode: str) -> Capabilities:
        """What the adapter promises in ``mode`` (core NATS is at most once)."""
        return _CORE if mode == "core" else cls.capabilities

    def capabilities_with(self, config: Mapping[str, ConfigValue]) -> Capabilities:
        return self.capabilities_for(str(config["mode"]))

    @staticmethod
    def options(config: Mapping[str, ConfigValue]) -> NatsOptions:
        return NatsOptions(
            servers=tuple(s.strip() for s in str(config["servers"]).split(",") if s.strip()),
            user=str(config["user"]),
            password=str(config["password"]),
            token=str(config["token"]),
            creds=str(config["creds"]),
            name=str(config["name"]),
            connect_timeout_s=float(config["connect_timeout_s"]),
            reconnect_wait_s=float(config["reconnect_wait_s"]),
            reconnect_attempts=int(config["reconnect_attempts"]),
        )

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        opts = self.options(config)
        if config["mode"] == "core":
            return NatsCoreSource(
                opts,
                str(config["subject"]),
                queue=str(config["queue"]),
                buffer=int(config["buffer"]),
            )
        if not config["stream"]:
            raise AdapterConfigError(
                "nats: a jetstream source needs config 'stream' (the stream to read)",
                adapter="nats",
            )
        start: Literal["earliest", "latest"] = (
            "latest" if config["start"] == "latest" else "earliest"
        )
        return JetStreamSource(
            opts,
            ConsumerSettings(
                stream=str(config["stream"]),
                durable=str(config["durable"]),
                # A spec cannot hold an empty value: '>' (every subject) is "no filter".
                filter_subject="" if config["subject"] == ">" else str(config["subject"]),
                ack_wait_s=float(config["ack_wait_s"]),
                max_ack_pending=int(config["max_ack_pending"]),
                start=start,
                create=bool(config["create"]),
            ),
            batch=int(config["batch"]),
        )

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        opts = self.options(config)
        if config["mode"] == "core":
            return NatsCoreSink(
                opts, str(config["subject"]), ack_timeout_s=float(config["ack_timeout_s"])
            )
        return JetStreamSink(
            opts,
            str(config["subject"]),
            stream=str(config["stream"]),
            msg_id_from=str(config["msg_id"]),
            ack_timeout_s=float(config["ack_timeout_s"]),
        )
