"""Stamps and the watermark, one piece at a time: stamped stages, what a hop reports, what the
edge-in computes from it, and the batches waiting for it (in-memory lanes, no processes)."""

from __future__ import annotations

import itertools

import pytest
from byteor_edgeplane_testkit import memory_status, op

from byteor import lanes
from byteor.adapters import Ack, Record
from byteor.edgeplane._edge import STAMP, Hop, PendingBatches, WatermarkReader
from byteor.edgeplane._stages import StampedStage, StampRow, op_holds
from byteor.edgeplane._status import W_HELD, W_RELEASED, StatusSegment
from byteor.kernel import BatchResult, Emit

_ids = itertools.count()


def framed(stamp: int, payload: bytes) -> bytes:
    return STAMP.pack(stamp) + payload


def unframe(record: bytes) -> tuple[int, bytes]:
    return STAMP.unpack_from(record)[0], record[8:]


@pytest.fixture
def status() -> StatusSegment:
    return memory_status("unit")


def test_outputs_carry_the_batchs_first_stamp_and_failures_keep_their_frame(
    status: StatusSegment,
) -> None:
    stage = StampedStage(op("byteor_edgeplane_testops:reject_sevens"), status.rows[0])  # type: ignore[arg-type]
    assert not stage.holds
    result = stage.step_batch([framed(5, b"a-5"), framed(6, b"a-6"), framed(7, b"a-7")])
    assert [unframe(r) for r in result.ports[0]] == [(5, b"a-5"), (5, b"a-6")]
    assert [f.index for f in result.failures] == [2]  # the node routes records[2]: framed 7
    assert stage.last == 7
    assert status.rows[0].get(W_RELEASED) == 0  # nothing given back yet


class _Writer:
    """A counters row writer that records its commits."""

    live_q = memoryview(bytearray(16)).cast("Q")
    live_at = 0
    step_word = 0

    def __init__(self) -> None:
        self.commits = 0

    def commit(self, *args: int) -> None:
        self.commits += 1

    def begin(self, inflight: int) -> None:
        pass

    def live(self, inflight: int, phase: int) -> None:
        pass

    def phase(self, phase: int) -> None:
        pass

    def pending_skipped(self, n: int) -> None:
        pass


def test_a_record_holding_op_reports_what_it_holds_low_first_and_high_at_commits(
    status: StatusSegment,
) -> None:
    batch = op("batch", size="2")
    assert op_holds(batch)  # type: ignore[arg-type]
    row = status.rows[1]
    stage = StampedStage(batch, row)  # type: ignore[arg-type]
    commit = StampRow(_Writer(), stage, row)  # type: ignore[arg-type]
    result = stage.step_batch([framed(s, b"r%d" % s) for s in (0, 1, 2)])
    assert row.get(W_HELD) == 0 + 1  # set before anything taken is given back
    assert [unframe(r)[0] for r in result.ports[0]] == [0]  # (r0, r1) framed as one
    result = stage.step_batch([framed(3, b"r3")])
    assert [unframe(r)[0] for r in result.ports[0]] == [0]  # (r2, r3): r2 came in before
    assert row.get(W_HELD) == 0 + 1  # raised only at the commit, once (r2, r3) is out
    commit.commit(4, 2, 0, 0, 0, 0, 0)
    assert row.get(W_HELD) == 3 + 1 and row.get(W_RELEASED) == 3 + 1
    result = stage.step_batch([framed(4, b"r4")])
    assert result.count == 0  # r4 is held
    emit = stage.finish()
    assert [unframe(r) for r in emit.ports[0]] == [(3, emit.ports[0][0][8:])]
    commit.commit(5, 3, 0, 0, 0, 0, 0)  # after finish() and its flush
    assert row.get(W_HELD) == 0 and row.get(W_RELEASED) == 4 + 1


def test_the_watermark_follows_hops_releases_in_flow_order(status: StatusSegment) -> None:
    run = f"wm{next(_ids)}"
    l0 = lanes.create(f"{run}.l0", "events", 16, 64, backing="memory")
    l1 = lanes.create(f"{run}.l1", "events", 16, 64, backing="memory")
    stage_row, sink_row = status.rows[1], status.rows[2]
    reader = WatermarkReader(
        [Hop("a", "stage", l0, "default", stage_row), Hop("b", "sink", l1, "default", sink_row)],
        [[0, 1]],
    )
    tx0, tx1 = l0.sender(), l1.sender()
    rx0, rx1 = l0.receiver(explicit=True), l1.receiver(explicit=True)
    tx0.send_batch_nowait([framed(s, b"x") for s in range(10)])
    assert reader.unfinished() == [0, None]
    assert reader.watermark(10) == 0

    taken = rx0.receive_batch_nowait(4, copy=True)  # the stage takes 4, publishes, releases
    tx1.send_batch_nowait(list(taken))
    rx0.release()
    stage_row.set(W_RELEASED, 3 + 1)
    assert reader.unfinished() == [3, 0]  # its outputs wait at the sink
    assert reader.watermark(10) == 0

    rx1.receive_batch_nowait(4, copy=True)  # the sink confirms them
    rx1.release()
    sink_row.set(W_RELEASED, 3 + 1)
    assert reader.unfinished() == [3, None]
    assert reader.watermark(10) == 3  # one below exact: the last released shares its stamp

    stage_row.set(W_HELD, 2 + 1)  # an op holding 2..: below its release
    assert reader.watermark(10) == 2
    stage_row.set(W_HELD, 0)

    rest = rx0.receive_batch_nowait(16, copy=True)
    tx1.send_batch_nowait(list(rest))
    rx0.release()
    stage_row.set(W_RELEASED, 9 + 1)
    rx1.receive_batch_nowait(16, copy=True)
    rx1.release()
    sink_row.set(W_RELEASED, 9 + 1)
    assert reader.unfinished() == [None, None]
    assert reader.watermark(10) == 10  # everything published is done
    for lane in (l0, l1):
        lane.close()


def test_pending_batches_release_exactly_the_records_below_the_watermark() -> None:
    pending = PendingBatches()
    records = [Record(b"%d" % i, None, (), i, Ack()) for i in range(10)]
    pending.add(0, records[:4])
    pending.add(4, records[4:10])
    assert pending.count == 10
    assert pending.release(2) == records[:2]
    assert pending.release(2) == []
    assert pending.release(7) == records[2:7]
    assert pending.count == 3
    assert pending.release(10) == records[7:]
    assert pending.count == 0


def test_emit_of_a_plain_op_is_unchanged_when_it_emits_nothing(status: StatusSegment) -> None:
    stage = StampedStage(op("drop"), status.rows[3])  # type: ignore[arg-type]
    result = stage.step_batch([framed(1, b"a")])
    assert result == BatchResult([[]]) and stage.finish() == Emit(((),))
