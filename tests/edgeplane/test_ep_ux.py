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
from byteor_edgeplane_testkit import HERE, ROOT, cleanup_run, unique

from byteor.edgeplane._config import extend_import_path, resolve_options
from byteor.edgeplane._errors import OptionError
from byteor.edgeplane.cli import main

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def run() -> Iterator[str]:
    name = unique("ux")
    yield name
    cleanup_run(name)


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
