"""``adapter = redis``: Redis Streams through consumer groups (``pip install 'byteor[redis]'``).

Source: ``XREADGROUP`` as one consumer of a group. On start it first takes back what is
pending — its own unacknowledged entries (a restart under the same consumer name) and, via
``XAUTOCLAIM``, entries another consumer has held idle for ``claim_idle_ms`` (a dead one).
``ack`` queues an ``XACK`` (sent in one pipeline with the next read, or at stop); ``nack``
hands the entry out again. Anything unacknowledged stays in the group's pending list, so a
crash loses nothing and redelivers only that. Sink: ``XADD`` in one pipeline per batch, optionally
trimmed with ``MAXLEN``; a batch is confirmed when Redis returned an id for every entry.

An entry holds the fields ``p`` (payload), ``k`` (key, when there is one) and ``h``
(headers: per header a 2-byte name length, the name, a 4-byte value length, the value).

Theory of operation (batches). Each read is handed out as one :class:`RecordBatch` of
columns made from the reply's entries at C level (payloads; keys and headers only when an entry
has them; the ids only when a record is made), with one :class:`_Read` for all of them. Once
started, the source's client takes XREADGROUP's reply as it came (:func:`_raw_streams` in
place of redis-py's response callback, which makes a dict of every entry's fields): an entry
of our sink's is ``[id, [b"p", payload]]``, its payload taken by ``itemgetter``; an entry with
other fields is made ``(id, fields)`` and read the general way. ``ack_all`` of the whole
batch queues its ids for the XACK at C level (one ``extend`` over the entries), ``nack_all``
puts the entries back, ids and fields, with no record made; records settled one by one, or
some of a batch's records, go the per-record way.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rex

from byteor.adapters._backoff import Backoff, retry
from byteor.adapters._config import ConfigField, ConfigSchema, ConfigValue
from byteor.adapters._contract import Adapter, Capabilities, Health, Sink, Source
from byteor.adapters._errors import (
    AdapterAuthError,
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

__all__ = ["RedisAdapter", "RedisSource", "RedisSink", "encode_entry", "decode_entry"]

_ERRORS: dict[type[BaseException], type[AdapterError]] = {
    rex.AuthenticationError: AdapterAuthError,
    rex.ConnectionError: AdapterUnreachable,
    rex.TimeoutError: AdapterUnreachable,
    OSError: AdapterUnreachable,
    rex.ResponseError: AdapterError,
}

T = TypeVar("T")

#: Reconnecting a source: about 25 s of attempts before the error surfaces.
RECONNECT = Backoff(initial_s=0.05, max_s=2.0, max_attempts=20)

_H = struct.Struct(">H")
_V = struct.Struct(">I")


def encode_entry(rec: OutRecord) -> dict[bytes, bytes]:
    fields = {b"p": rec.payload}
    if rec.key is not None:
        fields[b"k"] = rec.key
    if rec.headers:
        parts: list[bytes] = []
        for name, value in rec.headers:
            n = name.encode()
            parts += [_H.pack(len(n)), n, _V.pack(len(value)), value]
        fields[b"h"] = b"".join(parts)
    return fields


def _fields(fields: Mapping[bytes, bytes]) -> tuple[bytes, bytes | None, Headers]:
    """Payload, key and headers of an entry's fields."""
    return fields.get(b"p", b""), fields.get(b"k"), _headers(fields.get(b"h"))


def _headers(raw: bytes | None) -> Headers:
    """The headers of an entry's ``h`` field (absent or empty: none)."""
    if not raw:
        return ()
    headers: list[tuple[str, bytes]] = []
    at = 0
    while at < len(raw):
        (nl,) = _H.unpack_from(raw, at)
        at += 2
        name = raw[at : at + nl].decode()
        at += nl
        (vl,) = _V.unpack_from(raw, at)
        at += 4
        headers.append((name, raw[at : at + vl]))
        at += vl
    return tuple(headers)


def decode_entry(fields: Mapping[bytes, bytes]) -> OutRecord:
    return OutRecord(*_fields(fields))


_Entry = tuple[bytes, Mapping[bytes, bytes]]
#: An entry as XREADGROUP's reply holds it: ``[id, [name, value, name, value, ...]]``.
_RawEntry = Sequence[Any]
_id_of: Callable[[_Entry | _RawEntry], bytes] = itemgetter(0)
_fields_of: Callable[[_Entry], Mapping[bytes, bytes]] = itemgetter(1)
_flat_of: Callable[[_RawEntry], Sequence[bytes]] = itemgetter(1)
_payload_field: Callable[[Mapping[bytes, bytes]], bytes] = itemgetter(b"p")
_first: Callable[[Sequence[bytes]], bytes] = itemgetter(0)
_second: Callable[[Sequence[bytes]], bytes] = itemgetter(1)


def _raw_streams(response: Any, **options: Any) -> list[list[_RawEntry]]:
    """The response callback our source's client uses for XREADGROUP once started: per
    stream read, its entries as the reply holds them (redis-py's own callback makes a dict
    of every entry's fields, which a read of our sink's payload-only entries never needs)."""
    if response is None:
        return []
    if isinstance(response, dict):  # RESP3: a map of stream to entries
        return list(response.values())
    return [stream[1] for stream in response]


def _as_entry(raw: _RawEntry) -> _Entry:
    """An entry of a reply as ``(id, fields)``."""
    flat = raw[1]
    return raw[0], dict(zip(flat[::2], flat[1::2], strict=True))


def _raw_columns(
    entries: Sequence[_RawEntry],
) -> tuple[list[bytes], list[bytes | None] | None, list[Headers] | None]:
    """:func:`_columns` of entries as XREADGROUP's reply holds them."""
    flat = list(map(_flat_of, entries))
    if set(map(len, flat)) == {2}:  # one field each: payload only, what our sink writes
        names = list(map(_first, flat))
        if names.count(b"p") == len(names):
            return list(map(_second, flat)), None, None
    return _columns(list(map(_as_entry, entries)))


def _columns(
    entries: Sequence[_Entry],
) -> tuple[list[bytes], list[bytes | None] | None, list[Headers] | None]:
    """Payloads, keys (None when no entry has one) and headers (None when no entry has any)
    of ``(id, fields)`` entries."""
    fields = list(map(_fields_of, entries))
    if set(map(len, fields)) == {1}:  # one field each: payload only, what our sink writes
        try:
            return list(map(_payload_field, fields)), None, None
        except KeyError:  # a foreign entry's one field: read it the general way
            pass
    payloads = [f.get(b"p", b"") for f in fields]
    keys: list[bytes | None] | None = [f.get(b"k") for f in fields]
    if keys is not None and keys.count(None) == len(keys):
        keys = None
    raw = [f.get(b"h") for f in fields]
    return payloads, keys, [_headers(h) for h in raw] if any(raw) else None


class _Read(Settler):
    """The entries of one ``next_batch``, as the :class:`Settler` in their records' ``ack``
    field (the record's position is the entry id): acknowledging records queues their ids
    for the XACK that goes with the next read, without a handle per record; ``entries`` are
    the read's ``(id, fields)`` as the client gave them, for settling the whole batch."""

    __slots__ = ("source", "epoch", "entries", "raw")

    def __init__(
        self,
        source: RedisSource,
        epoch: int,
        entries: Sequence[_Entry] | Sequence[_RawEntry],
        raw: bool,
    ) -> None:
        self.source, self.epoch, self.entries, self.raw = source, epoch, entries, raw

    def make_ack(self, record: LazyAckRecord) -> Ack:
        return _EntryAck(self, record)

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        source = self.source
        if source._stopped or self.epoch != source._epoch:
            return  # still pending in Redis: it will be delivered again
        ids = cast(list[bytes], [r.position for r in records])
        if ok:
            source._to_ack += ids
        else:  # taken back with what they hold (other fields of a foreign entry are unused)
            source._ready.extend(zip(ids, map(encode_entry, map(Record.out, records)), strict=True))

    def settle_batch(self, batch: RecordBatch, ok: bool) -> None:
        """The whole read settled: its ids queued for the XACK, or its entries (ids and
        fields as read) taken back, with no record made."""
        source = self.source
        if source._stopped or self.epoch != source._epoch:
            return  # still pending in Redis: it will be delivered again
        if ok:
            source._to_ack.extend(map(_id_of, self.entries))
        elif self.raw:
            source._ready.extend(map(_as_entry, cast(Sequence[_RawEntry], self.entries)))
        else:
            source._ready.extend(cast(Sequence[_Entry], self.entries))


class _EntryAck(Ack):
    """An entry's acknowledgement handle, made when ``record.ack`` is first read: settling
    tells its source, without I/O (the XACK goes with the next read), so ``settled`` is a
    plain method and there is no closure per record."""

    __slots__ = ("_read", "_eid", "_entry")

    def __init__(self, read: _Read, record: Record) -> None:
        Ack.__init__(self)
        self._read, self._eid, self._entry = read, cast(bytes, record.position), record.out()

    def settled(self, ok: bool) -> None:
        source = self._read.source
        if source._stopped or self._read.epoch != source._epoch:
            return  # still pending in Redis: it will be delivered again
        if ok:
            source._to_ack.append(self._eid)
        else:
            source._ready.append((self._eid, encode_entry(self._entry)))


def _address(url: str) -> str:
    """``host:port`` of a redis:// URL (never the password)."""
    u = urlsplit(url)
    return f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"


class RedisSource(Source):
    def __init__(
        self,
        url: str,
        stream: str,
        group: str,
        consumer: str,
        *,
        start_at: str = "earliest",
        create: bool = True,
        claim_idle_ms: int = 30_000,
        backoff: Backoff = RECONNECT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._backoff, self._sleep = backoff, sleep
        self._url, self._stream, self._group, self._consumer = url, stream, group, consumer
        self._start_at, self._create, self._claim_idle_ms = start_at, create, claim_idle_ms
        self._address = _address(url)
        self._client: aioredis.Redis | None = None
        self._ready: deque[tuple[bytes, Mapping[bytes, bytes]]] = deque()  # taken back, nacked
        self._to_ack: list[bytes] = []
        self._paused = False
        self._stopped = False
        self._epoch = 0

    def _errors(self) -> Any:
        return map_errors("redis", self._address, _ERRORS, what=f"stream {self._stream!r}")

    async def start(self) -> None:
        self._stopped = False
        self._epoch += 1
        client = aioredis.from_url(self._url)
        with self._errors():
            await client.ping()
            if not self._create and not await client.exists(self._stream):
                await client.aclose()
                raise AdapterNotFound("redis", self._address, f"stream {self._stream!r}")
            try:
                await client.xgroup_create(
                    self._stream,
                    self._group,
                    id="0" if self._start_at == "earliest" else "$",
                    mkstream=self._create,
                )
            except rex.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            # Our own pending entries (a restart under the same name), then a dead peer's.
            own: Any = await client.xreadgroup(
                self._group, self._consumer, {self._stream: "0"}, count=None
            )
            for _, entries in own or []:
                self._ready.extend((eid, f) for eid, f in entries if f)
            cursor: bytes | str = "0-0"
            while True:
                claim: Any = await client.xautoclaim(
                    self._stream,
                    self._group,
                    self._consumer,
                    self._claim_idle_ms,
                    start_id=cursor,
                    count=1000,
                )
                cursor, claimed = claim[0], claim[1]
                self._ready.extend((eid, f) for eid, f in claimed if f)
                if cursor in (b"0-0", "0-0"):
                    break
        # From here on, reads come as the reply holds them (see _raw_streams).
        client.set_response_callback("XREADGROUP", _raw_streams)
        self._client = client

    def _batch(
        self, entries: Sequence[_Entry] | Sequence[_RawEntry], raw: bool
    ) -> Sequence[Record]:
        """Entries, as read from the stream (``raw``: as the reply holds them) or taken back
        (``(id, fields)``), as one batch of columns with a :class:`_Read` for all of them
        (the ids read when a record is made)."""
        if not entries:
            return []
        if raw:
            payloads, keys, headers = _raw_columns(cast(Sequence[_RawEntry], entries))
        else:
            payloads, keys, headers = _columns(cast(Sequence[_Entry], entries))

        def ids() -> list[bytes]:
            return list(map(_id_of, entries))

        return RecordBatch(payloads, keys, headers, ids, _Read(self, self._epoch, entries, raw))

    async def _call(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """One command, retried with backoff while the server is unreachable (redis-py
        opens a fresh connection on the next attempt)."""
        client = self._client
        if client is None:
            raise AdapterError("redis: source is not started", adapter="redis")

        async def once() -> T:
            with self._errors():
                return await fn(client)

        return await retry(once, self._backoff, sleep=self._sleep)

    async def _flush_acks(self) -> None:
        if self._to_ack and self._client is not None:
            ids = list(self._to_ack)
            await self._call(lambda c: c.xack(self._stream, self._group, *ids))
            del self._to_ack[: len(ids)]  # only once Redis has them

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> Sequence[Record]:
        """A :class:`RecordBatch` of one read (or of entries taken back), ``[]`` when nothing
        is there within ``timeout_s``."""
        client = self._client
        if client is None or self._stopped:
            raise AdapterError("redis: source is not started", adapter="redis")
        if self._paused or self._ready:
            await self._flush_acks()
            if self._paused:
                return []
            ready = self._ready
            taken = [ready.popleft() for _ in range(min(max_records, len(ready)))]
            return self._batch(taken, raw=False)
        block = int(timeout_s * 1000) if timeout_s > 0 else None
        ids = list(self._to_ack)

        async def read(c: aioredis.Redis) -> Any:
            streams: dict[Any, Any] = {self._stream: ">"}
            if not ids:
                return await c.xreadgroup(
                    self._group, self._consumer, streams, count=max_records, block=block
                )
            # The acks settled since the last read travel with this one: one round trip.
            pipe = c.pipeline(transaction=False)
            pipe.xack(self._stream, self._group, *ids)
            pipe.xreadgroup(self._group, self._consumer, streams, count=max_records, block=block)
            return (await pipe.execute())[1]

        reply: Any = await self._call(read)
        del self._to_ack[: len(ids)]  # only once Redis has them
        if not reply:
            return []
        if len(reply) == 1:  # one stream read: its entries as they came
            return self._batch(reply[0], raw=True)
        return self._batch([e for entries in reply for e in entries], raw=True)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    async def stop(self) -> None:
        if self._stopped:
            return
        client = self._client
        try:
            await self._flush_acks()
        finally:
            self._stopped = True
            self._ready.clear()
            self._client = None
            if client is not None:
                await client.aclose()

    def health(self) -> Health:
        return Health(connected=self._client is not None and not self._stopped)


class RedisSink(Sink):
    def __init__(self, url: str, stream: str, *, maxlen: int = 0, approximate: bool = True) -> None:
        self._url, self._stream = url, stream
        self._maxlen, self._approximate = maxlen, approximate
        self._address = _address(url)
        self._client: aioredis.Redis | None = None

    async def start(self) -> None:
        client = aioredis.from_url(self._url)
        with map_errors("redis", self._address, _ERRORS):
            await client.ping()
        self._client = client

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        client = self._client
        if client is None:
            raise AdapterError("redis: sink is not started", adapter="redis")
        maxlen = self._maxlen or None
        with map_errors("redis", self._address, _ERRORS, what=f"stream {self._stream!r}"):
            pipe = client.pipeline(transaction=False)
            for rec in records:
                pipe.xadd(
                    self._stream,
                    encode_entry(rec),  # type: ignore[arg-type]
                    maxlen=maxlen,
                    approximate=self._approximate,
                )
            ids = await pipe.execute()
        if len(ids) != len(records) or not all(ids):
            raise AdapterError(
                f"redis: XADD to {self._stream!r} confirmed {len(ids)} of {len(records)}",
                adapter="redis",
                address=self._address,
                retriable=True,
            )

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def health(self) -> Health:
        return Health(connected=self._client is not None)


class RedisAdapter(Adapter):
    name = "redis"
    summary = "Redis Streams (consumer groups)"
    extra = "redis"
    client_module = "redis"
    config = ConfigSchema(
        "redis",
        (
            ConfigField("url", str, "redis://127.0.0.1:6379", "redis:// URL of the server"),
            ConfigField("stream", str, doc="the stream key"),
            ConfigField("group", str, "byteor", "consumer group of a source"),
            ConfigField("consumer", str, "", "consumer name (default: host-pid)"),
            ConfigField(
                "start", str, "earliest", "where a new group starts", ("earliest", "latest")
            ),
            ConfigField("create", bool, True, "create the stream and group if missing"),
            ConfigField("claim_idle_ms", int, 30_000, "take over entries idle this long"),
            ConfigField("maxlen", int, 0, "sink: trim the stream to about this many (0: no)"),
            ConfigField("approximate", bool, True, "sink: trim with ~ (cheaper)"),
        ),
    )
    capabilities = Capabilities(
        source=Delivery("at-least-once", "per-stream", "XACK after every sink confirmed"),
        sink=Delivery("at-least-once", "per-stream", "XADD returned an id"),
        max_batch=10_000,
        backpressure="pause",
    )

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        consumer = str(config["consumer"]) or f"{socket.gethostname()}-{os.getpid()}"
        return RedisSource(
            str(config["url"]),
            str(config["stream"]),
            str(config["group"]),
            consumer,
            start_at=str(config["start"]),
            create=bool(config["create"]),
            claim_idle_ms=int(config["claim_idle_ms"]),
        )

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        return RedisSink(
            str(config["url"]),
            str(config["stream"]),
            maxlen=int(config["maxlen"]),
            approximate=bool(config["approximate"]),
        )
