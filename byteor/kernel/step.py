"""The stage step contract: records in, records per output (or a typed error) out.

Theory of operation
-------------------
A stage is a deterministic function of the records it has seen, applied in order. Each call
takes one record (:meth:`Stage.step`) or a batch (:meth:`Stage.step_batch`) and returns what
to publish, per output port (port ``i`` is the stage's ``i``-th output lane, in the order the
spec lists them). A stage never touches a lane, a clock or a socket: the executor moves the
bytes, the stage only decides. That keeps every stage testable with plain lists and makes
single-process and multi-process runs produce the same bytes.

* :class:`Emit` is the answer to one record: zero or more records for each port. A filter
  answers ``Emit`` with empty ports; a router puts the record on one port; a splitter puts
  several records on a port.
* :class:`StageError` is the answer when the record cannot be processed: a stable ``code``,
  a message a person can act on, and whether trying again could help. It is a value, not an
  exception, so a batch can report several without unwinding, and the executor applies the
  stage's :class:`ErrorPolicy` to each.
* :class:`BatchResult` is the answer to a batch: the ports (records of the whole batch, in
  input order) and the failures by position in the batch.
* :meth:`Stage.finish` is called once when every input is closed and drained; a stage that
  holds records back (a batcher) returns them there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, runtime_checkable

__all__ = [
    "Emit",
    "StageError",
    "StepResult",
    "RecordFailure",
    "BatchResult",
    "Stage",
    "step_each",
    "ErrorAction",
    "ErrorPolicy",
    "StageCounters",
    "ERROR_ACTIONS",
]


@dataclass(frozen=True, slots=True)
class Emit:
    """Zero or more records for each output port of a stage.

    Attributes:
        ports: ``ports[i]`` holds the records for output ``i``, in order.
    """

    ports: tuple[tuple[bytes, ...], ...]

    @classmethod
    def nothing(cls, outputs: int) -> Emit:
        """No record on any port (a dropped or held record)."""
        return cls(((),) * outputs)

    @classmethod
    def to_all(cls, outputs: int, *records: bytes) -> Emit:
        """The same records on every port."""
        return cls((tuple(records),) * outputs)

    @classmethod
    def to_port(cls, outputs: int, port: int, *records: bytes) -> Emit:
        """Records on one port only."""
        if not 0 <= port < outputs:
            raise ValueError(f"port {port} out of range for {outputs} output(s)")
        return cls(tuple(tuple(records) if i == port else () for i in range(outputs)))

    @property
    def count(self) -> int:
        """Records over every port."""
        return sum(len(p) for p in self.ports)


@dataclass(frozen=True, slots=True)
class StageError:
    """Why a stage could not process a record.

    Attributes:
        code: stable, dotted, lower case (``json.invalid``, ``op.raised``); counted per code.
        message: what went wrong, for a person.
        retriable: whether processing the same record again could succeed.
    """

    code: str
    message: str
    retriable: bool = False


StepResult = Emit | StageError


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """A :class:`StageError` and the position of its record in the batch."""

    index: int
    error: StageError


@dataclass(slots=True)
class BatchResult:
    """The answer to a batch: every port's records in input order, and the failures."""

    ports: list[list[bytes]]
    failures: list[RecordFailure] = field(default_factory=list)

    @classmethod
    def empty(cls, outputs: int) -> BatchResult:
        return cls([[] for _ in range(outputs)])

    def add(self, emit: Emit) -> None:
        """Append ``emit``'s records to the ports."""
        if len(emit.ports) != len(self.ports):
            raise ValueError(
                f"an Emit with {len(emit.ports)} port(s) for a stage with {len(self.ports)}"
            )
        for port, records in zip(self.ports, emit.ports, strict=True):
            port.extend(records)

    @property
    def count(self) -> int:
        return sum(len(p) for p in self.ports)


@runtime_checkable
class Stage(Protocol):
    """What an executor drives. Built-in ops, ``module:function`` ops and entry points all
    end up as one of these (see ``byteor.exec``)."""

    @property
    def outputs(self) -> int:
        """The number of output ports."""
        ...

    def step(self, record: bytes) -> StepResult:
        """Process one record."""
        ...

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        """Process records in order; equivalent to :meth:`step` on each."""
        ...

    def finish(self) -> Emit:
        """Every input is closed and drained: return what is still held."""
        ...


def step_each(
    step: Callable[[bytes], StepResult], records: Sequence[bytes], outputs: int
) -> BatchResult:
    """A batch step from a per-record step: the ports concatenated, failures by position."""
    result = BatchResult.empty(outputs)
    ports = result.ports
    for i, record in enumerate(records):
        out = step(record)
        if isinstance(out, StageError):
            result.failures.append(RecordFailure(i, out))
            continue
        if len(out.ports) != outputs:
            raise ValueError(f"an Emit with {len(out.ports)} port(s) for a stage with {outputs}")
        for port, got in zip(ports, out.ports, strict=True):
            port.extend(got)
    return result


ErrorAction = Literal["fail", "skip", "route"]
ERROR_ACTIONS: Final[tuple[ErrorAction, ...]] = ("fail", "skip", "route")


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """What a stage does with a record it cannot process.

    Attributes:
        action: ``fail`` stops the pipeline and names the stage and record; ``skip`` drops
            the record and counts it; ``route`` sends the record, unchanged, to ``lane``.
        lane: the error lane (``route`` only); it is one of the stage's outputs and is not
            a port of the op.
    """

    action: ErrorAction = "fail"
    lane: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ERROR_ACTIONS:
            raise ValueError(f"unknown error action {self.action!r}: use fail, skip or route")
        if (self.action == "route") != (self.lane is not None):
            raise ValueError("an error lane goes with action 'route', and only with it")


@dataclass(slots=True)
class StageCounters:
    """What one stage did. Plain integers: the executor publishes them where it likes.

    Attributes:
        records_in: records handed to the stage.
        records_out: records it published, over every port (error lane excluded).
        errors: records it could not process (skipped + routed + the one that failed).
        skipped: errors dropped under ``skip``.
        routed: errors sent to the error lane under ``route``.
        error_codes: errors by :attr:`StageError.code`.
    """

    records_in: int = 0
    records_out: int = 0
    errors: int = 0
    skipped: int = 0
    routed: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)

    def count_error(self, error: StageError, action: ErrorAction) -> None:
        self.errors += 1
        self.error_codes[error.code] = self.error_codes.get(error.code, 0) + 1
        if action == "skip":
            self.skipped += 1
        elif action == "route":
            self.routed += 1
