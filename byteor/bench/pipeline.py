"""``byteor bench pipeline``: one 3-stage pipeline on every executor, against mp.Queue by hand.

Theory of operation
-------------------
The pipeline is ``decode -> transform -> encode``:

* **decode**: a JSON object with integer fields ``i``, ``region`` and ``v`` (the input lines)
  becomes a 24-byte binary record (three little-endian int64);
* **transform**: adds ``score = (v % 10007) * (region + 1)``, a 32-byte record;
* **encode**: canonical JSON out, keys sorted, no spaces:
  ``{"i":..,"region":..,"score":..,"v":..}``.

Each stage has a per-record function and a batch function that gives the same bytes (one
``json`` decode of the whole batch, ``struct``/numpy for the rest); :class:`Decode`,
:class:`Transform` and :class:`Encode` are the ops our executors run: ``step_batch`` uses the
batch function for 8 records or more and the per-record one below that, and a batch with a bad
record is redone record by record so each error is the record's own.

Every *target* runs in three *modes*. **per-message**: one record at a time everywhere (our
executors with ``batch = 1``; the hand-written pipeline puts and gets one record per queue
operation and calls the per-record functions). **batched**: up to :data:`BATCH` records per
step and per lane operation, each record its own message (``batch = 256``; the hand-written
pipeline puts lists of 256 records and calls the batch functions). **framed**: 256 records
framed as lines in one message (one slot, one queue item; what the ``batch`` op does for a
lane graph), and the stages work on whole frames (:func:`decode_framed` and so on, the same
functions by hand): the transport then costs next to nothing per record, what is left is the
stages' work and how it spreads over the processes. The targets: SingleRing with every stage in this
process, in 2 processes, and one process per stage; LaneGraph SP; LaneGraph MP in 2 processes
and one process per stage; and the peer, the same pipeline hand-written with
``multiprocessing.Queue`` between one process per stage (what a user would write instead).
A process count includes the one that runs the source and the sink.

Each run is a fresh forked process (its own process group, killed as a whole on a timeout),
that runs the pipeline to its end and reports what its sink saw. Timing is on the sink's clock
(``perf_counter_ns``) from its first write to its last: rate = records after the first write /
that time, so process start-up and the pipeline filling up are excluded, as in
``byteor bench lanes``. CPU per record is the run's process time, its children's included
(the workers and the hand-written stages are waited for), over the records.

Checking: the sink keeps every message it got (a framed one counts its lines); after the clock
stops, their count and sha256 (each record and ``\\n``) must equal those of the expected
output, computed here before the runs with the batch functions; the per-message runs, which use
the per-record functions, must come to the same bytes. Our executors' own output hash must
agree too. A mismatch fails the row (exit code 1): a broken path never becomes a number. Paths
run ``repeat`` times, interleaved, and the table shows the best and the median; ratios are
median over median.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fnmatch
import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import queue as queue_module
import resource
import shlex
import signal
import statistics
import struct
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import Any, ClassVar, Final, Literal

import numpy as np

from byteor.bench._common import finish, say, speed_warning, warn_if_busy
from byteor.bench.lanes import (
    BenchFailure,
    _fmt_rate,
    _speed_probe_ns,
    machine_info,
    source_info,
)
from byteor.cli.common import EXIT_OK, CliError, emit
from byteor.exec import LaneGraphMP, LaneGraphSP, SingleRing, StageContext
from byteor.kernel import BatchResult, Emit, StageError, StepResult, step_each
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec

__all__ = [
    # the pipeline
    "decode_record",
    "transform_record",
    "encode_record",
    "decode_many",
    "transform_many",
    "encode_many",
    "Decode",
    "Transform",
    "Encode",
    "make_records",
    "expected_output",
    # running
    "PATHS",
    "MODES",
    "PipelinePath",
    "Mode",
    "Tally",
    "pipeline_spec",
    "run_path",
    "run_benchmark",
    "summarise",
    "run_cli",
]

BATCH: Final = 256  # records per step and per lane operation in batched mode
CAPACITY: Final = 4096  # slots of the ring and of each lane; records queued by hand, likewise
SLOT_BYTES: Final = 128  # the encoded record is at most 74 bytes
COUNTS: Final = {"per-message": 60_000, "batched": 600_000, "framed": 600_000}  # records a run
FRAMED_BATCH: Final = 1  # framed messages per step (each holds BATCH records)
FRAMED_CAPACITY: Final = 64  # slots of BATCH records each
FRAMED_SLOT_BYTES: Final = 32768  # BATCH encoded records are at most 256 * 75 bytes
QUICK_DIVISOR: Final = 10
MIN_BATCH: Final = 8  # batches smaller than this use the per-record functions
BASELINE: Final = "mp-queue/4 procs"
TARGET_RATE: Final = 1_000_000  # batched, the best of our targets (issue 4)
TARGET_RATIO: Final = 5.0  # times the hand-written version


# ---------------------------------------------------------------------------------------------
# The pipeline


_DECODED = struct.Struct("<qqq")  # i, region, v
_SCORED = struct.Struct("<qqqq")  # i, region, score, v: the order of the keys out
_DECODED_NP = np.dtype([("i", "<i8"), ("region", "<i8"), ("v", "<i8")])
_SCORED_NP = np.dtype([("i", "<i8"), ("region", "<i8"), ("score", "<i8"), ("v", "<i8")])
_FIELDS = itemgetter("i", "region", "v")
_OUT = b'{"i":%d,"region":%d,"score":%d,"v":%d}'
_MOD = 10007


def _not_an_integer(text: str) -> Any:
    raise ValueError(f"{text} is not an integer")


# Floats and NaN/Infinity are refused while parsing: the fields are integers.
_JSON = json.JSONDecoder(parse_float=_not_an_integer, parse_constant=_not_an_integer)


def decode_record(record: bytes) -> bytes:
    """One JSON object -> its ``i``, ``region`` and ``v`` as 24 bytes (int64 each)."""
    return _DECODED.pack(*_FIELDS(_JSON.decode(record.decode("utf-8"))))


def transform_record(record: bytes) -> bytes:
    """24 bytes -> 32 bytes, with ``score = (v % 10007) * (region + 1)``."""
    i, region, v = _DECODED.unpack(record)
    return _SCORED.pack(i, region, (v % _MOD) * (region + 1), v)


def encode_record(record: bytes) -> bytes:
    """32 bytes -> canonical JSON (keys sorted, no spaces)."""
    return _OUT % _SCORED.unpack(record)


def _joined(records: Sequence[bytes], size: int) -> bytes:
    """The records, each ``size`` bytes, as one buffer (a wrong length raises ValueError)."""
    data = b"".join(records)
    if len(data) != size * len(records) or max(map(len, records)) != size:
        raise ValueError(f"records must be {size} bytes each")
    return data


def decode_many(records: Sequence[bytes]) -> list[bytes]:
    """:func:`decode_record` of each record, with one JSON decode for the whole batch."""
    if not records:
        return []
    docs = _JSON.decode("[" + b",".join(records).decode("utf-8") + "]")
    if len(docs) != len(records):  # a record holding "1, 2" would pass as two
        raise ValueError("a record holds more than one JSON value")
    return list(itertools.starmap(_DECODED.pack, map(_FIELDS, docs)))


def transform_many(records: Sequence[bytes]) -> list[bytes]:
    """:func:`transform_record` of each record, vectorised."""
    if not records:
        return []
    a = np.frombuffer(_joined(records, _DECODED.size), dtype=_DECODED_NP)
    out = np.empty(len(a), dtype=_SCORED_NP)
    for name in ("i", "region", "v"):
        out[name] = a[name]
    out["score"] = (a["v"] % _MOD) * (a["region"] + 1)
    rows: list[bytes] = out.view(f"V{_SCORED.size}").tolist()
    return rows


def encode_many(records: Sequence[bytes]) -> list[bytes]:
    """:func:`encode_record` of each record."""
    if not records:
        return []
    out = _OUT
    return [out % t for t in _SCORED.iter_unpack(_joined(records, _SCORED.size))]


def decode_framed(message: bytes) -> bytes:
    """A framed batch of input lines (joined by ``\\n``) -> their 24-byte records, joined."""
    text = message.decode("utf-8")
    docs = _JSON.decode("[" + text.replace("\n", ",") + "]")
    if len(docs) != text.count("\n") + 1:
        raise ValueError("a line holds more than one JSON value")
    return b"".join(itertools.starmap(_DECODED.pack, map(_FIELDS, docs)))


def transform_framed(message: bytes) -> bytes:
    """24-byte records, joined -> the 32-byte records, joined (vectorised)."""
    a = np.frombuffer(message, dtype=_DECODED_NP)
    out = np.empty(len(a), dtype=_SCORED_NP)
    for name in ("i", "region", "v"):
        out[name] = a[name]
    out["score"] = (a["v"] % _MOD) * (a["region"] + 1)
    return out.tobytes()


def encode_framed(message: bytes) -> bytes:
    """32-byte records, joined -> their JSON lines, joined by ``\\n``."""
    out = _OUT
    return b"\n".join([out % t for t in _SCORED.iter_unpack(message)])


def frame_lines(records: Sequence[bytes], per: int) -> list[bytes]:
    """``records`` as framed batches of ``per`` lines each (the last may hold fewer)."""
    return [b"\n".join(records[k : k + per]) for k in range(0, len(records), per)]


One = Callable[[bytes], bytes]
Many = Callable[[Sequence[bytes]], list[bytes]]


def _each(fn: One) -> Many:
    def many(items: Sequence[bytes]) -> list[bytes]:
        return [fn(m) for m in items]

    return many


#: Each stage's per-record and batch function, in pipeline order.
FUNCTIONS: Final[dict[str, tuple[One, Many]]] = {
    "decode": (decode_record, decode_many),
    "transform": (transform_record, transform_many),
    "encode": (encode_record, encode_many),
}
#: The same for framed batches: one function per message (a message holds many records).
FRAMED_FUNCTIONS: Final[dict[str, tuple[One, Many]]] = {
    "decode": (decode_framed, _each(decode_framed)),
    "transform": (transform_framed, _each(transform_framed)),
    "encode": (encode_framed, _each(encode_framed)),
}


class _PipelineStage:
    """A stage of the pipeline as an op: ``byteor.bench.pipeline:Decode`` and so on."""

    name: ClassVar[str]
    framed: ClassVar[bool] = False
    outputs = 1

    def __init__(self, ctx: StageContext) -> None:
        ctx.check_params((), self.name)
        self._one, self._many = (FRAMED_FUNCTIONS if self.framed else FUNCTIONS)[self.name]

    def step(self, record: bytes) -> StepResult:
        try:
            return Emit.to_all(1, self._one(record))
        except Exception as exc:  # a bad record is data: the stage's on_error decides
            return StageError("bench.bad_record", f"{self.name}: {type(exc).__name__}: {exc}")

    def step_batch(self, records: Sequence[bytes]) -> BatchResult:
        try:
            if len(records) >= MIN_BATCH:
                out = self._many(records)
            else:
                one = self._one
                out = [one(r) for r in records]
        except Exception:  # find which records fail, one by one
            return step_each(self.step, records, 1)
        return BatchResult([out])

    def finish(self) -> Emit:
        return Emit.nothing(1)


class Decode(_PipelineStage):
    name = "decode"


class Transform(_PipelineStage):
    name = "transform"


class Encode(_PipelineStage):
    name = "encode"


class DecodeFramed(Decode):
    """:class:`Decode` of framed batches: each message holds many lines."""

    framed = True


class TransformFramed(Transform):
    framed = True


class EncodeFramed(Encode):
    framed = True


_STAGES: Final = (Decode, Transform, Encode)
_FRAMED_STAGES: Final = (DecodeFramed, TransformFramed, EncodeFramed)


def make_records(count: int, seed: int = 7) -> list[bytes]:
    """``count`` input lines, the same for the same seed: ``{"i": 0, "region": 3, "v": ...}``."""
    rng = np.random.default_rng(seed)
    regions = rng.integers(0, 16, count).tolist()
    values = rng.integers(0, 1 << 32, count).tolist()
    return [
        b'{"i": %d, "region": %d, "v": %d}' % t
        for t in zip(range(count), regions, values, strict=True)
    ]


def expected_output(records: Sequence[bytes], prefixes: Iterable[int]) -> dict[int, str]:
    """The sha256 of the output (each record and ``\\n``) of the first ``n`` records, for each
    ``n`` in ``prefixes``, with the batch functions."""
    wanted = sorted(set(prefixes))
    out: dict[int, str] = {}
    h = hashlib.sha256()
    done = 0
    for n in wanted:
        while done < n:
            chunk = records[done : min(n, done + BATCH)]
            encoded = encode_many(transform_many(decode_many(chunk)))
            h.update(b"\n".join(encoded) + b"\n")
            done += len(chunk)
        out[n] = h.hexdigest()
    return out


# ---------------------------------------------------------------------------------------------
# The targets


Kind = Literal["ring", "sp", "mp", "queue"]


@dataclass(frozen=True)
class PipelinePath:
    """One target: an executor and where the three stages run (``main`` is the process of
    the source and the sink)."""

    name: str
    kind: Kind
    placement: tuple[str, str, str]  # process of decode, transform, encode
    what: str

    @property
    def ours(self) -> bool:
        return self.kind != "queue"

    @property
    def processes(self) -> int:
        if self.kind == "queue":
            return 4
        return 1 + len(set(self.placement) - {"main"})


@dataclass(frozen=True)
class Mode:
    """How records move: ``batch`` messages per step and lane operation, each message one
    record, or (``framed``) :data:`BATCH` records framed as lines."""

    name: Literal["per-message", "batched", "framed"]
    batch: int
    framed: bool = False


MODES: Final = (
    Mode("per-message", 1),
    Mode("batched", BATCH),
    Mode("framed", FRAMED_BATCH, framed=True),
)

_ALONE: Final = ("main", "main", "main")
# Two processes: decode and transform in a worker, encode with the source and the sink: the
# halves cost about the same (decode is the heaviest stage).
_TWO: Final = ("w", "w", "main")
_EACH: Final = ("decode", "transform", "encode")

PATHS: Final[tuple[PipelinePath, ...]] = (
    PipelinePath(
        "ring/1 proc", "ring", _ALONE, "SingleRing, the whole chain in one process, in place"
    ),
    PipelinePath(
        "ring/2 procs",
        "ring",
        _TWO,
        "SingleRing, decode + transform in a worker, encode with source and sink",
    ),
    PipelinePath("ring/4 procs", "ring", _EACH, "SingleRing, one process per stage"),
    PipelinePath("sp/1 proc", "sp", _ALONE, "LaneGraph SP, in-memory lanes, one process"),
    PipelinePath("mp/2 procs", "mp", _TWO, "LaneGraph MP, placed like ring/2 procs"),
    PipelinePath("mp/4 procs", "mp", _EACH, "LaneGraph MP, one process per stage"),
    PipelinePath(
        BASELINE,
        "queue",
        _EACH,
        "hand-written: a process per stage, multiprocessing.Queue between them (the source"
        " in the decode process, the sink in the parent)",
    ),
)


def pipeline_spec(path: PipelinePath, framed: bool = False) -> PipelineSpecV1:
    """The spec a path runs (``single_ring`` for the ring, ``lane_graph`` otherwise), with the
    framed ops and slots sized for a framed batch when ``framed``."""
    classes = _FRAMED_STAGES if framed else _STAGES
    ops = [f"{__name__}:{cls.__name__}" for cls in classes]
    names = [cls.name for cls in classes]
    capacity, slot_bytes = (
        (FRAMED_CAPACITY, FRAMED_SLOT_BYTES) if framed else (CAPACITY, SLOT_BYTES)
    )
    if path.kind == "ring":
        stages: list[StageSpec] = []
        prev: tuple[str, ...] = ()
        for name, op, process in zip(names, ops, path.placement, strict=True):
            stages.append(StageSpec(name, op, ("ring",), after=prev, process=process))
            prev = (name,)
        return PipelineSpecV1.build(
            "bench",
            "single_ring",
            lanes=[LaneSpec("ring", "slots", capacity, slot_bytes)],
            stages=stages,
            sources=[SourceSpec("src", "memory", "ring")],
            sinks=[SinkSpec("out", "memory", ("ring",), after=prev)],
        )
    links = ["raw", "decoded", "scored", "encoded"]
    return PipelineSpecV1.build(
        "bench",
        "lane_graph",
        lanes=[LaneSpec(n, "events", capacity, slot_bytes) for n in links],
        stages=[
            StageSpec(name, op, (links[k],), (links[k + 1],), process=process)
            for k, (name, op, process) in enumerate(zip(names, ops, path.placement, strict=True))
        ],
        sources=[SourceSpec("src", "memory", "raw")],
        sinks=[SinkSpec("out", "memory", ("encoded",))],
    )


# ---------------------------------------------------------------------------------------------
# One run


@dataclass(frozen=True)
class Tally:
    """What one run's sink saw, and what the run cost."""

    received: int
    first_receipt: int
    t_first_ns: int
    t_last_ns: int
    sha256: str  # of the records the sink got (each and "\n")
    cpu_s: float  # process time of the run, its waited-for children included
    executor_sha256: str | None = None  # what our executor's report says

    @property
    def rate(self) -> float:
        return (self.received - self.first_receipt) * 1e9 / max(1, self.t_last_ns - self.t_first_ns)


class _TimedSink:
    """Keeps every message and the clock of its first and last write (the timed span);
    counts records (framed messages hold several lines)."""

    def __init__(self, framed: bool = False) -> None:
        self.records: list[bytes] = []
        self.framed = framed
        self.received = 0
        self.first = 0
        self.t_first = 0
        self.t_last = 0

    def write(self, records: Sequence[bytes]) -> None:
        now = time.perf_counter_ns()
        n = sum(m.count(b"\n") + 1 for m in records) if self.framed else len(records)
        if not self.t_first:
            self.t_first = now
            self.first = n
        self.records += records
        self.received += n
        self.t_last = now

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _cpu_s() -> float:
    """CPU time of this process and of its children that were waited for (microseconds)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _tally(sink: _TimedSink, cpu0: float, executor_sha256: str | None) -> Tally:
    cpu = _cpu_s() - cpu0
    h = hashlib.sha256()
    if sink.records:
        h.update(b"\n".join(sink.records) + b"\n")
    return Tally(
        sink.received,
        sink.first,
        sink.t_first,
        sink.t_last,
        h.hexdigest(),
        cpu,
        executor_sha256,
    )


def _run_ours(path: PipelinePath, mode: Mode, records: list[bytes]) -> Tally:
    cls = {"ring": SingleRing, "sp": LaneGraphSP, "mp": LaneGraphMP}[path.kind]
    sink = _TimedSink(mode.framed)
    items = frame_lines(records, BATCH) if mode.framed else records
    executor = cls(
        pipeline_spec(path, mode.framed),
        sources={"src": items},
        sinks={"out": sink},
        batch=mode.batch,
    )
    cpu0 = _cpu_s()
    report = executor.run()
    return _tally(sink, cpu0, report.output_sha256)


_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _queue_source_stage(items: Sequence[Any], fn: Callable[[Any], Any], out: Any) -> None:
    _die_with_parent()
    put = out.put
    for item in items:
        put(fn(item))
    put(None)
    out.close()
    out.join_thread()


def _queue_stage(fn: Callable[[Any], Any], inp: Any, out: Any) -> None:
    _die_with_parent()
    get, put = inp.get, out.put
    for item in iter(get, None):
        put(fn(item))
    put(None)
    out.close()
    out.join_thread()


def _run_queue(mode: Mode, records: list[bytes], timeout_s: float) -> Tally:
    """The same pipeline, hand-written: a process per stage, ``multiprocessing.Queue``s."""
    ctx = multiprocessing.get_context("fork")
    # One queue item: a record, a list of BATCH records, or a framed batch (bytes).
    per_item = mode.framed or mode.batch == 1
    items: Sequence[Any]
    if mode.framed:
        items = frame_lines(records, BATCH)
    elif mode.batch == 1:
        items = records
    else:
        items = [records[k : k + mode.batch] for k in range(0, len(records), mode.batch)]
    maxsize = CAPACITY if mode.batch == 1 and not mode.framed else max(1, CAPACITY // BATCH)
    q1, q2, q3 = (ctx.Queue(maxsize) for _ in range(3))
    table = FRAMED_FUNCTIONS if mode.framed else FUNCTIONS
    fns = [one if per_item else many for one, many in table.values()]
    procs = [
        ctx.Process(target=_queue_source_stage, args=(items, fns[0], q1), daemon=True),
        ctx.Process(target=_queue_stage, args=(fns[1], q1, q2), daemon=True),
        ctx.Process(target=_queue_stage, args=(fns[2], q2, q3), daemon=True),
    ]
    sink = _TimedSink(mode.framed)
    cpu0 = _cpu_s()
    for p in procs:
        p.start()
    get = q3.get
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                item = get(timeout=1.0)
            except queue_module.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise BenchFailure(
                        f"the hand-written pipeline stopped: exit codes "
                        f"{[p.exitcode for p in procs]}"
                    ) from None
                continue
            if item is None:
                break
            sink.write([item] if per_item else item)
        for p in procs:
            p.join(timeout_s)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return _tally(sink, cpu0, None)


def _runner(
    path: PipelinePath, mode: Mode, records: list[bytes], timeout_s: float, conn: Connection
) -> None:
    """A forked run: its own process group, so a timeout kills it with everything it forked."""
    os.setpgrp()
    _die_with_parent()
    try:
        if path.kind == "queue":
            tally = _run_queue(mode, records, timeout_s)
        else:
            tally = _run_ours(path, mode, records)
    except BaseException as exc:  # reported to the parent, which fails the row
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    else:
        conn.send(("ok", tally))
    finally:
        conn.close()


def run_path(
    path: PipelinePath, mode: Mode, records: list[bytes], expected: str, timeout_s: float = 120.0
) -> Tally:
    """Run ``path`` once over ``records`` in a fresh process; check and return its tally.

    Raises:
        BenchFailure: the run failed, hung, or its output is not the expected one.
    """
    ctx = multiprocessing.get_context("fork")
    mine, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_runner,
        args=(path, mode, records, timeout_s, theirs),
        name=f"byteor-bench {path.name} {mode.name}",
    )
    proc.start()
    theirs.close()
    try:
        if not mine.poll(timeout_s):
            raise BenchFailure(f"no result within {timeout_s:g} s (hung?)")
        try:
            kind, out = mine.recv()
        except EOFError:
            proc.join(1.0)
            raise BenchFailure(
                f"the run exited without a result (exit code {proc.exitcode})"
            ) from None
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if proc.exitcode is None:
                proc.join(5.0)
            os.killpg(proc.pid or 0, signal.SIGKILL)  # anything it left behind
        proc.join()
        mine.close()
    if kind != "ok":
        raise BenchFailure(str(out))
    tally: Tally = out
    if tally.received != len(records):
        raise BenchFailure(f"the sink got {tally.received} records, expected {len(records)}")
    if tally.sha256 != expected:
        raise BenchFailure("the output differs from the expected one (same count, other bytes)")
    if tally.executor_sha256 is not None and tally.executor_sha256 != expected:
        raise BenchFailure("the executor's own output hash differs from what its sink got")
    if tally.received <= tally.first_receipt or tally.t_last_ns <= tally.t_first_ns:
        raise BenchFailure("too few records after the first write to time; raise the count")
    return tally


# ---------------------------------------------------------------------------------------------
# The whole benchmark


@dataclass
class _Row:
    path: PipelinePath
    mode: Mode
    count: int
    status: str = "ok"  # ok | failed
    detail: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)


def counts(quick: bool, records: int | None = None) -> dict[str, int]:
    """Records per run, by mode."""
    if records is not None:
        big = max(records, 4 * BATCH)
        return {"per-message": max(records // 10, 2 * BATCH), "batched": big, "framed": big}
    if quick:
        return {m: n // QUICK_DIVISOR for m, n in COUNTS.items()}
    return dict(COUNTS)


def run_benchmark(
    paths: Sequence[PipelinePath] = PATHS,
    modes: Sequence[Mode] = MODES,
    *,
    per_mode: Mapping[str, int] = COUNTS,
    repeat: int = 3,
    timeout_s: float = 120.0,
    progress: Callable[[str], None] = say,
) -> list[_Row]:
    """Run every path in every mode ``repeat`` times, interleaved; return one row per pair."""
    biggest = max(per_mode[m.name] for m in modes)
    records = make_records(biggest)
    expected = expected_output(records, [per_mode[m.name] for m in modes])
    rows = [_Row(p, m, per_mode[m.name]) for m in modes for p in paths]
    total, done = len(rows) * repeat, 0
    for rep in range(repeat):
        for row in rows:
            done += 1
            if row.status != "ok":
                continue  # failed in an earlier round: one failure is enough
            label = (
                f"[{done:>3}/{total}] {row.path.name:<16} {row.mode.name:<11}"
                f" {row.count:>8} records  run {rep + 1}/{repeat}"
            )
            probe = _speed_probe_ns()
            try:
                tally = run_path(
                    row.path, row.mode, records[: row.count], expected[row.count], timeout_s
                )
            except BenchFailure as exc:
                row.status, row.detail = "failed", str(exc)
                progress(f"{label}  FAILED: {exc}")
                continue
            row.runs.append(
                {
                    "rate": tally.rate,
                    "elapsed_s": (tally.t_last_ns - tally.t_first_ns) / 1e9,
                    "received": tally.received,
                    "first_receipt": tally.first_receipt,
                    "cpu_us_per_record": tally.cpu_s * 1e6 / tally.received,
                    "sha256": tally.sha256,
                    "probe_ns": probe,
                }
            )
            progress(f"{label}  {_fmt_rate(tally.rate)} records/s")
    return rows


def summarise(rows: Sequence[_Row]) -> list[dict[str, Any]]:
    """Best/median per row and the ratios against the hand-written pipeline."""
    medians: dict[tuple[str, str], float] = {}
    for row in rows:
        if row.status == "ok" and row.runs:
            medians[(row.path.name, row.mode.name)] = statistics.median(r["rate"] for r in row.runs)
    base_each = medians.get((BASELINE, "per-message"))
    out: list[dict[str, Any]] = []
    for row in rows:
        doc: dict[str, Any] = {
            "path": row.path.name,
            "executor": row.path.kind,
            "what": row.path.what,
            "ours": row.path.ours,
            "mode": row.mode.name,
            "batch": row.mode.batch,
            "processes": row.path.processes,
            "placement": dict(
                zip(("decode", "transform", "encode"), row.path.placement, strict=True)
            ),
            "count": row.count,
            "status": row.status,
            "detail": row.detail,
            "runs": row.runs,
        }
        if row.status == "ok" and row.runs:
            rates = [r["rate"] for r in row.runs]
            doc["best_rate"] = max(rates)
            doc["median_rate"] = medians[(row.path.name, row.mode.name)]
            doc["cpu_us_per_record"] = statistics.median(r["cpu_us_per_record"] for r in row.runs)
            base_same = medians.get((BASELINE, row.mode.name))
            if base_same:
                doc["ratio_vs_queue_same_mode"] = doc["median_rate"] / base_same
            if base_each:
                doc["ratio_vs_queue_per_message"] = doc["median_rate"] / base_each
        out.append(doc)
    return out


def _best(results: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in results if "median_rate" in r]
    return max(ok, key=lambda r: r["median_rate"]) if ok else None


def verdicts(results: Sequence[dict[str, Any]], cores: int) -> dict[str, Any]:
    """The targets of issue 4 for each batched mode, met or missed, and which target to pick
    in each mode for this many cores."""
    modes = list(dict.fromkeys(r["mode"] for r in results))
    each = _best(r for r in results if not r["ours"] and r["mode"] == "per-message")
    targets: dict[str, Any] = {}
    for m in (m for m in modes if m != "per-message"):
        best = _best(r for r in results if r["ours"] and r["mode"] == m)
        if best is None:
            continue
        rate = best["median_rate"]
        t: dict[str, Any] = {
            "best": best["path"],
            "median_rate": rate,
            "rate": {"want": TARGET_RATE, "got": rate, "met": rate >= TARGET_RATE},
        }
        for key, base in (
            ("vs_queue_same_mode", _best(r for r in results if not r["ours"] and r["mode"] == m)),
            ("vs_queue_per_message", each),
        ):
            if base is not None:
                ratio = rate / base["median_rate"]
                t[key] = {"want": TARGET_RATIO, "got": ratio, "met": ratio >= TARGET_RATIO}
        targets[m] = t
    picks: dict[str, Any] = {}
    for m in modes:
        ours = [r for r in results if r["ours"] and r["mode"] == m]
        within = _best(r for r in ours if r["processes"] <= cores)
        beyond = _best(r for r in ours if r["processes"] > cores)
        pick = _best(r for r in (within, beyond) if r is not None)
        if pick is None:
            continue
        picks[m] = {
            "pick": pick["path"],
            "pick_rate": pick["median_rate"],
            "best_within_cores": within and {"path": within["path"], "rate": within["median_rate"]},
            "best_beyond_cores": beyond and {"path": beyond["path"], "rate": beyond["median_rate"]},
        }
    return {"cores": cores, "targets": targets, "picks": picks}


def _recommendation(v: Mapping[str, Any]) -> list[str]:
    cores = v["cores"]
    lines: list[str] = []
    for mode, p in v["picks"].items():
        within, beyond = p["best_within_cores"], p["best_beyond_cores"]
        text = f"{mode}: pick {p['pick']} ({_fmt_rate(p['pick_rate'])} records/s)."
        if within and beyond:
            ratio = within["rate"] / beyond["rate"]
            text += (
                f" With at most {cores} processes the best is {within['path']}"
                f" ({_fmt_rate(within['rate'])}/s); with more processes than the {cores} cores,"
                f" {beyond['path']} ({_fmt_rate(beyond['rate'])}/s): {ratio:.2f}x."
            )
        lines.append(text)
    return lines


def _table(
    results: Sequence[dict[str, Any]], v: Mapping[str, Any], repeat: int, machine: str
) -> str:
    w = 17
    lines = [
        f"byteor bench pipeline: decode JSON -> transform -> encode JSON, 3 stages; {machine}",
        "",
        f"{'target':<{w}} {'mode':<11} {'procs':>5}  {'best /s':>9}  {'median /s':>9}"
        f"  {'CPU us/rec':>10}  {'vs queue':>8}  {'vs queue 1-by-1':>15}",
    ]
    for r in results:
        head = f"{r['path']:<{w}} {r['mode']:<11} {r['processes']:>5}"
        if r["status"] != "ok":
            lines.append(f"{head}  {r['status'].upper()}: {r['detail']}")
            continue
        same = r.get("ratio_vs_queue_same_mode")
        each = r.get("ratio_vs_queue_per_message")
        lines.append(
            f"{head}  {_fmt_rate(r['best_rate']):>9}  {_fmt_rate(r['median_rate']):>9}"
            f"  {r['cpu_us_per_record']:>10.2f}  {(f'{same:.2f}x' if same else '-'):>8}"
            f"  {(f'{each:.1f}x' if each else '-'):>15}"
        )
    lines.append("")

    def said(x: Mapping[str, Any]) -> str:
        return "met" if x["met"] else "MISSED"

    for mode, t in v["targets"].items():
        text = (
            f"Targets, {mode}: >= {_fmt_rate(TARGET_RATE)} records/s for the best of ours:"
            f" {t['best']} {_fmt_rate(t['median_rate'])}/s, {said(t['rate'])}"
        )
        for key, label in (("vs_queue_same_mode", mode), ("vs_queue_per_message", "per-message")):
            if key in t:
                text += (
                    f"; >= {TARGET_RATIO:g}x the hand-written {label} version:"
                    f" {t[key]['got']:.1f}x, {said(t[key])}"
                )
        lines.extend(textwrap.wrap(text + ".", 100))
    for line in _recommendation(v):
        lines.extend(textwrap.wrap(line, 100))
    notes = [
        f"Each target ran {repeat} time(s) in each mode, each run in fresh processes,"
        " interleaved; 'best' and 'median' are over those runs. Rate = records after the"
        " sink's first write / the time from its first write to its last (start-up excluded);"
        " 'CPU us/rec' = process time of the run, every process of it, per record."
        f" 'vs queue' = this median / the median of {BASELINE} in the same mode;"
        " 'vs queue 1-by-1' = this median / its per-message median.",
        f"per-message: one record per step and per queue or lane operation (batch = 1);"
        f" batched: up to {BATCH} (batch = {BATCH}, lists of {BATCH} records per put);"
        f" framed: {BATCH} records framed as lines in one message (one slot, one queue item),"
        " a message per step, the stages working on whole frames. Every"
        " record's bytes are checked against the expected output after each run.",
    ]
    lines.append("")
    for note in notes:
        lines.extend(textwrap.wrap(note, 100))
    seen: set[str] = set()
    for r in results:
        if r["path"] not in seen:
            seen.add(r["path"])
            lines.append(f"  {r['path']:<{w}} {r['what']}")
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> str:
    parts = ["byteor", "bench", "pipeline"]
    if getattr(args, "quick", False):
        parts.append("--quick")
    if getattr(args, "json", False):
        parts.append("--json")
    for pattern in getattr(args, "only", None) or []:
        parts += ["--only", pattern]
    if getattr(args, "records", None):
        parts += ["--records", str(args.records)]
    if getattr(args, "repeat", None) is not None:
        parts += ["--repeat", str(args.repeat)]
    if getattr(args, "save", None):
        parts += ["--save", args.save]
    return shlex.join(parts)


def select_paths(patterns: Sequence[str]) -> list[PipelinePath]:
    """The paths whose name contains one of ``patterns`` (all when none); the hand-written
    baseline is always kept, for the ratios."""
    if not patterns:
        return list(PATHS)
    chosen = [
        p
        for p in PATHS
        if p.name == BASELINE
        or any(fnmatch.fnmatchcase(p.name, pat) or pat in p.name for pat in patterns)
    ]
    if len(chosen) == 1:
        raise CliError(
            f"--only {' '.join(patterns)} matches no target; targets: "
            + ", ".join(p.name for p in PATHS)
        )
    return chosen


def run_cli(args: argparse.Namespace) -> int:
    """``byteor bench pipeline``: exit 0 when every target ran clean, 1 on any failure."""
    if getattr(args, "list", False):
        emit(
            args,
            "\n".join(f"{p.name:<17} {p.what}" for p in PATHS),
            {"paths": [{"name": p.name, "executor": p.kind, "what": p.what} for p in PATHS]},
        )
        return EXIT_OK
    paths = select_paths(getattr(args, "only", None) or [])
    quick = bool(getattr(args, "quick", False))
    given = getattr(args, "repeat", None)
    repeat = int(given) if given is not None else (1 if quick else 3)
    if repeat < 1:
        raise CliError("--repeat must be at least 1")
    records = getattr(args, "records", None)
    if records is not None and records < 4 * BATCH:
        raise CliError(f"--records must be at least {4 * BATCH}")
    per_mode = counts(quick, records)
    started = time.monotonic()
    machine = machine_info()
    warn_if_busy(machine)
    rows = run_benchmark(
        paths,
        per_mode=per_mode,
        repeat=repeat,
        timeout_s=float(getattr(args, "timeout", 120.0)),
    )
    results = summarise(rows)
    cores = machine["cpus_usable"] or machine["cpu_count"] or 1
    v = verdicts(results, cores)
    failed = [r for r in results if r["status"] == "failed"]
    probes = [run["probe_ns"] for row in rows for run in row.runs]
    doc: dict[str, Any] = {
        "benchmark": "byteor bench pipeline",
        "command": _command(args),
        "argv": list(sys.argv),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine,
        "source": source_info(),
        "settings": {
            "quick": quick,
            "repeat": repeat,
            "records": per_mode,
            "batch": BATCH,
            "capacity": CAPACITY,
            "slot_bytes": SLOT_BYTES,
            "timing": (
                "the sink's clock (perf_counter_ns) from its first write to its last; rate ="
                " records after the first write / that time; start-up excluded"
            ),
            "aggregate": "best and median over repeat runs; ratios are median / median",
            "check": "count and sha256 of every record out against the expected output",
        },
        "results": results,
        "verdicts": v,
        "failures": [f"{r['path']} {r['mode']}: {r['detail']}" for r in failed],
        "load_average_after": list(os.getloadavg()),
        "speed_probe_ns": {"min": min(probes), "max": max(probes)} if probes else None,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    text = _table(
        results,
        v,
        repeat,
        f"{machine['cpus_usable']} CPUs ({machine['cpu_model']}), {machine['platform']},"
        f" {machine['implementation']} {machine['python']}",
    )
    text += speed_warning(probes, "compare targets run by run (--json has every run) or run again")
    return finish(args, text, doc, bool(failed))
