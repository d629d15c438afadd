"""EdgePlane metrics: the collector over real shared memory, and the HTTP endpoint."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from byteor import lanes
from byteor.edgeplane._config import Redactor
from byteor.edgeplane._errors import ObserveError
from byteor.edgeplane._observe import (
    AdapterStatus,
    LatencyHistogram,
    RunCollector,
    RunReader,
    start_observe_server,
)
from byteor.edgeplane._status import StatusSegment
from byteor.exec import COUNTERS_SUFFIX

_names = itertools.count()

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition text: (name, sorted labels) -> value."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(collector: RunCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    return samples(generate_latest(registry).decode())


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


@pytest.fixture
def run() -> Iterator[str]:
    """A run name of this test; every segment of it is removed afterwards."""
    name = f"ep{os.getpid()}x{next(_names)}"
    yield name
    for f in os.listdir("/dev/shm"):
        if f.startswith(f"byteor-{name}.") or f == f"byteor-{name}{COUNTERS_SUFFIX}":
            os.unlink(os.path.join("/dev/shm", f))


@pytest.fixture
def segments(run: str) -> Iterator[str]:
    """A 'running' pipeline: two lanes with traffic and a counters segment of three nodes."""
    raw = lanes.create(f"{run}.raw", "events", 8, 64)
    fan = lanes.create(f"{run}.fan", "fanout", 8, 64, consumers=["a", "b"])
    tx = raw.sender()
    for i in range(5):
        tx.send(b"%d" % i)
    rx = raw.receiver()
    rx.receive_nowait()
    rx.receive_nowait()
    rx.release()
    ftx = fan.sender()
    a = fan.receiver("a")
    b = fan.receiver("b")
    for _ in range(8):
        ftx.send(b"x")
    for _ in range(8):
        a.receive_nowait()
    a.release()
    b.receive_nowait()
    b.release()
    ftx.send(b"y")  # b holds 7 of 8 slots: one more fits, the next is refused
    with pytest.raises(lanes.WouldBlock):
        ftx.send_nowait(b"z")
    counters = lanes.create_counters(
        f"{run}{COUNTERS_SUFFIX}",
        [
            lanes.CounterRow("in", "source", "edge-in"),
            lanes.CounterRow("keep", "stage", "workers"),
            lanes.CounterRow("out", "sink", "edge-out"),
        ],
    )
    w_in, w_keep, w_out = (counters.writer(i) for i in range(3))
    w_in.commit(0, 1000, 0, 0, 0, 2_000_000_000, time.monotonic_ns())
    w_keep.commit(1000, 900, 7, 5, 2, 500_000_000, time.monotonic_ns())
    w_keep.live(40, 1)
    w_keep.add_restart(redelivered=12, duplicates=3)
    w_out.commit(900, 890, 0, 0, 0, 250_000_000, time.monotonic_ns())
    try:
        yield run
    finally:
        for h in (raw, fan):
            h.close()
        counters.close()


def test_collector_reads_lanes_and_counters_exactly(segments: str) -> None:
    run = segments
    got = scrape(RunCollector(run, spec_hash="sha256:abc"))
    assert got[key("byteor_run_info", run=run, spec_hash="sha256:abc")] == 1
    raw = {"run": run, "lane": "raw", "kind": "events"}
    assert got[key("byteor_lane_published_total", **raw)] == 5
    assert got[key("byteor_lane_consumed_total", **raw)] == 2
    assert got[key("byteor_lane_used", **raw)] == 3
    assert got[key("byteor_lane_lag", **raw)] == 3
    assert got[key("byteor_lane_capacity", **raw)] == 8
    assert got[key("byteor_lane_drops_total", **raw)] == 0
    assert got[key("byteor_lane_closed", **raw)] == 0
    fan = {"run": run, "lane": "fan", "kind": "fanout"}
    assert got[key("byteor_lane_published_total", **fan)] == 9
    assert got[key("byteor_lane_consumed_total", **fan)] == 1  # the slowest consumer
    assert got[key("byteor_lane_lag", **fan)] == 8
    assert got[key("byteor_lane_drops_total", **fan)] == 1
    assert got[key("byteor_lane_consumer_lag", run=run, lane="fan", consumer="a")] == 1
    assert got[key("byteor_lane_consumer_lag", run=run, lane="fan", consumer="b")] == 8
    assert got[key("byteor_lane_consumer_lost_total", run=run, lane="fan", consumer="b")] == 0

    keep = {"run": run, "node": "keep", "kind": "stage", "process": "workers"}
    assert got[key("byteor_node_records_in_total", **keep)] == 1000
    assert got[key("byteor_node_records_out_total", **keep)] == 900
    assert got[key("byteor_node_errors_total", **keep)] == 7
    assert got[key("byteor_node_skipped_total", **keep)] == 5
    assert got[key("byteor_node_routed_total", **keep)] == 2
    assert got[key("byteor_node_busy_seconds_total", **keep)] == 0.5
    assert got[key("byteor_node_inflight", **keep)] == 40
    assert got[key("byteor_node_restarts_total", **keep)] == 1
    assert got[key("byteor_node_redelivered_total", **keep)] == 12
    assert got[key("byteor_node_duplicates_total", **keep)] == 3
    assert got[key("byteor_node_up", **keep)] == 1  # the row's writer is this live process
    assert 0 < got[key("byteor_node_busy_ratio", **keep)] <= 1
    src = {"run": run, "node": "in", "kind": "source", "process": "edge-in"}
    assert got[key("byteor_node_records_out_total", **src)] == 1000
    sink = {"run": run, "node": "out", "kind": "sink", "process": "edge-out"}
    assert got[key("byteor_node_records_out_total", **sink)] == 890
    # every row's writer is this process: it is listed once, under the collector's name
    rss = {k: v for k, v in got.items() if k[0] == "byteor_process_resident_memory_bytes"}
    me = key(
        "byteor_process_resident_memory_bytes", run=run, process="supervisor", pid=str(os.getpid())
    )
    assert list(rss) == [me]
    assert rss[me] > 1_000_000
    assert not [n for (n, _) in got if n == "byteor_segment_unreadable"]


def test_reader_totals_for_the_progress_line(segments: str) -> None:
    sample = RunReader(segments, lanes=["raw", "fan", "not-yet"]).read()
    assert sorted(sample.lanes) == ["fan", "raw"]  # a lane not created yet is left out
    assert (sample.records_in, sample.records_out, sample.lag) == (1000, 890, 3 + 8)


def test_nothing_there_yet_and_an_unreadable_segment(
    run: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert scrape(RunCollector(run, process="supervisor")).keys() == {
        key(
            "byteor_process_resident_memory_bytes",
            run=run,
            process="supervisor",
            pid=str(os.getpid()),
        )
    }
    bad = f"/dev/shm/byteor-{run}.junk"
    fd = os.open(bad, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"not a lane" * 100)
    os.close(fd)
    collector = RunCollector(run)
    with caplog.at_level(logging.WARNING, logger="byteor.edgeplane.observe"):
        got = scrape(collector)
        scrape(collector)
    assert got[key("byteor_segment_unreadable", run=run, segment=f"{run}.junk")] == 1
    warnings = [r for r in caplog.record_tuples if r[0] == "byteor.edgeplane.observe"]
    assert len(warnings) == 1  # once per segment and reason, not once per scrape
    assert f"segment {run}.junk is unreadable" in warnings[0][2]


def test_adapter_statuses_and_latency_histogram(run: str) -> None:
    hist = LatencyHistogram(bounds=(0.001, 0.01, 0.1), counts=(5, 3, 1, 1), sum_seconds=0.75)
    statuses = [
        AdapterStatus(
            "in",
            "source",
            "kafka",
            True,
            records=10,
            acked=8,
            nacked=1,
            commit_watermark=8,
            lag=42,
            committed=6,
            paused=True,
            pauses=3,
        ),
        AdapterStatus("out", "sink", "nats", False, records=7, acked=6, latency=hist),
    ]
    got = scrape(RunCollector(run, adapters=lambda: statuses))
    src = {"run": run, "node": "in", "kind": "source", "adapter": "kafka"}
    assert got[key("byteor_adapter_connected", **src)] == 1
    assert got[key("byteor_adapter_records_total", **src)] == 10
    assert got[key("byteor_adapter_acked_total", **src)] == 8
    assert got[key("byteor_adapter_nacked_total", **src)] == 1
    assert got[key("byteor_adapter_commit_watermark", **src)] == 8
    assert got[key("byteor_adapter_lag", **src)] == 42
    assert got[key("byteor_adapter_committed_total", **src)] == 6
    assert got[key("byteor_adapter_paused", **src)] == 1
    assert got[key("byteor_adapter_pauses_total", **src)] == 3
    sink = {"run": run, "node": "out", "kind": "sink", "adapter": "nats"}
    assert got[key("byteor_adapter_connected", **sink)] == 0
    for unknown in ("lag", "committed_total", "paused", "pauses_total", "commit_watermark"):
        assert key(f"byteor_adapter_{unknown}", **sink) not in got  # absent, not 0
    buckets = {
        le: got[key("byteor_adapter_latency_seconds_bucket", le=le, **sink)]
        for le in ("0.001", "0.01", "0.1", "+Inf")
    }
    assert buckets == {"0.001": 5, "0.01": 8, "0.1": 9, "+Inf": 10}
    assert got[key("byteor_adapter_latency_seconds_count", **sink)] == 10
    assert got[key("byteor_adapter_latency_seconds_sum", **sink)] == 0.75
    with pytest.raises(ValueError, match="need 3 counts"):
        LatencyHistogram((0.1, 0.2), (1, 2), 0.0)


def test_end_to_end_histogram_from_the_status_segment(run: str) -> None:
    seg = StatusSegment.create("e2e", 2, memory=True)
    source, sink = seg.latency
    source.read(0, called_ns=0, got_ns=1_000_000)
    sink.written(source.ring, 0, 4, called_ns=1_500_000, done_ns=4_000_000)  # 3 ms, 0.5 ms
    sink.written(source.ring, 99, 2, called_ns=5_000_000, done_ns=5_020_000)  # 4.02 ms
    status = AdapterStatus(
        "out",
        "sink",
        "file",
        True,
        records=6,
        latency=LatencyHistogram.of(sink.adapter.read()),
        end_to_end=LatencyHistogram.of(sink.end_to_end.read()),
        upstream="in",
    )
    seg.close()
    registry = CollectorRegistry()
    registry.register(RunCollector(run, adapters=lambda: [status]))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["byteor_end_to_end_latency_seconds"].type == "histogram"
    assert families["byteor_adapter_latency_seconds"].type == "histogram"
    assert families["byteor_end_to_end_beyond_ring"].type == "counter"
    got = scrape(RunCollector(run, adapters=lambda: [status]))
    e2e = {"run": run, "sink": "out", "source": "in", "adapter": "file"}
    assert got[key("byteor_end_to_end_latency_seconds_count", **e2e)] == 6
    assert got[key("byteor_end_to_end_latency_seconds_sum", **e2e)] == pytest.approx(
        4 * 0.003 + 2 * 0.00402
    )
    assert got[key("byteor_end_to_end_latency_seconds_bucket", le="0.0025", **e2e)] == 0
    assert got[key("byteor_end_to_end_latency_seconds_bucket", le="0.005", **e2e)] == 6
    assert got[key("byteor_end_to_end_beyond_ring_total", **e2e)] == 0
    sink_labels = {"run": run, "node": "out", "kind": "sink", "adapter": "file"}
    assert got[key("byteor_adapter_latency_seconds_count", **sink_labels)] == 2
    assert got[key("byteor_adapter_latency_seconds_bucket", le="1e-05", **sink_labels)] == 0
    assert got[key("byteor_adapter_latency_seconds_bucket", le="2.5e-05", **sink_labels)] == 1


def test_a_failing_adapters_callable_does_not_fail_the_scrape(
    segments: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[AdapterStatus]:
        raise RuntimeError("edge state gone")

    with caplog.at_level(logging.ERROR, logger="byteor.edgeplane.observe"):
        got = scrape(RunCollector(segments, adapters=broken))
    assert got[key("byteor_lane_published_total", run=segments, lane="raw", kind="events")] == 5
    assert any("edge state gone" in r.exc_text for r in caplog.records if r.exc_text)


# -- the endpoint -----------------------------------------------------------------------------


def test_endpoint_metrics_live_and_ready(segments: str, caplog: pytest.LogCaptureFixture) -> None:
    connected = {"in": False, "out": True}
    lock = threading.Lock()

    def ready() -> dict[str, bool]:
        with lock:
            return dict(connected)

    collector = RunCollector(segments)
    caplog.set_level(logging.INFO)
    with start_observe_server(("127.0.0.1", 0), collector, ready=ready) as server:
        assert server.port > 0
        # one line says where it listens; uvicorn's own startup lines are not shown
        assert (
            "byteor.edgeplane.observe",
            logging.INFO,
            f"metrics on {server.url}/metrics, health on /live and /ready",
        ) in caplog.record_tuples
        assert not [r for r in caplog.records if r.name.startswith("uvicorn")]
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            r = client.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            got = samples(r.text)
            raw = {"run": segments, "lane": "raw", "kind": "events"}
            assert got[key("byteor_lane_published_total", **raw)] == 5
            assert client.get("/live").json() == {"live": True}
            r = client.get("/ready")
            assert r.status_code == 503
            assert r.json() == {"ready": False, "not_ready": ["in"], "adapters": connected}
            with lock:
                connected["in"] = True
            r = client.get("/ready")
            assert r.status_code == 200
            assert r.json()["ready"] is True
            # the counters change under the endpoint: the next scrape sees them
            late = lanes.attach(f"{segments}.raw")
            late.sender().send(b"late")
            late.close()
            got = samples(client.get("/metrics").text)
            assert got[key("byteor_lane_published_total", **raw)] == 6
            r = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
            assert r.headers["content-type"].startswith("application/openmetrics-text")
            assert r.text.endswith("# EOF\n")
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/live", timeout=1.0)


def test_ready_edge_cases(run: str) -> None:
    secret = "pw-123456"
    states: list[dict[str, bool]] = [{}]

    def ready() -> dict[str, bool]:
        if not states:
            raise ConnectionError(f"status segment: redis://u:{secret}@h")
        return states[0]

    with (
        start_observe_server(
            ("127.0.0.1", 0), None, ready=ready, redactor=Redactor([secret])
        ) as server,
        httpx.Client(base_url=server.url, timeout=5.0) as client,
    ):
        r = client.get("/ready")
        assert r.status_code == 503
        assert r.json()["reason"] == "no adapter has reported yet"
        states.clear()
        r = client.get("/ready")
        assert r.status_code == 503
        assert r.json() == {
            "ready": False,
            "error": "ConnectionError: status segment: redis://u:***@h",
        }
        assert client.get("/metrics").status_code == 200
    with start_observe_server(("127.0.0.1", 0)) as always:
        assert httpx.get(always.url + "/ready", timeout=5.0).json() == {"ready": True}


def test_address_in_use_is_a_typed_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ObserveError, match=f"cannot listen on 127.0.0.1:{port}"):
            start_observe_server(("127.0.0.1", port))
