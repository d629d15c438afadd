"""WebSocket: ``WebSocketSource``/``WebSocketSink`` against the ``websockets`` library by hand.

Both sides speak ``byteor-ws-1`` (JSON text messages: records with ids one way, ``ack``
frames the other). The counterpart runs in a peer process (:mod:`._peer`), the same for ours
and the hand loop.

Source: the peer is one client sending messages of ``batch`` records (each message built
before the run with ``encode_message``: ``id``, ``payload_b64``, ``idempotency_key`` per
record), keeping at most the window the server's hello announces (``max_in_flight``, 1,000)
unacknowledged, and checking that every id is acknowledged exactly once. Ours:
``WebSocketSource``, ``next_batch`` + ``ack_all`` (its ack frames go out from the
connection's writer task). By hand: a ``websockets`` server (same settings: no compression,
same frame limit) that sends the hello, parses every message (``json.loads``, base64 of each
payload), queues the payloads with their connection and id, refuses a message over the
window or the capacity with a ``slow`` frame, and on acknowledgement sends one ``ack`` frame
of the batch's ids. The clock stops when the client has heard its last ack. Its input is
untrusted, so it checks each record as the protocol requires and ours does (an ``error``
frame, nothing admitted, otherwise): only known fields, an id that is a string of 1 to 256
characters not unanswered on the connection nor repeated in the message, strict base64
(``validate=True``); it keeps each connection's unanswered ids for that. (It checked none
of this before 2026-12-07: hand 1.7 -> 2.0 us CPU a record with the checks, ours 1.6;
ours/hand 1.62x -> 1.36x wall at load 2.4-2.6.)

Sink: the peer hosts a ``WebSocketSource`` drained by a checking loop acknowledging with
``ack_all``. Ours: ``WebSocketSink.write_batch`` (its window: one message of the batch, every
record acked before it returns). By hand: one ``websockets`` connection; per batch the same
message (an id and a BLAKE2b idempotency key per record, built in the timed loop as ours
builds it), sent, then frames read until every id of the batch is acked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from byteor.adapters import OutRecord, Record, RecordBatch, ack_all
from byteor.adapters.websocket import PROTOCOL, WebSocketSink, WebSocketSource, encode_message
from byteor.bench.adapters._harness import (
    READ_WAIT_S,
    BenchFailure,
    Impl,
    Plan,
    SinkSide,
    SourceSide,
    payloads,
)
from byteor.bench.adapters._peer import CasePeer, LoadedSource, Peer, Reports, ServedCase

__all__ = ["WebSocketCase", "WebSocketPeer", "hand_message"]

HOST = "127.0.0.1"
PATH = "/records"
#: WebSocketSource's defaults, kept by the hand-written server too.
CAPACITY, MAX_IN_FLIGHT, MAX_MESSAGE_BYTES = 10_000, 1_000, 1 << 20
#: How long a client waits for an acknowledgement before the run fails as stuck.
ACK_WAIT_S = 30.0


def _key(payload: bytes) -> str:
    """The idempotency key the byteor sink gives a record without key or headers."""
    h = hashlib.blake2b(digest_size=16, person=b"byteor-http-v1")
    h.update(len(payload).to_bytes(8, "big"))
    h.update(payload)
    h.update(b"\x00")
    return h.hexdigest()


def hand_message(batch: Sequence[bytes], ids: Sequence[str]) -> str:
    """A byteor-ws-1 message of ``batch`` with ``ids``, written by hand."""
    objs: list[dict[str, str]] = []
    for payload, rid in zip(batch, ids, strict=True):
        try:
            obj = {"payload": payload.decode("utf-8")}
        except UnicodeDecodeError:
            obj = {"payload_b64": base64.b64encode(payload).decode("ascii")}
        obj["idempotency_key"] = _key(payload)
        obj["id"] = rid
        objs.append(obj)
    return json.dumps(objs, ensure_ascii=False, separators=(",", ":"))


# -- the source sides ----------------------------------------------------------------------


class _OursSource(LoadedSource[Sequence[Record]]):
    def __init__(self, peer: Peer, target: str, reports: Reports) -> None:
        super().__init__(peer, target, reports)
        self._src = WebSocketSource(
            HOST, 0, path=PATH, capacity=CAPACITY, max_in_flight=MAX_IN_FLIGHT
        )

    async def serve(self) -> str:
        await self._src.start()
        return self._src.url

    async def shutdown(self) -> None:
        await self._src.stop()

    def counts(self) -> dict[str, int]:
        s = self._src.statistics()
        return {"admitted": s.admitted, "unsettled": s.used, "slowed": s.slowed}

    async def read(self, max_records: int) -> tuple[Sequence[bytes], Sequence[Record]]:
        recs = await self._src.next_batch(max_records, timeout_s=READ_WAIT_S)
        if isinstance(recs, RecordBatch):  # its payload column, as the hand loop's list
            return recs.payloads, recs
        return [r.payload for r in recs], recs

    async def ack(self, token: Sequence[Record]) -> None:
        await ack_all(token)


class _HandConn:
    __slots__ = ("ws", "unanswered")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.unanswered: set[str] = set()


#: The fields a byteor-ws-1 record object may have.
_FIELDS = frozenset(
    {"id", "payload", "payload_b64", "key", "key_b64", "headers", "idempotency_key"}
)

_HELLO = json.dumps(
    {
        "hello": {
            "protocol": PROTOCOL,
            "max_in_flight": MAX_IN_FLIGHT,
            "capacity": CAPACITY,
            "max_message_bytes": MAX_MESSAGE_BYTES,
        }
    }
)


class _HandSource(LoadedSource[list[tuple[_HandConn, str]]]):
    def __init__(self, peer: Peer, target: str, reports: Reports) -> None:
        super().__init__(peer, target, reports)
        self._queue: deque[tuple[bytes, _HandConn, str]] = deque()
        self._changed = asyncio.Event()
        self._server: Server | None = None
        self._used = self._admitted = self._slowed = 0

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _HandConn(ws)
        await ws.send(_HELLO)
        async for message in ws:
            doc = json.loads(message)
            objs = doc if isinstance(doc, list) else [doc]
            n = len(objs)
            if len(conn.unanswered) + n > MAX_IN_FLIGHT or self._used + n > CAPACITY:
                self._slowed += 1
                ids = [o["id"] for o in objs]
                await ws.send(json.dumps({"slow": ids, "retry_after_ms": 100,
                                          "resume_from": ids[0], "reason": "full"}))  # fmt: skip
                continue
            taken: list[tuple[bytes, _HandConn, str]] = []
            seen: set[str] = set()
            try:
                for o in objs:
                    rid = o["id"]
                    if not isinstance(rid, str) or not 0 < len(rid) <= 256:
                        raise ValueError("id must be a string of 1 to 256 characters")
                    if rid in conn.unanswered or rid in seen:
                        raise ValueError(f"id {rid!r} is already unanswered")
                    if not _FIELDS.issuperset(o):
                        raise ValueError(f"unknown field in {sorted(o)}")
                    seen.add(rid)
                    text = o.get("payload")
                    if text is not None:
                        payload = text.encode()
                    else:
                        payload = base64.b64decode(o["payload_b64"], validate=True)
                    taken.append((payload, conn, rid))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                await ws.send(json.dumps({"error": str(exc), "ids": []}))
                continue
            self._queue.extend(taken)
            conn.unanswered |= seen
            self._used += n
            self._admitted += n
            self._changed.set()

    async def serve(self) -> str:
        self._server = await serve(
            self._handle,
            HOST,
            0,
            compression=None,
            max_size=MAX_MESSAGE_BYTES,
            server_header=None,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://{HOST}:{port}{PATH}"

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def counts(self) -> dict[str, int]:
        return {"admitted": self._admitted, "unsettled": self._used, "slowed": self._slowed}

    async def read(self, max_records: int) -> tuple[Sequence[bytes], list[tuple[_HandConn, str]]]:
        if not self._queue:
            self._changed.clear()
            try:
                async with asyncio.timeout(READ_WAIT_S):
                    await self._changed.wait()
            except TimeoutError:
                return [], []
        queue = self._queue
        taken = [queue.popleft() for _ in range(min(max_records, len(queue)))]
        return [p for p, _, _ in taken], [(c, rid) for _, c, rid in taken]

    async def ack(self, token: list[tuple[_HandConn, str]]) -> None:
        by_conn: dict[_HandConn, list[str]] = defaultdict(list)
        for conn, rid in token:
            by_conn[conn].append(rid)
        self._used -= len(token)
        for conn, ids in by_conn.items():
            conn.unanswered.difference_update(ids)
            with contextlib.suppress(ConnectionClosed):  # a client gone: it sends them again
                await conn.ws.send(json.dumps({"ack": ids}))


# -- the sink sides ------------------------------------------------------------------------


class _OursSink(SinkSide[list[OutRecord]]):
    def __init__(self, case: WebSocketCase, target: str, plan: Plan) -> None:
        self._case, self._target, self._plan = case, target, plan
        self._sink: WebSocketSink | None = None

    async def open(self) -> None:
        url = await self._case.receiver(self._target, self._plan)
        self._sink = WebSocketSink(url, message_records=self._plan.batch)
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
    def __init__(self, case: WebSocketCase, target: str, plan: Plan) -> None:
        self._case, self._target, self._plan = case, target, plan
        self._ws: ClientConnection | None = None
        self._next = 0

    async def open(self) -> None:
        url = await self._case.receiver(self._target, self._plan)
        self._ws = await connect(url, compression=None, max_size=16 << 20, proxy=None)
        hello = json.loads(await self._ws.recv())["hello"]
        if hello["protocol"] != PROTOCOL:
            raise BenchFailure(f"the receiver speaks {hello['protocol']!r}")

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[bytes]]:
        return [list(items[i : i + batch]) for i in range(0, len(items), batch)]

    async def write(self, batch: list[bytes]) -> None:
        ws = self._ws
        assert ws is not None
        ids = [str(self._next + i) for i in range(len(batch))]
        self._next += len(batch)
        await ws.send(hand_message(batch, ids))
        waiting = set(ids)
        async with asyncio.timeout(ACK_WAIT_S):
            while waiting:
                doc = json.loads(await ws.recv())
                if "ack" not in doc:
                    raise BenchFailure(f"the receiver answered {str(doc)[:200]}")
                waiting.difference_update(doc["ack"])

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


# -- the case ------------------------------------------------------------------------------


class WebSocketCase(ServedCase):
    name = "websocket"
    client = "websockets"
    records = 150_000
    peer_entry = "byteor.bench.adapters.websocket:WebSocketPeer"
    ours_source = (
        "WebSocketSource next_batch + ack_all(batch) (ack frames from the connection's"
        " writer); loaded by one client sending messages of a batch within the 1,000-record"
        " window (peer process)"
    )
    hand_source = (
        "websockets server: hello, json.loads + base64 of every record (fields, ids and base64"
        " checked), payloads queued with connection and id, one ack frame per batch; same"
        " client load"
    )
    ours_sink = "WebSocketSink.write_batch (a message of the batch, returns once all acked)"
    hand_sink = (
        "websockets client: the same message (id + BLAKE2b key per record) per batch, frames"
        " read until every id is acked; to the same WebSocketSource in a peer process"
    )

    def source(self, impl: Impl, target: str, plan: Plan) -> SourceSide[Any]:
        cls = _OursSource if impl == "ours" else _HandSource
        return cls(self.peer, target, self.reports)

    def sink(self, impl: Impl, target: str, plan: Plan) -> SinkSide[Any]:
        cls = _OursSink if impl == "ours" else _HandSink
        return cls(self, target, plan)

    async def server(self) -> str:
        from websockets.version import version  # noqa: PLC0415 - its version only

        return f"websockets {version} in this process, the peer in its own"


# -- the peer process ----------------------------------------------------------------------


class WebSocketPeer(CasePeer):
    """Loads a source with one client keeping the server's window; receives with a
    WebSocketSource."""

    def build(self, plan: Plan) -> list[tuple[str, int]]:
        items = payloads(plan)
        out = []
        for i in range(0, plan.records, plan.batch):
            recs = [OutRecord(p) for p in items[i : i + plan.batch]]
            ids = [str(i + j) for j in range(len(recs))]
            out.append((encode_message(recs, ids), len(recs)))
        return out

    async def load(self, prepared: list[tuple[str, int]], address: str) -> dict[str, Any]:
        records = sum(n for _, n in prepared)
        heard = bytearray(records)
        acked = in_flight = 0
        problem: list[str] = []
        changed = asyncio.Event()
        async with connect(address, compression=None, max_size=16 << 20, proxy=None) as ws:
            hello = json.loads(await ws.recv())["hello"]
            window = min(int(hello["max_in_flight"]), int(hello["capacity"]))

            async def answers() -> None:
                nonlocal acked, in_flight
                async for message in ws:
                    doc = json.loads(message)
                    ids = doc.get("ack")
                    if ids is None:
                        problem.append(f"the server answered {str(doc)[:200]}")
                    else:
                        for rid in ids:
                            i = int(rid)
                            if heard[i]:
                                problem.append(f"id {rid} acknowledged twice")
                            heard[i] = 1
                        acked += len(ids)
                        in_flight -= len(ids)
                    changed.set()
                    if acked == records or problem:
                        return

            reader = asyncio.create_task(answers())
            try:
                for message, n in prepared:
                    while in_flight + n > window and not problem:
                        changed.clear()
                        async with asyncio.timeout(ACK_WAIT_S):
                            await changed.wait()
                    if problem:
                        break
                    await ws.send(message)
                    in_flight += n
                async with asyncio.timeout(ACK_WAIT_S):
                    await reader
            finally:
                reader.cancel()
        if problem:
            raise BenchFailure(problem[0])
        return {"records": records, "acked": acked, "messages": len(prepared), "window": window}

    async def receiver(self) -> tuple[WebSocketSource, str]:
        src = WebSocketSource(HOST, 0, path=PATH, capacity=CAPACITY, max_in_flight=MAX_IN_FLIGHT)
        await src.start()
        return src, src.url
