"""LaneGraph MP: stage groups in their own processes, joined by shared-memory lanes.

Theory of operation
-------------------
The spec places every stage in a ``process`` (default ``main``). Sources, sinks and the
``main`` stages run in the calling process, the *supervisor*; every other process name is a
*worker*, a forked child that runs its stages. Every lane is a shared-memory segment
``/dev/shm/byteor-<run_id>.<lane>`` created before any worker starts; fanout and journal
consumers are registered at creation, so none misses a record whoever starts first. Next to
them, ``byteor-<run_id>.-counters`` holds one counters row per node, written by the process
running the node (what ``byteor snapshot`` shows).

Each process runs the very node code of :class:`~byteor.exec.LaneGraphSP` (sources, stages
with their merges and error policies, sinks) over its own ends of the lanes, in rounds; a
round that moves nothing backs off (yield, then short sleeps). Since each stage reads its
inputs in the spec's merge order (round robin waits for the input whose turn it is), the
records out do not depend on timing: SP and MP give the same bytes (except ``merge = ready``).

Supervision: the supervisor watches every worker's exit (its process sentinel) and its report
pipe while it runs its own nodes. A worker ends by sending its counters, or its failure (a
:class:`StageFailed` is raised again in the supervisor). A worker that exits without a report
(killed, crashed) fails the run at once with :class:`WorkerDied` naming its process and
stages, unless its stages say ``on_crash = restart``: then, after the backoff, a new worker is
forked for the same stages, at most ``max_restarts`` times. Either way, on the way out the
supervisor kills the workers still running, waits for them, and unlinks every segment of the
run. Workers die with the supervisor (``PR_SET_PDEATHSIG``, and a parent check when idle), so
a killed supervisor leaves no orphan process; its segments are then stale, and
``byteor doctor --remove`` cleans them.

Restart, and why nothing is lost. Nodes read their inputs with explicit release and give back
only what they have finished, everything they made of it published (their *commit*, see
``_sp``). So the consumer cursors in the lane segments say exactly where each stage resumes: a
new worker re-attaches and reads on from there. What the dead one had taken but not given
back is read and processed again (at-least-once), and outputs it had already published for
those records appear twice downstream. The new worker counts both by comparing the lanes with
the stage's counters row: taken again = the row's ``inflight``; published twice = what its
output lanes hold beyond the row's committed ``records_out`` and ``routed``. The inputs are
given back just before the row is committed; if the process died between the two, the lanes
are ahead of the row, nothing is done twice, and the row is rolled forward instead.

Stalls. While it waits, the supervisor also reads the counters rows (about once a second): a
stage or sink that has taken no record for ``stall_timeout`` seconds while it is inside its op,
or while one of its input lanes holds records for it, stops the run with
:class:`StageStalled` naming it (user code stuck, or a round-robin merge starved of its turn
input). A node waiting for room in an output is not stalled: the one downstream of it is. The
supervisor's clock is injectable, so the tests need no sleeps.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, BinaryIO, TextIO, cast

from byteor import lanes
from byteor.exec._errors import ExecError, StageFailed, StageStalled, WorkerDied
from byteor.exec._graph import Graph, NodeDef
from byteor.exec._local import RecordSink, RecordSource
from byteor.exec._report import NodeReport, RunReport, StopToken
from byteor.exec._sp import (
    COUNTERS_SUFFIX,
    DEFAULT_BATCH,
    TIMED,
    Input,
    LaneGraphSP,
    Node,
    Outbox,
    StageNode,
    _SinkNode,
    _SourceNode,
    run_round,
)
from byteor.kernel import Stage
from byteor.spec import PipelineSpecV1

__all__ = ["LaneGraphMP", "run_mp", "processes_of", "DEFAULT_STALL_TIMEOUT"]

_log = logging.getLogger("byteor.exec.mp")
_run_ids = itertools.count()
_PR_SET_PDEATHSIG = 1
_SPINS = 64  # idle rounds that only yield the CPU before sleeping
_MAX_SLEEP = 0.002  # the longest idle sleep (seconds): bounds the wake-up latency
_BUSY_WATCH = 256  # rounds that move records between two looks at the workers
_MAX_BACKOFF_S = 60.0  # the longest wait before a restart
#: Seconds a stage may take no record while records wait for it (or stay inside its op).
DEFAULT_STALL_TIMEOUT = 60.0


def processes_of(graph: Graph) -> list[str]:
    """The process names a graph places nodes in, ``main`` first, then by name."""
    names = {n.process for n in graph.nodes}
    return ["main", *sorted(names - {"main"})]


class IdleBackoff:
    """Idle rounds: yield a few times, then sleep a little longer each time, up to a bound."""

    def __init__(self) -> None:
        self.n = 0

    def reset(self) -> None:
        self.n = 0

    def next_timeout(self) -> float:
        self.n += 1
        if self.n <= _SPINS:
            return 0.0
        return min(0.0001 * (self.n - _SPINS), _MAX_SLEEP)


def drive(
    nodes: Sequence[Node],
    stop: StopToken,
    batch: int,
    backoff: IdleBackoff,
    idle: Callable[[float], None],
) -> None:
    """Run rounds over ``nodes`` until all are done; after a round that moved nothing, ``idle``
    with the backoff's next timeout (a round that moves something starts the backoff over).
    Every ``_BUSY_WATCH`` rounds that moved something it calls ``idle(0.0)`` too, so a
    process that is never idle still looks around (the supervisor at its workers)."""
    busy = 0
    rounds = 0
    while True:
        progress = run_round(nodes, batch, stop, TIMED[rounds & 4095])
        rounds += 1
        if all(n.done for n in nodes):
            return
        if progress:
            backoff.reset()
            busy += 1
            if busy >= _BUSY_WATCH:
                busy = 0
                idle(0.0)
        else:
            idle(backoff.next_timeout())


def _fold(n: Node) -> NodeReport:
    if isinstance(n, StageNode):
        LaneGraphSP._fold(n)
    n.report.busy_ns = n.busy
    return n.report


@dataclass(frozen=True, slots=True)
class _CrashPolicy:
    """What the supervisor does when a worker dies (the spec's ``on_crash`` keys)."""

    restart: bool = False
    max_restarts: int = 0
    backoff_s: float = 0.0

    def wait(self, restarts: int) -> float:
        """The wait before restart number ``restarts + 1``: doubled each time, bounded."""
        return float(min(self.backoff_s * (2**restarts), _MAX_BACKOFF_S))


@dataclass
class _Worker:
    process: str
    stages: tuple[str, ...]
    proc: Any  # multiprocessing.Process (fork context); None while a restart is due
    conn: Connection | None
    defs: tuple[NodeDef, ...] = ()
    policy: _CrashPolicy = field(default_factory=_CrashPolicy)
    restarts: int = 0
    restart_at: float | None = None  # by the supervisor's clock
    message: tuple[Any, ...] | None = None
    reports: list[NodeReport] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.proc is not None and self.message is not None and self.proc.exitcode is not None


class LaneGraphMP(LaneGraphSP):
    """Runs a spec over shared-memory lanes, one process per stage group (``process``).

    Args:
        spec, sources, sinks, batch, stdin, stdout: as for :class:`LaneGraphSP` (sources and
            sinks run in the calling process).
        run_id: names the run's segments ``byteor-<run_id>.<lane>`` and its counters
            ``byteor-<run_id>.-counters`` (what ``byteor snapshot`` reads); default
            ``mp<pid>-<n>-<pipeline>``, unique per run.
        stall_timeout: seconds a stage may take no record while records wait for it (or
            stay inside its op) before the run stops with :class:`StageStalled`; ``None``:
            never.
        clock: the supervisor's clock, in seconds (stall timeouts, restart backoff); tests
            inject one.
    """

    executor = "lane_graph_mp"

    def __init__(
        self,
        spec: PipelineSpecV1,
        *,
        sources: Mapping[str, RecordSource | Iterable[bytes | str]] | None = None,
        sinks: Mapping[str, RecordSink] | None = None,
        batch: int = DEFAULT_BATCH,
        stdin: BinaryIO | TextIO | None = None,
        stdout: BinaryIO | TextIO | None = None,
        run_id: str | None = None,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            spec, sources=sources, sinks=sinks, batch=batch, stdin=stdin, stdout=stdout
        )
        if stall_timeout is not None and stall_timeout <= 0:
            raise ValueError("stall_timeout must be > 0 seconds (or None: never)")
        self._fixed_id = run_id
        self.run_id = run_id or ""
        self.workers: dict[str, int] = {}  # process name -> pid, while a run is going
        self._stall_timeout = stall_timeout
        self._clock = clock
        self._stalls: _StallWatch | None = None

    # -- building ---------------------------------------------------------------------------

    def _lanes(self, run_id: str) -> dict[str, lanes.Lane]:
        made: dict[str, lanes.Lane] = {}
        try:
            for name, lane in self.graph.lanes.items():
                durable = lane.kind in ("fanout", "journal") and not lane.overwrite
                made[name] = lanes.create(
                    f"{run_id}.{name}",
                    lane.kind,  # type: ignore[arg-type]
                    lane.capacity,
                    lane.slot_bytes,
                    max_consumers=None if lane.kind == "events" else max(16, len(lane.consumers)),
                    consumers=lane.consumers if durable else (),
                    backing="shm",
                )
        except BaseException:
            self._release(made)
            raise
        return made

    @staticmethod
    def _release(made: Mapping[str, lanes.Lane]) -> None:
        for handle in made.values():
            try:
                handle.close()
            finally:
                lanes.unlink(handle.name, backing="shm")

    def _nodes(
        self, defs: Sequence[NodeDef], made: Mapping[str, lanes.Lane], stages: Mapping[str, Stage]
    ) -> list[Node]:
        """The SP nodes for ``defs``, over this process's ends of the lanes."""
        graph = self.graph
        nodes: list[Node] = []
        for node in defs:
            report = NodeReport(node.kind, node.name, node.op, process=node.process)
            inp = (
                Input(
                    [self._receiver(made[i], graph.lanes[i], node.name) for i in node.inputs],
                    node.merge,
                    node.inputs,
                    min(graph.lanes[i].capacity for i in node.inputs),
                )
                if node.inputs
                else None
            )
            outs = [Outbox(o, made[o].sender()) for o in node.outputs]
            row = self._row(node.name)
            if node.kind == "source":
                nodes.append(_SourceNode(report, self._source(node), outs[0], row))
            elif node.kind == "stage":
                assert inp is not None
                lane = node.policy.lane
                err = Outbox(lane, made[lane].sender()) if lane is not None else None
                nodes.append(
                    StageNode(report, stages[node.name], inp, outs, err, node.policy.action, row)
                )
            else:
                assert inp is not None
                nodes.append(_SinkNode(report, self._sink(node), inp, row))
        return nodes

    def _policy(self, stages: Sequence[str]) -> _CrashPolicy:
        """The crash policy of a worker: its stages share one (the spec rule SP320)."""
        for name in stages:
            st = self.spec.stages.get(name)
            if st is not None and st.on_crash == "restart":
                return _CrashPolicy(True, st.max_restarts, st.restart_backoff_ms / 1000)
        return _CrashPolicy()

    # -- running ----------------------------------------------------------------------------

    def run(self, stop: StopToken | None = None) -> RunReport:
        """Run to the end of every source (or a stop request) and report.

        Raises:
            WorkerDied: a worker process exited before the pipeline finished and may not be
                restarted (names it).
            StageStalled: a stage took no record for ``stall_timeout`` seconds while records
                waited for it.
            StageFailed: a stage's policy is ``fail`` and a record failed (in any process).
            ExecError: an op, adapter or lane problem.
        """
        stop = stop or StopToken()
        stages = self._stages()  # resolved before forking: a bad op fails here, once
        graph = self.graph
        run_id = self._fixed_id or f"mp{os.getpid()}-{next(_run_ids)}-{graph.pipeline}"
        self.run_id = run_id
        by_process: dict[str, list[NodeDef]] = {p: [] for p in processes_of(graph)}
        for node in graph.nodes:
            by_process[node.process].append(node)
        made = self._lanes(run_id)
        workers: list[_Worker] = []
        nodes: list[Node] = []
        try:
            self._counters = self._create_counters(run_id)
            if self._stall_timeout is not None:
                self._stalls = _StallWatch(
                    self._counters, graph, made, self._stall_timeout, self._clock
                )
            for process, defs in by_process.items():
                if process == "main":
                    continue
                names = tuple(d.name for d in defs)
                w = _Worker(process, names, None, None, tuple(defs), self._policy(names))
                self._start(w, made, stages, restart=False)
                workers.append(w)
            nodes = self._nodes(by_process["main"], made, stages)
            backoff = IdleBackoff()

            def watch(timeout: float) -> None:
                self._watch(workers, timeout, made, stages)

            drive(nodes, stop, self._batch, backoff, watch)
            backoff.reset()
            while not all(w.finished for w in workers):
                watch(max(backoff.next_timeout(), 0.001))
            report = self._merge_reports(nodes, workers, stop)  # while the rows are there
        except BaseException as exc:
            for n in nodes:
                if not n.done:
                    n.abort()
            if isinstance(exc, ExecError):
                exc.report = self._merge_reports(nodes, workers, stop)
            raise
        finally:
            _stop_workers(workers)
            self.workers.clear()
            self._stalls = None
            try:
                self._release(made)
            finally:
                self._close_counters()
        return report

    def _create_counters(self, run_id: str | None) -> lanes.Counters:
        rows = [lanes.CounterRow(n.name, n.kind, n.process) for n in self.graph.nodes]
        return lanes.create_counters(f"{run_id}{COUNTERS_SUFFIX}", rows, replace=True)

    def _start(
        self,
        w: _Worker,
        made: Mapping[str, lanes.Lane],
        stages: Mapping[str, Stage],
        *,
        restart: bool,
    ) -> None:
        """Fork the worker of ``w`` (again, when ``restart``)."""
        ctx = multiprocessing.get_context("fork")
        rx, tx = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker_main,
            args=(self, w.defs, made, stages, tx, os.getpid(), restart),
            name=f"byteor-{w.process}",
            daemon=True,
        )
        proc.start()
        tx.close()
        w.proc, w.conn, w.message, w.restart_at = proc, rx, None, None
        self.workers[w.process] = proc.pid or 0

    def _watch(
        self,
        workers: Sequence[_Worker],
        timeout: float,
        made: Mapping[str, lanes.Lane] | None = None,
        stages: Mapping[str, Stage] | None = None,
    ) -> None:
        """Wait up to ``timeout`` for a worker to report or exit; restart a dead one when its
        policy says so (and its backoff is over), else fail the run; look for stalls."""
        now = self._clock()
        for w in workers:
            if w.restart_at is not None and now >= w.restart_at:
                assert made is not None and stages is not None
                self._start(w, made, stages, restart=True)
        if self._stalls is not None:
            self._stalls.check(workers)
        waiting: list[Any] = [w.conn for w in workers if w.conn is not None and w.message is None]
        waiting += [w.proc.sentinel for w in workers if w.proc and w.proc.exitcode is None]
        due = [w.restart_at for w in workers if w.restart_at is not None]
        if due:  # wake up for the next restart (bounded: the clock may be a test's)
            timeout = min(timeout, max(0.0, min(due) - now))
        if not waiting:
            return
        ready = multiprocessing.connection.wait(waiting, timeout)
        if not ready:
            return
        for w in workers:
            if w.proc is None or w.conn is None:
                continue
            if w.message is None and (w.conn in ready or w.proc.sentinel in ready):
                w.message = _receive(w.conn)
            if w.message is not None:
                self._check_message(w)
            if w.proc.sentinel in ready or w.proc.exitcode is not None:
                w.proc.join(0)
                if w.proc.exitcode is not None and w.message is None:
                    # It may have reported just before exiting: one last look.
                    w.message = _receive(w.conn)
                    if w.message is not None:
                        self._check_message(w)
                        continue
                    if not (w.policy.restart and w.restarts < w.policy.max_restarts):
                        raise _died(w)
                    self._schedule_restart(w)

    def _schedule_restart(self, w: _Worker) -> None:
        code = w.proc.exitcode
        w.proc.join()
        assert w.conn is not None
        w.conn.close()
        wait = w.policy.wait(w.restarts)
        w.restarts += 1
        w.proc, w.conn = None, None
        w.restart_at = self._clock() + wait
        _log.warning(
            "process %r (stages %s) %s; restart %d of %d in %.3f s",
            w.process,
            ", ".join(w.stages),
            _how(code),
            w.restarts,
            w.policy.max_restarts,
            wait,
        )

    @staticmethod
    def _check_message(w: _Worker) -> None:
        assert w.message is not None
        kind = w.message[0]
        if kind == "ok":
            w.reports = list(w.message[1])
            return
        if kind == "stage_failed":
            _, stage, index, code, text, reports = w.message
            w.reports = list(reports)
            exc = StageFailed.__new__(StageFailed)
            ExecError.__init__(exc, text)
            exc.stage, exc.index, exc.code = stage, index, code
            raise exc
        _, name, text = w.message
        raise ExecError(f"process {w.process!r} (stages {', '.join(w.stages)}): {name}: {text}")

    def _merge_reports(
        self, nodes: Sequence[Node], workers: Sequence[_Worker], stop: StopToken
    ) -> RunReport:
        by_name = {n.name: _fold(n) for n in nodes}
        for w in workers:
            by_name |= {r.name: r for r in w.reports}
        graph = self.graph
        ordered = [
            by_name.get(n.name) or NodeReport(n.kind, n.name, n.op, process=n.process)
            for n in graph.nodes
        ]
        counters = self._counters
        if counters is not None:
            for report in ordered:
                _from_row(report, counters)
        return RunReport(
            graph.pipeline, graph.target, self.executor, ordered, stopped=stop.requested
        )


def _from_row(report: NodeReport, counters: lanes.Counters) -> None:
    """What a report takes from the node's counters row: the restart accounting and the
    time busy (over every process that ran it), and everything when no process reported."""
    index = counters.find(report.name)
    if index is None:
        return
    row = counters.read(index)
    if not row.pid:
        return  # nobody ran it (an executor without rows)
    report.restarts, report.redelivered = row.restarts, row.redelivered
    report.duplicates = row.duplicates
    report.busy_ns = max(report.busy_ns, row.busy_ns)
    if report.records_in < row.records_in:  # its process died without a report
        report.records_in, report.records_out = row.records_in, row.records_out
        report.errors, report.skipped, report.routed = row.errors, row.skipped, row.routed


def _receive(conn: Connection) -> tuple[Any, ...] | None:
    try:
        if conn.poll():
            return cast("tuple[Any, ...]", conn.recv())
    except (EOFError, OSError):
        pass
    return None


def _how(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"


def _died(w: _Worker) -> WorkerDied:
    code = w.proc.exitcode
    which = ("stage " if len(w.stages) == 1 else "stages ") + ", ".join(map(repr, w.stages))
    restarted = ""
    if w.policy.restart:
        restarted = f" after {w.restarts} restart(s), the most its on_crash policy allows"
    exc = WorkerDied(
        f"{which} died: process {w.process!r} (pid {w.proc.pid}) {_how(code)} before the "
        f"pipeline finished{restarted}; the run is stopped and its lanes removed"
    )
    exc.process = w.process
    exc.stages = w.stages
    exc.exitcode = code
    exc.restarts = w.restarts
    return exc


def _stop_workers(workers: Sequence[_Worker]) -> None:
    for w in workers:
        if w.proc is not None and w.proc.exitcode is None:
            w.proc.kill()
    for w in workers:
        if w.proc is not None:
            w.proc.join()
        if w.conn is not None:
            w.conn.close()


class _StallWatch:
    """Finds a stage (or sink) that took no record for ``timeout`` seconds while inside its
    op, or while an input lane held records for it (see the module docstring)."""

    def __init__(
        self,
        counters: lanes.Counters,
        graph: Graph,
        made: Mapping[str, lanes.Lane],
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.counters = counters
        self.made = made
        self.timeout = timeout
        self.clock = clock
        self.interval = min(1.0, timeout / 4)
        self.nodes = [n for n in graph.nodes if n.kind != "source"]
        self.lanes = graph.lanes
        self.seen: dict[str, tuple[tuple[int, ...], float]] = {}
        self.next_check: float | None = None

    def check(self, workers: Sequence[_Worker]) -> None:
        now = self.clock()
        if self.next_check is not None and now < self.next_check:
            return
        self.next_check = now + self.interval
        resting = {s for w in workers if w.proc is None or w.finished for s in w.stages}
        suspects: list[tuple[bool, NodeDef, lanes.NodeCounters, float]] = []
        for node in self.nodes:
            index = self.counters.find(node.name)
            if index is None or node.name in resting:
                continue
            row = self.counters.read(index)
            if not row.pid or row.phase in ("done", "blocked"):  # not ours, over, or waiting
                self.seen.pop(node.name, None)
                continue
            mark = (row.records_in, row.inflight, row.errors, row.restarts)
            last = self.seen.get(node.name)
            if last is None or last[0] != mark:
                self.seen[node.name] = (mark, now)
                continue
            if now - last[1] >= self.timeout:
                # Holding records it took, unchanged all that time: inside its op.
                in_op = row.phase == "step" or row.inflight > 0
                suspects.append((in_op, node, row, now - last[1]))
        for in_op, node, row, seconds in sorted(suspects, key=lambda s: not s[0]):
            waiting = self._waiting(node)
            if in_op or any(waiting.values()):
                raise _stalled(node, row, seconds, in_op, waiting)

    def _waiting(self, node: NodeDef) -> dict[str, int]:
        """Records each input lane holds for ``node`` (published, not yet given back)."""
        out: dict[str, int] = {}
        for lane in node.inputs:
            reader = "default" if self.lanes[lane].kind == "events" else node.name
            stats = self.made[lane].statistics()
            out[lane] = next((c.lag for c in stats.consumers if c.name == reader), 0)
        return out


def _stalled(
    node: NodeDef, row: lanes.NodeCounters, seconds: float, in_op: bool, waiting: dict[str, int]
) -> StageStalled:
    held = ", ".join(f"{lane} holds {n}" for lane, n in waiting.items() if n) or "nothing waits"
    what = f"{node.kind} {node.name!r} (process {node.process!r})"
    if in_op:
        why = (
            f"has been inside its op for {seconds:.0f} s without returning (user code stuck?); "
            f"its inputs: {held}"
        )
    else:
        empty = [lane for lane, n in waiting.items() if not n]
        turn = (
            f"; a round_robin merge waits for its turn input ({', '.join(empty)}) even while "
            "others fill up: use merge = ready"
            if node.merge == "round_robin" and len(node.inputs) > 1 and empty
            else ""
        )
        why = f"has taken no record for {seconds:.0f} s although {held}{turn}"
    exc = StageStalled(
        f"{what} {why}; the run is stopped and its lanes removed (if it is only slow, raise "
        "the stall timeout: byteor run --stall-timeout SECONDS)"
    )
    exc.stage, exc.process, exc.seconds, exc.in_op = node.name, node.process, seconds, in_op
    return exc


def set_pdeathsig() -> None:
    """Have the kernel kill this (forked) process when its parent dies (Linux; elsewhere a
    no-op, and the worker's idle check of its parent still holds)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the idle parent check still holds
        pass


def _resume(n: StageNode, row: lanes.NodeCounters) -> tuple[int, int]:
    """A restarted stage: continue its counters from its row, and count what it will do
    again (see the module docstring). Returns ``(redelivered, duplicates)``."""
    consumed = n.inp.position()
    published = sum(cast(lanes.Producer, box.tx).position for box in n.outs)
    routed = cast(lanes.Producer, n.error_out.tx).position if n.error_out is not None else 0
    c = n.counters
    if consumed > row.records_in:
        # The inputs were given back, the row not yet committed: roll the row forward.
        redelivered, duplicates = max(0, row.records_in + row.inflight - consumed), 0
        c.records_in, c.records_out, c.routed = consumed, published, routed
        c.skipped = row.skipped + row.pending_skipped
        c.errors = row.errors + row.pending_skipped + (routed - row.routed)
    else:
        redelivered = row.inflight
        duplicates = max(0, published - row.records_out) + max(0, routed - row.routed)
        c.records_in, c.records_out = row.records_in, row.records_out
        c.errors, c.skipped, c.routed = row.errors, row.skipped, row.routed
    n.busy = row.busy_ns
    return redelivered, duplicates


def _worker_main(
    ex: LaneGraphMP,
    defs: tuple[NodeDef, ...],
    made: Mapping[str, lanes.Lane],
    stages: Mapping[str, Stage],
    conn: Connection,
    parent: int,
    restart: bool,
) -> None:
    """A worker: run ``defs`` until done, then send ``("ok", reports)`` or the failure.

    It leaves with ``os._exit``: a worker forked again mid-run holds copies of the
    supervisor's buffered outputs (a ``stdout`` sink), which must never be flushed twice.
    """
    set_pdeathsig()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor drains on SIGINT
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if os.getppid() != parent:
        os._exit(1)
    # The inherited handles carry no endpoints; attach our own so each end is ours.
    mine: dict[str, lanes.Lane] = {}
    nodes: list[Node] = []
    try:
        counters = ex._counters
        if restart and counters is not None:
            # Stages that finished before the crash stay finished (their outputs are closed).
            rows = {
                d.name: counters.read(i) for d in defs if (i := counters.find(d.name)) is not None
            }
            defs = tuple(d for d in defs if d.name not in rows or rows[d.name].phase != "done")
        wanted = {lane for d in defs for lane in (*d.inputs, *d.outputs)}
        wanted |= {d.policy.lane for d in defs if d.policy.lane is not None}
        for name in sorted(wanted):
            mine[name] = lanes.attach(made[name].name)
        nodes = ex._nodes(defs, mine, stages)
        if restart and counters is not None:
            for n in nodes:
                index = counters.find(n.name)
                if isinstance(n, StageNode) and index is not None:
                    redelivered, duplicates = _resume(n, rows[n.name])
                    writer = cast(lanes.RowWriter, n.row)
                    writer.add_restart(redelivered, duplicates)
                    c = n.counters
                    writer.commit(
                        c.records_in, c.records_out, c.errors, c.skipped, c.routed, n.busy,
                        time.monotonic_ns(),
                    )  # fmt: skip
                    writer.pending_skipped(0)

        def idle(timeout: float) -> None:
            if timeout:
                if os.getppid() != parent:
                    os._exit(1)
                time.sleep(timeout)
            else:
                os.sched_yield()

        drive(nodes, StopToken(), ex._batch, IdleBackoff(), idle)
        conn.send(("ok", [_fold(n) for n in nodes]))
    except StageFailed as exc:
        conn.send(
            ("stage_failed", exc.stage, exc.index, exc.code, str(exc), [_fold(n) for n in nodes])
        )
    except BaseException as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
    finally:
        for handle in mine.values():
            handle.close()
        conn.close()
    os._exit(0)


def run_mp(
    spec: PipelineSpecV1,
    *,
    sources: Mapping[str, RecordSource | Iterable[bytes | str]] | None = None,
    sinks: Mapping[str, RecordSink] | None = None,
    batch: int = DEFAULT_BATCH,
    stop: StopToken | None = None,
) -> RunReport:
    """Run ``spec`` with :class:`LaneGraphMP` and return its report."""
    return LaneGraphMP(spec, sources=sources, sinks=sinks, batch=batch).run(stop)
