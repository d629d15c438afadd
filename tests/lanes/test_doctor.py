"""``byteor doctor``: live, stale, invalid and foreign segments; --remove; --json; exit codes.

Every test points the doctor at its own directory (``--dir``) with file-backed segments named
``byteor-<name>``, so nothing here depends on, or touches, what else lives in /dev/shm.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import byteor.lanes as bl
from byteor.cli import main
from byteor.lanes import layout as L

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def doctor_dir(tmp_path: Path) -> Path:
    d = tmp_path / "shm"
    d.mkdir()
    return d


@pytest.fixture
def doctor_lane(doctor_dir: Path) -> Callable[..., bl.Lane]:
    """``doctor_lane(name, kind="fanout", **create_kwargs)``: a file-backed lane in doctor_dir."""

    def make(name: str, kind: str = "fanout", **kwargs: Any) -> bl.Lane:
        kwargs.setdefault("capacity", 8)
        kwargs.setdefault("slot_bytes", 32)
        return bl.create(
            name, kind, backing="file", path=str(doctor_dir / f"byteor-{name}"), **kwargs
        )

    return make


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["doctor", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], directory: Path, *argv: str) -> dict[str, Any]:
    code, out, _ = run(capsys, "--dir", str(directory), "--json", *argv)
    doc: dict[str, Any] = json.loads(out)
    assert doc["exit_code"] == code
    return doc


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in doc["segments"]}


def _child_creates(path: str, name: str, send: int, receive: int) -> None:
    """In a forked child: create a lane, use it, and exit without unlinking (a crash)."""
    lane = bl.create(
        name, "fanout", capacity=8, slot_bytes=32, backing="file", path=path, consumers=["a"]
    )
    tx = lane.sender()
    rx = lane.receiver("a")
    for i in range(send):
        tx.send_nowait(bytes([i]))
    for _ in range(receive):
        rx.receive_nowait()
    rx.release()
    os._exit(0)


def make_stale(directory: Path, name: str, send: int = 3, receive: int = 1) -> int:
    """A segment left behind by a process that is gone; returns that process's pid."""
    child = FORK.Process(
        target=_child_creates, args=(str(directory / f"byteor-{name}"), name, send, receive)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert child.pid is not None
    return child.pid


# -- verdicts -------------------------------------------------------------------------------------


def test_empty_directory(capsys, doctor_dir: Path) -> None:
    (doctor_dir / "not-ours").write_bytes(b"x")  # only byteor-* files are looked at
    code, out, err = run(capsys, "--dir", str(doctor_dir))
    assert (code, err) == (0, "")
    assert out == f"{doctor_dir}: 0 lane segment(s): 0 live, 0 stale, 0 invalid\n"
    doc = run_json(capsys, doctor_dir)
    assert doc == {
        "dir": str(doctor_dir),
        "segments": [],
        "summary": {"live": 0, "stale": 0, "invalid": 0, "foreign": 0, "removed": 0},
        "removed": [],
        "exit_code": 0,
    }


def test_live_segment(capsys, doctor_dir: Path, doctor_lane) -> None:
    lane = doctor_lane("orders", consumers=["a"])
    tx, rx = lane.sender(), lane.receiver("a")
    for i in range(3):
        tx.send_nowait(bytes([i]))
    rx.receive_nowait()
    rx.release()
    me = os.getpid()
    code, out, _ = run(capsys, "--dir", str(doctor_dir))
    assert code == 0
    size = L.Geometry(8, 32, 16).total_bytes
    assert out.splitlines() == [
        f"live     orders  fanout capacity 8 x 32 B, {size} bytes, published 3",
        f"         creator pid {me} alive; producer pid {me} alive",
        f"         consumer 0 'a' critical position 1 lag 2 owner pid {me} alive",
        f"{doctor_dir}: 1 lane segment(s): 1 live, 0 stale, 0 invalid",
    ]
    seg = by_name(run_json(capsys, doctor_dir))["orders"]
    assert seg == {
        "name": "orders",
        "path": str(doctor_dir / "byteor-orders"),
        "verdict": "live",
        "size": size,
        "error": None,
        "error_type": None,
        "kind": "fanout",
        "capacity": 8,
        "slot_bytes": 32,
        "creator_pid": me,
        "creator_alive": True,
        "producer_pid": me,
        "producer_alive": True,
        "published": 3,
        "closed": False,
        "consumers": [
            {
                "index": 0,
                "name": "a",
                "policy": "critical",
                "position": 1,
                "lag": 2,
                "pid": me,
                "alive": True,
            }
        ],
        "removable": False,
        "note": None,
        "removed": False,
        "remove_error": None,
    }
    lane.close()


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_stale_segment_of_a_dead_process(capsys, doctor_dir: Path) -> None:
    pid = make_stale(doctor_dir, "left", send=3, receive=1)
    code, out, _ = run(capsys, "--dir", str(doctor_dir))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("stale    left  fanout capacity 8 x 32 B")
    assert lines[1] == f"         creator pid {pid} gone; producer pid {pid} gone"
    assert lines[2] == f"         consumer 0 'a' critical position 1 lag 2 owner pid {pid} gone"
    assert lines[3] == (
        f"{doctor_dir}: 1 lane segment(s): 0 live, 1 stale, 0 invalid; 1 stale or invalid "
        "left: `byteor doctor --remove` removes them"
    )
    doc = run_json(capsys, doctor_dir)
    seg = by_name(doc)["left"]
    assert (seg["verdict"], seg["creator_pid"], seg["creator_alive"], seg["removable"]) == (
        "stale",
        pid,
        False,
        True,
    )
    assert doc["summary"]["stale"] == 1
    assert doc["exit_code"] == 1


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_dead_creator_but_live_consumer_is_live(capsys, doctor_dir: Path) -> None:
    """Every registered process counts, not only the creator."""
    make_stale(doctor_dir, "shared", send=2, receive=0)
    lane = bl.attach("shared", backing="file", path=str(doctor_dir / "byteor-shared"))
    rx = lane.receiver("a")  # this process now owns consumer line 0
    seg = by_name(run_json(capsys, doctor_dir))["shared"]
    assert (seg["verdict"], seg["creator_alive"], seg["producer_alive"]) == ("live", False, False)
    assert [(c["name"], c["pid"], c["alive"]) for c in seg["consumers"]] == [
        ("a", os.getpid(), True)
    ]
    rx.close()  # gives the line up: nobody is left
    seg = by_name(run_json(capsys, doctor_dir))["shared"]
    assert seg["verdict"] == "stale"
    lane.close()


def test_reused_pid_reads_as_gone(capsys, doctor_dir: Path, doctor_lane) -> None:
    """The creator is (pid, start time): our pid with another start time is someone else."""
    doctor_lane("reused").close()
    path = doctor_dir / "byteor-reused"
    assert by_name(run_json(capsys, doctor_dir))["reused"]["verdict"] == "live"
    with open(path, "r+b") as f:  # creator_start lies outside the checksummed line
        f.seek(L.SegmentHeader.creator_start.offset)
        f.write((12345).to_bytes(8, "little"))
    seg = by_name(run_json(capsys, doctor_dir))["reused"]
    assert (seg["verdict"], seg["creator_pid"], seg["creator_alive"]) == (
        "stale",
        os.getpid(),
        False,
    )


def test_invalid_garbage(capsys, doctor_dir: Path) -> None:
    (doctor_dir / "byteor-x").write_bytes(b"garbage!")
    os.chmod(doctor_dir / "byteor-x", 0o600)
    code, out, _ = run(capsys, "--dir", str(doctor_dir))
    assert code == 1
    path = doctor_dir / "byteor-x"
    assert out.splitlines() == [
        f"invalid  x  8 bytes: lane segment {path} is 8 bytes, smaller than its 256-byte "
        "header: it is truncated or not a lane",
        f"{doctor_dir}: 1 lane segment(s): 0 live, 0 stale, 1 invalid; 1 stale or invalid "
        "left: `byteor doctor --remove` removes them",
    ]
    seg = by_name(run_json(capsys, doctor_dir))["x"]
    assert (seg["verdict"], seg["error_type"], seg["kind"], seg["removable"]) == (
        "invalid",
        "SegmentTruncated",
        None,
        True,
    )


@pytest.mark.parametrize(
    ("damage", "error_type", "words"),
    [
        (lambda p: os.truncate(p, 1000), "SegmentTruncated", "is 1000 bytes but"),
        (lambda p: _poke(p, 0, b"NOTALANE"), "BadMagic", "not a ByteOr lane segment"),
        (lambda p: _poke(p, 24, b"\x07"), "BadChecksum", "checksum"),
        (lambda p: os.chmod(p, 0o666), "ForeignSegment", "writable by other users"),
    ],
    ids=["truncated", "magic", "checksum", "mode"],
)
def test_invalid_shows_the_validation_error(
    capsys,
    doctor_dir: Path,
    doctor_lane,
    damage: Callable[[str], None],
    error_type: str,
    words: str,
) -> None:
    doctor_lane("hurt").close()
    damage(str(doctor_dir / "byteor-hurt"))
    seg = by_name(run_json(capsys, doctor_dir))["hurt"]
    assert (seg["verdict"], seg["error_type"]) == ("invalid", error_type)
    assert words in seg["error"]
    assert str(doctor_dir / "byteor-hurt") in seg["error"]


def _poke(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_invalid_name(capsys, doctor_dir: Path) -> None:
    (doctor_dir / "byteor-bad name").write_bytes(b"")
    seg = by_name(run_json(capsys, doctor_dir))["bad name"]
    assert (seg["verdict"], seg["error_type"]) == ("invalid", "ValueError")
    assert "is invalid" in seg["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_foreign_segment_is_listed_never_judged(capsys, doctor_dir: Path, doctor_lane) -> None:
    doctor_lane("theirs").close()
    os.chown(doctor_dir / "byteor-theirs", 65534, 65534)
    code, out, _ = run(capsys, "--dir", str(doctor_dir), "--remove")
    assert code == 0
    assert out.splitlines() == [
        f"foreign  theirs  {L.Geometry(8, 32, 16).total_bytes} bytes",
        "         note: belongs to uid 65534; run the doctor as that user",
        f"{doctor_dir}: 1 lane segment(s): 0 live, 0 stale, 0 invalid, 1 of other users; removed 0",
    ]
    assert (doctor_dir / "byteor-theirs").exists()


def test_young_file_without_magic_is_not_removed(capsys, doctor_dir: Path, doctor_lane) -> None:
    """create() writes the magic last: a fresh file without it may be mid-creation."""
    doctor_lane("newborn").close()
    path = doctor_dir / "byteor-newborn"
    _poke(str(path), 0, b"\0" * 8)
    doc = run_json(capsys, doctor_dir, "--remove")
    seg = by_name(doc)["newborn"]
    assert (seg["verdict"], seg["error_type"], seg["removable"], seg["removed"]) == (
        "invalid",
        "BadMagic",
        False,
        False,
    )
    assert "may be being created" in seg["note"]
    assert doc["exit_code"] == 1
    assert path.exists()
    old = os.stat(path).st_mtime - 60
    os.utime(path, (old, old))
    doc = run_json(capsys, doctor_dir, "--remove")
    assert doc["removed"] == [str(path)]
    assert not path.exists()


# -- --remove -------------------------------------------------------------------------------------


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_remove_removes_exactly_stale_and_invalid(capsys, doctor_dir: Path, doctor_lane) -> None:
    live = doctor_lane("alive", consumers=["a"])
    make_stale(doctor_dir, "dead")
    (doctor_dir / "byteor-junk").write_bytes(b"\x01" * 300)
    (doctor_dir / "other-file").write_bytes(b"not a segment name")
    code, out, _ = run(capsys, "--dir", str(doctor_dir), "--remove")
    assert code == 0
    lines = out.splitlines()
    assert f"         removed {doctor_dir / 'byteor-dead'}" in lines
    assert f"         removed {doctor_dir / 'byteor-junk'}" in lines
    assert lines[-1] == f"{doctor_dir}: 3 lane segment(s): 1 live, 1 stale, 1 invalid; removed 2"
    assert sorted(os.listdir(doctor_dir)) == ["byteor-alive", "other-file"]
    # Nothing left to do: the second run is clean and removes nothing.
    doc = run_json(capsys, doctor_dir, "--remove")
    assert doc["removed"] == []
    assert [(s["name"], s["verdict"]) for s in doc["segments"]] == [("alive", "live")]
    assert doc["exit_code"] == 0
    # The live lane still works after the doctor looked at it.
    tx, rx = live.sender(), live.receiver("a")
    tx.send_nowait(b"fine")
    assert bytes(rx.receive_nowait()) == b"fine"
    live.close()


def test_remove_json_lists_what_went(capsys, doctor_dir: Path) -> None:
    (doctor_dir / "byteor-b").write_bytes(b"")
    (doctor_dir / "byteor-a").write_bytes(b"zz")
    doc = run_json(capsys, doctor_dir, "--remove")
    assert doc["removed"] == [str(doctor_dir / "byteor-a"), str(doctor_dir / "byteor-b")]
    assert [(s["name"], s["removed"]) for s in doc["segments"]] == [("a", True), ("b", True)]
    assert doc["summary"] == {"live": 0, "stale": 0, "invalid": 2, "foreign": 0, "removed": 2}
    assert doc["exit_code"] == 0
    assert os.listdir(doctor_dir) == []


def test_remove_failure_is_reported(capsys, doctor_dir: Path) -> None:
    (doctor_dir / "byteor-d").mkdir()
    code, out, _ = run(capsys, "--dir", str(doctor_dir), "--remove")
    assert code == 1  # still there
    lines = out.splitlines()
    assert lines[0].startswith("invalid  d  ")
    assert "Is a directory" in lines[0]
    assert lines[1].startswith(f"         NOT removed: cannot remove {doctor_dir / 'byteor-d'}")
    assert (doctor_dir / "byteor-d").is_dir()


def test_remove_leaves_a_segment_that_came_back_to_life(doctor_dir: Path, doctor_lane) -> None:
    """Between the scan and the removal a process may register: the doctor looks again."""
    from byteor.lanes import doctor

    lane = doctor_lane("phoenix", consumers=["a"])
    path = doctor_dir / "byteor-phoenix"
    lane.close()
    _poke(str(path), L.SegmentHeader.creator_start.offset, (1).to_bytes(8, "little"))
    report = doctor.scan(str(doctor_dir))
    assert [s.verdict for s in report.segments] == ["stale"]
    back = bl.attach("phoenix", backing="file", path=str(path))
    rx = back.receiver("a")
    after = doctor.remove(report)
    assert [(s.verdict, s.removed) for s in after.segments] == [("live", False)]
    assert after.segments[0].note == "came back to life since it was inspected"
    assert path.exists()
    assert after.exit_code == 0
    rx.close()
    back.close()


# -- usage ----------------------------------------------------------------------------------------


def test_missing_directory_is_a_usage_error(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "--dir", str(tmp_path / "nope"))
    assert (code, out) == (2, "")
    assert err == f"byteor: error: --dir {tmp_path / 'nope'}: no such directory\n"
    code, out, _ = run(capsys, "--dir", str(tmp_path / "nope"), "--json")
    assert code == 2
    assert json.loads(out) == {
        "error": f"--dir {tmp_path / 'nope'}: no such directory",
        "exit_code": 2,
    }


def test_unknown_option_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--frobnicate"])
    assert info.value.code == 2
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err


def test_default_directory_is_dev_shm(capsys) -> None:
    """Without --dir the doctor reads /dev/shm (only looking: no --remove here)."""
    name = f"test-doctor-{os.getpid()}-{id(capsys):x}"
    lane = bl.create(name, "events", capacity=8, slot_bytes=32)
    try:
        code, out, _ = run(capsys, "--json")
        doc = json.loads(out)
        assert doc["dir"] == "/dev/shm"
        assert by_name(doc)[name]["verdict"] == "live"
        assert code == doc["exit_code"]
    finally:
        lane.close()
        bl.unlink(name)
