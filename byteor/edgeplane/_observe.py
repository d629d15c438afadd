"""EdgePlane's metrics and health endpoint: Prometheus metrics read from shared memory at
scrape time, ``/live`` and ``/ready``.

Theory of operation
-------------------
Nothing is counted twice: the numbers already live in the run's segments, written by the
processes that do the work, and a scrape reads them (:class:`RunReader`, the same reads as
``byteor snapshot``: each segment is attached, validated, copied and closed, nothing is
written). :class:`RunCollector` turns one read into metric families, so the hot loop never
touches prometheus_client and a run that nobody scrapes pays nothing.

Families (every one labelled ``run``; counters end in ``_total``):

* per lane (``lane``, ``kind`` = the lane kind): ``byteor_lane_published_total``,
  ``_consumed_total``, ``_full_waits_total``, ``_drops_total`` (sends refused for room:
  back-pressure, not loss), ``_overruns_total``, and gauges ``byteor_lane_used``,
  ``_capacity``, ``_lag`` (the slowest consumer), ``_closed``; per consumer
  (``lane``, ``consumer``): ``byteor_lane_consumer_lag`` and ``_lost_total``;
* per node, from the counters segment (``node``, ``kind`` = ``source``/``stage``/``sink``,
  ``process``): ``byteor_node_records_in_total``, ``_records_out_total``, ``_errors_total``,
  ``_skipped_total``, ``_routed_total``, ``_busy_seconds_total`` (time in its work: a stage's
  op, a source's poll, a sink's write), ``_restarts_total``, ``_redelivered_total``,
  ``_duplicates_total``, and gauges ``byteor_node_busy_ratio`` (busy share since it
  started), ``_inflight`` (records taken, not yet committed), ``_up`` (its process lives);
* per adapter (``node``, ``kind``, ``adapter``), when the run hands in an ``adapters``
  callable (the edge processes' state, which is not in the counters rows):
  ``byteor_adapter_connected``, ``_records_total``, ``_acked_total``, ``_nacked_total``,
  and where known ``_committed_total``, ``_paused``, ``_pauses_total``, ``_commit_watermark``,
  ``_lag`` and the histogram ``byteor_adapter_latency_seconds`` (a source: each read that
  returned records, from the call to its return; a sink: each write, from the call until
  the system confirmed it, retries included);
* per sink (``sink``, ``source``: where its records come from, ``adapter``: the sink's):
  the histogram ``byteor_end_to_end_latency_seconds``, from the source's read of a record
  to the sink's confirmed write of it, one observation per record written (each record of
  a write counts the age of the write's oldest record, so it errs high), and
  ``byteor_end_to_end_beyond_ring_total``: records written whose admission time had already
  left the source's ring (:mod:`._status`), in no bucket;
* ``byteor_process_resident_memory_bytes`` (``process``, ``pid``) of every live process of
  the run (from ``/proc``), ``byteor_run_info`` (``spec_hash``) and
  ``byteor_segment_unreadable`` (``segment``) for a segment that failed validation.

Latency: the edges keep their histograms in the run's status segment (fixed buckets from
10 us to 60 s, :data:`~byteor.edgeplane._status.LATENCY_BOUNDS_NS`; a few word stores per
batch, nothing per record; they count the whole run, across restarts). A stage keeps
counts and busy time, not per-record timings, so its figure is the mean time per record,
``rate(byteor_node_busy_seconds_total) / rate(byteor_node_records_in_total)``. Histograms
appear only where an adapter status carries one (:class:`LatencyHistogram`).

The endpoint is a Starlette app served by uvicorn in a thread of the calling process
(:func:`start_observe_server`): ``/metrics`` (prometheus_client's exposition, text or
OpenMetrics by ``Accept``), ``/live`` (200 while the process serves), ``/ready`` (200
``{"ready": true}`` once the readiness callable says every adapter is connected, else 503
naming those that are not). Start it after forking worker processes (a fork copies a
process with its threads' locks held), or fork with ``spawn``/``forkserver``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from byteor.edgeplane._config import Redactor
from byteor.edgeplane._errors import ObserveError, ObserveUnavailable
from byteor.edgeplane._status import LATENCY_BOUNDS_NS, HistogramCounts
from byteor.exec import COUNTERS_SUFFIX
from byteor.lanes import (
    SHM_DIR,
    SHM_PREFIX,
    Lane,
    LaneError,
    LaneStatistics,
    NodeCounters,
    SegmentNotFound,
    attach,
    attach_counters,
)

try:
    import uvicorn
    from prometheus_client import make_asgi_app
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ObserveUnavailable(
        f"the metrics endpoint needs prometheus_client, starlette and uvicorn ({exc.name} is "
        "missing): pip install 'byteor[edgeplane]', or run with --metrics-addr off"
    ) from exc

__all__ = [
    "AdapterStatus",
    "LatencyHistogram",
    "RunSample",
    "RunReader",
    "RunCollector",
    "ReadyCheck",
    "build_app",
    "ObserveServer",
    "start_observe_server",
]

log = logging.getLogger("byteor.edgeplane.observe")

_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_BOUNDS_S: Final = tuple(b / 1e9 for b in LATENCY_BOUNDS_NS)


# -- what the edge processes report -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """A latency histogram as an adapter kept it.

    Attributes:
        bounds: upper bounds of the buckets in seconds, increasing (``+Inf`` is implied).
        counts: observations per bucket (not cumulative), ``len(bounds) + 1`` of them, the
            last for everything above the highest bound.
        sum_seconds: the sum of all observations.
        beyond: end to end: records that could not be timed (in no bucket).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum_seconds: float
    beyond: int = 0

    @classmethod
    def of(cls, counts: HistogramCounts) -> LatencyHistogram:
        """A histogram of the status segment (:mod:`byteor.edgeplane._status`)."""
        return cls(_BOUNDS_S, counts.buckets, counts.sum_ns / 1e9, counts.beyond)

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError(
                f"{len(self.bounds)} bounds need {len(self.bounds) + 1} counts, "
                f"not {len(self.counts)}"
            )
        if any(b >= a for b, a in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError("histogram bounds must increase")


@dataclass(frozen=True, slots=True)
class AdapterStatus:
    """One source's or sink's adapter state, as its edge process reports it.

    Attributes:
        node: the source or sink name in the spec.
        kind: ``source`` or ``sink``.
        adapter: the adapter's name (``kafka``).
        connected: whether it is connected to its system now.
        records: records read (source) or written (sink).
        acked: source: records acknowledged upstream; sink: records the system confirmed.
        nacked: source: records handed back for redelivery; sink: writes that failed.
        commit_watermark: source: the ingress sequence below which everything is done
            (``None``: not known).
        lag: source: records waiting upstream, when the system says (``None``: unknown).
        committed: source: acknowledgements the adapter has sent upstream (``None``: not
            counted).
        paused: source: whether it is paused for back-pressure now (``None``: not known).
        pauses: source: times it paused for back-pressure (``None``: not counted).
        latency: a latency histogram, when the adapter keeps one (source: reads; sink:
            writes).
        end_to_end: sink: source admission to confirmed write, per record.
        upstream: sink: the source its records come from (``end_to_end``'s ``source``).
        detail: why it is not connected (shown by ``/ready``; redacted).
    """

    node: str
    kind: Literal["source", "sink"]
    adapter: str
    connected: bool
    records: int = 0
    acked: int = 0
    nacked: int = 0
    commit_watermark: int | None = None
    lag: int | None = None
    committed: int | None = None
    paused: bool | None = None
    pauses: int | None = None
    latency: LatencyHistogram | None = None
    end_to_end: LatencyHistogram | None = None
    upstream: str | None = None
    detail: str = ""


#: ``node -> connected`` of every adapter of the run (all of them from the start: an empty
#: mapping means "nothing reported yet", which is not ready).
ReadyCheck = Callable[[], Mapping[str, bool]]


# -- reading a run ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSample:
    """One read of a run's segments.

    Attributes:
        lanes: each lane's statistics, by lane name (lanes not there yet are left out).
        nodes: each counters row (empty when the run has no counters segment yet).
        unreadable: ``segment -> why`` for segments that failed validation.
    """

    lanes: Mapping[str, LaneStatistics] = field(default_factory=dict)
    nodes: Sequence[NodeCounters] = ()
    unreadable: Mapping[str, str] = field(default_factory=dict)

    @property
    def records_in(self) -> int:
        """Records the sources admitted (their rows' records out)."""
        return sum(n.records_out for n in self.nodes if n.role == "source")

    @property
    def records_out(self) -> int:
        """Records the sinks wrote (their rows' records out)."""
        return sum(n.records_out for n in self.nodes if n.role == "sink")

    @property
    def lag(self) -> int:
        """Records waiting in the lanes (each lane's slowest consumer's lag, summed)."""
        return sum(s.lag for s in self.lanes.values())


class RunReader:
    """Reads the lanes and counters of run ``run`` without disturbing it.

    Args:
        run: the run's name: lanes are ``byteor-<run>.<lane>``, counters
            ``byteor-<run>.-counters``.
        lanes: the lane names (the spec's); ``None``: every ``byteor-<run>.*`` segment found.
        directory: where the segments live (default ``/dev/shm``).
    """

    def __init__(
        self, run: str, lanes: Sequence[str] | None = None, directory: str | None = None
    ) -> None:
        self.run = run
        self.lanes = None if lanes is None else tuple(lanes)
        self.directory = directory

    def _lane_names(self) -> list[str]:
        if self.lanes is not None:
            return list(self.lanes)
        head = f"{SHM_PREFIX}{self.run}."
        counters = f"{SHM_PREFIX}{self.run}{COUNTERS_SUFFIX}"
        try:
            files = os.listdir(self.directory or SHM_DIR)
        except OSError:
            return []
        return sorted(f[len(head) :] for f in files if f.startswith(head) and f != counters)

    def _attach(self, lane: str) -> Lane:
        seg = f"{self.run}.{lane}"
        if self.directory is None:
            return attach(seg)
        path = os.path.join(self.directory, f"{SHM_PREFIX}{seg}")
        return attach(seg, backing="file", path=path)

    def read(self) -> RunSample:
        """Every lane's statistics and every counters row, as they are now."""
        stats: dict[str, LaneStatistics] = {}
        unreadable: dict[str, str] = {}
        for lane in self._lane_names():
            try:
                handle = self._attach(lane)
            except SegmentNotFound:
                continue  # not created yet, or the run ended while we looked
            except (LaneError, ValueError) as exc:
                unreadable[f"{self.run}.{lane}"] = str(exc)
                continue
            try:
                stats[lane] = handle.statistics()
            finally:
                handle.close()
        nodes: list[NodeCounters] = []
        name = f"{self.run}{COUNTERS_SUFFIX}"
        try:
            counters = attach_counters(name, directory=self.directory)
        except SegmentNotFound:
            pass
        except (LaneError, ValueError) as exc:
            unreadable[name] = str(exc)
        else:
            try:
                nodes = counters.read_all()
            finally:
                counters.close()
        return RunSample(stats, nodes, unreadable)


# -- the collector ----------------------------------------------------------------------------


def _resident_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class _Families:
    """The metric families of one scrape, made on first use, in a stable order."""

    def __init__(self) -> None:
        self.made: dict[str, Metric] = {}

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> CounterMetricFamily:
        fam = self.made.get(name)
        if fam is None:
            fam = self.made[name] = CounterMetricFamily(name, doc, labels=labels)
        assert isinstance(fam, CounterMetricFamily)
        return fam

    def gauge(self, name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
        fam = self.made.get(name)
        if fam is None:
            fam = self.made[name] = GaugeMetricFamily(name, doc, labels=labels)
        assert isinstance(fam, GaugeMetricFamily)
        return fam

    def histogram(self, name: str, doc: str, labels: Sequence[str]) -> HistogramMetricFamily:
        fam = self.made.get(name)
        if fam is None:
            fam = self.made[name] = HistogramMetricFamily(name, doc, labels=labels)
        assert isinstance(fam, HistogramMetricFamily)
        return fam


_LANE: Final = ("run", "lane", "kind")
_CONSUMER: Final = ("run", "lane", "consumer")
_NODE: Final = ("run", "node", "kind", "process")
_ADAPTER: Final = ("run", "node", "kind", "adapter")
_END_TO_END: Final = ("run", "sink", "source", "adapter")

_LANE_COUNTERS: Final = (
    ("published", "records published into the lane"),
    ("consumed", "records the slowest consumer has finished with"),
    ("full_waits", "times the producer waited for room"),
    ("drops", "sends refused for lack of room (retried: back-pressure, not loss)"),
    ("overruns", "records overwritten before a best-effort consumer read them"),
)
_LANE_GAUGES: Final = (
    ("used", "records in the lane now"),
    ("capacity", "slots of the lane"),
    ("lag", "records the slowest consumer has not finished"),
)
_NODE_COUNTERS: Final = (
    ("records_in", "records the node took (sources: what their adapter produced)"),
    ("records_out", "records the node published (sinks: what they wrote)"),
    ("errors", "records the node failed on"),
    ("skipped", "failed records dropped by on_error = skip"),
    ("routed", "failed records sent to the error lane by on_error = route"),
    ("restarts", "times the node's process was restarted"),
    ("redelivered", "records a restarted node took again"),
    ("duplicates", "outputs a restarted node published twice"),
)


def _cumulative(h: LatencyHistogram) -> list[tuple[str, float]]:
    """``(le, count at or below it)`` of each bucket, as Prometheus wants them."""
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*h.bounds, float("inf")), h.counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return buckets


class RunCollector(Collector):
    """A prometheus_client collector over one run's shared memory (see the module docstring
    for the families).

    Args:
        run: the run's name.
        lanes: the spec's lane names (``None``: found by name in the segment directory).
        directory: where the segments live (default ``/dev/shm``).
        adapters: the edge processes' adapter states, called at each scrape (fast and
            thread-safe: it runs in the server's thread).
        spec_hash: shown in ``byteor_run_info``.
        process: this process's name in ``byteor_process_resident_memory_bytes``.
        redactor: applied to texts that reach the metrics (segment errors).
    """

    def __init__(
        self,
        run: str,
        *,
        lanes: Sequence[str] | None = None,
        directory: str | None = None,
        adapters: Callable[[], Iterable[AdapterStatus]] | None = None,
        spec_hash: str | None = None,
        process: str = "supervisor",
        redactor: Redactor | None = None,
    ) -> None:
        self.run = run
        self.reader = RunReader(run, lanes, directory)
        self.adapters = adapters
        self.spec_hash = spec_hash
        self.process = process
        self.redactor = redactor or Redactor()
        self._reported: set[tuple[str, str]] = set()

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the run's segments: nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        fams = _Families()
        try:
            self._collect(fams)
        except Exception:  # a scrape never fails the endpoint: log, serve what was read
            log.exception("reading the run %r for metrics failed", self.run)
        return list(fams.made.values())

    def _collect(self, fams: _Families) -> None:
        run = self.run
        if self.spec_hash:
            fams.gauge("byteor_run_info", "the run and its spec", ("run", "spec_hash")).add_metric(
                [run, self.spec_hash], 1
            )
        sample = self.reader.read()
        self._lanes(fams, sample)
        self._nodes(fams, sample)
        if self.adapters is not None:
            self._adapters(fams, self.adapters())
        self._memory(fams, sample)
        unreadable = fams.gauge(
            "byteor_segment_unreadable",
            "1 for a segment of the run that failed validation in this scrape",
            ("run", "segment"),
        )
        for segment, why in sample.unreadable.items():
            unreadable.add_metric([run, segment], 1)
            if (segment, why) not in self._reported:
                self._reported.add((segment, why))
                log.warning("segment %s is unreadable: %s", segment, self.redactor.redact(why))

    def _lanes(self, fams: _Families, sample: RunSample) -> None:
        run = self.run
        for lane, st in sample.lanes.items():
            labels = [run, lane, st.kind]
            for name, doc in _LANE_COUNTERS:
                fams.counter(f"byteor_lane_{name}", doc, _LANE).add_metric(
                    labels, getattr(st, name)
                )
            for name, doc in _LANE_GAUGES:
                fams.gauge(f"byteor_lane_{name}", doc, _LANE).add_metric(labels, getattr(st, name))
            fams.gauge(
                "byteor_lane_closed", "1 once the producer closed the lane", _LANE
            ).add_metric(labels, int(st.closed))
            for c in st.consumers:
                fams.gauge(
                    "byteor_lane_consumer_lag", "records this consumer has not finished", _CONSUMER
                ).add_metric([run, lane, c.name], c.lag)
                fams.counter(
                    "byteor_lane_consumer_lost",
                    "records overwritten before this (best-effort) consumer read them",
                    _CONSUMER,
                ).add_metric([run, lane, c.name], c.lost)

    def _nodes(self, fams: _Families, sample: RunSample) -> None:
        now = time.monotonic_ns()  # the busy share is measured against now
        run = self.run
        for n in sample.nodes:
            labels = [run, n.name, n.role, n.group]
            for name, doc in _NODE_COUNTERS:
                fams.counter(f"byteor_node_{name}", doc, _NODE).add_metric(labels, getattr(n, name))
            fams.counter(
                "byteor_node_busy_seconds",
                "time in the node's work (a stage's op, a source's poll, a sink's write)",
                _NODE,
            ).add_metric(labels, n.busy_ns / 1e9)
            fams.gauge(
                "byteor_node_busy_ratio", "busy time over time since the node started", _NODE
            ).add_metric(labels, n.busy_share(now))
            fams.gauge(
                "byteor_node_inflight", "records the node took and has not committed", _NODE
            ).add_metric(labels, n.inflight)
            fams.gauge("byteor_node_up", "1 while the node's process lives", _NODE).add_metric(
                labels, int(n.alive)
            )

    def _adapters(self, fams: _Families, statuses: Iterable[AdapterStatus]) -> None:
        run = self.run
        for s in statuses:
            labels = [run, s.node, s.kind, s.adapter]
            fams.gauge(
                "byteor_adapter_connected", "1 while the adapter is connected", _ADAPTER
            ).add_metric(labels, int(s.connected))
            fams.counter(
                "byteor_adapter_records", "records read (source) or written (sink)", _ADAPTER
            ).add_metric(labels, s.records)
            fams.counter(
                "byteor_adapter_acked",
                "source: acknowledged upstream; sink: confirmed by the system",
                _ADAPTER,
            ).add_metric(labels, s.acked)
            fams.counter(
                "byteor_adapter_nacked",
                "source: handed back for redelivery; sink: failed writes",
                _ADAPTER,
            ).add_metric(labels, s.nacked)
            if s.committed is not None:
                fams.counter(
                    "byteor_adapter_committed",
                    "source: acknowledgements sent upstream",
                    _ADAPTER,
                ).add_metric(labels, s.committed)
            if s.paused is not None:
                fams.gauge(
                    "byteor_adapter_paused",
                    "1 while the source is paused (back-pressure)",
                    _ADAPTER,
                ).add_metric(labels, int(s.paused))
            if s.pauses is not None:
                fams.counter(
                    "byteor_adapter_pauses", "times the source paused for back-pressure", _ADAPTER
                ).add_metric(labels, s.pauses)
            if s.commit_watermark is not None:
                fams.gauge(
                    "byteor_adapter_commit_watermark",
                    "ingress sequence below which everything is committed upstream",
                    _ADAPTER,
                ).add_metric(labels, s.commit_watermark)
            if s.lag is not None:
                fams.gauge(
                    "byteor_adapter_lag", "records waiting upstream, as the system says", _ADAPTER
                ).add_metric(labels, s.lag)
            if s.latency is not None:
                fams.histogram(
                    "byteor_adapter_latency_seconds",
                    "source: a read that returned records; sink: a write until confirmed",
                    _ADAPTER,
                ).add_metric(labels, _cumulative(s.latency), s.latency.sum_seconds)
            if s.end_to_end is not None:
                e2e = [run, s.node, s.upstream or "", s.adapter]
                fams.histogram(
                    "byteor_end_to_end_latency_seconds",
                    "from the source's read of a record to the sink's confirmed write of it",
                    _END_TO_END,
                ).add_metric(e2e, _cumulative(s.end_to_end), s.end_to_end.sum_seconds)
                fams.counter(
                    "byteor_end_to_end_beyond_ring",
                    "records written whose admission time had left the source's ring (untimed)",
                    _END_TO_END,
                ).add_metric(e2e, s.end_to_end.beyond)

    def _memory(self, fams: _Families, sample: RunSample) -> None:
        procs: dict[int, str] = {os.getpid(): self.process}
        for n in sample.nodes:
            if n.pid and n.alive:
                procs.setdefault(n.pid, n.group or n.name)
        rss = fams.gauge(
            "byteor_process_resident_memory_bytes",
            "resident memory of each live process of the run",
            ("run", "process", "pid"),
        )
        for pid, name in sorted(procs.items()):
            value = _resident_bytes(pid)
            if value is not None:
                rss.add_metric([self.run, name, str(pid)], value)


# -- the HTTP endpoint ------------------------------------------------------------------------


class _Asgi:
    """An ASGI app Starlette routes to as it is (a plain function would be taken for a
    request handler)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def build_app(
    registry: CollectorRegistry,
    ready: ReadyCheck | None = None,
    redactor: Redactor | None = None,
    on_startup: Callable[[], None] | None = None,
) -> Starlette:
    """The Starlette app: ``/metrics``, ``/live``, ``/ready`` (see the module docstring).

    ``ready`` runs in a worker thread at each ``/ready`` request; ``None`` means always
    ready. An exception from it is a 503 with its message (redacted).
    """
    redact = (redactor or Redactor()).redact

    def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    def readiness(request: Request) -> Response:
        if ready is None:
            return JSONResponse({"ready": True})
        try:
            states = dict(ready())
        except Exception as exc:
            log.warning("the readiness check failed: %s", redact(str(exc)))
            error = redact(f"{type(exc).__name__}: {exc}")
            return JSONResponse({"ready": False, "error": error}, status_code=503)
        not_ready = sorted(name for name, ok in states.items() if not ok)
        if states and not not_ready:
            return JSONResponse({"ready": True, "adapters": states})
        body: dict[str, Any] = {"ready": False, "not_ready": not_ready, "adapters": states}
        if not states:
            body["reason"] = "no adapter has reported yet"
        return JSONResponse(body, status_code=503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if on_startup is not None:
            on_startup()
        yield

    return Starlette(
        routes=[
            Route("/metrics", _Asgi(make_asgi_app(registry))),
            Route("/live", live),
            Route("/ready", readiness),
        ],
        lifespan=lifespan,
    )


class ObserveServer:
    """The endpoint running in a daemon thread (made by :func:`start_observe_server`).

    Attributes:
        host, port: where it listens (the port it got, when 0 was asked for).
        registry: the registry ``/metrics`` shows.
    """

    def __init__(
        self,
        sock: socket.socket,
        registry: CollectorRegistry,
        app: Starlette,
        ready_event: threading.Event,
    ) -> None:
        self._sock = sock
        self.registry = registry
        addr = sock.getsockname()
        self.host: str = addr[0]
        self.port: int = addr[1]
        config = uvicorn.Config(
            app,
            log_config=None,  # records go to the root logger: EdgePlane's format, redacted
            log_level="warning",  # not its startup lines ("Press CTRL+C"): we say where we are
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._started = ready_event
        self._ended = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edgeplane-observe", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # reported by start(); a thread has no one else to tell
            self._error = exc
        finally:
            self._ended = True
            self._started.set()  # start() must not wait for a server that is gone

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the app has started (raises :class:`ObserveError`
        if it could not within ``timeout`` seconds)."""
        self._thread.start()
        if not self._started.wait(timeout) or self._ended:
            self.stop()
            why = f": {self._error}" if self._error else ""
            raise ObserveError(f"the metrics endpoint on {self.url} did not start{why}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the socket (waits up to ``timeout`` seconds)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ObserveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_observe_server(
    addr: tuple[str, int],
    collector: Collector | None = None,
    *,
    ready: ReadyCheck | None = None,
    redactor: Redactor | None = None,
    timeout: float = 10.0,
) -> ObserveServer:
    """Serve ``/metrics`` (``collector``'s families), ``/live`` and ``/ready`` on ``addr``.

    Args:
        addr: ``(host, port)``; port 0 picks a free port (see :attr:`ObserveServer.port`).
        collector: usually a :class:`RunCollector`.
        ready: ``node -> connected`` of every adapter (:data:`ReadyCheck`).
        redactor: applied to error texts the endpoint shows or logs.

    Raises:
        ObserveError: the address cannot be listened on, or the server did not start.
    """
    host, port = addr
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ObserveError(
            f"cannot listen on {host}:{port} for metrics: {exc.strerror or exc}; pick another "
            "--metrics-addr (EDGEPLANE_METRICS_ADDR) or turn it off"
        ) from None
    registry = CollectorRegistry()
    if collector is not None:
        registry.register(collector)
    started = threading.Event()
    app = build_app(registry, ready, redactor, on_startup=started.set)
    server = ObserveServer(sock, registry, app, started)
    server.start(timeout)
    log.info("metrics on %s/metrics, health on /live and /ready", server.url)
    return server
