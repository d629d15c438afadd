"""The EdgePlane examples (``examples/*/``) run end to end against the real servers.

Each test gives the example fresh names through the variables its plan reads (a topic, a
stream, a table, a bucket of its own), puts N records upstream with the example's own
``demo.py``, runs ``edgeplane run`` on the example's plan as a subprocess, polls the sink
until it holds N records (with a deadline), stops the run with SIGTERM and then checks:
every record once, in order (per key where the source orders per key), the upstream's
acknowledgement state (nothing pending, commits at the end), exit code 0 and the JSON
summary. The failure tests check that a bad plan, an unreachable server and a missing
adapter or client library each end the run with a non-zero code and one line on stderr.

Servers: ``scripts/services.sh`` (Tansu on 9092, NATS 4222, Redis 6379, PostgreSQL 5432,
moto 5000). Bounded: every wait has a deadline, every process a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from byteor.adapters import OutRecord
from byteor.testing import ConformanceTests

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
_names = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test, and no earlier run, uses."""
    return f"{prefix}{os.getpid()}x{next(_names)}x{int(time.time()) % 100_000}"


def load_module(path: Path) -> ModuleType:
    """A module of an example folder, imported from its file under a name of its own (the
    examples each have a ``demo.py``)."""
    name = f"_example_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something true (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class EdgePlaneRun:
    """``edgeplane run PLAN --json`` as a subprocess, with the example's variables set.

    The run's name (``EDGEPLANE_NAME``) is unique, the metrics endpoint is off, and only
    warnings are logged, so stderr holds what went wrong.
    """

    def __init__(self, plan: Path, env: Mapping[str, str], *, pythonpath: tuple[Path, ...] = ()):
        self.name = unique("exrun")
        full = {
            **os.environ,
            "EDGEPLANE_NAME": self.name,
            "EDGEPLANE_METRICS_ADDR": "off",
            "EDGEPLANE_LOG_LEVEL": "warning",
            **env,
        }
        if pythonpath:
            full["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "byteor.edgeplane", "run", str(plan), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full,
            cwd=ROOT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """Fail at once (with its stderr) when the run has ended early."""
        if not self.alive():
            out, err = self.proc.communicate()
            raise AssertionError(f"edgeplane exited early ({self.proc.returncode}): {err}{out}")

    def stop(self, timeout: float = 40.0) -> tuple[int, dict[str, Any], str]:
        """SIGTERM (a graceful drain), then the exit code, the JSON summary and stderr."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        try:
            summary = json.loads(out)
        except ValueError:
            raise AssertionError(f"no JSON summary (exit {self.proc.returncode}): {err}") from None
        return self.proc.returncode, summary, err

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        """Wait for a run that ends by itself: exit code, stdout, stderr."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.communicate(timeout=10)
        for f in os.listdir("/dev/shm"):
            if f.startswith((f"byteor-{self.name}.", f"edgeplane-{self.name}.")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join("/dev/shm", f))


@contextlib.contextmanager
def edgeplane_run(
    plan: Path, env: Mapping[str, str], *, pythonpath: tuple[Path, ...] = ()
) -> Iterator[EdgePlaneRun]:
    run = EdgePlaneRun(plan, env, pythonpath=pythonpath)
    try:
        yield run
    finally:
        run.close()


def sink_holds(run: EdgePlaneRun, count: Callable[[], int], n: int) -> Callable[[], bool]:
    """A check for :func:`wait_for`: the sink holds ``n`` records (more fails at once), and
    the run is still going."""

    def check() -> bool:
        run.check_alive()
        got = count()
        assert got <= n, f"the sink holds {got} records, {got - n} more than were sent"
        return got == n

    return check


def assert_clean_summary(
    summary: Mapping[str, Any], n: int, records_out: int | None = None
) -> None:
    """Every record admitted, written and acknowledged once; no restart, no duplicate."""
    assert summary["stopped"] is True, summary
    assert summary["restarts"] == 0 and summary["duplicates"] == 0, summary
    assert summary["records_in"] == summary["acked"] == n, summary
    assert summary["records_out"] == (n if records_out is None else records_out), summary


# -- Kafka -> enrich -> NATS JetStream ------------------------------------------------------------

KAFKA_NATS = EXAMPLES / "kafka_enrich_nats"


def test_kafka_enrich_nats_every_order_once_in_order_per_customer_and_committed() -> None:
    demo = load_module(KAFKA_NATS / "demo.py")
    enrich = load_module(KAFKA_NATS / "enrich.py")
    tag = unique("ken")
    env = {
        "ORDERS_TOPIC": f"{tag}-orders",
        "ORDERS_GROUP": f"{tag}-enrich",
        "NATS_STREAM": f"{tag.upper()}_ENRICHED",
        "NATS_SUBJECT": f"{tag}.enriched",
        # A fresh group's first join waits about half the session timeout (Tansu).
        "KAFKA_SESSION_TIMEOUT_MS": "1000",
        "KAFKA_HEARTBEAT_MS": "200",
    }
    s = demo.settings(env)
    n = 3000
    sent = asyncio.run(demo.seed(s, n))
    try:
        with edgeplane_run(KAFKA_NATS / "pipeline.toml", env) as run:  # enrich.py: beside it
            wait_for(
                sink_holds(run, lambda: asyncio.run(demo.stream_count(s)), n),
                f"{n} enriched orders in the stream",
                45,
            )
            code, summary, err = run.stop()
        got = asyncio.run(demo.enriched(s))
    finally:
        asyncio.run(demo.drop_stream(s))
    assert code == 0, err
    assert_clean_summary(summary, n)
    assert summary["sources"]["orders"]["adapter"] == "kafka"
    assert summary["stages"]["enrich"]["records_in"] == n
    docs = [json.loads(p) for p in got]
    assert sorted(d["order"] for d in docs) == list(range(n))  # each order once
    assert sorted(got) == sorted(enrich.enrich(p) for _, p, _, _ in sent)  # enriched once each
    assert docs[[d["order"] for d in docs].index(0)] == {
        "order": 0, "customer": "c-0", "sku": "apple", "qty": 1,
        "unit_cents": 45, "total_cents": 45, "region": "north",
    }  # fmt: skip
    # Kafka orders per partition, so per customer (the key): each customer's orders arrive
    # in the order they were produced.
    per_customer: dict[str, list[int]] = {}
    for d in docs:
        per_customer.setdefault(d["customer"], []).append(d["order"])
    for customer, orders in per_customer.items():
        produced = [json.loads(p)["order"] for k, p, _, _ in sent if k == customer.encode()]
        assert orders == produced, customer
    # Upstream: the group committed every partition to its end (one past its last offset).
    ends: dict[int, int] = {}
    for _, _, partition, offset in sent:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    assert asyncio.run(demo.committed(s)) == ends


# -- Redis Streams -> filter -> canonical JSON -> PostgreSQL -------------------------------------

REDIS_PG = EXAMPLES / "redis_to_postgres"


def canonical(payload: bytes) -> bytes:
    return json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":")).encode()


def test_redis_to_postgres_each_reading_once_in_order_and_a_redelivery_stored_once() -> None:
    demo = load_module(REDIS_PG / "demo.py")
    tag = unique("rpg")
    env = {
        "READINGS_STREAM": f"{tag}-readings",
        "READINGS_GROUP": f"{tag}-group",
        "READINGS_TABLE": f"{tag}_readings",
    }
    s = demo.settings(env)
    n = 5000
    sent = demo.seed(s, n)
    expected = [canonical(p) for p in sent if b'"heartbeat"' not in p]
    assert len(expected) == n - n // 10
    plan = REDIS_PG / "pipeline.toml"
    try:
        with edgeplane_run(plan, env) as run:
            wait_for(
                sink_holds(run, lambda: asyncio.run(demo.row_count(s)), len(expected)),
                f"{len(expected)} rows",
                45,
            )
            code, summary, err = run.stop()
        assert code == 0, err
        assert_clean_summary(summary, n, records_out=len(expected))
        assert summary["stages"]["no_heartbeats"]["records_out"] == len(expected)
        # Rows in insertion order: the readings, heartbeats gone, canonical, each once.
        assert asyncio.run(demo.rows(s)) == expected
        state = demo.group_state(s)
        assert state["pending"] == 0 and state["last_delivered"] == state["stream_last"], state

        # Upstream delivers everything again (as after a crash before the acknowledgements):
        # the sink's content dedupe key stores nothing twice.
        demo.rewind(s)
        with edgeplane_run(plan, env) as run:

            def all_acked_again() -> bool:
                run.check_alive()
                now = demo.group_state(s)
                return bool(now["pending"] == 0 and now["last_delivered"] == now["stream_last"])

            wait_for(all_acked_again, "the whole stream acknowledged again", 45)
            code, summary, err = run.stop()
        assert code == 0, err
        assert_clean_summary(summary, n, records_out=len(expected))
        assert asyncio.run(demo.rows(s)) == expected
    finally:
        asyncio.run(demo.drop(s))
        demo.delete_stream(s)


# -- HTTP (respond = confirmed) -> S3 ------------------------------------------------------------

HTTP_S3 = EXAMPLES / "http_to_s3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_http_to_s3_every_event_once_in_order_per_device_each_request_confirmed() -> None:
    demo = load_module(HTTP_S3 / "demo.py")
    tag = unique("hs")
    env = {"S3_BUCKET": f"{tag}-lake", "INGEST_PORT": str(free_port())}
    s = demo.settings(env)
    n, clients, batch = 2000, 4, 50
    asyncio.run(demo.make_bucket(s))
    try:
        with edgeplane_run(HTTP_S3 / "pipeline.toml", env) as run:

            def ingest_up() -> bool:
                run.check_alive()
                return bool(asyncio.run(demo.ingest_up(s)))

            wait_for(ingest_up, "the ingest server to answer")
            # Each request returns once its records are in S3 (respond = confirmed): the
            # first answer to every one is 200 {"confirmed": 50}.
            attempts = asyncio.run(demo.send(s, n, clients, batch))
            assert attempts == [1] * (n // batch)
            health = asyncio.run(demo.ingest_health(s))
            assert (health["admitted"], health["used"], health["queued"]) == (n, 0, 0), health
            stored = asyncio.run(demo.objects(s))
            assert sum(len(records) for _, records in stored) == n  # already, before the stop
            code, summary, err = run.stop()
        assert code == 0, err
        assert_clean_summary(summary, n)
        assert "example-secret" not in err  # the default secret key is redacted in logs
    finally:
        stored = asyncio.run(demo.objects(s))
        asyncio.run(demo.drop_bucket(s))
    docs = [json.loads(p) for _, records in stored for p in records]
    assert len(docs) == n
    per_device: dict[str, list[int]] = {}
    for d in docs:
        per_device.setdefault(d["device"], []).append(d["n"])
    # Each device's events once, in the order it sent them (requests of one client are
    # sequential; the clients interleave).
    assert per_device == {f"d-{c}": list(range(n // clients)) for c in range(clients)}
    assert docs == [json.loads(json.dumps(demo.event(int(d["device"][2:]), d["n"]))) for d in docs]
    # Keys are the sink's sequence numbers: contiguous, no gap, no overlap.
    first = 0
    for key, records in stored:
        assert key.endswith(f"/{first:020d}-{first + len(records) - 1:020d}.bor"), key
        first += len(records)


# -- a custom stage op and a custom adapter from a package of their own ---------------------------

PLUGINS = EXAMPLES / "custom_stage_and_adapter"


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """A folder that makes the example package look installed to ``importlib.metadata``: a
    ``dist-info`` whose entry points are the ones its ``pyproject.toml`` declares (the
    package itself is imported from the example folder, also on ``PYTHONPATH``)."""
    project = tomllib.loads((PLUGINS / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    groups = project["entry-points"]
    assert set(groups) == {"byteor.adapters", "byteor.ops"}
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
            for group, eps in groups.items()
        )
    )
    return site


def test_custom_op_and_adapter_by_entry_point_every_payment_once_masked_in_order(
    tmp_path: Path, plugin_site: Path
) -> None:
    demo = load_module(PLUGINS / "demo.py")
    ops = load_module(PLUGINS / "byteor_example_plugins" / "ops.py")
    env = {"PAYMENTS_DB": str(tmp_path / "payments.db")}
    s = demo.settings(env)
    n = 4000
    sent = demo.seed(s, n // 2)  # half before the run starts, half while it runs
    with edgeplane_run(PLUGINS / "pipeline.toml", env, pythonpath=(plugin_site, PLUGINS)) as run:
        wait_for(sink_holds(run, lambda: min(1, demo.masked_count(s)), 1), "the first masked row")
        more = demo.seed(s, n // 2)
        wait_for(sink_holds(run, lambda: demo.masked_count(s), n), f"{n} masked rows", 45)
        code, summary, err = run.stop()
    assert code == 0, err
    assert_clean_summary(summary, n)
    assert summary["stages"]["mask"]["op"] == "mask_card"
    assert summary["sources"]["payments"]["adapter"] == summary["sinks"]["masked"]["adapter"]
    assert summary["sinks"]["masked"]["adapter"] == "sqlite"
    got = demo.masked(s)
    expected = []
    for p in sent + more:
        doc = json.loads(p)
        doc["card"] = ops.mask(doc["card"], 4)
        expected.append(json.dumps(doc, separators=(",", ":")).encode())
    assert got == expected  # each once, in order, masked
    assert json.loads(got[1])["card"] == "**** **** **** 7919"
    assert demo.cursor(s) == (n, n)  # the source's stored cursor: every row acknowledged


class _SqliteHarness:
    """The conformance suite's view of the example adapter: a fresh table per harness,
    produced and read back with ``sqlite3`` directly."""

    arrive_s = 10.0

    def __init__(self, module: ModuleType, path: Path) -> None:
        self.m = module
        self.params = {"path": str(path), "table": "topic", "consumer": "c", "poll_ms": "20"}

    async def new_source(self) -> Any:
        src = self.m.SqliteAdapter().source(self.params)
        await src.start()
        return src

    async def new_sink(self) -> Any:
        sink = self.m.SqliteAdapter().sink({"path": self.params["path"], "table": "topic"})
        await sink.start()
        return sink

    def _conn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.params["path"], isolation_level=None)
        conn.execute(
            'CREATE TABLE IF NOT EXISTS "topic" (id INTEGER PRIMARY KEY AUTOINCREMENT, '
            "payload BLOB NOT NULL, key BLOB, headers BLOB)"
        )
        return conn

    async def produce(self, records: Sequence[OutRecord]) -> None:
        with contextlib.closing(self._conn()) as conn:
            conn.executemany(
                'INSERT INTO "topic" (payload, key, headers) VALUES (?, ?, ?)',
                [(r.payload, r.key, self.m.encode_headers(r.headers)) for r in records],
            )

    async def written(self) -> list[OutRecord]:
        with contextlib.closing(self._conn()) as conn:
            rows = conn.execute('SELECT payload, key, headers FROM "topic" ORDER BY id')
            return [
                OutRecord(bytes(p), None if k is None else bytes(k), self.m.decode_headers(h))
                for p, k, h in rows
            ]

    async def rejecting_sink(self) -> Any:
        return None

    async def close(self) -> None:
        return None


class TestSqliteAdapterConformance(ConformanceTests):
    """The example adapter passes the suite every adapter runs (``byteor.testing``)."""

    @pytest.fixture
    async def harness(self, tmp_path: Path) -> AsyncIterator[Any]:
        module = load_module(PLUGINS / "byteor_example_plugins" / "sqlite.py")
        yield _SqliteHarness(module, tmp_path / "conformance.db")


# -- failures: one line on stderr, a non-zero exit ------------------------------------------------


def _blocked_client(tmp_path: Path, module: str) -> Path:
    """A folder that, first on ``PYTHONPATH``, makes ``import <module>`` fail the way it
    does when the library is not installed: how a machine without the extra looks."""
    shim = tmp_path / "not-installed" / module
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        f"raise ModuleNotFoundError({f'No module named {module!r}'!r}, name={module!r})\n"
    )
    return shim.parent


FAILURES = {
    # A bad value through a variable: the adapter's schema refuses it before anything runs.
    "bad_spec": (
        KAFKA_NATS,
        {"KAFKA_SESSION_TIMEOUT_MS": "soon"},
        1,
        "pipeline.toml:11: error AD503 [source.orders.param.session_timeout_ms]: kafka config "
        "'session_timeout_ms' must be int, got 'soon'",
    ),
    # The sink's server does not answer: its edge process cannot start, the run stops.
    "unreachable_server": (
        REDIS_PG,
        {"POSTGRES_DSN": "postgresql://postgres@127.0.0.1:1/test"},
        1,
        "edge-out:table failed: AdapterUnreachable: postgres: cannot reach 127.0.0.1:1",
    ),
    # The plugin package is not installed: its op (resolved first) is named, with the fix.
    "plugin_not_installed": (
        PLUGINS,
        {},
        2,
        "stage 'mask': op 'mask_card' is not a built-in op",
    ),
    # The Kafka client library is missing: the install command of the extra.
    "missing_extra": (
        KAFKA_NATS,
        {},
        2,
        "source 'orders': the kafka adapter needs the 'aiokafka' library: "
        "pip install 'byteor[kafka]'",
    ),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_a_failure_exits_non_zero_with_one_line(case: str, tmp_path: Path) -> None:
    folder, env, exit_code, expected = FAILURES[case]
    tag = unique("fail")
    env = {
        **env,
        "EDGEPLANE_LOG_LEVEL": "error",
        "ORDERS_TOPIC": f"{tag}-orders",
        "READINGS_STREAM": f"{tag}-readings",
        "PAYMENTS_DB": str(tmp_path / "payments.db"),
    }
    path: tuple[Path, ...] = (folder,)
    if case == "missing_extra":
        path = (_blocked_client(tmp_path, "aiokafka"), folder)
    try:
        with edgeplane_run(folder / "pipeline.toml", env, pythonpath=path) as run:
            code, out, err = run.finish(timeout=60)
    finally:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        client.delete(env["READINGS_STREAM"])  # the Redis source made it (create = true)
        client.close()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("edgeplane: error: ") and expected in lines[0], lines[0]
    assert code == exit_code
    doc = json.loads(out)  # --json: the error as a document too
    assert doc["exit_code"] == exit_code and expected in doc["error"]
