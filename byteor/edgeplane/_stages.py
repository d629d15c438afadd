"""Stages under EdgePlane: the executors' node code, with low stamps, keys and headers carried.

Theory of operation
-------------------
A stage worker runs the very node code of LaneGraph MP (``byteor.exec``: reading with
explicit release, merges, error policies, counters rows, the idle backoff), over lanes whose
records are framed with a stamp, and a key and headers when they have them
(:mod:`byteor.edgeplane._frame`). Two wrappers add what EdgePlane needs without touching
that code, so the executors that do not frame records pay nothing:

* :class:`StampedStage` wraps the op. It takes the frames off a batch, steps the op on the
  payloads (an op sees payloads, as everywhere else), and frames every output of the batch
  with the stamp of the batch's first input (the op's outputs are not mapped to its inputs,
  and the first input's stamp is the lowest: stamps never decrease along a lane). Failed
  records keep their frame, so a record routed to an error lane keeps its stamp, key and
  headers.
* :class:`StampRow` wraps the node's counters row. The node commits (gives its input back)
  only when everything it made of it is published, then writes its row: that is when the
  wrapper stores ``released`` = 1 + the stamp of the last input taken, which is now the last
  given back.

**Keys and headers.** An output takes the key and headers of the input it came from. A batch
in which no record has either (the common case: one C-level pass over the frames' flag
bytes tells) is stepped whole, as before keys travelled. Otherwise the batch is stepped in
runs of consecutive records with the same key and headers, each run's outputs framed with
them: a 1:1 op, a filter and a splitter (several outputs for one input) all pass them on.
``key_by`` with a ``field`` or an ``fn`` is stepped record by record and *sets* each
output's key to the key it routed by (a string as UTF-8, an integer in decimal, another JSON
value as canonical JSON, bytes as they are); the headers stay. With neither it routes by the
whole record and leaves the key as it was. An op that holds records back (below) is stepped
record by record: what it emits takes the key and headers of the first record it took since
it last emitted (for ``batch``: the first record of the batch).

An op that holds records back across batches (the built-in ``batch``, or any op class with
a ``finish()``: it may emit at the end what it kept) is assumed to emit what it holds in
order, oldest first, as ``batch`` does. Its outputs are stamped with the lowest stamp it may
still hold, and it reports that stamp as ``held``: set as soon as it may hold something
(before its input is given back), raised only at a commit (after what it emitted is
published), and cleared at the commit after ``finish()`` (when the end of its input has been
flushed downstream). After a batch that emitted something, what it still holds came in that
batch or later, so the batch's first stamp bounds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from byteor.edgeplane._frame import (
    STAMP,
    STAMP_BYTES,
    STAMP_MASK,
    any_tagged,
    join,
    split,
    with_key,
)
from byteor.edgeplane._status import W_HELD, W_RELEASED, StatusRow
from byteor.exec import Batch, KeyBy, ObjectStage
from byteor.kernel import BatchResult, Emit, RecordFailure, Stage, StageError, StepResult
from byteor.lanes import RowWriter
from byteor.lanes.router import KeyLike, route_of

__all__ = ["StampedStage", "StampRow", "op_holds", "sets_key", "key_text"]

_UNPACK: Final = STAMP.unpack_from


def op_holds(stage: Stage) -> bool:
    """Whether an op may hold records back across batches (see the module docstring).

    An op says so itself with a ``holds_records`` attribute; otherwise the built-in
    ``batch`` op and op classes with a ``finish()`` method do.
    """
    declared = getattr(stage, "holds_records", None)
    if declared is None and isinstance(stage, ObjectStage):
        declared = getattr(stage.obj, "holds_records", None)
    if declared is not None:
        return bool(declared)
    if isinstance(stage, Batch):
        return True
    return isinstance(stage, ObjectStage) and stage.has_finish


def sets_key(stage: Stage) -> KeyBy | None:
    """The ``key_by`` op whose key becomes its outputs' key: one with a ``field`` or an
    ``fn`` (one keyed by the whole record routes by it and leaves the key alone)."""
    if isinstance(stage, KeyBy) and not stage.by_record:
        return stage
    return None


def key_text(key: KeyLike) -> bytes:
    """A routing key as a record's key: bytes as they are, text as UTF-8, an integer in
    decimal (the JSON value it came from)."""
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, int):
        return str(key).encode("ascii")
    return bytes(key)


class StampedStage:
    """An op that reads and writes stamped records (see the module docstring).

    Args:
        inner: the op.
        row: the stage's status row (``held`` is stored here as soon as it drops).
        holds: whether the op may hold records back (:func:`op_holds`).
    """

    def __init__(self, inner: Stage, row: StatusRow, holds: bool | None = None) -> None:
        self.inner = inner
        self.row = row
        self.holds = op_holds(inner) if holds is None else holds
        self.last: int | None = None  # the stamp of the last input taken
        self.hold: int | None = None  # the lowest stamp the op may hold (holding ops)
        self.finished = False
        self._key_by = sets_key(inner)
        # Holding ops: the tag (key and headers) of the first record taken since the op
        # last emitted; None: none taken since.
        self._hold_tag: bytes | None = None

    @property
    def outputs(self) -> int:
        return self.inner.outputs

    def step(self, record: bytes) -> StepResult:
        result = self.step_batch([record])
        if result.failures:
            return result.failures[0].error
        return Emit(tuple(tuple(port) for port in result.ports))

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        first = _UNPACK(records[0])[0] & STAMP_MASK
        self.last = _UNPACK(records[-1])[0] & STAMP_MASK
        stamp = first
        if self.holds:
            if self.hold is None:  # it may hold some of these now: say so before release
                self.hold = first
                self.row.set(W_HELD, first + 1)
            stamp = self.hold
            result = self._step_holding(records, stamp)
            if result.count:
                self.hold = first  # published by StampRow.commit, once the outputs are out
            return result
        if self._key_by is not None:
            return self._step_key_by(records, stamp)
        if any_tagged(records):
            return self._step_runs(records, stamp)
        result = self.inner.step_batch([r[STAMP_BYTES:] for r in records])
        if result.count:
            prefix = STAMP.pack(stamp)
            result.ports = [[prefix + r for r in port] if port else port for port in result.ports]
        return result

    def _step_runs(self, records: Sequence[bytes], stamp: int) -> BatchResult:
        """A batch with keys or headers: each run of records sharing them, stepped as one (a
        run of one record through ``step``: no batch made and taken apart for it)."""
        inner, pack = self.inner, STAMP.pack
        result = BatchResult.empty(inner.outputs)
        ports, failures = result.ports, result.failures
        parts = [split(r) for r in records]
        n = len(parts)
        i = 0
        while i < n:
            tag, payload = parts[i]
            j = i + 1
            while j < n and parts[j][0] == tag:
                j += 1
            if j == i + 1:
                out = inner.step(payload)
                if isinstance(out, StageError):
                    failures.append(RecordFailure(i, out))
                    i = j
                    continue
                got: Sequence[Sequence[bytes]] = out.ports
            else:
                sub = inner.step_batch([p for _, p in parts[i:j]])
                if sub.failures:
                    failures += [RecordFailure(i + f.index, f.error) for f in sub.failures]
                got = sub.ports
            # join(stamp, tag, b""), with the stamp known good (it came off a frame)
            head = pack(stamp | tag[0] << 56) + tag[1:] if tag else pack(stamp)
            for port, rest in zip(ports, got, strict=True):
                if rest:
                    port += [head + r for r in rest]
            i = j
        return result

    def _step_key_by(self, records: Sequence[bytes], stamp: int) -> BatchResult:
        """``key_by``: each record to the port of its key, with that key as its key."""
        op = self._key_by
        assert op is not None
        outputs = op.outputs
        result = BatchResult.empty(outputs)
        ports, failures = result.ports, result.failures
        for i, record in enumerate(records):
            tag, payload = split(record)
            key = op.key(payload)
            if isinstance(key, StageError):
                failures.append(RecordFailure(i, key))
                continue
            ports[route_of(key, outputs)].append(join(stamp, with_key(tag, key_text(key)), payload))
        return result

    def _step_holding(self, records: Sequence[bytes], stamp: int) -> BatchResult:
        """An op that holds records: record by record, so that what it emits takes the key
        and headers of the first record it took since it last emitted."""
        inner = self.inner
        result = BatchResult.empty(inner.outputs)
        ports, failures = result.ports, result.failures
        for i, record in enumerate(records):
            tag, payload = split(record)
            fresh = self._hold_tag is None
            if fresh:
                self._hold_tag = tag
            out = inner.step(payload)
            if isinstance(out, StageError):
                failures.append(RecordFailure(i, out))
                if fresh:
                    self._hold_tag = None
                continue
            if out.count:
                head = join(stamp, self._hold_tag or b"", b"")
                for port, got in zip(ports, out.ports, strict=True):
                    port += [head + r for r in got]
                self._hold_tag = None
        return result

    def finish(self) -> Emit:
        emit = self.inner.finish()
        self.finished = True
        if not emit.count:
            return emit
        stamp = self.hold if self.hold is not None else (self.last or 0)
        head = join(stamp, self._hold_tag or b"", b"")
        self._hold_tag = None
        return Emit(tuple(tuple(head + r for r in port) for port in emit.ports))

    def counters(self) -> dict[str, int]:
        extra = getattr(self.inner, "counters", None)
        return dict(extra()) if callable(extra) else {}


class StampRow:
    """A stage's counters row that also publishes its stamps at each commit.

    It forwards everything to the :class:`~byteor.lanes.RowWriter` (the executors' node code
    writes its live words straight into ``live_q``, so those are the writer's own).
    """

    def __init__(self, writer: RowWriter, stage: StampedStage, row: StatusRow) -> None:
        self.writer = writer
        self.stage = stage
        self.row = row
        self.live_q = writer.live_q
        self.live_at = writer.live_at
        self.step_word = writer.step_word

    def commit(
        self,
        records_in: int,
        records_out: int,
        errors: int,
        skipped: int,
        routed: int,
        busy_ns: int,
        now_ns: int,
    ) -> None:
        self.writer.commit(records_in, records_out, errors, skipped, routed, busy_ns, now_ns)
        stage, row = self.stage, self.row
        if stage.last is not None:
            row.set(W_RELEASED, stage.last + 1)
        if stage.holds:
            hold = None if stage.finished else stage.hold
            row.set(W_HELD, 0 if hold is None else hold + 1)

    def begin(self, inflight: int) -> None:
        self.writer.begin(inflight)

    def live(self, inflight: int, phase: int) -> None:
        self.writer.live(inflight, phase)

    def phase(self, phase: int) -> None:
        self.writer.phase(phase)

    def pending_skipped(self, n: int) -> None:
        self.writer.pending_skipped(n)


def stage_error(error: StageError) -> str:
    """One line for a stage error (logs)."""
    return f"{error.code}: {error.message}"
