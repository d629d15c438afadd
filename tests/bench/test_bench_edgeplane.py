"""``byteor bench edgeplane`` checks what it times: a broken run fails instead of looking fast.

The check is fed in one process first (a record missing, duplicated, unknown or not
transformed each fails); then ``--quick`` with tiny counts goes through the real servers
(Tansu, NATS, Redis, PostgreSQL) for every case, and a stage broken on purpose (it drops
one record) fails the run of ours and of the hand loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import uuid

import pytest

from byteor.bench import edgeplane as bench
from byteor.bench.lanes import BenchFailure
from byteor.cli import main

pytestmark = pytest.mark.multiprocess

HERE = pathlib.Path(__file__).resolve().parent


def drop_seven(record: bytes) -> bytes | None:
    """A stage broken on purpose (imported by the runs as ``test_bench_edgeplane``): the
    record of sequence 7 never reaches the destination."""
    if json.loads(record)["seq"] == 7:
        return None
    return bench.transform(record)


def _landed(seqs: list[int], transformed: bool = True) -> bench.Landed:
    landed = bench.Landed()
    for seq in seqs:
        rec = bench.make_record(seq, 1)
        landed.add(bench.transform(rec) if transformed else rec, 1.0)
    return landed


# --- the check, in one process ----------------------------------------------------------------


def test_records_are_about_the_size_asked_and_the_transform_adds_the_price() -> None:
    rec = bench.make_record(12, 1_700_000_000_000_000_000)
    assert len(rec) == bench.SIZE
    doc = json.loads(bench.transform(rec))
    assert doc["seq"] == 12 and doc["t"] == 1_700_000_000_000_000_000
    assert doc["total_cents"] == bench.PRICES[doc["sku"]] * doc["qty"]
    bench.check_landed(_landed([2, 0, 1]), 3, "here")


@pytest.mark.parametrize(
    ("seqs", "transformed", "match"),
    [
        ([0, 2], True, r"holds 2 records, 3 expected: 1 missing, 0 duplicated, 0 unknown"),
        ([0, 1, 1, 2], True, r"holds 4 records, 3 expected: 0 missing, 1 duplicated"),
        ([0, 1, 5], True, r"1 missing, 0 duplicated, 1 unknown"),
        ([0, 1, 2], False, r"3 records were not transformed"),
    ],
)
def test_the_check_fails_on_a_wrong_destination(
    seqs: list[int], transformed: bool, match: str
) -> None:
    with pytest.raises(BenchFailure, match=match):
        bench.check_landed(_landed(seqs, transformed), 3, "here")


# --- real runs ----------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_quick_runs_every_case_checked(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save = tmp_path / "ep.json"
    code = main(
        [
            "bench",
            "edgeplane",
            "--quick",
            "--records",
            "2000",
            "--latency-seconds",
            "1",
            "--latency-rate",
            "500",
            "--hold-seconds",
            "2",
            "--rss-records",
            "5000",
            "--json",
            "--save",
            str(save),
        ]
    )
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert code == 0, doc["failures"]
    assert json.loads(save.read_text())["results"] == doc["results"]
    by_case = {r["case"]: r for r in doc["results"]}
    assert set(by_case) == set(bench.CASES)
    for name in ("kafka_nats", "redis_pg"):
        r = by_case[name]
        assert r["status"] == "ok" and r["ratio"] > 0
        assert [len(r["runs"][s]) for s in ("ours", "hand")] == [1, 1]
        assert r["runs"]["ours"][0]["summary"]["records_out"] >= 2000
        for side in ("ours", "hand"):
            lat = r["latency"][side]
            assert lat["records"] == 500
            assert 0 < lat["latency_ms"]["p50"] <= lat["latency_ms"]["max"]
    rss = by_case["rss_sink_stopped"]
    assert rss["status"] == "ok" and len(rss["samples"]) == 2
    assert 0 < rss["peak_pss_mib"] <= rss["peak_rss_mib"]
    assert 0 < rss["peak_pending"] < 5000  # the lanes hold far less than the stream


@pytest.mark.timeout(120)
@pytest.mark.parametrize("side", ["ours", "hand"])
def test_a_stage_that_drops_a_record_fails_the_run(
    side: bench.Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(HERE), path) if p))

    async def once() -> None:
        pipe = bench.RedisPg()
        try:
            await bench.throughput_run(
                pipe, side, 1000, "test_bench_edgeplane:drop_seven", 30.0, uuid.uuid4().hex[:8]
            )
        finally:
            await pipe.close()

    with pytest.raises(BenchFailure, match=r"holds 999 records, 1000 expected: 1 missing"):
        asyncio.run(once())
