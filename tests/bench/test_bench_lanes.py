"""``byteor bench lanes``: the harness checks what it times, and a wrong stream fails loudly.

The loops are fed in one process first (fast, exact); then a few tiny runs go through real
processes, one peer and one of ours, plus a producer that skips a sequence number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import struct
from collections.abc import Iterator

import numpy as np
import pytest

from byteor.bench import lanes as bench
from byteor.bench.lanes import BenchFailure, Gate, Plan, RoundTrips, Sent, Tally
from byteor.cli.common import CliError


class _FreeGate(Gate):
    """A gate with no parent: start and hold return at once."""

    def __init__(self) -> None:
        pass

    def start(self) -> None:
        pass

    def hold(self) -> None:
        pass


def _messages(seqs: list[int], size: int = 64) -> list[bytes]:
    return [struct.pack("<Q", s) + bytes(size - 8) for s in seqs]


def _feed(seqs: list[int], size: int = 64) -> Iterator[bytes]:
    return iter(_messages(seqs, size))


def _path(name: str) -> bench.BenchPath:
    return next(p for p in bench.PATHS if p.name == name)


# --- the loops, in one process ---------------------------------------------------------------


def test_consume_each_counts_an_in_order_stream() -> None:
    tally = bench.consume_each(_feed(list(range(10))).__next__, Plan(64, 10), _FreeGate())
    assert (tally.received, tally.first_receipt) == (10, 1)
    assert tally.elapsed_ns >= 0


@pytest.mark.parametrize(
    "seqs",
    [
        [0, 1, 3, 4],  # a gap
        [0, 2, 1, 3],  # swapped
        [0, 1, 1, 2],  # a duplicate
        [1, 2, 3, 4],  # the first one lost
    ],
)
def test_consume_each_fails_on_a_wrong_sequence(seqs: list[int]) -> None:
    with pytest.raises(BenchFailure, match="out of order"):
        bench.consume_each(_feed(seqs).__next__, Plan(64, 4), _FreeGate())


def test_consume_each_fails_on_a_wrong_size() -> None:
    with pytest.raises(BenchFailure, match="bytes, expected 64"):
        bench.consume_each(_feed([0, 1], size=32).__next__, Plan(64, 2), _FreeGate())


def test_consume_batches_checks_every_message() -> None:
    good = _messages(list(range(10)))
    chunks = iter([good[0:4], good[4:7], good[7:10]])
    tally = bench.consume_batches(lambda n: next(chunks), Plan(64, 10, batch=4), _FreeGate())
    assert (tally.received, tally.first_receipt) == (10, 4)

    bad = _messages([0, 1, 2, 3, 4, 6, 5, 7])
    chunks = iter([bad[0:4], bad[4:8]])
    with pytest.raises(BenchFailure, match=r"#5 carries sequence 6, expected 5"):
        bench.consume_batches(lambda n: next(chunks), Plan(64, 8, batch=4), _FreeGate())


def test_consume_arrays_checks_every_record() -> None:
    dtype = bench.record_dtype(64)
    assert dtype.itemsize == 64
    records = np.zeros(12, dtype=dtype)
    records["seq"] = np.arange(12)
    chunks = iter([records[0:8], records[8:12]])
    tally = bench.consume_arrays(lambda dt, n: next(chunks), Plan(64, 12, batch=8), _FreeGate())
    assert (tally.received, tally.first_receipt) == (12, 8)

    records["seq"][9] = 99
    chunks = iter([records[0:8], records[8:12]])
    with pytest.raises(BenchFailure, match=r"#9 carries sequence 99, expected 9"):
        bench.consume_arrays(lambda dt, n: next(chunks), Plan(64, 12, batch=8), _FreeGate())


def test_percentiles_are_nearest_rank() -> None:
    stats = bench._round_trip_stats([i * 1000 for i in range(1, 101)])  # 1..100 us
    assert (stats["median_us"], stats["p99_us"], stats["max_us"]) == (50.0, 99.0, 100.0)
    assert bench._percentile(list(range(1, 20_001)), 99.9) == 19_980


def test_only_selects_by_glob_or_substring_and_keeps_the_baselines() -> None:
    names = [p.name for p in bench.select_paths(["ours/*"])]
    assert names[0] == bench.BASELINE and bench.RT_BASELINE in names
    assert {"ours/per-message", "ours/bytes-batch", "ours/numpy-batch"} <= set(names)
    assert [p.name for p in bench.select_paths(["numpy"], baseline=False)] == ["ours/numpy-batch"]
    with pytest.raises(CliError):
        bench.select_paths(["no-such-path"])


# --- through real processes ------------------------------------------------------------------


@pytest.mark.multiprocess
@pytest.mark.timeout(30)
def test_a_peer_runs_and_is_counted() -> None:
    run = bench.run_path(_path("peer/mp-pipe"), Plan(64, 2000), timeout_s=20)
    result = run.result
    assert isinstance(result, Tally)
    assert run.sent.count == 2000
    assert (result.received, result.first_receipt) == (2000, 1)
    assert result.rate > 0


def _skipping_producer(ends: object, plan: Plan, gate: Gate) -> Sent:
    writer = ends[1]  # type: ignore[index]
    seqs = [s for s in range(plan.count + 1) if s != plan.count // 2]  # one gap, same count
    gate.start()
    for message in _messages(seqs, plan.size):
        writer.send_bytes(message)
    gate.hold()
    return Sent(plan.count, 0, 1)


@pytest.mark.multiprocess
@pytest.mark.timeout(30)
def test_an_out_of_order_stream_fails_the_run() -> None:
    broken = dataclasses.replace(_path("peer/mp-pipe"), helper=_skipping_producer)
    with pytest.raises(BenchFailure, match=r"consumer failed: .*out of order.*#500"):
        bench.run_path(broken, Plan(64, 1000), timeout_s=20)


def _silent_producer(ends: object, plan: Plan, gate: Gate) -> Sent:
    gate.start()
    gate.hold()
    return Sent(plan.count, 0, 1)


@pytest.mark.multiprocess
@pytest.mark.timeout(30)
def test_a_hung_run_fails_within_its_timeout() -> None:
    broken = dataclasses.replace(_path("peer/mp-pipe"), helper=_silent_producer)
    with pytest.raises(BenchFailure, match=r"did not answer within 0\.5 s"):
        bench.run_path(broken, Plan(64, 10), timeout_s=0.5)


@pytest.mark.multiprocess
@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["ours/per-message", "ours/bytes-batch", "ours/numpy-batch"])
def test_our_lane_paths_run_and_are_counted(name: str) -> None:
    path = _path(name)
    count = 20 * path.batch if path.batch > 1 else 5000
    result = bench.run_path(path, Plan(64, count, batch=path.batch), timeout_s=20).result
    assert isinstance(result, Tally)
    assert result.received == count
    assert set(result.info) == {"producer_full_waits", "consumer_empty_waits"}


@pytest.mark.multiprocess
@pytest.mark.timeout(30)
def test_our_round_trip_runs() -> None:
    run = bench.run_path(_path("ours/round-trip"), Plan(64, 500, warmup=50), timeout_s=20)
    result = run.result
    assert isinstance(result, RoundTrips)
    assert len(result.samples_ns) == 500 and min(result.samples_ns) > 0


@pytest.mark.multiprocess
@pytest.mark.timeout(30)
def test_the_cli_prints_json_with_the_machine_and_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    saved = tmp_path / "bench.json"
    args = argparse.Namespace(
        json=True,
        quick=True,
        only=["peer/mp-pipe"],
        no_baseline=True,
        sizes="64",
        repeat=1,
        timeout=20.0,
        save=str(saved),
        list=False,
    )
    assert bench.run_cli(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert json.loads(saved.read_text()) == doc
    assert doc["command"] == (
        "byteor bench lanes --quick --json --only peer/mp-pipe --no-baseline"
        f" --save {saved} --sizes 64 --repeat 1"
    )
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["python"]
    by_path = {r["path"]: r for r in doc["results"]}
    assert set(by_path) == {"peer/mp-pipe", "peer/mp-pipe-round-trip"}
    assert all(r["status"] == "ok" for r in doc["results"])
    assert by_path["peer/mp-pipe"]["median_rate"] > 0
    assert by_path["peer/mp-pipe-round-trip"]["p99_us"] > 0
    assert doc["failures"] == []


def test_a_peer_that_does_not_import_is_missing_with_the_pip_hint() -> None:
    absent = dataclasses.replace(
        _path(bench.BASELINE), requires=("byteor_no_such_module",), hint="pip install it"
    )
    said: list[str] = []
    (row,) = bench.run_benchmark([absent], sizes=(64,), repeat=1, progress=said.append)
    assert (row.status, row.runs) == ("missing", [])
    assert "byteor_no_such_module" in row.detail and row.detail.endswith("pip install it")
    assert said and "missing" in said[0]
    (doc,) = bench._summarise([row])
    assert doc["status"] == "missing" and "median_rate" not in doc
