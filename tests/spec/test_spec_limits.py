"""The spec's lane limits and segment size follow the lane ABI (byteor.lanes.layout)."""

from __future__ import annotations

import pytest

import byteor.spec as S
from byteor.lanes import layout as L


def test_limits_match_the_lane_abi() -> None:
    assert (S.MIN_CAPACITY, S.MAX_CAPACITY) == (L.MIN_CAPACITY, L.MAX_CAPACITY)
    assert (S.MIN_SLOT_BYTES, S.MAX_SLOT_BYTES) == (L.MIN_SLOT_BYTES, L.MAX_SLOT_BYTES)
    assert S.MAX_CONSUMERS == L.MAX_CONSUMERS
    assert S.MAX_NAME_BYTES == L.MAX_NAME_BYTES
    assert set(S.LANE_KINDS) == set(L.KIND_CODES)


@pytest.mark.parametrize(
    ("capacity", "slot_bytes", "consumers"),
    [(2, 8, 1), (1024, 256, 16), (4096, 1024, 64), (1 << 16, 72, 3)],
)
def test_segment_bytes_match_the_layout(capacity: int, slot_bytes: int, consumers: int) -> None:
    assert S.segment_bytes(capacity, slot_bytes, consumers) == (
        L.Geometry(capacity, slot_bytes, consumers).total_bytes
    )


def test_geometry_predicates() -> None:
    assert S.capacity_ok(2) and S.capacity_ok(1 << 24)
    assert not S.capacity_ok(1) and not S.capacity_ok(3) and not S.capacity_ok(1 << 25)
    assert S.slot_bytes_ok(8) and S.slot_bytes_ok(1 << 20)
    assert not S.slot_bytes_ok(12) and not S.slot_bytes_ok(0) and not S.slot_bytes_ok((1 << 20) + 8)
    assert S.max_consumers_for("events", 1) == 1
    assert S.max_consumers_for("fanout", 3) == 16 and S.max_consumers_for("fanout", 40) == 40
