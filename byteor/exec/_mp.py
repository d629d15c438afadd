"""LaneGraph MP: stage groups in their own processes, joined by shared-memory lanes.

Theory of operation
-------------------
The spec places every stage in a ``process`` (default ``main``). Sources, sinks and the
``main`` stages run in the calling process, the *supervisor*; every other process name is a
*worker*, a forked child that runs its stages. Every lane is a shared-memory segment
``/dev/shm/byteor-<run_id>.<lane>`` created before any worker starts; fanout and journal
consumers are registered at creation, so none misses a record whoever starts first.

Each process runs the very node code of :class:`~byteor.exec.LaneGraphSP` (sources, stages
with their merges and error policies, sinks) over its own ends of the lanes, in rounds; a
round that moves nothing backs off (yield, then short sleeps). Since each stage reads its
inputs in the spec's merge order (round robin waits for the input whose turn it is), the
records out do not depend on timing: SP and MP give the same bytes (except ``merge = ready``).

Supervision: the supervisor watches every worker's exit (its process sentinel) and its report
pipe while it runs its own nodes. A worker ends by sending its counters, or its failure (a
:class:`StageFailed` is raised again in the supervisor); a worker that exits without a report
(killed, crashed) fails the run at once with :class:`WorkerDied` naming its process and stages.
Either way, on the way out the supervisor kills the workers still running, waits for them,
and unlinks every segment of the run. Workers die with the supervisor (``PR_SET_PDEATHSIG``,
and a parent check when idle), so a killed supervisor leaves no orphan process; its segments
are then stale, and ``byteor doctor --remove`` cleans them.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, BinaryIO, TextIO

from byteor import lanes
from byteor.exec._errors import ExecError, StageFailed, WorkerDied
from byteor.exec._graph import Graph, NodeDef
from byteor.exec._local import RecordSink, RecordSource
from byteor.exec._report import NodeReport, RunReport, StopToken
from byteor.exec._sp import (
    DEFAULT_BATCH,
    LaneGraphSP,
    _Input,
    _Node,
    _Outbox,
    _SinkNode,
    _SourceNode,
    _StageNode,
)
from byteor.kernel import Stage
from byteor.spec import PipelineSpecV1

__all__ = ["LaneGraphMP", "run_mp", "processes_of"]

_run_ids = itertools.count()
_PR_SET_PDEATHSIG = 1
_SPINS = 64  # idle rounds that only yield the CPU before sleeping
_MAX_SLEEP = 0.002  # the longest idle sleep (seconds): bounds the wake-up latency


def processes_of(graph: Graph) -> list[str]:
    """The process names a graph places nodes in, ``main`` first, then by name."""
    names = {n.process for n in graph.nodes}
    return ["main", *sorted(names - {"main"})]


class _Backoff:
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


def _drive(
    nodes: Sequence[_Node],
    stop: StopToken,
    batch: int,
    backoff: _Backoff,
    idle: Callable[[float], None],
) -> None:
    """Run rounds over ``nodes`` until all are done; after a round that moved nothing, ``idle``
    with the backoff's next timeout (a round that moves something starts the backoff over)."""
    while True:
        progress = False
        for n in nodes:
            if not n.done and n.run(batch, stop):
                progress = True
        if all(n.done for n in nodes):
            return
        if progress:
            backoff.reset()
        else:
            idle(backoff.next_timeout())


def _fold(n: _Node) -> NodeReport:
    if isinstance(n, _StageNode):
        LaneGraphSP._fold(n)
    return n.report


@dataclass
class _Worker:
    process: str
    stages: tuple[str, ...]
    proc: Any  # multiprocessing.Process (fork context)
    conn: Connection
    message: tuple[Any, ...] | None = None
    reports: list[NodeReport] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.message is not None and self.proc.exitcode is not None


class LaneGraphMP(LaneGraphSP):
    """Runs a spec over shared-memory lanes, one process per stage group (``process``).

    Args:
        spec, sources, sinks, batch, stdin, stdout: as for :class:`LaneGraphSP` (sources and
            sinks run in the calling process).
        run_id: names the run's segments ``byteor-<run_id>.<lane>`` (what ``byteor snapshot``
            reads); default ``mp<pid>-<n>-<pipeline>``, unique per run.
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
    ) -> None:
        super().__init__(
            spec, sources=sources, sinks=sinks, batch=batch, stdin=stdin, stdout=stdout
        )
        self._fixed_id = run_id
        self.run_id = run_id or ""
        self.workers: dict[str, int] = {}  # process name -> pid, while a run is going

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
    ) -> list[_Node]:
        """The SP nodes for ``defs``, over this process's ends of the lanes."""
        graph = self.graph
        nodes: list[_Node] = []
        for node in defs:
            report = NodeReport(node.kind, node.name, node.op)
            inp = (
                _Input(
                    [self._receiver(made[i], graph.lanes[i], node.name) for i in node.inputs],
                    node.merge,
                    node.inputs,
                )
                if node.inputs
                else None
            )
            outs = [_Outbox(o, made[o].sender()) for o in node.outputs]
            if node.kind == "source":
                nodes.append(_SourceNode(report, self._source(node), outs[0]))
            elif node.kind == "stage":
                assert inp is not None
                lane = node.policy.lane
                err = _Outbox(lane, made[lane].sender()) if lane is not None else None
                nodes.append(
                    _StageNode(report, stages[node.name], inp, outs, err, node.policy.action)
                )
            else:
                assert inp is not None
                nodes.append(_SinkNode(report, self._sink(node), inp))
        return nodes

    # -- running ----------------------------------------------------------------------------

    def run(self, stop: StopToken | None = None) -> RunReport:
        """Run to the end of every source (or a stop request) and report.

        Raises:
            WorkerDied: a worker process exited before the pipeline finished (names it).
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
        nodes: list[_Node] = []
        try:
            ctx = multiprocessing.get_context("fork")
            for process, defs in by_process.items():
                if process == "main":
                    continue
                rx, tx = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=_worker_main,
                    args=(self, tuple(defs), made, stages, tx, os.getpid()),
                    name=f"byteor-{process}",
                    daemon=True,
                )
                proc.start()
                tx.close()
                workers.append(_Worker(process, tuple(d.name for d in defs), proc, rx))
                self.workers[process] = proc.pid or 0
            nodes = self._nodes(by_process["main"], made, stages)
            backoff = _Backoff()
            _drive(nodes, stop, self._batch, backoff, lambda t: self._watch(workers, t))
            backoff.reset()
            while not all(w.finished for w in workers):
                self._watch(workers, max(backoff.next_timeout(), 0.001))
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
            self._release(made)
        return self._merge_reports(nodes, workers, stop)

    def _watch(self, workers: Sequence[_Worker], timeout: float) -> None:
        """Wait up to ``timeout`` for a worker to report or exit; fail the run if one died."""
        waiting: list[Any] = [w.conn for w in workers if w.message is None]
        waiting += [w.proc.sentinel for w in workers if w.proc.exitcode is None]
        if not waiting:
            return
        ready = multiprocessing.connection.wait(waiting, timeout)
        if not ready:
            return
        for w in workers:
            if w.message is None and (w.conn in ready or w.proc.sentinel in ready):
                try:
                    if w.conn.poll():
                        w.message = w.conn.recv()
                except (EOFError, OSError):
                    pass
            if w.message is not None:
                self._check_message(w)
            if w.proc.sentinel in ready or w.proc.exitcode is not None:
                w.proc.join(0)
                if w.proc.exitcode is not None and w.message is None:
                    # It may have reported just before exiting: one last look.
                    try:
                        if w.conn.poll():
                            w.message = w.conn.recv()
                    except (EOFError, OSError):
                        pass
                    if w.message is not None:
                        self._check_message(w)
                        continue
                    raise _died(w)

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
        self, nodes: Sequence[_Node], workers: Sequence[_Worker], stop: StopToken
    ) -> RunReport:
        by_name = {n.name: _fold(n) for n in nodes}
        for w in workers:
            by_name |= {r.name: r for r in w.reports}
        graph = self.graph
        ordered = [by_name.get(n.name) or NodeReport(n.kind, n.name, n.op) for n in graph.nodes]
        return RunReport(
            graph.pipeline, graph.target, self.executor, ordered, stopped=stop.requested
        )


def _died(w: _Worker) -> WorkerDied:
    code = w.proc.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
    which = ("stage " if len(w.stages) == 1 else "stages ") + ", ".join(map(repr, w.stages))
    exc = WorkerDied(
        f"{which} died: process {w.process!r} (pid {w.proc.pid}) {how} before "
        "the pipeline finished; the run is stopped and its lanes removed"
    )
    exc.process = w.process
    exc.stages = w.stages
    exc.exitcode = code
    return exc


def _stop_workers(workers: Sequence[_Worker]) -> None:
    for w in workers:
        if w.proc.exitcode is None:
            w.proc.kill()
    for w in workers:
        w.proc.join()
        w.conn.close()


def _set_pdeathsig() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the idle parent check still holds
        pass


def _worker_main(
    ex: LaneGraphMP,
    defs: tuple[NodeDef, ...],
    made: Mapping[str, lanes.Lane],
    stages: Mapping[str, Stage],
    conn: Connection,
    parent: int,
) -> None:
    """A worker: run ``defs`` until done, then send ``("ok", reports)`` or the failure."""
    _set_pdeathsig()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor drains on SIGINT
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if os.getppid() != parent:
        os._exit(1)
    # The inherited handles carry no endpoints; attach our own so each end is ours.
    mine: dict[str, lanes.Lane] = {}
    nodes: list[_Node] = []
    try:
        wanted = {lane for d in defs for lane in (*d.inputs, *d.outputs)}
        wanted |= {d.policy.lane for d in defs if d.policy.lane is not None}
        for name in sorted(wanted):
            mine[name] = lanes.attach(made[name].name)
        nodes = ex._nodes(defs, mine, stages)

        def idle(timeout: float) -> None:
            if timeout:
                if os.getppid() != parent:
                    os._exit(1)
                time.sleep(timeout)
            else:
                os.sched_yield()

        _drive(nodes, StopToken(), ex._batch, _Backoff(), idle)
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
