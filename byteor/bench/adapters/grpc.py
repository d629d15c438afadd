"""gRPC: ``GrpcSource``/``GrpcSink`` against ``grpc.aio`` with the generated stubs, by hand.

Both sides use ``byteor.v1.Records/Publish`` (``byteor/adapters/_grpc_gen``): records with
ids one way, ``acked_through`` the other. The counterpart runs in a peer process
(:mod:`._peer`), the same for ours and the hand loop.

Source: the peer is one client on one ``Publish`` stream, writing requests of ``batch``
records (ids 1..n, each request serialized before the run) while at most 1,000 records are
unacknowledged (the source's ``max_in_flight``), reading ``acked_through`` until it reaches
the last id, then half-closing and expecting the call to end OK. Ours: ``GrpcSource``,
``next_batch`` + ``ack_all``. By hand: a ``RecordsServicer`` (the generated base class) on a
``grpc.aio`` server with the same options, whose ``Publish`` reads the request iterator into
a queue of payloads with their key, headers, stream and id, and writes ``acked_through`` of
the last id a batch acknowledged; the call ends once the client half-closed and heard every
id. The clock stops when the client has heard its last id.

The hand loop delivers what ours does: each record's key and headers when present
(``HasField("key")``, the headers when the list is not empty), as a consumer of this
service needs them. The load carries none, so that is a presence check per record; before
it was added the hand loop skipped it. Two runs each on a shared machine (load 2.5-3.0),
with GrpcSource as of the same commit: without the check, hand 0.8 us a record of CPU
against ours 1.0-1.1, source 0.69x and 1.09x wall; with it, hand 1.0, ours 1.1-1.2, 0.89x
and 0.97x.

Sink: the peer hosts a ``GrpcSource`` drained by a checking loop acknowledging with
``ack_all``. Ours: ``GrpcSink.write_batch`` (a request of the batch, returns once every record
is acknowledged). By hand: ``RecordsStub.Publish`` on one channel; per batch a
``PublishRequest`` of ``Record(id, payload)`` built in the timed loop, written, then
responses read until ``acked_through`` covers its last id. (GrpcSink fills its requests in
place, ``records.add()`` then the fields, ~2.5 times as fast as this constructor path in a
single-process measurement; a hand loop written that way would gain as much.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from byteor.adapters import Headers, OutRecord, Record, RecordBatch, ack_all
from byteor.adapters._grpc_gen import stream_pb2 as pb
from byteor.adapters._grpc_gen import stream_pb2_grpc as pb_grpc
from byteor.adapters.grpc import PUBLISH, GrpcSink, GrpcSource, server_options
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

__all__ = ["GrpcCase", "GrpcPeer"]

HOST = "127.0.0.1"
#: GrpcSource's defaults, kept by the hand-written server and the client's window.
MAX_IN_FLIGHT, MAX_MESSAGE_BYTES = 1_000, 4 << 20
#: How long a client waits for an acknowledgement before the run fails as stuck.
ACK_WAIT_S = 30.0


# -- the source sides ----------------------------------------------------------------------


class _OursSource(LoadedSource[Sequence[Record]]):
    def __init__(self, peer: Peer, target: str, reports: Reports) -> None:
        super().__init__(peer, target, reports)
        self._src = GrpcSource(HOST, 0, max_in_flight=MAX_IN_FLIGHT)
        self._admitted = 0

    async def serve(self) -> str:
        await self._src.start()
        return self._src.address

    async def shutdown(self) -> None:
        await self._src.stop()

    def counts(self) -> dict[str, int]:
        # Every record a client sent is handed out here once (one client, no failure), so
        # what the loop took is what was admitted; none is left in the buffer.
        return {"admitted": self._admitted, "unsettled": self._src.health().lag or 0}

    async def read(self, max_records: int) -> tuple[Sequence[bytes], Sequence[Record]]:
        recs = await self._src.next_batch(max_records, timeout_s=READ_WAIT_S)
        self._admitted += len(recs)
        if isinstance(recs, RecordBatch):  # its payload column, as the hand loop's list
            return recs.payloads, recs
        return [r.payload for r in recs], recs

    async def ack(self, token: Sequence[Record]) -> None:
        await ack_all(token)


class _HandStream:
    """One Publish call: the highest id acknowledged, and what was written back."""

    __slots__ = ("through", "written", "last", "eof", "wake")

    def __init__(self) -> None:
        self.through = self.written = self.last = 0
        self.eof = False
        self.wake = asyncio.Event()


class _HandServicer(pb_grpc.RecordsServicer):
    def __init__(self, side: _HandSource) -> None:
        self._side = side

    async def Publish(
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        stream = _HandStream()
        side = self._side

        async def read() -> None:
            async for req in request_iterator:
                for r in req.records:
                    # What a consumer needs of each record, as GrpcSource delivers it: the
                    # key and headers when present (this load carries none).
                    key = r.key if r.HasField("key") else None
                    hs = r.headers
                    headers = tuple((h.name, h.value) for h in hs) if hs else ()
                    side.queue.append((r.payload, key, headers, stream, r.id))
                stream.last = req.records[-1].id if req.records else stream.last
                side.admitted += len(req.records)
                side.changed.set()
            stream.eof = True
            stream.wake.set()

        reader = asyncio.create_task(read())
        try:
            while not (stream.eof and stream.written == stream.last):
                await stream.wake.wait()
                stream.wake.clear()
                if stream.through > stream.written:
                    stream.written = stream.through
                    await context.write(pb.PublishResponse(acked_through=stream.through))
        finally:
            reader.cancel()


class _HandSource(LoadedSource[list[tuple[_HandStream, int]]]):
    def __init__(self, peer: Peer, target: str, reports: Reports) -> None:
        super().__init__(peer, target, reports)
        self.queue: deque[tuple[bytes, bytes | None, Headers, _HandStream, int]] = deque()
        self.changed = asyncio.Event()
        self.admitted = self.unsettled = 0
        self._server: grpc.aio.Server | None = None

    async def serve(self) -> str:
        server = grpc.aio.server(options=server_options(MAX_MESSAGE_BYTES))
        pb_grpc.add_RecordsServicer_to_server(_HandServicer(self), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port(f"{HOST}:0")
        await server.start()
        self._server = server
        return f"{HOST}:{port}"

    async def shutdown(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    def counts(self) -> dict[str, int]:
        return {"admitted": self.admitted, "unsettled": self.unsettled + len(self.queue)}

    async def read(self, max_records: int) -> tuple[Sequence[bytes], list[tuple[_HandStream, int]]]:
        if not self.queue:
            self.changed.clear()
            try:
                async with asyncio.timeout(READ_WAIT_S):
                    await self.changed.wait()
            except TimeoutError:
                return [], []
        queue = self.queue
        taken = [queue.popleft() for _ in range(min(max_records, len(queue)))]
        self.unsettled += len(taken)
        return [t[0] for t in taken], [(t[3], t[4]) for t in taken]

    async def ack(self, token: list[tuple[_HandStream, int]]) -> None:
        self.unsettled -= len(token)
        for stream, rid in token:  # in order per stream: the last one is the highest
            stream.through = rid
        for stream in {s for s, _ in token}:
            stream.wake.set()


# -- the sink sides ------------------------------------------------------------------------


class _OursSink(SinkSide[list[OutRecord]]):
    def __init__(self, case: GrpcCase, target: str, plan: Plan) -> None:
        self._case, self._target, self._plan = case, target, plan
        self._sink: GrpcSink | None = None

    async def open(self) -> None:
        address = await self._case.receiver(self._target, self._plan)
        self._sink = GrpcSink(address, batch_records=self._plan.batch)
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
    def __init__(self, case: GrpcCase, target: str, plan: Plan) -> None:
        self._case, self._target, self._plan = case, target, plan
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._next = 1

    async def open(self) -> None:
        address = await self._case.receiver(self._target, self._plan)
        self._channel = grpc.aio.insecure_channel(address)
        await asyncio.wait_for(self._channel.channel_ready(), 10.0)
        stub: Any = pb_grpc.RecordsStub(self._channel)  # type: ignore[no-untyped-call]
        self._call = stub.Publish()

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[bytes]]:
        return [list(items[i : i + batch]) for i in range(0, len(items), batch)]

    async def write(self, batch: list[bytes]) -> None:
        first = self._next
        self._next += len(batch)
        last = self._next - 1
        recs = [pb.Record(id=first + i, payload=p) for i, p in enumerate(batch)]
        await self._call.write(pb.PublishRequest(records=recs))
        async with asyncio.timeout(ACK_WAIT_S):
            while True:
                resp = await self._call.read()
                if resp is grpc.aio.EOF or resp.nacked:
                    raise BenchFailure(f"the receiver ended the stream or nacked: {resp}")
                if resp.acked_through >= last:
                    return

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()


# -- the case ------------------------------------------------------------------------------


class GrpcCase(ServedCase):
    name = "grpc"
    client = "grpcio"
    records = 250_000
    peer_entry = "byteor.bench.adapters.grpc:GrpcPeer"
    ours_source = (
        "GrpcSource next_batch + ack_all(batch) (acked_through on the response stream);"
        " loaded by one client on one Publish stream within the 1,000-record window (peer"
        " process)"
    )
    hand_source = (
        "RecordsServicer on grpc.aio: request iterator into a queue of payloads with key,"
        " headers (when present), stream and id, acked_through of each acknowledged batch"
        " written; same client load"
    )
    ours_sink = "GrpcSink.write_batch (one request of the batch, returns once all acked)"
    hand_sink = (
        "RecordsStub.Publish: a PublishRequest of Record(id, payload) per batch, responses read"
        " until acked_through covers it; to the same GrpcSource in a peer process"
    )

    def source(self, impl: Impl, target: str, plan: Plan) -> SourceSide[Any]:
        cls = _OursSource if impl == "ours" else _HandSource
        return cls(self.peer, target, self.reports)

    def sink(self, impl: Impl, target: str, plan: Plan) -> SinkSide[Any]:
        cls = _OursSink if impl == "ours" else _HandSink
        return cls(self, target, plan)

    async def server(self) -> str:
        return f"grpcio {grpc.__version__} (grpc.aio) in this process, the peer in its own"


# -- the peer process ----------------------------------------------------------------------


class GrpcPeer(CasePeer):
    """Loads a source on one Publish stream keeping 1,000 unacknowledged; receives with a
    GrpcSource."""

    def build(self, plan: Plan) -> list[tuple[bytes, int]]:
        items = payloads(plan)
        out = []
        for i in range(0, plan.records, plan.batch):
            chunk = items[i : i + plan.batch]
            recs = [pb.Record(id=i + j + 1, payload=p) for j, p in enumerate(chunk)]
            out.append((pb.PublishRequest(records=recs).SerializeToString(), i + len(chunk)))
        return out

    async def load(self, prepared: list[tuple[bytes, int]], address: str) -> dict[str, Any]:
        records = prepared[-1][1] if prepared else 0
        through = 0
        problem: list[str] = []
        changed = asyncio.Event()
        async with grpc.aio.insecure_channel(address) as channel:
            publish: Any = channel.stream_stream(  # bytes in: serialized in build()
                PUBLISH, response_deserializer=pb.PublishResponse.FromString
            )
            call: Any = publish()

            async def answers() -> None:
                nonlocal through
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        return
                    if resp.nacked or resp.acked or resp.acked_through < through:
                        problem.append(f"the server answered {resp}")
                    through = max(through, resp.acked_through)
                    changed.set()

            reader = asyncio.create_task(answers())
            try:
                for raw, last in prepared:
                    while last - through > MAX_IN_FLIGHT and not problem:
                        changed.clear()
                        async with asyncio.timeout(ACK_WAIT_S):
                            await changed.wait()
                    if problem:
                        break
                    await call.write(raw)
                while through < records and not problem:
                    changed.clear()
                    async with asyncio.timeout(ACK_WAIT_S):
                        await changed.wait()
                await call.done_writing()
                async with asyncio.timeout(ACK_WAIT_S):
                    await reader
                code = await call.code()
            finally:
                reader.cancel()
        if problem:
            raise BenchFailure(problem[0])
        if code != grpc.StatusCode.OK:
            raise BenchFailure(f"the Publish call ended {code.name}")
        return {"records": records, "acked": through, "requests": len(prepared)}

    async def receiver(self) -> tuple[GrpcSource, str]:
        src = GrpcSource(HOST, 0, max_in_flight=MAX_IN_FLIGHT)
        await src.start()
        return src, src.address
