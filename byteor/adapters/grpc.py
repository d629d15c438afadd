"""``adapter = grpc``: records over gRPC, service ``byteor.v1.Records`` (``byteor[grpc]``).

The service is declared in ``proto/byteor/v1/stream.proto``; its Python stubs are generated
when the package is built (``setup.py``), into ``byteor/adapters/_grpc_gen``.

Theory of operation
-------------------

**Source: our server, ``Publish``.** A ``grpc.aio`` server on ``host:port`` (port 0 picks a
free one; :attr:`GrpcSource.port` tells which). Each client opens a bidirectional
``Publish`` stream and sends records (one or a batch per message), each with an id it
chose, strictly increasing on that stream. The records go into the source's buffer, which
:meth:`GrpcSource.next_batch` hands out. Settling a record writes its settlement on that
client's response stream: acks as ``acked_through`` (every id up to it is done, the common
case of in-order settling) plus single ``acked`` ids settled out of order, nacks with a
reason. So a client hears "acknowledged" only once the record was confirmed downstream,
and keeps every record until then; after a broken stream it sends the unacknowledged ones
again on a new stream. That is at-least-once: a record whose ack was lost with the stream
comes twice.

Flow control: a stream may have at most ``max_in_flight`` records whose settlement has not
been written back yet (in the buffer, downstream, or settled and waiting for the response
stream to take them). At the bound the server stops reading that stream; the request
messages pile up in gRPC's HTTP/2 window until it is full, and the client's writes wait —
back-pressure reaches the client without a protocol message. The bound is checked before
each read, so one message of many records may overshoot it by its size less one. A paused
source stops reading every stream the same way.

A request the server cannot read — bytes that are not a ``PublishRequest`` (the handler
decodes them itself, so this is ``INVALID_ARGUMENT``, not gRPC's generic ``INTERNAL``), ids
not increasing, a message over ``max_message_bytes`` (``RESOURCE_EXHAUSTED``, from gRPC) —
ends that one stream with that status; the server and every other stream carry on. A call
without the bearer ``token`` (when one is set) ends ``UNAUTHENTICATED`` before anything is
read. When a client goes away, its records not yet handed out are dropped (it sends them
again); those already handed out stay downstream and their settlements are discarded.
:meth:`GrpcSource.stop` writes every settlement made so far, then ends each stream
``UNAVAILABLE`` ("send the unacknowledged records again") and stops the server.

**Sink: a client of a remote ``Publish``.** One channel, one long-lived ``Publish`` stream.
:meth:`GrpcSink.write_batch` gives each record a new id, writes them in messages of up to
``batch_records`` records and ``max_message_bytes`` bytes (a write waits while the server
holds back reading: its back-pressure), and returns once every record is acknowledged. A
broken stream (``UNAVAILABLE``, a reset, the server stopping) is reopened with backoff and
only the records not yet acknowledged are sent again, up to ``max_attempts`` tries; then
the error is raised (retriable). A nack from the server raises :class:`GrpcNacked` (also
retriable) naming the records to send again. ``UNAUTHENTICATED``/``PERMISSION_DENIED`` raise
:class:`AdapterAuthError`, ``UNIMPLEMENTED``/``NOT_FOUND`` :class:`AdapterNotFound`, neither
retried.

**Sink, ``mode = serve``: our server, ``Subscribe``.** Remote consumers call ``Subscribe``;
the first response names their subscription, the next ones carry records with ids. A
consumer acknowledges (or nacks) ids with the unary ``Ack`` call; at most ``max_in_flight``
records (or what the consumer asks for, if less) are out to it unacknowledged.
:meth:`GrpcServeSink.write_batch` returns once every record of the batch is acknowledged by
a consumer. A nacked record, and every record out to a consumer whose subscription ends
(it disconnected, or the sink stopped), is sent again to the next consumer ready for it,
ahead of newer records: at-least-once again, in order per consumer except for those
repeats. With no consumer, ``write_batch`` waits (at most ``ack_timeout_s``, when set).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import random
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from operator import attrgetter, lt
from typing import Any, Final, NamedTuple, cast

import grpc
import grpc.aio

from byteor.adapters._backoff import Backoff, retry
from byteor.adapters._columns import Chunk, batch_or_records, take_runs
from byteor.adapters._config import ConfigField, ConfigSchema, ConfigValue
from byteor.adapters._contract import Adapter, Capabilities, Health, Sink, Source
from byteor.adapters._errors import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
    AdapterUnavailable,
    AdapterUnreachable,
)
from byteor.adapters._record import (
    Ack,
    AckState,
    Headers,
    LazyAckRecord,
    OutRecord,
    Record,
    RecordBatch,
    Settler,
)
from byteor.spec import Delivery


def _stubs_unusable(exc: Exception) -> AdapterUnavailable:
    """What to do when the generated stubs are missing or do not load."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("google"):
        why = "the grpc adapter needs the 'protobuf' library: pip install 'byteor[grpc]'"
    elif isinstance(exc, ModuleNotFoundError):
        why = (
            "the grpc adapter's stubs (byteor/adapters/_grpc_gen) were not generated: they are "
            "made when byteor is built, so reinstall it (pip install -e . in a source tree, "
            "which needs grpcio-tools; or pip install --force-reinstall byteor)"
        )
    else:  # protobuf's VersionError: a runtime older than the generator
        why = (
            f"the grpc adapter's stubs do not load ({type(exc).__name__}: {exc}); they were "
            f"generated by a newer grpcio-tools than the installed protobuf runtime: "
            f"pip install -U protobuf, or rebuild byteor with the grpcio-tools you have"
        )
    return AdapterUnavailable(why, adapter="grpc")


try:
    from byteor.adapters._grpc_gen import stream_pb2 as pb
except Exception as _exc:
    raise _stubs_unusable(_exc) from _exc

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

__all__ = [
    "GrpcAdapter",
    "GrpcSource",
    "GrpcSink",
    "GrpcServeSink",
    "GrpcUnconfirmed",
    "GrpcNacked",
    "GrpcPosition",
    "SERVICE",
    "status_error",
    "server_options",
]

log = logging.getLogger("byteor.adapters.grpc")

#: The service's full name, as in ``proto/byteor/v1/stream.proto``.
SERVICE: Final = "byteor.v1.Records"
PUBLISH: Final = f"/{SERVICE}/Publish"
SUBSCRIBE: Final = f"/{SERVICE}/Subscribe"
ACK: Final = f"/{SERVICE}/Ack"

#: Sending: about 10 attempts over ~20 s before a broken stream's error surfaces.
SEND_BACKOFF: Final = Backoff(initial_s=0.1, max_s=5.0, max_attempts=10)

#: Bytes a record's framing inside a request message may take beyond its own size.
_FRAMING: Final = 16

_Code = grpc.StatusCode
#: Statuses after which the same records may well go through on a new stream.
_RETRIABLE: Final = frozenset(
    {_Code.UNAVAILABLE, _Code.CANCELLED, _Code.ABORTED, _Code.UNKNOWN, _Code.INTERNAL,
     _Code.DEADLINE_EXCEEDED}
)  # fmt: skip

_AUTH_HINT: Final = "missing or wrong bearer token (send metadata 'authorization: Bearer <token>')"


class GrpcPosition(NamedTuple):
    """Where a record came from: the source's number for the ``Publish`` stream, and the id
    the client gave it."""

    stream: int
    id: int


class GrpcUnconfirmed(AdapterError):
    """Part of a batch was not acknowledged (the stream is fine): ``unconfirmed`` are the
    indices in the batch to send again."""

    retriable = True

    def __init__(self, message: str, address: str, unconfirmed: tuple[int, ...]) -> None:
        super().__init__(message, adapter="grpc", address=address)
        self.unconfirmed = unconfirmed


class GrpcNacked(GrpcUnconfirmed):
    """The server nacked records of a batch; ``reasons`` is what it said."""

    def __init__(
        self, address: str, unconfirmed: tuple[int, ...], total: int, reasons: tuple[str, ...]
    ) -> None:
        shown = "; ".join(sorted(set(reasons))[:3]) or "no reason given"
        super().__init__(
            f"grpc: {address} refused {len(unconfirmed)} of {total} records ({shown}); send "
            f"those again",
            address,
            unconfirmed,
        )
        self.reasons = reasons


def status_error(code: grpc.StatusCode, details: str, address: str, method: str) -> AdapterError:
    """Our error for a call to ``method`` on ``address`` that ended with ``code``."""
    detail = f"{code.name}: {details}" if details else code.name
    if code == _Code.UNAVAILABLE:
        return AdapterUnreachable("grpc", address, detail)
    if code in (_Code.UNAUTHENTICATED, _Code.PERMISSION_DENIED):
        return AdapterAuthError("grpc", address, detail)
    if code in (_Code.UNIMPLEMENTED, _Code.NOT_FOUND):
        return AdapterNotFound("grpc", address, f"the method {method}", detail)
    if code == _Code.RESOURCE_EXHAUSTED:
        return AdapterError(
            f"grpc: {address} refused {method} ({detail}); if a message was too large, lower "
            f"batch_records or raise max_message_bytes on both sides",
            adapter="grpc",
            address=address,
            retriable=False,
        )
    retriable = code in _RETRIABLE
    return AdapterError(
        f"grpc: {address}: {method} ended with {detail}" + ("; retrying" if retriable else ""),
        adapter="grpc",
        address=address,
        retriable=retriable,
    )


def _to_message(rec: OutRecord, rid: int) -> pb.Record:
    msg = pb.Record(id=rid, payload=rec.payload)
    if rec.key is not None:
        msg.key = rec.key
    for name, value in rec.headers:
        msg.headers.add(name=name, value=value)
    return msg


def _request(records: Sequence[OutRecord], at: list[int], first: int) -> pb.PublishRequest:
    """A request of ``records[i]`` for ``i`` in ``at``, with ids from ``first`` on.

    Each record is added into the request and filled there (``records.add()``, then its
    fields): about 2.5 times as fast as making ``Record`` messages and handing the list to
    ``PublishRequest`` (which copies each), and no message object outlives its turn."""
    req = pb.PublishRequest()
    add = req.records.add
    rid = first
    for i in at:
        rec = records[i]
        msg = add()
        msg.id = rid
        msg.payload = rec.payload
        if rec.key is not None:
            msg.key = rec.key
        if rec.headers:
            for name, value in rec.headers:
                msg.headers.add(name=name, value=value)
        rid += 1
    return req


def _headers(msg: pb.Record) -> Headers:
    headers = msg.headers  # most records have none: no generator for them (~0.4 us a record)
    return tuple((h.name, h.value) for h in headers) if headers else ()


def _bare_request_class() -> Any:
    """A message class for ``PublishRequest`` whose records know only ``id`` and ``payload``
    (``key`` and ``headers`` parse as unknown fields), in a pool of its own."""
    file = descriptor_pb2.FileDescriptorProto(
        name="byteor/v1/_bare.proto", package="byteor.v1.bare", syntax="proto3"
    )
    rec = file.message_type.add(name="Record")
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    rec.field.add(name="id", number=1, label=optional,
                  type=descriptor_pb2.FieldDescriptorProto.TYPE_UINT64)  # fmt: skip
    rec.field.add(name="payload", number=2, label=optional,
                  type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES)  # fmt: skip
    req = file.message_type.add(name="PublishRequest")
    req.field.add(name="records", number=1, type_name=".byteor.v1.bare.Record",
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
                  type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE)  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{file.package}.{req.name}"))


#: ``PublishRequest`` without keys and headers: see :meth:`GrpcSource._admit`.
_BareRequest: Any = _bare_request_class()
_get_id, _get_payload = attrgetter("id"), attrgetter("payload")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """The channel options of our gRPC servers (``grpc.aio.server(options=...)``): message
    size limits both ways, no second server on the port, and the keepalive pings our sinks
    send allowed. A hand-written server that stands in for ours uses the same."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Two servers on one port would split the clients between them: refuse instead.
        ("grpc.so_reuseport", 0),
        # Our sinks keep a stream open and ping it (keepalive_s): allow that.
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


async def _serve(
    host: str, port: int, max_message_bytes: int, handler: grpc.GenericRpcHandler
) -> tuple[grpc.aio.Server, int]:
    """A started ``grpc.aio`` server for ``handler`` on ``host:port``, and its bound port."""
    server = grpc.aio.server(options=server_options(max_message_bytes))
    server.add_generic_rpc_handlers((handler,))
    where = _address(host, port)
    try:
        bound = server.add_insecure_port(where)
    except RuntimeError as exc:
        bound, why = 0, str(exc)
    else:
        why = ""
    if bound == 0:
        await server.stop(None)
        raise AdapterError(
            f"grpc: cannot listen on {where}{f' ({why})' if why else ''}; is another server "
            f"using that port? (port = 0 picks a free one)",
            adapter="grpc",
            address=where,
        )
    await server.start()
    return server, bound


def _authorized(context: grpc.aio.ServicerContext[Any, Any], expected: bytes) -> bool:
    if not expected:
        return True
    given = b""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            raw = value.encode("latin-1") if isinstance(value, str) else value
            scheme, _, token = raw.partition(b" ")
            if scheme.lower() == b"bearer":
                given = token.strip()
            break
    return hmac.compare_digest(given, expected)


def _identity(data: bytes) -> bytes:
    return data


# -- the source ----------------------------------------------------------------------------


class _Stream:
    """One client's ``Publish`` call, as the source sees it.

    ``window`` holds the ids received and not yet reported settled, in order; ``settled``
    those of them settled (True: acked) but not reported as part of ``acked_through`` yet.
    Settling only appends to ``acks`` / ``nacks``; :meth:`flush` turns what settled since the
    last one into a response: the longest settled prefix of the window as ``acked_through``,
    acks above it one by one, and the nacks. ``outstanding`` (received, settlement not yet
    written) is what ``max_in_flight`` bounds.

    The common case is checked first, in C: nothing nacked, nothing left over from an earlier
    flush, and the ``k`` acks since the last flush are the window's first ``k`` ids — they are
    distinct ids of the window, so that holds exactly when the largest is the ``k``-th id.
    Then the prefix goes in one slice, with no per-id work in Python.
    """

    __slots__ = (
        "credit",
        "dead",
        "eof",
        "error",
        "last_id",
        "nacks",
        "number",
        "outstanding",
        "peer",
        "settled",
        "stopping",
        "wake",
        "acks",
        "window",
    )

    def __init__(self, number: int, peer: str) -> None:
        self.number, self.peer = number, peer
        self.window: list[int] = []
        self.settled: dict[int, bool] = {}
        self.acks: list[int] = []
        self.nacks: list[int] = []
        self.outstanding = 0
        self.last_id = 0
        self.wake = asyncio.Event()  # the handler: something to write, or to end
        self.credit = asyncio.Event()  # the reader: room to read again
        self.eof = self.dead = self.stopping = False
        self.error: tuple[grpc.StatusCode, str] | None = None

    def settle(self, rid: int, ok: bool) -> None:
        if self.dead or self.stopping:
            return  # nobody to tell, or too late to: the client sends it again
        (self.acks if ok else self.nacks).append(rid)
        self.wake.set()

    def settle_all(self, rids: list[int], ok: bool) -> None:
        """:meth:`settle` of each id, in order, at once."""
        if self.dead or self.stopping:
            return
        (self.acks if ok else self.nacks).extend(rids)
        self.wake.set()

    def flush(self) -> pb.PublishResponse | None:
        acks, nacks = self.acks, self.nacks
        if not acks and not nacks:
            return None
        self.outstanding -= len(acks) + len(nacks)
        self.acks, self.nacks = [], []
        self.credit.set()
        window, settled = self.window, self.settled
        k = len(acks)
        if not nacks and not settled and window[k - 1] == max(acks):
            through = window[k - 1]
            del window[:k]
            return pb.PublishResponse(acked_through=through)
        settled.update(dict.fromkeys(acks, True))
        settled.update(dict.fromkeys(nacks, False))
        k = 0
        for rid in window:
            if rid not in settled:
                break
            del settled[rid]
            k += 1
        through = window[k - 1] if k else 0
        del window[:k]
        return pb.PublishResponse(
            acked_through=through,
            acked=[i for i in acks if i > through],
            nacked=[pb.Nack(id=i, reason="nacked downstream") for i in nacks],
        )


_get_position: Callable[[Record], object] = vars(Record)["position"].__get__
_set_position: Callable[[Record, object], None] = vars(Record)["position"].__set__
_get_held: Callable[[Record], object] = vars(Record)["ack"].__get__


def _rid(record: Record) -> int:
    """A record's id, from its position slot as stored (an int until ``position`` is read)."""
    raw = _get_position(record)
    return raw if raw.__class__ is int else cast(GrpcPosition, raw).id


class GrpcRecord(LazyAckRecord):
    """What :class:`GrpcSource` hands out: a :class:`LazyAckRecord` whose ``position`` slot
    holds the record's id (an int) until ``position`` is first read, which makes the
    :class:`GrpcPosition` then (once; it is kept), the stream's number taken from what holds
    its acknowledgement. Otherwise a Record: same fields, frozen, equal by value.

    Why: a ``GrpcPosition`` per record made up front is a second object per record the
    collector counts (its instances, unlike plain tuples, stay tracked). With one counted
    object per record, a 500-record batch stays under the 700 allocations that start a
    gen-0 collection, and the records alive in the window are not promoted and traversed
    again by full collections (``byteor bench adapters --only grpc``: ~455 gen-0, 42 gen-1
    and 4 full collections per 250,000 records before, ~0.3 us a record).
    """

    __slots__ = ()

    @property
    def position(self) -> GrpcPosition:
        raw = _get_position(self)
        if raw.__class__ is not int:
            return cast(GrpcPosition, raw)
        held = cast(_Numbered, _get_held(self))
        pos = GrpcPosition(held.number, raw)
        _set_position(self, pos)
        return pos

    @position.setter
    def position(self, value: object) -> None:
        # Reached only through object.__setattr__ (copy, pickle): Record.__setattr__ refuses.
        _set_position(self, value)


class _Numbered(Ack):
    """An acknowledgement handle that knows its stream's number (what a
    :class:`GrpcRecord` needs for its position)."""

    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number


class _PublishAck(_Numbered):
    """A record's acknowledgement: tells its stream (no I/O here; the handler writes)."""

    __slots__ = ("_id", "_stream")

    def __init__(self, stream: _Stream, rid: int) -> None:
        super().__init__(stream.number)
        self._stream, self._id = stream, rid

    def settled(self, ok: bool) -> None:
        self._stream.settle(self._id, ok)


class _Taken(Settler):
    """The records of one stream handed out by one ``next_batch`` (one request message or
    several in a row): their acknowledgement, one object for all of them, with their ids.
    ``ack_all`` / ``nack_all`` of their :class:`_GrpcBatch` settle its ids on the stream at
    once (:meth:`settle_batch`), of some records each record's id (all of them: the ids it
    holds); reading a record's ``ack`` makes its :class:`_PublishAck`."""

    __slots__ = ("_ids", "_stream", "number")

    def __init__(self, stream: _Stream, ids: list[int]) -> None:
        self._stream, self._ids, self.number = stream, ids, stream.number

    def make_ack(self, record: LazyAckRecord) -> Ack:
        return _PublishAck(self._stream, _rid(record))

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        # Each record settles once, so as many records as ids are all of them.
        ids = self._ids
        if len(records) != len(ids):
            ids = [_rid(r) for r in records]
        self._stream.settle_all(ids, ok)

    def settle_batch(self, batch: RecordBatch, ok: bool) -> None:
        self._stream.settle_all(self._ids, ok)

    def settled_ack(self, state: AckState) -> Ack:
        mark = _Numbered(self.number)  # keeps the number for a position read later
        mark._state = state
        return mark


class _GrpcBatch(RecordBatch):
    """The records of one stream that one ``next_batch`` hands out, as the columns they
    arrived in (a :class:`RecordBatch` with one :class:`_Taken`); ``positions`` are
    :class:`GrpcPosition` objects, made when first read. Its records, when made, are
    :class:`GrpcRecord` objects holding their id in the position slot (one object a record,
    as without a batch)."""

    record_class = GrpcRecord
    __slots__ = ("_ids",)

    def __init__(
        self,
        taken: _Taken,
        ids: list[int],
        payloads: list[bytes],
        keys: list[bytes | None] | None,
        headers: list[Headers] | None,
    ) -> None:
        number = taken.number

        def positions() -> list[GrpcPosition]:
            return [GrpcPosition(number, rid) for rid in ids]

        super().__init__(payloads, keys, headers, positions, taken)
        self._ids = ids

    def slot_positions(self) -> list[int]:
        return self._ids  # a GrpcRecord's position slot: its id, until read


def _dead(stream: _Stream) -> bool:
    return stream.dead


class GrpcSource(Source):
    """Serves ``Publish`` and hands out what clients send; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_in_flight: int = 1000,
        max_message_bytes: int = 4 << 20,
        token: str = "",
        grace_s: float = 5.0,
    ) -> None:
        if max_in_flight < 1:
            raise AdapterConfigError("grpc: max_in_flight must be at least 1", adapter="grpc")
        self._host, self._want_port = host, port
        self._max_in_flight, self._max_message_bytes = max_in_flight, max_message_bytes
        self._expected = token.encode() if token else b""
        self._grace_s = grace_s
        self._server: grpc.aio.Server | None = None
        self._port = 0
        self._queue: deque[Chunk[_Stream, int]] = deque()  # a request message a chunk
        self._streams: set[_Stream] = set()
        self._numbers = itertools.count(1)
        self._changed = asyncio.Event()
        self._gone = asyncio.Event()  # set when the last stream ended (stop waits for it)
        self._paused = False
        self._closing = False
        self._handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Publish": grpc.stream_stream_rpc_method_handler(
                    self._publish,
                    request_deserializer=_identity,  # decoded in _read: INVALID_ARGUMENT
                    response_serializer=pb.PublishResponse.SerializeToString,
                )
            },
        )

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`; useful with ``port = 0``)."""
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` clients reach the source at."""
        return _address(self._host, self._port)

    @property
    def streams(self) -> int:
        """``Publish`` calls open right now."""
        return len(self._streams)

    async def start(self) -> None:
        if self._server is not None:
            return
        self._closing = False
        self._server, self._port = await _serve(
            self._host, self._want_port, self._max_message_bytes, self._handler
        )

    async def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._closing = True
        for s in self._streams:
            s.stopping = True  # the handler writes what settled, then ends UNAVAILABLE
            s.wake.set()
            s.credit.set()
        if self._streams:
            self._gone.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(self._grace_s):
                    await self._gone.wait()
        self._queue.clear()
        self._changed.set()
        try:
            await server.stop(None)  # cancels any call still running
        finally:
            self._server = None

    def health(self) -> Health:
        up = self._server is not None and not self._closing
        return Health(
            connected=up,
            lag=sum(c.left for c in self._queue),
            detail=f"listening on {self.address}, {len(self._streams)} streams"
            if up
            else "stopped",
        )

    # -- handing out

    def _take(self, max_records: int) -> Sequence[Record]:
        """Up to ``max_records`` records, as the columns of the chunks they came in
        (:func:`~._columns.take_runs`): one :class:`_GrpcBatch` when they are all of one stream
        (the common case: one request message, columns as received, no object per record),
        else the records of a batch per run of one stream's messages."""
        runs = take_runs(self._queue, max_records, _dead)
        return batch_or_records(
            [
                _GrpcBatch(_Taken(r.origin, r.ids), r.ids, r.payloads, r.keys, r.headers)
                for r in runs
            ]
        )

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> Sequence[Record]:
        """A :class:`RecordBatch` of what one stream sent (a list of records when what is
        handed out came on several streams), ``[]`` when nothing is there within
        ``timeout_s``."""
        if self._server is None or self._closing:
            raise AdapterError("grpc: source is not started", adapter="grpc")
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
        for s in self._streams:
            s.credit.set()

    @property
    def paused(self) -> bool:
        return self._paused

    # -- the Publish call

    async def _publish(
        self, _requests: object, context: grpc.aio.ServicerContext[bytes, pb.PublishResponse]
    ) -> None:
        if not _authorized(context, self._expected):
            await context.abort(_Code.UNAUTHENTICATED, _AUTH_HINT)
        if self._closing:
            await context.abort(_Code.UNAVAILABLE, "the source is stopping; try again later")
        stream = _Stream(next(self._numbers), context.peer())
        self._streams.add(stream)
        reader = asyncio.create_task(self._read(stream, context), name=f"grpc-read-{stream.number}")
        try:
            while True:
                await stream.wake.wait()
                stream.wake.clear()
                resp = stream.flush()
                if resp is not None:
                    await context.write(resp)
                if stream.error is not None:
                    code, details = stream.error
                    log.warning("grpc: ending the stream from %s: %s", stream.peer, details)
                    await context.abort(code, details)
                if stream.stopping:
                    await context.abort(
                        _Code.UNAVAILABLE,
                        "the source stopped; send the unacknowledged records again",
                    )
                if stream.eof and stream.outstanding == 0:
                    return  # the client finished and heard about every record: OK
        finally:
            stream.dead = True
            reader.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await reader
            self._streams.discard(stream)
            if not stream.stopping:
                # Not handed out yet: the client sends them again, drop them here.
                self._queue = deque(c for c in self._queue if c.origin is not stream)
            if not self._streams:
                self._gone.set()

    async def _read(
        self, stream: _Stream, context: grpc.aio.ServicerContext[bytes, pb.PublishResponse]
    ) -> None:
        bound = self._max_in_flight
        while True:
            while (stream.outstanding >= bound or self._paused) and not stream.stopping:
                stream.credit.clear()
                await stream.credit.wait()
            if stream.stopping:
                return
            try:
                raw: object = await context.read()
            except Exception as exc:  # the call broke under us: end it, the handler cleans up
                stream.error = (_Code.INTERNAL, f"reading the request stream failed: {exc!r}")
                stream.wake.set()
                return
            if raw is grpc.aio.EOF:
                stream.eof = True
                stream.wake.set()
                return
            assert isinstance(raw, bytes)
            problem = self._admit(stream, raw)
            if problem is not None:
                stream.error = problem
                stream.wake.set()
                return

    def _admit(self, stream: _Stream, raw: bytes) -> tuple[grpc.StatusCode, str] | None:
        """Queue a request's records, or say why the stream must end.

        Most requests carry no key and no header: parsed as :data:`_BareRequest`, their
        records know only id and payload, and with the unknown fields dropped the message
        encodes back to exactly ``len(raw)`` bytes only if there were none (a key or header
        takes at least two bytes, and no encoding is shorter than protobuf's own). Then
        no record needs its key and headers looked at (~0.15 us a record); otherwise, or
        for a sender that encodes differently, the request is parsed again as what it is.
        """
        try:
            bare = _BareRequest.FromString(raw)
            bare.DiscardUnknownFields()
            full = bare.ByteSize() != len(raw)
            # One wrapper per record, made once for the passes below (a pass over the
            # repeated field makes a wrapper per record each time: ~70 ns a record).
            msgs = list((pb.PublishRequest.FromString(raw) if full else bare).records)
        except Exception as exc:  # google.protobuf.message.DecodeError, any flavour
            return (
                _Code.INVALID_ARGUMENT,
                f"a request message is not a valid {SERVICE.rpartition('.')[0]}.PublishRequest "
                f"({len(raw)} bytes: {exc}); nothing of it was taken",
            )
        n = len(msgs)
        if n == 0:
            return None
        ids: list[int] = list(map(_get_id, msgs))
        last = stream.last_id
        if ids[0] <= last or not all(map(lt, ids, itertools.islice(ids, 1, None))):
            for rid in ids:
                if rid <= last:
                    return (
                        _Code.INVALID_ARGUMENT,
                        f"record ids must increase on a stream and start above 0: got {rid} "
                        f"after {last}; nothing of that message was taken",
                    )
                last = rid
        payloads: list[bytes] = list(map(_get_payload, msgs))
        keys: list[bytes | None] | None = None
        headers: list[Headers] | None = None
        if full:
            keys = [m.key if m.HasField("key") else None for m in msgs]
            headers = [_headers(m) for m in msgs]
        stream.last_id = ids[-1]
        stream.window += ids
        stream.outstanding += n
        self._queue.append(Chunk(stream, ids, payloads, keys, headers))
        self._changed.set()
        return None


# -- the sink: a client of Publish ---------------------------------------------------------


class _Waiter:
    """One ``write_batch``: each record's state (0 waiting, 1 acked, 2 nacked)."""

    __slots__ = ("done", "left", "reasons", "states")

    def __init__(self, n: int) -> None:
        self.states = bytearray(n)
        self.left = n
        self.reasons: list[str] = []
        self.done = asyncio.Event()

    def settle(self, index: int, ok: bool, reason: str = "") -> None:
        if self.states[index]:
            return
        self.states[index] = 1 if ok else 2
        if not ok:
            self.reasons.append(reason)
        self.left -= 1
        if self.left == 0:
            self.done.set()

    def settle_all(self, indices: list[int]) -> None:
        """:meth:`settle` (acked) of each index, ascending: a run none of which settled yet
        (the common case) in one slice."""
        states, n = self.states, len(indices)
        a, b = indices[0], indices[-1] + 1
        if b - a == n and states.count(0, a, b) == n:
            states[a:b] = b"\x01" * n
            self.left -= n
            if self.left == 0:
                self.done.set()
            return
        for i in indices:
            self.settle(i, True)

    def waiting(self) -> list[int]:
        if self.left == len(self.states):
            return list(range(self.left))
        return [i for i, s in enumerate(self.states) if s == 0]


class _Call:
    """One open ``Publish`` stream of the sink and the ids waiting for a settlement on it.

    ``spans`` holds, in id order, one entry per request message written and not yet
    acknowledged whole: its first id and the batch indices its records stand for (ids are
    consecutive within a message), and the batch's waiter. ``acked_through`` settles whole
    spans at once (and the front one in part); single ids, acked above it or nacked, look
    their span up.
    """

    def __init__(self, call: grpc.aio.StreamStreamCall[pb.PublishRequest, pb.PublishResponse]):
        self.call = call
        self.spans: deque[tuple[int, list[int], _Waiter]] = deque()
        self.error: AdapterError | None = None
        self.broken = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    @property
    def unsettled(self) -> int:
        """Records written (or being written) on this stream and not settled yet."""
        return sum(1 for _, at, w in self.spans for i in at if w.states[i] == 0)

    def _one(self, rid: int, ok: bool, reason: str = "") -> None:
        for first, at, waiter in self.spans:
            if first <= rid < first + len(at):
                waiter.settle(at[rid - first], ok, reason)
                return

    def apply(self, resp: pb.PublishResponse) -> None:
        for nack in resp.nacked:
            self._one(nack.id, False, nack.reason)
        through, spans = resp.acked_through, self.spans
        while spans:
            first, at, waiter = spans[0]
            if first > through:
                break
            k = through - first + 1
            if k >= len(at):
                spans.popleft()
                waiter.settle_all(at)
            else:
                waiter.settle_all(at[:k])
                spans[0] = (through + 1, at[k:], waiter)
                break
        for rid in resp.acked:
            if rid > through:
                self._one(rid, True)

    def fail(self, err: AdapterError) -> None:
        if self.error is None:
            self.error = err
        self.broken.set()


class GrpcSink(Sink):
    """Writes batches on a ``Publish`` stream to ``target``; see the module docstring."""

    def __init__(
        self,
        target: str,
        *,
        token: str = "",
        batch_records: int = 500,
        max_message_bytes: int = 4 << 20,
        timeout_s: float = 10.0,
        ack_timeout_s: float = 0.0,
        keepalive_s: float = 20.0,
        backoff: Backoff = SEND_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not target or ":" not in target:
            raise AdapterConfigError(
                f"grpc: target must be host:port of a byteor.v1.Records server, got {target!r}",
                adapter="grpc",
            )
        self._target = target
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._batch_records = max(1, batch_records)
        self._max_message_bytes = max_message_bytes
        self._timeout_s, self._ack_timeout_s = timeout_s, ack_timeout_s
        self._keepalive_s = keepalive_s
        self._backoff, self._sleep, self._rand = backoff, sleep, rand
        self._channel: grpc.aio.Channel | None = None
        self._method: (
            grpc.aio.StreamStreamMultiCallable[pb.PublishRequest, pb.PublishResponse] | None
        ) = None
        self._call: _Call | None = None
        self._next_id = 1
        self._send_lock = asyncio.Lock()
        self._last_error: AdapterError | None = None
        self.reconnects = 0

    def _options(self) -> list[tuple[str, int]]:
        backoff_ms = max(1, int(self._backoff.initial_s * 1000))
        opts = [
            ("grpc.max_send_message_length", self._max_message_bytes),
            ("grpc.max_receive_message_length", self._max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.min_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", max(backoff_ms, int(self._backoff.max_s * 1000))),
        ]
        if self._keepalive_s > 0:  # a dead peer breaks the stream instead of a silent wait
            opts += [
                ("grpc.keepalive_time_ms", int(self._keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(min(self._keepalive_s, 20.0) * 1000)),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        return opts

    async def start(self) -> None:
        if self._channel is not None:
            return
        channel = grpc.aio.insecure_channel(self._target, options=self._options())
        try:
            async with asyncio.timeout(self._timeout_s):
                await channel.channel_ready()
        except TimeoutError:
            state = channel.get_state().name
            await channel.close()
            raise AdapterUnreachable(
                "grpc", self._target, f"no connection within {self._timeout_s} s, {state}"
            ) from None
        self._channel = channel
        self._method = channel.stream_stream(
            PUBLISH,
            request_serializer=pb.PublishRequest.SerializeToString,
            response_deserializer=pb.PublishResponse.FromString,
        )
        self._last_error = None

    async def stop(self) -> None:
        channel, self._channel = self._channel, None
        self._method = None
        call, self._call = self._call, None
        if call is not None:
            await self._close_call(call)
        if channel is not None:
            await channel.close()

    def health(self) -> Health:
        if self._channel is None:
            return Health(connected=False, detail="stopped")
        state = self._channel.get_state()
        err = self._last_error
        ok = state == grpc.ChannelConnectivity.READY and not isinstance(err, AdapterUnreachable)
        detail = str(err) if err is not None else state.name.lower()
        if self.reconnects:
            detail += f"; reconnects: {self.reconnects}"
        return Health(connected=ok, detail=detail)

    # -- the stream

    async def _open(self) -> _Call:
        call = self._call
        if call is not None and call.error is None:
            return call
        if call is not None:
            self._call = None
            await self._close_call(call)
            self.reconnects += 1
        method = self._method
        if method is None:
            raise AdapterError("grpc: sink is not started", adapter="grpc")
        new = _Call(method(metadata=self._metadata))
        new.reader = asyncio.create_task(self._read(new), name="grpc-sink-acks")
        self._call = new
        return new

    async def _close_call(self, call: _Call) -> None:
        call.call.cancel()
        if call.reader is not None:
            with suppress(asyncio.CancelledError):
                await call.reader
        call.fail(AdapterError("grpc: the stream was closed", adapter="grpc", retriable=True))

    async def _read(self, call: _Call) -> None:
        """Apply settlements until the stream ends; then say why it ended."""
        try:
            while True:
                resp = await call.call.read()
                if resp is grpc.aio.EOF:
                    break
                assert isinstance(resp, pb.PublishResponse)
                call.apply(resp)
        except grpc.aio.AioRpcError as exc:
            call.fail(status_error(exc.code(), exc.details() or "", self._target, PUBLISH))
            return
        except asyncio.CancelledError:
            call.fail(AdapterError("grpc: the stream was closed", adapter="grpc", retriable=True))
            raise
        call.fail(
            AdapterError(
                f"grpc: {self._target} ended the Publish stream with records unacknowledged",
                adapter="grpc",
                address=self._target,
                retriable=True,
            )
        )

    async def _send(self, call: _Call, records: Sequence[OutRecord], todo: list[int],
                    waiter: _Waiter) -> None:  # fmt: skip
        """Write the ``todo`` records (new ids) in messages within the size bounds."""
        async with self._send_lock:
            first = self._next_id
            self._next_id += len(todo)
            step = self._batch_records
            limit = self._max_message_bytes - _FRAMING
            messages: list[tuple[int, list[int], pb.PublishRequest]] = []
            for k in range(0, len(todo), step):
                at = todo[k : k + step]
                req = _request(records, at, first + k)
                if req.ByteSize() > limit:  # large records: cut by size, record by record
                    messages = self._by_size(records, todo, first)
                    break
                messages.append((first + k, at, req))
            for start, at, req in messages:
                call.spans.append((start, at, waiter))
                await self._write(call, req)

    def _by_size(
        self, records: Sequence[OutRecord], todo: list[int], first: int
    ) -> list[tuple[int, list[int], pb.PublishRequest]]:
        """``todo`` in messages of at most ``batch_records`` records and
        ``max_message_bytes`` bytes (ids from ``first``); a record over the size alone is
        refused before anything is written."""
        limit = self._max_message_bytes - _FRAMING
        sizes = [
            _to_message(records[i], first + j).ByteSize() + _FRAMING for j, i in enumerate(todo)
        ]
        for i, size in zip(todo, sizes, strict=True):
            if size > limit:
                raise AdapterError(
                    f"grpc: record {i} of the batch is {size - _FRAMING} bytes, more than one "
                    f"message may carry (max_message_bytes = {self._max_message_bytes}); raise "
                    f"it on both sides, or split the record",
                    adapter="grpc",
                    address=self._target,
                    retriable=False,
                )
        out: list[tuple[int, list[int], pb.PublishRequest]] = []
        start, total = 0, 0
        for j, size in enumerate(sizes):
            if j > start and (total + size > limit or j - start >= self._batch_records):
                out.append(
                    (first + start, todo[start:j], _request(records, todo[start:j], first + start))
                )
                start, total = j, 0
            total += size
        out.append((first + start, todo[start:], _request(records, todo[start:], first + start)))
        return out

    async def _write(self, call: _Call, req: pb.PublishRequest) -> None:
        if call.error is not None:
            raise call.error
        try:
            await call.call.write(req)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            # The call is over; its reader says why (wait for it, briefly).
            with suppress(TimeoutError):
                async with asyncio.timeout(self._timeout_s):
                    await call.broken.wait()
            if call.error is None:
                call.fail(
                    AdapterError(
                        f"grpc: writing to {self._target} failed ({type(exc).__name__}: {exc})",
                        adapter="grpc",
                        address=self._target,
                        retriable=True,
                    )
                )
            assert call.error is not None
            raise call.error from None

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        if self._channel is None:
            raise AdapterError("grpc: sink is not started", adapter="grpc")
        if not records:
            return
        waiter = _Waiter(len(records))

        async def attempt() -> None:
            call = await self._open()
            todo = waiter.waiting()
            await self._send(call, records, todo, waiter)
            done = asyncio.ensure_future(waiter.done.wait())
            broken = asyncio.ensure_future(call.broken.wait())
            try:
                timeout = self._ack_timeout_s if self._ack_timeout_s > 0 else None
                await asyncio.wait({done, broken}, timeout=timeout,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            finally:
                done.cancel()
                broken.cancel()
            if waiter.left == 0:
                return
            self._forget(call, waiter)
            if call.error is not None:
                raise call.error  # a broken stream: retried on a new one
            timed_out.append(True)  # not retried here: the stream is fine, downstream is slow

        timed_out: list[bool] = []

        def note(n: int, exc: AdapterError, wait: float) -> None:
            log.warning("grpc: attempt %d failed (%s); retrying in %.2f s", n + 1, exc, wait)

        try:
            await retry(attempt, self._backoff, sleep=self._sleep, rand=self._rand, on_retry=note)
        except AdapterError as exc:
            self._last_error = exc
            raise
        self._last_error = None
        if timed_out:
            self._last_error = GrpcUnconfirmed(
                f"grpc: {waiter.left} of {len(records)} records not acknowledged by "
                f"{self._target} within {self._ack_timeout_s} s (ack_timeout_s); send them again",
                self._target,
                tuple(i for i, st in enumerate(waiter.states) if st != 1),
            )
            raise self._last_error
        if any(s == 2 for s in waiter.states):
            unconfirmed = tuple(i for i, s in enumerate(waiter.states) if s != 1)
            err = GrpcNacked(self._target, unconfirmed, len(records), tuple(waiter.reasons))
            self._last_error = err
            raise err

    @staticmethod
    def _forget(call: _Call, waiter: _Waiter) -> None:
        """Stop waiting on ``call`` for ``waiter``'s records (a late settlement is dropped)."""
        call.spans = deque(span for span in call.spans if span[2] is not waiter)


# -- the sink, mode = serve: our server, Subscribe -----------------------------------------


class _Out(NamedTuple):
    """A record the serve sink holds until a consumer acknowledges it."""

    rid: int
    msg: pb.Record
    waiter: _Waiter
    at: int  # its index in the batch


class _Subscription:
    __slots__ = ("limit", "name", "out", "wake")

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit = name, limit
        self.out: dict[int, _Out] = {}  # sent, not yet settled, by id
        self.wake = asyncio.Event()


class GrpcServeSink(Sink):
    """Serves ``Subscribe`` and ``Ack``; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str = "",
        max_in_flight: int = 1000,
        batch_records: int = 500,
        max_message_bytes: int = 4 << 20,
        ack_timeout_s: float = 0.0,
    ) -> None:
        if max_in_flight < 1:
            raise AdapterConfigError("grpc: max_in_flight must be at least 1", adapter="grpc")
        self._host, self._want_port = host, port
        self._expected = token.encode() if token else b""
        self._max_in_flight, self._batch_records = max_in_flight, max(1, batch_records)
        self._max_message_bytes, self._ack_timeout_s = max_message_bytes, ack_timeout_s
        self._server: grpc.aio.Server | None = None
        self._port = 0
        self._ids = itertools.count(1)
        self._ready: deque[_Out] = deque()  # waiting for a consumer, redeliveries first
        self._subs: dict[str, _Subscription] = {}
        self._numbers = itertools.count(1)
        self._closing = False
        self._handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Subscribe": grpc.unary_stream_rpc_method_handler(
                    self._subscribe,
                    request_deserializer=_identity,
                    response_serializer=pb.SubscribeResponse.SerializeToString,
                ),
                "Ack": grpc.unary_unary_rpc_method_handler(
                    self._ack,
                    request_deserializer=_identity,
                    response_serializer=pb.AckResponse.SerializeToString,
                ),
            },
        )

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return _address(self._host, self._port)

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    async def start(self) -> None:
        if self._server is not None:
            return
        self._closing = False
        self._server, self._port = await _serve(
            self._host, self._want_port, self._max_message_bytes, self._handler
        )

    async def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._closing = True
        for sub in self._subs.values():
            sub.wake.set()
        try:
            await server.stop(None)
        finally:
            self._server = None
            for out in self._ready:
                out.waiter.done.set()  # a write_batch still waiting ends (not confirmed)
            self._ready.clear()

    def health(self) -> Health:
        up = self._server is not None and not self._closing
        return Health(
            connected=up,
            lag=len(self._ready),
            detail=f"serving on {self.address}, {len(self._subs)} subscriptions"
            if up
            else "stopped",
        )

    def _wake_all(self) -> None:
        for sub in self._subs.values():
            sub.wake.set()

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        if self._server is None or self._closing:
            raise AdapterError("grpc: sink is not started", adapter="grpc")
        if not records:
            return
        waiter = _Waiter(len(records))
        for i, rec in enumerate(records):
            rid = next(self._ids)
            self._ready.append(_Out(rid, _to_message(rec, rid), waiter, i))
        self._wake_all()
        timeout = self._ack_timeout_s if self._ack_timeout_s > 0 else None
        try:
            async with asyncio.timeout(timeout):
                while waiter.left and not self._closing:
                    waiter.done.clear()
                    await waiter.done.wait()
        except TimeoutError:
            pass
        finally:
            if waiter.left:  # withdrawn: nobody waits for these any more
                self._ready = deque(o for o in self._ready if o.waiter is not waiter)
                for sub in self._subs.values():
                    for rid in [r for r, o in sub.out.items() if o.waiter is waiter]:
                        del sub.out[rid]
        if waiter.left:
            why = "the sink stopped" if self._closing else f"not within {timeout} s"
            raise AdapterError(
                f"grpc: {waiter.left} of {len(records)} records were not acknowledged by a "
                f"subscriber ({why}); {len(self._subs)} subscribed on {self.address}",
                adapter="grpc",
                address=self.address,
                retriable=True,
            )

    def _requeue(self, outs: Iterable[_Out]) -> None:
        """Put records back for the next consumer, ahead of newer ones, in id order."""
        back = sorted(outs, key=lambda o: o.rid)
        if back:
            self._ready.extendleft(reversed(back))
            self._wake_all()

    async def _subscribe(
        self, raw: bytes, context: grpc.aio.ServicerContext[bytes, pb.SubscribeResponse]
    ) -> None:
        if not _authorized(context, self._expected):
            await context.abort(_Code.UNAUTHENTICATED, _AUTH_HINT)
        try:
            req = pb.SubscribeRequest.FromString(raw)
        except Exception as exc:
            await context.abort(
                _Code.INVALID_ARGUMENT, f"the request is not a valid SubscribeRequest ({exc})"
            )
        limit = min(req.max_in_flight or self._max_in_flight, self._max_in_flight)
        sub = _Subscription(f"{next(self._numbers)}-{secrets.token_hex(8)}", limit)
        self._subs[sub.name] = sub
        try:
            await context.write(pb.SubscribeResponse(subscription=sub.name))
            while not self._closing:
                room = min(sub.limit - len(sub.out), self._batch_records)
                batch: list[pb.Record] = []
                while self._ready and len(batch) < room:
                    out = self._ready.popleft()
                    sub.out[out.rid] = out
                    batch.append(out.msg)
                if batch:
                    await context.write(pb.SubscribeResponse(records=batch))
                    continue
                sub.wake.clear()
                await sub.wake.wait()
            await context.abort(_Code.UNAVAILABLE, "the sink stopped; subscribe again")
        finally:
            del self._subs[sub.name]
            self._requeue(sub.out.values())
            sub.out.clear()

    async def _ack(
        self, raw: bytes, context: grpc.aio.ServicerContext[bytes, pb.AckResponse]
    ) -> pb.AckResponse:
        if not _authorized(context, self._expected):
            await context.abort(_Code.UNAUTHENTICATED, _AUTH_HINT)
        try:
            req = pb.AckRequest.FromString(raw)
        except Exception as exc:
            await context.abort(
                _Code.INVALID_ARGUMENT, f"the request is not a valid AckRequest ({exc})"
            )
        sub = self._subs.get(req.subscription)
        if sub is None:
            await context.abort(
                _Code.NOT_FOUND,
                f"no subscription {req.subscription!r} (it ended; its unacknowledged records "
                f"are delivered again)",
            )
        out, settled = sub.out, 0
        nacked: list[_Out] = []
        for nack in req.nacked:
            o = out.pop(nack.id, None)
            if o is not None:
                nacked.append(o)
                settled += 1
        acked = [rid for rid in out if rid <= req.acked_through]
        acked.extend(rid for rid in req.acked if rid in out and rid > req.acked_through)
        for rid in acked:
            o = out.pop(rid)
            o.waiter.settle(o.at, True)
            settled += 1
        self._requeue(nacked)
        sub.wake.set()  # room for more
        return pb.AckResponse(settled=settled)


# -- the adapter ---------------------------------------------------------------------------


class GrpcAdapter(Adapter):
    name = "grpc"
    summary = "gRPC record streams (byteor.v1.Records: Publish in, Publish or Subscribe out)"
    extra = "grpc"
    client_module = "grpc"
    config = ConfigSchema(
        "grpc",
        (
            ConfigField("host", str, "127.0.0.1", "source, serve sink: address to listen on"),
            ConfigField("port", int, 50051, "source, serve sink: port (0: any free one)"),
            ConfigField("target", str, "", "publish sink: host:port of the Publish server"),
            ConfigField("mode", str, "publish",
                        "sink: publish to a remote server, or serve Subscribe to consumers",
                        ("publish", "serve")),
            ConfigField("token", str, "",
                        "bearer token: servers require it, the sink sends it (empty: none)"),
            ConfigField("max_in_flight", int, 1000,
                        "servers: unacknowledged records per stream / subscription"),
            ConfigField("max_message_bytes", int, 4 << 20, "largest gRPC message either way"),
            ConfigField("batch_records", int, 500, "sinks: most records per message"),
            ConfigField("timeout_s", float, 10.0, "publish sink: connect timeout"),
            ConfigField("ack_timeout_s", float, 0.0,
                        "sinks: longest wait for a batch's acks (0: as long as downstream takes)"),
            ConfigField("keepalive_s", float, 20.0,
                        "publish sink: ping an idle stream this often (0: never)"),
            ConfigField("max_attempts", int, 10,
                        "publish sink: tries per batch on a broken stream"),
            ConfigField("reconnect_s", float, 0.1, "publish sink: first wait before reconnecting"),
            ConfigField("reconnect_max_s", float, 5.0, "publish sink: longest wait"),
            ConfigField("grace_s", float, 5.0,
                        "source: how long stop waits for streams to take their last acks"),
        ),
    )  # fmt: skip
    capabilities = Capabilities(
        source=Delivery(
            "at-least-once",
            "per-stream",
            "Publish: acknowledged on the response stream after every sink confirmed; clients "
            "resend what was not acknowledged",
        ),
        sink=Delivery(
            "at-least-once",
            "per-stream",
            "publish: every record acknowledged by the server; serve: by a Subscribe consumer",
        ),
        max_batch=10_000,
        backpressure="credit",
    )

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        return GrpcSource(
            str(config["host"]),
            int(config["port"]),
            max_in_flight=int(config["max_in_flight"]),
            max_message_bytes=int(config["max_message_bytes"]),
            token=str(config["token"]),
            grace_s=float(config["grace_s"]),
        )

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        if str(config["mode"]) == "serve":
            return GrpcServeSink(
                str(config["host"]),
                int(config["port"]),
                token=str(config["token"]),
                max_in_flight=int(config["max_in_flight"]),
                batch_records=int(config["batch_records"]),
                max_message_bytes=int(config["max_message_bytes"]),
                ack_timeout_s=float(config["ack_timeout_s"]),
            )
        target = str(config["target"])
        if not target:
            raise AdapterConfigError(
                "grpc: a sink with mode = publish needs config 'target' (host:port)",
                adapter="grpc",
            )
        base = SEND_BACKOFF
        return GrpcSink(
            target,
            token=str(config["token"]),
            batch_records=int(config["batch_records"]),
            max_message_bytes=int(config["max_message_bytes"]),
            timeout_s=float(config["timeout_s"]),
            ack_timeout_s=float(config["ack_timeout_s"]),
            keepalive_s=float(config["keepalive_s"]),
            backoff=Backoff(float(config["reconnect_s"]), float(config["reconnect_max_s"]),
                            base.factor, base.jitter, max(1, int(config["max_attempts"]))),
        )  # fmt: skip
