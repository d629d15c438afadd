"""``byteor run --executor``: sp and mp give the same bytes; auto picks mp for placed stages;
a worker that dies exits 1 naming its stage."""

from __future__ import annotations

import glob
import hashlib
import json
import multiprocessing
import pathlib

import pytest

from byteor.cli import main

EXEC_TESTS = pathlib.Path(__file__).resolve().parents[1] / "exec"

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def _test_ops_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXEC_TESTS))


SPEC = """\
byteor.spec = 1
pipeline.name = placed
pipeline.target = lane_graph
lane.raw.kind = events
lane.raw.capacity = 32
lane.raw.slot_bytes = 64
lane.mid.kind = events
lane.mid.capacity = 32
lane.mid.slot_bytes = 64
lane.done.kind = events
lane.done.capacity = 32
lane.done.slot_bytes = 64
source.gen.adapter = generator
source.gen.out = raw
source.gen.param.count = {count}
source.gen.param.template = r{{i}}-{{rand}}
stage.up.op = byteor_exec_testops:{up_op}
stage.up.in = raw
stage.up.out = mid
stage.up.process = {up_process}
stage.twice.op = byteor_exec_testops:{twice_op}
stage.twice.in = mid
stage.twice.out = done
stage.twice.process = w2
{extra}
sink.out.adapter = file
sink.out.in = done
sink.out.param.path = {out}
"""


def spec_file(
    tmp_path: pathlib.Path,
    up_process: str = "w1",
    twice_op: str = "explode",
    extra: str = "",
    up_op: str = "upper",
    count: int = 3000,
) -> tuple[str, pathlib.Path]:
    out = tmp_path / "out.txt"
    path = tmp_path / "p.spec"
    path.write_text(
        SPEC.format(
            up_process=up_process,
            twice_op=twice_op,
            extra=extra,
            out=out,
            up_op=up_op,
            count=count,
        )
    )
    return str(path), out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_sp_and_mp_write_the_same_bytes_and_auto_picks_mp(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path, out = spec_file(tmp_path)
    docs = {}
    for executor in ("sp", "mp", "auto"):
        code, doc, _ = run(capsys, "run", path, "--json", "--executor", executor)
        assert code == 0 and doc["records_out"] == 6000
        assert doc["output_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        docs[executor] = doc
    assert docs["sp"]["executor"] == "lane_graph_sp"
    assert docs["mp"]["executor"] == docs["auto"]["executor"] == "lane_graph_mp"
    assert len({d["output_sha256"] for d in docs.values()}) == 1
    assert docs["mp"]["stages"] == docs["sp"]["stages"]
    # every stage in main: auto stays in this process
    path, _ = spec_file(tmp_path, up_process="main", extra="")
    pathlib.Path(path).write_text(pathlib.Path(path).read_text().replace("= w2", "= main"))
    code, doc, _ = run(capsys, "run", path, "--json")
    assert code == 0 and doc["executor"] == "lane_graph_sp"
    assert multiprocessing.active_children() == []


def test_sigint_drains_every_process_and_exits_0(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    """The supervisor's own stage signals it at record 100: sources stop, the workers drain."""
    path, out = spec_file(
        tmp_path,
        up_process="main",
        up_op="SignalAt",
        count=1_000_000,
        extra="stage.up.param.at = 100\nstage.up.param.signal = int",
    )
    code, doc, _ = run(capsys, "run", path, "--json", "--executor", "mp", "--batch", "8")
    assert code == 0 and doc["stopped"] is True and doc["executor"] == "lane_graph_mp"
    admitted = doc["records_in"]
    assert isinstance(admitted, int) and 100 < admitted < 1_000_000
    assert doc["records_out"] == 2 * admitted
    assert len(out.read_bytes().splitlines()) == 2 * admitted
    assert multiprocessing.active_children() == []


def test_a_dead_worker_exits_1_naming_its_stage(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path, _ = spec_file(tmp_path, twice_op="KillAt", extra="stage.twice.param.at = 100")
    code, doc, err = run(capsys, "run", path, "--json")
    assert code == 1
    assert "stage 'twice' died: process 'w2'" in err and "SIGKILL" in err
    assert doc["exit_code"] == 1 and doc["executor"] == "lane_graph_mp"
    assert multiprocessing.active_children() == []
    assert glob.glob("/dev/shm/byteor-mp*-placed.*") == []


PLAN = """\
name = "ringed"

[sources.gen]
adapter = "generator"
message_bytes = 96
params = {{ count = "2000", seed = "5", keys = "4", template = '{{"id": {{i}}, "r": {{key}}}}' }}

[stages.keep]
op = "filter"
inputs = ["gen"]
params = {{ contains = '"r": 2' }}

[stages.canon]
op = "json_decode"
inputs = ["keep"]

[sinks.out]
adapter = "file"
inputs = ["canon"]
params = {{ path = "{out}" }}
"""


def test_ring_runs_a_single_ring_plan_with_the_same_bytes(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "ring.ndjson"
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(out=out))
    hashes = {}
    for executor in ("sp", "ring", "auto"):
        argv = ["run", str(plan), "--json", "--target", "single_ring", "--executor", executor]
        code, doc, _ = run(capsys, *argv)
        assert code == 0 and doc["target"] == "single_ring" and 0 < doc["records_out"] < 2000
        assert doc["output_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        hashes[executor] = doc["output_sha256"]
        # auto: a single_ring spec runs on the ring, the fastest target for a chain
        assert doc["executor"] == ("lane_graph_sp" if executor == "sp" else "single_ring")
    assert hashes["sp"] == hashes["ring"] == hashes["auto"]
    code, doc, err = run(
        capsys, "run", str(plan), "--json", "--executor", "ring", "--target", "lane_graph"
    )
    assert code == 2 and "--executor ring runs single_ring specs" in err
