"""Every shared-memory layout of IndexBus, defined once.

This module is the single source of truth for the bytes of a lane segment. The ctypes
structures below are what Python reads and writes, and ``byteor.lanes.cheader`` generates
``include/byteor_v1.h`` from the very same definitions, so a C program attaches to a lane
that Python created without a second description drifting away from this one.

All integers are little-endian (the only byte order we run on, see ``_platform``).

A segment, from offset 0::

    0        64       128      192      256               384
    +--------+--------+--------+--------+-----------------+--------------------------+
    | ident  | owner  |  (reserved)     | producer block  | consumer blocks          |
    | geom.  | + name |                 | 2 lines         | max_consumers x 2 lines  |
    +--------+--------+--------+--------+-----------------+--------------------------+
    |<------- SegmentHeader (256) ----->|<- ProducerBlock->|<- ConsumerBlock x N ----->|

    then, each region aligned to 64 bytes:
    +----------------------------------------+----------------------------------------+
    | descriptors: capacity x SlotDescriptor | payloads: capacity x slot_bytes        |
    | (16 bytes each)                        | (slot i's payload at i * slot_bytes)   |
    +----------------------------------------+----------------------------------------+

SegmentHeader, line 0 (immutable after creation, covered by ``header_crc``)::

    0       8       12      16      20      24              32      36      40              48
    +-------+-------+-------+-------+-------+---------------+-------+-------+---------------+
    | magic | abi   | kind  | layout| flags | capacity      | slot_ | max_  | total_bytes   |
    | (8)   | ver(4)| (4)   | id(4) | (4)   | (8)           | bytes | cons. | (8)           |
    +-------+-------+-------+-------+-------+---------------+-------+-------+---------------+
    48              56      60      64
    +---------------+-------+-------+
    | created_ns(8) |creator|creator|
    |               | uid   | pid   |
    +---------------+-------+-------+

SegmentHeader, line 1 (64..127)::

    64       68       72               80                                           128
    +--------+--------+----------------+--------------------------------------------+
    | header | reg.   | creator_start  | name (48 bytes, UTF-8, NUL padded)         |
    | crc32  | epoch  | (8)            |                                            |
    +--------+--------+----------------+--------------------------------------------+

The producer block (two cache lines). Line 0 is written only by the producer: readers poll
``cursor`` and nothing else they write shares its line. Line 1 holds one "I am asleep" byte
per consumer: a consumer writes only its own byte (a plain one-byte store, no read-modify-write),
and the producer reads eight of them with one 8-byte load after each publish::

    0        8        16       24       32       40       48   52   56       64
    +--------+--------+--------+--------+--------+--------+----+----+--------+
    | cursor | claimed| full_  | drops  | epoch_ | sleep- |clsd|pid | start_ |   line 0
    |        |        | waits  |        | seen   | ing    |    |    | time   |
    +--------+--------+--------+--------+--------+--------+----+----+--------+
    | consumer_sleeping[64]: one byte per consumer line                      |   line 1
    +------------------------------------------------------------------------+

A consumer block (two cache lines, one per consumer, ``max_consumers`` of them). Line 0 is
written by its consumer (cursor, counters), line 1 once at registration::

    0        8     12    16       24       32       40       48       56       64
    +--------+-----+-----+--------+--------+--------+--------+--------+--------+
    | cursor |state|pid  | lost   | waits  | after  | start_ | joined | (res.) |
    |        |     |     |        |        | mask   | time   | at     |        |
    +--------+-----+-----+--------+--------+--------+--------+--------+--------+
    | name (48 bytes, UTF-8, NUL padded)             | epoch  | (reserved)      |
    +------------------------------------------------+--------+-----------------+

``sleeping`` is non-zero while the producer sleeps waiting for room; every consumer reads it
after releasing a slot. ``claimed`` is the producer's announcement: it writes no sequence at
or beyond it without first storing a larger value here, so slot ``s`` is intact while
``claimed <= s + capacity``.

``cursor`` is a count: the producer's cursor is the number of messages published (the next
sequence to publish), a consumer's is the number it has released (the next one it reads).
A slot descriptor says what the slot holds::

    0        4        8                16
    +--------+--------+----------------+
    | length | flags  | seq            |
    +--------+--------+----------------+

The writer stores ``seq`` after the payload and ``length``, so a reader that finds
``seq == s`` in slot ``s & (capacity - 1)`` may read message ``s`` without looking at the
producer cursor. Slots never written hold ``SEQ_NEVER_WRITTEN``.

Counters segments
-----------------
A pipeline run keeps one more segment next to its lanes: a table of per-node counters
(records in and out, errors, time busy), one row per source, stage or sink, so that
``byteor snapshot`` reads them from outside. Each row has exactly one writer at a time, the
process that runs the node; nobody takes a lock. Rows carry their node's name and process
group as plain strings: the segment knows nothing of specs. From offset 0::

    0                 128                     128 + 256     128 + rows x 256
    +-----------------+-----------------------+--------------+
    | CountersHeader  | NodeRow 0             | NodeRow 1 .. |
    | (2 lines)       | (4 lines)             |              |
    +-----------------+-----------------------+--------------+

CountersHeader, line 0 (immutable after creation, covered by ``header_crc``)::

    0       8       12      16      20      24              32              40      44
    +-------+-------+-------+-------+-------+---------------+---------------+-------+-------+
    | magic | abi   | layout| rows  | row_  | total_bytes   | created_ns    |creator|creator|
    | (8)   | ver(4)| id(4) | (4)   | bytes | (8)           | (8)           | uid   | pid   |
    +-------+-------+-------+-------+-------+---------------+---------------+-------+-------+
    48              56              64
    +---------------+---------------+
    | creator_start | (reserved)    |
    +---------------+---------------+

CountersHeader, line 1 (64..127)::

    64       68       72                                           120      128
    +--------+--------+--------------------------------------------+--------+
    | header | finish-| name (48 bytes, UTF-8, NUL padded)         | (res.) |
    | crc32  | ed     |                                            |        |
    +--------+--------+--------------------------------------------+--------+

A NodeRow. Line 0 holds the *committed* counters, written under a sequence lock: the owner
makes ``seq`` odd, writes the seven words, makes it even again; a reader that sees the same
even ``seq`` before and after reading the words has a consistent row (x86-64 keeps stores in
order, see ``_platform``). The owner commits when everything it took from its inputs has been
published, so a committed row always adds up (in = out + dropped for a filter). Line 1 is
live (what the owner is doing now, and the restart accounting); lines 2-3 are written once::

    0      8         16        24      32       40      48        56         64
    +------+---------+---------+-------+--------+-------+---------+----------+
    | seq  | records | records | errors| skipped| routed| busy_ns | updated_ |   line 0
    |      | _in     | _out    |       |        |       |         | ns       |
    +------+---------+---------+-------+--------+-------+---------+----------+
    64        72    76    80        88       96       104        112       120        128
    +---------+-----+-----+---------+--------+--------+----------+---------+----------+
    | inflight|phase| pid | started_| owner_ |restarts| redeliv- | dupli-  | pending_ |   line 1
    |         |     |     | ns      | start  |        | ered     | cates   | skipped  |
    +---------+-----+-----+---------+--------+--------+----------+---------+----------+
    | name (48 bytes, UTF-8, NUL padded)                | role   | (reserved)       |   line 2
    +---------------------------------------------------+--------+------------------+
    | group (48 bytes: the process the node runs in)    | (reserved)                |   line 3
    +---------------------------------------------------+---------------------------+

``busy_ns`` is time spent in the node's work (a stage's op) and ``started_ns`` /
``updated_ns`` are ``CLOCK_MONOTONIC`` readings (one clock for every process of a machine):
busy share = ``busy_ns / (now - started_ns)``. ``inflight`` counts records taken since the
last commit (0 when idle); ``phase`` says whether the owner is waiting for input, inside the
op, or waiting for room in an output.
"""

from __future__ import annotations

import ctypes
import zlib
from typing import Final

__all__ = [
    "MAGIC",
    "ABI_VERSION",
    "CACHE_LINE",
    "KIND_EVENTS",
    "KIND_JOURNAL",
    "KIND_SLOTS",
    "KIND_FANOUT",
    "KIND_NAMES",
    "KIND_CODES",
    "FLAG_FILE_BACKED",
    "STATE_FREE",
    "STATE_GATING",
    "STATE_OVERRUN",
    "STATE_NAMES",
    "MIN_CAPACITY",
    "MAX_CAPACITY",
    "MIN_SLOT_BYTES",
    "MAX_SLOT_BYTES",
    "MAX_CONSUMERS",
    "MAX_NAME_BYTES",
    "SEQ_NEVER_WRITTEN",
    "SegmentHeader",
    "ProducerBlock",
    "ConsumerBlock",
    "SlotDescriptor",
    "Geometry",
    "LAYOUT_ID",
    "HEADER_CRC_SPAN",
    "header_crc",
    "align",
    "COUNTERS_MAGIC",
    "COUNTERS_ABI_VERSION",
    "COUNTERS_MAX_ROWS",
    "COUNTERS_LAYOUT_ID",
    "COUNTERS_CRC_SPAN",
    "ROLE_SOURCE",
    "ROLE_STAGE",
    "ROLE_SINK",
    "ROLE_NAMES",
    "ROLE_CODES",
    "PHASE_IDLE",
    "PHASE_STEP",
    "PHASE_BLOCKED",
    "PHASE_DONE",
    "PHASE_NAMES",
    "CountersHeader",
    "NodeRow",
    "counters_bytes",
]

MAGIC: Final = b"BYTEORLN"
ABI_VERSION: Final = 1
CACHE_LINE: Final = 64

# Lane kinds as stored in the header.
KIND_EVENTS: Final = 1
KIND_JOURNAL: Final = 2
KIND_SLOTS: Final = 3
KIND_FANOUT: Final = 4
KIND_NAMES: Final[dict[int, str]] = {
    KIND_EVENTS: "events",
    KIND_JOURNAL: "journal",
    KIND_SLOTS: "slots",
    KIND_FANOUT: "fanout",
}
KIND_CODES: Final[dict[str, int]] = {v: k for k, v in KIND_NAMES.items()}

FLAG_FILE_BACKED: Final = 1 << 0

# Consumer line states.
STATE_FREE: Final = 0
STATE_GATING: Final = 1  # the producer never overwrites what this consumer has not released
STATE_OVERRUN: Final = 2  # the producer may overrun it; it counts exactly what it lost
STATE_NAMES: Final[dict[int, str]] = {
    STATE_FREE: "free",
    STATE_GATING: "gating",
    STATE_OVERRUN: "overrun",
}

# Geometry limits. Capacity and slot size bound a segment to 16 Mi slots and 1 MiB per slot.
MIN_CAPACITY: Final = 2
MAX_CAPACITY: Final = 1 << 24
MIN_SLOT_BYTES: Final = 8
MAX_SLOT_BYTES: Final = 1 << 20
MAX_CONSUMERS: Final = 64
MAX_NAME_BYTES: Final = 48
SEQ_NEVER_WRITTEN: Final = 0xFFFF_FFFF_FFFF_FFFF


class SegmentHeader(ctypes.LittleEndianStructure):
    """The first 256 bytes of every segment."""

    _pack_ = 1
    _fields_ = [
        # line 0: identity and geometry (immutable, checksummed)
        ("magic", ctypes.c_char * 8),
        ("abi_version", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
        ("layout_id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("capacity", ctypes.c_uint64),
        ("slot_bytes", ctypes.c_uint32),
        ("max_consumers", ctypes.c_uint32),
        ("total_bytes", ctypes.c_uint64),
        ("created_ns", ctypes.c_uint64),
        ("creator_uid", ctypes.c_uint32),
        ("creator_pid", ctypes.c_uint32),
        # line 1: checksum, registration epoch, creator identity, name
        ("header_crc", ctypes.c_uint32),
        ("registration_epoch", ctypes.c_uint32),
        ("creator_start", ctypes.c_uint64),
        ("name", ctypes.c_char * MAX_NAME_BYTES),
        # lines 2-3: reserved for later ABI minor additions
        ("_reserved", ctypes.c_uint8 * 128),
    ]


class ProducerBlock(ctypes.LittleEndianStructure):
    """The producer's cursor line and the consumers' sleep bytes."""

    _pack_ = 1
    _fields_ = [
        ("cursor", ctypes.c_uint64),
        ("claimed", ctypes.c_uint64),
        ("full_waits", ctypes.c_uint64),
        ("drops", ctypes.c_uint64),
        ("epoch_seen", ctypes.c_uint64),
        ("sleeping", ctypes.c_uint64),
        ("closed", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("start_time", ctypes.c_uint64),
        ("consumer_sleeping", ctypes.c_uint8 * MAX_CONSUMERS),
    ]


class ConsumerBlock(ctypes.LittleEndianStructure):
    """One consumer's cursor line and its registration line."""

    _pack_ = 1
    _fields_ = [
        ("cursor", ctypes.c_uint64),
        ("state", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("lost", ctypes.c_uint64),
        ("waits", ctypes.c_uint64),
        ("after_mask", ctypes.c_uint64),
        ("start_time", ctypes.c_uint64),
        ("joined_at", ctypes.c_uint64),
        ("_reserved0", ctypes.c_uint64),
        ("name", ctypes.c_char * MAX_NAME_BYTES),
        ("epoch", ctypes.c_uint64),
        ("_reserved1", ctypes.c_uint64),
    ]


# Counters segments.
COUNTERS_MAGIC: Final = b"BYTEORCT"
COUNTERS_ABI_VERSION: Final = 1
COUNTERS_MAX_ROWS: Final = 4096

# NodeRow.role: what the row counts.
ROLE_SOURCE: Final = 1
ROLE_STAGE: Final = 2
ROLE_SINK: Final = 3
ROLE_NAMES: Final[dict[int, str]] = {ROLE_SOURCE: "source", ROLE_STAGE: "stage", ROLE_SINK: "sink"}
ROLE_CODES: Final[dict[str, int]] = {v: k for k, v in ROLE_NAMES.items()}

# NodeRow.phase: what the owner does now.
PHASE_IDLE: Final = 0  # waiting for input (or not started)
PHASE_STEP: Final = 1  # inside the node's work (a stage's op: user code)
PHASE_BLOCKED: Final = 2  # holding outputs, waiting for room in an output lane
PHASE_DONE: Final = 3  # finished: its outputs are closed
PHASE_NAMES: Final[dict[int, str]] = {
    PHASE_IDLE: "idle",
    PHASE_STEP: "step",
    PHASE_BLOCKED: "blocked",
    PHASE_DONE: "done",
}


class SlotDescriptor(ctypes.LittleEndianStructure):
    """What slot ``i`` holds: payload length, flags and the sequence written into it."""

    _pack_ = 1
    _fields_ = [
        ("length", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("seq", ctypes.c_uint64),
    ]


class CountersHeader(ctypes.LittleEndianStructure):
    """The first 128 bytes of a counters segment."""

    _pack_ = 1
    _fields_ = [
        # line 0: identity and geometry (immutable, checksummed)
        ("magic", ctypes.c_char * 8),
        ("abi_version", ctypes.c_uint32),
        ("layout_id", ctypes.c_uint32),
        ("rows", ctypes.c_uint32),
        ("row_bytes", ctypes.c_uint32),
        ("total_bytes", ctypes.c_uint64),
        ("created_ns", ctypes.c_uint64),
        ("creator_uid", ctypes.c_uint32),
        ("creator_pid", ctypes.c_uint32),
        ("creator_start", ctypes.c_uint64),
        ("_reserved0", ctypes.c_uint64),
        # line 1: checksum, the run's end, the run's name
        ("header_crc", ctypes.c_uint32),
        ("finished", ctypes.c_uint32),
        ("name", ctypes.c_char * MAX_NAME_BYTES),
        ("_reserved1", ctypes.c_uint64),
    ]


class NodeRow(ctypes.LittleEndianStructure):
    """One node's counters: committed (sequence-locked), live, and its identity."""

    _pack_ = 1
    _fields_ = [
        # line 0: committed counters, under the sequence lock
        ("seq", ctypes.c_uint64),
        ("records_in", ctypes.c_uint64),
        ("records_out", ctypes.c_uint64),
        ("errors", ctypes.c_uint64),
        ("skipped", ctypes.c_uint64),
        ("routed", ctypes.c_uint64),
        ("busy_ns", ctypes.c_uint64),
        ("updated_ns", ctypes.c_uint64),
        # line 1: live state and restart accounting
        ("inflight", ctypes.c_uint64),
        ("phase", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("started_ns", ctypes.c_uint64),
        ("owner_start", ctypes.c_uint64),
        ("restarts", ctypes.c_uint64),
        ("redelivered", ctypes.c_uint64),
        ("duplicates", ctypes.c_uint64),
        ("pending_skipped", ctypes.c_uint64),
        # lines 2-3: identity, written at creation
        ("name", ctypes.c_char * MAX_NAME_BYTES),
        ("role", ctypes.c_uint32),
        ("_reserved0", ctypes.c_uint32),
        ("_reserved1", ctypes.c_uint64),
        ("group", ctypes.c_char * MAX_NAME_BYTES),
        ("_reserved2", ctypes.c_uint64 * 2),
    ]


# The checksummed span of the header is its first cache line.
HEADER_CRC_SPAN: Final = SegmentHeader.header_crc.offset
COUNTERS_CRC_SPAN: Final = CountersHeader.header_crc.offset


def _fingerprint(structs: tuple[type[ctypes.Structure], ...]) -> int:
    """A CRC of every field name, offset and size: two builds agree only on the same layout."""
    parts: list[str] = []
    for struct in structs:
        for field in struct._fields_:
            field_name, field_type = field[0], field[1]
            desc = getattr(struct, field_name)
            parts.append(
                f"{struct.__name__}.{field_name}@{desc.offset}:{desc.size}:{field_type.__name__}"
            )
    return zlib.crc32(";".join(parts).encode()) & 0xFFFFFFFF


def _layout_fingerprint() -> int:
    """The lane segment's fingerprint (of the structures as this module holds them now)."""
    return _fingerprint((SegmentHeader, ProducerBlock, ConsumerBlock, SlotDescriptor))


def _counters_fingerprint() -> int:
    """The counters segment's fingerprint, kept apart so lane segments keep their id."""
    return _fingerprint((CountersHeader, NodeRow))


LAYOUT_ID: Final = _layout_fingerprint()
COUNTERS_LAYOUT_ID: Final = _counters_fingerprint()


def header_crc(first_line: bytes) -> int:
    """CRC-32 of the immutable header line (bytes ``0 .. HEADER_CRC_SPAN``)."""
    return zlib.crc32(first_line[:HEADER_CRC_SPAN]) & 0xFFFFFFFF


def align(n: int, to: int = CACHE_LINE) -> int:
    return (n + to - 1) // to * to


class Geometry:
    """Byte offsets of every region of a segment, derived from its three size parameters."""

    __slots__ = (
        "capacity",
        "slot_bytes",
        "max_consumers",
        "producer_offset",
        "consumers_offset",
        "descriptors_offset",
        "payloads_offset",
        "total_bytes",
    )

    def __init__(self, capacity: int, slot_bytes: int, max_consumers: int) -> None:
        self.capacity = capacity
        self.slot_bytes = slot_bytes
        self.max_consumers = max_consumers
        self.producer_offset = ctypes.sizeof(SegmentHeader)
        self.consumers_offset = self.producer_offset + ctypes.sizeof(ProducerBlock)
        self.descriptors_offset = align(
            self.consumers_offset + max_consumers * ctypes.sizeof(ConsumerBlock)
        )
        self.payloads_offset = align(
            self.descriptors_offset + capacity * ctypes.sizeof(SlotDescriptor)
        )
        self.total_bytes = align(self.payloads_offset + capacity * slot_bytes)

    def consumer_offset(self, index: int) -> int:
        return self.consumers_offset + index * ctypes.sizeof(ConsumerBlock)


def counters_bytes(rows: int) -> int:
    """The size of a counters segment of ``rows`` rows."""
    return ctypes.sizeof(CountersHeader) + rows * ctypes.sizeof(NodeRow)


def _check_sizes() -> None:
    assert ctypes.sizeof(SegmentHeader) == 4 * CACHE_LINE
    assert ctypes.sizeof(ProducerBlock) == 2 * CACHE_LINE
    assert ctypes.sizeof(ConsumerBlock) == 2 * CACHE_LINE
    assert ctypes.sizeof(SlotDescriptor) == 16
    assert HEADER_CRC_SPAN == CACHE_LINE
    assert ctypes.sizeof(CountersHeader) == 2 * CACHE_LINE
    assert ctypes.sizeof(NodeRow) == 4 * CACHE_LINE
    assert NodeRow.inflight.offset == CACHE_LINE and NodeRow.name.offset == 2 * CACHE_LINE
    assert COUNTERS_CRC_SPAN == CACHE_LINE


_check_sizes()
