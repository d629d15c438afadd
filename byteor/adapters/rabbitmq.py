"""``adapter = rabbitmq``: RabbitMQ queues over AMQP 0-9-1 (``pip install 'byteor[rabbitmq]'``).

Theory of operation.

Source: one consumer on a queue, manual acknowledgement, with ``basic.qos(prefetch)``
bounding how many messages the broker hands this consumer before it acknowledges any — the
prefetch is the credit, and it is the back-pressure: nothing more arrives while ``prefetch``
messages are buffered or out downstream. Deliveries land in a buffer of columns (payloads,
keys, headers, and each delivery's ``tag << 1 | redelivered``; aio-pika's message object is
let go at once); :meth:`next_batch` hands them out as one :class:`~byteor.adapters.RecordBatch`
— usually the buffer's columns themselves, swapped for empty ones — with one
:class:`~byteor.adapters.Settler` for the read (records, and their :class:`AmqpPosition`, are
made only when read). ``ack`` (or ``ack_all`` of a batch) queues the delivery tags; the queue is
flushed at the next :meth:`next_batch` (a settle wakes a waiting one) or at stop, as one
``basic.ack(multiple=True)`` for the longest run of tags with nothing unsettled below it, and
single acks for the rest. ``nack`` is sent at once as ``basic.nack(requeue=True)``, so a later
multiple-ack never covers it. ``pause`` only stops handing out: the buffer is already bounded
by the prefetch, and a ``basic.cancel`` / ``basic.consume`` pair per pause would cost two round
trips each time back-pressure flips while leaving the delivered messages with this consumer
anyway. Stop flushes settled acks and closes the connection; the broker requeues everything
still unacknowledged.

Delivery tags belong to a channel. After the connection drops, aio-pika's robust connection
reconnects (waits grow with the outage, see :class:`_BackoffConnection`), reopens the channel,
sets the prefetch and consumes again; the broker has requeued what the old channel held.
Buffered deliveries from the old channel are dropped and settling a record from it is a no-op:
its redelivery (``redelivered=True``) is already on the way.

Sink: a channel with publisher confirms and ``on_return_raises``; every message is published
``mandatory`` and persistent, so a message no queue takes comes back and raises
(:class:`AdapterNotFound` naming exchange and routing key) instead of vanishing. A batch is
confirmed when the broker confirmed every message in it. The routing key is ``routing_key``
when configured, the queue name on the default exchange, else the record's key.

Mapping: a record's key is the routing key; headers are the AMQP headers, bytes values as
byte arrays (a name given more than once becomes an array of its values, read back as that
many headers); values of other types read back as their text; the position is the delivery
tag and the redelivered flag (:class:`AmqpPosition`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from typing import Any, NamedTuple, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    ConnectionParameter,
)
from aio_pika.robust_connection import RobustConnection
from aiormq.connection import parse_timeout
from yarl import URL

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
    "RabbitMQAdapter",
    "RabbitMQSource",
    "RabbitMQSink",
    "AmqpPosition",
    "encode_headers",
    "decode_headers",
    "reconnect_delay",
]

log = logging.getLogger("byteor.adapters.rabbitmq")

_ERRORS: dict[type[BaseException], type[AdapterError]] = {
    aiormq.exceptions.ProbableAuthenticationError: AdapterAuthError,
    aiormq.exceptions.AuthenticationError: AdapterAuthError,
    aiormq.exceptions.ChannelAccessRefused: AdapterAuthError,
    aiormq.exceptions.ConnectionNotAllowed: AdapterAuthError,  # e.g. no access to the vhost
    aiormq.exceptions.ChannelNotFoundEntity: AdapterNotFound,
    aiormq.exceptions.AMQPConnectionError: AdapterUnreachable,
    aiormq.exceptions.ChannelInvalidStateError: AdapterUnreachable,  # closed: reconnecting
    OSError: AdapterUnreachable,  # refused, reset, and connect timeouts (TimeoutError)
    aiormq.exceptions.AMQPError: AdapterError,
}

#: Raised by an ack or nack on a channel that closed (its deliveries are requeued).
_CHANNEL_GONE = (aiormq.exceptions.ChannelInvalidStateError, aiormq.exceptions.AMQPError)

#: The longest routing key AMQP carries (a short string).
MAX_ROUTING_KEY = 255


class AmqpPosition(NamedTuple):
    """Where a delivery sits: its tag on the channel, and whether the broker sent it before."""

    delivery_tag: int
    redelivered: bool


_HeaderValue = bytearray | list[bytearray]


def encode_headers(headers: Headers) -> dict[str, _HeaderValue]:
    """AMQP headers of a record: bytes as byte arrays, a repeated name as an array."""
    table: dict[str, _HeaderValue] = {}
    for name, value in headers:
        old = table.get(name)
        if old is None:
            table[name] = bytearray(value)
        elif isinstance(old, list):
            old.append(bytearray(value))
        else:
            table[name] = [old, bytearray(value)]
    return table


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()  # numbers, booleans, timestamps, tables from other producers


def decode_headers(table: Mapping[str, object] | None) -> Headers:
    """A record's headers from AMQP headers (the inverse of :func:`encode_headers`)."""
    if not table:
        return ()
    out: list[tuple[str, bytes]] = []
    for name, value in (table or {}).items():
        if isinstance(value, list):
            out.extend((name, _as_bytes(v)) for v in value)
        else:
            out.append((name, _as_bytes(value)))
    return tuple(out)


def reconnect_delay(down_for_s: float, initial_s: float, max_s: float) -> float:
    """The wait before the next reconnect attempt: as long again as the outage has lasted
    so far (so waits double), at least ``initial_s``, at most ``max_s``."""
    return min(max_s, max(initial_s, down_for_s))


class _BackoffConnection(RobustConnection):
    """aio-pika's robust connection with a growing wait between reconnect attempts.

    The library sleeps ``reconnect_interval`` between attempts; here that attribute is read
    from :func:`reconnect_delay`, so waits start at ``reconnect_interval`` and grow to
    ``reconnect_max``. It also counts reconnects and remembers when the outage began, for
    :meth:`Source.health`.
    """

    PARAMETERS = (
        *RobustConnection.PARAMETERS,
        ConnectionParameter(name="reconnect_max", parser=parse_timeout, default="5"),
    )

    def __init__(self, url: URL, **kwargs: Any) -> None:
        self._initial_s = 0.1
        super().__init__(url, **kwargs)
        self._max_s = float(self.kwargs.pop("reconnect_max"))
        self.down_since: float | None = None
        self.reconnects = 0
        self.opened = False  # set by _connect: a failed first attempt is raised, not logged
        self.close_callbacks.add(self._lost)
        self.reconnect_callbacks.add(self._restored)

    @property
    def reconnect_interval(self) -> float:
        if self.down_since is None:
            return self._initial_s
        return reconnect_delay(self.loop.time() - self.down_since, self._initial_s, self._max_s)

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._initial_s = float(value)

    def _lost(self, _sender: object, exc: BaseException | None) -> None:
        if self._close_called or self.down_since is not None:
            return
        self.down_since = self.loop.time()
        level = logging.WARNING if self.opened else logging.DEBUG
        log.log(level, "rabbitmq: connection lost (%s); reconnecting", exc)

    def _restored(self, _sender: object) -> None:
        self.reconnects += 1
        self.down_since = None
        log.info("rabbitmq: reconnected (%d so far)", self.reconnects)

    @property
    def up(self) -> bool:
        return not self.is_closed and self.down_since is None

    def describe(self) -> str:
        if self.down_since is not None:
            return f"reconnecting for {self.loop.time() - self.down_since:.1f} s"
        return f"reconnects: {self.reconnects}" if self.reconnects else ""


def _address(url: str) -> str:
    """``host:port`` of an amqp:// URL (never the password)."""
    u = URL(url)
    default = 5671 if u.scheme == "amqps" else 5672
    return f"{u.host or '127.0.0.1'}:{u.port or default}"


def _default_name() -> str:
    return f"byteor-{socket.gethostname()}-{os.getpid()}"


async def _connect(
    url: str, name: str, timeout_s: float, reconnect_s: float, reconnect_max_s: float
) -> _BackoffConnection:
    """What ``aio_pika.connect_robust`` does, keeping the connection in hand so that a
    failed first attempt (which fails fast) is closed here and leaves nothing running."""
    conn = _BackoffConnection(
        URL(url),
        client_properties={"connection_name": name or _default_name()},
        reconnect_interval=reconnect_s,
        reconnect_max=reconnect_max_s,
    )
    try:
        await conn.connect(timeout=timeout_s)
    except BaseException:
        await conn.close()
        raise
    conn.opened = True
    return conn


async def _topology(
    channel: AbstractRobustChannel,
    errors: Callable[[str], AbstractContextManager[None]],
    *,
    queue: str,
    exchange: str,
    exchange_type: str,
    binding_key: str,
    declare: bool,
    durable: bool,
) -> tuple[AbstractQueue | None, AbstractExchange]:
    """The exchange and queue, declared (``declare``) or checked to exist (passive)."""
    ex: AbstractExchange = channel.default_exchange
    if exchange:
        with errors(f"exchange {exchange!r}"):
            ex = await channel.declare_exchange(
                exchange, exchange_type, durable=durable, passive=not declare
            )
    q: AbstractQueue | None = None
    if queue:
        with errors(f"queue {queue!r}"):
            q = await channel.declare_queue(queue, durable=durable, passive=not declare)
            if declare and exchange:
                await q.bind(ex, binding_key)
    return q, ex


class _Base:
    """Connection, error mapping and health shared by source and sink."""

    def __init__(
        self,
        url: str,
        name: str,
        timeout_s: float,
        reconnect_s: float,
        reconnect_max_s: float,
    ) -> None:
        self._url, self._name, self._timeout_s = url, name, timeout_s
        self._reconnect_s, self._reconnect_max_s = reconnect_s, reconnect_max_s
        self._address = _address(url)
        self._conn: _BackoffConnection | None = None
        self._channel: AbstractRobustChannel | None = None

    def _errors(self, what: str = "the target") -> AbstractContextManager[None]:
        return map_errors("rabbitmq", self._address, _ERRORS, what=what)

    async def _open(self, *, confirms: bool) -> AbstractRobustChannel:
        with self._errors():
            conn = await _connect(
                self._url, self._name, self._timeout_s, self._reconnect_s, self._reconnect_max_s
            )
        try:
            with self._errors():
                channel = await conn.channel(publisher_confirms=confirms, on_return_raises=confirms)
        except BaseException:
            await conn.close()
            raise
        self._conn, self._channel = conn, channel
        return channel

    async def _close(self) -> None:
        conn, channel = self._conn, self._channel
        self._conn = self._channel = None
        # The channel first: closing only the connection leaves the channel's close
        # callbacks running in a task of their own after we return.
        if channel is not None and not channel.is_closed:
            with suppress(*_CHANNEL_GONE):
                await channel.close()
        if conn is not None:
            await conn.close()

    def health(self) -> Health:
        conn, channel = self._conn, self._channel
        if conn is None or channel is None:
            return Health(connected=False, detail="stopped")
        return Health(connected=conn.up and not channel.is_closed, detail=conn.describe())


class _Taken(Settler):
    """The deliveries of one :meth:`RabbitMQSource.next_batch` (of one channel, an epoch of
    the source), as the :class:`Settler` of their records: ``ack_all`` of the whole batch
    queues its delivery tags for the next flush and ``nack_all`` sends their nacks, with no
    record made; ``stored`` is each delivery's ``tag << 1 | redelivered``."""

    __slots__ = ("source", "epoch", "stored")

    def __init__(self, source: RabbitMQSource, epoch: int, stored: list[int]) -> None:
        self.source, self.epoch, self.stored = source, epoch, stored

    def positions(self) -> list[AmqpPosition]:
        return [AmqpPosition(p >> 1, bool(p & 1)) for p in self.stored]

    def make_ack(self, record: LazyAckRecord) -> Ack:
        return _DeliveryAck(self, _tag_of(record))

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> Awaitable[None] | None:
        return self.source._settled(list(map(_tag_of, records)), self.epoch, ok)

    def settle_batch(self, batch: RecordBatch, ok: bool) -> Awaitable[None] | None:
        return self.source._settled([p >> 1 for p in self.stored], self.epoch, ok)


def _tag_of(record: Record) -> int:
    """The delivery tag of one of our records (its position an :class:`AmqpPosition`)."""
    return cast(AmqpPosition, record.position).delivery_tag


class _DeliveryAck(Ack):
    """A delivery's acknowledgement handle, made when ``record.ack`` is first read: an ack
    queues the tag (no I/O, so ``settled`` is a plain method), a nack is sent at once."""

    __slots__ = ("_taken", "_tag")

    def __init__(self, taken: _Taken, tag: int) -> None:
        Ack.__init__(self)
        self._taken, self._tag = taken, tag

    def settled(self, ok: bool) -> Awaitable[None] | None:
        return self._taken.source._settled([self._tag], self._taken.epoch, ok)


class RabbitMQSource(_Base, Source):
    """Consumes one queue with manual acknowledgement; see the module docstring."""

    def __init__(
        self,
        url: str,
        queue: str,
        *,
        prefetch: int = 512,
        exchange: str = "",
        exchange_type: str = "direct",
        binding_key: str = "",
        declare: bool = False,
        durable: bool = True,
        name: str = "",
        timeout_s: float = 10.0,
        reconnect_s: float = 0.1,
        reconnect_max_s: float = 5.0,
    ) -> None:
        super().__init__(url, name, timeout_s, reconnect_s, reconnect_max_s)
        if prefetch < 1:
            raise AdapterConfigError(
                f"rabbitmq: prefetch must be at least 1, got {prefetch}", adapter="rabbitmq"
            )
        self._queue, self._prefetch = queue, prefetch
        self._exchange, self._exchange_type = exchange, exchange_type
        self._binding_key = binding_key
        self._declare, self._durable = declare, durable
        # Tags of the current channel's deliveries not yet acked or nacked to the broker
        # (buffered ones included: a multiple-ack must not cover them).
        self._unsettled: set[int] = set()
        # Arrived, not handed out yet, as columns: payloads, keys, headers, and each
        # delivery's tag << 1 | redelivered.
        self._bodies: list[bytes] = []
        self._keys: list[bytes | None] = []
        self._headers: list[Headers] = []
        self._stored: list[int] = []
        self._to_ack: list[int] = []  # settled with ack, sent at the next flush
        self._chan: aiormq.abc.AbstractChannel | None = None  # the channel tags belong to
        self._epoch = 0  # one per channel, and per stop: settling an older record is a no-op
        self._routing_key: tuple[str | None, bytes | None] = (None, None)  # the last one seen
        self._wake = asyncio.Event()
        self._paused = False
        self._stopped = True

    @property
    def buffered(self) -> int:
        """Deliveries received and not handed out yet (at most the prefetch)."""
        return len(self._bodies)

    async def start(self) -> None:
        channel = await self._open(confirms=False)
        try:
            with self._errors():
                await channel.set_qos(prefetch_count=self._prefetch)
            q, _ = await _topology(
                channel,
                self._errors,
                queue=self._queue,
                exchange=self._exchange,
                exchange_type=self._exchange_type,
                binding_key=self._binding_key,
                declare=self._declare,
                durable=self._durable,
            )
            assert q is not None  # a source always names its queue
            self._stopped = False
            with self._errors(f"queue {self._queue!r}"):
                await q.consume(self._on_message, no_ack=False)
        except BaseException:
            self._stopped = True
            await self._close()
            raise

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        """Keep what the delivery's record needs (an entry in each of the buffer's columns),
        so that aio-pika's message object is let go when this returns: objects kept alive
        are the garbage collector's work (see :class:`Settler`)."""
        if self._stopped:
            return  # the broker requeues it when the connection closes
        try:
            chan = msg.channel
        except aiormq.exceptions.ChannelInvalidStateError:
            return  # closed since it arrived: the broker requeues it
        if chan is not self._chan:
            # A new channel after a reconnect: the old one's tags mean nothing any more, and
            # the broker has requeued its deliveries (they come back on this channel).
            self._chan = chan
            self._epoch += 1
            self._clear_buffer()
            self._unsettled.clear()
            self._to_ack.clear()
        tag = msg.delivery_tag
        assert tag is not None  # manual ack: every delivery has a tag
        routing_key, key = self._routing_key
        if msg.routing_key != routing_key:  # usually one for the whole queue: one bytes object
            routing_key = msg.routing_key
            key = routing_key.encode() if routing_key else None
            self._routing_key = routing_key, key
        self._unsettled.add(tag)
        self._bodies.append(msg.body)
        self._keys.append(key)
        headers = msg.headers
        self._headers.append(decode_headers(headers) if headers else ())
        self._stored.append(tag << 1 | bool(msg.redelivered))
        self._wake.set()

    def _clear_buffer(self) -> None:
        self._bodies, self._keys, self._headers, self._stored = [], [], [], []

    def _settled(self, tags: list[int], epoch: int, ok: bool) -> Awaitable[None] | None:
        """Deliveries ``tags`` of channel ``epoch`` settled: an ack queues them for the next
        flush (and wakes a waiting :meth:`next_batch`, which returns the credit); a nack is
        sent now, so that no later multiple-ack covers them."""
        if self._stopped or epoch != self._epoch:
            return None  # their channel is gone: the broker delivers them again
        if ok:
            self._to_ack += tags
            self._wake.set()
            return None
        unsettled = self._unsettled
        tags = [t for t in tags if t in unsettled]  # a tag the channel never gave is an error
        unsettled.difference_update(tags)
        return self._nack(tags) if tags else None

    async def _nack(self, tags: list[int]) -> None:
        chan = self._chan
        if chan is None:
            return
        with suppress(*_CHANNEL_GONE):  # then the broker requeued them anyway
            for tag in tags:
                await chan.basic_nack(tag, requeue=True)

    async def _flush_acks(self) -> None:
        if not self._to_ack:
            return
        unsettled = self._unsettled
        tags = sorted(unsettled.intersection(self._to_ack))
        self._to_ack.clear()
        unsettled.difference_update(tags)
        chan = self._chan
        if not tags or chan is None or chan.is_closed:
            return  # acks on a closed channel are void; the broker redelivers those
        # One multiple-ack up to the lowest tag still unsettled (not covering it), singles
        # above it.
        low = min(unsettled, default=None)
        run = len(tags) if low is None else bisect_left(tags, low)
        try:
            if run:
                await chan.basic_ack(tags[run - 1], multiple=True)
            for tag in tags[run:]:
                await chan.basic_ack(tag)
        except _CHANNEL_GONE:
            pass  # the connection dropped: these come back, redelivered

    def _take(self, max_records: int) -> Sequence[Record]:
        """A :class:`RecordBatch` of up to ``max_records`` buffered deliveries (all of the
        current channel: a new one clears the buffer), ``[]`` when its channel closed."""
        chan = self._chan
        if chan is None or chan.is_closed:
            self._clear_buffer()  # its channel closed: the broker requeued them
            return []
        bodies, keys, headers, stored = self._bodies, self._keys, self._headers, self._stored
        if len(bodies) <= max_records:  # the usual case: all of it, the columns as they are
            self._clear_buffer()
        else:
            n = max_records
            self._bodies, self._keys = bodies[n:], keys[n:]
            self._headers, self._stored = headers[n:], stored[n:]
            bodies, keys, headers, stored = bodies[:n], keys[:n], headers[:n], stored[:n]
        taken = _Taken(self, self._epoch, stored)
        return RecordBatch(
            bodies,
            None if keys.count(None) == len(keys) else keys,
            headers if any(headers) else None,
            taken.positions,
            taken,
        )

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> Sequence[Record]:
        if self._stopped or self._conn is None:
            raise AdapterError("rabbitmq: source is not started", adapter="rabbitmq")
        if self._to_ack:
            await self._flush_acks()
        if self._bodies and not self._paused:  # what is ready, without looking at the clock
            out = self._take(max_records)
            if out:
                return out
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while True:
            self._wake.clear()  # before looking: a settle or a delivery after it wakes us
            await self._flush_acks()
            if not self._paused and self._bodies:
                out = self._take(max_records)
                if out:
                    return out
            left = end - loop.time()
            if left <= 0:
                return []
            try:
                async with asyncio.timeout(left):
                    await self._wake.wait()
            except TimeoutError:
                pass  # one more flush and look, then the deadline returns []

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    async def stop(self) -> None:
        if self._stopped:
            return
        try:
            await self._flush_acks()
        finally:
            self._stopped = True
            self._epoch += 1  # records handed out before are void after a restart too
            self._clear_buffer()
            self._unsettled.clear()
            self._to_ack.clear()
            self._chan = None
            await self._close()  # the broker requeues every unacknowledged delivery


class RabbitMQSink(_Base, Sink):
    """Publishes with confirms, ``mandatory`` and persistent; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "",
        routing_key: str = "",
        queue: str = "",
        exchange_type: str = "direct",
        declare: bool = False,
        durable: bool = True,
        name: str = "",
        timeout_s: float = 10.0,
        reconnect_s: float = 0.1,
        reconnect_max_s: float = 5.0,
    ) -> None:
        super().__init__(url, name, timeout_s, reconnect_s, reconnect_max_s)
        self._exchange_name, self._exchange_type = exchange, exchange_type
        self._routing_key, self._queue = routing_key, queue
        self._declare, self._durable = declare, durable
        # A fixed routing key: the configured one, or the queue's name on the default exchange.
        self._fixed_key = routing_key or ("" if exchange else queue) or None
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        channel = await self._open(confirms=True)
        try:
            _, self._exchange = await _topology(
                channel,
                self._errors,
                queue=self._queue,
                exchange=self._exchange_name,
                exchange_type=self._exchange_type,
                binding_key=self._routing_key,
                declare=self._declare,
                durable=self._durable,
            )
        except BaseException:
            await self._close()
            raise

    def _key(self, rec: OutRecord) -> str:
        if self._fixed_key is not None:
            return self._fixed_key
        if rec.key is None:
            return ""
        try:
            key = rec.key.decode()
        except UnicodeDecodeError:
            raise AdapterError(
                f"rabbitmq: record key {rec.key[:40]!r} is not UTF-8 text and cannot be a "
                f"routing key; set config routing_key, or give records text keys",
                adapter="rabbitmq",
                address=self._address,
            ) from None
        if len(rec.key) > MAX_ROUTING_KEY:
            raise AdapterError(
                f"rabbitmq: record key of {len(rec.key)} bytes is longer than a routing key "
                f"may be ({MAX_ROUTING_KEY}); set config routing_key, or shorten the keys",
                adapter="rabbitmq",
                address=self._address,
            )
        return key

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        exchange, channel = self._exchange, self._channel
        if exchange is None or channel is None:
            raise AdapterError("rabbitmq: sink is not started", adapter="rabbitmq")
        if not records:
            return
        keys = [self._key(r) for r in records]  # every key checked before anything is sent
        if channel.is_closed:  # reconnecting: wait for the robust channel, a bounded time
            try:
                async with asyncio.timeout(self._timeout_s):
                    await channel.ready()
            except TimeoutError:
                raise AdapterUnreachable(
                    "rabbitmq", self._address, f"not reconnected within {self._timeout_s} s"
                ) from None
        results = await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        r.payload,
                        headers=encode_headers(r.headers) or None,  # type: ignore[arg-type]
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    key,
                    mandatory=True,
                    timeout=self._timeout_s,
                )
                for r, key in zip(records, keys, strict=True)
            ),
            return_exceptions=True,
        )
        failed = [
            (k, res) for k, res in zip(keys, results, strict=True) if isinstance(res, BaseException)
        ]
        if failed:
            raise self._batch_error(failed, len(records))

    def _batch_error(self, failed: list[tuple[str, BaseException]], total: int) -> AdapterError:
        """One error for the batch: unroutable messages first, else the first failure."""
        returned = [(k, e) for k, e in failed if isinstance(e, aiormq.exceptions.PublishError)]
        if returned:
            keys = sorted({k for k, _ in returned})
            shown = ", ".join(repr(k) for k in keys[:5]) + (" ..." if len(keys) > 5 else "")
            frame = returned[0][1].frame
            reply = f"{getattr(frame, 'reply_code', '')} {getattr(frame, 'reply_text', '')}"
            return AdapterNotFound(
                "rabbitmq",
                self._address,
                f"a queue bound to exchange {self._exchange_name or '(default)'!r} for "
                f"routing key {shown}",
                f"{reply.strip()}: {len(returned)} of {total} records returned unrouted",
            )
        _, first = failed[0]
        if isinstance(first, asyncio.CancelledError | TimeoutError):
            return AdapterUnreachable(
                "rabbitmq",
                self._address,
                f"{len(failed)} of {total} publishes not confirmed: "
                + (
                    "the channel closed"
                    if isinstance(first, asyncio.CancelledError)
                    else f"no confirm within {self._timeout_s} s"
                ),
            )
        if isinstance(first, aiormq.exceptions.DeliveryError):
            return AdapterError(
                f"rabbitmq: the broker refused {len(failed)} of {total} records ({first})",
                adapter="rabbitmq",
                address=self._address,
                retriable=True,
            )
        try:
            with self._errors(f"exchange {self._exchange_name!r}"):
                raise first
        except AdapterError as err:
            return err
        except Exception as exc:  # a client error no mapping names
            return AdapterError(
                f"rabbitmq: publishing failed: {type(exc).__name__}: {exc}",
                adapter="rabbitmq",
                address=self._address,
            )

    async def stop(self) -> None:
        self._exchange = None
        await self._close()


class RabbitMQAdapter(Adapter):
    name = "rabbitmq"
    summary = "RabbitMQ queues (AMQP 0-9-1)"
    extra = "rabbitmq"
    client_module = "aio_pika"
    config = ConfigSchema(
        "rabbitmq",
        (
            ConfigField(
                "url",
                str,
                "amqp://guest:guest@127.0.0.1:5672/",
                "amqp:// URL: user, password, host, port and vhost",
            ),
            ConfigField("queue", str, "", "the queue a source consumes (a sink checks it)"),
            ConfigField("exchange", str, "", "the exchange a sink publishes to ('': default)"),
            ConfigField(
                "exchange_type",
                str,
                "direct",
                "declare: the exchange's type",
                ("direct", "fanout", "topic", "headers"),
            ),
            ConfigField(
                "routing_key",
                str,
                "",
                "sink: one routing key for every record (else the record's key); "
                "declare: the binding key",
            ),
            ConfigField("prefetch", int, 512, "source: unacknowledged deliveries in flight"),
            ConfigField(
                "declare", bool, False, "declare queue, exchange and binding (else they must exist)"
            ),
            ConfigField("durable", bool, True, "declare: queue and exchange survive a restart"),
            ConfigField("name", str, "", "connection name the broker shows (default host-pid)"),
            ConfigField("timeout_s", float, 10.0, "connect and publish-confirm timeout"),
            ConfigField("reconnect_s", float, 0.1, "first wait before reconnecting"),
            ConfigField("reconnect_max_s", float, 5.0, "longest wait between reconnects"),
        ),
    )
    capabilities = Capabilities(
        source=Delivery("at-least-once", "per-queue", "manual ack after every sink confirmed"),
        sink=Delivery("at-least-once", "per-queue", "publisher confirms, mandatory"),
        max_batch=10_000,
        backpressure="credit",
    )

    @staticmethod
    def _common(config: Mapping[str, ConfigValue]) -> dict[str, Any]:
        return {
            "exchange": str(config["exchange"]),
            "exchange_type": str(config["exchange_type"]),
            "declare": bool(config["declare"]),
            "durable": bool(config["durable"]),
            "name": str(config["name"]),
            "timeout_s": float(config["timeout_s"]),
            "reconnect_s": float(config["reconnect_s"]),
            "reconnect_max_s": float(config["reconnect_max_s"]),
        }

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        if not config["queue"]:
            raise AdapterConfigError(
                "rabbitmq: a source needs config 'queue' (the queue to consume)",
                adapter="rabbitmq",
            )
        return RabbitMQSource(
            str(config["url"]),
            str(config["queue"]),
            prefetch=int(config["prefetch"]),
            binding_key=str(config["routing_key"]),
            **self._common(config),
        )

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        return RabbitMQSink(
            str(config["url"]),
            routing_key=str(config["routing_key"]),
            queue=str(config["queue"]),
            **self._common(config),
        )
