"""The step contract, error policies, counters, and the lane protocols."""

from __future__ import annotations

import uuid

import pytest

import byteor.lanes
from byteor.kernel import (
    BatchResult,
    Emit,
    ErrorPolicy,
    LaneRx,
    LaneTx,
    RecordFailure,
    Stage,
    StageCounters,
    StageError,
    StepResult,
    step_each,
)


def test_emit_constructors() -> None:
    assert Emit.nothing(2) == Emit(((), ()))
    assert Emit.to_all(2, b"a", b"b") == Emit(((b"a", b"b"), (b"a", b"b")))
    assert Emit.to_port(3, 1, b"x") == Emit(((), (b"x",), ()))
    assert Emit.to_port(3, 1, b"x").count == 1
    assert Emit.to_all(2, b"a").count == 2
    with pytest.raises(ValueError, match="port 3 out of range for 3"):
        Emit.to_port(3, 3, b"x")


def _parity(record: bytes) -> StepResult:
    if not record.isdigit():
        return StageError("digits.invalid", f"{record!r} is not a number")
    port = int(record) % 2
    return Emit.to_port(2, port, record)


def test_step_each_keeps_input_order_per_port_and_positions_of_failures() -> None:
    got = step_each(_parity, [b"1", b"2", b"x", b"3", b"4", b"?"], 2)
    assert got.ports == [[b"2", b"4"], [b"1", b"3"]]
    assert got.failures == [
        RecordFailure(2, StageError("digits.invalid", "b'x' is not a number")),
        RecordFailure(5, StageError("digits.invalid", "b'?' is not a number")),
    ]
    assert got.count == 4


def test_step_each_refuses_an_emit_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="1 port"):
        step_each(lambda r: Emit.to_all(1, r), [b"a"], 2)
    result = BatchResult.empty(2)
    with pytest.raises(ValueError, match="1 port"):
        result.add(Emit.to_all(1, b"a"))
    result.add(Emit.to_all(2, b"a"))
    assert result.ports == [[b"a"], [b"a"]]


class _Pairs:
    """A stage that holds one record back and emits pairs joined (exercises finish)."""

    outputs = 1

    def __init__(self) -> None:
        self._held: bytes | None = None

    def step(self, record: bytes) -> StepResult:
        if self._held is None:
            self._held = record
            return Emit.nothing(1)
        pair, self._held = self._held + record, None
        return Emit.to_all(1, pair)

    def step_batch(self, records: list[bytes]) -> BatchResult:  # type: ignore[override]
        return step_each(self.step, records, 1)

    def finish(self) -> Emit:
        held, self._held = self._held, None
        return Emit.nothing(1) if held is None else Emit.to_all(1, held)


def test_a_stage_class_matches_the_protocol_and_finishes() -> None:
    stage = _Pairs()
    assert isinstance(stage, Stage)
    assert stage.step_batch([b"a", b"b", b"c"]).ports == [[b"ab"]]
    assert stage.finish() == Emit(((b"c",),))
    assert stage.finish() == Emit(((),))


def test_error_policy() -> None:
    assert ErrorPolicy() == ErrorPolicy("fail", None)
    assert ErrorPolicy("route", "bad").lane == "bad"
    with pytest.raises(ValueError, match="unknown error action 'retry'"):
        ErrorPolicy("retry")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="error lane goes with action 'route'"):
        ErrorPolicy("route")
    with pytest.raises(ValueError, match="error lane goes with action 'route'"):
        ErrorPolicy("skip", "bad")


def test_counters_count_errors_by_code_and_action() -> None:
    c = StageCounters()
    c.count_error(StageError("a", "m"), "skip")
    c.count_error(StageError("a", "m"), "route")
    c.count_error(StageError("b", "m"), "fail")
    assert (c.errors, c.skipped, c.routed) == (3, 1, 1)
    assert c.error_codes == {"a": 2, "b": 1}


def test_lane_endpoints_match_the_kernel_protocols() -> None:
    lane = byteor.lanes.create(
        f"kernel-proto-{uuid.uuid4().hex[:8]}", "events", 4, 64, backing="memory"
    )
    try:
        tx, rx = lane.sender(), lane.receiver()
        assert isinstance(tx, LaneTx) and isinstance(rx, LaneRx)
        assert not isinstance(rx, LaneTx)
        tx.send_batch([b"a", b"b"])
        assert [bytes(m) for m in rx.receive_batch(8)] == [b"a", b"b"]
        assert (tx.position, rx.position) == (2, 2)
    finally:
        lane.close()
        byteor.lanes.unlink(lane.name, backing="memory")
