"""``byteor run``, in-process: outputs, the --json summary, exit codes and signals."""

from __future__ import annotations

import hashlib
import json
import pathlib
import signal
import sys

import pytest

from byteor.cli import main

EXEC_TESTS = pathlib.Path(__file__).resolve().parents[1] / "exec"


@pytest.fixture(autouse=True)
def _test_ops_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # The user ops of the executor tests (byteor_exec_testops) live in tests/exec.
    monkeypatch.syspath_prepend(str(EXEC_TESTS))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


SPEC = """\
byteor.spec = 1
pipeline.name = demo
pipeline.target = lane_graph
lane.raw.kind = events
lane.raw.capacity = 16
lane.raw.slot_bytes = 64
lane.done.kind = events
lane.done.capacity = 16
lane.done.slot_bytes = 64
source.gen.adapter = generator
source.gen.out = raw
source.gen.param.count = {count}
source.gen.param.template = r{{i}}
stage.up.op = {op}
stage.up.in = raw
stage.up.out = done
{stage_params}
sink.out.adapter = {sink}
sink.out.in = done
{sink_params}
"""


def spec_file(
    tmp_path: pathlib.Path,
    *,
    count: int = 5,
    op: str = "byteor_exec_testops:upper",
    sink: str = "file",
    stage_params: str = "",
) -> tuple[str, pathlib.Path]:
    out = tmp_path / "out.txt"
    sink_params = f"sink.out.param.path = {out}" if sink == "file" else ""
    path = tmp_path / "p.spec"
    path.write_text(
        SPEC.format(
            count=count, op=op, sink=sink, stage_params=stage_params, sink_params=sink_params
        )
    )
    return str(path), out


def test_run_writes_the_output_and_a_json_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path, out = spec_file(tmp_path)
    code, stdout, _ = run(capsys, "run", path, "--json")
    assert code == 0
    assert out.read_bytes() == b"R0\nR1\nR2\nR3\nR4\n"
    doc = json.loads(stdout)
    assert isinstance(doc.pop("elapsed_s"), float)
    busy = doc.pop("busy_s")  # seconds in each node's work: timing, not compared
    assert sorted(busy) == ["gen", "out", "up"] and all(s >= 0 for s in busy.values())
    assert doc["spec_hash"].startswith("sha256:")
    del doc["spec_hash"]
    assert doc == {
        "duplicates": 0,
        "redelivered": 0,
        "restarts": 0,
        "executor": "lane_graph_sp",
        "file": path,
        "kind": "spec",
        "output_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "pipeline": "demo",
        "records_in": 5,
        "records_out": 5,
        "sinks": {
            "out": {
                "adapter": "file",
                "bytes": 15,
                "kind": "sink",
                "records_in": 5,
                "records_out": 5,
                "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            }
        },
        "sources": {
            "gen": {"adapter": "generator", "kind": "source", "records_in": 5, "records_out": 5}
        },
        "stages": {
            "up": {
                "error_codes": {},
                "errors": 0,
                "kind": "stage",
                "op": "byteor_exec_testops:upper",
                "records_in": 5,
                "records_out": 5,
                "routed": 0,
                "skipped": 0,
            }
        },
        "stopped": False,
        "target": "lane_graph",
        "warnings": 0,
    }


def test_stdout_sink_keeps_stdout_for_records(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path, _ = spec_file(tmp_path, sink="stdout", op="json_encode")
    code, stdout, stderr = run(capsys, "run", path, "--json")
    assert code == 0
    assert stdout == '"r0"\n"r1"\n"r2"\n"r3"\n"r4"\n'
    doc = json.loads(stderr)
    assert doc["output_sha256"] == hashlib.sha256(stdout.encode()).hexdigest()
    assert doc["warnings"] == 0  # json_encode is an executor built-in: no SP313
    code, stdout, stderr = run(capsys, "run", path)
    assert code == 0 and stdout == '"r0"\n"r1"\n"r2"\n"r3"\n"r4"\n'
    assert stderr.startswith("byteor run: demo (lane_graph, lane_graph_sp): 5 in, 5 out in ")
    assert "  stage  up               json_encode          in         5  out         5" in stderr


def test_the_same_spec_gives_the_same_hash_for_any_batch(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path, _ = spec_file(tmp_path, count=500, op="byteor_exec_testops:explode")
    hashes = set()
    for batch in ("1", "7", "64"):
        code, stdout, _ = run(capsys, "run", path, "--json", "--batch", batch)
        assert code == 0
        doc = json.loads(stdout)
        assert doc["records_out"] == 1000
        hashes.add(doc["output_sha256"])
    assert len(hashes) == 1


def test_a_plan_is_lowered_and_run(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "o.txt"
    plan = tmp_path / "p.toml"
    plan.write_text(
        f"""name = "chain"
[sources.gen]
adapter = "generator"
params = {{ count = 3, template = "v{{i}}" }}
[stages.up]
op = "byteor_exec_testops:upper"
inputs = ["gen"]
[stages.wrap]
op = "json_encode"
inputs = ["up"]
[sinks.out]
adapter = "file"
inputs = ["wrap"]
params = {{ path = "{out}" }}
"""
    )
    for target in ("auto", "lane_graph"):
        code, stdout, _ = run(capsys, "run", str(plan), "--json", "--target", target)
        assert code == 0
        doc = json.loads(stdout)
        assert doc["kind"] == "plan"
        assert doc["target"] == ("single_ring" if target == "auto" else "lane_graph")
        assert out.read_bytes() == b'"V0"\n"V1"\n"V2"\n'
        assert list(doc["stages"]) == ["up", "wrap"]


def test_invalid_spec_exits_1_with_findings(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path, _ = spec_file(tmp_path)
    text = pathlib.Path(path).read_text()
    pathlib.Path(path).write_text(text.replace("raw.capacity = 16", "raw.capacity = 15"))
    code, stdout, stderr = run(capsys, "run", path, "--json")
    assert code == 1
    doc = json.loads(stdout)
    assert doc["error"] == "invalid" and [f["code"] for f in doc["findings"]] == ["SP210"]
    assert ":5: error SP210 [lane.raw.capacity]" in stderr


def test_unreadable_and_unsupported_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    code, _, stderr = run(capsys, "run", str(tmp_path / "missing.spec"))
    assert code == 2 and "no such file" in stderr
    path, _ = spec_file(tmp_path, op="no_such_mod_q:f")
    code, stdout, stderr = run(capsys, "run", path, "--json")
    assert code == 2 and "cannot import module 'no_such_mod_q'" in stderr
    assert json.loads(stdout)["exit_code"] == 2
    path, _ = spec_file(tmp_path, sink="nats")
    code, _, stderr = run(capsys, "run", path)
    assert code == 2 and "adapter 'nats' cannot be a sink of this run" in stderr


def test_a_failing_stage_exits_1_with_what_ran(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path, _ = spec_file(tmp_path, count=20, op="byteor_exec_testops:error_on_x")
    text = pathlib.Path(path).read_text().replace("r{i}", "{i}x")
    pathlib.Path(path).write_text(text)
    code, stdout, stderr = run(capsys, "run", path, "--json")
    assert code == 1
    assert "stage 'up' failed on its record #0 (test.x): x found" in stderr
    doc = json.loads(stdout)
    assert doc["exit_code"] == 1 and doc["stages"]["up"]["errors"] == 1
    path, out = spec_file(
        tmp_path,
        count=20,
        op="byteor_exec_testops:error_on_x",
        stage_params="stage.up.param.on_error = skip",
    )
    text = pathlib.Path(path).read_text().replace("r{i}", "{i}x")
    pathlib.Path(path).write_text(text.replace("count = 20", "count = 3"))
    code, stdout, _ = run(capsys, "run", path, "--json")
    doc = json.loads(stdout)
    assert code == 0 and doc["stages"]["up"]["skipped"] == 3 and doc["records_out"] == 0
    assert out.read_bytes() == b""


# -- signals ---------------------------------------------------------------------------------------


def _signal_spec(tmp_path: pathlib.Path, sig: str, times: int) -> tuple[str, pathlib.Path]:
    return spec_file(
        tmp_path,
        count=1_000_000,
        op="byteor_exec_testops:SignalAt",
        stage_params=(
            f"stage.up.param.at = 100\nstage.up.param.signal = {sig}\n"
            f"stage.up.param.times = {times}"
        ),
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("sig", ["int", "term"])
def test_a_signal_drains_in_flight_records_and_exits_0(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, sig: str
) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    path, out = _signal_spec(tmp_path, sig, 1)
    code, stdout, _ = run(capsys, "run", path, "--json", "--batch", "8")
    assert code == 0
    doc = json.loads(stdout)
    assert doc["stopped"] is True
    admitted = doc["records_in"]
    assert 100 < admitted < 1_000_000
    # Everything admitted reached the file, in order.
    assert doc["records_out"] == admitted
    assert out.read_bytes() == b"".join(b"r%d\n" % i for i in range(admitted))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.timeout(30)
def test_a_second_signal_exits_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path, _ = _signal_spec(tmp_path, "int", 2)
    code, _, stderr = run(capsys, "run", path)
    assert code == 128 + signal.SIGINT
    assert "stopped at once by a second signal 2" in stderr
    assert sys.getrecursionlimit() > 0  # the interpreter is fine: the run cleaned up
