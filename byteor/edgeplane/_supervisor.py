"""EdgePlane's supervisor: a pipeline's data plane, its processes, their restarts.

Theory of operation
-------------------
A *data plane* is one generation of a run: its segments and the processes forked over them.

* Segments: every lane of the graph (``/dev/shm/byteor-<run>.<lane>``, 8 bytes wider than
  the spec's ``slot_bytes``, for the stamp), the counters segment
  (``byteor-<run>.-counters``, one row per node, what ``byteor snapshot`` and the metrics
  read) and the status segment (:mod:`._status`). Before the first generation the
  supervisor looks at every segment of the run's name left from an earlier run: a live one
  means that run is still going (refused); stale ones are removed, as ``byteor doctor
  --remove`` would.
* Processes, forked after the segments exist: one *edge-in* per source (its adapter into its
  ingress lane, acknowledging at the watermark, :mod:`._edge`), one *stage worker* per
  ``process`` group of stages (``main`` too: the supervisor runs no node, it watches; the
  executors' node code, stamped, :mod:`._stages`) and one *edge-out* per sink. asyncio runs
  only in the edge processes. Every child ignores SIGINT and SIGTERM (a terminal's Ctrl-C,
  or a service manager, signals the whole group: only the supervisor decides) and dies with
  the supervisor (``PR_SET_PDEATHSIG``).

The supervisor waits on its children's exits and report pipes. A child that exits after
reporting ``ok`` is done; the run is over when every child is (the sources ended, or a stop
drained everything). Anything else is a failure:

* *fatal* when restarting cannot help: an adapter error that is not retriable (credentials,
  a missing stream), a stage whose ``on_error = fail`` policy stopped it, an adapter that
  could not even start in the first generation (an unreachable server at launch), a failure
  while draining, ``--restart fail``, restarts used up, or a source that cannot be read again
  (stdin). The run stops with one line saying what happened.
* otherwise the *whole data plane restarts* (the simple way that is correct): the other
  children are killed, the generation's counters are folded into the run's totals, the lanes
  and counters are removed and created empty, and every process starts again after a short
  backoff. Upstream delivers again everything above the committed acknowledgements: what was
  admitted and not committed is counted as ``redelivered`` (the duplicates a sink may see).
  Nothing below the watermark was acknowledged, so nothing is lost.

A stop (:meth:`DataPlane.run`'s token, set by SIGTERM/SIGINT) sets the status segment's stop
flag: the edge-ins stop reading, close their lanes and acknowledge what drained; stages and
sinks finish as their inputs close. It must end within ``drain_timeout`` seconds, or the run
fails (the unacknowledged records stay upstream). A second signal kills everything at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal, cast

from byteor import lanes
from byteor.adapters import (
    AdapterError,
    AdapterUnavailable,
    Backoff,
    Sink,
    Source,
    load_adapter,
)
from byteor.edgeplane._config import Redactor
from byteor.edgeplane._edge import (
    LOCAL_ADAPTERS,
    SINK_RETRY,
    STAMP_BYTES,
    EdgeFailed,
    EdgeIn,
    EdgeOut,
    Hop,
    WatermarkReader,
    open_local_sink,
    open_local_source,
)
from byteor.edgeplane._errors import RunError
from byteor.edgeplane._logging import setup_logging
from byteor.edgeplane._stages import StampedStage, StampRow
from byteor.edgeplane._status import (
    CONNECTED,
    PAUSED,
    STARTED,
    W_ACKED,
    W_COMMITTED,
    W_LAG,
    W_NACKED,
    W_PAUSES,
    W_RECORDS,
    W_WATERMARK,
    HistogramCounts,
    StatusSegment,
    stale_status,
)
from byteor.exec import (
    COUNTERS_SUFFIX,
    LaneGraphSP,
    NodeDef,
    NodeReport,
    StageContext,
    StageFailed,
    StopToken,
    build_graph,
    resolve_op,
)
from byteor.exec.nodes import (
    IdleBackoff,
    Input,
    Node,
    Outbox,
    StageNode,
    drive,
    run_round,
    set_pdeathsig,
)
from byteor.kernel import Stage
from byteor.lanes import SHM_DIR, SHM_PREFIX
from byteor.lanes.doctor import inspect_segment
from byteor.spec import MAX_SLOT_BYTES, Finding, PipelineSpecV1

__all__ = [
    "PlaneConfig",
    "RestartBudget",
    "Topology",
    "DataPlane",
    "EdgeState",
    "NodeTotals",
    "shape_findings",
]

log = logging.getLogger("byteor.edgeplane")

Role = Literal["edge-in", "stages", "edge-out"]
_WAIT_S = 0.25  # the supervisor's longest wait between two looks at its run
_RECOVERY_WAIT_S = 0.01  # ... while a restarted plane is not running yet (its recovery time)


def shape_findings(spec: PipelineSpecV1) -> list[Finding]:
    """What EdgePlane cannot run in a valid spec, as findings (``EP1xx``, errors).

    * EP101: a stage or sink reads several lanes. Stamps come from one ingress sequence per
      source and must not decrease along a lane; a merge would interleave them.
    * EP102: a lane with ``policy = overwrite`` loses records on purpose; at-least-once
      needs lanes that never drop one.
    * EP103: a lane whose ``slot_bytes`` leaves no room for the 8-byte stamp.
    """
    out: list[Finding] = []
    for st in spec.stages.values():
        if len(st.inputs) > 1:
            out.append(_merge_finding("stage", st.name, st.inputs))
    for sk in spec.sinks.values():
        if len(sk.inputs) > 1:
            out.append(_merge_finding("sink", sk.name, sk.inputs))
    for lane in spec.lanes.values():
        if lane.policy == "overwrite":
            out.append(
                Finding(
                    "EP102",
                    "error",
                    f"lane.{lane.name}.policy",
                    None,
                    f"lane {lane.name!r} has policy overwrite, which drops records a slow "
                    "reader has not read: EdgePlane delivers at least once, use policy block",
                )
            )
        if lane.slot_bytes + STAMP_BYTES > MAX_SLOT_BYTES:
            out.append(
                Finding(
                    "EP103",
                    "error",
                    f"lane.{lane.name}.slot_bytes",
                    None,
                    f"lane {lane.name!r} has slot_bytes {lane.slot_bytes}; EdgePlane frames "
                    f"each record with an 8-byte stamp, so at most {MAX_SLOT_BYTES - STAMP_BYTES}",
                )
            )
    return out


def _merge_finding(kind: str, name: str, inputs: Sequence[str]) -> Finding:
    return Finding(
        "EP101",
        "error",
        f"{kind}.{name}.in",
        None,
        f"{kind} {name!r} reads {len(inputs)} lanes ({', '.join(inputs)}); EdgePlane runs "
        "stages and sinks that read one lane each (acknowledgements follow one ingress "
        "sequence per source): give each its own path, or merge upstream of EdgePlane",
    )


@dataclass(frozen=True, slots=True)
class PlaneConfig:
    """How a data plane runs (``edgeplane run``'s options, resolved).

    Attributes:
        run: the run's name (segments ``byteor-<run>.*``).
        batch: most records an edge or a stage moves at a time.
        restart: what a failure that a restart can fix does: ``restart`` or ``fail``.
        max_restarts: restarts before the run fails anyway (within ``restart_window``).
        restart_window: count only the restarts of the last this many seconds (a sliding
            window); 0: every restart of the run.
        drain_timeout: seconds a graceful stop may take.
        restart_backoff: the first wait before a restart and the longest: it doubles while
            restarted planes fail before running again, and starts over once one runs.
        log_format, log_level: how the children log (``None``: they keep what they inherit).
        sink_retry: the backoff between retries of a sink write that failed retriably.
    """

    run: str
    batch: int = 256
    restart: Literal["restart", "fail"] = "restart"
    max_restarts: int = 5
    restart_window: float = 0.0
    drain_timeout: float = 30.0
    restart_backoff: tuple[float, float] = (0.1, 5.0)
    log_format: Literal["text", "json"] | None = None
    log_level: str = "info"
    sink_retry: Backoff = SINK_RETRY


class RestartBudget:
    """How many restarts a run may still make: at most ``most`` within the last ``window``
    seconds (a sliding window), or in the whole run when ``window`` is 0. Sans-IO: the clock
    is given, so a test drives time.
    """

    def __init__(self, most: int, window: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.most = most
        self.window = window
        self.clock = clock
        self._times: deque[float] = deque()

    def recent(self) -> int:
        """Restarts that count now (those of the last ``window`` seconds, or all)."""
        if self.window > 0:
            horizon = self.clock() - self.window
            while self._times and self._times[0] <= horizon:
                self._times.popleft()
        return len(self._times)

    def allows(self) -> bool:
        """Whether one more restart fits."""
        return self.recent() < self.most

    def spend(self) -> str:
        """Count a restart now; returns where the run stands, for the log ("2 of 5")."""
        self._times.append(self.clock())
        within = f" in {self.window:g} s" if self.window > 0 else ""
        return f"{self.recent()} of {self.most}{within}"

    def exhausted(self) -> str:
        """Why no restart is left, and what to do."""
        n, most = self.recent(), self.most
        if self.window > 0:
            return (
                f"restarted {n} time(s) in the last {self.window:g} s, the most --max-restarts "
                f"{most} allows within --restart-window {self.window:g} (it keeps failing: fix "
                "the cause, or allow more with a higher --max-restarts or a shorter "
                "--restart-window)"
            )
        return (
            f"restarted {n} time(s) already, the most --max-restarts {most} allows in a run "
            "(fix the cause, raise --max-restarts, or give --restart-window SECONDS to count "
            "only recent restarts)"
        )


class Topology:
    """A spec as EdgePlane runs it: the graph, its rows and each source's paths.

    Raises:
        RunError: the spec has a shape EdgePlane does not run (:func:`shape_findings`).
    """

    def __init__(self, spec: PipelineSpecV1) -> None:
        findings = shape_findings(spec)
        if findings:
            raise RunError(f"error {findings[0].code} [{findings[0].key}]: {findings[0].message}")
        self.spec = spec
        self.graph = build_graph(spec)
        nodes = self.graph.nodes
        self.index = {n.name: i for i, n in enumerate(nodes)}
        self.sources = [n for n in nodes if n.kind == "source"]
        self.sinks = [n for n in nodes if n.kind == "sink"]
        groups: dict[str, list[NodeDef]] = {}
        for n in nodes:
            if n.kind == "stage":
                groups.setdefault(n.process, []).append(n)
        self.groups = {p: tuple(groups[p]) for p in sorted(groups)}
        self._readers: dict[str, list[NodeDef]] = {}
        self._writers: dict[str, NodeDef] = {}
        for n in nodes:
            for lane in n.inputs:
                self._readers.setdefault(lane, []).append(n)
            for lane in n.outputs if n.kind == "source" else self.outputs_of(n):
                self._writers[lane] = n

    @staticmethod
    def outputs_of(node: NodeDef) -> tuple[str, ...]:
        """Every lane a node writes (an error lane too)."""
        err = node.policy.lane
        return (*node.outputs, *((err,) if err is not None else ()))

    def reader_name(self, lane: str, node: str) -> str:
        """The consumer a node reads ``lane`` as (the one consumer of an events lane)."""
        return "default" if self.graph.lanes[lane].kind == "events" else node

    def source_of(self, node: NodeDef) -> NodeDef:
        """The source whose ingress sequence stamps what ``node`` reads (one: EP101)."""
        while node.kind != "source":
            node = self._writers[node.inputs[0]]
        return node

    def tree(self, source: NodeDef) -> tuple[list[tuple[NodeDef, str]], list[list[int]]]:
        """The hops reachable from ``source`` (node, input lane) in flow order, and each path
        to a leaf as indexes into them."""
        hops: list[tuple[NodeDef, str]] = []
        paths: list[list[int]] = []
        frontier: list[tuple[str, list[int]]] = [(source.outputs[0], [])]
        while frontier:
            following: list[tuple[str, list[int]]] = []
            for lane, prefix in frontier:
                for node in self._readers.get(lane, ()):
                    hops.append((node, lane))
                    path = [*prefix, len(hops) - 1]
                    outs = self.outputs_of(node) if node.kind == "stage" else ()
                    if not outs:
                        paths.append(path)
                    following += [(o, path) for o in outs]
            frontier = following
        return hops, paths

    def window(self, source: NodeDef, batch: int) -> int:
        """The most records ``source`` may have unacknowledged: twice what its lanes hold
        (records an op holds back are beyond the lanes), and a few batches."""
        hops, _ = self.tree(source)
        lanes_of = {source.outputs[0]} | {lane for n, _ in hops for lane in self.outputs_of(n)}
        held = sum(self.graph.lanes[lane].capacity for lane in lanes_of)
        return 2 * held + 4 * batch


@dataclass(slots=True)
class NodeTotals:
    """One node's counts over every generation of a run."""

    kind: str
    name: str
    what: str  # the op or adapter
    process: str
    records_in: int = 0
    records_out: int = 0
    errors: int = 0
    skipped: int = 0
    routed: int = 0
    busy_ns: int = 0
    acked: int = 0
    committed: int = 0
    pauses: int = 0
    redelivered: int = 0
    failed_writes: int = 0


@dataclass(frozen=True, slots=True)
class EdgeState:
    """A source's or sink's adapter, as its edge process reports it now."""

    node: str
    kind: Literal["source", "sink"]
    adapter: str
    connected: bool
    paused: bool
    records: int
    acked: int
    committed: int
    nacked: int
    watermark: int | None
    lag: int | None
    pauses: int
    detail: str
    latency: HistogramCounts | None = None  # source: its reads; sink: its writes
    end_to_end: HistogramCounts | None = None  # sink: source admission -> confirmed
    upstream: str | None = None  # sink: the source its lane comes from


@dataclass
class _Child:
    role: Role
    name: str
    proc: Any = None  # multiprocessing.Process (fork context)
    conn: Connection | None = None
    message: tuple[Any, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.role}:{self.name}"


@dataclass
class _Generation:
    handles: dict[str, lanes.Lane] = field(default_factory=dict)
    counters: lanes.Counters | None = None
    children: list[_Child] = field(default_factory=list)


def _how(code: int | None) -> str:
    if code is None:
        return "is gone"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


class DataPlane:
    """Runs a spec's data plane under supervision (see the module docstring).

    Args:
        spec: a valid spec of a shape EdgePlane runs.
        config: the run's name and policies.
        redactor: replaces the run's secrets in what is logged and reported.
        sources, sinks: adapter sources and sinks to use in place of the spec's, by node
            name (tests; an in-process run, :meth:`run_inline`, can use in-process ones).
        clock: monotonic seconds (drain deadline, backoff, recovery time).

    Raises:
        RunError: the spec has a shape EdgePlane does not run.
        OpNotFound, StageConfigError: a stage's op cannot be resolved.
    """

    def __init__(
        self,
        spec: PipelineSpecV1,
        config: PlaneConfig,
        *,
        redactor: Redactor | None = None,
        sources: Mapping[str, Source] | None = None,
        sinks: Mapping[str, Sink] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.batch < 1 or config.max_restarts < 0 or config.drain_timeout <= 0:
            raise ValueError("batch >= 1, max_restarts >= 0 and drain_timeout > 0, please")
        if not 0 <= config.restart_window < float("inf"):
            raise ValueError("restart_window >= 0 (0: the whole run), please")
        self.topo = Topology(spec)
        self.spec = spec
        self.config = config
        self.run_name = config.run
        self.redactor = redactor or Redactor()
        self._sources = dict(sources or {})
        self._sinks = dict(sinks or {})
        self._clock = clock
        graph = self.topo.graph
        # Ops resolve before anything starts (a bad one fails once, here); forked children
        # inherit them untouched, so a restarted worker gets fresh ones.
        self.stages: dict[str, Stage] = {}
        for node in graph.nodes:
            if node.kind == "stage":
                ctx = StageContext(node.name, node.params, node.outputs, graph.target)
                self.stages[node.name] = resolve_op(node.op, ctx)
        self.totals = {n.name: NodeTotals(n.kind, n.name, n.op, n.process) for n in graph.nodes}
        #: each edge's (adapter, end-to-end) histograms as last read (they count the whole run)
        self.latency: dict[str, tuple[HistogramCounts, HistogramCounts]] = {}
        self.restarts = 0
        self.budget = RestartBudget(config.max_restarts, config.restart_window, clock)
        self.recoveries: list[float] = []
        self.status: StatusSegment | None = None
        self.counters: lanes.Counters | None = None
        self._gen: _Generation | None = None
        self._memory = False
        self._recovering_since: float | None = None
        self._failing = 0  # restarts since a plane last ran (the backoff's exponent)
        self._last_failure = ""
        self.stopped = False

    # -- adapters ---------------------------------------------------------------------------

    def check_adapters(self) -> None:
        """Import every server adapter the spec names, so a missing client library stops the
        run before anything starts (and refuse ``memory``, which cannot cross processes).

        Raises:
            RunError: (exit code 2) the message is the adapter's install hint.
        """
        for node in (*self.topo.sources, *self.topo.sinks):
            if node.op in LOCAL_ADAPTERS or node.name in self._sources or node.name in self._sinks:
                continue
            if node.op == "memory":
                raise RunError(
                    f"{node.kind} {node.name!r} uses the memory adapter, whose topics live in "
                    "one process, and edgeplane run gives each adapter a process of its own: "
                    "run it in-process (byteor.edgeplane run_inline), or use a broker",
                    exit_code=2,
                )
            try:
                load_adapter(node.op)
            except AdapterUnavailable as exc:
                raise RunError(f"{node.kind} {node.name!r}: {exc}", exit_code=2) from None

    def _source(self, node: NodeDef) -> Source:
        given = self._sources.get(node.name)
        if given is not None:
            return given
        if node.op in LOCAL_ADAPTERS:
            return open_local_source(node.name, node.op, node.params)
        return load_adapter(node.op).source(node.params)

    def _sink(self, node: NodeDef) -> Sink:
        given = self._sinks.get(node.name)
        if given is not None:
            return given
        if node.op in LOCAL_ADAPTERS:
            return open_local_sink(node.name, node.op, node.params)
        return load_adapter(node.op).sink(node.params)

    def _batch(self, node: NodeDef) -> int:
        batch = self.config.batch
        if node.op in LOCAL_ADAPTERS or node.name in self._sources or node.name in self._sinks:
            return batch
        return max(1, min(batch, load_adapter(node.op).capabilities.max_batch))

    # -- segments ---------------------------------------------------------------------------

    def _lane_segment(self, lane: str) -> str:
        return f"{self.run_name}.{lane}"

    def reclaim(self) -> list[str]:
        """Remove the segments a dead run of this name left; returns their paths.

        Raises:
            RunError: (exit code 2) a run of this name is still going.
        """
        run = self.run_name
        head = f"{SHM_PREFIX}{run}."
        removed: list[str] = []
        alive = stale_status(run)
        if alive is False:
            raise RunError(
                f"a run named {run!r} is still going (its supervisor lives): stop it, or give "
                "this one another --name",
                exit_code=2,
            )
        try:
            names = sorted(f for f in os.listdir(SHM_DIR) if f.startswith(head))
        except OSError:
            names = []
        for name in names:
            path = os.path.join(SHM_DIR, name)
            report = inspect_segment(path)
            if report.verdict == "live":
                raise RunError(
                    f"a run named {run!r} is still going ({path} is in use): stop it, or give "
                    "this one another --name",
                    exit_code=2,
                )
            if report.removable:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                removed.append(path)
        if alive is True:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, f"edgeplane-{run}.status"))
        if removed:
            log.info("removed %d segment(s) a dead run %r left behind", len(removed), run)
        return removed

    def _create(self) -> _Generation:
        """A generation's lanes and counters (the status segment lives for the whole run)."""
        graph = self.topo.graph
        backing = "memory" if self._memory else "shm"
        gen = _Generation()
        try:
            for name, lane in graph.lanes.items():
                durable = lane.kind in ("fanout", "journal")
                gen.handles[name] = lanes.create(
                    self._lane_segment(name),
                    lane.kind,  # type: ignore[arg-type]
                    lane.capacity,
                    lane.slot_bytes + STAMP_BYTES,
                    max_consumers=None if lane.kind == "events" else max(16, len(lane.consumers)),
                    consumers=lane.consumers if durable else (),
                    backing=backing,  # type: ignore[arg-type]
                    replace=not self._memory,
                )
            # A row's group is the process that runs the node (what snapshot shows).
            group = {"source": "edge-in", "sink": "edge-out"}
            rows = [
                lanes.CounterRow(n.name, n.kind, group.get(n.kind, n.process)) for n in graph.nodes
            ]
            if self._memory:
                gen.counters = lanes.create_counters(
                    f"{self.run_name}-inline", rows, backing="memory"
                )
            else:
                gen.counters = lanes.create_counters(
                    f"{self.run_name}{COUNTERS_SUFFIX}", rows, replace=True
                )
        except (lanes.LaneError, OSError) as exc:
            self._destroy(gen)
            raise RunError(f"cannot create the run's shared memory: {exc}") from None
        except BaseException:
            self._destroy(gen)
            raise
        self.counters = gen.counters
        if self.status is None:
            self.status = StatusSegment.create(self.run_name, len(graph.nodes), memory=self._memory)
        self.status.new_generation()
        return gen

    def _destroy(self, gen: _Generation) -> None:
        backing = "memory" if self._memory else "shm"
        for handle in gen.handles.values():
            try:
                handle.close()
            finally:
                lanes.unlink(handle.name, backing=backing)  # type: ignore[arg-type]
        gen.handles.clear()
        counters, gen.counters = gen.counters, None
        if counters is not None:
            counters.finish()
            counters.close()
            if counters.path is not None:
                lanes.unlink_counters(counters.name)
        self.counters = None

    def _close_status(self) -> None:
        status, self.status = self.status, None
        if status is not None:
            status.close()
            status.unlink()

    # -- the nodes, in whichever process runs them ------------------------------------------

    def _edge_in(self, name: str, handles: Mapping[str, lanes.Lane]) -> EdgeIn:
        topo, status, counters = self.topo, self.status, self.counters
        assert status is not None and counters is not None
        node = topo.graph.node(name)
        tree, paths = topo.tree(node)
        hops = [
            Hop(
                n.name,
                n.kind,
                handles[lane],
                topo.reader_name(lane, n.name),
                status.rows[topo.index[n.name]],
            )
            for n, lane in tree
        ]
        i = topo.index[name]
        batch = self._batch(node)
        return EdgeIn(
            name,
            node.op,
            self._source(node),
            handles[node.outputs[0]].sender(),
            WatermarkReader(hops, paths),
            status.rows[i],
            counters.writer(i),
            batch=batch,
            window=topo.window(node, batch),
            stop=lambda: status.stop_requested,
            latency=status.latency[i],
        )

    def _edge_out(self, name: str, handles: Mapping[str, lanes.Lane]) -> EdgeOut:
        topo, status, counters = self.topo, self.status, self.counters
        assert status is not None and counters is not None
        node = topo.graph.node(name)
        (lane,) = node.inputs
        rx = LaneGraphSP._receiver(handles[lane], topo.graph.lanes[lane], name)
        i = topo.index[name]
        return EdgeOut(
            name,
            node.op,
            self._sink(node),
            rx,
            status.rows[i],
            counters.writer(i),
            batch=self._batch(node),
            retry=self.config.sink_retry,
            lane=lane,
            latency=status.latency[i],
            upstream=status.latency[topo.index[topo.source_of(node).name]].ring,
        )

    def _stage_nodes(
        self, defs: Sequence[NodeDef], handles: Mapping[str, lanes.Lane]
    ) -> list[Node]:
        topo, status, counters = self.topo, self.status, self.counters
        assert status is not None and counters is not None
        graph = topo.graph
        nodes: list[Node] = []
        for d in defs:
            i = topo.index[d.name]
            inp = Input(
                [LaneGraphSP._receiver(handles[x], graph.lanes[x], d.name) for x in d.inputs],
                d.merge,
                d.inputs,
                min(graph.lanes[x].capacity for x in d.inputs),
            )
            outs = [Outbox(o, handles[o].sender()) for o in d.outputs]
            err = d.policy.lane
            err_box = Outbox(err, handles[err].sender()) if err is not None else None
            stamped = StampedStage(self.stages[d.name], status.rows[i])
            row = StampRow(counters.writer(i), stamped, status.rows[i])
            report = NodeReport("stage", d.name, d.op, process=d.process)
            nodes.append(StageNode(report, stamped, inp, outs, err_box, d.policy.action, row))
        return nodes

    # -- children ---------------------------------------------------------------------------

    def _children(self) -> list[_Child]:
        topo = self.topo
        return [
            *(_Child("edge-out", n.name) for n in topo.sinks),
            *(_Child("stages", p) for p in topo.groups),
            *(_Child("edge-in", n.name) for n in topo.sources),
        ]

    def _spawn(self, child: _Child) -> None:
        ctx = multiprocessing.get_context("fork")
        rx, tx = ctx.Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # a child must not write our buffers again
            with contextlib.suppress(Exception):
                stream.flush()
        proc = ctx.Process(
            target=_child_main,
            args=(self, child.role, child.name, tx, os.getpid()),
            name=f"edgeplane-{child.label}",
            daemon=True,
        )
        proc.start()
        tx.close()
        child.proc, child.conn, child.message = proc, rx, None

    def _start(self) -> None:
        gen = self._create()
        self._gen = gen
        gen.children = self._children()
        for child in gen.children:
            self._spawn(child)
        log.info(
            "data plane %s: %d process(es): %s",
            "restarted" if self.restarts else "started",
            len(gen.children),
            ", ".join(f"{c.label} (pid {c.proc.pid})" for c in gen.children),
        )

    @staticmethod
    def _kill(children: Sequence[_Child]) -> None:
        for c in children:
            if c.proc is not None and c.proc.exitcode is None:
                with contextlib.suppress(OSError):
                    c.proc.kill()
        for c in children:
            if c.proc is not None:
                c.proc.join()
            if c.conn is not None:
                c.conn.close()
                c.conn = None

    def pids(self) -> dict[str, int]:
        """``label -> pid`` of the children of the running generation."""
        gen = self._gen
        if gen is None:
            return {}
        return {c.label: c.proc.pid for c in gen.children if c.proc is not None}

    # -- what a generation did ---------------------------------------------------------------

    def _fold(self, crashed: bool) -> None:
        """Add the generation's counts to the run's totals (and, after a crash, what the
        sources will receive again)."""
        counters, status = self.counters, self.status
        if counters is None or status is None:
            return
        for i, node in enumerate(self.topo.graph.nodes):
            t = self.totals[node.name]
            row = counters.read(i)
            st = status.rows[i]
            t.records_in += row.records_in
            t.records_out += row.records_out
            t.errors += row.errors
            t.skipped += row.skipped
            t.routed += row.routed
            t.busy_ns += row.busy_ns
            if node.kind == "source":
                t.acked += st.get(W_ACKED)
                t.committed += st.get(W_COMMITTED)
                t.pauses += st.get(W_PAUSES)
                if crashed:
                    admitted = st.get(W_RECORDS)
                    local = node.op in LOCAL_ADAPTERS  # read again from the start
                    t.redelivered += admitted if local else admitted - st.get(W_COMMITTED)
            elif node.kind == "sink":
                t.failed_writes += st.get(W_NACKED)
            if node.kind != "stage":
                block = status.latency[i]
                self.latency[node.name] = (block.adapter.read(), block.end_to_end.read())

    def edge_states(self) -> list[EdgeState]:
        """Every source's and sink's adapter state (for ``/ready`` and the metrics)."""
        status = self.status
        out: list[EdgeState] = []
        if status is None:
            return out
        for node in (*self.topo.sources, *self.topo.sinks):
            st = status.rows[self.topo.index[node.name]]
            lag = st.get(W_LAG)
            source = node.kind == "source"
            block = status.latency[self.topo.index[node.name]]
            out.append(
                EdgeState(
                    node.name,
                    cast(Literal["source", "sink"], node.kind),
                    node.op,
                    st.has(CONNECTED),
                    st.has(PAUSED),
                    st.get(W_RECORDS),
                    st.get(W_ACKED) if source else st.get(W_RECORDS),
                    st.get(W_COMMITTED),
                    st.get(W_NACKED),
                    st.get(W_WATERMARK) if source else None,
                    lag - 1 if lag else None,
                    st.get(W_PAUSES),
                    self.redactor.redact(st.detail()),
                    block.adapter.read(),
                    None if source else block.end_to_end.read(),
                    None if source else self.topo.source_of(node).name,
                )
            )
        return out

    def ready(self) -> dict[str, bool]:
        """``node -> connected`` of every source and sink."""
        return {s.node: s.connected for s in self.edge_states()}

    def lane_statistics(self) -> dict[str, lanes.LaneStatistics]:
        """Each lane's statistics in the running generation (empty between generations)."""
        gen = self._gen
        if gen is None:
            return {}
        return {name: handle.statistics() for name, handle in gen.handles.items()}

    def progress(self) -> tuple[int, int, int]:
        """Records admitted, records written (this generation and before), records in lanes."""
        counters = self.counters
        total_in = sum(self.totals[n.name].records_in for n in self.topo.sources)
        total_out = sum(self.totals[n.name].records_out for n in self.topo.sinks)
        lag = 0
        if counters is not None:
            for n in self.topo.sources:
                total_in += counters.read(self.topo.index[n.name]).records_in
            for n in self.topo.sinks:
                total_out += counters.read(self.topo.index[n.name]).records_out
        with contextlib.suppress(lanes.LaneError):
            lag = sum(st.lag for st in self.lane_statistics().values())
        return total_in, total_out, lag

    def summary(self) -> dict[str, Any]:
        """What the run did, over every generation (the run summary's fields)."""
        graph = self.topo.graph
        t = self.totals
        empty = (HistogramCounts(), HistogramCounts())
        lat = {n.name: self.latency.get(n.name, empty) for n in graph.nodes}
        sources = {
            n.name: {
                "adapter": n.op,
                "records_in": t[n.name].records_in,
                "records_out": t[n.name].records_out,
                "acked": t[n.name].acked,
                "committed": t[n.name].committed,
                "redelivered": t[n.name].redelivered,
                "pauses": t[n.name].pauses,
                "read_latency": lat[n.name][0].summary(),
            }
            for n in self.topo.sources
        }
        stages = {
            n.name: {
                "op": n.op,
                "process": n.process,
                "records_in": t[n.name].records_in,
                "records_out": t[n.name].records_out,
                "errors": t[n.name].errors,
                "skipped": t[n.name].skipped,
                "routed": t[n.name].routed,
            }
            for n in graph.nodes
            if n.kind == "stage"
        }
        sinks = {
            n.name: {
                "adapter": n.op,
                "records_in": t[n.name].records_in,
                "records_out": t[n.name].records_out,
                "failed_writes": t[n.name].failed_writes,
                "write_latency": lat[n.name][0].summary(),
                "end_to_end": lat[n.name][1].summary(),
            }
            for n in self.topo.sinks
        }
        end_to_end = sum((lat[n.name][1] for n in self.topo.sinks), HistogramCounts()).summary()
        return {
            "run": self.run_name,
            "pipeline": graph.pipeline,
            "target": graph.target,
            "records_in": sum(s["records_in"] for s in sources.values()),
            "records_out": sum(s["records_out"] for s in sinks.values()),
            "acked": sum(s["acked"] for s in sources.values()),
            "restarts": self.restarts,
            "duplicates": sum(s["redelivered"] for s in sources.values()),
            "recovery_s": [round(r, 3) for r in self.recoveries],
            "end_to_end_p50_s": end_to_end["p50_s"],
            "end_to_end_p99_s": end_to_end["p99_s"],
            "stopped": self.stopped,
            "sources": sources,
            "stages": stages,
            "sinks": sinks,
            "busy_s": {name: round(x.busy_ns / 1e9, 6) for name, x in t.items()},
        }

    # -- running under supervision ------------------------------------------------------------

    def run(
        self,
        stop: StopToken | None = None,
        tick: Callable[[], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        """Run the data plane in child processes until the sources end or ``stop`` drains it.

        Args:
            stop: set (by a signal handler) to drain and stop; its ``wake_fd`` wakes the
                supervisor at once.
            tick: called about every quarter second while running (the progress line).
            on_started: called once the first generation's processes are forked (start
                threads, such as the metrics endpoint's, only then: a fork copies a process
                with its threads' locks held).

        Raises:
            RunError: a fatal failure or restarts used up (``summary`` has the counts).
        """
        stop = stop or StopToken()
        self._memory = False
        self.reclaim()
        try:
            self._start()
            if on_started is not None:
                on_started()
            self._watch(stop, tick)
        except RunError as exc:
            self._finish(crashed=True)
            exc.summary = self.summary()
            raise
        except BaseException:
            self._finish(crashed=True)
            raise
        self._finish(crashed=False)

    def _finish(self, crashed: bool) -> None:
        gen, self._gen = self._gen, None
        if gen is not None:
            self._kill(gen.children)
            self._fold(crashed)
            self._destroy(gen)
        self._close_status()

    def _watch(self, stop: StopToken, tick: Callable[[], None] | None) -> None:
        draining_since: float | None = None
        while True:
            gen = self._gen
            assert gen is not None and self.status is not None
            if stop.requested and draining_since is None:
                draining_since = self._clock()
                self.stopped = True
                self.status.request_stop()
                log.info("stopping: sources stop reading, the lanes drain")
            if draining_since is not None:
                waited = self._clock() - draining_since
                if waited > self.config.drain_timeout:
                    raise RunError(
                        f"the drain did not finish within {self.config.drain_timeout:g} s "
                        f"(--drain-timeout): stopped at once; {self._unacked()} record(s) were "
                        "not acknowledged and stay upstream, to be delivered again"
                    )
            recovering = self._recovering_since is not None
            self._wait(gen, stop, _RECOVERY_WAIT_S if recovering else _WAIT_S)
            failed = self._check(gen)
            if failed is not None:
                self._recovered()  # it may have been running again before this failure
                self._failure(failed, draining=draining_since is not None, stop=stop)
                continue
            if all(c.message is not None and c.proc.exitcode == 0 for c in gen.children):
                return
            self._recovered()
            if tick is not None:
                tick()

    def _wait(self, gen: _Generation, stop: StopToken, timeout: float) -> None:
        waiting: list[Any] = [c.conn for c in gen.children if c.conn and c.message is None]
        waiting += [c.proc.sentinel for c in gen.children if c.proc.exitcode is None]
        wake = stop.wake_fd
        if wake is not None:
            waiting.append(wake)
        if not waiting:
            return
        ready = multiprocessing.connection.wait(waiting, timeout)
        if wake is not None and wake in ready:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while os.read(wake, 512):
                    pass

    @staticmethod
    def _check(gen: _Generation) -> _Child | None:
        """Collect reports and exits; the first child that failed, if one did."""
        for c in gen.children:
            if c.message is None and c.conn is not None:
                with contextlib.suppress(EOFError, OSError):
                    if c.conn.poll():
                        c.message = c.conn.recv()
            if c.message is not None and c.message[0] == "error":
                c.proc.join(1.0)  # it exits right after reporting
                return c
            if c.proc.exitcode is not None:
                if c.message is None and c.conn is not None:
                    with contextlib.suppress(EOFError, OSError):
                        if c.conn.poll():
                            c.message = c.conn.recv()
                if c.message is None or c.proc.exitcode != 0:
                    return c
        return None

    def _unacked(self) -> int:
        status = self.status
        if status is None:
            return 0
        rows = [status.rows[self.topo.index[n.name]] for n in self.topo.sources]
        return sum(r.get(W_RECORDS) - r.get(W_ACKED) for r in rows)

    def _describe(self, c: _Child) -> str:
        if c.message is not None and c.message[0] == "error":
            return f"{c.label} failed: {c.message[2]}"
        pid = c.proc.pid if c.proc is not None else "?"
        return f"{c.label} (pid {pid}) {_how(c.proc.exitcode)}"

    def _failure(self, c: _Child, *, draining: bool, stop: StopToken) -> None:
        what = self._describe(c)
        self._last_failure = what
        status = self.status
        assert status is not None
        fatal = ""
        if c.message is not None and c.message[0] == "error" and not c.message[3]:
            fatal = "it cannot be fixed by a restart"
        elif c.role != "stages" and status.generation == 1 and not self._started(c):
            fatal = "it could not start"
        elif draining:
            fatal = "it failed while the run was draining"
        elif self.config.restart == "fail":
            fatal = "--restart fail"
        elif not self.budget.allows():
            fatal = self.budget.exhausted()
        else:
            for n in self.topo.sources:
                if n.op == "stdin":
                    fatal = f"source {n.name!r} reads stdin, which cannot be read again"
        if fatal:
            raise RunError(
                f"{what}; {fatal}: the run is stopped ({self._unacked()} record(s) not "
                "acknowledged stay upstream)"
            )
        self._restart(what, stop)

    def _started(self, c: _Child) -> bool:
        status = self.status
        assert status is not None
        return status.rows[self.topo.index[c.name]].has(STARTED)

    def _restart(self, what: str, stop: StopToken) -> None:
        gen = self._gen
        assert gen is not None
        since = self._clock()
        self._kill(gen.children)
        self._fold(crashed=True)
        self._destroy(gen)
        self._gen = None
        first, longest = self.config.restart_backoff
        wait = min(longest, first * 2**self._failing)
        self._failing += 1
        self.restarts += 1
        log.warning(
            "%s; restarting the data plane (%s) in %.2f s: upstream delivers again what "
            "was not acknowledged",
            what,
            self.budget.spend(),
            wait,
        )
        deadline = self._clock() + wait
        while not stop.requested and self._clock() < deadline:
            if stop.wake_fd is not None:
                multiprocessing.connection.wait([stop.wake_fd], deadline - self._clock())
            else:
                time.sleep(max(0.0, deadline - self._clock()))
        if stop.requested:  # nothing runs: what was acknowledged is done, the rest upstream
            self.stopped = True
            self._gen = _Generation()  # no children: the watch loop ends
            return
        self._recovering_since = since
        self._start()

    def _recovered(self) -> None:
        since = self._recovering_since
        if since is None or self.status is None:
            return
        edges = [*self.topo.sources, *self.topo.sinks]
        if all(self.status.rows[self.topo.index[n.name]].has(CONNECTED) for n in edges):
            took = self._clock() - since
            self.recoveries.append(took)
            self._recovering_since = None
            self._failing = 0  # it ran: the next failure waits the first backoff again
            log.info("data plane running again %.3f s after %s", took, self._last_failure)

    # -- running in this process ----------------------------------------------------------------

    async def run_inline(self, stop: asyncio.Event | None = None) -> None:
        """Run every node in this process and this event loop, over in-memory lanes: the
        edges as tasks, the stages stepped between them. For tests and examples (an
        in-process ``memory`` adapter works here); no restarts, no supervision.

        Raises:
            AdapterError, EdgeFailed, StageFailed: what failed, as it is.
        """
        self._memory = True
        gen = self._create()
        self._gen = gen
        crashed = True
        try:
            handles = gen.handles
            edges_in = [self._edge_in(n.name, handles) for n in self.topo.sources]
            edges_out = [self._edge_out(n.name, handles) for n in self.topo.sinks]
            stage_nodes = self._stage_nodes(
                [n for n in self.topo.graph.nodes if n.kind == "stage"], handles
            )
            tasks = [asyncio.ensure_future(e.run()) for e in edges_out]
            tasks += [asyncio.ensure_future(e.run()) for e in edges_in]
            tasks.append(asyncio.ensure_future(self._step_stages(stage_nodes)))
            relay = asyncio.ensure_future(self._relay_stop(stop or asyncio.Event()))
            try:
                pending = set(tasks)
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                    for task in done:
                        task.result()
            finally:
                for task in (*tasks, relay):
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await task
            crashed = False
        finally:
            self._gen = None
            self._fold(crashed)
            self._destroy(gen)
            self._close_status()

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stopped = True
        if self.status is not None:
            self.status.request_stop()
        await asyncio.Event().wait()  # cancelled when the run ends

    async def _step_stages(self, nodes: Sequence[Node]) -> None:
        token = StopToken()
        batch = self.config.batch
        while nodes and not all(n.done for n in nodes):
            moved = run_round(nodes, batch, token)
            await asyncio.sleep(0 if moved else 0.0005)


# -- in a child ---------------------------------------------------------------------------------


def _child_main(plane: DataPlane, role: Role, name: str, conn: Connection, parent: int) -> None:
    """A forked child: run one edge or one stage group, report, leave with ``os._exit``
    (a fork holds copies of the supervisor's buffered streams, never to be flushed twice)."""
    set_pdeathsig()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)  # the supervisor's wake-up pipe is not ours
    if os.getppid() != parent:
        os._exit(1)
    config = plane.config
    if config.log_format is not None:
        setup_logging(config.log_format, config.log_level, plane.redactor, plane.run_name,
                      f"{role}:{name}")  # fmt: skip
    code = 0
    try:
        handles = _attach(plane, role, name)
        if role == "stages":
            _stage_worker(plane, name, handles, parent)
        elif role == "edge-in":
            asyncio.run(plane._edge_in(name, handles).run())
        else:
            asyncio.run(plane._edge_out(name, handles).run())
        conn.send(("ok",))
    except BaseException as exc:
        code = 1
        retriable = True
        if isinstance(exc, AdapterError | EdgeFailed):
            retriable = exc.retriable
        elif isinstance(exc, StageFailed):
            retriable = False
        text = plane.redactor.redact(f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, AdapterError | EdgeFailed | StageFailed):
            log.error("%s:%s failed", role, name, exc_info=True)
        with contextlib.suppress(Exception):
            conn.send(("error", type(exc).__name__, text, retriable))
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    os._exit(code)


def _attach(plane: DataPlane, role: Role, name: str) -> dict[str, lanes.Lane]:
    """This child's own handles on the lanes it uses (inherited ones carry no endpoints)."""
    topo = plane.topo
    if role == "stages":
        wanted = {x for d in topo.groups[name] for x in (*d.inputs, *topo.outputs_of(d))}
    elif role == "edge-in":
        node = topo.graph.node(name)
        hops, _ = topo.tree(node)
        wanted = {node.outputs[0]} | {lane for _, lane in hops}
    else:
        wanted = set(topo.graph.node(name).inputs)
    return {x: lanes.attach(plane._lane_segment(x)) for x in sorted(wanted)}


def _stage_worker(
    plane: DataPlane, process: str, handles: Mapping[str, lanes.Lane], parent: int
) -> None:
    nodes = plane._stage_nodes(plane.topo.groups[process], handles)

    def idle(timeout: float) -> None:
        if timeout:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(timeout)
        else:
            os.sched_yield()

    drive(nodes, StopToken(), plane.config.batch, IdleBackoff(), idle)
