"""``byteor bench pipeline``: the pipeline's functions agree, every target's output is checked,
and the JSON document has the table's numbers. Tiny counts: this proves the harness, not speed."""

from __future__ import annotations

import argparse
import json
import pathlib

import pytest

from byteor.bench import pipeline as bench
from byteor.bench.lanes import BenchFailure
from byteor.exec import ListSink, StageContext, run_sp
from byteor.exec._ops import canonical_json
from byteor.kernel import StageError

# -- the pipeline, in this process ----------------------------------------------------------------


def test_batch_functions_give_the_per_record_bytes() -> None:
    records = bench.make_records(300, seed=3)
    assert records[0].startswith(b'{"i": 0, "region": ')
    decoded = bench.decode_many(records)
    assert decoded == [bench.decode_record(r) for r in records]
    scored = bench.transform_many(decoded)
    assert scored == [bench.transform_record(r) for r in decoded]
    encoded = bench.encode_many(scored)
    assert encoded == [bench.encode_record(r) for r in scored]
    for raw, out in zip(records, encoded, strict=True):
        doc = json.loads(raw)
        doc["score"] = (doc["v"] % 10007) * (doc["region"] + 1)
        assert out == canonical_json(doc)  # the encoder writes canonical JSON
    # framed: 256 lines a message, the same bytes once the frames are joined
    framed = [
        bench.encode_framed(bench.transform_framed(bench.decode_framed(m)))
        for m in bench.frame_lines(records, 256)
    ]
    assert len(framed) == 2 and b"\n".join(framed) == b"\n".join(encoded)
    with pytest.raises(ValueError, match="more than one JSON value"):
        bench.decode_framed(b'{"i": 1, "region": 2, "v": 3}, {"i": 2, "region": 2, "v": 3}')


@pytest.mark.parametrize("size", [3, 40])  # the per-record path and the batch path
def test_a_bad_record_is_an_error_of_its_own(size: int) -> None:
    records = bench.make_records(size)
    bad = size // 2
    records[bad] = b'{"i": 1.5, "region": 2, "v": 3}'  # floats are refused
    stage = bench.Decode(StageContext("decode", target="lane_graph", outputs=("x",)))
    result = stage.step_batch(records)
    assert [f.index for f in result.failures] == [bad]
    assert result.failures[0].error.code == "bench.bad_record"
    assert result.ports[0] == [bench.decode_record(r) for i, r in enumerate(records) if i != bad]
    assert isinstance(stage.step(b"[1, 2]"), StageError)
    with pytest.raises(ValueError, match="24 bytes"):
        bench.transform_many([b"x" * 20, b"y" * 28])


@pytest.mark.parametrize("framed", [False, True])
def test_every_spec_runs_the_pipeline_in_this_process(framed: bool) -> None:
    records = bench.make_records(600)
    want = bench.expected_output(records, [600])[600]
    items = bench.frame_lines(records, 256) if framed else records
    for path in bench.PATHS[:-1]:
        spec = bench.pipeline_spec(path, framed)
        assert spec.target == ("single_ring" if path.kind == "ring" else "lane_graph")
        sink = ListSink()
        report = run_sp(spec, sources={"src": items}, sinks={"out": sink}, batch=64)
        assert report.output_sha256 == want and len(sink.records) == len(items)


# -- the harness, through real processes ----------------------------------------------------------


def test_a_wrong_output_fails_the_run() -> None:
    records = bench.make_records(1024)
    ring = bench.PATHS[0]
    good = bench.expected_output(records, [1024])[1024]
    tally = bench.run_path(ring, bench.MODES[1], records, good, timeout_s=60)
    assert tally.received == 1024 and tally.sha256 == good
    with pytest.raises(BenchFailure, match="differs from the expected"):
        bench.run_path(ring, bench.MODES[1], records, "0" * 64, timeout_s=60)
    with pytest.raises(BenchFailure, match="hand-written pipeline stopped"):
        bench.run_path(bench.PATHS[-1], bench.MODES[0], [b"not json"] * 600, good, timeout_s=60)


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_every_target_once_with_json_and_save(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    save = tmp_path / "pipeline.json"
    args = argparse.Namespace(
        json=True, quick=False, only=None, records=1024, repeat=1, timeout=60.0, save=str(save)
    )
    assert bench.run_cli(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == json.loads(save.read_text())
    assert doc["command"] == f"byteor bench pipeline --json --records 1024 --repeat 1 --save {save}"
    results = doc["results"]
    assert [(r["path"], r["mode"]) for r in results] == [
        (p.name, m.name) for m in bench.MODES for p in bench.PATHS
    ]
    for r in results:
        assert r["status"] == "ok", r
        assert r["count"] == (512 if r["mode"] == "per-message" else 1024)
        [run] = r["runs"]
        assert run["received"] == r["count"] and run["rate"] > 0
        assert r["median_rate"] == r["best_rate"] == run["rate"]
        assert r["ratio_vs_queue_same_mode"] > 0 and r["ratio_vs_queue_per_message"] > 0
    base = [r for r in results if r["path"] == bench.BASELINE]
    assert [r["ratio_vs_queue_same_mode"] for r in base] == [1.0, 1.0, 1.0]
    v = doc["verdicts"]
    assert v["cores"] >= 1 and set(v["picks"]) == {"per-message", "batched", "framed"}
    assert set(v["targets"]) == {"batched", "framed"}
    for t in v["targets"].values():
        assert t["rate"]["want"] == 1_000_000 and t["rate"]["got"] == t["median_rate"]
        assert set(t) >= {"vs_queue_same_mode", "vs_queue_per_message", "best"}
    assert doc["failures"] == []
