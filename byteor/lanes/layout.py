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


class SlotDescriptor(ctypes.LittleEndianStructure):
    """What slot ``i`` holds: payload length, flags and the sequence written into it."""

    _pack_ = 1
    _fields_ = [
        ("length", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("seq", ctypes.c_uint64),
    ]


# The checksummed span of the header is its first cache line.
HEADER_CRC_SPAN: Final = SegmentHeader.header_crc.offset


def _layout_fingerprint() -> int:
    """A CRC of every field name, offset and size: two builds agree only on the same layout."""
    parts: list[str] = []
    for struct in (SegmentHeader, ProducerBlock, ConsumerBlock, SlotDescriptor):
        for field in struct._fields_:
            field_name, field_type = field[0], field[1]
            desc = getattr(struct, field_name)
            parts.append(
                f"{struct.__name__}.{field_name}@{desc.offset}:{desc.size}:{field_type.__name__}"
            )
    return zlib.crc32(";".join(parts).encode()) & 0xFFFFFFFF


LAYOUT_ID: Final = _layout_fingerprint()


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


def _check_sizes() -> None:
    assert ctypes.sizeof(SegmentHeader) == 4 * CACHE_LINE
    assert ctypes.sizeof(ProducerBlock) == 2 * CACHE_LINE
    assert ctypes.sizeof(ConsumerBlock) == 2 * CACHE_LINE
    assert ctypes.sizeof(SlotDescriptor) == 16
    assert HEADER_CRC_SPAN == CACHE_LINE


_check_sizes()
