"""What an op is given (``StageContext``) and how plain functions and classes become stages."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from byteor.exec._errors import StageConfigError
from byteor.kernel import BatchResult, Emit, Stage, StageError, StepResult, step_each

__all__ = ["StageContext", "RecordStage", "FunctionStage", "ObjectStage", "stage_from_object"]


@dataclass(frozen=True, slots=True)
class StageContext:
    """What an op factory is told about the stage it runs as.

    Attributes:
        name: the stage name.
        params: the stage's ``param.*`` values (the executor's own keys, ``on_error`` and
            ``error_lane``, taken out).
        outputs: the op's output lanes, in port order (the error lane is not among them).
        target: the spec's target (``lane_graph`` or ``single_ring``).
    """

    name: str
    params: Mapping[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    target: str = "lane_graph"

    @property
    def ports(self) -> int:
        return len(self.outputs)

    def param(self, key: str, default: str | None = None) -> str | None:
        return self.params.get(key, default)

    def int_param(self, key: str, default: int, minimum: int = 0) -> int:
        raw = self.params.get(key)
        if raw is None:
            return default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise StageConfigError(
                f"stage {self.name!r}: param {key} = {raw!r} is not an integer"
            ) from None
        if value < minimum:
            raise StageConfigError(f"stage {self.name!r}: param {key} must be >= {minimum}")
        return value

    def check_params(self, allowed: Sequence[str], op: str) -> None:
        """Refuse parameters the op does not know (a typo would otherwise do nothing)."""
        unknown = sorted(k for k in self.params if k not in allowed)
        if unknown:
            known = ", ".join(allowed) or "none"
            raise StageConfigError(
                f"stage {self.name!r}: op {op!r} does not take param {', '.join(unknown)} "
                f"(it takes: {known})"
            )


class RecordStage:
    """Base of per-record stages: ``step`` is all a subclass writes."""

    def __init__(self, outputs: int) -> None:
        self._outputs = outputs

    @property
    def outputs(self) -> int:
        return self._outputs

    def step(self, record: bytes) -> StepResult:
        raise NotImplementedError

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        return step_each(self.step, records, self._outputs)

    def finish(self) -> Emit:
        return Emit.nothing(self._outputs)


def normalize(value: object, outputs: int, where: str) -> StepResult:
    """What a user function returned, as an :class:`Emit` (or a :class:`StageError`).

    ``None``: nothing; bytes-like or ``str``: one record on every port; a list or tuple of
    them: those records on every port; an ``Emit`` or ``StageError``: as it is.
    """
    if value is None:
        return Emit.nothing(outputs)
    if isinstance(value, bytes):
        return Emit.to_all(outputs, value)
    if isinstance(value, bytearray | memoryview):
        return Emit.to_all(outputs, bytes(value))
    if isinstance(value, str):
        return Emit.to_all(outputs, value.encode("utf-8"))
    if isinstance(value, Emit):
        if len(value.ports) != outputs:
            return StageError(
                "op.bad_return",
                f"{where} returned an Emit of {len(value.ports)} port(s) for {outputs} output(s)",
            )
        return value
    if isinstance(value, StageError):
        return value
    if isinstance(value, list | tuple):
        records: list[bytes] = []
        for item in value:
            if isinstance(item, bytes | bytearray | memoryview):
                records.append(bytes(item))
            elif isinstance(item, str):
                records.append(item.encode("utf-8"))
            else:
                return StageError(
                    "op.bad_return",
                    f"{where} returned a list holding {type(item).__name__}; records are "
                    "bytes or str",
                )
        return Emit.to_all(outputs, *records)
    return StageError(
        "op.bad_return",
        f"{where} returned {type(value).__name__}; return bytes, str, None, a list of "
        "them, an Emit or a StageError",
    )


class FunctionStage(RecordStage):
    """A plain function ``f(record: bytes) -> bytes | str | None | list | Emit``.

    An exception it raises is a ``StageError`` with code ``op.raised``: the stage's
    ``on_error`` policy decides what happens next.
    """

    def __init__(self, fn: Callable[[bytes], object], outputs: int, where: str) -> None:
        super().__init__(outputs)
        self._fn = fn
        self._where = where

    def step(self, record: bytes) -> StepResult:
        try:
            value = self._fn(record)
        except Exception as exc:  # the op's failure is data: the error policy handles it
            return StageError("op.raised", f"{self._where} raised {type(exc).__name__}: {exc}")
        return normalize(value, self._outputs, self._where)


class ObjectStage:
    """An instance of a user class: uses its ``step``, and its ``step_batch`` and
    ``finish`` when it has them. Exceptions become ``op.raised`` errors per record."""

    def __init__(self, obj: Any, outputs: int, where: str) -> None:
        self._obj = obj
        self._outputs = outputs
        self._where = where
        self._batch = getattr(obj, "step_batch", None)
        self._finish = getattr(obj, "finish", None)

    @property
    def outputs(self) -> int:
        return self._outputs

    @property
    def obj(self) -> Any:
        """The user's op object it wraps."""
        return self._obj

    @property
    def has_finish(self) -> bool:
        """Whether the object has a ``finish()`` (it may emit at the end what it kept)."""
        return self._finish is not None

    def step(self, record: bytes) -> StepResult:
        try:
            value = self._obj.step(record)
        except Exception as exc:  # the op's failure is data: the error policy handles it
            return StageError("op.raised", f"{self._where} raised {type(exc).__name__}: {exc}")
        return normalize(value, self._outputs, self._where)

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        if self._batch is None:
            return step_each(self.step, records, self._outputs)
        result = self._batch(records)
        if not isinstance(result, BatchResult) or len(result.ports) != self._outputs:
            raise StageConfigError(
                f"{self._where}.step_batch must return a BatchResult with {self._outputs} port(s)"
            )
        return result

    def finish(self) -> Emit:
        if self._finish is None:
            return Emit.nothing(self._outputs)
        value = normalize(self._finish(), self._outputs, f"{self._where}.finish")
        if isinstance(value, StageError):
            raise StageConfigError(value.message)
        return value


def stage_from_object(obj: object, ctx: StageContext, where: str) -> Stage:
    """A resolved op object as a stage: a class is instantiated with the context, a
    function is called per record."""
    if isinstance(obj, type):
        try:
            instance = obj(ctx)
        except StageConfigError:
            raise
        except Exception as exc:
            raise StageConfigError(
                f"stage {ctx.name!r}: {where}(ctx) raised {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(getattr(instance, "step", None)):
            raise StageConfigError(f"stage {ctx.name!r}: {where} instances have no step()")
        return ObjectStage(instance, ctx.ports, where)
    if callable(obj):
        return FunctionStage(obj, ctx.ports, where)
    raise StageConfigError(
        f"stage {ctx.name!r}: {where} is a {type(obj).__name__}, not a function or class"
    )
