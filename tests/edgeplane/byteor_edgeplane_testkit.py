"""Helpers of the EdgePlane tests that run real processes against Redis on loopback.

(pytest puts this directory on sys.path, so the module imports by its bare name.)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import redis

from byteor import lanes
from byteor.edgeplane._status import StatusSegment
from byteor.exec import COUNTERS_SUFFIX, StageContext, resolve_op

REDIS_URL = "redis://127.0.0.1:6379/0"
_names = itertools.count()
HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def op(name: str, outputs: int = 1, **params: str) -> Any:
    """The op ``name`` resolved as a stage ``s`` with ``outputs`` ports and ``params``."""
    ports = tuple(f"o{i}" for i in range(outputs))
    return resolve_op(name, StageContext("s", params, ports))


def memory_status(name: str, nodes: int = 4) -> StatusSegment:
    """An in-memory status segment of ``nodes`` rows, its first generation begun."""
    seg = StatusSegment.create(name, nodes, memory=True)
    seg.new_generation()
    return seg


def unique(prefix: str) -> str:
    """A name no other test (or earlier run) uses."""
    return f"{prefix}{os.getpid()}x{next(_names)}"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something true (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def fill_stream(client: redis.Redis, stream: str, n: int, keys: int = 10) -> list[bytes]:
    """``n`` entries ``k<key>-<i>`` (payload only, as the sink writes them); returns them."""
    payloads = [f"k{i % keys}-{i}".encode() for i in range(n)]
    pipe = client.pipeline(transaction=False)
    for p in payloads:
        pipe.xadd(stream, {"p": p})
    pipe.execute()
    return payloads


def stream_payloads(client: redis.Redis, stream: str) -> list[bytes]:
    return [fields[b"p"] for _, fields in client.xrange(stream)]


def pending(client: redis.Redis, stream: str, group: str) -> int:
    info: Any = client.xpending(stream, group)
    return int(info["pending"])


def one_stage_spec(
    path: Path,
    run: str,
    source: tuple[str, Mapping[str, object]],
    sink: tuple[str, Mapping[str, object]],
    *,
    op: str = "byteor_edgeplane_testops:upper",
    process: str = "w1",
    capacity: int = 1024,
    slot_bytes: tuple[int, int] = (64, 64),
    names: tuple[str, str, str] = ("src", "up", "dst"),
) -> Path:
    """Write a lane_graph spec: ``source`` (adapter, params) -> lane ``raw`` -> the stage
    ``op`` in its own ``process`` -> lane ``out`` -> ``sink`` (adapter, params). ``names``:
    the source's, the stage's and the sink's; ``slot_bytes``: raw's and out's."""
    src, stage, dst = names
    lines = [
        "byteor.spec = 1",
        f"pipeline.name = {run}",
        "pipeline.target = lane_graph",
    ]
    for lane, slot in zip(("raw", "out"), slot_bytes, strict=True):
        lines += [
            f"lane.{lane}.kind = events",
            f"lane.{lane}.capacity = {capacity}",
            f"lane.{lane}.slot_bytes = {slot}",
        ]
    lines += [f"source.{src}.adapter = {source[0]}", f"source.{src}.out = raw"]
    lines += [f"source.{src}.param.{k} = {v}" for k, v in source[1].items()]
    lines += [
        f"stage.{stage}.op = {op}",
        f"stage.{stage}.in = raw",
        f"stage.{stage}.out = out",
        f"stage.{stage}.process = {process}",
    ]
    lines += [f"sink.{dst}.adapter = {sink[0]}", f"sink.{dst}.in = out"]
    lines += [f"sink.{dst}.param.{k} = {v}" for k, v in sink[1].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def redis_spec(
    path: Path,
    run: str,
    stream_in: str,
    stream_out: str,
    *,
    capacity: int = 1024,
    process: str = "w1",
    url: str = REDIS_URL,
) -> Path:
    """Redis stream -> upper-casing stage (in its own process) -> Redis stream."""
    return one_stage_spec(
        path,
        run,
        ("redis", {"url": url, "stream": stream_in, "group": run, "consumer": f"{run}-src"}),
        ("redis", {"url": url, "stream": stream_out}),
        process=process,
        capacity=capacity,
    )


def edgeplane(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """``python -m byteor.edgeplane ARGS`` with the test ops importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    env.update(kwargs.pop("env", {}))
    return subprocess.Popen(
        [sys.executable, "-m", "byteor.edgeplane", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def node_pid(run: str, node: str, not_pid: int = 0) -> int:
    """The live pid running ``node`` in run ``run`` (another than ``not_pid``), or 0."""
    try:
        counters = lanes.attach_counters(f"{run}{COUNTERS_SUFFIX}")
    except lanes.LaneError:
        return 0
    try:
        index = counters.find(node)
        row = counters.read(index) if index is not None else None
    finally:
        counters.close()
    if row is None or not row.alive or row.pid == not_pid:
        return 0
    return row.pid


def cleanup_run(run: str) -> None:
    """Remove every segment a test run may have left."""
    for f in os.listdir("/dev/shm"):
        if f.startswith((f"byteor-{run}.", f"edgeplane-{run}.")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join("/dev/shm", f))


@contextlib.contextmanager
def streams(client: redis.Redis, *names: str) -> Iterator[None]:
    try:
        yield
    finally:
        client.delete(*names)


def fresh_run(prefix: str) -> Iterator[str]:
    """A run name from :func:`unique`, its segments removed after the test: the body of a
    ``run`` fixture (``yield from fresh_run("ep")``)."""
    name = unique(prefix)
    yield name
    cleanup_run(name)
