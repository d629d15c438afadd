"""Supervision and observability of a run: per-node counters in shared memory (and what a
snapshot mid-run shows), restarting a dead worker (at-least-once, duplicates counted exactly),
and stall detection with an injected clock.

Multi-process tests are few and bounded; nothing waits on a timer: kills and stalls happen at
a record number chosen by the test, and the stall tests' clock only moves when the test says.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import pathlib
from collections import Counter
from collections.abc import Iterator

import pytest

from byteor import lanes
from byteor.exec import (
    COMMIT_RECORDS,
    LaneGraphMP,
    LaneGraphSP,
    ListSink,
    StageStalled,
    WorkerDied,
)
from byteor.exec._mp import _resume
from byteor.exec._report import NodeReport, StopToken
from byteor.exec._stage import FunctionStage
from byteor.exec.nodes import Input, Outbox, StageNode
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec

pytestmark = [pytest.mark.timeout(60)]


def chain(
    stages: list[StageSpec], count: int, capacity: int = 64, sink: str = "memory"
) -> PipelineSpecV1:
    """gen -> stages (each reading the lane before it) -> sink ``out``."""
    names = ["raw", *[f"l{i}" for i in range(len(stages))]]
    return PipelineSpecV1.build(
        "sup",
        "lane_graph",
        lanes=[LaneSpec(n, "events", capacity, 64) for n in names],
        stages=stages,
        sources=[SourceSpec("gen", "generator", "raw", {"count": str(count)})],
        sinks=[SinkSpec("out", sink, (names[-1],))],
    )


def leftovers(run_id: str) -> list[str]:
    return glob.glob(f"/dev/shm/byteor-{run_id}*")


@pytest.fixture
def run_name() -> Iterator[str]:
    name = f"sup{os.getpid()}-{os.urandom(3).hex()}"
    yield name
    assert leftovers(name) == []
    assert multiprocessing.active_children() == []


# -- counters rows --------------------------------------------------------------------------


@pytest.mark.multiprocess
def test_snapshots_mid_run_and_at_the_end_add_up(run_name: str, tmp_path: pathlib.Path) -> None:
    """A stage that skips every third record, in its own process; a stage in another process
    snapshots the run while records flow, and again once everything before it is done."""
    into = str(tmp_path / "snap.json")
    spec = chain(
        [
            StageSpec(
                "check",
                "byteor_exec_testops:fail_every_third",
                ("raw",),
                ("l0",),
                process="w1",
                params={"on_error": "skip"},
            ),
            StageSpec(
                "peek",
                "byteor_exec_testops:SnapshotTwice",
                ("l0",),
                ("l1",),
                process="w2",
                params={"name": run_name, "at": "700", "into": into},
            ),
        ],
        count=3000,
    )
    sink = ListSink()
    report = LaneGraphMP(spec, sinks={"out": sink}, run_id=run_name).run()
    assert len(sink.records) == 2000

    mid = json.loads(pathlib.Path(into).read_text())
    check, peek = mid["nodes"]["check"], mid["nodes"]["peek"]
    assert check["consistent"] and check["process"] == "w1" and check["pid"] > 0
    # Committed counters add up in every snapshot: what it took = what it passed + skipped.
    assert check["records_in"] == check["records_out"] + check["skipped"]
    assert check["skipped"] == check["errors"] and check["records_in"] >= 1050
    # Its input lane's cursor is what it has given back: at least what its row committed.
    assert mid["lanes"]["raw"]["consumers"]["default"]["position"] >= check["records_in"]
    assert peek["phase"] == "working" and peek["records_in"] + peek["inflight"] >= 701

    end = json.loads(pathlib.Path(into + ".end").read_text())
    nodes = end["nodes"]
    assert (nodes["gen"]["records_in"], nodes["gen"]["records_out"]) == (3000, 3000)
    assert (nodes["check"]["records_in"], nodes["check"]["records_out"]) == (3000, 2000)
    assert (nodes["check"]["skipped"], nodes["check"]["errors"]) == (1000, 1000)
    assert nodes["check"]["phase"] == "done" and nodes["check"]["inflight"] == 0
    # peek itself is in its finish(): everything it took is committed.
    assert (nodes["peek"]["records_in"], nodes["peek"]["inflight"]) == (2000, 0)
    assert all(n["restarts"] == 0 for n in nodes.values())
    assert 0 <= nodes["check"]["busy_share"] <= 1

    # The run's report says the same (and the busy time its processes measured).
    assert (report.node("check").records_in, report.node("check").skipped) == (3000, 1000)
    assert (report.restarts, report.duplicates, report.redelivered) == (0, 0, 0)
    assert report.node("check").busy_ns > 0


def test_sp_named_run_has_shared_rows(run_name: str, tmp_path: pathlib.Path) -> None:
    """SP with a run id: the same rows, in /dev/shm, readable by a snapshot mid-run."""
    into = str(tmp_path / "snap.json")
    spec = chain(
        [
            StageSpec(
                "peek",
                "byteor_exec_testops:SnapshotAt",
                ("raw",),
                ("l0",),
                params={"name": run_name, "at": "300", "into": into},
            )
        ],
        count=500,
    )
    report = LaneGraphSP(spec, sinks={"out": ListSink()}, run_id=run_name).run()
    assert report.records_out == 500
    snap = json.loads(pathlib.Path(into).read_text())
    assert sorted(snap["nodes"]) == ["gen", "out", "peek"] and sorted(snap["lanes"]) == [
        "l0",
        "raw",
    ]
    assert snap["nodes"]["peek"]["pid"] == os.getpid()
    sent = snap["nodes"]["gen"]["records_out"]
    assert snap["lanes"]["raw"]["published"] >= sent > 0


# -- restart --------------------------------------------------------------------------------


def restartable(op: str, params: dict[str, str], max_restarts: int = 2) -> StageSpec:
    return StageSpec(
        "left",
        op,
        ("raw",),
        ("l0",),
        process="w1",
        params=params,
        on_crash="restart",
        max_restarts=max_restarts,
        restart_backoff_ms=0,
    )


@pytest.mark.multiprocess
@pytest.mark.parametrize(("batch", "capacity"), [(64, 256), (5, 4096)])
def test_killed_worker_restarts_and_every_record_arrives(
    run_name: str,
    tmp_path: pathlib.Path,
    batch: int,
    capacity: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kill -9 (SIGKILL, by the op itself at record #1234) of a worker with on_crash =
    restart: the run completes, every record arrives, and the records that arrive twice are
    exactly the ones the summary counts, one window of consecutive records."""
    count = 5000
    op = "byteor_exec_testops:KillOnce"
    params = {"at": "1234", "marker": str(tmp_path / "killed")}
    sink = ListSink()
    ex = LaneGraphMP(
        chain([restartable(op, params)], count, capacity=capacity),
        sinks={"out": sink},
        batch=batch,
        run_id=run_name,
    )
    report = ex.run()
    assert (tmp_path / "killed").exists()
    out = [int(r) for r in sink.records]
    left = report.node("left")
    assert (report.restarts, left.restarts) == (1, 1)
    # Every record, once; and the duplicates the summary counts, no more, no less.
    assert sorted(set(out)) == list(range(count))
    assert len(out) == count + report.duplicates
    twice = sorted(r for r, n in Counter(out).items() if n == 2)
    assert max(Counter(out).values()) <= 2 and len(twice) == report.duplicates
    # The window: what the dead worker had taken since its last commit (record 1234 among
    # them), at most a commit's worth and a batch, all taken again; the part of it whose
    # outputs it had already published (w .. p-1) comes out twice. So the output is in order
    # but for that part, which comes again: 0 .. p-1, then w .. count-1.
    window = min(COMMIT_RECORDS, capacity // 4) + batch - 1
    assert 1 <= left.redelivered <= window
    assert report.duplicates == left.duplicates <= left.redelivered
    if twice:
        w, p = twice[0], twice[-1] + 1
        assert twice == list(range(w, p)) and p <= 1234 < w + left.redelivered
        assert out == list(range(p)) + list(range(w, count))
    else:
        assert out == list(range(count))
    assert left.records_in == count and left.records_out == count
    assert report.records_out == count + report.duplicates
    assert any("restart 1 of 2" in m for m in caplog.messages)


@pytest.mark.multiprocess
def test_a_worker_that_keeps_dying_fails_after_its_restarts(run_name: str) -> None:
    spec = chain([restartable("byteor_exec_testops:KillOnce", {"at": "100"}, 2)], 1000)
    with pytest.raises(WorkerDied) as info:
        LaneGraphMP(spec, sinks={"out": ListSink()}, run_id=run_name).run()
    err = info.value
    assert (err.process, err.stages, err.restarts) == ("w1", ("left",), 2)
    assert "after 2 restart(s)" in str(err) and "'left'" in str(err)


def _stage_on(lane_in: lanes.Lane, lane_out: lanes.Lane, counters: lanes.Counters) -> StageNode:
    """An identity stage over the two lanes with row 0 (a lane of 256 records: it commits
    every 64, so the 20 of the test stay uncommitted)."""
    inp = Input([lane_in.receiver(explicit=True)], "round_robin", ("in",), 256)
    out = Outbox("out", lane_out.sender())
    stage = FunctionStage(lambda r: r, 1, "identity")
    report = NodeReport("stage", "s", "x")
    return StageNode(report, stage, inp, [out], None, "fail", counters.writer(0))


@pytest.mark.parametrize("gave_back", [False, True])
def test_restart_accounting_rolls_forward_or_counts_the_redo(gave_back: bool) -> None:
    """In one process, on in-memory lanes: a stage dies (its objects are dropped) either
    before giving its inputs back or between that and committing its row; a new one on the
    same lanes and row continues, and counts what it will do again."""
    lane_in = lanes.create(f"ra-in-{gave_back}", "events", 256, 64, backing="memory")
    lane_out = lanes.create(f"ra-out-{gave_back}", "events", 256, 64, backing="memory")
    counters = lanes.create_counters("ra", [lanes.CounterRow("s", "stage")], backing="memory")
    stop = StopToken()
    try:
        lane_in.sender().send_batch([b"%d" % i for i in range(40)])
        first = _stage_on(lane_in, lane_out, counters)
        assert first.run(10, stop) and first.run(10, stop)  # 20 taken and published
        row = counters.read(0)
        assert (row.inflight, row.records_in, row.records_out) == (20, 0, 0)
        if gave_back:
            first.inp.commit()  # ... and it dies before its row is committed
        first.inp.receivers[0].close()  # (an explicit reader's close gives nothing back)

        second = _stage_on(lane_in, lane_out, counters)
        redelivered, duplicates = _resume(second, counters.read(0))
        c = second.counters
        if gave_back:  # nothing is done again; the row catches up with the lanes
            assert (redelivered, duplicates) == (0, 0)
            assert (c.records_in, c.records_out, second.inp.position()) == (20, 20, 20)
        else:  # the 20 are read again, and their 20 outputs come out a second time
            assert (redelivered, duplicates) == (20, 20)
            assert (c.records_in, c.records_out, second.inp.position()) == (0, 0, 0)
            assert bytes(second.inp.receivers[0].receive_nowait()) == b"0"
    finally:
        for lane in (lane_in, lane_out):
            lane.close()
            lanes.unlink(lane.name, backing="memory")
        counters.close()


# -- stalls ---------------------------------------------------------------------------------


class _Clock:
    """The supervisor's clock: still until ``moving()`` says so, then 10 s a reading."""

    def __init__(self, moving: object) -> None:
        self.moving = moving
        self.now = 0.0

    def __call__(self) -> float:
        if self.moving():  # type: ignore[operator]
            self.now += 10.0
        return self.now


@pytest.mark.multiprocess
def test_stage_stuck_in_its_op_is_named(run_name: str, tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "stuck"
    spec = chain(
        [
            StageSpec(
                "slow",
                "byteor_exec_testops:StuckAt",
                ("raw",),
                ("l0",),
                process="w1",
                params={"at": "100", "marker": str(marker)},
            )
        ],
        count=10_000,
    )
    clock = _Clock(marker.exists)
    ex = LaneGraphMP(
        spec, sinks={"out": ListSink()}, run_id=run_name, stall_timeout=30.0, clock=clock
    )
    with pytest.raises(StageStalled) as info:
        ex.run()
    err = info.value
    assert (err.stage, err.process, err.in_op) == ("slow", "w1", True)
    assert 30.0 <= err.seconds <= 60.0
    assert "inside its op" in str(err) and "raw holds" in str(err)
    assert "--stall-timeout" in str(err)


class _Never:
    """A source that has nothing now, and never ends (no descriptor to wait on)."""

    def poll(self, max_count: int) -> list[bytes]:
        return []

    def fileno(self) -> None:
        return None

    def close(self) -> None:
        pass


@pytest.mark.multiprocess
def test_starved_round_robin_merge_in_a_worker_is_named(run_name: str) -> None:
    """Today's SP says PipelineStalled at once; MP used to wait forever."""
    spec = PipelineSpecV1.build(
        "starve",
        "lane_graph",
        lanes=[LaneSpec(n, "events", 16, 64) for n in ("a", "b", "done")],
        stages=[StageSpec("join", "identity", ("a", "b"), ("done",), process="w1")],
        sources=[
            SourceSpec("quiet", "memory", "a"),
            SourceSpec("busy", "generator", "b", {"count": "100"}),
        ],
        sinks=[SinkSpec("out", "memory", ("done",))],
    )
    ex = LaneGraphMP(
        spec,
        sources={"quiet": _Never()},
        sinks={"out": ListSink()},
        run_id=run_name,
        stall_timeout=30.0,
        clock=_Clock(lambda: True),
    )
    with pytest.raises(StageStalled) as info:
        ex.run()
    err = info.value
    assert (err.stage, err.in_op) == ("join", False)
    assert "b holds 16" in str(err) and "round_robin merge waits for its turn input (a)" in str(err)
