"""Creating, attaching and validating lane segments.

A segment is either a file under ``/dev/shm`` (``backing="shm"``), a regular file anywhere
(``backing="file"``, for journals that must survive a restart of every process), or anonymous
memory in this process (``backing="memory"``, for tests and threads). All three map the same
bytes through ``mmap``, so every lane operation is the same code on all of them.

Attaching is untrusted input: the file may be truncated, stale, from another ABI version,
another user's, or written by something hostile. :func:`attach_segment` checks size, owner,
magic, version, layout, kind, checksum, geometry and every cursor before any ring access, and
each failure is a typed :class:`AttachError` naming the problem. After attach, every read that
could leave the mapping (a slot length) is checked where it is used.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import numpy as np

from byteor.lanes import layout as L
from byteor.lanes._errors import (
    AttachError,
    BadChecksum,
    BadGeometry,
    BadKind,
    BadMagic,
    BadVersion,
    ConsumerError,
    CursorOutOfRange,
    ForeignSegment,
    SegmentExists,
    SegmentNotFound,
    SegmentTruncated,
)
from byteor.lanes._platform import check_shared_memory_platform, pid_alive, process_start_time

__all__ = [
    "Segment",
    "SHM_DIR",
    "SHM_PREFIX",
    "shm_path",
    "create_segment",
    "attach_segment",
    "unlink_segment",
    "validate_name",
    "bump",
]

SHM_DIR: Final = "/dev/shm"
SHM_PREFIX: Final = "byteor-"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
_MAX_CURSOR: Final = 1 << 62

# Words (8-byte indexes into the segment viewed as "Q") of the producer block fields.
_P_CURSOR: Final = L.ProducerBlock.cursor.offset // 8
_P_CLAIMED: Final = L.ProducerBlock.claimed.offset // 8
_P_FULL_WAITS: Final = L.ProducerBlock.full_waits.offset // 8
_P_DROPS: Final = L.ProducerBlock.drops.offset // 8
_P_EPOCH_SEEN: Final = L.ProducerBlock.epoch_seen.offset // 8
_P_SLEEPING: Final = L.ProducerBlock.sleeping.offset // 8
_P_CLOSED_PID: Final = L.ProducerBlock.closed.offset // 8  # low 32: closed, high 32: pid
_P_START_TIME: Final = L.ProducerBlock.start_time.offset // 8
_P_CONSUMER_SLEEPING: Final = L.ProducerBlock.consumer_sleeping.offset // 8

_C_CURSOR: Final = L.ConsumerBlock.cursor.offset // 8
_C_STATE_PID: Final = L.ConsumerBlock.state.offset // 8  # low 32: state, high 32: pid
_C_LOST: Final = L.ConsumerBlock.lost.offset // 8
_C_WAITS: Final = L.ConsumerBlock.waits.offset // 8
_C_AFTER: Final = L.ConsumerBlock.after_mask.offset // 8
_C_START_TIME: Final = L.ConsumerBlock.start_time.offset // 8
_C_JOINED_AT: Final = L.ConsumerBlock.joined_at.offset // 8
_C_EPOCH: Final = L.ConsumerBlock.epoch.offset // 8

_memory_segments: dict[str, Segment] = {}
_memory_lock = threading.Lock()


def bump(words: memoryview, index: int, n: int = 1) -> None:
    """Add ``n`` to the statistics counter ``words[index]``, modulo 2**64: a counter never
    gates anything, and a hostile or corrupt segment may hold any value in it (``+=`` would
    raise ValueError at the top of the range)."""
    words[index] = (words[index] + n) & 0xFFFF_FFFF_FFFF_FFFF


def validate_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"lane name {name!r} is invalid: use 1-200 characters from A-Z a-z 0-9 _ . -"
        )


def shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, SHM_PREFIX + name)


class Segment:
    """One mapped segment: the raw views the ring code works on, plus registration.

    ``q`` is the whole segment as unsigned 64-bit words and ``buf`` as bytes; word indexes of
    the producer block and of consumer line ``i`` are ``p`` and ``c(i)``.
    """

    def __init__(
        self,
        name: str,
        backing: str,
        path: str | None,
        mm: mmap.mmap,
        fd: int,
        geometry: L.Geometry,
        kind: int,
        created: bool,
    ) -> None:
        self.name = name
        self.backing = backing
        self.path = path
        self.mm = mm
        self.fd = fd
        self.geometry = geometry
        self.kind = kind
        self.kind_name = L.KIND_NAMES[kind]
        self.created = created
        self.capacity = geometry.capacity
        self.mask = geometry.capacity - 1
        self.slot_bytes = geometry.slot_bytes
        self.max_consumers = geometry.max_consumers
        self.buf = memoryview(mm)
        self.q = self.buf.cast("Q")
        self.p = geometry.producer_offset // 8
        self.desc_word = geometry.descriptors_offset // 8
        self.payload_offset = geometry.payloads_offset
        # The payloads and the descriptor words on their own (the hot paths index them from
        # 0: one addition less a message); released with ``buf`` and ``q`` in close().
        self.payloads = self.buf[self.payload_offset :]
        self.descriptors = self.q[self.desc_word :]
        # The address of the mapping, for futex calls. Holding the ctypes object pins an export
        # of the mmap, released in close().
        self._anchor: ctypes.Array[ctypes.c_char] | None = (ctypes.c_char * 1).from_buffer(mm)
        self.address = ctypes.addressof(self._anchor)
        self._thread_lock = threading.Lock()
        self.closed = False
        # Which segment this is, whichever handle of this process maps it.
        self.identity: tuple[object, ...]
        if fd >= 0:
            st = os.fstat(fd)
            self.identity = ("file", st.st_dev, st.st_ino)
        else:
            self.identity = ("memory", name, id(mm))

    # -- word indexes -------------------------------------------------------------------

    def c(self, index: int) -> int:
        """Word index of consumer line ``index``."""
        return self.geometry.consumer_offset(index) // 8

    @property
    def producer_cursor_word(self) -> int:
        return self.p + _P_CURSOR

    def futex_address(self, word: int) -> int:
        return self.address + word * 8

    # -- header fields --------------------------------------------------------------------

    def header(self) -> L.SegmentHeader:
        return L.SegmentHeader.from_buffer_copy(self.mm, 0)

    @property
    def file_backed(self) -> bool:
        return self.backing == "file"

    # -- registration -------------------------------------------------------------------

    @contextmanager
    def registration_lock(self) -> Iterator[None]:
        """Serialize consumer/producer registration across processes (flock) and threads."""
        with self._thread_lock:
            if self.fd >= 0:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if self.fd >= 0:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)

    def bump_epoch(self) -> int:
        """Advance the registration epoch (call under the registration lock)."""
        off = L.SegmentHeader.registration_epoch.offset
        epoch = (int.from_bytes(self.buf[off : off + 4], "little") + 1) & 0xFFFFFFFF
        self.buf[off : off + 4] = epoch.to_bytes(4, "little")
        return epoch

    def epoch(self) -> int:
        off = L.SegmentHeader.registration_epoch.offset
        return int.from_bytes(self.buf[off : off + 4], "little")

    def consumer_name(self, index: int) -> str:
        off = self.geometry.consumer_offset(index) + L.ConsumerBlock.name.offset
        raw = bytes(self.buf[off : off + L.MAX_NAME_BYTES]).rstrip(b"\0")
        return raw.decode("utf-8", "replace")

    def consumer_state(self, index: int) -> int:
        return self.q[self.c(index) + _C_STATE_PID] & 0xFFFFFFFF

    def consumer_pid(self, index: int) -> int:
        return self.q[self.c(index) + _C_STATE_PID] >> 32

    def consumer_alive(self, index: int) -> bool:
        base = self.c(index)
        return pid_alive(self.q[base + _C_STATE_PID] >> 32, self.q[base + _C_START_TIME])

    def find_consumer(self, name: str) -> int | None:
        for i in range(self.max_consumers):
            if self.consumer_state(i) != L.STATE_FREE and self.consumer_name(i) == name:
                return i
        return None

    def active_consumers(self) -> list[int]:
        return [i for i in range(self.max_consumers) if self.consumer_state(i) != L.STATE_FREE]

    def write_consumer(
        self, index: int, *, name: str, state: int, cursor: int, after_mask: int = 0
    ) -> None:
        """Fill consumer line ``index`` and make it visible (state last). Under the lock."""
        base = self.c(index)
        q = self.q
        encoded = name.encode()
        if len(encoded) > L.MAX_NAME_BYTES:
            raise ConsumerError(
                f"consumer name {name!r} is {len(encoded)} bytes; at most {L.MAX_NAME_BYTES}"
            )
        off = self.geometry.consumer_offset(index) + L.ConsumerBlock.name.offset
        self.buf[off : off + L.MAX_NAME_BYTES] = encoded.ljust(L.MAX_NAME_BYTES, b"\0")
        q[base + _C_CURSOR] = cursor
        q[base + _C_LOST] = 0
        q[base + _C_WAITS] = 0
        q[base + _C_AFTER] = after_mask
        q[base + _C_JOINED_AT] = cursor
        q[base + _C_START_TIME] = 0
        # The state first, the epoch after: a producer that sees the new epoch sees the line.
        q[base + _C_STATE_PID] = state
        q[base + _C_EPOCH] = self.bump_epoch()

    def claim_consumer(self, index: int) -> None:
        """Record this process as the live owner of consumer line ``index``."""
        pid = os.getpid()
        base = self.c(index)
        self.q[base + _C_START_TIME] = process_start_time(pid)
        self.q[base + _C_STATE_PID] = (self.q[base + _C_STATE_PID] & 0xFFFFFFFF) | (pid << 32)

    def release_consumer(self, index: int) -> None:
        """Drop this process's ownership of line ``index`` (the line itself stays)."""
        base = self.c(index)
        self.q[base + _C_STATE_PID] = self.q[base + _C_STATE_PID] & 0xFFFFFFFF
        self.q[base + _C_START_TIME] = 0

    def free_consumer(self, index: int) -> None:
        base = self.c(index)
        self.q[base + _C_STATE_PID] = L.STATE_FREE
        self.bump_epoch()

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Unmap. Views handed out keep the memory alive until they are released."""
        if self.closed:
            return
        self.closed = True
        self._anchor = None
        self.descriptors.release()
        self.payloads.release()
        self.q.release()
        self.buf.release()
        if self.backing == "memory":
            return  # shared by every handle of this process; freed with the last reference
        # A caller may still hold a zero-copy view; the mapping then goes when the view does.
        with contextlib.suppress(BufferError):
            self.mm.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def flush(self) -> None:
        """Write a file-backed segment's dirty pages to disk (``msync``)."""
        self.mm.flush()


# -- create ------------------------------------------------------------------------------


def _check_geometry(capacity: int, slot_bytes: int, max_consumers: int) -> None:
    if not isinstance(capacity, int) or capacity < L.MIN_CAPACITY or capacity > L.MAX_CAPACITY:
        raise BadGeometry(
            f"capacity {capacity!r} is out of range: use a power of two from "
            f"{L.MIN_CAPACITY} to {L.MAX_CAPACITY}"
        )
    if capacity & (capacity - 1):
        lower = 1 << (capacity.bit_length() - 1)
        raise BadGeometry(f"capacity {capacity} is not a power of two: use {lower} or {lower * 2}")
    if (
        not isinstance(slot_bytes, int)
        or slot_bytes < L.MIN_SLOT_BYTES
        or slot_bytes > L.MAX_SLOT_BYTES
        or slot_bytes % 8
    ):
        raise BadGeometry(
            f"slot_bytes {slot_bytes!r} is invalid: use a multiple of 8 from "
            f"{L.MIN_SLOT_BYTES} to {L.MAX_SLOT_BYTES}"
        )
    if not isinstance(max_consumers, int) or not 1 <= max_consumers <= L.MAX_CONSUMERS:
        raise BadGeometry(
            f"max_consumers {max_consumers!r} is out of range: use 1 to {L.MAX_CONSUMERS}"
        )


def _init_header(mm: mmap.mmap, name: str, kind: int, geometry: L.Geometry, flags: int) -> None:
    # Never-written slots hold an impossible sequence, so "seq == s" means "slot holds s".
    descriptors: np.ndarray[Any, np.dtype[np.uint64]] = np.ndarray(
        shape=(geometry.capacity, 2),
        dtype=np.uint64,
        buffer=mm,
        offset=geometry.descriptors_offset,
    )
    descriptors[:, 1] = L.SEQ_NEVER_WRITTEN
    del descriptors
    header = L.SegmentHeader()
    header.abi_version = L.ABI_VERSION
    header.kind = kind
    header.layout_id = L.LAYOUT_ID
    header.flags = flags
    header.capacity = geometry.capacity
    header.slot_bytes = geometry.slot_bytes
    header.max_consumers = geometry.max_consumers
    header.total_bytes = geometry.total_bytes
    header.created_ns = time.time_ns()
    header.creator_uid = os.geteuid()
    header.creator_pid = os.getpid()
    header.creator_start = process_start_time(os.getpid())
    header.name = name.encode()[: L.MAX_NAME_BYTES]
    header.magic = L.MAGIC
    raw = bytearray(bytes(header))
    crc = L.header_crc(bytes(raw))
    header.header_crc = crc
    raw = bytearray(bytes(header))
    # Magic goes in last: a concurrent attach sees "not initialized", never half a header.
    mm[8 : len(raw)] = bytes(raw[8:])
    mm[0:8] = L.MAGIC


def create_segment(
    name: str,
    kind: int,
    capacity: int,
    slot_bytes: int,
    max_consumers: int,
    backing: str = "shm",
    path: str | None = None,
    replace: bool = False,
) -> Segment:
    validate_name(name)
    _check_geometry(capacity, slot_bytes, max_consumers)
    geometry = L.Geometry(capacity, slot_bytes, max_consumers)
    if backing == "memory":
        with _memory_lock:
            if name in _memory_segments and not _memory_segments[name].closed and not replace:
                raise SegmentExists(
                    f"an in-memory lane named {name!r} already exists in this process: "
                    "attach to it, or unlink it first"
                )
            mm = mmap.mmap(-1, geometry.total_bytes)
            _init_header(mm, name, kind, geometry, 0)
            seg = Segment(name, "memory", None, mm, -1, geometry, kind, created=True)
            _memory_segments[name] = seg
            return seg
    check_shared_memory_platform()
    file_path = _resolve_path(name, backing, path)
    if replace:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file_path)
    try:
        fd = os.open(file_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SegmentExists(
            f"lane segment {file_path} already exists: attach to it, pass replace=True, "
            "or remove it (`byteor doctor --remove` removes segments whose creator is gone)"
        ) from None
    except OSError as exc:
        raise AttachError(f"cannot create lane segment {file_path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, geometry.total_bytes)
        mm = mmap.mmap(fd, geometry.total_bytes)
        flags = L.FLAG_FILE_BACKED if backing == "file" else 0
        _init_header(mm, name, kind, geometry, flags)
    except BaseException:
        os.close(fd)
        os.unlink(file_path)
        raise
    return Segment(name, backing, file_path, mm, fd, geometry, kind, created=True)


def _resolve_path(name: str, backing: str, path: str | None) -> str:
    if backing == "shm":
        if path is not None:
            raise ValueError("path= is only for backing='file'; shm segments live in /dev/shm")
        return shm_path(name)
    if backing == "file":
        if path is None:
            raise ValueError("backing='file' needs path= (where the segment file lives)")
        return os.fspath(path)
    raise ValueError(f"unknown backing {backing!r}: use 'shm', 'file' or 'memory'")


# -- attach ------------------------------------------------------------------------------


def attach_segment(
    name: str,
    backing: str = "shm",
    path: str | None = None,
    kind: int | None = None,
) -> Segment:
    """Map an existing segment after validating everything in it (see the module docstring)."""
    validate_name(name)
    if backing == "memory":
        with _memory_lock:
            seg = _memory_segments.get(name)
        if seg is None or seg.closed:
            raise SegmentNotFound(
                f"no in-memory lane named {name!r} in this process: create it first"
            )
        mm = seg.mm
        twin = Segment(name, "memory", None, mm, -1, seg.geometry, seg.kind, created=False)
        twin._thread_lock = seg._thread_lock
        _check_kind(twin.kind, kind, name)
        return twin
    check_shared_memory_platform()
    file_path = _resolve_path(name, backing, path)
    try:
        fd = os.open(file_path, os.O_RDWR)
    except FileNotFoundError:
        raise SegmentNotFound(
            f"lane segment {file_path} does not exist: has the producer created it yet?"
        ) from None
    except PermissionError:
        raise ForeignSegment(
            f"lane segment {file_path} is not readable and writable by this user"
        ) from None
    except OSError as exc:
        raise AttachError(f"cannot open lane segment {file_path}: {exc.strerror}") from None
    try:
        seg = _attach_fd(name, backing, file_path, fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        _check_kind(seg.kind, kind, name)
    except BaseException:
        seg.close()  # unmaps and closes fd
        raise
    return seg


def _check_kind(actual: int, expected: int | None, name: str) -> None:
    if expected is not None and actual != expected:
        raise BadKind(
            f"lane {name!r} is a {L.KIND_NAMES[actual]} lane, not {L.KIND_NAMES[expected]}"
        )


def _attach_fd(name: str, backing: str, file_path: str, fd: int) -> Segment:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise AttachError(f"{file_path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise ForeignSegment(
            f"lane segment {file_path} belongs to uid {st.st_uid}, not this user "
            f"(uid {os.geteuid()}): refusing to trust it"
        )
    if st.st_mode & 0o022:
        raise ForeignSegment(
            f"lane segment {file_path} is writable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}): refusing to trust it; segments are created 0600"
        )
    header_size = ctypes.sizeof(L.SegmentHeader)
    if st.st_size < header_size:
        raise SegmentTruncated(
            f"lane segment {file_path} is {st.st_size} bytes, smaller than its "
            f"{header_size}-byte header: it is truncated or not a lane"
        )
    raw = os.pread(fd, header_size, 0)
    if len(raw) < header_size:
        raise SegmentTruncated(f"lane segment {file_path}: short read of its header")
    header = L.SegmentHeader.from_buffer_copy(raw)
    _validate_header(file_path, header, raw, st.st_size)
    geometry = L.Geometry(header.capacity, header.slot_bytes, header.max_consumers)
    try:
        mm = mmap.mmap(fd, geometry.total_bytes)
    except (OSError, ValueError) as exc:
        raise AttachError(f"cannot map lane segment {file_path}: {exc}") from None
    seg = Segment(name, backing, file_path, mm, fd, geometry, header.kind, created=False)
    try:
        validate_cursors(seg)
    except BaseException:
        # Unmap only: the caller owns fd and closes it once (closing it twice could close a
        # descriptor another thread has opened meanwhile).
        seg.fd = -1
        seg.close()
        raise
    return seg


def _validate_header(path: str, h: L.SegmentHeader, raw: bytes, file_size: int) -> None:
    if raw[:8] != L.MAGIC:
        if raw[:8] == b"\0" * 8:
            raise BadMagic(
                f"lane segment {path} has no magic: it is still being created, or it is not "
                "a lane; retry, or remove it if its creator is gone (`byteor doctor`)"
            )
        raise BadMagic(f"{path} is not a ByteOr lane segment (magic {raw[:8]!r})")
    if h.abi_version != L.ABI_VERSION:
        raise BadVersion(
            f"lane segment {path} uses ABI version {h.abi_version}; this byteor speaks "
            f"version {L.ABI_VERSION}: run the same byteor version on both sides"
        )
    if h.layout_id != L.LAYOUT_ID:
        raise BadVersion(
            f"lane segment {path} has layout id {h.layout_id:#010x}, this build expects "
            f"{L.LAYOUT_ID:#010x}: it was created by an incompatible build"
        )
    if h.kind not in L.KIND_NAMES:
        raise BadKind(f"lane segment {path} has unknown lane kind {h.kind}")
    crc = L.header_crc(raw)
    if crc != h.header_crc:
        raise BadChecksum(
            f"lane segment {path} header checksum is {h.header_crc:#010x} but its bytes give "
            f"{crc:#010x}: the header was modified or corrupted; recreate the lane"
        )
    try:
        _check_geometry(h.capacity, h.slot_bytes, h.max_consumers)
    except BadGeometry as exc:
        raise BadGeometry(f"lane segment {path}: {exc}") from None
    geometry = L.Geometry(h.capacity, h.slot_bytes, h.max_consumers)
    if h.total_bytes != geometry.total_bytes:
        raise BadGeometry(
            f"lane segment {path} claims {h.total_bytes} bytes but its geometry needs "
            f"{geometry.total_bytes}"
        )
    if file_size < geometry.total_bytes:
        raise SegmentTruncated(
            f"lane segment {path} is {file_size} bytes but its geometry needs "
            f"{geometry.total_bytes}: it is truncated"
        )
    if file_size != geometry.total_bytes:
        raise BadGeometry(
            f"lane segment {path} is {file_size} bytes, more than the {geometry.total_bytes} "
            "its geometry describes"
        )


def validate_cursors(seg: Segment) -> None:
    """Check every cursor and consumer line of a mapped segment (also used by ``doctor``)."""
    q = seg.q
    where = seg.path or seg.name
    states: list[tuple[int, int, int]] = []
    for i in range(seg.max_consumers):
        base = seg.c(i)
        state = q[base + _C_STATE_PID] & 0xFFFFFFFF
        if state not in L.STATE_NAMES:
            raise CursorOutOfRange(f"lane segment {where}: consumer line {i} has state {state}")
        if state != L.STATE_FREE:
            states.append((i, state, q[base + _C_CURSOR]))
            after = q[base + _C_AFTER]
            if after >> seg.max_consumers or after & (1 << i):
                raise CursorOutOfRange(
                    f"lane segment {where}: consumer line {i} waits on lines outside the lane"
                )
    producer = q[seg.p + _P_CURSOR]
    if producer >= _MAX_CURSOR:
        raise CursorOutOfRange(f"lane segment {where}: producer cursor {producer} is impossible")
    for i, state, cursor in states:
        if cursor > producer:
            raise CursorOutOfRange(
                f"lane segment {where}: consumer line {i} is at {cursor}, beyond the producer "
                f"cursor {producer}"
            )
        if state == L.STATE_GATING and producer - cursor > seg.capacity:
            # Re-read: a live consumer may have moved since we looked.
            now = q[seg.c(i) + _C_CURSOR]
            if producer - now > seg.capacity:
                raise CursorOutOfRange(
                    f"lane segment {where}: consumer line {i} is {producer - now} behind "
                    f"the producer, more than the ring's {seg.capacity} slots"
                )


def unlink_segment(name: str, backing: str = "shm", path: str | None = None) -> bool:
    """Remove a segment's name; mapped users keep their memory. Returns whether it existed."""
    validate_name(name)
    if backing == "memory":
        with _memory_lock:
            return _memory_segments.pop(name, None) is not None
    try:
        os.unlink(_resolve_path(name, backing, path))
    except FileNotFoundError:
        return False
    return True
