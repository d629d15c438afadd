"""Built-in ops: every stage resolver knows them without importing user code.

Records are bytes. The ops that look inside a record read it as JSON (an object at the top),
and those that write JSON write it canonically: keys sorted, no spaces, UTF-8, so the same
input always gives the same bytes.

Batches (``batch`` / ``unbatch``) frame each record as a 4-byte little-endian length then the
bytes, one after another.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any, Final

from byteor.exec._errors import StageConfigError
from byteor.exec._stage import FunctionStage, RecordStage, StageContext
from byteor.kernel import BatchResult, Emit, Stage, StageError, StepResult, step_each
from byteor.lanes.router import KeyLike, route_of
from byteor.spec import BUILTIN_OPS

__all__ = [
    "BUILTIN_FACTORIES",
    "BUILTIN_SUMMARIES",
    "Batch",
    "KeyBy",
    "canonical_json",
    "frame",
    "unframe",
]

_LEN: Final = struct.Struct("<I")

# Resolves a ``module:function`` parameter (map's and filter's ``fn``); set by _resolve.
Importer = Callable[[str, StageContext], object]


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys, no spaces, UTF-8 (non-ASCII kept as is)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(record: bytes) -> Any:
    return json.loads(record, parse_constant=_no_constant)


def frame(records: Sequence[bytes]) -> bytes:
    """Records framed for ``unbatch``: each as a u32 little-endian length, then its bytes."""
    return b"".join(_LEN.pack(len(r)) + r for r in records)


def unframe(data: bytes) -> list[bytes] | None:
    """The records of a framed batch, or ``None`` when the framing is broken."""
    out: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 4:
            return None
        (n,) = _LEN.unpack_from(data, pos)
        pos += 4
        if n > end - pos:
            return None
        out.append(data[pos : pos + n])
        pos += n
    return out


# -- pass, drop, count ------------------------------------------------------------------------


class Identity(RecordStage):
    def step(self, record: bytes) -> StepResult:
        return Emit.to_all(self._outputs, record)

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        return BatchResult([list(records) for _ in range(self._outputs)])


class Drop(RecordStage):
    def step(self, record: bytes) -> StepResult:
        return Emit.nothing(self._outputs)

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        return BatchResult.empty(self._outputs)


class Count(Identity):
    """Passes records through, counting records and bytes (see :meth:`counters`)."""

    def __init__(self, outputs: int) -> None:
        super().__init__(outputs)
        self.records = 0
        self.bytes = 0

    def step(self, record: bytes) -> StepResult:
        self.records += 1
        self.bytes += len(record)
        return super().step(record)

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        self.records += len(records)
        self.bytes += sum(len(r) for r in records)
        return super().step_batch(records)

    def counters(self) -> dict[str, int]:
        return {"records": self.records, "bytes": self.bytes}


# -- map, filter --------------------------------------------------------------------------------


def _fn_param(ctx: StageContext, op: str, importer: Importer) -> Callable[..., object]:
    path = ctx.param("fn")
    if path is None:
        raise StageConfigError(f"stage {ctx.name!r}: op {op!r} needs param fn = module:function")
    fn = importer(path, ctx)
    if not callable(fn):
        raise StageConfigError(f"stage {ctx.name!r}: fn = {path} is not callable")
    return fn


class Filter(RecordStage):
    def __init__(self, outputs: int, keep: Callable[[bytes], object], where: str) -> None:
        super().__init__(outputs)
        self._keep = keep
        self._where = where

    def step(self, record: bytes) -> StepResult:
        try:
            keep = self._keep(record)
        except Exception as exc:  # the predicate's failure is data: the policy handles it
            return StageError("op.raised", f"{self._where} raised {type(exc).__name__}: {exc}")
        return Emit.to_all(self._outputs, record) if keep else Emit.nothing(self._outputs)


def _filter(ctx: StageContext, importer: Importer) -> Stage:
    ctx.check_params(("fn", "contains", "regex", "invert"), "filter")
    given = [k for k in ("fn", "contains", "regex") if k in ctx.params]
    if len(given) != 1:
        raise StageConfigError(
            f"stage {ctx.name!r}: op 'filter' takes exactly one of param fn, contains, regex"
        )
    invert = ctx.param("invert", "false") == "true"
    keep: Callable[[bytes], object]
    if given[0] == "fn":
        fn = _fn_param(ctx, "filter", importer)
        where = f"filter fn {ctx.params['fn']}"
        keep = (lambda r: not fn(r)) if invert else fn
    elif given[0] == "contains":
        needle = ctx.params["contains"].encode("utf-8")
        where = "filter"
        keep = (lambda r: needle not in r) if invert else (lambda r: needle in r)
    else:
        try:
            pattern = re.compile(ctx.params["regex"].encode("utf-8"))
        except re.error as exc:
            raise StageConfigError(f"stage {ctx.name!r}: param regex: {exc}") from None
        where = "filter"
        keep = (lambda r: pattern.search(r) is None) if invert else (pattern.search)
    return Filter(ctx.ports, keep, where)


def _map(ctx: StageContext, importer: Importer) -> Stage:
    ctx.check_params(("fn",), "map")
    fn = _fn_param(ctx, "map", importer)
    return FunctionStage(fn, ctx.ports, f"map fn {ctx.params['fn']}")


# -- key_by, route ------------------------------------------------------------------------------


def _json_key(value: Any) -> KeyLike:
    """A JSON value as a routing key: strings as text, integers as 64-bit, the rest as
    canonical JSON (so the same value always routes the same way)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < 1 << 64:
        return value
    return canonical_json(value)


class KeyBy(RecordStage):
    """Routes each record to output ``crc32(key) % outputs`` (the lane router's hash)."""

    def __init__(
        self, outputs: int, field: str | None, fn: Callable[[bytes], object] | None, where: str
    ) -> None:
        super().__init__(outputs)
        self._field = field
        self._fn = fn
        self._where = where

    @property
    def by_record(self) -> bool:
        """Whether it routes by the whole record (neither a ``field`` nor an ``fn``)."""
        return self._field is None and self._fn is None

    def key(self, record: bytes) -> KeyLike | StageError:
        if self._fn is not None:
            try:
                key = self._fn(record)
            except Exception as exc:  # the key function's failure is data
                return StageError("op.raised", f"{self._where} raised {type(exc).__name__}: {exc}")
            if not isinstance(key, bytes | str | int) or isinstance(key, bool):
                return StageError("key_by.bad_key", f"{self._where} returned {type(key).__name__}")
            return key
        if self._field is None:
            return record
        try:
            doc = _loads(record)
        except ValueError as exc:
            return StageError("json.invalid", f"record is not JSON: {exc}")
        if not isinstance(doc, dict) or self._field not in doc:
            return StageError("key_by.no_field", f"record has no top-level field {self._field!r}")
        return _json_key(doc[self._field])

    def step(self, record: bytes) -> StepResult:
        key = self.key(record)
        if isinstance(key, StageError):
            return key
        return Emit.to_port(self._outputs, route_of(key, self._outputs), record)


def _key_by(ctx: StageContext, importer: Importer) -> Stage:
    ctx.check_params(("field", "fn"), "key_by")
    if ctx.ports < 1:
        raise StageConfigError(f"stage {ctx.name!r}: op 'key_by' needs at least one output")
    if "field" in ctx.params and "fn" in ctx.params:
        raise StageConfigError(f"stage {ctx.name!r}: op 'key_by' takes field or fn, not both")
    fn = _fn_param(ctx, "key_by", importer) if "fn" in ctx.params else None
    return KeyBy(ctx.ports, ctx.param("field"), fn, f"key_by fn {ctx.param('fn')}")


class Route(RecordStage):
    """Sends each record to the output named for its field's value."""

    def __init__(
        self, outputs: int, field: str, table: dict[str, int], default: int | None
    ) -> None:
        super().__init__(outputs)
        self._field = field
        self._table = table
        self._default = default  # None: unmatched is an error; -1: dropped

    def step(self, record: bytes) -> StepResult:
        try:
            doc = _loads(record)
        except ValueError as exc:
            return StageError("json.invalid", f"record is not JSON: {exc}")
        if not isinstance(doc, dict) or self._field not in doc:
            return StageError("route.no_field", f"record has no top-level field {self._field!r}")
        value = doc[self._field]
        text = value if isinstance(value, str) else canonical_json(value).decode()
        port = self._table.get(text, self._default)
        if port is None:
            return StageError(
                "route.unmatched", f"no route for {self._field} = {text!r} and no default"
            )
        if port < 0:
            return Emit.nothing(self._outputs)
        return Emit.to_port(self._outputs, port, record)


def _route(ctx: StageContext, importer: Importer) -> Stage:
    field = ctx.param("field")
    if field is None:
        raise StageConfigError(f"stage {ctx.name!r}: op 'route' needs param field")
    allowed = ["field", "default", *(k for k in ctx.params if k.startswith("route."))]
    ctx.check_params(allowed, "route")

    def port_of(lane: str, key: str) -> int:
        if lane not in ctx.outputs:
            raise StageConfigError(
                f"stage {ctx.name!r}: param {key} = {lane!r} is not one of its outputs "
                f"({', '.join(ctx.outputs) or 'none'})"
            )
        return ctx.outputs.index(lane)

    table = {
        k.removeprefix("route."): port_of(v, k)
        for k, v in sorted(ctx.params.items())
        if k.startswith("route.")
    }
    raw_default = ctx.param("default")
    default: int | None
    if raw_default is None:
        default = None
    elif raw_default == "drop":
        default = -1
    else:
        default = port_of(raw_default, "default")
    return Route(ctx.ports, field, table, default)


# -- batch, unbatch -----------------------------------------------------------------------------


class Batch:
    """Groups ``size`` records into one framed record; the rest at the end of input."""

    def __init__(self, outputs: int, size: int) -> None:
        self._outputs = outputs
        self._size = size
        self._held: list[bytes] = []

    @property
    def outputs(self) -> int:
        return self._outputs

    def step(self, record: bytes) -> StepResult:
        self._held.append(record)
        if len(self._held) < self._size:
            return Emit.nothing(self._outputs)
        out = frame(self._held)
        self._held = []
        return Emit.to_all(self._outputs, out)

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        return step_each(self.step, records, self._outputs)

    def finish(self) -> Emit:
        if not self._held:
            return Emit.nothing(self._outputs)
        out = frame(self._held)
        self._held = []
        return Emit.to_all(self._outputs, out)


class Unbatch(RecordStage):
    def step(self, record: bytes) -> StepResult:
        records = unframe(record)
        if records is None:
            return StageError(
                "unbatch.framing", f"record of {len(record)} bytes is not a framed batch"
            )
        return Emit.to_all(self._outputs, *records)


def _batch(ctx: StageContext, importer: Importer) -> Stage:
    ctx.check_params(("size",), "batch")
    return Batch(ctx.ports, ctx.int_param("size", 16, minimum=1))


# -- JSON ----------------------------------------------------------------------------------------


class JsonDecode(RecordStage):
    """Checks each record is JSON and writes it canonically; anything else is an error."""

    def step(self, record: bytes) -> StepResult:
        try:
            doc = _loads(record)
        except (ValueError, RecursionError) as exc:
            return StageError("json.invalid", f"record is not JSON: {exc}")
        return Emit.to_all(self._outputs, canonical_json(doc))


class JsonEncode(RecordStage):
    """Each record (UTF-8 text) as a JSON string, or as ``{field: text}``."""

    def __init__(self, outputs: int, field: str | None) -> None:
        super().__init__(outputs)
        self._field = field

    def step(self, record: bytes) -> StepResult:
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError as exc:
            return StageError("json.not_utf8", f"record is not UTF-8 text: {exc}")
        value: Any = text if self._field is None else {self._field: text}
        return Emit.to_all(self._outputs, canonical_json(value))


def _json_encode(ctx: StageContext, importer: Importer) -> Stage:
    ctx.check_params(("field",), "json_encode")
    return JsonEncode(ctx.ports, ctx.param("field"))


def _simple(cls: type[RecordStage], op: str) -> Callable[[StageContext, Importer], Stage]:
    def make(ctx: StageContext, importer: Importer) -> Stage:
        ctx.check_params((), op)
        return cls(ctx.ports)

    return make


BuiltinFactory = Callable[[StageContext, Importer], Stage]

#: Built-in op name -> factory(ctx, importer). ``byteor.spec.BUILTIN_OPS`` lists the names
#: the spec validator knows; these are a superset.
BUILTIN_FACTORIES: Final[dict[str, BuiltinFactory]] = {
    "identity": _simple(Identity, "identity"),
    "drop": _simple(Drop, "drop"),
    "count": _simple(Count, "count"),
    "map": _map,
    "filter": _filter,
    "key_by": _key_by,
    "route": _route,
    "batch": _batch,
    "unbatch": _simple(Unbatch, "unbatch"),
    "json_decode": _simple(JsonDecode, "json_decode"),
    "json_encode": _json_encode,
}

# The names and one-line summaries are part of the spec contract (``byteor validate`` knows
# them without importing executors); this module supplies the implementations.
BUILTIN_SUMMARIES: Final[dict[str, str]] = dict(BUILTIN_OPS)
