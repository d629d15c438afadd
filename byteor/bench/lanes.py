"""``byteor bench lanes``: one producer process -> one consumer process, ours against the peers.

Theory of operation
-------------------
Every measured path is one row of :data:`PATHS`: a ``setup`` run in the parent (it creates the
queue, the socket address or the lanes), a *driver* and a *helper*, each run in its own forked
process, and a ``teardown`` run in the parent afterwards.

* Throughput paths: the helper produces, the driver consumes and measures.
* Round-trip paths: the driver sends one message and waits for its echo; the helper echoes.

Both roles prepare first (attach, connect, build every buffer they will send) and then call
:meth:`Gate.start`, which tells the parent they are ready and waits for its "go": process start,
imports, connection set-up and message building are never timed. After its loop the helper calls
:meth:`Gate.hold` and waits there until the driver has reported, so no side tears its end down
while the other still reads.

Timing. Throughput is taken on the consumer's clock (``time.perf_counter_ns``), from the receipt
of the first message (or first batch) to the receipt of the last; the rate is the number of
messages received after that first receipt divided by the time between the two. Start-up and the
producer's head start are therefore excluded. Round trips are timed one by one around
send + receive-the-echo, after an untimed warm-up.

Checking. Every message carries its sequence number in its first 8 bytes (little-endian u64),
written into a pre-built buffer just before it is sent. The consumer checks that each one is
exactly the next, in the timed loop, with the same code for ours and for the peers; that the
count is exact; and, after the last, that nothing else arrives. A mismatch fails the run (exit
code 1); it never becomes a number.

Each path runs ``repeat`` times (3 by default) in fresh processes, interleaved with the other
paths so slow drift on the machine spreads over all of them. The table shows the best and the
median run; ratios are median over median.

Diagnostics (in ``--json``, per run): the producer's own rate; for our lanes, how often the
producer found the lane full and the consumer found it empty (which side was the bottleneck);
and a speed probe of the machine taken just before the run, since a shared VM can change speed
by 2x for minutes at a time.
"""

# ruff: noqa: PLC0415 - the peers and the lanes are optional here, imported where they are used,
#   so that one missing or broken library reports itself instead of failing the whole benchmark.

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import importlib
import itertools
import math
import multiprocessing
import multiprocessing.context
import os
import platform
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from byteor.bench._common import finish, say, speed_warning, versions, warn_if_busy
from byteor.cli.common import EXIT_OK, CliError, emit
from byteor.errors import ByteorError

__all__ = [
    # running
    "run_cli",
    "run_benchmark",
    "run_path",
    "select_paths",
    "PATHS",
    "SIZES",
    # a path and what its roles exchange
    "BenchPath",
    "Plan",
    "Gate",
    "Tally",
    "RoundTrips",
    "Sent",
    "Run",
    "BenchFailure",
    # the shared loops every path uses
    "produce_each",
    "consume_each",
    "consume_batches",
    "consume_arrays",
    "check_batch",
    "record_dtype",
    "ping",
    "pong",
    "expect_nothing_more",
    "raises",
]

SIZES: tuple[int, ...] = (64, 1024)
SEQ = struct.Struct("<Q")  # every message starts with its sequence number
LANE_CAPACITY = 65536  # our lanes, and the bounded peers sized to match
POOL = 16  # per-message paths rotate through this many pre-built buffers (a power of two)
QUICK_DIVISOR = 20  # --quick moves a twentieth of the messages
EXTRA_WAIT_S = 0.05  # after the last message, how long the consumer waits for one too many
READY_TIMEOUT_S = 30.0
HOLD_TIMEOUT_S = 5.0
BASELINE = "peer/zmq-push-pull"
RT_BASELINE = "peer/zmq-pair-round-trip"
PIP_HINT = "pip install 'byteor[bench]'"

Kind = Literal["throughput", "round-trip"]


class BenchFailure(ByteorError):
    """A run did not do what it must (wrong order, wrong count, a hang); never a number."""


# ---------------------------------------------------------------------------------------------
# What the roles exchange with the parent


@dataclass(frozen=True)
class Plan:
    """What one run moves; handed to both roles."""

    size: int  # bytes per message
    count: int  # messages to move, or timed round trips
    batch: int = 1  # messages per batch call
    warmup: int = 0  # untimed round trips before the timed ones


@dataclass(frozen=True)
class Tally:
    """A consumer's count and clock: first receipt to last receipt."""

    received: int
    first_receipt: int  # messages in the first receipt (1, or the first batch)
    t_first_ns: int
    t_last_ns: int
    info: dict[str, int] = field(default_factory=dict)  # lane counters, when the path has them

    @property
    def elapsed_ns(self) -> int:
        return self.t_last_ns - self.t_first_ns

    @property
    def rate(self) -> float:
        """Messages per second after the first receipt."""
        return (self.received - self.first_receipt) * 1e9 / self.elapsed_ns


@dataclass(frozen=True)
class RoundTrips:
    samples_ns: list[int]


@dataclass(frozen=True)
class Sent:
    """A producer's (or echoer's) count and clock: from "go" to its last send returning."""

    count: int
    t_start_ns: int
    t_end_ns: int

    @property
    def rate(self) -> float:
        return self.count * 1e9 / max(1, self.t_end_ns - self.t_start_ns)


@dataclass(frozen=True)
class Run:
    """One run of one path: what the driver measured and what the helper reports."""

    result: Tally | RoundTrips
    sent: Sent


class Gate:
    """A role's line to the parent: ready/go before the timed part, hold after it."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def start(self) -> None:
        """Say ready, then wait for the parent's go."""
        self._conn.send("ready")
        if self._conn.recv() != "go":
            raise BenchFailure("the parent called the run off")

    def hold(self) -> None:
        """Wait until the driver has reported (or the run is called off)."""
        self._conn.recv()


Role = Callable[[Any, Plan, Gate], object]


@dataclass(frozen=True)
class BenchPath:
    """One row of the benchmark: how to set it up, and its two roles."""

    name: str
    kind: Kind
    what: str  # one line for the notes under the table
    setup: Callable[[Plan], Any]
    driver: Role
    helper: Role
    teardown: Callable[[Any], None]
    counts: Mapping[int, int]  # messages (or round trips) per full run, by message size
    default_count: int  # for sizes not in counts
    batch: int = 1
    warmup: int = 0
    requires: tuple[str, ...] = ()  # modules; when one does not import, the path is "missing"
    hint: str = ""  # how to get what is missing
    ours: bool = False
    unit: str = "msgs"

    def plan(self, size: int, quick: bool) -> Plan:
        count = self.counts.get(size, self.default_count)
        if quick:
            count = max(count // QUICK_DIVISOR, 4 * self.batch, 100)
        warmup = self.warmup // QUICK_DIVISOR if quick else self.warmup
        return Plan(size=size, count=count, batch=self.batch, warmup=warmup)


# ---------------------------------------------------------------------------------------------
# The shared loops: the same producing, consuming and checking code for every path


def _pool(size: int) -> list[bytearray]:
    return [bytearray(size) for _ in range(POOL)]


def _seq_failure(expected: int, got: int, position: int) -> BenchFailure:
    return BenchFailure(
        f"out of order: message #{position} carries sequence {got}, expected {expected}"
    )


def produce_each(send: Callable[[bytearray], object], plan: Plan, gate: Gate) -> Sent:
    """Send ``plan.count`` messages one by one, stamping the sequence into a pooled buffer."""
    pool = _pool(plan.size)
    pack_into = SEQ.pack_into
    mask = POOL - 1
    gate.start()
    t_start = time.perf_counter_ns()
    for seq in range(plan.count):
        buf = pool[seq & mask]
        pack_into(buf, 0, seq)
        send(buf)
    t_end = time.perf_counter_ns()
    gate.hold()
    return Sent(plan.count, t_start, t_end)


def consume_each(recv: Callable[[], Any], plan: Plan, gate: Gate) -> Tally:
    """Receive ``plan.count`` messages one by one, checking every sequence number."""
    unpack_from = SEQ.unpack_from
    perf_counter_ns = time.perf_counter_ns
    count = plan.count
    gate.start()
    msg = recv()
    t_first = perf_counter_ns()
    _check_first(msg, plan)
    for expected in range(1, count):
        msg = recv()
        if unpack_from(msg)[0] != expected:
            raise _seq_failure(expected, unpack_from(msg)[0], expected)
    t_last = perf_counter_ns()
    if len(msg) != plan.size:
        raise BenchFailure(f"the last message has {len(msg)} bytes, expected {plan.size}")
    return Tally(count, 1, t_first, t_last)


def _check_first(msg: Any, plan: Plan) -> None:
    if len(msg) != plan.size:
        raise BenchFailure(f"the first message has {len(msg)} bytes, expected {plan.size}")
    if SEQ.unpack_from(msg)[0] != 0:
        raise _seq_failure(0, SEQ.unpack_from(msg)[0], 0)


def check_batch(views: Sequence[Any], start: int) -> None:
    """Raise unless the views carry exactly ``start, start + 1, ...``."""
    unpack_from = SEQ.unpack_from
    if [unpack_from(v)[0] for v in views] != list(range(start, start + len(views))):
        for i, v in enumerate(views):
            if unpack_from(v)[0] != start + i:
                raise _seq_failure(start + i, unpack_from(v)[0], start + i)


def consume_batches(receive_batch: Callable[[int], Sequence[Any]], plan: Plan, gate: Gate) -> Tally:
    """Receive lists of messages until ``plan.count``, checking every sequence number."""
    perf_counter_ns = time.perf_counter_ns
    count, batch = plan.count, plan.batch
    gate.start()
    views = receive_batch(min(batch, count))
    t_first = perf_counter_ns()
    if not views:
        raise BenchFailure("receive_batch returned an empty list")
    _check_first(views[0], plan)
    check_batch(views, 0)
    first = got = len(views)
    while got < count:
        views = receive_batch(min(batch, count - got))
        check_batch(views, got)
        got += len(views)
    t_last = perf_counter_ns()
    if got != count:
        raise BenchFailure(f"received {got} messages, expected {count}")
    if len(views[-1]) != plan.size:
        raise BenchFailure(f"the last message has {len(views[-1])} bytes, expected {plan.size}")
    return Tally(got, first, t_first, t_last)


def record_dtype(size: int) -> np.dtype[np.void]:
    """A structured record of ``size`` bytes whose first field is the sequence number."""
    return np.dtype([("seq", "<u8"), ("payload", f"V{size - 8}")])


def consume_arrays(
    receive_array: Callable[[np.dtype[np.void], int], npt.NDArray[np.void]],
    plan: Plan,
    gate: Gate,
) -> Tally:
    """Receive record arrays until ``plan.count``, checking every sequence number (vectorised)."""
    perf_counter_ns = time.perf_counter_ns
    count, batch = plan.count, plan.batch
    dtype = record_dtype(plan.size)
    ramp = np.arange(batch, dtype=np.uint64)
    scratch = np.empty(batch, dtype=np.uint64)
    gate.start()
    arr = receive_array(dtype, min(batch, count))
    t_first = perf_counter_ns()
    if arr.dtype.itemsize != plan.size:
        raise BenchFailure(f"records of {arr.dtype.itemsize} bytes, expected {plan.size}")
    first = got = 0
    while True:
        n = len(arr)
        if n == 0:
            raise BenchFailure("receive_array returned no records")
        np.subtract(arr["seq"], np.uint64(got), out=scratch[:n])
        if not np.array_equal(scratch[:n], ramp[:n]):
            bad = int(np.flatnonzero(scratch[:n] != ramp[:n])[0])
            raise _seq_failure(got + bad, int(arr["seq"][bad]), got + bad)
        got += n
        if not first:
            first = got
        if got >= count:
            break
        arr = receive_array(dtype, min(batch, count - got))
    t_last = perf_counter_ns()
    if got != count:
        raise BenchFailure(f"received {got} records, expected {count}")
    return Tally(got, first, t_first, t_last)


def ping(
    send: Callable[[bytearray], object], recv: Callable[[], Any], plan: Plan, gate: Gate
) -> RoundTrips:
    """Time ``plan.count`` round trips (after ``plan.warmup`` untimed ones), checking each echo."""
    pool = _pool(plan.size)
    pack_into, unpack_from = SEQ.pack_into, SEQ.unpack_from
    perf_counter_ns = time.perf_counter_ns
    mask = POOL - 1
    warmup = plan.warmup
    samples = [0] * plan.count
    gate.start()
    for i in range(warmup + plan.count):
        buf = pool[i & mask]
        pack_into(buf, 0, i)
        t0 = perf_counter_ns()
        send(buf)
        echo = recv()
        t1 = perf_counter_ns()
        if unpack_from(echo)[0] != i:
            raise _seq_failure(i, unpack_from(echo)[0], i)
        if i >= warmup:
            samples[i - warmup] = t1 - t0
    return RoundTrips(samples)


def pong(send: Callable[[Any], object], recv: Callable[[], Any], plan: Plan, gate: Gate) -> Sent:
    """Echo every message back, ``plan.warmup + plan.count`` of them."""
    total = plan.warmup + plan.count
    gate.start()
    t_start = time.perf_counter_ns()
    for _ in range(total):
        send(recv())
    t_end = time.perf_counter_ns()
    gate.hold()
    return Sent(total, t_start, t_end)


def expect_nothing_more(arrived: Callable[[], bool]) -> None:
    """After the last message: fail if ``arrived()`` says one more came (duplicate or extra)."""
    if arrived():
        raise BenchFailure("a message arrived after the last one (duplicated or extra)")


def raises(attempt: Callable[[], object], empty: type[BaseException]) -> Callable[[], bool]:
    """Adapt a receive-with-timeout that raises ``empty`` when nothing came."""

    def arrived() -> bool:
        try:
            attempt()
        except empty:
            return False
        return True

    return arrived


def _identity(data: Any) -> Any:
    return data


# ---------------------------------------------------------------------------------------------
# Peers: multiprocessing.Queue, multiprocessing.Pipe, pyzmq, faster-fifo


def _mp() -> multiprocessing.context.ForkContext:
    return multiprocessing.get_context("fork")


def _mpq_setup(plan: Plan) -> Any:
    return _mp().Queue(maxsize=LANE_CAPACITY)


def _mpq_teardown(queue: Any) -> None:
    queue.close()


def _mpq_producer(queue: Any, plan: Plan, gate: Gate) -> Sent:
    put = queue.put
    # Queue.put hands the object to a feeder thread that pickles it later: it must not change
    # after put, so each message is frozen into bytes (a user would have to do the same).
    return produce_each(lambda buf: put(bytes(buf)), plan, gate)


def _mpq_consumer(queue: Any, plan: Plan, gate: Gate) -> Tally:
    import queue as queue_module

    tally = consume_each(queue.get, plan, gate)
    expect_nothing_more(raises(lambda: queue.get(timeout=EXTRA_WAIT_S), queue_module.Empty))
    return tally


def _pipe_setup(plan: Plan) -> tuple[Connection, Connection]:
    return _mp().Pipe(duplex=False)


def _pipe_teardown(ends: tuple[Connection, Connection]) -> None:
    for end in ends:
        end.close()


def _pipe_producer(ends: tuple[Connection, Connection], plan: Plan, gate: Gate) -> Sent:
    return produce_each(ends[1].send_bytes, plan, gate)


def _pipe_consumer(ends: tuple[Connection, Connection], plan: Plan, gate: Gate) -> Tally:
    reader = ends[0]
    tally = consume_each(reader.recv_bytes, plan, gate)
    expect_nothing_more(lambda: reader.poll(EXTRA_WAIT_S))
    return tally


def _ipc_setup(plan: Plan) -> str:
    """A private directory for the ipc:// socket file; the resource is the directory."""
    return tempfile.mkdtemp(prefix="byteor-bench-")


def _ipc_teardown(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _zmq_producer(directory: str, plan: Plan, gate: Gate) -> Sent:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)  # default high-water mark (1000), as a user would have it
    sock.connect(f"ipc://{directory}/push-pull")
    try:
        return produce_each(sock.send, plan, gate)  # copy=True: the buffer is reused at once
    finally:
        sock.close(linger=0)
        ctx.term()


def _zmq_consumer(directory: str, plan: Plan, gate: Gate) -> Tally:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.bind(f"ipc://{directory}/push-pull")
    try:
        tally = consume_each(sock.recv, plan, gate)
        expect_nothing_more(lambda: sock.poll(int(EXTRA_WAIT_S * 1000)) != 0)
        return tally
    finally:
        sock.close(linger=0)
        ctx.term()


def _zmq_pinger(directory: str, plan: Plan, gate: Gate) -> RoundTrips:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.bind(f"ipc://{directory}/pair")
    try:
        return ping(sock.send, sock.recv, plan, gate)
    finally:
        sock.close(linger=0)
        ctx.term()


def _zmq_ponger(directory: str, plan: Plan, gate: Gate) -> Sent:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.connect(f"ipc://{directory}/pair")
    try:
        return pong(sock.send, sock.recv, plan, gate)
    finally:
        sock.close(linger=0)
        ctx.term()


def _duplex_setup(plan: Plan) -> tuple[Connection, Connection]:
    return _mp().Pipe(duplex=True)


def _pipe_pinger(ends: tuple[Connection, Connection], plan: Plan, gate: Gate) -> RoundTrips:
    return ping(ends[0].send_bytes, ends[0].recv_bytes, plan, gate)


def _pipe_ponger(ends: tuple[Connection, Connection], plan: Plan, gate: Gate) -> Sent:
    return pong(ends[1].send_bytes, ends[1].recv_bytes, plan, gate)


def _ff_setup(plan: Plan) -> Any:
    faster_fifo = importlib.import_module("faster_fifo")
    # Raw bytes in and out (no pickle): the cheapest way a user can drive it per message.
    return faster_fifo.Queue(
        max_size_bytes=LANE_CAPACITY * (plan.size + 16), loads=_identity, dumps=bytes
    )


def _ff_teardown(queue: Any) -> None:
    with contextlib.suppress(Exception):
        queue.close()


def _ff_producer(queue: Any, plan: Plan, gate: Gate) -> Sent:
    return produce_each(queue.put, plan, gate)


def _ff_consumer(queue: Any, plan: Plan, gate: Gate) -> Tally:
    import queue as queue_module

    tally = consume_each(queue.get, plan, gate)
    expect_nothing_more(raises(lambda: queue.get(timeout=EXTRA_WAIT_S), queue_module.Empty))
    return tally


# ---------------------------------------------------------------------------------------------
# Ours: IndexBus events lanes


@dataclass
class _Lanes:
    """Lanes the parent created for one run; the roles attach to them by name."""

    names: list[str]
    handles: list[Any]


_lane_serial = itertools.count()


def _lanes_setup(plan: Plan, how_many: int, capacity: int) -> _Lanes:
    from byteor import lanes

    made = _Lanes([], [])
    try:
        for _ in range(how_many):
            name = f"byteor-bench-{os.getpid()}-{next(_lane_serial)}"
            made.handles.append(
                lanes.create(name, kind="events", capacity=capacity, slot_bytes=plan.size)
            )
            made.names.append(name)
    except BaseException:
        _lanes_teardown(made)
        raise
    return made


def _lanes_teardown(made: _Lanes) -> None:
    from byteor import lanes

    for handle in made.handles:
        with contextlib.suppress(Exception):
            handle.close()
    for name in made.names:
        with contextlib.suppress(Exception):
            lanes.unlink(name)


def _with_lane_counters(tally: Tally, lane: Any) -> Tally:
    """Add the lane's wait counters: who waited for whom tells which side was the bottleneck."""
    stats = lane.statistics()
    return dataclasses.replace(
        tally,
        info={
            "producer_full_waits": stats.full_waits,
            "consumer_empty_waits": sum(c.waits for c in stats.consumers),
        },
    )


def _one_lane_setup(plan: Plan) -> _Lanes:
    return _lanes_setup(plan, 1, LANE_CAPACITY)


def _two_lanes_setup(plan: Plan) -> _Lanes:
    return _lanes_setup(plan, 2, 1024)


def _ours_producer(made: _Lanes, plan: Plan, gate: Gate) -> Sent:
    from byteor import lanes

    lane = lanes.attach(made.names[0])
    try:
        return produce_each(lane.sender().send, plan, gate)
    finally:
        lane.close()


def _ours_consumer(made: _Lanes, plan: Plan, gate: Gate) -> Tally:
    from byteor import lanes

    lane = lanes.attach(made.names[0])
    try:
        rx = lane.receiver()
        tally = consume_each(rx.receive, plan, gate)
        expect_nothing_more(raises(lambda: rx.receive(timeout=EXTRA_WAIT_S), lanes.LaneTimeout))
        return _with_lane_counters(tally, lane)
    finally:
        lane.close()


def _ours_bytes_batch_producer(made: _Lanes, plan: Plan, gate: Gate) -> Sent:
    from byteor import lanes

    lane = lanes.attach(made.names[0])
    try:
        send_batch = lane.sender().send_batch
        size, batch = plan.size, plan.batch
        pool = bytearray(size * batch)
        whole = memoryview(pool)
        views = [whole[i * size : (i + 1) * size] for i in range(batch)]
        # The batch's sequence numbers, one per message, written in one vectorised step.
        seqs = np.ndarray((batch,), dtype="<u8", buffer=pool, strides=(size,))
        ramp = np.arange(batch, dtype=np.uint64)
        full, rest = divmod(plan.count, batch)
        gate.start()
        t_start = time.perf_counter_ns()
        base = 0
        for _ in range(full):
            np.add(ramp, np.uint64(base), out=seqs)
            if send_batch(views) != batch:
                raise BenchFailure("send_batch did not send the whole batch")
            base += batch
        if rest:
            np.add(ramp[:rest], np.uint64(base), out=seqs[:rest])
            if send_batch(views[:rest]) != rest:
                raise BenchFailure("send_batch did not send the whole batch")
        t_end = time.perf_counter_ns()
        gate.hold()
        return Sent(plan.count, t_start, t_end)
    finally:
        lane.close()


def _ours_bytes_batch_consumer(made: _Lanes, plan: Plan, gate: Gate) -> Tally:
    from byteor import lanes

    lane = lanes.attach(made.names[0])
    try:
        rx = lane.receiver()
        tally = consume_batches(rx.receive_batch, plan, gate)
        expect_nothing_more(raises(lambda: rx.receive(timeout=EXTRA_WAIT_S), lanes.LaneTimeout))
        return _with_lane_counters(tally, lane)
    finally:
        lane.close()


def _ours_bytes_copy_consumer(made: _Lanes, plan: Plan, gate: Gate) -> Tally:
    from byteor import lanes

    lane = lanes.attach(made.names[0])
    try:
        rx = lane.receiver()
        tally = consume_batches(partial(rx.receive_batch, copy=True), plan, gate)
        expect_nothing_more(raises(lambda: rx.receive(timeout=EXTRA_WAIT_S), lanes.LaneTimeout))
        return _with_lane_counters(tally, lane)
    finally:
        lane.close()


def _ours_numpy_producer(made: _Lanes, plan: Plan, gate: Gate) -> Sent:
    from byteor import lanes

    lane = lanes.attach(made.names[0])
    try:
        send_batch = lane.sender().send_batch
        batch = plan.batch
        records = np.zeros(batch, dtype=record_dtype(plan.size))
        seqs = records["seq"]
        ramp = np.arange(batch, dtype=np.uint64)
        full, rest = divmod(plan.count, batch)
        gate.start()
        t_start = time.perf_counter_ns()
        base = 0
        for _ in range(full):
            np.add(ramp, np.uint64(base), out=seqs)
            if send_batch(records) != batch:
                raise BenchFailure("send_batch did not send the whole batch")
            base += batch
        if rest:
            np.add(ramp[:rest], np.uint64(base), out=seqs[:rest])
            if send_batch(records[:rest]) != rest:
                raise BenchFailure("send_batch did not send the whole batch")
        t_end = time.perf_counter_ns()
        gate.hold()
        return Sent(plan.count, t_start, t_end)
    finally:
        lane.close()


def _ours_numpy_consumer(made: _Lanes, plan: Plan, gate: Gate) -> Tally:
    from byteor import lanes

    lane = lanes.attach(made.names[0])
    try:
        rx = lane.receiver()
        tally = consume_arrays(rx.receive_array, plan, gate)
        expect_nothing_more(raises(lambda: rx.receive(timeout=EXTRA_WAIT_S), lanes.LaneTimeout))
        return _with_lane_counters(tally, lane)
    finally:
        lane.close()


def _ours_pinger(made: _Lanes, plan: Plan, gate: Gate) -> RoundTrips:
    from byteor import lanes

    there, back = lanes.attach(made.names[0]), lanes.attach(made.names[1])
    try:
        return ping(there.sender().send, back.receiver().receive, plan, gate)
    finally:
        there.close()
        back.close()


def _ours_ponger(made: _Lanes, plan: Plan, gate: Gate) -> Sent:
    from byteor import lanes

    there, back = lanes.attach(made.names[0]), lanes.attach(made.names[1])
    try:
        return pong(back.sender().send, there.receiver().receive, plan, gate)
    finally:
        there.close()
        back.close()


# ---------------------------------------------------------------------------------------------
# The table of paths. Counts are chosen so that a full run takes about 60-90 s on a 2-core
# machine and --quick (a twentieth) under 15 s; each run is one count.

_LANES_REQ = ("byteor.lanes",)
_LANES_HINT = "byteor.lanes does not import"

PATHS: tuple[BenchPath, ...] = (
    BenchPath(
        name="peer/mp-queue",
        kind="throughput",
        what="mp.Queue(maxsize=65536), put(bytes)/get; pickled by its feeder thread",
        setup=_mpq_setup,
        driver=_mpq_consumer,
        helper=_mpq_producer,
        teardown=_mpq_teardown,
        counts={64: 170_000, 1024: 100_000},
        default_count=60_000,
    ),
    BenchPath(
        name="peer/mp-pipe",
        kind="throughput",
        what="mp.Pipe(duplex=False), send_bytes/recv_bytes, no pickle",
        setup=_pipe_setup,
        driver=_pipe_consumer,
        helper=_pipe_producer,
        teardown=_pipe_teardown,
        counts={64: 400_000, 1024: 300_000},
        default_count=200_000,
    ),
    BenchPath(
        name=BASELINE,
        kind="throughput",
        what="pyzmq PUSH -> PULL over ipc://, default HWM (1000), send/recv, copy=True",
        setup=_ipc_setup,
        driver=_zmq_consumer,
        helper=_zmq_producer,
        teardown=_ipc_teardown,
        counts={64: 1_000_000, 1024: 500_000},
        default_count=300_000,
        requires=("zmq",),
        hint=f"{PIP_HINT}  (or: pip install pyzmq)",
    ),
    BenchPath(
        name="peer/faster-fifo",
        kind="throughput",
        what="faster_fifo.Queue, one put/get per message (not get_many), raw bytes",
        setup=_ff_setup,
        driver=_ff_consumer,
        helper=_ff_producer,
        teardown=_ff_teardown,
        counts={64: 300_000, 1024: 250_000},
        default_count=200_000,
        requires=("faster_fifo",),
        hint=f"{PIP_HINT}  (or: pip install faster-fifo)",
    ),
    BenchPath(
        name="ours/per-message",
        kind="throughput",
        what="events lane, send(buf) / receive() -> memoryview into the slot",
        setup=_one_lane_setup,
        driver=_ours_consumer,
        helper=_ours_producer,
        teardown=_lanes_teardown,
        counts={64: 2_000_000, 1024: 1_000_000},
        default_count=800_000,
        requires=_LANES_REQ,
        hint=_LANES_HINT,
        ours=True,
    ),
    BenchPath(
        name="ours/bytes-batch",
        kind="throughput",
        what="events lane, send_batch(1024 memoryviews) / receive_batch(1024)",
        setup=_one_lane_setup,
        driver=_ours_bytes_batch_consumer,
        helper=_ours_bytes_batch_producer,
        teardown=_lanes_teardown,
        counts={64: 3_000_000, 1024: 1_500_000},
        default_count=1_500_000,
        batch=1024,
        requires=_LANES_REQ,
        hint=_LANES_HINT,
        ours=True,
    ),
    BenchPath(
        name="ours/bytes-batch-copy",
        kind="throughput",
        what="events lane, send_batch(1024 memoryviews) / receive_batch(1024, copy=True)",
        setup=_one_lane_setup,
        driver=_ours_bytes_copy_consumer,
        helper=_ours_bytes_batch_producer,
        teardown=_lanes_teardown,
        counts={64: 3_000_000, 1024: 1_500_000},
        default_count=1_500_000,
        batch=1024,
        requires=_LANES_REQ,
        hint=_LANES_HINT,
        ours=True,
    ),
    BenchPath(
        name="ours/numpy-batch",
        kind="throughput",
        what="events lane, send_batch(records[8192]) / receive_array(dtype, 8192)",
        setup=_one_lane_setup,
        driver=_ours_numpy_consumer,
        helper=_ours_numpy_producer,
        teardown=_lanes_teardown,
        counts={64: 80_000_000, 1024: 4_000_000},
        default_count=3_500_000,
        batch=8192,
        requires=_LANES_REQ,
        hint=_LANES_HINT,
        ours=True,
        unit="records",
    ),
    BenchPath(
        name="ours/round-trip",
        kind="round-trip",
        what="ping-pong over two events lanes (send, then receive the echo)",
        setup=_two_lanes_setup,
        driver=_ours_pinger,
        helper=_ours_ponger,
        teardown=_lanes_teardown,
        counts={},
        default_count=20_000,
        warmup=2_000,
        requires=_LANES_REQ,
        hint=_LANES_HINT,
        ours=True,
    ),
    BenchPath(
        name=RT_BASELINE,
        kind="round-trip",
        what="pyzmq PAIR <-> PAIR over ipc://, send/recv",
        setup=_ipc_setup,
        driver=_zmq_pinger,
        helper=_zmq_ponger,
        teardown=_ipc_teardown,
        counts={},
        default_count=20_000,
        warmup=2_000,
        requires=("zmq",),
        hint=f"{PIP_HINT}  (or: pip install pyzmq)",
    ),
    BenchPath(
        name="peer/mp-pipe-round-trip",
        kind="round-trip",
        what="mp.Pipe(duplex=True), send_bytes/recv_bytes",
        setup=_duplex_setup,
        driver=_pipe_pinger,
        helper=_pipe_ponger,
        teardown=_pipe_teardown,
        counts={},
        default_count=20_000,
        warmup=2_000,
    ),
)


# ---------------------------------------------------------------------------------------------
# Running one path once, in two fresh processes


def _child_main(role: Role, resource: Any, plan: Plan, conn: Connection) -> None:
    try:
        out = role(resource, plan, Gate(conn))
    except BaseException as exc:  # reported to the parent, which fails the run
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    else:
        conn.send(("result", out))
    finally:
        conn.close()


def _await(conn: Connection, timeout_s: float, role: str, process: Any) -> Any:
    """The next message from a role, or a BenchFailure that says why there is none."""
    if not conn.poll(timeout_s):
        raise BenchFailure(f"the {role} did not answer within {timeout_s:g} s (hung?)")
    try:
        msg = conn.recv()
    except EOFError:
        process.join(1.0)
        raise BenchFailure(
            f"the {role} exited without reporting (exit code {process.exitcode})"
        ) from None
    if isinstance(msg, tuple) and msg[0] == "error":
        raise BenchFailure(f"the {role} failed: {msg[1]}")
    return msg


def run_path(path: BenchPath, plan: Plan, timeout_s: float = 120.0) -> Run:
    """Run ``path`` once with ``plan``; return what both roles report, or raise BenchFailure."""
    roles = ("consumer", "producer") if path.kind == "throughput" else ("pinger", "echoer")
    ctx = _mp()
    resource = path.setup(plan)
    procs: list[Any] = []
    conns: list[Connection] = []
    grace_s = 0.2  # a failed run's processes get this long to go, then they are killed
    try:
        for role_fn, role in zip((path.driver, path.helper), roles, strict=True):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=_child_main,
                args=(role_fn, resource, plan, theirs),
                name=f"byteor-bench {path.name} {role}",
                daemon=True,
            )
            proc.start()
            theirs.close()
            procs.append(proc)
            conns.append(mine)
        for conn, role, proc in zip(conns, roles, procs, strict=True):
            if _await(conn, READY_TIMEOUT_S, role, proc) != "ready":
                raise BenchFailure(f"the {role} said something other than ready")
        for conn in conns:
            conn.send("go")
        out = _await(conns[0], timeout_s, roles[0], procs[0])
        conns[1].send("done")
        sent = _await(conns[1], HOLD_TIMEOUT_S, roles[1], procs[1])[1]
        result = out[1]
        expected = plan.count if path.kind == "throughput" else plan.count + plan.warmup
        if not isinstance(sent, Sent) or sent.count != expected:
            raise BenchFailure(f"the {roles[1]} reports {sent!r}, expected {expected} messages")
        if isinstance(result, Tally):
            if result.received != plan.count:
                raise BenchFailure(f"received {result.received}, expected {plan.count}")
            if result.elapsed_ns <= 0 or result.received <= result.first_receipt:
                raise BenchFailure("too few messages after the first receipt to time; raise counts")
        elif not isinstance(result, RoundTrips) or len(result.samples_ns) != plan.count:
            raise BenchFailure(f"the {roles[0]} returned {result!r}")
        grace_s = HOLD_TIMEOUT_S
        return Run(result, sent)
    finally:
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.send("done")  # releases a role still waiting in start() or hold()
        for proc in procs:
            proc.join(grace_s)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in conns:
            conn.close()
        path.teardown(resource)


# ---------------------------------------------------------------------------------------------
# The whole benchmark


def _percentile(sorted_ns: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted samples (the rounding keeps 99.9 % of 20000 at 19980)."""
    rank = math.ceil(round(q * len(sorted_ns) / 100, 6))
    return sorted_ns[max(1, min(len(sorted_ns), rank)) - 1]


def _round_trip_stats(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    return {
        "min_us": s[0] / 1e3,
        "median_us": _percentile(s, 50) / 1e3,
        "p90_us": _percentile(s, 90) / 1e3,
        "p99_us": _percentile(s, 99) / 1e3,
        "p99_9_us": _percentile(s, 99.9) / 1e3,
        "max_us": s[-1] / 1e3,
        "mean_us": statistics.fmean(s) / 1e3,
    }


def _missing(path: BenchPath) -> str | None:
    """Why ``path`` cannot run here, or None."""
    for module in path.requires:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any failure to import means the path is missing
            return f"{type(exc).__name__}: {exc}"
    return None


def select_paths(patterns: Sequence[str], baseline: bool = True) -> list[BenchPath]:
    """Paths matching any pattern (glob, or substring without wildcards); all when none given.

    With ``baseline``, the pyzmq paths the ratios divide by are kept too.
    """
    if not patterns:
        return list(PATHS)

    def hit(name: str) -> bool:
        for pattern in patterns:
            if any(c in pattern for c in "*?["):
                if fnmatch.fnmatchcase(name, pattern):
                    return True
            elif pattern.lower() in name.lower():
                return True
        return False

    chosen = {p.name for p in PATHS if hit(p.name)}
    if not chosen:
        raise CliError(
            f"no path matches {' '.join(patterns)!s}; `byteor bench lanes --list` shows them"
        )
    if baseline:
        kinds = {p.kind for p in PATHS if p.name in chosen}
        if "throughput" in kinds:
            chosen.add(BASELINE)
        if "round-trip" in kinds:
            chosen.add(RT_BASELINE)
    return [p for p in PATHS if p.name in chosen]


def _fmt_rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M"
    if rate >= 1e3:
        return f"{rate / 1e3:.0f} k"
    return f"{rate:.0f}"


def _fmt_size(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def _speed_probe_ns(loops: int = 100_000) -> float:
    """ns per turn of an empty Python loop, best of 3: how fast this machine is right now.

    On a shared VM the same code can run twice as slow for minutes at a time, with no steal
    time reported; a probe before every run shows when that happened.
    """
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            pass
        best = min(best, (time.perf_counter_ns() - t0) / loops)
    return best


class _NoGate(Gate):
    """A gate with no parent, for timing the loops in this process."""

    def __init__(self) -> None:
        pass

    def start(self) -> None:
        pass

    def hold(self) -> None:
        pass


def measure_check_cost(size: int = 64, n: int = 65536, repeat: int = 5) -> dict[str, float]:
    """What the consumer's loop and check cost here without any transport, in ns per message.

    The receive is a plain iterator step, so this is the floor under every per-message
    consumer's time; best of ``repeat`` to keep the machine's noise out.
    """
    whole = bytearray(size * n)
    mv = memoryview(whole)
    views = [mv[i * size : (i + 1) * size] for i in range(n)]
    np.ndarray((n,), dtype="<u8", buffer=whole, strides=(size,))[:] = np.arange(n)
    each, batched = [], []
    for _ in range(repeat):
        it = iter(views)
        t0 = time.perf_counter_ns()
        consume_each(it.__next__, Plan(size=size, count=n), _NoGate())
        t1 = time.perf_counter_ns()
        for i in range(0, n, 1024):
            check_batch(views[i : i + 1024], i)
        t2 = time.perf_counter_ns()
        each.append((t1 - t0) / n)
        batched.append((t2 - t1) / n)
    return {"per_message_ns": min(each), "bytes_batch_ns": min(batched)}


def _versions() -> dict[str, str | None]:
    out = versions(("byteor", "numpy", "pyzmq", "faster-fifo"))
    try:
        import zmq

        out["libzmq"] = zmq.zmq_version()
    except ImportError:
        out["libzmq"] = None
    return out


def source_info() -> dict[str, Any]:
    """Which code was measured: the git commit of the checkout and whether it had changes."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out: dict[str, Any] = {"checkout": root, "git_commit": None, "dirty": None}
    try:
        out["git_commit"] = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "byteor"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        out["dirty"] = bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        pass  # not a git checkout (an installed wheel): the versions say what ran
    return out


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    return {
        "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "versions": _versions(),
        "start_method": "fork",
    }


@dataclass
class _Row:
    path: BenchPath
    size: int
    plan: Plan
    status: str = "ok"  # ok | missing | failed
    detail: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)


def run_benchmark(
    paths: Sequence[BenchPath],
    sizes: Sequence[int] = SIZES,
    *,
    quick: bool = False,
    repeat: int = 3,
    timeout_s: float = 120.0,
    progress: Callable[[str], None] = say,
) -> list[_Row]:
    """Run every path at every size ``repeat`` times, interleaved; return one row per pair."""
    rows = [_Row(p, size, p.plan(size, quick)) for size in sizes for p in paths]
    for row in rows:
        why = _missing(row.path)
        if why is not None:
            row.status = "failed" if row.path.ours else "missing"
            row.detail = f"{why}; {row.path.hint}" if row.path.hint else why
            progress(f"{row.path.name} {_fmt_size(row.size)}: {row.status} ({row.detail})")
    todo = [r for r in rows if r.status == "ok"]
    total, done = len(todo) * repeat, 0
    for rep in range(repeat):
        for row in todo:
            done += 1
            if row.status != "ok":
                continue  # failed in an earlier round: one failure is enough
            label = (
                f"[{done:>3}/{total}] {row.path.name:<26} {_fmt_size(row.size):>6}"
                f"  run {rep + 1}/{repeat}"
            )
            probe = {"probe_ns": _speed_probe_ns()}
            try:
                run = run_path(row.path, row.plan, timeout_s)
            except BenchFailure as exc:
                row.status, row.detail = "failed", str(exc)
                progress(f"{label}  FAILED: {exc}")
                continue
            result = run.result
            if isinstance(result, Tally):
                row.runs.append(
                    {
                        "rate": result.rate,
                        "elapsed_s": result.elapsed_ns / 1e9,
                        "received": result.received,
                        "first_receipt": result.first_receipt,
                        "producer_rate": run.sent.rate,
                        **result.info,
                        **probe,
                    }
                )
                progress(f"{label}  {_fmt_rate(result.rate)} {row.path.unit}/s")
            else:
                stats: dict[str, Any] = {**_round_trip_stats(result.samples_ns), **probe}
                row.runs.append(stats)
                progress(
                    f"{label}  median {stats['median_us']:.1f} us, p99 {stats['p99_us']:.1f} us"
                )
    return rows


def _summarise(rows: Sequence[_Row]) -> list[dict[str, Any]]:
    """Best/median per row and the ratios against the pyzmq baselines at the same size."""
    out: list[dict[str, Any]] = []
    by_key = {(r.path.name, r.size): r for r in rows}
    for row in rows:
        doc: dict[str, Any] = {
            "path": row.path.name,
            "kind": row.path.kind,
            "what": row.path.what,
            "ours": row.path.ours,
            "size": row.size,
            "unit": row.path.unit,
            "count": row.plan.count,
            "batch": row.plan.batch,
            "warmup": row.plan.warmup,
            "status": row.status,
            "detail": row.detail,
            "runs": row.runs,
        }
        if row.status == "ok" and row.runs:
            if row.path.kind == "throughput":
                rates = [r["rate"] for r in row.runs]
                doc["best_rate"] = max(rates)
                doc["median_rate"] = statistics.median(rates)
                doc["best_mb_s"] = doc["best_rate"] * row.size / 1e6
                doc["median_mb_s"] = doc["median_rate"] * row.size / 1e6
                base = by_key.get((BASELINE, row.size))
                if base is not None and base.status == "ok" and base.runs:
                    base_rates = [r["rate"] for r in base.runs]
                    doc["ratio_vs_zmq_median"] = doc["median_rate"] / statistics.median(base_rates)
                    doc["ratio_vs_zmq_best"] = doc["best_rate"] / max(base_rates)
            else:
                medians = [r["median_us"] for r in row.runs]
                p99s = [r["p99_us"] for r in row.runs]
                doc["median_us"] = statistics.median(medians)
                doc["best_median_us"] = min(medians)
                doc["p99_us"] = statistics.median(p99s)
                doc["best_p99_us"] = min(p99s)
                base = by_key.get((RT_BASELINE, row.size))
                if base is not None and base.status == "ok" and base.runs:
                    base_median = statistics.median(r["median_us"] for r in base.runs)
                    doc["speedup_vs_zmq_median"] = base_median / doc["median_us"]
        out.append(doc)
    return out


def _table(
    results: Sequence[dict[str, Any]], repeat: int, check: Mapping[str, float], machine: str
) -> str:
    w = 26
    lines = [f"byteor bench lanes: 1 producer process -> 1 consumer process; {machine}", ""]
    thr = [r for r in results if r["kind"] == "throughput"]
    rtt = [r for r in results if r["kind"] == "round-trip"]
    if thr:
        lines.append(
            f"{'throughput':<{w}} {'size':>6}  {'best /s':>11}  {'median /s':>11}"
            f"  {'median MB/s':>11}  {'vs pyzmq':>8}"
        )
        for r in thr:
            head = f"{r['path']:<{w}} {_fmt_size(r['size']):>6}"
            if r["status"] != "ok":
                lines.append(f"{head}  {r['status'].upper()}: {r['detail']}")
                continue
            ratio = r.get("ratio_vs_zmq_median")
            unit = " rec" if r["unit"] == "records" else " msg"
            lines.append(
                f"{head}  {_fmt_rate(r['best_rate']) + unit:>11}"
                f"  {_fmt_rate(r['median_rate']) + unit:>11}  {r['median_mb_s']:>11.1f}"
                f"  {(f'{ratio:.2f}x' if ratio is not None else '-'):>8}"
            )
    if rtt:
        if thr:
            lines.append("")
        lines.append(
            f"{'round trip':<{w}} {'size':>6}  {'median us':>11}  {'(best)':>6}"
            f"  {'p99 us':>8}  {'(best)':>6}  {'vs pyzmq':>8}"
        )
        for r in rtt:
            head = f"{r['path']:<{w}} {_fmt_size(r['size']):>6}"
            if r["status"] != "ok":
                lines.append(f"{head}  {r['status'].upper()}: {r['detail']}")
                continue
            speed = r.get("speedup_vs_zmq_median")
            lines.append(
                f"{head}  {r['median_us']:>11.1f}  {r['best_median_us']:>6.1f}"
                f"  {r['p99_us']:>8.1f}  {r['best_p99_us']:>6.1f}"
                f"  {(f'{speed:.2f}x' if speed is not None else '-'):>8}"
            )
    notes = [
        f"Each path ran {repeat} time(s), each in two fresh processes, interleaved with the"
        " other paths; 'best' and 'median' are over those runs.",
        "Throughput is timed on the consumer's clock from its first receipt to its last"
        " (start-up excluded); MB = 10^6 bytes; 'vs pyzmq' = this median / the median of"
        f" {BASELINE} at the same size.",
        "Round trips are timed one by one (send, then receive the echo) after a warm-up; the"
        " columns are the median over runs of each run's median and p99, best run in"
        f" brackets; 'vs pyzmq' = the median of {RT_BASELINE} / this median (times faster).",
        "Every consumer checks the sequence number in the first 8 bytes of every message,"
        " inside the timed loop, for ours and the peers alike; the loop and check alone, with"
        f" no transport, cost ~{check['per_message_ns']:.0f} ns per message one by one and"
        f" ~{check['bytes_batch_ns']:.0f} ns per message in a bytes batch on this machine"
        " (vectorised, a fraction of a ns, for record arrays).",
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
    parts = ["byteor", "bench", "lanes"]
    if getattr(args, "quick", False):
        parts.append("--quick")
    if getattr(args, "json", False):
        parts.append("--json")
    for pattern in getattr(args, "only", None) or []:
        parts += ["--only", pattern]
    if getattr(args, "no_baseline", False):
        parts.append("--no-baseline")
    if getattr(args, "save", None):
        parts += ["--save", args.save]
    sizes = getattr(args, "sizes", None)
    if sizes:
        parts += ["--sizes", sizes]
    repeat = getattr(args, "repeat", 3)
    if repeat != 3:
        parts += ["--repeat", str(repeat)]
    return shlex.join(parts)


def parse_sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return SIZES
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise CliError(f"--sizes takes byte counts separated by commas, not {text!r}") from None
    if not sizes or any(s < 8 for s in sizes):
        raise CliError("--sizes: every message needs at least 8 bytes (its sequence number)")
    return sizes


def run_cli(args: argparse.Namespace) -> int:
    """``byteor bench lanes``: exit 0 when every available path ran clean, 1 on any failure."""
    patterns: Sequence[str] = getattr(args, "only", None) or []
    paths = select_paths(patterns, baseline=not getattr(args, "no_baseline", False))
    if getattr(args, "list", False):
        emit(
            args,
            "\n".join(f"{p.name:<26} {p.what}" for p in PATHS),
            {"paths": [{"name": p.name, "kind": p.kind, "what": p.what} for p in PATHS]},
        )
        return EXIT_OK
    sizes = parse_sizes(getattr(args, "sizes", None))
    repeat = int(getattr(args, "repeat", 3))
    if repeat < 1:
        raise CliError("--repeat must be at least 1")
    quick = bool(getattr(args, "quick", False))
    started = time.monotonic()
    machine = machine_info()  # before the runs: the load average is the machine's, not ours
    warn_if_busy(machine)
    check = measure_check_cost()
    rows = run_benchmark(
        paths, sizes, quick=quick, repeat=repeat, timeout_s=float(getattr(args, "timeout", 120))
    )
    results = _summarise(rows)
    failed = [r for r in results if r["status"] == "failed"]
    probes = [run["probe_ns"] for row in rows for run in row.runs if "probe_ns" in run]
    doc: dict[str, Any] = {
        "benchmark": "byteor bench lanes",
        "command": _command(args),
        "argv": list(sys.argv),
        "machine": machine,
        "source": source_info(),
        "settings": {
            "quick": quick,
            "repeat": repeat,
            "sizes": list(sizes),
            "lane_capacity": LANE_CAPACITY,
            "timing": (
                "throughput: consumer clock (perf_counter_ns) from the first receipt to the"
                " last; rate = messages after the first receipt / that time; start-up excluded."
                " round trip: perf_counter_ns around send + receive-the-echo, after a warm-up."
            ),
            "aggregate": "best and median over repeat runs; ratios are median / median",
            "check": "every consumer checks every sequence number, in the timed loop",
        },
        "check_cost_ns": check,
        "results": results,
        "failures": [f"{r['path']} {r['size']} B: {r['detail']}" for r in failed],
        "load_average_after": list(os.getloadavg()),
        "speed_probe_ns": {"min": min(probes), "max": max(probes)} if probes else None,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    info = doc["machine"]
    text = _table(
        results,
        repeat,
        check,
        f"{info['cpus_usable']} CPUs ({info['cpu_model']}), {info['platform']},"
        f" {info['implementation']} {info['python']}",
    )
    text += speed_warning(probes, "compare paths run by run (--json has every run) or run again")
    return finish(args, text, doc, bool(failed))
