"""``byteor bench edgeplane``: EdgePlane end to end against a hand-written asyncio loop.

Theory of operation
-------------------
Two pipelines, each with one transform stage (:func:`transform`: JSON in, the order priced
and its region added, JSON out), each run two ways on the same servers in the same run:

* **kafka_nats**: a Kafka topic (Tansu, :data:`PARTITIONS` partitions) -> transform -> a
  NATS JetStream stream. *Ours*: ``python -m byteor.edgeplane run`` of a plan with a Kafka
  source, the stage in its own process and a NATS sink (three processes around shared-memory
  lanes). *Hand*: one asyncio process with aiokafka and nats-py: ``getmany`` of up to
  :data:`BATCH` records, :func:`transform` of each, ``js.publish_async`` with a
  ``Nats-Msg-Id`` (BLAKE2b of the payload, as our sink's ``msg_id = hash``) and the PubAcks
  gathered, then ``commit`` of the batch's offsets.
* **redis_pg**: a Redis stream -> transform -> a PostgreSQL table. *Ours*: a Redis source,
  the stage, a PostgreSQL sink (``dedupe = content``). *Hand*: redis.asyncio ``XREADGROUP
  COUNT n``, :func:`transform`, asyncpg ``INSERT ... SELECT FROM unnest(...) ON CONFLICT
  (dedupe_key) DO NOTHING`` with the same SHA-256 content keys, then ``XACK`` of the ids.

A **throughput run** pre-fills a fresh topic or stream with N records (untimed), starts the
side as a subprocess and watches the upstream acknowledgement state from this process every
10 ms (the group's committed offsets against the ends the producer was given; the group's
pending list and last delivered id), since at least once means a record is acknowledged
only after the destination confirmed it. The clock: *first stored* is the destination's own
timestamp of its earliest record (the JetStream message time; a ``clock_timestamp()``
column default in PostgreSQL), *settled* is when the watcher saw every record acknowledged
upstream. ``rate = N / (settled - first stored)``: process start-up and the consumer group
forming are excluded, the final commit is included. The wall time from the launch to settled
(start-up included) is reported next to it. Then the side is stopped (SIGTERM; ours drains
and prints its JSON summary, which must say exit 0, no restart) and the destination is read
back whole: every sequence number exactly once, each record transformed as
:func:`transform` says. Ours and the hand loop alternate who goes first each round; the
table shows medians and ours/hand (target: >= :data:`TARGET`).

A **latency run** (each pipeline, both sides) starts on an empty topic or stream, waits
for one warm-up record to arrive, then produces at a steady rate (half of ours' median
throughput, or ``--latency-rate``) for ``--latency-seconds``, each record carrying the wall
clock at which the producer handed it to the client (``time.time_ns()``). Latency = the
destination's timestamp of the record minus that: the JetStream stored time (the server's
clock), the PostgreSQL row's ``clock_timestamp()`` (inside the INSERT, before its commit).
Same machine, same clock. Percentiles p50/p90/p99/max over every record but the warm-up.

The **rss_sink_stopped** run pre-fills a Redis stream with far more records than the lanes
hold, runs the redis_pg pipeline, and once rows arrive locks the table (``LOCK TABLE ... IN
ACCESS EXCLUSIVE MODE`` in an open transaction): every INSERT waits. For ``--hold-seconds``
it samples, every second, the summed RSS and PSS (``/proc/PID/smaps_rollup``; PSS counts a
shared page once across the processes, RSS once in each) of the supervisor and its
children, and the records delivered but not acknowledged (the group's pending count): what
EdgePlane holds. Then the lock is released, the run must finish with every record stored once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
import nats
import redis.asyncio as aioredis
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from nats.js.api import AckPolicy, ConsumerConfig

from byteor.adapters.postgres import table_ddl
from byteor.bench._common import (
    command_line,
    described,
    finish,
    pick,
    say,
    versions,
    warn_if_busy,
)
from byteor.bench.adapters._harness import tcp_probe
from byteor.bench.lanes import BenchFailure, _fmt_rate, machine_info, source_info
from byteor.cli.common import EXIT_OK, CliError, emit

if TYPE_CHECKING:
    Conn = asyncpg.Connection[asyncpg.Record]

__all__ = [
    "CASES",
    "TARGET",
    "transform",
    "make_record",
    "check_landed",
    "Landed",
    "run_benchmark",
    "run_cli",
]

Side = Literal["ours", "hand"]
CASES = ("kafka_nats", "redis_pg", "rss_sink_stopped")
TARGET = 0.90
BATCH = 256  # EdgePlane's default --batch; the hand loops read as many
SIZE = 128
RECORDS = 100_000
QUICK_RECORDS = 10_000
ROUNDS = 3
PARTITIONS = 4
LATENCY_S, QUICK_LATENCY_S = 10.0, 3.0
HOLD_S, QUICK_HOLD_S = 60.0, 10.0
RSS_RECORDS, QUICK_RSS_RECORDS = 200_000, 50_000
POLL_S = 0.01
KAFKA = "127.0.0.1:9092"
NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"
PG_DSN = os.environ.get("BYTEOR_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
#: Group timeouts of both Kafka consumers (a fresh group forms in about a second on Tansu).
SESSION_MS, HEARTBEAT_MS = 1000, 200
OP = "byteor.bench.edgeplane:transform"

# -- the records and the stage --------------------------------------------------------------

PRICES = {"apple": 45, "bread": 320, "cheese": 890, "dates": 615, "eggs": 299}
SKUS = tuple(PRICES)
REGIONS = ("north", "south", "east", "west", "central")


def make_record(seq: int, sent_ns: int, size: int = SIZE) -> bytes:
    """Record ``seq``: an order as JSON (``sent_ns``: the producer's wall clock), padded with
    a ``note`` to about ``size`` bytes."""
    doc = {
        "seq": seq,
        "t": sent_ns,
        "customer": f"c-{seq % 10}",
        "sku": SKUS[(seq * 7) % len(SKUS)],
        "qty": 1 + seq % 4,
        "note": "",
    }
    base = len(json.dumps(doc, separators=(",", ":")))
    doc["note"] = "x" * max(0, size - base)
    return json.dumps(doc, separators=(",", ":")).encode()


def transform(record: bytes) -> bytes:
    """The stage, for ours and the hand loops: the order with ``unit_cents``,
    ``total_cents`` and ``region`` added."""
    order = json.loads(record)
    unit = PRICES[order["sku"]]
    order["unit_cents"] = unit
    order["total_cents"] = unit * order["qty"]
    order["region"] = REGIONS[int(order["customer"][2:]) % len(REGIONS)]
    return json.dumps(order, separators=(",", ":")).encode()


_LEN = struct.Struct(">Q")


def content_key(payload: bytes) -> bytes:
    """The PostgreSQL sink's ``dedupe = content`` key of a record without key or headers."""
    return hashlib.sha256(_LEN.pack(len(payload)) + payload + b"\x00").digest()


# -- the check ------------------------------------------------------------------------------


@dataclass
class Landed:
    """What the destination holds: per record its sequence, when the producer sent it
    (ns), when the destination stored it (s, the server's clock), and whether it was
    transformed as :func:`transform` says."""

    seqs: list[int] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)
    stored_s: list[float] = field(default_factory=list)
    wrong: int = 0

    def add(self, payload: bytes, stored_s: float) -> None:
        doc = json.loads(payload)
        self.seqs.append(doc["seq"])
        self.sent_ns.append(doc["t"])
        self.stored_s.append(stored_s)
        unit = PRICES.get(doc.get("sku"), -1)
        if doc.get("unit_cents") != unit or doc.get("total_cents") != unit * doc.get("qty", 0):
            self.wrong += 1


def check_landed(landed: Landed, expected: int, where: str) -> None:
    """Raise BenchFailure unless ``where`` holds sequences 0..expected-1 exactly once each,
    every one transformed."""
    seqs = landed.seqs
    if landed.wrong:
        raise BenchFailure(f"{where}: {landed.wrong} records were not transformed")
    unique = set(seqs)
    if len(seqs) != expected or len(unique) != expected or unique != set(range(expected)):
        missing = expected - len(unique & set(range(expected)))
        dupes = len(seqs) - len(unique)
        extra = len(unique - set(range(expected)))
        raise BenchFailure(
            f"{where} holds {len(seqs)} records, {expected} expected: {missing} missing,"
            f" {dupes} duplicated, {extra} unknown"
        )


# -- the two pipelines ----------------------------------------------------------------------


class Pipeline:
    """One pipeline's servers: set-up, pre-fill, the watcher, read-back, the plan, the
    hand loop."""

    name: str
    what: str
    ours_what: str
    hand_what: str

    async def setup(self, tag: str) -> dict[str, str]:
        raise NotImplementedError

    async def produce(self, names: dict[str, str], seqs: range, rate: float = 0.0) -> Any:
        """Put records ``seqs`` upstream (``rate`` > 0: paced at that many a second);
        returns the ends the watcher compares with."""
        raise NotImplementedError

    async def settled(self, names: dict[str, str], ends: Any) -> bool:
        """Every record up to ``ends`` acknowledged upstream."""
        raise NotImplementedError

    async def flowing(self, names: dict[str, str], ends: Any) -> bool:
        """Records have started to move (the first acknowledgement or read upstream)."""
        raise NotImplementedError

    async def read_back(self, names: dict[str, str]) -> Landed:
        raise NotImplementedError

    async def drop(self, names: dict[str, str]) -> None:
        raise NotImplementedError

    def plan(self, names: dict[str, str], op: str) -> str:
        raise NotImplementedError

    async def hand(
        self, names: dict[str, str], op: Callable[[bytes], bytes | None], stop: Any
    ) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Release the admin connections."""


async def _chunks(seqs: range, rate: float) -> AsyncIterator[range]:
    """``seqs`` in the chunks a producer sends: 1000 at a time as fast as they are taken, or,
    with ``rate`` > 0, the records due by now at ``rate`` a second since the first."""
    t0 = time.monotonic()
    i = seqs.start
    while i < seqs.stop:
        n = int((time.monotonic() - t0) * rate) - (i - seqs.start) if rate else 1000
        if n <= 0:
            await asyncio.sleep(0.002)
            continue
        chunk = range(i, min(seqs.stop, i + n))
        yield chunk
        i = chunk.stop


class KafkaNats(Pipeline):
    name = "kafka_nats"
    what = f"Kafka ({PARTITIONS} partitions) -> transform (own process) -> NATS JetStream"
    ours_what = "edgeplane run: kafka source, the stage in its own process, nats sink"
    hand_what = (
        "aiokafka getmany(max_records=256) -> transform -> js.publish_async (Nats-Msg-Id ="
        " BLAKE2b) with the PubAcks gathered -> commit of the batch's offsets"
    )

    def __init__(self) -> None:
        self._admin: Any = None
        self._nc: Any = None
        self._watcher: tuple[str, Any] | None = None

    async def _kafka(self) -> Any:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
            await admin.start()
            self._admin = admin
        return self._admin

    async def _nats(self) -> Any:
        if self._nc is None:
            self._nc = await nats.connect(NATS_URL)
        return self._nc

    async def setup(self, tag: str) -> dict[str, str]:
        names = {"topic": f"bench-ep-{tag}", "group": f"bench-ep-{tag}", "stream": f"EP-{tag}"}
        names["subject"] = f"{names['stream']}.out"
        await (await self._kafka()).create_topics([NewTopic(names["topic"], PARTITIONS, 1)])
        js = (await self._nats()).jetstream()
        await js.add_stream(name=names["stream"], subjects=[names["subject"]])
        return names

    async def produce(self, names: dict[str, str], seqs: range, rate: float = 0.0) -> Any:
        producer = AIOKafkaProducer(
            bootstrap_servers=KAFKA,
            acks="all",
            enable_idempotence=False,
            linger_ms=0 if rate else 5,
        )
        await producer.start()
        ends: dict[int, int] = {}
        try:
            futures: list[Any] = []
            async for chunk in _chunks(seqs, rate):
                for seq in chunk:
                    rec = make_record(seq, time.time_ns())
                    futures.append(await producer.send(names["topic"], rec))
                if not rate or len(futures) > 5000:
                    for meta in await asyncio.gather(*futures):
                        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
                    futures.clear()
            for meta in await asyncio.gather(*futures):
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        finally:
            await producer.stop()
        return ends

    async def _committed(self, names: dict[str, str], part: int) -> int | None:
        """The group's committed offset of ``part``, from a consumer of the group that never
        joins it (committed() is an OffsetFetch), started on first use per group."""
        if self._watcher is None or self._watcher[0] != names["group"]:
            await self._stop_watcher()
            watcher = AIOKafkaConsumer(
                bootstrap_servers=KAFKA, group_id=names["group"], enable_auto_commit=False
            )
            await watcher.start()
            self._watcher = (names["group"], watcher)
        got: int | None = await self._watcher[1].committed(TopicPartition(names["topic"], part))
        return got

    async def settled(self, names: dict[str, str], ends: Any) -> bool:
        for part, end in ends.items():
            got = await self._committed(names, part)
            if got is None or got < end:
                return False
        return True

    async def flowing(self, names: dict[str, str], ends: Any) -> bool:
        for part in ends:
            if await self._committed(names, part):
                return True
        return False

    async def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher[1].stop()

    async def read_back(self, names: dict[str, str]) -> Landed:
        js = (await self._nats()).jetstream()
        held = (await js.stream_info(names["stream"])).state.messages
        psub = await js.pull_subscribe(
            names["subject"],
            durable="check",
            stream=names["stream"],
            config=ConsumerConfig(ack_policy=AckPolicy.NONE),
        )
        landed = Landed()
        try:
            while len(landed.seqs) < held:
                msgs = await psub.fetch(min(1000, held - len(landed.seqs)), timeout=5)
                for m in msgs:
                    landed.add(m.data, m.metadata.timestamp.timestamp())
        finally:
            await psub.unsubscribe()
        return landed

    async def drop(self, names: dict[str, str]) -> None:
        await self._stop_watcher()
        with contextlib.suppress(Exception):
            await (await self._nats()).jetstream().delete_stream(names["stream"])
        with contextlib.suppress(Exception):  # Tansu keeps topics in memory
            await (await self._kafka()).delete_topics([names["topic"]])

    def plan(self, names: dict[str, str], op: str) -> str:
        return textwrap.dedent(
            f"""\
            name = "bench_kafka_nats"

            [sources.orders]
            adapter = "kafka"
            message_bytes = 256
            params = {{ bootstrap_servers = "{KAFKA}", topic = "{names["topic"]}", group = "{names["group"]}", session_timeout_ms = "{SESSION_MS}", heartbeat_interval_ms = "{HEARTBEAT_MS}" }}

            [stages.transform]
            op = "{op}"
            inputs = "orders"
            process = "transform"
            message_bytes = 512

            [sinks.out]
            adapter = "nats"
            inputs = "transform"
            params = {{ servers = "{NATS_URL}", subject = "{names["subject"]}" }}
            """  # noqa: E501 - one TOML line a table
        )

    async def hand(
        self, names: dict[str, str], op: Callable[[bytes], bytes | None], stop: Any
    ) -> None:
        consumer = AIOKafkaConsumer(
            names["topic"],
            bootstrap_servers=KAFKA,
            group_id=names["group"],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
        )
        await consumer.start()
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        subject = names["subject"]
        try:
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=500, max_records=BATCH)
                if not fetched:
                    continue
                out = [
                    p for msgs in fetched.values() for m in msgs if (p := op(m.value)) is not None
                ]
                futures = [
                    await js.publish_async(
                        subject,
                        p,
                        headers={"Nats-Msg-Id": hashlib.blake2b(p, digest_size=16).hexdigest()},
                    )
                    for p in out
                ]
                await asyncio.wait_for(asyncio.gather(*futures), 5.0)
                await consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in fetched.items()})
        finally:
            await consumer.stop()
            await nc.close()

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()


_INSERT = (
    "INSERT INTO {t} (payload, key, headers, dedupe_key) SELECT * FROM"
    " unnest($1::bytea[], $2::bytea[], $3::jsonb[], $4::bytea[])"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)


class RedisPg(Pipeline):
    name = "redis_pg"
    what = "Redis stream -> transform (own process) -> PostgreSQL table"
    ours_what = "edgeplane run: redis source, the stage in its own process, postgres sink"
    hand_what = (
        "redis.asyncio XREADGROUP COUNT 256 -> transform -> asyncpg INSERT ... unnest ON"
        " CONFLICT (SHA-256 content keys) -> XACK of the ids"
    )
    group = "bench"

    def __init__(self) -> None:
        self._redis: aioredis.Redis | None = None
        self._pg: Conn | None = None

    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.from_url(REDIS_URL)
        return self._redis

    async def _conn(self) -> Conn:
        if self._pg is None:
            self._pg = await asyncpg.connect(PG_DSN)
        return self._pg

    async def setup(self, tag: str) -> dict[str, str]:
        tag = tag.replace("-", "_")
        names = {"stream": f"bench-ep-{tag}", "table": f"bench_ep_{tag}"}
        await self._r().delete(names["stream"])
        await self._r().xgroup_create(names["stream"], self.group, id="0", mkstream=True)
        conn = await self._conn()
        await conn.execute(table_ddl(names["table"]))
        await conn.execute(
            f"ALTER TABLE {names['table']} ADD COLUMN stored_at timestamptz NOT NULL"
            " DEFAULT clock_timestamp()"
        )
        return names

    async def produce(self, names: dict[str, str], seqs: range, rate: float = 0.0) -> Any:
        client, stream = self._r(), names["stream"]
        last: bytes = b""
        async for chunk in _chunks(seqs, rate):
            pipe = client.pipeline(transaction=False)
            for seq in chunk:
                pipe.xadd(stream, {b"p": make_record(seq, time.time_ns())})
            last = (await pipe.execute())[-1]
        return last

    async def _group(self, names: dict[str, str]) -> Any:
        """The group's ``XINFO GROUPS`` entry (pending count, last delivered id)."""
        groups: Any = await self._r().xinfo_groups(names["stream"])
        return next(g for g in groups if g["name"] == self.group.encode())

    async def settled(self, names: dict[str, str], ends: Any) -> bool:
        g = await self._group(names)
        return bool(g["pending"] == 0 and g["last-delivered-id"] == ends)

    async def flowing(self, names: dict[str, str], ends: Any) -> bool:
        return bool((await self._group(names))["last-delivered-id"] != b"0-0")

    async def pending(self, names: dict[str, str]) -> int:
        return int((await self._group(names))["pending"])

    async def read_back(self, names: dict[str, str]) -> Landed:
        rows = await (await self._conn()).fetch(
            f"SELECT payload, extract(epoch from stored_at)::float8 FROM {names['table']}"
        )
        landed = Landed()
        for payload, at in rows:
            landed.add(payload, at)
        return landed

    async def drop(self, names: dict[str, str]) -> None:
        await self._r().delete(names["stream"])
        await (await self._conn()).execute(f"DROP TABLE IF EXISTS {names['table']}")

    def plan(self, names: dict[str, str], op: str) -> str:
        return textwrap.dedent(
            f"""\
            name = "bench_redis_pg"

            [sources.readings]
            adapter = "redis"
            message_bytes = 256
            params = {{ url = "{REDIS_URL}", stream = "{names["stream"]}", group = "{self.group}", consumer = "edgeplane" }}

            [stages.transform]
            op = "{op}"
            inputs = "readings"
            process = "transform"
            message_bytes = 512

            [sinks.table]
            adapter = "postgres"
            inputs = "transform"
            params = {{ dsn = "{PG_DSN}", table = "{names["table"]}", dedupe = "content", create = "false" }}
            """  # noqa: E501 - one TOML line a table
        )

    async def hand(
        self, names: dict[str, str], op: Callable[[bytes], bytes | None], stop: Any
    ) -> None:
        client = aioredis.from_url(REDIS_URL)
        conn = await asyncpg.connect(PG_DSN)
        insert, stream = _INSERT.format(t=names["table"]), names["stream"]
        try:
            while not stop.is_set():
                reply: Any = await client.xreadgroup(
                    self.group, "hand", {stream: ">"}, count=BATCH, block=500
                )
                if not reply:
                    continue
                entries = reply[0][1]
                out = [p for _, fields in entries if (p := op(fields[b"p"])) is not None]
                nulls = [None] * len(out)
                await conn.execute(insert, out, nulls, nulls, [content_key(p) for p in out])
                await client.xack(stream, self.group, *[eid for eid, _ in entries])
        finally:
            await client.aclose()
            await conn.close()

    async def close(self) -> None:
        r, self._redis = self._redis, None
        if r is not None:
            await r.aclose()
        pg, self._pg = self._pg, None
        if pg is not None:
            await pg.close()


PIPELINES: dict[str, type[Pipeline]] = {"kafka_nats": KafkaNats, "redis_pg": RedisPg}
PROBES = {
    "kafka_nats": ("127.0.0.1:9092", "127.0.0.1:4222"),
    "redis_pg": ("127.0.0.1:6379", "127.0.0.1:5432"),
    "rss_sink_stopped": ("127.0.0.1:6379", "127.0.0.1:5432"),
}


# -- processes: launching, stopping, their memory and CPU ----------------------------------


def _stat(pid: int | str) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after the command name (state first, then the parent
    pid, ...: proc(5)'s field 3 on); empty when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return []
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    return stat[stat.rindex(b")") + 2 :].split()


def _children(root: int) -> list[int]:
    """``root`` and every live descendant (from ``/proc/*/stat``)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(entry)):
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, ()))
    return out


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in KiB; (0, 0) when it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when it is gone)."""
    fields = _stat(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Launched:
    """A side running as a subprocess (its own process group)."""

    side: Side
    proc: subprocess.Popen[str]
    workdir: Path
    run_name: str
    launched_ns: int

    def roles(self) -> dict[int, str]:
        """pid -> role: ours from the supervisor's "data plane started" log line."""
        if self.side == "hand":
            return {self.proc.pid: "hand loop"}
        roles = {self.proc.pid: "supervisor"}
        log = (self.workdir / "stderr").read_text(errors="replace")
        for line in log.splitlines():
            if "data plane started" in line:
                for part in line.split(": ", 2)[-1].split(", "):
                    role, _, pid = part.rpartition(" (pid ")
                    if pid.rstrip(")").isdigit():
                        roles[int(pid.rstrip(")"))] = role.strip()
        return roles

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per role."""
        roles = self.roles()
        out: dict[str, float] = {}
        for pid in _children(self.proc.pid):
            role = roles.get(pid, f"pid {pid}")
            out[role] = out.get(role, 0.0) + _cpu_s(pid)
        return out

    def memory_kib(self) -> tuple[int, int]:
        pids = _children(self.proc.pid)
        mems = [_memory_kib(p) for p in pids]
        return sum(m[0] for m in mems), sum(m[1] for m in mems)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchFailure(f"{self.side} exited early ({self.proc.returncode}): {self.tail()}")

    def tail(self) -> str:
        err = (self.workdir / "stderr").read_text(errors="replace").strip().splitlines()
        return " | ".join(err[-5:]) or "(no output)"

    def stop(self, timeout_s: float) -> dict[str, Any]:
        """SIGTERM, wait; ours: its JSON summary, which must say it drained cleanly."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchFailure(f"{self.side} did not stop within {timeout_s:.0f} s") from None
        code = self.proc.returncode
        if code != 0:
            raise BenchFailure(f"{self.side} exited {code}: {self.tail()}")
        if self.side == "hand":
            return {}
        try:
            summary: dict[str, Any] = json.loads((self.workdir / "stdout").read_text())
        except ValueError:
            raise BenchFailure(f"edgeplane printed no JSON summary: {self.tail()}") from None
        if summary.get("restarts"):
            raise BenchFailure(f"edgeplane restarted {summary['restarts']}x: {self.tail()}")
        return summary

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def cleanup(self) -> None:
        self.kill()
        for f in os.listdir("/dev/shm"):
            if f.startswith((f"byteor-{self.run_name}.", f"edgeplane-{self.run_name}.")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join("/dev/shm", f))


def launch(pipe: Pipeline, side: Side, names: dict[str, str], op: str, workdir: Path) -> Launched:
    """Start ``side`` of ``pipe`` on ``names`` (stdout and stderr to files in ``workdir``)."""
    run_name = "bench" + uuid.uuid4().hex[:10]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if side == "ours":
        plan = workdir / "plan.toml"
        plan.write_text(pipe.plan(names, op))
        argv = [sys.executable, "-m", "byteor.edgeplane", "run", str(plan), "--json"]
        argv += ["--batch", str(BATCH)]
        env.update(
            EDGEPLANE_NAME=run_name,
            EDGEPLANE_METRICS_ADDR="off",
            EDGEPLANE_LOG_LEVEL="info",
            EDGEPLANE_PROGRESS="off",
        )
    else:
        argv = [sys.executable, "-m", "byteor.bench.edgeplane", pipe.name, json.dumps(names), op]
    with open(workdir / "stdout", "w") as out, open(workdir / "stderr", "w") as err:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=err, text=True, env=env, start_new_session=True
        )
    return Launched(side, proc, workdir, run_name, time.time_ns())


async def _watch(
    pipe: Pipeline,
    names: dict[str, str],
    ends: Any,
    run: Launched,
    deadline: float,
    until: str = "settled",
) -> int:
    """Poll until every record is acknowledged upstream (``until = "flowing"``: until the
    first moved); the wall clock (ns) then."""
    check = pipe.settled if until == "settled" else pipe.flowing
    while not await check(names, ends):
        run.check_alive()
        if time.monotonic() > deadline:
            raise BenchFailure(f"{run.side}: not every record acknowledged upstream in time")
        await asyncio.sleep(POLL_S)
    return time.time_ns()


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1]}


# -- runs -----------------------------------------------------------------------------------


async def throughput_run(
    pipe: Pipeline, side: Side, records: int, op: str, timeout_s: float, tag: str
) -> dict[str, Any]:
    """One timed run of ``side`` over ``records`` pre-filled records, checked."""
    names = await pipe.setup(tag)
    with tempfile.TemporaryDirectory(prefix="byteor-bench-ep-") as tmp:
        run: Launched | None = None
        try:
            ends = await pipe.produce(names, range(records))
            children0 = os.times()
            run = launch(pipe, side, names, op, Path(tmp))
            deadline = time.monotonic() + timeout_s
            await _watch(pipe, names, ends, run, deadline, until="flowing")
            cpu0 = run.cpu()
            done_ns = await _watch(pipe, names, ends, run, deadline)
            cpu = run.cpu()
            summary = run.stop(timeout_s)
            children1 = os.times()
            landed = await pipe.read_back(names)
            check_landed(landed, records, f"{side}: the destination")
        finally:
            if run is not None:
                run.cleanup()
            await pipe.drop(names)
    first_s = min(landed.stored_s)
    last_s = max(landed.stored_s)
    settled_s = done_ns / 1e9
    return {
        "records": records,
        "rate": records / max(1e-9, settled_s - first_s),
        "steady_rate": (records - 1) / max(1e-9, last_s - first_s),
        "elapsed_s": settled_s - first_s,
        "wall_s": (done_ns - run.launched_ns) / 1e9 if run else None,
        "startup_s": first_s - run.launched_ns / 1e9 if run else None,
        "cpu_s_by_process": {k: round(v, 3) for k, v in sorted(cpu.items())},
        "flow_cpu_s_by_process": {
            k: round(v - cpu0.get(k, 0.0), 3) for k, v in sorted(cpu.items())
        },
        "cpu_us": sum(v - cpu0.get(k, 0.0) for k, v in cpu.items()) * 1e6 / records,
        "cpu_s_total": round(
            (children1.children_user + children1.children_system)
            - (children0.children_user + children0.children_system),
            3,
        ),
        "summary": summary or None,
    }


async def latency_run(
    pipe: Pipeline, side: Side, rate: float, seconds: float, op: str, timeout_s: float, tag: str
) -> dict[str, Any]:
    """A steady ``rate`` for ``seconds`` after one warm-up record; latency percentiles."""
    names = await pipe.setup(tag)
    count = max(2, int(rate * seconds))
    with tempfile.TemporaryDirectory(prefix="byteor-bench-ep-") as tmp:
        run: Launched | None = None
        try:
            run = launch(pipe, side, names, op, Path(tmp))
            deadline = time.monotonic() + timeout_s
            warm = await pipe.produce(names, range(1))
            await _watch(pipe, names, warm, run, deadline)
            t0 = time.monotonic()
            ends = await pipe.produce(names, range(1, count + 1), rate=rate)
            produced_s = time.monotonic() - t0
            await _watch(pipe, names, ends, run, deadline + seconds)
            run.stop(timeout_s)
            landed = await pipe.read_back(names)
            check_landed(landed, count + 1, f"{side}: the destination")
        finally:
            if run is not None:
                run.cleanup()
            await pipe.drop(names)
    lat_ms = [
        (stored - sent / 1e9) * 1e3
        for seq, sent, stored in zip(landed.seqs, landed.sent_ns, landed.stored_s, strict=True)
        if seq > 0
    ]
    return {
        "rate_asked": rate,
        "rate_produced": count / produced_s,
        "records": count,
        "latency_ms": {k: round(v, 3) for k, v in _percentiles(lat_ms).items()},
    }


async def rss_run(
    records: int, hold_s: float, op: str, timeout_s: float, tag: str
) -> dict[str, Any]:
    """redis_pg with the table locked for ``hold_s``: memory and what EdgePlane holds."""
    pipe = RedisPg()
    samples: list[dict[str, Any]] = []
    try:
        names = await pipe.setup(tag)
        with tempfile.TemporaryDirectory(prefix="byteor-bench-ep-") as tmp:
            run: Launched | None = None
            locker: Conn | None = None
            try:
                ends = await pipe.produce(names, range(records))
                run = launch(pipe, "ours", names, op, Path(tmp))
                deadline = time.monotonic() + timeout_s
                conn = await pipe._conn()
                while not await conn.fetchval(f"SELECT count(*) > 0 FROM {names['table']}"):
                    run.check_alive()
                    if time.monotonic() > deadline:
                        raise BenchFailure("rss: no row arrived before the lock")
                    await asyncio.sleep(POLL_S)
                locker = await asyncpg.connect(PG_DSN)
                tx = locker.transaction()
                await tx.start()
                await locker.execute(f"LOCK TABLE {names['table']} IN ACCESS EXCLUSIVE MODE")
                t0 = time.monotonic()
                stored_at_lock = await locker.fetchval(f"SELECT count(*) FROM {names['table']}")
                while (t := time.monotonic() - t0) < hold_s:
                    run.check_alive()
                    rss, pss = run.memory_kib()
                    samples.append(
                        {
                            "t_s": round(t, 2),
                            "rss_mib": round(rss / 1024, 1),
                            "pss_mib": round(pss / 1024, 1),
                            "pending": await pipe.pending(names),
                        }
                    )
                    say(
                        f"  rss: {t:5.1f} s  rss {rss / 1024:6.1f} MiB  pss {pss / 1024:6.1f} MiB"
                        f"  pending {samples[-1]['pending']}"
                    )
                    await asyncio.sleep(max(0.0, len(samples) - (time.monotonic() - t0)))
                await tx.rollback()
                await locker.close()
                locker = None
                await _watch(pipe, names, ends, run, time.monotonic() + timeout_s)
                summary = run.stop(timeout_s)
                landed = await pipe.read_back(names)
                check_landed(landed, records, "rss: the table")
            finally:
                if locker is not None:
                    await locker.close()
                if run is not None:
                    run.cleanup()
                await pipe.drop(names)
    finally:
        await pipe.close()
    later = [s for s in samples if s["t_s"] >= min(5.0, hold_s / 2)]
    span = later[-1]["t_s"] - later[0]["t_s"] if len(later) > 1 else 0.0
    return {
        "records": records,
        "hold_s": hold_s,
        "stored_before_lock": int(stored_at_lock),
        "peak_rss_mib": max(s["rss_mib"] for s in samples),
        "peak_pss_mib": max(s["pss_mib"] for s in samples),
        "first_rss_mib": samples[0]["rss_mib"],
        "last_rss_mib": samples[-1]["rss_mib"],
        "rss_growth_mib_per_min": (
            (later[-1]["rss_mib"] - later[0]["rss_mib"]) * 60 / span if span else 0.0
        ),
        "pss_growth_mib_per_min": (
            (later[-1]["pss_mib"] - later[0]["pss_mib"]) * 60 / span if span else 0.0
        ),
        "peak_pending": max(s["pending"] for s in samples),
        "samples": samples,
        "summary": summary,
    }


# -- the benchmark --------------------------------------------------------------------------


async def _bounded(aw: Awaitable[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout_s):
            return await aw
    except TimeoutError:
        raise BenchFailure(f"did not finish within {timeout_s:.0f} s (a hang)") from None


def _failed(doc: dict[str, Any], exc: Exception) -> None:
    """Mark the case of ``doc`` failed by ``exc``, and say so."""
    doc["status"], doc["detail"] = "failed", f"{type(exc).__name__}: {exc}"
    say(f"  FAILED: {doc['detail']}")


async def _pipeline_case(
    pipe: Pipeline,
    *,
    records: int,
    rounds: int,
    latency_s: float,
    latency_rate: float | None,
    op: str,
    timeout_s: float,
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "hand": []}
    doc: dict[str, Any] = {
        "case": pipe.name,
        "what": pipe.what,
        "ours": pipe.ours_what,
        "hand": pipe.hand_what,
        "records": records,
        "runs": runs,
        "status": "ok",
    }
    try:
        for rnd in range(rounds):
            order: tuple[Side, Side] = ("ours", "hand") if rnd % 2 == 0 else ("hand", "ours")
            for side in order:
                tag = f"{pipe.name[:5]}-{side}-{rnd}-{uuid.uuid4().hex[:6]}"
                say(f"{pipe.name}: {side}, round {rnd + 1} of {rounds} ...")
                got = await _bounded(
                    throughput_run(pipe, side, records, op, timeout_s, tag), timeout_s * 3
                )
                say(
                    f"  {_fmt_rate(got['rate'])} records/s (steady {_fmt_rate(got['steady_rate'])},"
                    f" wall {got['wall_s']:.2f} s with start-up)"
                )
                runs[side].append(got)
        ours = statistics.median(r["rate"] for r in runs["ours"])
        hand = statistics.median(r["rate"] for r in runs["hand"])
        doc.update(
            ours_median=ours,
            hand_median=hand,
            ratio=ours / hand,
            ratio_pairs=[
                o["rate"] / h["rate"] for o, h in zip(runs["ours"], runs["hand"], strict=True)
            ],
            steady_ratio=statistics.median(r["steady_rate"] for r in runs["ours"])
            / statistics.median(r["steady_rate"] for r in runs["hand"]),
            ours_cpu_us=statistics.median(r["cpu_us"] for r in runs["ours"]),
            hand_cpu_us=statistics.median(r["cpu_us"] for r in runs["hand"]),
            wall_ours_s=statistics.median(r["wall_s"] for r in runs["ours"]),
            wall_hand_s=statistics.median(r["wall_s"] for r in runs["hand"]),
            target=TARGET,
            target_met=ours / hand >= TARGET,
        )
        if latency_s > 0:
            rate = latency_rate or round(ours / 2, -2) or 100.0
            doc["latency"] = {}
            for side in ("ours", "hand"):
                say(f"{pipe.name}: latency, {side}, {rate:.0f} records/s for {latency_s:.0f} s")
                tag = f"{pipe.name[:5]}-lat-{side}-{uuid.uuid4().hex[:6]}"
                got = await _bounded(
                    latency_run(pipe, side, rate, latency_s, op, timeout_s, tag),
                    timeout_s * 3 + latency_s,
                )
                say(f"  {got['latency_ms']}")
                doc["latency"][side] = got
    except Exception as exc:  # a client library's error fails the case, not the benchmark
        _failed(doc, exc)
    return doc


async def run_benchmark(
    names: Sequence[str],
    *,
    records: int,
    rounds: int,
    latency_s: float,
    latency_rate: float | None = None,
    hold_s: float,
    rss_records: int,
    timeout_s: float,
    op: str = OP,
) -> list[dict[str, Any]]:
    """Every case of ``names``: a result dict each (``status``: ok, failed or skipped)."""
    out: list[dict[str, Any]] = []
    for name in names:
        why = next((w for a in PROBES[name] if (w := tcp_probe(name, a))), None)
        if why:
            out.append({"case": name, "status": "skipped", "detail": why})
            continue
        if name == "rss_sink_stopped":
            say(f"rss_sink_stopped: {rss_records} records, the table locked for {hold_s:.0f} s")
            doc: dict[str, Any] = {"case": name, "status": "ok"}
            try:
                doc.update(
                    await _bounded(
                        rss_run(rss_records, hold_s, op, timeout_s, uuid.uuid4().hex[:8]),
                        timeout_s * 3 + hold_s,
                    )
                )
            except Exception as exc:  # as in _pipeline_case
                _failed(doc, exc)
            out.append(doc)
            continue
        pipe = PIPELINES[name]()
        try:
            out.append(
                await _pipeline_case(
                    pipe,
                    records=records,
                    rounds=rounds,
                    latency_s=latency_s,
                    latency_rate=latency_rate,
                    op=op,
                    timeout_s=timeout_s,
                )
            )
        finally:
            await pipe.close()
    return out


def _table(results: Sequence[dict[str, Any]], rounds: int, machine: str) -> str:
    lines = [
        f"byteor bench edgeplane: {rounds} round(s), ours and the hand loop alternating; {machine}",
        "",
        f"{'':<27}{'records/s, median':^22}  {'':<16}{'wall s, start-up':^14}"
        f"  {'CPU us a record':^21}",
        f"{'case':<11}{'records':>8}  {'hand':>9}  {'ours':>9}  {'ours/hand':>9}  {'>= 0.90':<7}"
        f"  {'steady':>6}  {'hand':>6}  {'ours':>6}  {'hand':>5}  {'ours':>5}  {'h/o':>5}",
    ]
    for r in results:
        if r["case"] == "rss_sink_stopped":
            continue
        head = f"{r['case']:<11}{r.get('records', ''):>8}"
        if "ratio" not in r:
            lines.append(f"{head}  {r['status'].upper()}: {r.get('detail', '')}")
            continue
        lines.append(
            f"{head}  {_fmt_rate(r['hand_median']):>9}  {_fmt_rate(r['ours_median']):>9}"
            f"  {r['ratio']:>8.2f}x  {'met' if r['target_met'] else 'MISSED':<7}"
            f"  {r['steady_ratio']:>5.2f}x  {r['wall_hand_s']:>6.2f}  {r['wall_ours_s']:>6.2f}"
            f"  {r['hand_cpu_us']:>5.1f}  {r['ours_cpu_us']:>5.1f}"
            f"  {r['hand_cpu_us'] / max(r['ours_cpu_us'], 1e-9):>4.2f}x"
        )
    lat = [r for r in results if r.get("latency")]
    if lat:
        lines += ["", "latency, ms (destination's clock - producer's), at a steady rate:"]
        lines.append(
            f"{'case':<11}{'side':<5}  {'rate':>7}  {'p50':>7}  {'p90':>7}  {'p99':>7}  {'max':>7}"
        )
        for r in lat:
            for side, got in r["latency"].items():
                ms = got["latency_ms"]
                lines.append(
                    f"{r['case']:<11}{side:<5}  {_fmt_rate(got['rate_produced']):>7}"
                    f"  {ms['p50']:>7.1f}  {ms['p90']:>7.1f}  {ms['p99']:>7.1f}  {ms['max']:>7.1f}"
                )
    for r in results:
        if r["case"] != "rss_sink_stopped":
            continue
        lines.append("")
        if r["status"] != "ok":
            lines.append(f"rss_sink_stopped  {r['status'].upper()}: {r.get('detail', '')}")
            continue
        lines.append(
            f"rss_sink_stopped: {r['records']} records, the sink blocked {r['hold_s']:.0f} s:"
            f" peak RSS {r['peak_rss_mib']:.1f} MiB (summed), peak PSS {r['peak_pss_mib']:.1f}"
            f" MiB; RSS {r['first_rss_mib']:.1f} -> {r['last_rss_mib']:.1f} MiB"
            f" ({r['rss_growth_mib_per_min']:+.2f} MiB/min after the first seconds);"
            f" at most {r['peak_pending']} records held (delivered, not acknowledged)"
        )
    notes = [
        "rate = N / (settled - first stored): first stored is the destination's timestamp of"
        " its earliest record, settled is when every record was seen acknowledged upstream"
        " (committed offsets; the group's pending list), polled every 10 ms. Start-up and the"
        " consumer group forming are excluded from the rate and included in the wall time."
        " steady = ours/hand of (N - 1) / (last stored - first stored). Every run is checked:"
        " each record once in the destination, transformed; ours drained with exit 0."
        " CPU: user + system time of every process of the side (ours: supervisor, edge-in,"
        " stage, edge-out) from the first record moving to settled, per record.",
    ]
    lines.append("")
    for note in notes:
        lines.extend(textwrap.wrap(note, 100))
    for r in results:
        if r.get("ours"):
            for who in ("ours", "hand"):
                lines.extend(described(f"{r['case']}: {who} = {r[who]}"))
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> str:
    parts = ["byteor", "bench", "edgeplane"]
    for flag in (
        "only",
        "records",
        "repeat",
        "latency_seconds",
        "latency_rate",
        "hold_seconds",
        "rss_records",
    ):
        value = getattr(args, flag, None)
        if value is not None:
            value = ",".join(value) if isinstance(value, list) else str(value)
            parts += [f"--{flag.replace('_', '-')}", value]
    return command_line(parts, args)


def select(only: Sequence[str] | None) -> list[str]:
    """Case names from ``--only`` (comma-separated, repeatable); all when not given."""
    return pick(only, CASES, "case")


def run_cli(args: argparse.Namespace) -> int:
    """``byteor bench edgeplane``: exit 0 when every case that could run ran clean, 1 when
    a check failed (a record lost, duplicated, not transformed or not acknowledged, a hang)."""
    names = select(getattr(args, "only", None))
    if getattr(args, "list", False):
        emit(args, "\n".join(CASES), {"cases": list(CASES)})
        return EXIT_OK
    quick = bool(getattr(args, "quick", False))
    records = args.records or (QUICK_RECORDS if quick else RECORDS)
    rounds = args.repeat or (1 if quick else ROUNDS)
    latency_s = (
        args.latency_seconds
        if args.latency_seconds is not None
        else (QUICK_LATENCY_S if quick else LATENCY_S)
    )
    hold_s = (
        args.hold_seconds if args.hold_seconds is not None else (QUICK_HOLD_S if quick else HOLD_S)
    )
    rss_records = args.rss_records or (QUICK_RSS_RECORDS if quick else RSS_RECORDS)
    if records < 2 or rounds < 1 or rss_records < 2 or latency_s < 0 or hold_s < 1:
        raise CliError(
            "--records and --rss-records must be at least 2, --repeat at least 1,"
            " --hold-seconds at least 1, --latency-seconds not negative"
        )
    started = time.monotonic()
    machine = machine_info()
    machine["versions"] = versions(("byteor", "aiokafka", "nats-py", "redis", "asyncpg"))
    warn_if_busy(machine)
    results = asyncio.run(
        run_benchmark(
            names,
            records=records,
            rounds=rounds,
            latency_s=latency_s,
            latency_rate=args.latency_rate,
            hold_s=hold_s,
            rss_records=rss_records,
            timeout_s=float(args.timeout),
        )
    )
    failed = [r for r in results if r["status"] == "failed"]
    doc: dict[str, Any] = {
        "benchmark": "byteor bench edgeplane",
        "command": _command(args),
        "argv": list(sys.argv),
        "machine": machine,
        "source": source_info(),
        "settings": {
            "records": records,
            "size": SIZE,
            "batch": BATCH,
            "rounds": rounds,
            "quick": quick,
            "latency_seconds": latency_s,
            "hold_seconds": hold_s,
            "rss_records": rss_records,
            "target": TARGET,
            "timing": (
                "rate = N / (settled - first stored); first stored: the destination's"
                " timestamp of its earliest record; settled: every record acknowledged"
                " upstream, polled every 10 ms"
            ),
        },
        "results": results,
        "failures": [f"{r['case']}: {r.get('detail')}" for r in failed],
        "skipped": [f"{r['case']}: {r['detail']}" for r in results if r["status"] == "skipped"],
        "load_average_after": list(os.getloadavg()),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    text = _table(
        results,
        rounds,
        f"{machine['cpus_usable']} CPUs, load average"
        f" {machine['load_average'][0]:.2f} before, {doc['load_average_after'][0]:.2f} after",
    )
    return finish(args, text, doc, bool(failed))


# -- the hand loops' process -----------------------------------------------------------------


async def _hand_main(case: str, names: dict[str, str], op_path: str) -> None:
    from byteor.exec import import_object  # noqa: PLC0415 - only the hand process needs it

    op = import_object(op_path)
    if not callable(op):
        raise SystemExit(f"{op_path} is not callable")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await PIPELINES[case]().hand(names, op, stop)


if __name__ == "__main__":
    asyncio.run(_hand_main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]))
