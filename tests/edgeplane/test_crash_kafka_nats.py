"""Crash safety over Kafka -> enrich -> NATS JetStream: kill -9 of a random EdgePlane process,
20 times, during a 100,000-record ``edgeplane run`` (issue 7).

The orders come from the Kafka example (``examples/kafka_enrich_nats``: 3 partitions, keyed
by customer, the example's ``enrich`` op in its own process). The NATS sink publishes without
a ``Nats-Msg-Id`` (``msg_id = none``), so JetStream stores every delivery and the duplicates
are visible in the stream. Each kill waits for progress, not for time: the k-th once the
stream holds about k/21 of the orders (seeded jitter of +-1,500 messages, so kills are 1,800
to 7,800 messages apart), then SIGKILL of a random child of the supervisor (the edge-in, the
stage worker or the edge-out; their pids from the run's counters segment, checked to be the
supervisor's children), each in a generation of the data plane no earlier kill hit. Once the
group has committed every partition to its end, SIGTERM. Checked: exit 0 and 20 restarts;
every order in the stream (0 lost), each enriched as ``enrich()`` says and carrying its
customer (the Kafka key) in the ``Byteor-Key`` header; the stream's duplicates (messages
minus unique orders) at most what the run reports; each customer's orders first arrive in
the order they were produced; the group committed to the end of every partition.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from byteor_edgeplane_testkit import (
    ROOT,
    cleanup_run,
    edgeplane,
    node_pid,
    one_stage_spec,
    unique,
)
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from byteor.adapters.nats import KEY_HEADER

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(150)]

EXAMPLE = ROOT / "examples" / "kafka_enrich_nats"
RECORDS = 100_000
KILLS = 20
SEED = 7
CAPACITY = 1024  # slots of each lane
BATCH = 256
NODES = ("orders", "enrich", "enriched")  # the edge-in, the stage worker, the edge-out
_T = TypeVar("_T")


def _load(name: str) -> Any:
    """A module of the example folder, imported from its file."""
    path = EXAMPLE / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_crash_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_spec(path: Path, run: str, s: dict[str, str]) -> Path:
    """Kafka (the example's topic and group, short group timeouts so a restarted consumer
    rejoins in about a second) -> the example's enrich op in its own process -> NATS
    JetStream without de-duplication ids."""
    source = {
        "bootstrap_servers": s["bootstrap"],
        "topic": s["topic"],
        "group": s["group"],
        "session_timeout_ms": 1000,
        "heartbeat_interval_ms": 200,
    }
    sink = {"servers": s["nats"], "stream": s["stream"], "subject": s["subject"], "msg_id": "none"}
    return one_stage_spec(
        path,
        run,
        ("kafka", source),
        ("nats", sink),
        op="enrich:enrich",
        process="enrich",
        capacity=CAPACITY,
        slot_bytes=(256, 512),
        names=NODES,
    )


class Upstream:
    """One NATS connection and one (group-less, never joining) Kafka consumer, kept open
    while the test watches the run."""

    def __init__(self, s: dict[str, str]) -> None:
        self.s = s
        self.nc = NATS()
        self.kafka = AIOKafkaConsumer(bootstrap_servers=s["bootstrap"], group_id=s["group"])

    async def __aenter__(self) -> Upstream:
        await self.nc.connect(self.s["nats"], connect_timeout=2, max_reconnect_attempts=1)
        await self.kafka.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kafka.stop()
        await self.nc.close()

    async def messages(self) -> int:
        """Messages the stream holds (duplicates included)."""
        info = await self.nc.jetstream().stream_info(self.s["stream"])
        return int(info.state.messages)

    async def committed(self, partitions: int) -> dict[int, int | None]:
        topic = self.s["topic"]
        return {p: await self.kafka.committed(TopicPartition(topic, p)) for p in range(partitions)}

    async def read_stream(self) -> list[tuple[bytes, dict[str, str]]]:
        """Every message of the stream (payload, headers), in stream order, through a
        consumer without acks."""
        js = self.nc.jetstream()
        total = await self.messages()
        psub = await js.pull_subscribe(
            self.s["subject"],
            durable="crash-check",
            stream=self.s["stream"],
            config=ConsumerConfig(ack_policy=AckPolicy.NONE),
        )
        out: list[tuple[bytes, dict[str, str]]] = []
        try:
            while len(out) < total:
                msgs = await psub.fetch(min(5_000, total - len(out)), timeout=10)
                out += [(m.data, m.headers or {}) for m in msgs]
        finally:
            await psub.unsubscribe()
        return out


async def drop_topic(s: dict[str, str]) -> None:
    """Delete the run's topic (100,000 orders each run would otherwise stay in the broker)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s["bootstrap"])
    await admin.start()
    try:
        await admin.delete_topics([s["topic"]])
    finally:
        await admin.close()


def is_child(pid: int, parent: int) -> bool:
    """Whether ``pid`` is alive and a child of ``parent`` (not a reused pid)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    return int(fields["PPid"]) == parent and fields["State"].split()[0] not in ("Z", "X")


async def poll(
    check: Callable[[], Awaitable[_T]], what: str, proc: subprocess.Popen[str], timeout: float
) -> _T:
    """Await ``check()`` until it returns something true, or fail naming ``what`` (and at
    once, with its stderr, when the run has ended)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"edgeplane exited ({proc.returncode}) waiting for {what}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def kill_marks(rng: random.Random) -> list[int]:
    """Stream sizes to kill at: evenly spread below ``RECORDS`` (so each is reached even
    without duplicates), each jittered by up to 1,500."""
    step = RECORDS // (KILLS + 1)
    return [(k + 1) * step + rng.randint(-1_500, 1_500) for k in range(KILLS)]


async def kill_randomly(
    up: Upstream, proc: subprocess.Popen[str], run: str, rng: random.Random
) -> list[tuple[str, int, int]]:
    """SIGKILL a random child of the supervisor at each of :func:`kill_marks`, each in a
    generation of the data plane that no earlier kill hit. Returns (node, pid, messages)."""
    killed: list[tuple[str, int, int]] = []
    dead: set[int] = set()  # every pid of a generation already killed
    for mark in kill_marks(rng):

        async def reached(m: int = mark) -> bool:
            return await up.messages() >= m

        await poll(reached, f"{mark} messages in the stream", proc, 60)
        node = rng.choice(NODES)

        async def target(node: str = node) -> int:
            pids = [node_pid(run, n) for n in NODES]
            if not all(pids) or dead.intersection(pids):
                return 0  # a generation still starting, or one already dying
            pid = pids[NODES.index(node)]
            return pid if is_child(pid, proc.pid) else 0

        pid = await poll(target, f"a live {node} process", proc, 30)
        dead.update(node_pid(run, n) for n in NODES)
        os.kill(pid, signal.SIGKILL)
        killed.append((node, pid, await up.messages()))
    return killed


def test_kill_9_of_random_processes_20_times_loses_nothing_kafka_to_nats(tmp_path: Path) -> None:
    demo, enrich = _load("demo"), _load("enrich")
    tag = unique("kcr")
    s = demo.settings(
        {
            "ORDERS_TOPIC": f"{tag}-orders",
            "ORDERS_GROUP": f"{tag}-enrich",
            "NATS_STREAM": f"{tag.upper()}_CRASH",
            "NATS_SUBJECT": f"{tag}.crash",
        }
    )
    run = tag
    try:
        sent: list[tuple[bytes, bytes, int, int]] = asyncio.run(demo.seed(s, RECORDS))
    except BaseException:
        asyncio.run(drop_topic(s))
        asyncio.run(demo.drop_stream(s))
        raise
    spec = write_spec(tmp_path / "crash.spec", run, s)
    ends: dict[int, int] = {}
    for _, _, partition, offset in sent:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    rng = random.Random(SEED)
    timing: dict[str, float] = {}

    async def scenario() -> tuple[Any, ...]:
        async with Upstream(s) as up:
            began = time.monotonic()
            proc = edgeplane(
                "run", str(spec), "--json", "--metrics-addr", "off", "--log-level", "warning",
                "--batch", str(BATCH), "--restart", "restart", "--max-restarts", str(KILLS),
                "--path", str(EXAMPLE),
            )  # fmt: skip
            try:
                killed = await kill_randomly(up, proc, run, rng)

                async def all_committed() -> bool:
                    return await up.committed(len(ends)) == ends

                await poll(all_committed, "every partition committed to its end", proc, 60)
                timing["run_s"] = time.monotonic() - began
                proc.send_signal(signal.SIGTERM)
                out, err = await asyncio.to_thread(proc.communicate, timeout=40)
                timing["drain_s"] = time.monotonic() - began - timing["run_s"]
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate(timeout=10)
            got = await up.read_stream()
            return proc.returncode, out, err, got, await up.committed(len(ends)), killed

    try:
        code, out, err, got, committed, killed = asyncio.run(scenario())
    finally:
        asyncio.run(drop_topic(s))
        asyncio.run(demo.drop_stream(s))
        cleanup_run(run)
    assert code == 0, err
    summary = json.loads(out)
    assert len(killed) == KILLS and {node for node, _, _ in killed} == set(NODES), killed
    assert summary["restarts"] == KILLS, (summary, killed, err)
    # A recovery time per restart whose data plane got every adapter connected before the
    # next failure (a kill may hit a plane still joining the group).
    assert 0 < len(summary["recovery_s"]) <= KILLS
    docs = [json.loads(payload) for payload, _ in got]
    orders = [d["order"] for d in docs]
    first = list(dict.fromkeys(orders))
    assert sorted(first) == list(range(RECORDS))  # 0 lost
    expected = {json.loads(p)["order"]: enrich.enrich(p) for _, p, _, _ in sent}
    assert all(p == expected[o] for o, (p, _) in zip(orders, got, strict=True))  # enriched
    # The Kafka key (the customer) went through the stage to a header of every message.
    assert all(h.get(KEY_HEADER) == d["customer"] for d, (_, h) in zip(docs, got, strict=True))
    duplicates = len(got) - RECORDS
    assert duplicates <= summary["duplicates"], (duplicates, summary["duplicates"])
    # Reported: what was admitted and not committed at each crash, at most a window each
    # (twice what the two lanes hold, and four batches).
    assert summary["duplicates"] <= KILLS * (2 * 2 * CAPACITY + 4 * BATCH)
    # Per customer (the Kafka key, so the partition): first arrivals in production order.
    produced: dict[bytes, list[int]] = {}
    for key, payload, _, _ in sent:
        produced.setdefault(key, []).append(json.loads(payload)["order"])
    arrived: dict[bytes, list[int]] = {}
    for order in first:
        arrived.setdefault(f"c-{order % 10}".encode(), []).append(order)
    assert arrived == produced
    assert committed == ends
    assert summary["sources"]["orders"]["records_in"] >= RECORDS + duplicates
    recovery = sorted(summary["recovery_s"])
    print(
        f"\n{KILLS} kills {[(n, m) for n, _, m in killed]}: run {timing['run_s']:.1f} s, "
        f"drain {timing['drain_s']:.2f} s; {duplicates} duplicates in the stream, "
        f"{summary['duplicates']} reported; {len(recovery)} recovery times, median "
        f"{recovery[len(recovery) // 2]:.2f} s, max {recovery[-1]:.2f} s: {summary['recovery_s']}"
    )
