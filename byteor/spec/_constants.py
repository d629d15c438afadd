"""The fixed vocabulary and limits of spec version 1.

The geometry limits mirror the lane ABI (``byteor.lanes.layout``) without importing it: the
spec is the contract and sits below the transport. A test checks the two stay equal.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = [
    "SPEC_VERSION",
    "Target",
    "LaneKind",
    "LanePolicy",
    "WaitMode",
    "Backing",
    "MergeOrder",
    "CrashPolicy",
    "TARGETS",
    "LANE_KINDS",
    "LANE_POLICIES",
    "WAIT_MODES",
    "BACKINGS",
    "MERGE_ORDERS",
    "CRASH_POLICIES",
    "DEFAULT_POLICY",
    "DEFAULT_WAIT",
    "DEFAULT_BACKING",
    "DEFAULT_MERGE",
    "DEFAULT_PROCESS",
    "DEFAULT_ON_CRASH",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_RESTART_BACKOFF_MS",
    "MAX_RESTARTS_LIMIT",
    "MAX_RESTART_BACKOFF_MS",
    "MIN_CAPACITY",
    "MAX_CAPACITY",
    "MIN_SLOT_BYTES",
    "MAX_SLOT_BYTES",
    "SLOT_ALIGN",
    "MAX_CONSUMERS",
    "MAX_NAME_BYTES",
    "MAX_SPEC_BYTES",
    "MAX_FINDINGS",
    "NAME_RE",
    "is_name",
    "is_power_of_two",
    "capacity_ok",
    "slot_bytes_ok",
    "max_consumers_for",
    "segment_bytes",
]

SPEC_VERSION: Final = 1

Target = Literal["single_ring", "lane_graph"]
LaneKind = Literal["events", "journal", "slots", "fanout"]
LanePolicy = Literal["block", "overwrite"]
WaitMode = Literal["backoff", "spin"]
Backing = Literal["shm", "file"]
MergeOrder = Literal["round_robin", "ready"]
CrashPolicy = Literal["fail", "restart"]

TARGETS: Final[tuple[Target, ...]] = ("single_ring", "lane_graph")
LANE_KINDS: Final[tuple[LaneKind, ...]] = ("events", "journal", "slots", "fanout")
LANE_POLICIES: Final[tuple[LanePolicy, ...]] = ("block", "overwrite")
WAIT_MODES: Final[tuple[WaitMode, ...]] = ("backoff", "spin")
BACKINGS: Final[tuple[Backing, ...]] = ("shm", "file")
MERGE_ORDERS: Final[tuple[MergeOrder, ...]] = ("round_robin", "ready")
CRASH_POLICIES: Final[tuple[CrashPolicy, ...]] = ("fail", "restart")

DEFAULT_POLICY: Final[LanePolicy] = "block"
DEFAULT_WAIT: Final[WaitMode] = "backoff"
DEFAULT_BACKING: Final[Backing] = "shm"
DEFAULT_MERGE: Final[MergeOrder] = "round_robin"
DEFAULT_PROCESS: Final = "main"
# What happens when a stage's worker process dies: fail the run, or restart the process (at
# most max_restarts times per run, waiting restart_backoff_ms, doubled at each restart).
DEFAULT_ON_CRASH: Final[CrashPolicy] = "fail"
DEFAULT_MAX_RESTARTS: Final = 3
DEFAULT_RESTART_BACKOFF_MS: Final = 100
MAX_RESTARTS_LIMIT: Final = 1000
MAX_RESTART_BACKOFF_MS: Final = 600_000

# Lane ABI limits (same numbers as byteor.lanes.layout).
MIN_CAPACITY: Final = 2
MAX_CAPACITY: Final = 1 << 24
MIN_SLOT_BYTES: Final = 8
MAX_SLOT_BYTES: Final = 1 << 20
SLOT_ALIGN: Final = 8
MAX_CONSUMERS: Final = 64
MAX_NAME_BYTES: Final = 48

# A spec is small; anything bigger is refused before parsing, with one finding.
MAX_SPEC_BYTES: Final = 1 << 20
# Findings stop being collected after this many (a binary file would otherwise flood).
MAX_FINDINGS: Final = 200

NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

_CACHE_LINE = 64
_HEADER_BYTES = 256
_PRODUCER_BYTES = 128
_CONSUMER_BYTES = 128
_DESCRIPTOR_BYTES = 16
_DEFAULT_SHARED_CONSUMERS = 16


def is_name(text: str) -> bool:
    """Whether ``text`` is a valid lane, stage, source, sink or process name."""
    return NAME_RE.fullmatch(text) is not None and len(text.encode("utf-8")) <= MAX_NAME_BYTES


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def capacity_ok(n: int) -> bool:
    """A power of two from :data:`MIN_CAPACITY` to :data:`MAX_CAPACITY`."""
    return MIN_CAPACITY <= n <= MAX_CAPACITY and is_power_of_two(n)


def slot_bytes_ok(n: int) -> bool:
    """A multiple of 8 from :data:`MIN_SLOT_BYTES` to :data:`MAX_SLOT_BYTES`."""
    return MIN_SLOT_BYTES <= n <= MAX_SLOT_BYTES and n % SLOT_ALIGN == 0


def max_consumers_for(kind: str, consumers: int) -> int:
    """Consumer lines a lane of ``kind`` is created with (events: 1; others: 16 or more)."""
    if kind == "events":
        return 1
    return min(MAX_CONSUMERS, max(_DEFAULT_SHARED_CONSUMERS, consumers))


def _align(n: int) -> int:
    return (n + _CACHE_LINE - 1) // _CACHE_LINE * _CACHE_LINE


def segment_bytes(capacity: int, slot_bytes: int, max_consumers: int) -> int:
    """Shared-memory bytes of one lane segment, following the lane layout."""
    descriptors = _align(_HEADER_BYTES + _PRODUCER_BYTES + max_consumers * _CONSUMER_BYTES)
    payloads = _align(descriptors + capacity * _DESCRIPTOR_BYTES)
    return _align(payloads + capacity * slot_bytes)
