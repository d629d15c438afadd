"""The edge processes: a source's adapter into its ingress lane, an egress lane into a sink.

Theory of operation
-------------------
**Stamps.** Every record on every lane of an EdgePlane run is framed as an 8-byte
little-endian *low stamp*, its key and headers when it has them, and its payload
(:mod:`byteor.edgeplane._frame`: a record with neither costs the stamp alone). The edge-in
takes key and headers from the source's records, the edge-out gives them to the sink's
:class:`~byteor.adapters.OutRecord`. The edge-in process stamps each record it
admits with its ingress sequence (its position in the ingress lane: sequences start at 0 with
the lanes, and every admitted record is published, in order). Stages stamp their outputs
(:mod:`byteor.edgeplane._stages`), so a stamp on any lane is the lowest ingress sequence the
record may derive from, and stamps never decrease along a lane (EdgePlane refuses stages
that read several lanes, where they could).

**What a hop reports.** A hop is a stage or sink reading a lane with explicit release: it
gives the lane back only what it has finished (a stage: its outputs published; a sink: the
external system confirmed the write). After each release it stores in its status row
``released`` = 1 + the stamp of the last record it gave back. An op that holds records back
across batches (``batch``) also stores ``held`` = 1 + the lowest stamp it holds. So every
record of a hop's input lane at or after the hop's shared cursor has a stamp at or above
``released - 1``, and a hop's *unfinished* stamp (``byteor.kernel.watermark``) is:
nothing (``None``) when its cursor has reached the lane's published count and it holds
nothing; else the least of ``released - 1`` (0 before any release) and ``held - 1``. This is
at most one record's stamp below the exact value (the last record released shares it), and
never above it.

**Reading in flow order.** The edge-in process computes the done-watermark of its source:
its own published count first, then, hop by hop from the ingress lane towards the sinks,
each hop's status words and then its lane cursors. A hop writes ``released`` after its
release, so a reader that loads the words first and the cursor second sees either the old
word with any cursor (lower: safe) or the new word with the new cursor. A record a later hop
has not got yet was still unreleased at the hop before it when that hop was read (a stage
releases its input only after publishing the outputs). ``held`` is lowered before the
records it covers are released and raised only after what it emitted is published (see
``_stages``). So the watermark never passes a record in flight: :func:`done_watermark`
takes the minimum over every path.

**Acknowledging.** Admitted records wait in :class:`PendingBatches`, one entry per batch
(not per record: at tens of thousands of records a second an object per record is the
bill), until the watermark passes them; then they are acknowledged with
:func:`~byteor.adapters.ack_all`, in admission order, so the adapter commits upstream in
order and never ahead of the watermark. Sources whose records carry no acknowledgement (a
file, a generator) only count. A source's :class:`~byteor.adapters.RecordBatch` is framed
from its columns and, once the watermark passed all of it, acknowledged whole: no record is
made for it (a batch the watermark cuts is made into records for the part it passed).

**Latency.** For each admitted batch the edge-in records, before publishing it, its first
ingress sequence and the monotonic time it was read in its admission ring; after a confirmed
write the edge-out looks the write's first stamp up in the ring of its lane's source and
counts the write in its histograms (:mod:`byteor.edgeplane._status`): a few word stores a
batch, nothing a record.

**Back-pressure.** When the ingress lane has no room, or more records are unacknowledged
than the window allows (the lanes' capacities bound what is in flight unless an op holds
records back), the source is paused (``Source.pause``: no more fetching upstream) and the
edge-in waits; it resumes when the lane takes the rest. A stopped sink therefore fills its
lane, the stages wait on full outputs, the ingress lane fills, and the source stops reading:
memory stays bounded by the lanes plus one batch per process.

**Stopping.** On a stop request (the supervisor's flag) or the end of a finite source the
edge-in stops reading, closes the ingress lane (the stages drain and close theirs, the sinks
drain theirs and stop), waits until the watermark reaches everything it published, makes the
final acknowledgement and stops the adapter, which flushes its acknowledgements upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final, TypeVar

from byteor.adapters import (
    Ack,
    AdapterError,
    Backoff,
    Headers,
    Health,
    OutRecord,
    Record,
    RecordBatch,
    Sink,
    Source,
    ack_all,
)
from byteor.edgeplane._frame import (
    STAMP,
    STAMP_BYTES,
    STAMP_MASK,
    FrameError,
    any_tagged,
    frame,
    out_record,
    payload_of,
    stamp_of,
)
from byteor.edgeplane._status import (
    CONNECTED,
    ENDED,
    PAUSED,
    STARTED,
    W_ACKED,
    W_COMMITTED,
    W_HELD,
    W_LAG,
    W_NACKED,
    W_PAUSES,
    W_RECORDS,
    W_RELEASED,
    W_WATERMARK,
    AdmissionRing,
    LatencyBlock,
    StatusRow,
)
from byteor.exec import RecordSink, RecordSource, open_sink, open_source
from byteor.kernel.watermark import AckPath, done_watermark
from byteor.lanes import (
    Consumer,
    ConsumerError,
    Lane,
    LaneClosed,
    LaneTimeout,
    MessageTooLarge,
    Producer,
    RowWriter,
    WouldBlock,
)

__all__ = [
    "STAMP",
    "STAMP_BYTES",
    "LOCAL_ADAPTERS",
    "LocalSource",
    "LocalSink",
    "Hop",
    "WatermarkReader",
    "PendingBatches",
    "EdgeIn",
    "EdgeOut",
    "EdgeFailed",
    "SINK_RETRY",
]

log = logging.getLogger("byteor.edgeplane.edge")
_T = TypeVar("_T")

#: Adapters the edge processes run from ``byteor.exec``'s local sources and sinks.
LOCAL_ADAPTERS: Final = frozenset({"file", "stdin", "stdout", "generator"})
#: Retrying a sink's failed write (retriable errors only): forever, at most 5 s apart; a sink
#: that stays down fills the lanes and pauses the source, as back-pressure should.
SINK_RETRY: Final = Backoff(initial_s=0.05, max_s=5.0)
_HEALTH_EVERY_S: Final = 0.5
_ACK_BUSY_S: Final = 0.002  # the acknowledger's pace while records are unacknowledged
_ACK_IDLE_S: Final = 0.02  # ... and while nothing is
_READ_WAIT_S: Final = 0.05  # the longest a source read waits: bounds how late a stop is seen


class EdgeFailed(Exception):
    """An edge cannot go on (a record too large for its lane, say): the message says why.

    Attributes:
        retriable: whether restarting the data plane could help.
    """

    def __init__(self, message: str, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


# -- local adapters -----------------------------------------------------------------------------


class LocalSource(Source):
    """A ``byteor.exec`` local source (file, stdin, generator) as an adapter source.

    Its records carry no acknowledgement (``needs_ack`` is false): nothing upstream keeps
    them, so a restarted run reads a file or a generator again from its start, and stdin
    cannot be read again at all (``replayable``). ``ended`` turns true at its end.
    """

    needs_ack = False

    def __init__(self, records: RecordSource, *, replayable: bool = True) -> None:
        self._records = records
        self.replayable = replayable
        self.ended = False
        self._paused = False
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def next_payloads(self, max_records: int, timeout_s: float = 0.0) -> list[bytes]:
        """Up to ``max_records`` payloads; ``[]`` when nothing is there within ``timeout_s``
        (or the source ended: see ``ended``)."""
        if self.ended or self._paused:
            return []
        got = self._records.poll(max_records)
        if got is None:
            self.ended = True
            return []
        if got or timeout_s <= 0:
            return got
        fd = self._records.fileno()
        if fd is None:
            return got
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, readable)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready, timeout_s)
        finally:
            loop.remove_reader(fd)
        got = self._records.poll(max_records)
        if got is None:
            self.ended = True
            return []
        return got

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> list[Record]:
        payloads = await self.next_payloads(max_records, timeout_s)
        return [Record(p, None, (), None, Ack()) for p in payloads]

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    async def stop(self) -> None:
        self._records.close()

    def health(self) -> Health:
        return Health(connected=self._started)


class LocalSink(Sink):
    """A ``byteor.exec`` local sink (file, stdout) as an adapter sink.

    A write is confirmed once it is in the process's buffer: local sources keep no
    acknowledgements to commit (a restarted run reads its file or generator again from the
    start, and the file sink starts its file again), so there is nothing to confirm
    durably per batch; the file is flushed and synced at the end. ``flush_each`` flushes
    every batch (stdout: records show up as they come).
    """

    def __init__(self, records: RecordSink, *, flush_each: bool = False) -> None:
        self._records = records
        self._flush_each = flush_each
        self._started = False

    async def start(self) -> None:
        self._started = True

    def write_payloads(self, payloads: Sequence[bytes | memoryview]) -> None:
        """Write (views are fine: they are joined into one buffer first)."""
        self._records.write(payloads)  # type: ignore[arg-type]
        if self._flush_each:
            self._records.flush()

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        self.write_payloads([r.payload for r in records])

    async def stop(self) -> None:
        if self._started:
            self._started = False
            self._records.close()

    def health(self) -> Health:
        return Health(connected=self._started)


def open_local_source(name: str, adapter: str, params: Mapping[str, str]) -> LocalSource:
    """The local source of ``source.<name>`` (raises ``byteor.exec`` config errors)."""
    return LocalSource(open_source(name, adapter, params), replayable=adapter != "stdin")


def open_local_sink(name: str, adapter: str, params: Mapping[str, str]) -> LocalSink:
    return LocalSink(open_sink(name, adapter, params), flush_each=adapter == "stdout")


# -- the watermark ------------------------------------------------------------------------------


class _Cursor:
    """One consumer's shared cursor and its lane's published count, read from the segment
    (two word loads: the watermark is read often, and ``statistics()`` builds a record per
    consumer and looks at ``/proc``)."""

    def __init__(self, lane: Lane, reader: str) -> None:
        try:
            self._q, self._c, self._p = lane.cursor_words(reader)
        except ConsumerError as exc:
            raise EdgeFailed(str(exc)) from None

    def read(self) -> tuple[int, int]:
        q = self._q
        consumed = q[self._c]  # the consumer's cursor first, then the count it is behind
        return int(consumed), int(q[self._p])


@dataclass(frozen=True, slots=True)
class Hop:
    """A stage or sink on a source's paths: the lane it reads and its status row.

    Attributes:
        name: the node.
        kind: ``stage`` or ``sink``.
        lane: the input lane (a handle of this process).
        reader: its consumer's name on that lane (``default`` on an events lane).
        row: its status row.
    """

    name: str
    kind: str
    lane: Lane
    reader: str
    row: StatusRow


class WatermarkReader:
    """The done-watermark of one source (see the module docstring).

    Args:
        hops: every hop reachable from the source's ingress lane, in flow order (each after
            the hop that feeds it).
        paths: each path from the ingress lane to a leaf (a sink, or a stage without
            outputs), as indexes into ``hops``.
    """

    def __init__(self, hops: Sequence[Hop], paths: Sequence[Sequence[int]]) -> None:
        if not paths:
            raise ValueError("a source needs at least one path")
        self.hops = tuple(hops)
        self.paths = tuple(tuple(p) for p in paths)
        self._cursors = [_Cursor(h.lane, h.reader) for h in self.hops]
        self._rows = [(h.row.q, h.row.base) for h in self.hops]

    def unfinished(self) -> list[int | None]:
        """Each hop's unfinished stamp, read in flow order."""
        out: list[int | None] = []
        for (q, base), cursor in zip(self._rows, self._cursors, strict=True):
            released = int(q[base + W_RELEASED])  # the words before the cursors
            held = int(q[base + W_HELD])
            consumed, published = cursor.read()
            stamp = None if consumed >= published else max(0, released - 1)
            if held and (stamp is None or held - 1 < stamp):
                stamp = held - 1
            out.append(stamp)
        return out

    def watermark(self, published: int) -> int:
        """Every ingress sequence below the result is done.

        Args:
            published: the ingress lane's published count, read before this call.
        """
        states = self.unfinished()
        paths = []
        for path in self.paths:
            last = self.hops[path[-1]]
            if last.kind == "sink":
                paths.append(
                    AckPath(tuple(states[i] for i in path[:-1]), confirmed=states[path[-1]])
                )
            else:
                paths.append(AckPath(tuple(states[i] for i in path)))
        return done_watermark(paths, published)


class PendingBatches:
    """Admitted records waiting for the watermark: one entry per admitted batch."""

    def __init__(self) -> None:
        self._batches: deque[tuple[int, Sequence[Record]]] = deque()
        self.count = 0

    def add(self, first: int, records: Sequence[Record]) -> None:
        """``records`` got the ingress sequences ``first``, ``first + 1``, ..."""
        self._batches.append((first, records))
        self.count += len(records)

    def release(self, watermark: int) -> list[Record]:
        """Every record with a sequence below ``watermark``, in sequence order (once)."""
        return [r for run in self.release_runs(watermark) for r in run]

    def release_runs(self, watermark: int) -> list[Sequence[Record]]:
        """What :meth:`release` gives, as runs to settle with one ``ack_all`` each: a
        :class:`RecordBatch` below the watermark whole, as it was added (it settles whole,
        without its records), the rest in lists (a part of a batch made into records)."""
        runs: list[Sequence[Record]] = []
        loose: list[Record] | None = None  # the list run being filled, if the last is one
        batches, released = self._batches, 0
        while batches and batches[0][0] < watermark:
            first, records = batches[0]
            take = watermark - first
            if take >= len(records):
                batches.popleft()
                part: Sequence[Record] = records
            else:
                part = records[:take]
                batches[0] = (watermark, records[take:])
            released += len(part)
            if isinstance(part, RecordBatch):
                runs.append(part)
                loose = None
            else:
                if loose is None:
                    loose = []
                    runs.append(loose)
                loose += part
            if take < len(records):
                break
        self.count -= released
        return runs


# -- edge-in ------------------------------------------------------------------------------------


def _publish_now(tx: Producer, frames: list[bytes]) -> int:
    """Publish as many of ``frames`` as fit now, in order; returns how many."""
    done = 0
    total = len(frames)
    while done < total:
        try:
            done += tx.send_batch_nowait(frames[done:] if done else frames)
        except WouldBlock:
            break
    return done


class EdgeIn:
    """Runs one source: its adapter into its ingress lane, acknowledgements at the watermark.

    Args:
        name: the source's name.
        adapter: the adapter's name (for messages).
        source: the adapter source (or a :class:`LocalSource`).
        tx: the ingress lane's producer.
        reader: the source's :class:`WatermarkReader`.
        row: its status row.
        counters: its counters row (records in and out, busy time), if the run has one.
        batch: most records one read asks for.
        window: most records admitted and not yet acknowledged.
        stop: true once the run should stop (checked between reads).
        clock: monotonic seconds.
        latency: its latency block: each read's time, each batch's admission in its ring.
    """

    def __init__(
        self,
        name: str,
        adapter: str,
        source: Source,
        tx: Producer,
        reader: WatermarkReader,
        row: StatusRow,
        counters: RowWriter | None = None,
        *,
        batch: int = 256,
        window: int = 65536,
        stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        latency: LatencyBlock | None = None,
    ) -> None:
        if batch < 1 or window < batch:
            raise ValueError("batch must be >= 1 and window >= batch")
        self.name = name
        self.adapter = adapter
        self.source = source
        self.tx = tx
        self.reader = reader
        self.row = row
        self.counters = counters
        self.batch = batch
        self.window = window
        self._stop = stop
        self._clock = clock
        self.latency = latency
        self.needs_ack = bool(getattr(source, "needs_ack", True))
        self.pending = PendingBatches()
        self.admitted = 0
        self.acked = 0
        self.committed = 0
        self.pauses = 0
        self.watermark = 0
        self._busy_ns = 0
        self._reading_done = False
        self._progress = asyncio.Event()  # the watermark moved (a paused pump looks again)

    @property
    def unacknowledged(self) -> int:
        return self.admitted - self.acked

    async def run(self) -> None:
        """Until the source ends or a stop is asked for, then drain and acknowledge all.

        Raises:
            AdapterError: the adapter failed (``retriable`` says if a restart could help).
            EdgeFailed: a record does not fit the ingress lane.
        """
        await self.source.start()
        self.row.flag(CONNECTED | STARTED, True)
        pump = asyncio.create_task(self._pump(), name=f"edge-in:{self.name}:pump")
        acker = asyncio.create_task(self._acker(), name=f"edge-in:{self.name}:ack")
        try:
            done, _ = await asyncio.wait({pump, acker}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises what failed
        finally:
            for task in (pump, acker):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        await self.source.stop()  # the adapter flushes its acknowledgements upstream
        self.committed = self.acked
        self.row.set(W_COMMITTED, self.committed)
        self.row.flag(ENDED, True)
        self._commit_counters()

    def _ended(self) -> bool:
        return bool(getattr(self.source, "ended", False))

    async def _pump(self) -> None:
        source, row, latency = self.source, self.row, self.latency
        local = source if isinstance(source, LocalSource) else None
        stamp = STAMP.pack
        while not self._stop() and not self._ended():
            room = self.window - self.unacknowledged
            if room <= 0:  # acknowledgements lag: an op holds records back, or a sink is slow
                await self._pause_until(lambda: self.window - self.unacknowledged > 0)
                continue
            want = min(self.batch, room)
            before = self.acked
            called = time.monotonic_ns()
            records: Sequence[Record] | None = None
            if local is not None:
                payloads = await local.next_payloads(want, _READ_WAIT_S)
                n = len(payloads)
            else:
                records = await source.next_batch(want, _READ_WAIT_S)
                n = len(records)
            # Acknowledgements settled before this read went upstream with it (or sooner).
            self.committed = max(self.committed, before)
            row.set(W_COMMITTED, self.committed)
            if not n:
                continue
            got = time.monotonic_ns()  # the batch's admission
            t0 = called if local is not None else got  # a local read is work (a generator's)
            first = self.admitted
            if latency is not None:  # before publishing: a sink finds what it has written
                latency.read(first, called, got)
            if records is None:
                frames = [stamp(first + i) + p for i, p in enumerate(payloads)]
            elif isinstance(records, RecordBatch):  # its columns: no record made
                frames = self._frames_of_columns(first, records)
            else:  # key and headers ride along when a record has them (_frame)
                frames = [
                    stamp(first + i) + r.payload
                    if r.key is None and not r.headers
                    else self._frame(first + i, r.payload, r.key, r.headers)
                    for i, r in enumerate(records)
                ]
            self.admitted = first + n
            if records is not None and self.needs_ack:
                self.pending.add(first, records)
            row.set(W_RECORDS, self.admitted)
            try:
                sent = _publish_now(self.tx, frames)
            except MessageTooLarge:
                raise self._too_large(frames) from None
            self._busy_ns += time.monotonic_ns() - t0
            if sent < n:
                await self._publish_paused(frames[sent:])
            self._commit_counters()
        self.tx.close()  # the stages drain what is in flight and close their lanes
        self._reading_done = True

    def _frames_of_columns(self, first: int, batch: RecordBatch) -> list[bytes]:
        """The frames of ``batch`` from its payload, key and headers columns, as the records
        would give them (a column of None: no record has any)."""
        stamp, payloads, keys, headers = STAMP.pack, batch.payloads, batch.keys, batch.headers
        if keys is None and headers is None:
            return [stamp(first + i) + p for i, p in enumerate(payloads)]
        return [
            stamp(first + i) + p if k is None and not h else self._frame(first + i, p, k, h)
            for i, (p, k, h) in enumerate(
                zip(
                    payloads,
                    repeat(None) if keys is None else keys,
                    repeat(()) if headers is None else headers,
                    strict=False,  # a column of None / () is a repeat
                )
            )
        ]

    def _frame(self, stamp: int, payload: bytes, key: bytes | None, headers: Headers) -> bytes:
        try:
            return frame(stamp, payload, key, headers)
        except ValueError as exc:
            raise EdgeFailed(f"source {self.name!r} ({self.adapter}): {exc}") from None

    def _too_large(self, frames: Sequence[bytes]) -> EdgeFailed:
        longest = max(map(len, frames)) - STAMP_BYTES
        tagged = " with its key and headers" if any_tagged(frames) else ""
        return EdgeFailed(
            f"source {self.name!r} ({self.adapter}) read a record of {longest} bytes{tagged}, "
            "more than its lane's slot_bytes: raise message_bytes (plan) or the lane's "
            "slot_bytes (spec)"
        )

    async def _publish_paused(self, rest: list[bytes]) -> None:
        """The ingress lane is full: pause the source until it has taken ``rest``."""
        self.source.pause()
        self.pauses += 1
        self.row.set(W_PAUSES, self.pauses)
        self.row.flag(PAUSED, True)
        try:
            await self.tx.send_batch_async(rest)
        except MessageTooLarge:
            raise self._too_large(rest) from None
        finally:
            self.row.flag(PAUSED, False)
            self.source.resume()

    async def _pause_until(self, ready: Callable[[], bool]) -> None:
        self.source.pause()
        self.pauses += 1
        self.row.set(W_PAUSES, self.pauses)
        self.row.flag(PAUSED, True)
        try:
            while not ready() and not self._stop():
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), _ACK_IDLE_S * 5)
        finally:
            self.row.flag(PAUSED, False)
            self.source.resume()

    def _commit_counters(self) -> None:
        counters = self.counters
        if counters is not None:
            counters.commit(
                self.admitted, self.tx.position, 0, 0, 0, self._busy_ns, time.monotonic_ns()
            )

    async def _acker(self) -> None:
        tx, row, pending = self.tx, self.row, self.pending
        next_health = 0.0
        while True:
            published = tx.position  # first: then the hops, in flow order
            mark = self.reader.watermark(published)
            if mark > self.watermark:
                self.watermark = mark
                row.set(W_WATERMARK, mark)
                if self.needs_ack:
                    for run in pending.release_runs(mark):  # a RecordBatch settles whole
                        await ack_all(run)
                        self.acked += len(run)
                else:
                    self.acked = mark
                    self.committed = mark
                    row.set(W_COMMITTED, mark)
                row.set(W_ACKED, self.acked)
                self._progress.set()
            now = self._clock()
            if now >= next_health:
                next_health = now + _HEALTH_EVERY_S
                self._health(self.source.health())
            if self._reading_done and self.watermark >= tx.position:
                return
            await asyncio.sleep(_ACK_BUSY_S if self.unacknowledged else _ACK_IDLE_S)

    def _health(self, health: Health) -> None:
        row = self.row
        row.flag(CONNECTED, health.connected)
        row.set(W_LAG, 0 if health.lag is None else health.lag + 1)
        if health.detail or not health.connected:
            row.set_detail(health.detail or "not connected")
        else:
            row.set_detail("")


# -- edge-out -----------------------------------------------------------------------------------


def _corrupt(record: memoryview | bytes, read: Callable[[memoryview | bytes], object]) -> bool:
    """Whether ``read`` finds ``record`` corrupt."""
    try:
        read(record)
    except FrameError:
        return True
    return False


class EdgeOut:
    """Runs one sink: its lane into its adapter; gives the lane back only what was confirmed.

    Args:
        name, adapter: the sink's name and adapter (for messages).
        sink: the adapter sink (or a :class:`LocalSink`).
        rx: its input lane's consumer, with explicit release.
        row: its status row.
        counters: its counters row, if the run has one.
        batch: most records one write takes.
        retry: the backoff between retries of a write that failed retriably.
        sleep: awaited between retries (tests pass a fake).
        lane: its input lane's name (for messages).
        latency: its latency block: each write's time, and with ``upstream`` (the admission
            ring of the source its lane comes from) each write's end-to-end latency.
    """

    def __init__(
        self,
        name: str,
        adapter: str,
        sink: Sink,
        rx: Consumer,
        row: StatusRow,
        counters: RowWriter | None = None,
        *,
        batch: int = 256,
        retry: Backoff = SINK_RETRY,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        lane: str = "?",
        latency: LatencyBlock | None = None,
        upstream: AdmissionRing | None = None,
    ) -> None:
        self.name = name
        self.adapter = adapter
        self.sink = sink
        self.rx = rx
        self.lane = lane
        self.row = row
        self.counters = counters
        self.batch = batch
        self.retry = retry
        self._sleep = sleep
        self._clock = clock
        self.taken = 0
        self.confirmed = 0
        self.failed_writes = 0
        self._busy_ns = 0
        self.latency = latency
        self.upstream = upstream

    async def run(self) -> None:
        """Until its lane is closed and drained, then stop the sink (it flushes).

        Raises:
            AdapterError: a write failed and may not be retried (``retriable`` false).
            EdgeFailed: a corrupt frame on its lane (:class:`~byteor.edgeplane._frame.FrameError`).
        """
        await self.sink.start()
        self.row.flag(CONNECTED | STARTED, True)
        rx, row, latency, upstream = self.rx, self.row, self.latency, self.upstream
        local = self.sink if isinstance(self.sink, LocalSink) else None
        next_health = 0.0
        unpack = STAMP.unpack_from
        while True:
            now = self._clock()
            if now >= next_health:
                next_health = now + _HEALTH_EVERY_S
                self._health(self.sink.health())
            try:
                frames = await rx.receive_batch_async(self.batch, timeout=_HEALTH_EVERY_S)
            except LaneTimeout:
                continue
            except LaneClosed:
                break
            t0 = time.monotonic_ns()
            first = unpack(frames[0])[0] & STAMP_MASK  # read before the release
            last = unpack(frames[-1])[0] & STAMP_MASK
            n = len(frames)
            self.taken += n
            tagged = any_tagged(frames)
            if local is not None:  # the views go straight into one write: no copy per record
                # a file holds payloads: keys and headers stop here
                payloads = (
                    self._unframe(frames, payload_of)
                    if tagged
                    else [f[STAMP_BYTES:] for f in frames]
                )
                called = time.monotonic_ns()
                local.write_payloads(payloads)
            else:
                records = (
                    self._unframe(frames, out_record)
                    if tagged
                    else [OutRecord(bytes(f[STAMP_BYTES:])) for f in frames]
                )
                called = time.monotonic_ns()
                await self._write(records)
            done = time.monotonic_ns()
            rx.release()  # the system has them: give the lane back, then say so
            row.set(W_RELEASED, last + 1)
            self.confirmed += n
            row.set(W_RECORDS, self.confirmed)
            if latency is not None:
                if upstream is None:
                    latency.adapter.observe(done - called)
                else:
                    latency.written(upstream, first, n, called, done)
            self._busy_ns += time.monotonic_ns() - t0
            self._commit_counters()
        await self.sink.stop()
        row.flag(ENDED, True)
        self._commit_counters()

    def _unframe(
        self, frames: Sequence[memoryview | bytes], read: Callable[[memoryview | bytes], _T]
    ) -> list[_T]:
        """``read`` of each frame; a corrupt frame stops the edge (:class:`EdgeFailed`)."""
        try:
            return [read(f) for f in frames]
        except FrameError as exc:
            at = next(i for i, f in enumerate(frames) if _corrupt(f, read))
            raise EdgeFailed(
                f"sink {self.name!r} ({self.adapter}) read a corrupt frame from lane "
                f"{self.lane!r} (record {at + 1} of a batch of {len(frames)}, stamp "
                f"{stamp_of(frames[at])}): {exc}. Nothing of the batch was written; lanes "
                "hold only frames the data plane made, so this is a bug in EdgePlane or a "
                "process writing into its segments: please report it with the log"
            ) from None

    async def _write(self, records: list[OutRecord]) -> None:
        attempt = 0
        while True:
            try:
                await self.sink.write_batch(records)
                if attempt:
                    self.row.flag(CONNECTED, True)
                    self.row.set_detail("")
                    log.info("sink %r writes again after %d failed attempt(s)", self.name, attempt)
                return
            except AdapterError as exc:
                if not exc.retriable:
                    raise
                self.failed_writes += 1
                self.row.set(W_NACKED, self.failed_writes)
                self.row.flag(CONNECTED, False)
                self.row.set_detail(str(exc))
                wait = self.retry.delay(attempt)
                if attempt == 0 or attempt % 10 == 0:
                    log.warning(
                        "sink %r: writing %d record(s) failed (%s); retrying in %.2f s",
                        self.name,
                        len(records),
                        exc,
                        wait,
                    )
                await self._sleep(wait)
                attempt += 1

    def _commit_counters(self) -> None:
        counters = self.counters
        if counters is not None:
            counters.commit(self.taken, self.confirmed, 0, 0, 0, self._busy_ns, time.monotonic_ns())

    def _health(self, health: Health) -> None:
        row = self.row
        row.flag(CONNECTED, health.connected)
        row.set(W_LAG, 0 if health.lag is None else health.lag + 1)
        row.set_detail(health.detail or ("" if health.connected else "not connected"))
