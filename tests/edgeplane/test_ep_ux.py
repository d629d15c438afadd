"""``edgeplane``'s user experience: ops beside the plan, one clear failure line, the restart
budget in a sliding window.

* A plan naming ``mymod:fn`` from a file next to it runs in a multi-process run with no
  ``PYTHONPATH`` (the plan's folder, and ``--path`` / ``EDGEPLANE_PATH`` folders, go on
  ``sys.path`` of the supervisor and every child).
* A run that cannot reach its Kafka or NATS server ends with exactly one line on stderr, ours,
  naming the adapter and the address: the client libraries' own log records stay quiet.
* ``--restart-window`` counts restarts within the last window only, with an injected clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from byteor_edgeplane_testkit import HERE, ROOT, fresh_run

from byteor.edgeplane._config import extend_import_path, resolve_options
from byteor.edgeplane._errors import OptionError, RunError
from byteor.edgeplane._status import StatusSegment
from byteor.edgeplane._supervisor import DataPlane, PlaneConfig, RestartBudget, _Child
from byteor.edgeplane.cli import main
from byteor.exec import StopToken
from byteor.spec import PipelineSpecV1, parse_spec

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def run() -> Iterator[str]:
    yield from fresh_run("ux")


def _edgeplane(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m byteor.edgeplane ARGS`` with only ByteOr itself on ``PYTHONPATH``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPLANE_")}
    full["PYTHONPATH"] = str(ROOT)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "byteor.edgeplane", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full,
        timeout=timeout,
        check=False,
    )


# -- module:function beside the plan -----------------------------------------------------------


def _plan_with_local_ops(tmp_path: Path, run: str, n: int) -> tuple[Path, Path, Path]:
    """plan/pipeline.toml: generator -> mymod:shout (own process) -> file. ``mymod`` sits
    beside the plan and imports ``helper`` (beside it too) and ``epx_extra`` (in lib/) only
    when a record arrives: in the stage worker, never in the supervisor."""
    plan_dir, lib = tmp_path / "plan", tmp_path / "lib"
    plan_dir.mkdir()
    lib.mkdir()
    (plan_dir / "mymod.py").write_text(
        "def shout(record):\n"
        "    import epx_extra\n"
        "    import helper\n"
        "    return epx_extra.mark(helper.upper(record))\n"
    )
    (plan_dir / "helper.py").write_text("def upper(record):\n    return record.upper()\n")
    (lib / "epx_extra.py").write_text("def mark(record):\n    return record + b'!'\n")
    out = tmp_path / "out.txt"
    plan = plan_dir / "pipeline.toml"
    plan.write_text(
        f'name = "{run}"\n\n'
        "[sources.gen]\n"
        'adapter = "generator"\n'
        f'params = {{ count = "{n}", template = "r{{i}}" }}\n\n'
        "[stages.shout]\n"
        'op = "mymod:shout"\n'
        'inputs = ["gen"]\n'
        'process = "w1"\n\n'
        "[sinks.out]\n"
        'adapter = "file"\n'
        'inputs = ["shout"]\n'
        f"params = {{ path = {json.dumps(str(out))} }}\n"
    )
    return plan, lib, out


def test_ops_beside_the_plan_run_in_a_multi_process_run(tmp_path: Path, run: str) -> None:
    n = 500
    plan, lib, out = _plan_with_local_ops(tmp_path, run, n)
    proc = _edgeplane(
        "run", str(plan), "--metrics-addr", "off", "--json", "--log-level", "warning",
        cwd=tmp_path, env={"EDGEPLANE_PATH": str(lib)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    summary = json.loads(proc.stdout)
    assert summary["records_in"] == summary["records_out"] == summary["acked"] == n
    assert summary["stages"]["shout"]["process"] == "w1"
    assert out.read_text().splitlines() == [f"R{i}!" for i in range(n)]


def test_without_the_path_the_child_fails_naming_the_module(tmp_path: Path, run: str) -> None:
    plan, lib, _ = _plan_with_local_ops(tmp_path, run, 10)
    proc = _edgeplane(
        "run", str(plan), "--metrics-addr", "off", "--log-level", "error", cwd=tmp_path
    )
    assert proc.returncode == 1
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("edgeplane: error: stages:w1 failed: StageFailed: stage 'shout'")
    assert "No module named 'epx_extra'" in line
    # --path (the flag) finds it; validate and describe take it too.
    assert _edgeplane("validate", str(plan), "--path", str(lib), cwd=tmp_path).returncode == 0
    proc = _edgeplane("run", str(plan), "--metrics-addr", "off", "--path", str(lib), "--json",
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["records_out"] == 10


def test_import_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = [str(ROOT), str(HERE)]
    monkeypatch.setattr(sys, "path", list(base))
    a, b, own = tmp_path / "a", tmp_path / "b", tmp_path / "own"
    for d in (a, b, own):
        d.mkdir()
    added = extend_import_path(str(own / "p.toml"), [str(a), str(b), str(HERE)])
    assert added == [str(a), str(b), str(own)]
    assert sys.path == [str(a), str(b), *base, str(own)]  # own folder last: hides nothing
    assert extend_import_path(str(own / "p.toml"), [str(a)]) == []  # no duplicates


def test_path_option_adds_up_and_refuses_a_missing_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    env = {"EDGEPLANE_PATH": f"{b}{os.pathsep}{a}"}
    assert resolve_options({"path": [str(a)]}, env).path == (str(a), str(b))
    with pytest.raises(OptionError, match=r"EDGEPLANE_PATH: '.*nope' is not a folder"):
        resolve_options({}, {"EDGEPLANE_PATH": str(tmp_path / "nope")})
    with pytest.raises(OptionError, match=r"--path: '.*nope' is not a folder"):
        resolve_options({"path": [str(tmp_path / "nope")]}, {})


def test_validate_refuses_a_missing_path_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "p.toml"
    plan.write_text('name = "p"\n[sources.g]\nadapter = "generator"\n'
                    '[sinks.o]\nadapter = "stdout"\ninputs = ["g"]\n')  # fmt: skip
    assert main(["validate", str(plan), "--path", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeplane: error: --path: ") and "is not a folder" in err


# -- one clear line ------------------------------------------------------------------------------


def _spec(path: Path, run: str, source: str, sink: str) -> Path:
    path.write_text(
        f"byteor.spec = 1\npipeline.name = {run}\npipeline.target = lane_graph\n"
        "lane.a.kind = events\nlane.a.capacity = 64\nlane.a.slot_bytes = 64\n"
        f"{source}\nsource.s.out = a\n{sink}\nsink.k.in = a\n"
    )
    return path


UNREACHABLE = {
    # aiokafka logs the refused connection at ERROR itself; the adapter raises it as ours.
    "kafka": (
        "source.s.adapter = kafka\nsource.s.param.bootstrap_servers = 127.0.0.1:1\n"
        "source.s.param.topic = t",
        "sink.k.adapter = file\nsink.k.param.path = out.txt",
        "edge-in:s failed: AdapterUnreachable: kafka: cannot reach 127.0.0.1:1",
    ),
    # nats-py reports each failed attempt to the error callback before connect gives up.
    "nats": (
        "source.s.adapter = generator\nsource.s.param.count = 10",
        "sink.k.adapter = nats\nsink.k.param.servers = nats://127.0.0.1:1\n"
        "sink.k.param.subject = x",
        "edge-out:k failed: AdapterUnreachable: nats: cannot reach 127.0.0.1:1",
    ),
}


@pytest.mark.parametrize("adapter", sorted(UNREACHABLE))
def test_an_unreachable_server_is_one_line_of_ours(tmp_path: Path, run: str, adapter: str) -> None:
    source, sink, expected = UNREACHABLE[adapter]
    spec = _spec(tmp_path / "u.spec", run, source, sink)
    proc = _edgeplane(
        "run", str(spec), "--metrics-addr", "off", "--log-level", "warning", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"edgeplane: error: {expected}"), lines[0]
    assert "could not start" in lines[0]
    doc = json.loads(proc.stdout)  # --json: the same error as a document on stdout
    assert doc["exit_code"] == 1 and doc["error"].startswith(expected)
    # --log-level debug shows the client library's side too.
    proc = _edgeplane(
        "run", str(spec), "--metrics-addr", "off", "--log-level", "debug", cwd=tmp_path
    )
    assert proc.returncode == 1
    assert {"kafka": " aiokafka", "nats": " byteor.adapters.nats"}[adapter] in proc.stderr


# -- the restart budget in a sliding window (an injected clock, no processes) ----------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_counts_restarts_within_the_window() -> None:
    clock = Clock()
    budget = RestartBudget(2, 60.0, clock)
    assert budget.spend() == "1 of 2 in 60 s"
    clock.now = 10.0
    assert budget.spend() == "2 of 2 in 60 s"
    clock.now = 59.9
    assert not budget.allows()
    assert budget.exhausted().startswith(
        "restarted 2 time(s) in the last 60 s, the most --max-restarts 2 allows within "
        "--restart-window 60 (it keeps failing: fix the cause, or allow more"
    )
    clock.now = 60.0  # the restart at 0 s leaves the window
    assert budget.allows() and budget.recent() == 1
    assert budget.spend() == "2 of 2 in 60 s"
    clock.now = 69.9
    assert not budget.allows()
    clock.now = 70.0
    assert budget.recent() == 1


def test_without_a_window_every_restart_of_the_run_counts() -> None:
    clock = Clock()
    budget = RestartBudget(2, 0.0, clock)
    budget.spend()
    clock.now = 1e6
    assert budget.spend() == "2 of 2"
    clock.now = 1e9
    assert not budget.allows()
    assert budget.exhausted().startswith(
        "restarted 2 time(s) already, the most --max-restarts 2 allows in a run (fix the "
        "cause, raise --max-restarts, or give --restart-window SECONDS"
    )
    assert RestartBudget(0).exhausted().startswith("restarted 0 time(s) already")


def _budget_spec() -> PipelineSpecV1:
    parsed = parse_spec(
        "byteor.spec = 1\npipeline.name = budget\npipeline.target = lane_graph\n"
        "lane.a.kind = events\nlane.a.capacity = 64\nlane.a.slot_bytes = 64\n"
        "source.s.adapter = generator\nsource.s.out = a\n"
        "sink.k.adapter = stdout\nsink.k.in = a\n"
    )
    assert parsed.spec is not None, parsed.findings
    return parsed.spec


def _failing_plane(window: float, clock: Clock) -> tuple[DataPlane, list[float]]:
    """A data plane whose failures are handed to the supervisor's decision by hand: no
    process runs, a restart only counts itself as ``_restart`` does and notes the time."""
    config = PlaneConfig(run="budget", max_restarts=2, restart_window=window)
    plane = DataPlane(_budget_spec(), config, clock=clock)
    plane.status = StatusSegment.create("budget", 2, memory=True)
    restarted: list[float] = []

    def restart(what: str, stop: StopToken) -> None:  # what _restart counts, without processes
        plane.restarts += 1
        plane.budget.spend()
        restarted.append(clock.now)

    plane._restart = restart  # type: ignore[method-assign]
    return plane, restarted


def _crash(plane: DataPlane) -> None:
    child = _Child("stages", "main", message=("error", "RuntimeError", "boom", True))
    plane._failure(child, draining=False, stop=StopToken())


def test_the_supervisor_fails_when_the_window_holds_max_restarts() -> None:
    clock = Clock()
    plane, restarted = _failing_plane(60.0, clock)
    try:
        for t in (0.0, 10.0, 61.0):  # at 61 s the first has left the window
            clock.now = t
            _crash(plane)
        assert restarted == [0.0, 10.0, 61.0]
        clock.now = 65.0  # 10 s and 61 s are within the last 60 s
        with pytest.raises(RunError) as failed:
            _crash(plane)
        assert str(failed.value).startswith(
            "stages:main failed: boom; restarted 2 time(s) in the last 60 s, the most "
            "--max-restarts 2 allows within --restart-window 60"
        )
        assert restarted == [0.0, 10.0, 61.0] and plane.restarts == 3
    finally:
        plane.status.close()  # type: ignore[union-attr]


def test_the_supervisor_without_a_window_counts_the_whole_run() -> None:
    clock = Clock()
    plane, restarted = _failing_plane(0.0, clock)
    try:
        for t in (0.0, 1000.0):
            clock.now = t
            _crash(plane)
        clock.now = 1e6
        with pytest.raises(RunError, match=r"restarted 2 time\(s\) already"):
            _crash(plane)
        assert restarted == [0.0, 1000.0]
    finally:
        plane.status.close()  # type: ignore[union-attr]


def test_restart_window_option_and_variable() -> None:
    assert resolve_options({}, {}).restart_window == 0.0
    assert resolve_options({}, {"EDGEPLANE_RESTART_WINDOW": "600"}).restart_window == 600.0
    flags = {"restart_window": "30"}
    assert resolve_options(flags, {"EDGEPLANE_RESTART_WINDOW": "600"}).restart_window == 30.0
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(OptionError, match=r"--restart-window=.*seconds >= 0"):
            resolve_options({"restart_window": bad}, {})
    with pytest.raises(ValueError, match="restart_window"):
        DataPlane(_budget_spec(), PlaneConfig(run="x", restart_window=-1.0))


def test_help_lists_the_new_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "EDGEPLANE_RESTART_WINDOW  --restart-window" in out
    assert "EDGEPLANE_PATH" in out and "--path DIR" in out
    for command in ("validate", "describe"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "EDGEPLANE_PATH" in capsys.readouterr().out
