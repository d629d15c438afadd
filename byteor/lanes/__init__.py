"""IndexBus: bounded shared-memory lanes.

Four lane kinds over one ring design (see ``docs/lanes.md``):

* ``events``  - bounded lossless queue, one producer, one consumer;
* ``journal`` - append-only, retains the last ``capacity`` entries; durable named readers gate
  the writer, tailing readers are told exactly what they lost; optionally file-backed;
* ``slots``   - SequencedSlots: claim, write in place, publish; consumers chained by barriers;
* ``fanout``  - every consumer sees every message; each consumer is critical (gates) or
  best-effort (may be overrun, counts its loss).

Next to its lanes, a pipeline run keeps a *counters segment* (:func:`create_counters`): one
row of counters per node, each written without locks by the process running the node and read
by anyone (``byteor snapshot``).

A shared-memory lane ``name`` is the file ``SHM_DIR/SHM_PREFIX + name``; a process that
registers in a segment is told from a later one with its pid by :func:`process_start_time`
(:func:`pid_alive` checks both), which other segments of a run (a status segment) use too.

::

    lane = byteor.lanes.create("orders", kind="events", capacity=4096, slot_bytes=256)
    lane.sender().send(b"hello")
    view = byteor.lanes.attach("orders").receiver().receive(timeout=1.0)
"""

from __future__ import annotations

from byteor.lanes._counters import (
    CounterRow,
    Counters,
    NodeCounters,
    RowWriter,
    attach_counters,
    create_counters,
    unlink_counters,
)
from byteor.lanes._errors import (
    AttachError,
    BadChecksum,
    BadGeometry,
    BadKind,
    BadMagic,
    BadVersion,
    ConsumerError,
    CorruptSlot,
    CursorOutOfRange,
    ForeignSegment,
    LaneClosed,
    LaneError,
    LaneTimeout,
    MessageTooLarge,
    SegmentExists,
    SegmentNotFound,
    SegmentTruncated,
    UnsupportedPlatform,
    WouldBlock,
)
from byteor.lanes._lane import (
    ConsumerStatistics,
    Lane,
    LaneStatistics,
    attach,
    create,
    read_statistics,
    unlink,
)
from byteor.lanes._platform import check_shared_memory_platform, pid_alive, process_start_time
from byteor.lanes._ring import Consumer, Producer
from byteor.lanes._segment import SHM_DIR, SHM_PREFIX
from byteor.lanes._wait import BUSY_WAIT, DEFAULT_WAIT, WaitStrategy
from byteor.lanes.router import Merge, Router

__all__ = [
    # lanes
    "create",
    "attach",
    "unlink",
    "Lane",
    "Producer",
    "Consumer",
    "LaneStatistics",
    "ConsumerStatistics",
    "read_statistics",
    "WaitStrategy",
    "DEFAULT_WAIT",
    "BUSY_WAIT",
    "Router",
    "Merge",
    # per-node counters of a run (a counters segment)
    "create_counters",
    "attach_counters",
    "unlink_counters",
    "Counters",
    "CounterRow",
    "NodeCounters",
    "RowWriter",
    # segment files and the processes that own them
    "SHM_DIR",
    "SHM_PREFIX",
    "process_start_time",
    "pid_alive",
    "check_shared_memory_platform",
    # errors
    "LaneError",
    "AttachError",
    "SegmentNotFound",
    "SegmentExists",
    "SegmentTruncated",
    "BadMagic",
    "BadVersion",
    "BadKind",
    "BadGeometry",
    "BadChecksum",
    "CursorOutOfRange",
    "ForeignSegment",
    "CorruptSlot",
    "WouldBlock",
    "LaneTimeout",
    "MessageTooLarge",
    "ConsumerError",
    "LaneClosed",
    "UnsupportedPlatform",
]
