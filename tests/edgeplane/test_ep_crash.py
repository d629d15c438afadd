"""Crash safety: kill -9 of EdgePlane's processes mid-run, Redis Streams -> Redis Streams.

The supervisor restarts the whole data plane; upstream delivers again what was not
acknowledged. Checked: nothing is lost, records first arrive in input order, the duplicates
the sink saw are at most what the run reports, and that stays within the lanes' window.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from byteor_edgeplane_testkit import (
    REDIS_URL,
    edgeplane,
    fill_stream,
    fresh_run,
    node_pid,
    pending,
    redis_spec,
    stream_payloads,
    wait_for,
)

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(REDIS_URL)
    yield c
    c.close()


@pytest.fixture
def run() -> Iterator[str]:
    yield from fresh_run("epc")


def test_kill_9_of_each_process_loses_nothing_and_counts_duplicates(
    tmp_path: Path, run: str, client: redis.Redis
) -> None:
    n, capacity = 30_000, 256
    stream_in, stream_out = f"{run}-in", f"{run}-out"
    try:
        sent = fill_stream(client, stream_in, n)
        spec = redis_spec(tmp_path / "r.spec", run, stream_in, stream_out, capacity=capacity)
        proc = edgeplane("run", str(spec), "--metrics-addr", "off", "--json", "--batch", "64")
        killed: list[int] = []
        mark = 0
        for node in ("up", "dst", "src"):  # a stage worker, the edge-out, the edge-in
            mark += n // 6  # each kill once the restarted plane has written some more
            wait_for(lambda m=mark: client.xlen(stream_out) >= m, f"{mark} records written", 60)
            pid = wait_for(
                lambda node=node: node_pid(run, node, *killed[-1:]), f"{node}'s process", 30
            )
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            mark = client.xlen(stream_out)
        wait_for(
            lambda: len(set(stream_payloads(client, stream_out))) >= n, "every record written", 90
        )
        wait_for(lambda: pending(client, stream_in, run) == 0, "every record acknowledged")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, err
        summary = json.loads(out)
        got = stream_payloads(client, stream_out)
        first_seen = list(dict.fromkeys(got))
        assert first_seen == [p.upper() for p in sent]  # nothing lost, first arrivals in order
        duplicates = len(got) - n
        assert summary["restarts"] == 3
        assert duplicates <= summary["duplicates"]
        # Unacknowledged at a crash: at most what the lanes hold, twice (the window), and one
        # batch in each process's hands; three crashes.
        window = 2 * (2 * capacity) + 4 * 64
        assert summary["duplicates"] <= 3 * window
        assert len(summary["recovery_s"]) == 3, err
        assert "was killed by SIGKILL; restarting the data plane (3 of 5)" in err
    finally:
        client.delete(stream_in, stream_out)


def test_restart_fail_stops_cleanly_with_one_line(
    tmp_path: Path, run: str, client: redis.Redis
) -> None:
    n = 20_000
    stream_in, stream_out = f"{run}-in", f"{run}-out"
    try:
        fill_stream(client, stream_in, n)
        spec = redis_spec(tmp_path / "r.spec", run, stream_in, stream_out)
        proc = edgeplane(
            "run", str(spec), "--metrics-addr", "off", "--restart", "fail", "--log-level", "error"
        )
        wait_for(lambda: client.xlen(stream_out) > 0, "records flowing", 60)
        pid = wait_for(lambda: node_pid(run, "up"), "the stage worker's pid")
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=40)
        assert proc.returncode == 1
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        assert lines[0].startswith(f"edgeplane: error: stages:w1 (pid {pid}) was killed by SIGKILL")
        assert "--restart fail: the run is stopped" in lines[0]
        assert not [f for f in os.listdir("/dev/shm") if run in f]  # segments removed
        assert pending(client, stream_in, run) > 0 or client.xlen(stream_out) == n
    finally:
        client.delete(stream_in, stream_out)


def test_a_killed_supervisor_takes_its_processes_along_and_the_next_run_reclaims(
    tmp_path: Path, run: str, client: redis.Redis
) -> None:
    n = 20_000
    stream_in, stream_out = f"{run}-in", f"{run}-out"
    try:
        sent = fill_stream(client, stream_in, n)
        spec = redis_spec(tmp_path / "r.spec", run, stream_in, stream_out)
        first = edgeplane("run", str(spec), "--metrics-addr", "off")
        wait_for(lambda: client.xlen(stream_out) >= n // 4, "records flowing", 60)
        children = [wait_for(lambda x=x: node_pid(run, x), x) for x in ("src", "up", "dst")]
        first.kill()
        first.communicate(timeout=30)
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children),
                 "the children gone with their supervisor")  # fmt: skip
        assert [f for f in os.listdir("/dev/shm") if f.startswith(f"byteor-{run}.")]  # stale
        second = edgeplane("run", str(spec), "--metrics-addr", "off", "--json")
        wait_for(
            lambda: len(set(stream_payloads(client, stream_out))) >= n, "every record written", 60
        )
        wait_for(lambda: pending(client, stream_in, run) == 0, "every record acknowledged")
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=40)
        assert second.returncode == 0, err
        assert "segment(s) a dead run" in err
        assert list(dict.fromkeys(stream_payloads(client, stream_out))) == [p.upper() for p in sent]
        assert json.loads(out)["restarts"] == 0
    finally:
        client.delete(stream_in, stream_out)
