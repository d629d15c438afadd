"""``edgeplane run`` end to end: real processes over /dev/shm, Redis on loopback.

Few and bounded: Redis -> stage -> Redis with SIGTERM draining (the quickstart with no server
is tests/examples/test_quickstart.py), readiness from the Python API, and the one-line
failures (bad spec, unreachable server, missing client library, missing variable).
``validate``, ``describe`` and ``--help`` run in this process.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from byteor_edgeplane_testkit import (
    REDIS_URL,
    cleanup_run,
    edgeplane,
    fill_stream,
    pending,
    redis_spec,
    stream_payloads,
    unique,
    wait_for,
)

from byteor.edgeplane._config import load_pipeline
from byteor.edgeplane._supervisor import DataPlane, PlaneConfig
from byteor.edgeplane.cli import main
from byteor.exec import StopToken

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(REDIS_URL)
    yield c
    c.close()


@pytest.fixture
def run() -> Iterator[str]:
    name = unique("ep")
    yield name
    cleanup_run(name)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("edgeplane: error: "), lines[0]
    return lines[0]


def test_redis_to_redis_every_record_once_in_order_and_sigterm_drains(
    tmp_path: Path, run: str, client: redis.Redis
) -> None:
    n = 20_000
    stream_in, stream_out = f"{run}-in", f"{run}-out"
    try:
        sent = fill_stream(client, stream_in, n)
        spec = redis_spec(tmp_path / "r.spec", run, stream_in, stream_out)
        proc = edgeplane("run", str(spec), "--metrics-addr", "off", "--json")
        wait_for(lambda: client.xlen(stream_out) >= n, f"{n} records at the sink", 60)
        wait_for(lambda: pending(client, stream_in, run) == 0, "every record acknowledged")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, err
        summary = json.loads(out)
        assert summary["stopped"] and summary["restarts"] == 0
        assert summary["records_in"] == summary["records_out"] == summary["acked"] == n
        got = stream_payloads(client, stream_out)
        assert got == [p.upper() for p in sent]  # each once, in order (so per key too)
        info = client.xinfo_groups(stream_in)[0]
        assert (
            info["pending"] == 0
            and info["last-delivered-id"] == client.xinfo_stream(stream_in)["last-generated-id"]
        )
    finally:
        client.delete(stream_in, stream_out)


def test_readiness_and_adapter_states_from_the_python_api(
    tmp_path: Path, run: str, client: redis.Redis
) -> None:
    n = 3000
    stream_in, stream_out = f"{run}-in", f"{run}-out"
    try:
        fill_stream(client, stream_in, n)
        loaded = load_pipeline(str(redis_spec(tmp_path / "r.spec", run, stream_in, stream_out)))
        plane = DataPlane(loaded.spec, PlaneConfig(run=run, batch=64))
        assert plane.ready() == {}  # nothing started: not ready
        stop = StopToken()
        failed: list[BaseException] = []

        def supervise() -> None:
            try:
                plane.run(stop)
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=supervise)
        thread.start()
        try:
            wait_for(lambda: plane.ready() == {"src": True, "dst": True}, "both adapters ready")
            wait_for(lambda: client.xlen(stream_out) >= n, "every record at the sink")
            states = {s.node: s for s in wait_for(
                lambda: [s for s in plane.edge_states() if s.node == "src" and s.acked == n]
                and plane.edge_states(),
                "every record acknowledged",
            )}  # fmt: skip
            assert states["src"].kind == "source" and states["src"].records == n
            assert states["dst"].records == n and states["dst"].watermark is None
        finally:
            stop.request()
            thread.join(30)
        assert not thread.is_alive() and not failed
        assert plane.summary()["acked"] == n
    finally:
        client.delete(stream_in, stream_out)


def test_a_spec_with_errors_fails_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.spec"
    bad.write_text("byteor.spec = 1\npipeline.name = bad\npipeline.target = lane_graph\nx = 1\n")
    proc = edgeplane("run", str(bad), "--metrics-addr", "off")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "error SP" in one_line(err)


def test_a_merge_is_refused_with_ep101(tmp_path: Path) -> None:
    spec = tmp_path / "merge.spec"
    spec.write_text(
        "byteor.spec = 1\npipeline.name = m\npipeline.target = lane_graph\n"
        + "".join(
            f"lane.{x}.kind = events\nlane.{x}.capacity = 64\nlane.{x}.slot_bytes = 64\n"
            for x in ("a", "b", "o")
        )
        + "source.s1.adapter = generator\nsource.s1.out = a\n"
        + "source.s2.adapter = generator\nsource.s2.out = b\n"
        + "stage.join.op = identity\nstage.join.in = a, b\nstage.join.out = o\n"
        + "sink.k.adapter = stdout\nsink.k.in = o\n"
    )
    proc = edgeplane("run", str(spec), "--metrics-addr", "off")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "EP101" in one_line(err) and "'join' reads 2 lanes" in err


def test_an_unreachable_server_fails_with_one_line(tmp_path: Path, run: str) -> None:
    spec = redis_spec(tmp_path / "r.spec", run, "x-in", "x-out", url="redis://127.0.0.1:1/0")
    proc = edgeplane("run", str(spec), "--metrics-addr", "off", "--log-level", "error")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    line = one_line(err)
    assert "cannot reach 127.0.0.1:1" in line and "could not start" in line


def test_a_missing_client_library_fails_with_the_install_command(tmp_path: Path, run: str) -> None:
    spec = redis_spec(tmp_path / "r.spec", run, "x-in", "x-out")
    code = (
        "import sys; sys.modules['redis'] = None; "  # as if the extra were not installed
        "from byteor.edgeplane.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", str(spec), "--metrics-addr", "off"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert proc.returncode == 2
    assert "pip install 'byteor[redis]'" in one_line(proc.stderr)


def test_a_missing_variable_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    spec = tmp_path / "v.spec"
    spec.write_text(
        "byteor.spec = 1\npipeline.name = v\npipeline.target = lane_graph\n"
        "lane.a.kind = events\nlane.a.capacity = 64\nlane.a.slot_bytes = 64\n"
        "source.s.adapter = generator\nsource.s.out = a\nsource.s.param.count = ${EP_TEST_COUNT}\n"
        "sink.k.adapter = stdout\nsink.k.in = a\n"
    )
    assert "EP_TEST_COUNT" not in os.environ
    proc = edgeplane("run", str(spec), "--metrics-addr", "off", "--json")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "${EP_TEST_COUNT} is not set" in one_line(err)
    assert json.loads(out)["exit_code"] == 2


# -- validate, describe, --help (in this process) ------------------------------------------------


def _spec_with_secret(tmp_path: Path, claim: str = "1000") -> Path:
    path = tmp_path / "s.spec"
    path.write_text(
        "byteor.spec = 1\npipeline.name = s\npipeline.target = lane_graph\n"
        "lane.a.kind = events\nlane.a.capacity = 64\nlane.a.slot_bytes = 64\n"
        "source.s.adapter = redis\nsource.s.out = a\nsource.s.param.stream = in\n"
        "source.s.param.url = redis://app:${EP_REDIS_PASSWORD}@127.0.0.1:6379/0\n"
        f"source.s.param.claim_idle_ms = {claim}\n"
        "sink.k.adapter = stdout\nsink.k.in = a\n"
    )
    return path


def test_validate_and_describe_interpolate_and_never_print_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EP_REDIS_PASSWORD", "hunter2-s3cret")
    path = str(_spec_with_secret(tmp_path))
    assert main(["validate", path]) == 0
    assert "EdgePlane can run it" in capsys.readouterr().out
    assert main(["describe", path, "--json"]) == 0
    out = capsys.readouterr().out
    assert "hunter2-s3cret" not in out
    doc = json.loads(out)
    assert [p["process"] for p in doc["edgeplane"]["processes"]] == ["edge-out:k", "edge-in:s"]
    # A finding that quotes the value (AD503: not an integer) prints *** instead of it.
    monkeypatch.setenv("EP_CLAIM_TOKEN", "tok-9f8e7d")
    path = str(_spec_with_secret(tmp_path, "${EP_CLAIM_TOKEN}"))
    assert main(["validate", path]) == 1
    out = capsys.readouterr().out
    assert "AD503" in out and "'***'" in out and "tok-9f8e7d" not in out
    monkeypatch.delenv("EP_REDIS_PASSWORD")
    assert main(["validate", path]) == 2
    assert "${EP_REDIS_PASSWORD} is not set" in capsys.readouterr().err


def test_validate_reports_what_edgeplane_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "o.spec"
    path.write_text(
        "byteor.spec = 1\npipeline.name = o\npipeline.target = lane_graph\n"
        "lane.a.kind = fanout\nlane.a.capacity = 64\nlane.a.slot_bytes = 64\n"
        "lane.a.policy = overwrite\n"
        "source.s.adapter = generator\nsource.s.out = a\n"
        "sink.k.adapter = stdout\nsink.k.in = a\nsink.j.adapter = stdout\nsink.j.in = a\n"
    )
    assert main(["validate", str(path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in doc["findings"] if f["severity"] == "error"] == ["EP102"]


def test_help_lists_the_environment_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for variable in ("EDGEPLANE_NAME", "EDGEPLANE_DRAIN_TIMEOUT", "EDGEPLANE_RESTART"):
        assert variable in out


def _stuck_run(tmp_path: Path, run: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """A run whose stdout sink writes to a pipe nobody reads: it fills, and the run can
    never drain. Returns the process and the pipe's read end (close it afterwards)."""
    spec = tmp_path / "stuck.spec"
    spec.write_text(
        f"byteor.spec = 1\npipeline.name = {run}\npipeline.target = lane_graph\n"
        "lane.a.kind = events\nlane.a.capacity = 64\nlane.a.slot_bytes = 64\n"
        "source.s.adapter = generator\nsource.s.out = a\nsource.s.param.count = 100000000\n"
        "sink.k.adapter = stdout\nsink.k.in = a\n"
    )
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "byteor.edgeplane", "run", str(spec), "--metrics-addr", "off",
         *args],
        stdout=w,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    os.close(w)
    return proc, r


def pipe_full(r: int) -> bool:
    """Whether the pipe whose read end is ``r`` holds all it can (a writer blocks)."""
    held = array.array("i", [0])
    fcntl.ioctl(r, termios.FIONREAD, held)
    return held[0] > fcntl.fcntl(r, 1032) - 4096  # F_GETPIPE_SZ, less a page: no more fits


def test_a_drain_that_cannot_finish_ends_at_the_drain_timeout(tmp_path: Path, run: str) -> None:
    proc, r = _stuck_run(tmp_path, run, "--drain-timeout", "1", "--log-level", "error")
    try:
        wait_for(lambda: pipe_full(r), "the stdout pipe full")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(r)
    assert proc.returncode == 1, err
    assert "the drain did not finish within 1 s (--drain-timeout)" in one_line(err)


def test_a_second_signal_exits_at_once(tmp_path: Path, run: str) -> None:
    proc, r = _stuck_run(tmp_path, run)
    try:
        assert proc.stderr is not None
        while "data plane started" not in proc.stderr.readline():
            pass
        proc.send_signal(signal.SIGTERM)
        while "stopping" not in proc.stderr.readline():
            pass
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        os.close(r)
    assert proc.returncode == 128 + signal.SIGINT
    assert "stopped at once by a second signal" in err
    assert not [f for f in os.listdir("/dev/shm") if run in f]
