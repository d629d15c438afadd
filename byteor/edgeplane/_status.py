"""EdgePlane's status segment: what the edge processes and stamped stages tell each other.

Theory of operation
-------------------
The run's counters segment (``byteor.lanes``) holds what every executor writes: records in
and out, busy time, restarts. EdgePlane needs a few more numbers per node, read across
processes without messages: the acknowledgement watermark's inputs (which stamps a hop has
finished, what an op holds back) and each adapter's state (connected, paused, acknowledged,
committed, lag, why it is not connected). They live in one more shared-memory file per run,
``/dev/shm/edgeplane-<run>.status`` (its name does not start with ``byteor-``, so
``byteor doctor`` and ``byteor snapshot`` never take it for a lane), created by the supervisor
with the lanes, inherited by every process it forks, and re-created on each restart::

    header, one 64-byte line
      0  magic        8 bytes  b"EPSTAT01"
      8  rows         u32      one per node, in the graph's node order (= counters rows)
     12  row_bytes    u32      256
     16  creator_pid  u32      + 4 bytes padding
     24  creator_st   u64      the creator's start time (a reused pid reads as gone)
     32  stop         u64      1 once the supervisor asks the sources to stop (drain)
     40  generation   u64      data-plane starts so far (1 = the first; restarts add 1)
     48  reserved     2 x u64
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

Each row has one writer at a time (the process running the node). Words are single aligned
8-byte stores, which x86-64 neither tears nor reorders with other stores
(``byteor.lanes._platform`` refuses other architectures for shared memory), so a reader sees
each word as it was written, and sees two words in the order they were written. The
watermark relies on exactly that order (see :mod:`byteor.edgeplane._edge`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import struct
from collections.abc import Sequence
from typing import Final

from byteor.lanes._platform import (
    check_shared_memory_platform,
    pid_alive,
    process_start_time,
)
from byteor.lanes._segment import SHM_DIR

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
]

STATUS_PREFIX: Final = "edgeplane-"
_MAGIC: Final = b"EPSTAT01"
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


class StatusSegment:
    """A run's status segment (create it with :meth:`create`, read it with :meth:`attach`).

    Attributes:
        rows: one :class:`StatusRow` per node, in the graph's node order.
        path: the file, or ``None`` for anonymous memory (an in-process run).
    """

    def __init__(self, mm: mmap.mmap, path: str | None, created: bool) -> None:
        self._mm = mm
        self.path = path
        self.created = created
        self.buf = memoryview(mm)
        self.q = self.buf.cast("Q")
        count = self.q[_H_ROWS] & 0xFFFFFFFF
        self.rows = [StatusRow(self.q, self.buf, i) for i in range(count)]
        self.closed = False

    @classmethod
    def create(
        cls, run: str, rows: int, *, directory: str | None = None, memory: bool = False
    ) -> StatusSegment:
        """A fresh segment with ``rows`` zeroed rows; an existing file of that name is
        replaced (the supervisor checked that its creator is gone)."""
        if rows < 1:
            raise ValueError("a status segment has at least one row")
        size = _HEADER + rows * _ROW
        if memory:
            mm = mmap.mmap(-1, size)
            cls._init(mm, rows)
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
        cls._init(mm, rows)
        return cls(mm, path, True)

    @staticmethod
    def _init(mm: mmap.mmap, rows: int) -> None:
        q = memoryview(mm).cast("Q")
        q[_H_ROWS] = rows | (_ROW << 32)
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
            if row_bytes != _ROW or st.st_size != _HEADER + rows * _ROW:
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
        """Zero every row, clear the stop request, count one more start; returns it."""
        for row in self.rows:
            row.clear()
        self.q[_H_STOP] = 0
        self.q[_H_GENERATION] += 1
        return int(self.q[_H_GENERATION])

    # -- the end --------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.rows = []
        self.q.release()
        self.buf.release()
        with contextlib.suppress(BufferError):
            self._mm.close()

    def unlink(self) -> None:
        """Remove the file (processes that mapped it keep their mapping)."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


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
