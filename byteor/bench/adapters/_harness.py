"""What every adapter case provides, and the one timed loop that drives ours and the hand loops.

A case (one module per adapter) supplies four *sides* — our source, a hand-written source,
our sink, a hand-written sink — plus the server-side chores around them: create a fresh
stream/topic/queue, pre-fill it, check afterwards that the upstream state is what it must be,
and drop it. The loops that time and check live here, so ours and the hand-written code run
under exactly the same clock and the same checks; only the side's own methods differ.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

from byteor.adapters import AdapterError, load_adapter
from byteor.bench.lanes import BenchFailure

__all__ = [
    "BenchFailure",
    "Plan",
    "Impl",
    "Kind",
    "Case",
    "SourceSide",
    "SinkSide",
    "Tally",
    "payloads",
    "batches",
    "time_source",
    "time_sink",
    "tcp_probe",
    "bounded",
    "Written",
]

Impl = Literal["ours", "hand"]
Kind = Literal["source", "sink"]
T = TypeVar("T")
B = TypeVar("B")

SEQ = struct.Struct("<Q")
#: How long a source side may return nothing before the run fails as stalled.
STALL_S = 10.0
#: What a source side waits for its first record per read (the adapters' ``timeout_s``).
READ_WAIT_S = 0.5


@dataclass(frozen=True)
class Plan:
    """What one run moves: ``records`` of ``size`` bytes, ``batch`` per read or write."""

    records: int
    size: int
    batch: int


def payloads(plan: Plan) -> list[bytes]:
    """The records every run moves: the sequence number (u64 LE), then filler to ``size``."""
    filler = bytes((i * 7 + 13) & 0xFF for i in range(plan.size - SEQ.size))
    pack = SEQ.pack
    return [pack(seq) + filler for seq in range(plan.records)]


def batches(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` cut into consecutive lists of ``size`` (the last may be shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class Tally:
    """A source run's check and clock.

    Every batch is checked to carry exactly the next sequence numbers (so a lost, duplicated,
    reordered or extra record fails the run) and to hold records of the planned size. The
    clock starts at the first non-empty batch, as in ``byteor bench lanes``: connection
    set-up and group joins are never timed, and the rate counts the records after that first
    batch.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.received = 0
        self.first = 0
        self.t_first_ns = 0
        self.t_end_ns = 0
        self.cpu_first_ns = 0
        self.cpu_end_ns = 0
        self._ramp = np.arange(plan.batch, dtype=np.uint64)

    @property
    def done(self) -> bool:
        return self.received >= self.plan.records

    def take(self, got: Sequence[bytes]) -> None:
        """Check one batch of payloads (vectorised: a join and a strided view)."""
        n = len(got)
        if n == 0:
            return
        if self.received == 0:
            self.t_first_ns = time.perf_counter_ns()
            self.cpu_first_ns = time.process_time_ns()
            self.first = n
        size = self.plan.size
        joined = b"".join(got)
        if len(joined) != n * size or any(len(p) != size for p in (got[0], got[-1])):
            sizes = sorted({len(p) for p in got})
            raise BenchFailure(f"records of {sizes} bytes arrived, expected {size}")
        seqs = np.ndarray((n,), dtype="<u8", buffer=joined, strides=(size,))
        ramp = self._ramp[:n] if n <= len(self._ramp) else np.arange(n, dtype=np.uint64)
        if not np.array_equal(seqs - np.uint64(self.received), ramp):
            bad = int(np.flatnonzero(seqs - np.uint64(self.received) != ramp)[0])
            raise BenchFailure(
                f"record #{self.received + bad} carries sequence {int(seqs[bad])},"
                f" expected {self.received + bad} (lost, duplicated or out of order)"
            )
        self.received += n
        if self.received > self.plan.records:
            raise BenchFailure(f"received {self.received} records, only {self.plan.records} sent")

    def stop(self) -> None:
        self.t_end_ns = time.perf_counter_ns()
        self.cpu_end_ns = time.process_time_ns()

    @property
    def elapsed_ns(self) -> int:
        return self.t_end_ns - self.t_first_ns

    @property
    def rate(self) -> float:
        """Records per second after the first batch."""
        return (self.received - self.first) * 1e9 / max(1, self.elapsed_ns)

    @property
    def cpu_us(self) -> float:
        """This process's CPU time per record after the first batch, in microseconds."""
        return (self.cpu_end_ns - self.cpu_first_ns) / 1e3 / max(1, self.received - self.first)


class SourceSide(ABC, Generic[T]):
    """One way of consuming a pre-filled stream: ours (the adapter) or hand-written.

    ``read`` returns the payloads of up to ``max_records`` records and a token for ``ack``;
    ``ack`` acknowledges them (for ours: ``ack()`` on every record); ``close`` stops
    consuming and must leave every acknowledgement upstream (it is timed).
    """

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def read(self, max_records: int) -> tuple[Sequence[bytes], T]: ...

    @abstractmethod
    async def ack(self, token: T) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def abort(self) -> None:
        """Release whatever is still open after a failure (untimed, idempotent)."""
        await self.close()


class SinkSide(ABC, Generic[B]):
    """One way of writing: ``prepare`` builds the batches (untimed), ``write`` writes one
    and returns only once the server confirmed all of it."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    def prepare(self, items: Sequence[bytes], batch: int) -> list[B]: ...

    @abstractmethod
    async def write(self, batch: B) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


class Case(ABC):
    """One adapter's benchmark: its sides and the server-side chores around them.

    Attributes:
        name: the adapter's registry name (also what ``--only`` selects).
        client: the client library's distribution name (its version goes in the report).
        address: ``host:port`` of the server, probed before anything runs.
        records: records per run unless ``--records`` says otherwise: enough for about a
            second a run here (the adapters differ by 50x in speed).
        ours_source, hand_source, ours_sink, hand_sink: one line each for the notes.
    """

    name: ClassVar[str]
    client: ClassVar[str]
    address: ClassVar[str]
    records: ClassVar[int]
    ours_source: ClassVar[str]
    hand_source: ClassVar[str]
    ours_sink: ClassVar[str]
    hand_sink: ClassVar[str]

    def skip_reason(self) -> str | None:
        """Why this case cannot run here (adapter or client missing, server down), or None."""
        try:
            load_adapter(self.name)
        except AdapterError as exc:
            return str(exc)
        return tcp_probe(self.name, self.address)

    @abstractmethod
    async def create(self, tag: str) -> str:
        """A fresh, empty stream/topic/queue named after ``tag``; returns its name."""

    @abstractmethod
    async def prefill(self, target: str, items: Sequence[bytes], batch: int) -> None:
        """Put ``items`` into ``target`` in order (untimed)."""

    @abstractmethod
    async def verify_source(self, target: str, plan: Plan) -> None:
        """Raise BenchFailure unless every record of ``target`` is acknowledged upstream."""

    @abstractmethod
    async def verify_sink(self, target: str, plan: Plan) -> None:
        """Raise BenchFailure unless ``target`` holds exactly the planned records, in order."""

    @abstractmethod
    async def drop(self, target: str) -> None:
        """Delete ``target`` (after every run, also a failed one)."""

    @abstractmethod
    def source(self, impl: Impl, target: str, plan: Plan) -> SourceSide[Any]: ...

    @abstractmethod
    def sink(self, impl: Impl, target: str, plan: Plan) -> SinkSide[Any]: ...

    #: Per side, an extra line measured next to ours and the hand-written loop: what it is
    #: (one line for the notes). An upper bound, e.g. a server that answers without parsing
    #: anything; :meth:`run_bound` runs it. Most cases have none.
    bounds: ClassVar[dict[Kind, str]] = {}

    async def run_bound(self, kind: Kind, target: str, plan: Plan) -> dict[str, Any]:
        """One timed run of ``bounds[kind]`` on ``target`` (pre-filled for a source): the run
        dict of the others (``rate``, ``elapsed_s``, ``records``, ``cpu_us_per_record``),
        checked as far as it can be (a bound parses nothing, so it counts)."""
        raise NotImplementedError(f"{self.name} has no bound for {kind}")

    def details(self, target: str) -> dict[str, Any]:
        """What else the run's JSON should hold about ``target`` (asked after its checks):
        e.g. requests refused and retried, messages sent."""
        return {}

    async def server(self) -> str:
        """The server's name and version, for the report."""
        return ""

    async def close(self) -> None:  # noqa: B027 - a hook: most cases hold nothing to release
        """Release the case's own admin connection (after all runs)."""


def tcp_probe(name: str, address: str, timeout_s: float = 1.0) -> str | None:
    """None when ``address`` accepts a TCP connection, else why not (one line)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return (
            f"{name}: no server at {address} ({exc.strerror or exc});"
            " scripts/services.sh starts the test servers"
        )


async def time_source(side: SourceSide[Any], plan: Plan) -> Tally:
    """Consume ``plan.records`` through ``side``: read, check, ack, until all arrived; then
    close (timed: the last acknowledgements reach upstream there)."""
    tally = Tally(plan)
    await side.open()
    idle_since = time.monotonic()
    while not tally.done:
        got, token = await side.read(min(plan.batch, plan.records - tally.received))
        if not got:
            if time.monotonic() - idle_since > STALL_S:
                raise BenchFailure(
                    f"stalled: {tally.received} of {plan.records} records after"
                    f" {STALL_S:.0f} s without one"
                )
            continue
        idle_since = time.monotonic()
        tally.take(got)
        await side.ack(token)
    await side.close()
    tally.stop()
    return tally


@dataclass(frozen=True)
class Written:
    """A sink run's count and clock: first write called to last write confirmed."""

    records: int
    elapsed_ns: int
    cpu_ns: int

    @property
    def rate(self) -> float:
        return self.records * 1e9 / max(1, self.elapsed_ns)

    @property
    def cpu_us(self) -> float:
        """This process's CPU time per record, in microseconds."""
        return self.cpu_ns / 1e3 / max(1, self.records)


async def time_sink(side: SinkSide[Any], plan: Plan, items: Sequence[bytes]) -> Written:
    """Write ``items`` through ``side`` in batches of ``plan.batch``; time the writes only."""
    await side.open()
    try:
        todo = side.prepare(items, plan.batch)
        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
        for batch in todo:
            await side.write(batch)
        t1, c1 = time.perf_counter_ns(), time.process_time_ns()
    finally:
        await side.close()
    return Written(len(items), t1 - t0, c1 - c0)


async def bounded(aw: Awaitable[T], timeout_s: float) -> T:
    """``aw`` within ``timeout_s``, else a BenchFailure naming the hang (a timeout raised
    inside ``aw``, by a client library, passes through as it is)."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            return await aw
    except TimeoutError:
        if deadline.expired():
            raise BenchFailure(f"did not finish within {timeout_s:.0f} s (a hang)") from None
        raise
