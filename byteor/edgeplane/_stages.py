"""Stages under EdgePlane: the executors' node code, with low stamps carried through.

Theory of operation
-------------------
A stage worker runs the very node code of LaneGraph MP (``byteor.exec``: reading with
explicit release, merges, error policies, counters rows, the idle backoff), over lanes whose
records are framed with an 8-byte stamp (:mod:`byteor.edgeplane._edge`). Two wrappers add
the stamps without touching that code, so the executors that do not stamp pay nothing:

* :class:`StampedStage` wraps the op. It strips the stamps off a batch, steps the op on the
  payloads, and stamps every output of the batch with the stamp of the batch's first input
  (the op's outputs are not mapped to its inputs, and the first input's stamp is the lowest:
  stamps never decrease along a lane). Failed records keep their frame, so a record routed
  to an error lane keeps its stamp.
* :class:`StampRow` wraps the node's counters row. The node commits (gives its input back)
  only when everything it made of it is published, then writes its row: that is when the
  wrapper stores ``released`` = 1 + the stamp of the last input taken, which is now the last
  given back.

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

from byteor.edgeplane._edge import STAMP, STAMP_BYTES
from byteor.edgeplane._status import W_HELD, W_RELEASED, StatusRow
from byteor.exec._ops import Batch
from byteor.exec._stage import ObjectStage
from byteor.kernel import BatchResult, Emit, Stage, StageError, StepResult
from byteor.lanes import RowWriter

__all__ = ["StampedStage", "StampRow", "op_holds"]

_UNPACK: Final = STAMP.unpack_from


def op_holds(stage: Stage) -> bool:
    """Whether an op may hold records back across batches (see the module docstring).

    An op says so itself with a ``holds_records`` attribute; otherwise the built-in
    ``batch`` op and op classes with a ``finish()`` method do.
    """
    declared = getattr(stage, "holds_records", None)
    if declared is None and isinstance(stage, ObjectStage):
        declared = getattr(stage._obj, "holds_records", None)
    if declared is not None:
        return bool(declared)
    if isinstance(stage, Batch):
        return True
    return isinstance(stage, ObjectStage) and stage._finish is not None


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

    @property
    def outputs(self) -> int:
        return self.inner.outputs

    def step(self, record: bytes) -> StepResult:
        result = self.step_batch([record])
        if result.failures:
            return result.failures[0].error
        return Emit(tuple(tuple(port) for port in result.ports))

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        (first,) = _UNPACK(records[0])
        (self.last,) = _UNPACK(records[-1])
        result = self.inner.step_batch([r[STAMP_BYTES:] for r in records])
        stamp = first
        if self.holds:
            if self.hold is None:  # it may hold some of these now: say so before release
                self.hold = first
                self.row.set(W_HELD, first + 1)
            stamp = self.hold
            if result.count:
                self.hold = first  # published by StampRow.commit, once the outputs are out
        if result.count:
            prefix = STAMP.pack(stamp)
            result.ports = [[prefix + r for r in port] if port else port for port in result.ports]
        return result

    def finish(self) -> Emit:
        emit = self.inner.finish()
        self.finished = True
        if not emit.count:
            return emit
        stamp = self.hold if self.hold is not None else (self.last or 0)
        prefix = STAMP.pack(stamp)
        return Emit(tuple(tuple(prefix + r for r in port) for port in emit.ports))

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
