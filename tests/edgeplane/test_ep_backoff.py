"""The supervisor's wait before restarting a data plane (``PlaneConfig.restart_backoff``).

It doubles while restarted planes fail before running again (every adapter connected) and
starts over from the first wait once one runs: a plane killed now and then during a long
run comes back after the first wait every time (20 kills of a running plane used to wait
0.1 s doubling to 5 s each, ~75 s in all; ``test_crash_kafka_nats``), while one that keeps
failing to start backs off. Driven in this process: a fake clock, no children, the
connected flags set by the test.
"""

from __future__ import annotations

import itertools
import logging
import re
from types import SimpleNamespace
from typing import Any

import pytest

from byteor.edgeplane._status import CONNECTED
from byteor.edgeplane._supervisor import DataPlane, PlaneConfig, _Generation
from byteor.exec import StopToken
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec


def test_the_backoff_doubles_until_a_plane_runs_then_starts_over(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spec = PipelineSpecV1.build(
        "bk",
        "lane_graph",
        lanes=[LaneSpec("raw", "events", 64, 64)],
        sources=[SourceSpec("src", "memory", "raw", {"topic": "in"})],
        sinks=[SinkSpec("dst", "memory", ("raw",), params={"topic": "out"})],
    )
    ticks = itertools.count()
    plane = DataPlane(spec, PlaneConfig(run="bk"), clock=lambda: float(next(ticks) * 10))
    connected = {"src": False, "dst": False}
    rows = [SimpleNamespace(has=lambda flag, n=n: flag == CONNECTED and connected[n])
            for n in ("src", "dst")]  # fmt: skip
    plane.status = SimpleNamespace(rows=rows)  # type: ignore[assignment]
    started: list[int] = []

    def start() -> None:
        plane._gen = _Generation()
        started.append(plane.restarts)

    nothing: Any = lambda *_, **__: None  # noqa: E731 (no children, counters or segments here)
    monkeypatch.setattr(plane, "_kill", nothing)
    monkeypatch.setattr(plane, "_fold", nothing)
    monkeypatch.setattr(plane, "_destroy", nothing)
    monkeypatch.setattr(plane, "_start", start)
    plane._gen = _Generation()

    def fail(running: bool) -> None:
        """The plane fails, having got every adapter connected (``running``) or not."""
        connected.update(src=running, dst=running)
        plane._recovered()  # what the watch loop does before handling a failure
        plane._restart("edge-out:dst (pid 1) was killed by SIGKILL", StopToken())

    caplog.set_level(logging.WARNING, "byteor.edgeplane")
    for running in (True, False, False, False, False, False, False, True, True, False, True):
        fail(running)
    said = [re.search(r"restarting the data plane .* in ([0-9.]+) s", r.getMessage())
            for r in caplog.records]  # fmt: skip
    waits = [float(m[1]) for m in said if m]
    # 0.1 s doubling (at most 5 s) while restarted planes fail before running; a plane that
    # ran puts it back to 0.1 s.
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 0.1, 0.1, 0.2, 0.1]
    assert started == list(range(1, 12)) and plane.restarts == 11
    assert len(plane.recoveries) == 3  # one per restarted plane that ran
