"""EdgePlane's status segment: what the edge processes and stamped stages tell each other.

Theory of operation
-------------------
The run's counters segment (``byteor.lanes``) holds what every executor writes: records in
and out, busy time, restarts. EdgePlane needs a few more numbers per node, read across
processes without messages: the acknowledgement watermark's inputs (which stamps a hop has
finished, what an op holds back), each adapter's state (connected, paused, acknowledged,
committed, lag, why it is not connected) and its latencies. They live in one more
shared-memory file per run, ``/dev/shm/edgeplane-<run>.status`` (its name does not start
with ``byteor-``, so ``byteor doctor`` and ``byteor snapshot`` never take it for a lane),
created by the supervisor with the lanes, inherited by every process it forks, and kept for
the whole run (each restart zeroes the rows and the admission rings)::

    header, one 64-byte line
      0  magic        8 bytes  b"EPSTAT02"
      8  rows         u32      one per node, in the graph's node order (= counters rows)
     12  row_bytes    u32      256
     16  creator_pid  u32      + 4 bytes padding
     24  creator_st   u64      the creator's start time (a reused pid reads as gone)
     32  stop         u64      1 once the supervisor asks the sources to stop (drain)
     40  generation   u64      data-plane starts so far (1 = the first; restarts add 1)
     48  ring_slots   u32      entries of each admission ring (a power of two)
     52  buckets      u32      buckets of each histogram (len(LATENCY_BOUNDS_NS) + 1)
     56  reserved     u64
    row i (256 bytes, at 64 + 256 * i)
      word 0  released   1 + the low stamp of the last record the node gave back (0: none)
      word 1  held       1 + the lowest stamp its op holds back (0: holds nothing)
      word 2  flags      CONNECTED | PAUSED | ENDED | STARTED
      word 3  records    source: records admitted; sink: records confirmed
      word 4  acked      source: records acknowledged (Ack settled)
      word 5  committed  source: acknowledgements the adapter has sent upstream
      word 6  nacked     source: records handed back; sink: failed writes retried
      word 7  watermark  source: the done-watermark (ingress sequences below it are done)
      word 8  lag        1 + the upstream lag the adapter reports (0: unknown)
      word 9  pauses     source: times it paused for back-pressure
      word 10 detail_seq sequence lock of the detail text (odd: being written)
      words 11-15        reserved
      bytes 128-255      detail: u16 length, then UTF-8 (why it is not connected)
    latency block i (576 + 16 * ring_slots bytes, after the rows)
        0  end_to_end   histogram (sink): source admission -> the sink confirmed the write
      256  adapter      histogram: source: a read that returned records; sink: a write,
                        from the call until it is confirmed (retries included)
      512  ring_head    u64      admissions recorded so far (entry k is in slot k % ring_slots)
      520  reserved     7 x u64
      576  ring         ring_slots x (first ingress sequence u64, CLOCK_MONOTONIC ns u64)
    histogram (256 bytes, 32 words)
      word 0  sum_ns     the observations' sum in nanoseconds (end to end: one observation a
                         record; adapter: one a read or a write)
      word 1  beyond     end to end: records whose admission had left the source's ring
      words 2 ..         one count per bucket (not cumulative): bucket b counts values
                         <= LATENCY_BOUNDS_NS[b], the last one everything above (their sum
                         is the count of observations)
      the rest           reserved

Each row and each block has one writer at a time (the process running the node). Words are
single aligned 8-byte stores, which x86-64 neither tears nor reorders with other stores
(``byteor.lanes._platform`` refuses other architectures for shared memory), so a reader sees
each word as it was written, and sees two words in the order they were written. The
watermark relies on exactly that order (see :mod:`byteor.edgeplane._edge`), and so does the
admission ring.

**Latency without a cost per record.** The edge-in records one ring entry per admitted
batch: the ingress sequence of its first record and the time it was read (the monotonic
clock is one clock for every process of the machine). Stamps carry ingress sequences to the
sink (:mod:`._frame`), so after a confirmed write the edge-out looks up the entry of the
batch holding the write's first stamp (a binary search: entries increase) in the ring of the
one source its lane comes from (EdgePlane refuses merges, EP101) and adds ``now - then``,
weighted by the records written, to its end-to-end histogram: each record counts the age of
the oldest record of its write, a bound from above. An entry overwritten before the lookup
(a record older than ``ring_slots`` batches) is not guessed: its records count as
``beyond``. The writer stores an entry, then the head; a reader loads the head, the entries,
then the head again, and trusts an entry only if the writer cannot have started on its slot
(:meth:`AdmissionRing.admitted_at`). Histograms are not zeroed by a restart: they count the
whole run.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import struct
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from byteor.lanes import SHM_DIR, check_shared_memory_platform, pid_alive, process_start_time

__all__ = [
    "STATUS_PREFIX",
    "StatusSegment",
    "StatusRow",
    "status_path",
    "CONNECTED",
    "PAUSED",
    "ENDED",
    "STARTED",
    "W_RELEASED",
    "W_HELD",
    "W_FLAGS",
    "W_RECORDS",
    "W_ACKED",
    "W_COMMITTED",
    "W_NACKED",
    "W_WATERMARK",
    "W_LAG",
    "W_PAUSES",
    "LATENCY_BOUNDS_NS",
    "RING_SLOTS",
    "Histogram",
    "HistogramCounts",
    "AdmissionRing",
    "LatencyBlock",
]

STATUS_PREFIX: Final = "edgeplane-"
_MAGIC: Final = b"EPSTAT02"
_HEADER: Final = 64
_ROW: Final = 256
_DETAIL_AT: Final = 128
_DETAIL_MAX: Final = _ROW - _DETAIL_AT - 2

# header words
_H_ROWS: Final = 1  # rows (low 32) | row_bytes (high 32)
_H_CREATOR: Final = 2
_H_CREATOR_START: Final = 3
_H_STOP: Final = 4
_H_GENERATION: Final = 5
_H_LATENCY: Final = 6  # ring_slots (low 32) | buckets (high 32)

# row words
W_RELEASED: Final = 0
W_HELD: Final = 1
W_FLAGS: Final = 2
W_RECORDS: Final = 3
W_ACKED: Final = 4
W_COMMITTED: Final = 5
W_NACKED: Final = 6
W_WATERMARK: Final = 7
W_LAG: Final = 8
W_PAUSES: Final = 9
_W_DETAIL_SEQ: Final = 10

CONNECTED: Final = 1
PAUSED: Final = 2
ENDED: Final = 4  # a source with an end (a file) reached it; any edge: it finished cleanly
STARTED: Final = 8  # the adapter's start() returned at least once in this generation

_LEN: Final = struct.Struct("<H")

#: Upper bounds of the latency buckets in nanoseconds (a last bucket takes everything above):
#: 10 us to 60 s. Changing them changes the layout (the header's ``buckets``, the magic).
_BOUNDS_MS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500)
LATENCY_BOUNDS_NS: Final = tuple(
    round(ms * 1_000_000) for ms in (*_BOUNDS_MS, 1000, 2500, 5000, 10_000, 30_000, 60_000)
)
_BUCKETS: Final = len(LATENCY_BOUNDS_NS) + 1
#: Entries of each admission ring unless the segment is created with another number.
RING_SLOTS: Final = 1024
_MAX_RING_SLOTS: Final = 1 << 20

# latency block: word offsets
_HIST_WORDS: Final = 32
_B_END_TO_END: Final = 0
_B_ADAPTER: Final = _HIST_WORDS
_B_RING_HEAD: Final = 2 * _HIST_WORDS
_B_RING: Final = _B_RING_HEAD + 8
# histogram: word offsets
_H_SUM: Final = 0
_H_BEYOND: Final = 1
_H_BUCKET: Final = 2
assert _H_BUCKET + _BUCKETS <= _HIST_WORDS


def _block_bytes(ring_slots: int) -> int:
    return 8 * (_B_RING + 2 * ring_slots)


def status_path(run: str, directory: str | None = None) -> str:
    """Where run ``run`` keeps its status segment."""
    return os.path.join(directory or SHM_DIR, f"{STATUS_PREFIX}{run}.status")


class StatusRow:
    """One node's row: word reads and writes, flags, the detail text."""

    __slots__ = ("q", "base", "_buf", "_off")

    def __init__(self, q: memoryview, buf: memoryview, index: int) -> None:
        self.q = q
        self._buf = buf
        self._off = _HEADER + index * _ROW
        self.base = self._off // 8

    def get(self, word: int) -> int:
        return int(self.q[self.base + word])

    def set(self, word: int, value: int) -> None:
        self.q[self.base + word] = value

    def flag(self, bit: int, on: bool) -> None:
        at = self.base + W_FLAGS
        q = self.q
        q[at] = (q[at] | bit) if on else (q[at] & ~bit)

    def has(self, bit: int) -> bool:
        return bool(self.q[self.base + W_FLAGS] & bit)

    def set_detail(self, text: str) -> None:
        """Replace the detail text (cut to what fits, on a character boundary)."""
        raw = text.encode("utf-8")[:_DETAIL_MAX].decode("utf-8", "ignore").encode("utf-8")
        q, at = self.q, self.base + _W_DETAIL_SEQ
        seq = q[at] | 1
        q[at] = seq  # odd: being written
        start = self._off + _DETAIL_AT
        _LEN.pack_into(self._buf, start, len(raw))
        self._buf[start + 2 : start + 2 + len(raw)] = raw
        q[at] = seq + 1

    def detail(self) -> str:
        """The detail text ("" when a writer keeps changing it while we read)."""
        q, at = self.q, self.base + _W_DETAIL_SEQ
        start = self._off + _DETAIL_AT
        for _ in range(100):
            before = q[at]
            if before & 1:
                continue
            (n,) = _LEN.unpack_from(self._buf, start)
            raw = bytes(self._buf[start + 2 : start + 2 + min(n, _DETAIL_MAX)])
            if q[at] == before:
                return raw.decode("utf-8", "replace")
        return ""

    def clear(self) -> None:
        """Every word and the text back to zero (a new generation starts clean)."""
        self._buf[self._off : self._off + _ROW] = bytes(_ROW)


@dataclass(frozen=True, slots=True)
class HistogramCounts:
    """A copy of one histogram (see the module docstring for what each kind counts).

    Attributes:
        buckets: count per bucket, not cumulative (``len(LATENCY_BOUNDS_NS) + 1``).
        sum_ns: the sum of the observations in nanoseconds.
        beyond: end to end: records whose admission had left the ring (not in ``buckets``).
    """

    buckets: tuple[int, ...] = (0,) * _BUCKETS
    sum_ns: int = 0
    beyond: int = 0

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def __add__(self, other: HistogramCounts) -> HistogramCounts:
        return HistogramCounts(
            tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            self.sum_ns + other.sum_ns,
            self.beyond + other.beyond,
        )

    def summary(self) -> dict[str, float | int | None]:
        """``count``, ``p50_s``, ``p99_s`` and ``mean_s`` (``None`` when empty), and
        ``beyond_ring`` when some were: the run summary's fields."""
        count = self.count
        p50, p99 = self.quantile(0.5), self.quantile(0.99)
        out: dict[str, float | int | None] = {
            "count": count,
            "p50_s": None if p50 is None else round(p50, 6),
            "p99_s": None if p99 is None else round(p99, 6),
            "mean_s": round(self.sum_ns / count / 1e9, 6) if count else None,
        }
        if self.beyond:
            out["beyond_ring"] = self.beyond
        return out

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile in seconds, estimated from the buckets as Prometheus'
        ``histogram_quantile`` does (linear within the bucket; the highest bound for the
        last one); ``None`` when nothing was observed."""
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for b, n in enumerate(self.buckets):
            if n and seen + n >= rank:
                if b == len(LATENCY_BOUNDS_NS):
                    return LATENCY_BOUNDS_NS[-1] / 1e9
                low = LATENCY_BOUNDS_NS[b - 1] if b else 0
                high = LATENCY_BOUNDS_NS[b]
                return (low + (high - low) * (rank - seen) / n) / 1e9
            seen += n
        return LATENCY_BOUNDS_NS[-1] / 1e9  # pragma: no cover - rank <= total


class Histogram:
    """One histogram of a latency block (one writer: the process running the node)."""

    __slots__ = ("_q", "_at")

    def __init__(self, q: memoryview, at: int) -> None:
        self._q = q
        self._at = at

    def observe(self, ns: int, weight: int = 1) -> None:
        """Count ``weight`` observations of ``ns`` nanoseconds (below 0 counts as 0)."""
        q, at = self._q, self._at
        ns = max(ns, 0)
        q[at + _H_BUCKET + bisect_left(LATENCY_BOUNDS_NS, ns)] += weight
        q[at + _H_SUM] += ns * weight

    def beyond(self, weight: int) -> None:
        """Count ``weight`` records whose admission time is gone (not guessed)."""
        self._q[self._at + _H_BEYOND] += weight

    def read(self) -> HistogramCounts:
        q, at = self._q, self._at + _H_BUCKET
        return HistogramCounts(
            tuple(int(n) for n in q[at : at + _BUCKETS]),
            int(self._q[self._at + _H_SUM]),
            int(self._q[self._at + _H_BEYOND]),
        )


class AdmissionRing:
    """A source's admissions: (first ingress sequence, monotonic ns) of its last
    ``slots`` batches (one writer, the edge-in; readers: its sinks' edge-outs)."""

    __slots__ = ("_q", "_head", "_ring", "_mask", "slots")

    def __init__(self, q: memoryview, block: int, slots: int) -> None:
        self._q = q
        self._head = block + _B_RING_HEAD
        self._ring = block + _B_RING
        self.slots = slots
        self._mask = slots - 1

    def admit(self, first: int, ns: int) -> None:
        """Record that the batch starting at ingress sequence ``first`` was read at ``ns``
        (sequences increase from one call to the next)."""
        q, head = self._q, self._head
        k = q[head]
        at = self._ring + 2 * (k & self._mask)
        q[at] = first
        q[at + 1] = ns
        q[head] = k + 1  # after the entry: a reader that sees the head sees the entry

    def reset(self) -> None:
        self._q[self._head] = 0

    def admitted_at(self, seq: int) -> int | None:
        """When the batch holding ingress sequence ``seq`` was read (monotonic ns), or
        ``None`` when its entry is no longer in the ring (or was never there)."""
        q, ring, mask = self._q, self._ring, self._mask
        head = int(q[self._head])
        # Entry head - slots shares a slot with entry head, which the writer may be storing.
        lo, hi = max(0, head - self.slots + 1), head - 1
        if hi < lo or q[ring + 2 * (lo & mask)] > seq:
            return None
        while lo < hi:  # the last entry whose first sequence is <= seq
            mid = (lo + hi + 1) >> 1
            if q[ring + 2 * (mid & mask)] <= seq:
                lo = mid
            else:
                hi = mid - 1
        at = ring + 2 * (lo & mask)
        first, ns = q[at], q[at + 1]
        # Trust it only if the writer had not started on its slot again when we read it (a
        # probe overwritten during the search lies below that slot, so this catches it too).
        if first > seq or q[self._head] - lo >= self.slots:
            return None
        return int(ns)


class LatencyBlock:
    """One node's latency block: its two histograms and its admission ring.

    Attributes:
        end_to_end: a sink's end-to-end histogram.
        adapter: a source's reads or a sink's writes.
        ring: a source's admissions.
    """

    __slots__ = ("end_to_end", "adapter", "ring")

    def __init__(self, q: memoryview, block: int, ring_slots: int) -> None:
        self.end_to_end = Histogram(q, block + _B_END_TO_END)
        self.adapter = Histogram(q, block + _B_ADAPTER)
        self.ring = AdmissionRing(q, block, ring_slots)

    def read(self, first: int, called_ns: int, got_ns: int) -> None:
        """A source's read that returned records, ingress sequences from ``first``:
        called at ``called_ns``, returned at ``got_ns`` (their admission)."""
        self.adapter.observe(got_ns - called_ns)
        self.ring.admit(first, got_ns)

    def written(
        self, source: AdmissionRing, first: int, records: int, called_ns: int, done_ns: int
    ) -> None:
        """A sink's confirmed write of ``records`` records whose first stamp is ``first``
        (an ingress sequence of ``source``): called at ``called_ns``, confirmed at
        ``done_ns``."""
        self.adapter.observe(done_ns - called_ns)
        admitted = source.admitted_at(first)
        if admitted is None:
            self.end_to_end.beyond(records)
        else:
            self.end_to_end.observe(done_ns - admitted, records)


class StatusSegment:
    """A run's status segment (create it with :meth:`create`, read it with :meth:`attach`).

    Attributes:
        rows: one :class:`StatusRow` per node, in the graph's node order.
        latency: one :class:`LatencyBlock` per node, in the same order.
        path: the file, or ``None`` for anonymous memory (an in-process run).
    """

    def __init__(self, mm: mmap.mmap, path: str | None, created: bool) -> None:
        self._mm = mm
        self.path = path
        self.created = created
        self.buf = memoryview(mm)
        self.q = self.buf.cast("Q")
        count = self.q[_H_ROWS] & 0xFFFFFFFF
        slots = self.q[_H_LATENCY] & 0xFFFFFFFF
        self.rows = [StatusRow(self.q, self.buf, i) for i in range(count)]
        blocks = _HEADER + count * _ROW
        self.latency = [
            LatencyBlock(self.q, (blocks + i * _block_bytes(slots)) // 8, slots)
            for i in range(count)
        ]
        self.closed = False

    @classmethod
    def create(
        cls,
        run: str,
        rows: int,
        *,
        directory: str | None = None,
        memory: bool = False,
        ring_slots: int = RING_SLOTS,
    ) -> StatusSegment:
        """A fresh segment with ``rows`` zeroed rows and latency blocks (admission rings of
        ``ring_slots`` entries, a power of two); an existing file of that name is replaced
        (the supervisor checked that its creator is gone)."""
        if rows < 1:
            raise ValueError("a status segment has at least one row")
        if not _ring_slots_ok(ring_slots):
            raise ValueError(f"ring_slots must be a power of two up to {_MAX_RING_SLOTS}")
        size = _size(rows, ring_slots)
        if memory:
            mm = mmap.mmap(-1, size)
            cls._init(mm, rows, ring_slots)
            return cls(mm, None, True)
        check_shared_memory_platform()
        path = status_path(run, directory)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        cls._init(mm, rows, ring_slots)
        return cls(mm, path, True)

    @staticmethod
    def _init(mm: mmap.mmap, rows: int, ring_slots: int) -> None:
        q = memoryview(mm).cast("Q")
        q[_H_ROWS] = rows | (_ROW << 32)
        q[_H_LATENCY] = ring_slots | (_BUCKETS << 32)
        pid = os.getpid()
        q[_H_CREATOR] = pid
        q[_H_CREATOR_START] = process_start_time(pid)
        q.release()
        mm[0:8] = _MAGIC  # last: an attach sees a whole header or none

    @classmethod
    def attach(cls, run: str, *, directory: str | None = None) -> StatusSegment:
        """Map run ``run``'s segment after checking it is one (owner, mode, magic, size).

        Raises:
            FileNotFoundError: no such run (or it has not created its segment yet).
            ValueError: the file is not a status segment, or not ours to trust.
        """
        path = status_path(run, directory)
        fd = os.open(path, os.O_RDWR)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                raise ValueError(f"{path} is not a status segment of this user")
            head = os.pread(fd, _HEADER, 0)
            if len(head) < _HEADER or head[:8] != _MAGIC:
                raise ValueError(f"{path} is not an EdgePlane status segment")
            rows, row_bytes = struct.unpack_from("<II", head, 8)
            slots, buckets = struct.unpack_from("<II", head, 8 * _H_LATENCY)
            if (
                row_bytes != _ROW
                or buckets != _BUCKETS
                or not _ring_slots_ok(slots)
                or st.st_size != _size(rows, slots)
            ):
                raise ValueError(f"{path} has a geometry this EdgePlane does not know")
            mm = mmap.mmap(fd, st.st_size)
        finally:
            os.close(fd)
        return cls(mm, path, False)

    # -- the header -------------------------------------------------------------------------

    @property
    def creator_alive(self) -> bool:
        return pid_alive(int(self.q[_H_CREATOR]), int(self.q[_H_CREATOR_START]))

    @property
    def stop_requested(self) -> bool:
        return bool(self.q[_H_STOP])

    def request_stop(self) -> None:
        self.q[_H_STOP] = 1

    @property
    def generation(self) -> int:
        return int(self.q[_H_GENERATION])

    def new_generation(self) -> int:
        """Zero every row and empty every admission ring (ingress sequences start again
        at 0; the histograms keep counting), clear the stop request, count one more start;
        returns it."""
        for row in self.rows:
            row.clear()
        for block in self.latency:
            block.ring.reset()
        self.q[_H_STOP] = 0
        self.q[_H_GENERATION] += 1
        return int(self.q[_H_GENERATION])

    # -- the end --------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.rows = []
        self.latency = []
        self.q.release()
        self.buf.release()
        with contextlib.suppress(BufferError):
            self._mm.close()

    def unlink(self) -> None:
        """Remove the file (processes that mapped it keep their mapping)."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _ring_slots_ok(slots: int) -> bool:
    return 0 < slots <= _MAX_RING_SLOTS and not slots & (slots - 1)


def _size(rows: int, ring_slots: int) -> int:
    return _HEADER + rows * (_ROW + _block_bytes(ring_slots))


def stale_status(run: str, directory: str | None = None) -> bool | None:
    """``None`` when run ``run`` has no status file; else whether its creator is gone."""
    try:
        seg = StatusSegment.attach(run, directory=directory)
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return True  # not ours to read: nobody can be using it as a status segment
    try:
        return not seg.creator_alive
    finally:
        seg.close()


def row_words(rows: Sequence[StatusRow], word: int) -> list[int]:
    """One word of every row (a helper for summaries and tests)."""
    return [r.get(word) for r in rows]
