"""Counters segments: a table of per-node counters that other processes read without locks.

Theory of operation
-------------------
A counters segment (layout: ``CountersHeader`` then ``NodeRow`` x rows, see :mod:`.layout`)
is created once per pipeline run by the process that starts it, with one row per node
(source, stage, sink) and the node's name and process group written into the row. After
that each row has exactly one writer at a time, the process running the node (a restarted
process takes the row over from a dead one); readers, such as ``byteor snapshot``, map the
file and copy rows.

The committed counters (line 0 of a row) change together under a sequence lock. The writer
stores ``seq + 1`` (odd), the seven words (one ``pack_into``), then ``seq + 2`` (even); x86-64
keeps stores in order (``_platform``), so a reader that loads the same even ``seq`` before
and after copying the words has a set of words that was committed together. A writer killed
in the middle leaves ``seq`` odd: readers give up after a bounded time (0.1 s) and say the
row is not consistent, never hang. The live words (line 1) are single stores.

Attaching validates everything, as for lanes: owner and mode, size, magic, version, layout
id, header checksum and geometry, each failure a typed :class:`AttachError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import stat
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from byteor.lanes import layout as L
from byteor.lanes._errors import (
    AttachError,
    BadChecksum,
    BadGeometry,
    BadMagic,
    BadVersion,
    ForeignSegment,
    SegmentExists,
    SegmentNotFound,
    SegmentTruncated,
)
from byteor.lanes._platform import check_shared_memory_platform, pid_alive, process_start_time
from byteor.lanes._segment import SHM_DIR, SHM_PREFIX, bump, validate_name

__all__ = [
    "Counters",
    "CounterRow",
    "NodeCounters",
    "RowWriter",
    "create_counters",
    "attach_counters",
    "unlink_counters",
    "is_counters_file",
]

_HEADER: Final = ctypes.sizeof(L.CountersHeader)
_ROW: Final = ctypes.sizeof(L.NodeRow)
# Word indexes (8-byte units) inside a row.
_W_SEQ: Final = L.NodeRow.seq.offset // 8
_W_INFLIGHT: Final = L.NodeRow.inflight.offset // 8
_W_PHASE_PID: Final = L.NodeRow.phase.offset // 8  # low 32: phase, high 32: pid
_W_STARTED: Final = L.NodeRow.started_ns.offset // 8
_W_OWNER_START: Final = L.NodeRow.owner_start.offset // 8
_W_RESTARTS: Final = L.NodeRow.restarts.offset // 8
_W_REDELIVERED: Final = L.NodeRow.redelivered.offset // 8
_W_DUPLICATES: Final = L.NodeRow.duplicates.offset // 8
_W_PENDING_SKIPPED: Final = L.NodeRow.pending_skipped.offset // 8
_COMMITTED: Final = struct.Struct("<7Q")  # records_in .. updated_ns, after seq
_READ_SPINS: Final = 200  # tries before a reader starts yielding
_READ_PATIENCE_NS: Final = 100_000_000  # how long a reader waits for a commit to finish


@dataclass(frozen=True, slots=True)
class CounterRow:
    """What a row is for, written at creation."""

    name: str
    role: str  # "source", "stage" or "sink"
    group: str = ""  # the process the node runs in


@dataclass(frozen=True, slots=True)
class NodeCounters:
    """One row as read: the committed counters, the live state, and whether it was
    consistent (false only when its writer died while committing)."""

    index: int
    name: str
    role: str
    group: str
    records_in: int
    records_out: int
    errors: int
    skipped: int
    routed: int
    busy_ns: int
    updated_ns: int
    inflight: int
    phase: str
    pid: int
    alive: bool
    started_ns: int
    restarts: int
    redelivered: int
    duplicates: int
    pending_skipped: int
    consistent: bool

    def busy_share(self, now_ns: int | None = None) -> float:
        """Time in the node's work over the time since it started (0 before it started)."""
        if not self.started_ns:
            return 0.0
        end = self.updated_ns if self.phase == "done" or now_ns is None else now_ns
        wall = end - self.started_ns
        return min(1.0, self.busy_ns / wall) if wall > 0 else 0.0


class RowWriter:
    """The one writer of a row: commit counters, publish the live state.

    Made by :meth:`Counters.writer` in the process that runs the node; it claims the row
    (pid, process start time, start time if the row never started).
    """

    __slots__ = (
        "_q",
        "_buf",
        "_b",
        "_commit_off",
        "_seq",
        "_pid_word",
        "live_q",
        "live_at",
        "step_word",
    )

    def __init__(self, counters: Counters, index: int) -> None:
        self._q = counters.q
        self._buf = counters.buf
        off = _HEADER + index * _ROW
        self._b = off // 8
        self._commit_off = off + 8
        q = self._q
        b = self._b
        # A predecessor killed mid-commit left seq odd: round up, so odd means "writing".
        self._seq = (q[b + _W_SEQ] + 1) & ~1
        q[b + _W_SEQ] = self._seq
        pid = os.getpid()
        self._pid_word = pid << 32
        q[b + _W_OWNER_START] = process_start_time(pid)
        if not q[b + _W_STARTED]:
            q[b + _W_STARTED] = time.monotonic_ns()
        q[b + _W_PHASE_PID] = self._pid_word | (q[b + _W_PHASE_PID] & 0xFFFFFFFF)
        # For a hot loop that stores the live words itself, as :meth:`begin` does:
        # ``live_q[live_at] = inflight; live_q[live_at + 1] = step_word``.
        self.live_q = q
        self.live_at = b + _W_INFLIGHT
        self.step_word = self._pid_word | L.PHASE_STEP

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
        """Publish the committed counters as one consistent set; the owner holds nothing
        now (``inflight`` 0, phase idle)."""
        q = self._q
        b = self._b
        s = self._seq
        q[b] = s + 1
        _COMMITTED.pack_into(
            self._buf, self._commit_off, records_in, records_out, errors, skipped, routed,
            busy_ns, now_ns,
        )  # fmt: skip
        q[b] = s + 2
        self._seq = s + 2
        q[b + _W_INFLIGHT] = 0
        q[b + _W_PHASE_PID] = self._pid_word

    def begin(self, inflight: int) -> None:
        """The owner holds ``inflight`` records since its last commit and enters its work."""
        q = self._q
        b = self._b
        q[b + _W_INFLIGHT] = inflight
        q[b + _W_PHASE_PID] = self._pid_word | L.PHASE_STEP

    def live(self, inflight: int, phase: int) -> None:
        """What the owner holds now (records taken since the last commit) and does."""
        q = self._q
        b = self._b
        q[b + _W_INFLIGHT] = inflight
        q[b + _W_PHASE_PID] = self._pid_word | phase

    def phase(self, phase: int) -> None:
        self._q[self._b + _W_PHASE_PID] = self._pid_word | phase

    def pending_skipped(self, n: int) -> None:
        """Records skipped since the last commit (only stored when there are some)."""
        self._q[self._b + _W_PENDING_SKIPPED] = n

    def add_restart(self, redelivered: int, duplicates: int) -> None:
        """Count one restart of this row's node and what it cost."""
        q = self._q
        b = self._b
        bump(q, b + _W_RESTARTS)
        bump(q, b + _W_REDELIVERED, redelivered)
        bump(q, b + _W_DUPLICATES, duplicates)


class Counters:
    """A mapped counters segment: the creator's (``created``) or a reader's handle."""

    def __init__(
        self, name: str, path: str | None, mm: mmap.mmap, fd: int, rows: int, created: bool
    ) -> None:
        self.name = name
        self.path = path
        self.rows = rows
        self.created = created
        self._mm = mm
        self._fd = fd
        self.buf = memoryview(mm)
        self.q = self.buf.cast("Q")
        self.closed = False

    def header(self) -> L.CountersHeader:
        return L.CountersHeader.from_buffer_copy(self._mm, 0)

    def writer(self, index: int) -> RowWriter:
        self._check_index(index)
        return RowWriter(self, index)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.rows:
            raise IndexError(f"counters {self.name!r} have rows 0..{self.rows - 1}, not {index}")

    def find(self, name: str) -> int | None:
        """The index of the row named ``name``, or ``None``."""
        for i in range(self.rows):
            if self._identity(i)[0] == name:
                return i
        return None

    def _identity(self, index: int) -> tuple[str, str, str]:
        off = _HEADER + index * _ROW
        row = L.NodeRow.from_buffer_copy(self._mm, off)
        return (
            row.name.decode("utf-8", "replace"),
            L.ROLE_NAMES.get(row.role, f"role {row.role}"),
            row.group.decode("utf-8", "replace"),
        )

    def read(self, index: int) -> NodeCounters:
        """Row ``index`` as a consistent copy (see the module docstring)."""
        self._check_index(index)
        off = _HEADER + index * _ROW
        q = self.q
        b = off // 8
        buf = self.buf
        consistent = False
        committed = _COMMITTED.unpack_from(buf, off + 8)
        deadline = 0
        tries = 0
        while True:
            before = q[b]
            if not before & 1:
                committed = _COMMITTED.unpack_from(buf, off + 8)
                if q[b] == before:
                    consistent = True
                    break
            # A writer paused mid-commit (preempted, collecting garbage) holds seq odd for a
            # while: spin a little, then yield, and give up after a bounded time.
            tries += 1
            if tries >= _READ_SPINS:
                now = time.monotonic_ns()
                if not deadline:
                    deadline = now + _READ_PATIENCE_NS
                elif now > deadline:
                    break
                os.sched_yield()
        row = L.NodeRow.from_buffer_copy(self._mm, off)
        name, role, group = self._identity(index)
        return NodeCounters(
            index=index,
            name=name,
            role=role,
            group=group,
            records_in=committed[0],
            records_out=committed[1],
            errors=committed[2],
            skipped=committed[3],
            routed=committed[4],
            busy_ns=committed[5],
            updated_ns=committed[6],
            inflight=row.inflight,
            phase=L.PHASE_NAMES.get(row.phase, f"phase {row.phase}"),
            pid=row.pid,
            alive=pid_alive(row.pid, row.owner_start) if row.pid else False,
            started_ns=row.started_ns,
            restarts=row.restarts,
            redelivered=row.redelivered,
            duplicates=row.duplicates,
            pending_skipped=row.pending_skipped,
            consistent=consistent,
        )

    def read_all(self) -> list[NodeCounters]:
        return [self.read(i) for i in range(self.rows)]

    @property
    def finished(self) -> bool:
        return bool(self.header().finished)

    def finish(self) -> None:
        """Mark the run over (the creator, before it unlinks the segment)."""
        off = L.CountersHeader.finished.offset
        self.buf[off : off + 4] = (1).to_bytes(4, "little")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.q.release()
        self.buf.release()
        with contextlib.suppress(BufferError):
            self._mm.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _path(name: str, directory: str | None) -> str:
    return os.path.join(directory or SHM_DIR, SHM_PREFIX + name)


def _encode_name(text: str, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > L.MAX_NAME_BYTES:
        raise ValueError(f"{what} {text!r} is {len(raw)} bytes; at most {L.MAX_NAME_BYTES}")
    return raw


def create_counters(
    name: str,
    rows: Sequence[CounterRow],
    *,
    backing: str = "shm",
    directory: str | None = None,
    replace: bool = False,
) -> Counters:
    """Create a counters segment ``byteor-<name>`` with one row per item of ``rows``.

    Args:
        name: segment name (1-200 of ``A-Z a-z 0-9 _ . -``).
        rows: the rows, in order (each name and group at most 48 bytes).
        backing: ``"shm"`` (a file in ``directory``, default ``/dev/shm``) or ``"memory"``
            (anonymous memory of this process: the same code, nobody else can read it).
        replace: remove an existing segment of that name first.
    """
    validate_name(name)
    if not 1 <= len(rows) <= L.COUNTERS_MAX_ROWS:
        raise BadGeometry(
            f"a counters segment has 1 to {L.COUNTERS_MAX_ROWS} rows, not {len(rows)}"
        )
    encoded: list[tuple[bytes, int, bytes]] = []
    for r in rows:
        role = L.ROLE_CODES.get(r.role)
        if role is None:
            raise ValueError(f"row role {r.role!r}: use one of {', '.join(L.ROLE_CODES)}")
        encoded.append((_encode_name(r.name, "row name"), role, _encode_name(r.group, "group")))
    size = L.counters_bytes(len(rows))
    if backing == "memory":
        mm = mmap.mmap(-1, size)
        _init(mm, name, encoded, size)
        return Counters(name, None, mm, -1, len(rows), created=True)
    if backing != "shm":
        raise ValueError(f"unknown backing {backing!r}: use 'shm' or 'memory'")
    check_shared_memory_platform()
    path = _path(name, directory)
    if replace:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SegmentExists(
            f"counters segment {path} already exists: is that run still going? "
            "(`byteor doctor --remove` removes segments whose creator is gone)"
        ) from None
    except OSError as exc:
        raise AttachError(f"cannot create counters segment {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
        _init(mm, name, encoded, size)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    return Counters(name, path, mm, fd, len(rows), created=True)


def _init(mm: mmap.mmap, name: str, rows: list[tuple[bytes, int, bytes]], size: int) -> None:
    for i, (row_name, role, group) in enumerate(rows):
        row = L.NodeRow()
        row.name = row_name
        row.role = role
        row.group = group
        off = _HEADER + i * _ROW
        mm[off : off + _ROW] = bytes(row)
    h = L.CountersHeader()
    h.abi_version = L.COUNTERS_ABI_VERSION
    h.layout_id = L.COUNTERS_LAYOUT_ID
    h.rows = len(rows)
    h.row_bytes = _ROW
    h.total_bytes = size
    h.created_ns = time.time_ns()
    h.creator_uid = os.geteuid()
    h.creator_pid = os.getpid()
    h.creator_start = process_start_time(os.getpid())
    h.name = name.encode()[: L.MAX_NAME_BYTES]
    h.magic = L.COUNTERS_MAGIC
    h.header_crc = _crc(bytes(h))
    raw = bytes(h)
    # Magic goes in last: a concurrent attach sees "not initialized", never half a header.
    mm[8:_HEADER] = raw[8:]
    mm[0:8] = L.COUNTERS_MAGIC


def _crc(raw: bytes) -> int:
    return zlib.crc32(raw[: L.COUNTERS_CRC_SPAN]) & 0xFFFFFFFF


def is_counters_file(path: str) -> bool:
    """Whether the file at ``path`` starts with the counters magic (no other check)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == L.COUNTERS_MAGIC
    except OSError:
        return False


def attach_counters(
    name: str, *, directory: str | None = None, path: str | None = None
) -> Counters:
    """Map the counters segment ``byteor-<name>`` after validating it (untrusted input)."""
    validate_name(name)
    check_shared_memory_platform()
    where = path or _path(name, directory)
    try:
        fd = os.open(where, os.O_RDWR)
    except FileNotFoundError:
        raise SegmentNotFound(
            f"counters segment {where} does not exist: is the run going?"
        ) from None
    except PermissionError:
        raise ForeignSegment(
            f"counters segment {where} is not readable and writable by this user"
        ) from None
    except OSError as exc:
        raise AttachError(f"cannot open counters segment {where}: {exc.strerror}") from None
    try:
        rows = _validate(fd, where)
        mm = mmap.mmap(fd, L.counters_bytes(rows))
    except BaseException:
        os.close(fd)
        raise
    return Counters(name, where, mm, fd, rows, created=False)


def _validate(fd: int, where: str) -> int:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise AttachError(f"{where} is not a regular file")
    if st.st_uid != os.geteuid():
        raise ForeignSegment(
            f"counters segment {where} belongs to uid {st.st_uid}, not this user: "
            "refusing to trust it"
        )
    if st.st_mode & 0o022:
        raise ForeignSegment(
            f"counters segment {where} is writable by other users: refusing to trust it"
        )
    if st.st_size < _HEADER:
        raise SegmentTruncated(
            f"counters segment {where} is {st.st_size} bytes, smaller than its "
            f"{_HEADER}-byte header"
        )
    raw = os.pread(fd, _HEADER, 0)
    if len(raw) < _HEADER:
        raise SegmentTruncated(f"counters segment {where}: short read of its header")
    h = L.CountersHeader.from_buffer_copy(raw)
    if raw[:8] != L.COUNTERS_MAGIC:
        if raw[:8] == b"\0" * 8:
            raise BadMagic(f"counters segment {where} has no magic: it is still being created")
        raise BadMagic(f"{where} is not a ByteOr counters segment (magic {raw[:8]!r})")
    if h.abi_version != L.COUNTERS_ABI_VERSION or h.layout_id != L.COUNTERS_LAYOUT_ID:
        raise BadVersion(
            f"counters segment {where} has version {h.abi_version} and layout id "
            f"{h.layout_id:#010x}; this byteor expects {L.COUNTERS_ABI_VERSION} and "
            f"{L.COUNTERS_LAYOUT_ID:#010x}: run the same byteor version on both sides"
        )
    if _crc(raw) != h.header_crc:
        raise BadChecksum(
            f"counters segment {where} header checksum does not match: it was modified or corrupted"
        )
    if not 1 <= h.rows <= L.COUNTERS_MAX_ROWS or h.row_bytes != _ROW:
        raise BadGeometry(
            f"counters segment {where} claims {h.rows} rows of {h.row_bytes} bytes; rows are "
            f"{_ROW} bytes, 1 to {L.COUNTERS_MAX_ROWS} of them"
        )
    size = L.counters_bytes(h.rows)
    if h.total_bytes != size:
        raise BadGeometry(
            f"counters segment {where} claims {h.total_bytes} bytes, its rows need {size}"
        )
    if st.st_size < size:
        raise SegmentTruncated(f"counters segment {where} is {st.st_size} bytes but needs {size}")
    if st.st_size != size:
        raise BadGeometry(
            f"counters segment {where} is {st.st_size} bytes, more than the {size} it describes"
        )
    return int(h.rows)


def unlink_counters(name: str, *, directory: str | None = None) -> bool:
    """Remove the counters segment's name; returns whether it existed."""
    validate_name(name)
    try:
        os.unlink(_path(name, directory))
    except FileNotFoundError:
        return False
    return True
