"""Counters segments: rows written by one process each, read consistently by any other."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import uuid
from collections.abc import Iterator

import pytest

import byteor.lanes as bl
from byteor.lanes import layout as L

ROWS = [
    bl.CounterRow("gen", "source", "main"),
    bl.CounterRow("keep", "stage", "w1"),
    bl.CounterRow("out", "sink", "main"),
]


@pytest.fixture
def name() -> Iterator[str]:
    n = f"test-ctr-{uuid.uuid4().hex[:12]}"
    yield n
    bl.unlink_counters(n)


def test_rows_commit_and_read_back() -> None:
    c = bl.create_counters("mem", ROWS, backing="memory")
    assert c.rows == 3 and c.find("keep") == 1 and c.find("nope") is None
    w = c.writer(1)
    w.live(5, L.PHASE_STEP)
    row = c.read(1)
    assert (row.name, row.role, row.group, row.phase, row.inflight) == (
        "keep",
        "stage",
        "w1",
        "step",
        5,
    )
    assert row.pid == os.getpid() and row.alive and row.started_ns > 0 and row.consistent
    w.commit(10, 7, 3, 3, 0, 1_000, row.started_ns + 4_000)
    w.live(0, L.PHASE_IDLE)
    row = c.read(1)
    assert (row.records_in, row.records_out, row.errors, row.skipped, row.routed) == (
        10,
        7,
        3,
        3,
        0,
    )
    assert (row.busy_ns, row.inflight, row.phase) == (1_000, 0, "idle")
    assert row.busy_share(row.started_ns + 4_000) == 0.25
    w.add_restart(redelivered=4, duplicates=2)
    row = c.read(1)
    assert (row.restarts, row.redelivered, row.duplicates) == (1, 4, 2)
    untouched = c.read(0)
    assert (untouched.records_in, untouched.pid, untouched.started_ns) == (0, 0, 0)
    assert untouched.busy_share() == 0.0
    c.close()


def test_a_writer_killed_mid_commit_never_hangs_a_reader() -> None:
    c = bl.create_counters("mem", ROWS, backing="memory")
    base = (ctypes.sizeof(L.CountersHeader) + ctypes.sizeof(L.NodeRow)) // 8
    c.q[base] = 7  # odd: a commit that never finished
    assert not c.read(1).consistent
    w = c.writer(1)  # the next owner takes the row over: seq even again
    assert c.read(1).consistent
    w.commit(1, 1, 0, 0, 0, 0, 0)
    assert c.read(1).records_in == 1 and c.q[base] % 2 == 0
    c.close()


def test_refuses_bad_rows() -> None:
    with pytest.raises(ValueError, match="role"):
        bl.create_counters("mem", [bl.CounterRow("x", "widget")], backing="memory")
    with pytest.raises(ValueError, match="at most 48"):
        bl.create_counters("mem", [bl.CounterRow("x" * 49, "stage")], backing="memory")
    with pytest.raises(bl.BadGeometry):
        bl.create_counters("mem", [], backing="memory")


def test_shm_attach_validates(name: str) -> None:
    c = bl.create_counters(name, ROWS)
    c.writer(2).commit(3, 3, 0, 0, 0, 0, 0)
    other = bl.attach_counters(name)
    assert [r.name for r in other.read_all()] == ["gen", "keep", "out"]
    assert other.read(2).records_in == 3 and not other.finished
    c.finish()
    assert other.finished
    other.close()
    with pytest.raises(bl.SegmentExists):
        bl.create_counters(name, ROWS)
    path = c.path
    assert path is not None and os.stat(path).st_mode & 0o777 == 0o600
    c.close()

    def damaged(offset: int, value: bytes) -> type[Exception]:
        with open(path, "r+b") as f:
            f.seek(offset)
            old = f.read(len(value))
            f.seek(offset)
            f.write(value)
        try:
            bl.attach_counters(name).close()
        except bl.AttachError as exc:
            return type(exc)
        finally:
            with open(path, "r+b") as f:
                f.seek(offset)
                f.write(old)
        return type(None)  # type: ignore[return-value]

    assert damaged(0, b"NOTMAGIC") is bl.BadMagic
    assert damaged(0, b"\0" * 8) is bl.BadMagic
    assert damaged(8, b"\x09") is bl.BadVersion
    assert damaged(L.CountersHeader.created_ns.offset, b"\xff") is bl.BadChecksum
    os.truncate(path, 200)
    with pytest.raises(bl.SegmentTruncated):
        bl.attach_counters(name)
    os.chmod(path, 0o666)
    with pytest.raises(bl.ForeignSegment):
        bl.attach_counters(name)
    with pytest.raises(bl.SegmentNotFound):
        bl.attach_counters(name + "-none")


def _committer(name: str, commits: int) -> None:
    c = bl.attach_counters(name)
    w = c.writer(1)
    for i in range(1, commits + 1):
        # A filter that drops every third record: in = out + skipped at every commit.
        skipped = i // 3
        w.commit(i, i - skipped, skipped, skipped, 0, i, i)
    c.close()


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_every_consistent_read_adds_up_across_processes(name: str) -> None:
    c = bl.create_counters(name, ROWS)
    child = multiprocessing.get_context("fork").Process(target=_committer, args=(name, 100_000))
    child.start()
    reads = torn = 0
    last = 0
    while child.is_alive() or reads == 0:
        row = c.read(1)
        reads += 1
        if not row.consistent:
            torn += 1
            continue
        assert row.records_in == row.records_out + row.skipped
        assert row.busy_ns == row.updated_ns == row.records_in >= last
        last = row.records_in
    child.join()
    assert child.exitcode == 0 and torn == 0
    assert c.read(1).records_in == 100_000
    c.close()


def _abandon(name: str, directory: str) -> None:
    """A run killed before it cleaned up: its counters segment stays behind."""
    c = bl.create_counters(name, ROWS, directory=directory)
    c.writer(1).commit(1, 1, 0, 0, 0, 0, 0)
    os._exit(0)


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_doctor_judges_and_removes_counters(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from byteor.cli import main

    directory = str(tmp_path)
    live = bl.create_counters("run-live.-counters", ROWS, directory=directory)
    child = multiprocessing.get_context("fork").Process(
        target=_abandon, args=("run-dead.-counters", directory)
    )
    child.start()
    child.join()
    assert main(["doctor", "--dir", directory, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    found = {s["name"]: s for s in doc["segments"]}
    assert found["run-live.-counters"]["verdict"] == "live"
    assert found["run-dead.-counters"]["verdict"] == "stale"
    assert found["run-dead.-counters"]["kind"] == "counters"
    assert found["run-dead.-counters"]["capacity"] == 3
    assert main(["doctor", "--dir", directory, "--remove"]) == 0
    out = capsys.readouterr().out
    assert "counters 3 row(s)" in out and "removed 1" in out
    assert sorted(os.listdir(directory)) == ["byteor-run-live.-counters"]
    live.close()
