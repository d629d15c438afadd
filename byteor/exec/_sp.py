"""LaneGraph SP: every node of a spec in one process, over in-memory lanes.

Theory of operation
-------------------
The run is a loop of *rounds*. A round visits every node once, in flow order (sources, then
stages and sinks with producers before consumers, ties by name), and each visit moves at most
one batch without ever waiting:

* a source polls its adapter and publishes what fits in its lane;
* a stage publishes what it still holds for its outputs, then takes up to a batch from its
  input (several inputs: through a :class:`byteor.lanes.Merge` in the spec's order), steps
  the op and publishes the results, applying the stage's error policy to failures; when every
  input is closed and drained it calls ``finish`` and closes its outputs;
* a sink takes up to a batch and writes it, hashing the bytes.

Nothing here reads a clock or a random number or iterates a set, so a spec and its input give
the same records out, in the same order, on every run. Each stage is a sequential process
over its inputs in a fixed order, so the output is also what any other correct schedule gives
(multi-process included), except with ``merge = ready``, which takes what is there first.

A round that moves nothing means every node waits on another: if a source is waiting on
input (stdin), the loop sleeps until it is readable or a stop is requested; otherwise the
pipeline is stalled (a round-robin merge whose turn input never gets a record while the others
fill up) and :class:`PipelineStalled` says who waits on what.

A stop request makes sources stop reading and close their lanes; everything already admitted
drains to the sinks, and the run ends normally with ``stopped = True``.

Inputs are read with explicit release: a node gives its input lanes back what it took only
once everything it made of it is published (its *commit*), and at the same moment publishes
its counters to its row of the run's counters segment (records in and out, errors, time in
its work), so a row always adds up and a process that dies resumes from its last commit
(see ``_mp``). The clock is read here, around each node's work, never in the kernel.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import select
from collections.abc import Iterable, Mapping, Sequence
from time import monotonic_ns
from typing import BinaryIO, Protocol, TextIO

from byteor import lanes
from byteor.exec._errors import ExecError, PipelineStalled, StageFailed
from byteor.exec._graph import Graph, LaneDef, NodeDef, build_graph
from byteor.exec._local import IterableSource, RecordSink, RecordSource, open_sink, open_source
from byteor.exec._report import NodeReport, RunReport, StopToken
from byteor.exec._resolve import resolve_op
from byteor.exec._stage import StageContext
from byteor.kernel import LaneRx, LaneTx, RecordFailure, Stage, StageCounters
from byteor.lanes import layout as _layout
from byteor.spec import PipelineSpecV1

__all__ = ["LaneGraphSP", "run_sp", "DEFAULT_BATCH", "COUNTERS_SUFFIX"]

DEFAULT_BATCH = 64
_run_ids = itertools.count()

#: A run's counters segment is ``byteor-<run_id>.-counters`` (no lane name starts with "-").
COUNTERS_SUFFIX = ".-counters"
#: A node commits (gives its inputs back, publishes its counters) once it has taken this many
#: records since its last commit (a quarter of its smallest input lane, if that is fewer), and
#: whenever it finds nothing more to take: so at most ``COMMIT_RECORDS + batch - 1`` records
#: of a node are uncommitted at any time. Fewer commits cost less; more keep snapshots fresher
#: and the window of records a restart processes again smaller.
COMMIT_RECORDS = 256
#: One round in this many is timed for the nodes' busy share (see :func:`run_round`).
TIMED_ROUNDS = 8

_IDLE = _layout.PHASE_IDLE
_STEP = _layout.PHASE_STEP
_BLOCKED = _layout.PHASE_BLOCKED
_DONE = _layout.PHASE_DONE


class NodeRow(Protocol):
    """Where a node publishes its counters (a :class:`byteor.lanes.RowWriter`)."""

    live_q: memoryview  # the hot loop stores the live words itself (see RowWriter.begin)
    live_at: int
    step_word: int

    def commit(
        self,
        records_in: int,
        records_out: int,
        errors: int,
        skipped: int,
        routed: int,
        busy_ns: int,
        now_ns: int,
    ) -> None: ...

    def begin(self, inflight: int) -> None: ...

    def live(self, inflight: int, phase: int) -> None: ...

    def phase(self, phase: int) -> None: ...

    def pending_skipped(self, n: int) -> None: ...


class _NoRow:
    """For nodes without a row (executors that build their own nodes): publishes nothing."""

    def __init__(self) -> None:
        self.live_q = memoryview(bytearray(16)).cast("Q")  # scratch: stores land nowhere
        self.live_at = 0
        self.step_word = 0

    def commit(
        self,
        records_in: int,
        records_out: int,
        errors: int,
        skipped: int,
        routed: int,
        busy_ns: int,
        now_ns: int,
    ) -> None:
        pass

    def begin(self, inflight: int) -> None:
        pass

    def live(self, inflight: int, phase: int) -> None:
        pass

    def phase(self, phase: int) -> None:
        pass

    def pending_skipped(self, n: int) -> None:
        pass


_NO_ROW = _NoRow()


class Input:
    """One or several input lanes read as one stream, in the node's merge order."""

    def __init__(
        self,
        receivers: Sequence[lanes.Consumer],
        order: str,
        names: Sequence[str],
        capacity: int = 4 * COMMIT_RECORDS,
    ):
        self.names = tuple(names)
        self.receivers = tuple(receivers)
        # Taken and not given back holds room upstream: commit well before a lane could fill.
        self.commit_every = max(1, min(COMMIT_RECORDS, capacity // 4))
        self._one: LaneRx | None = receivers[0] if len(receivers) == 1 else None
        self._merge = (
            lanes.Merge(receivers, "ready" if order == "ready" else "round_robin")
            if len(receivers) > 1
            else None
        )
        self.closed = False
        self.waiting_on = ""

    def take(self, max_count: int) -> list[bytes]:
        """Up to ``max_count`` records, copied (views are only valid until the next read)."""
        out: list[bytes] = []
        one, merge = self._one, self._merge
        try:
            while len(out) < max_count:
                if one is not None:
                    want = max_count - len(out)
                    if want == 1:
                        out.append(bytes(one.receive_nowait()))
                    else:  # one bulk read, not a receive and a copy per record
                        out += one.receive_batch_nowait(want, copy=True)  # type: ignore[arg-type]
                else:
                    assert merge is not None
                    out.append(bytes(merge.receive_nowait()[1]))
        except lanes.WouldBlock:
            live = merge.live if merge is not None else (0,)
            self.waiting_on = ", ".join(self.names[i] for i in live)
        except lanes.LaneClosed:
            self.closed = True
        return out

    def commit(self) -> None:
        """Give the input lanes back everything taken so far (it is all done)."""
        for rx in self.receivers:
            rx.release()

    def position(self) -> int:
        """Records taken and given back, over every input (where a restart resumes)."""
        return sum(rx.position for rx in self.receivers)


class Outbox:
    """Records waiting for room in an output lane (at most one step's worth)."""

    def __init__(self, name: str, tx: LaneTx) -> None:
        self.name = name
        self.tx = tx
        self.pending: list[bytes] = []

    def flush(self) -> int:
        moved = 0
        while self.pending:
            try:
                n = self.tx.send_batch_nowait(self.pending)
            except lanes.WouldBlock:
                break
            except lanes.MessageTooLarge as exc:
                raise ExecError(f"an output of lane {self.name!r} is too large: {exc}") from None
            moved += n
            del self.pending[:n]
        return moved


class Node:
    """One node of a run, visited once a round by :func:`run_round`: ``run`` moves at most a
    batch without waiting and says whether it moved anything, ``blocked`` says what it waits
    on (for a stall message), ``done`` ends its visits."""

    #: Whether :func:`run_round` times this node's visits (nodes that time their own work,
    #: like SingleRing's, leave it off).
    loop_timed = False

    def __init__(self, report: NodeReport, row: NodeRow = _NO_ROW) -> None:
        self.report = report
        self.row = row
        self.busy = 0  # ns in the visits that moved records (counted by run_round)
        self.done = False

    @property
    def name(self) -> str:
        return self.report.name

    def run(self, batch: int, stop: StopToken) -> bool:
        raise NotImplementedError

    def blocked(self) -> str:
        raise NotImplementedError

    def abort(self) -> None:
        """Release what the node holds after a failure elsewhere."""


class _SourceNode(Node):
    loop_timed = True

    def __init__(
        self, report: NodeReport, adapter: RecordSource, out: Outbox, row: NodeRow = _NO_ROW
    ) -> None:
        super().__init__(report, row)
        self.adapter = adapter
        self.out = out
        self.ended = False
        self.idle = False
        self._committed = 0  # records_out at the last commit

    def _commit(self, now: int) -> None:
        r = self.report
        self._committed = r.records_out
        self.row.commit(r.records_in, r.records_out, 0, 0, 0, self.busy, now)
        if self.out.pending:
            self.row.phase(_BLOCKED)

    def run(self, batch: int, stop: StopToken) -> bool:
        report = self.report
        moved = self.out.flush()
        report.records_out += moved
        if self.out.pending or self.done:
            if moved:
                self._commit(monotonic_ns())
            return moved > 0
        if stop.requested or self.ended:
            self.adapter.close()
            self.out.tx.close()
            self._commit(monotonic_ns())
            self.row.phase(_DONE)
            self.done = True
            return True
        got = self.adapter.poll(batch)
        if got is None:
            self.ended = True
            return True
        self.idle = not got
        if not got:
            if report.records_out != self._committed:
                self._commit(monotonic_ns())
            return moved > 0
        report.records_in += len(got)
        self.out.pending.extend(got)
        report.records_out += self.out.flush()
        if self.out.pending or report.records_out - self._committed >= COMMIT_RECORDS:
            self._commit(monotonic_ns())
        return True

    def blocked(self) -> str:
        if self.out.pending:
            return f"source {self.name!r} waits for room in lane {self.out.name!r}"
        return f"source {self.name!r} waits for input"

    def abort(self) -> None:
        self.adapter.close()


class StageNode(Node):
    """A stage: takes up to a batch from its :class:`Input`, steps the op, publishes through
    its outboxes (:class:`Outbox`), applies the error policy (``action``: fail, skip or route to
    ``error_out``) and commits its input and its counters row together."""

    loop_timed = True

    def __init__(
        self,
        report: NodeReport,
        stage: Stage,
        inp: Input,
        outs: list[Outbox],
        error_out: Outbox | None,
        action: str,
        row: NodeRow = _NO_ROW,
    ) -> None:
        super().__init__(report, row)
        self.stage = stage
        self.inp = inp
        self.outs = outs
        self.error_out = error_out
        self.action = action
        self.counters = StageCounters()
        self.finished = False
        self._all = [*outs, *([error_out] if error_out is not None else [])]
        self._uncommitted = 0  # records taken since the last commit
        self._batch_skipped = 0  # of those, skipped (kept live for a restart's accounting)
        self._every = inp.commit_every
        self._live, self._live_at = row.live_q, row.live_at

    def _flush(self) -> tuple[int, bool]:
        moved = 0
        for box in self._all:
            n = box.flush()
            moved += n
            if box is not self.error_out:
                self.counters.records_out += n
        return moved, any(box.pending for box in self._all)

    def _commit(self, now: int) -> None:
        """Everything taken is published: give the inputs back, then publish the counters
        (in that order: a restart compares the two, see ``_mp``)."""
        self.inp.commit()
        c = self.counters
        row = self.row
        row.commit(c.records_in, c.records_out, c.errors, c.skipped, c.routed, self.busy, now)
        self._uncommitted = 0
        if self._batch_skipped:
            self._batch_skipped = 0
            row.pending_skipped(0)

    def run(self, batch: int, stop: StopToken) -> bool:
        moved, held = self._flush()
        if held or self.done:
            return moved > 0
        if moved and self._uncommitted:  # it was blocked; now everything it made is out
            self._commit(monotonic_ns())
        if self.inp.closed:
            if self._uncommitted:
                self._commit(monotonic_ns())
            if not self.finished:
                self.finished = True
                emit = self.stage.finish()
                for box, rest in zip(self.outs, emit.ports, strict=True):
                    box.pending.extend(rest)
                self._flush()
                return True
            for box in self._all:
                box.tx.close()
            self._commit(monotonic_ns())
            self.row.phase(_DONE)
            self.done = True
            return True
        records = self.inp.take(batch)
        if not records:
            if self._uncommitted:  # giving records back is progress: it makes room upstream
                self._commit(monotonic_ns())
                return True
            return moved > 0 or self.inp.closed
        n = len(records)
        c = self.counters
        first = c.records_in
        c.records_in += n
        self._uncommitted += n
        # What a restart counts as taken again, and (unchanging) what a stall looks like.
        self._live[self._live_at] = self._uncommitted
        result = self.stage.step_batch(records)
        if result.failures:
            self._failures(result.failures, records, first)
        for box, port in zip(self.outs, result.ports, strict=True):
            box.pending.extend(port)
        # Records in flight and phase idle: working. The next visit takes more or finds
        # nothing and commits, so a row never shows records in flight for long when idle.
        if self._flush()[1]:
            self.row.phase(_BLOCKED)
        elif self._uncommitted >= self._every:
            self._commit(monotonic_ns())
        return True

    def _failures(
        self, failures: Sequence[RecordFailure], records: list[bytes], first: int
    ) -> None:
        c = self.counters
        skipped = c.skipped
        for failure in failures:
            c.count_error(failure.error, self.action)  # type: ignore[arg-type]
            if self.action == "fail":
                raise StageFailed(
                    self.name, first + failure.index, failure.error.code, failure.error.message
                )
            if self.error_out is not None:
                self.error_out.pending.append(records[failure.index])
        if c.skipped != skipped:
            self._batch_skipped += c.skipped - skipped
            self.row.pending_skipped(self._batch_skipped)

    def blocked(self) -> str:
        full = [box.name for box in self._all if box.pending]
        if full:
            return f"stage {self.name!r} waits for room in lane {', '.join(full)}"
        return f"stage {self.name!r} waits for a record on lane {self.inp.waiting_on}"


class _SinkNode(Node):
    loop_timed = True

    def __init__(
        self, report: NodeReport, adapter: RecordSink, inp: Input, row: NodeRow = _NO_ROW
    ) -> None:
        super().__init__(report, row)
        self.adapter = adapter
        self.inp = inp
        self.hash = hashlib.sha256()
        self._uncommitted = 0
        self._every = inp.commit_every
        self._live, self._live_at = row.live_q, row.live_at

    def run(self, batch: int, stop: StopToken) -> bool:
        if self.done:
            return False
        if self.inp.closed:
            self.adapter.close()
            self.report.sha256 = self.hash.hexdigest()
            self._commit(monotonic_ns())
            self.row.phase(_DONE)
            self.done = True
            return True
        records = self.inp.take(batch)
        if not records:
            if self._uncommitted:  # giving records back is progress: it makes room upstream
                self._commit(monotonic_ns())
                return True
            return self.inp.closed
        n = len(records)
        self._live[self._live_at] = self._uncommitted + n  # records in flight: working
        self.adapter.write(records)
        for r in records:
            self.hash.update(r)
            self.hash.update(b"\n")
        report = self.report
        report.bytes += sum(len(r) for r in records) + n
        report.records_in += n
        report.records_out += n
        self._uncommitted += n
        if self._uncommitted >= self._every:
            self._commit(monotonic_ns())
        return True

    def _commit(self, now: int) -> None:
        self.inp.commit()
        report = self.report
        self.row.commit(report.records_in, report.records_out, 0, 0, 0, self.busy, now)
        self._uncommitted = 0

    def blocked(self) -> str:
        return f"sink {self.name!r} waits for a record on lane {self.inp.waiting_on}"

    def abort(self) -> None:
        self.report.sha256 = self.hash.hexdigest()
        self.adapter.close()


class LaneGraphSP:
    """Runs a spec in this process over in-memory lanes.

    Args:
        spec: a valid spec (``lane_graph``, or ``single_ring`` run as its chain).
        sources: records (an iterable of bytes or str) or a ``RecordSource`` per source
            name, in place of the spec's adapter (``memory`` sources need them).
        sinks: a ``RecordSink`` per sink name in place of the spec's adapter.
        batch: most records a node moves per visit.
        stdin, stdout: the streams of ``stdin`` sources and ``stdout`` sinks.
        run_id: run over shared-memory lanes ``byteor-<run_id>.<lane>``, with the per-node
            counters in ``byteor-<run_id>.-counters``, so ``byteor snapshot <run_id>`` can
            watch the run; default: in-memory lanes and counters, nothing to watch.
    """

    executor = "lane_graph_sp"

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
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.spec = spec
        self.graph: Graph = build_graph(spec)
        self._sources = dict(sources or {})
        self._sinks = dict(sinks or {})
        self._batch = batch
        self._stdin = stdin
        self._stdout = stdout
        self._fixed_id = run_id
        self.run_id = run_id or ""
        self._counters: lanes.Counters | None = None  # the run's rows, while it runs

    # -- building -------------------------------------------------------------------------

    def _stages(self) -> dict[str, Stage]:
        """Resolve every op first, so a missing one fails before anything runs."""
        out: dict[str, Stage] = {}
        for node in self.graph.nodes:
            if node.kind == "stage":
                ctx = StageContext(node.name, node.params, node.outputs, self.graph.target)
                out[node.name] = resolve_op(node.op, ctx)
        return out

    def _source(self, node: NodeDef) -> RecordSource:
        given = self._sources.get(node.name)
        if given is None:
            return open_source(node.name, node.op, node.params, stdin=self._stdin)
        if hasattr(given, "poll"):
            return given  # type: ignore[return-value]
        return IterableSource(given)

    def _sink(self, node: NodeDef) -> RecordSink:
        given = self._sinks.get(node.name)
        if given is not None:
            return given
        return open_sink(node.name, node.op, node.params, stdout=self._stdout)

    def _create_lanes(self, prefix: str, backing: str = "memory") -> dict[str, lanes.Lane]:
        made: dict[str, lanes.Lane] = {}
        try:
            for name, lane in self.graph.lanes.items():
                durable = lane.kind in ("fanout", "journal") and not lane.overwrite
                made[name] = lanes.create(
                    f"{prefix}{name}",
                    lane.kind,  # type: ignore[arg-type]
                    lane.capacity,
                    lane.slot_bytes,
                    max_consumers=None if lane.kind == "events" else max(16, len(lane.consumers)),
                    consumers=lane.consumers if durable and backing == "shm" else (),
                    backing=backing,  # type: ignore[arg-type]
                )
        except BaseException:
            for lane_handle in made.values():
                lane_handle.close()
                lanes.unlink(lane_handle.name, backing=backing)  # type: ignore[arg-type]
            raise
        return made

    def _create_counters(self, run_id: str | None) -> lanes.Counters:
        """One row per node, in graph order; in shared memory when the run is named."""
        rows = [lanes.CounterRow(n.name, n.kind, n.process) for n in self.graph.nodes]
        if run_id is None:
            return lanes.create_counters("sp", rows, backing="memory")
        return lanes.create_counters(f"{run_id}{COUNTERS_SUFFIX}", rows)

    def _row(self, node: str) -> NodeRow:
        """The counters row of ``node`` for this process (claims it), if the run has rows."""
        counters = self._counters
        if counters is None:
            return _NO_ROW
        index = counters.find(node)
        return _NO_ROW if index is None else counters.writer(index)

    @staticmethod
    def _receiver(lane: lanes.Lane, spec: LaneDef, node: str) -> lanes.Consumer:
        """The node's reader of ``lane``: explicit release (a node gives back only what it
        has finished), except on overwrite lanes, where readers hold nobody back."""
        if spec.kind == "events":
            return lane.receiver(explicit=True)
        if spec.kind == "fanout":
            if spec.overwrite:
                return lane.receiver(node, policy="best_effort", start="earliest")
            return lane.receiver(node, policy="critical", start="earliest", explicit=True)
        # journal: named readers are durable (gate the writer); overwrite: tailing readers
        if spec.overwrite:
            return lane.receiver(start="earliest")
        return lane.receiver(node, start="earliest", explicit=True)

    # -- running --------------------------------------------------------------------------

    def run(self, stop: StopToken | None = None) -> RunReport:
        """Run to the end of every source (or a stop request) and report.

        Raises:
            StageFailed: a stage's policy is ``fail`` and a record failed.
            PipelineStalled: no node can move and the run is not finished.
            ExecError: an op, adapter or lane problem found before or while running.
        """
        stop = stop or StopToken()
        stages = self._stages()
        graph = self.graph
        run_id = self._fixed_id
        self.run_id = run_id or ""
        backing = "memory" if run_id is None else "shm"
        prefix = f"sp{os.getpid()}-{next(_run_ids)}-{graph.pipeline}." if run_id is None else ""
        made = self._create_lanes(prefix if run_id is None else f"{run_id}.", backing)
        nodes: list[Node] = []
        try:
            self._counters = self._create_counters(run_id)
            rx = {
                (lane, node): self._receiver(made[lane], graph.lanes[lane], node)
                for lane in graph.lanes
                for node in graph.lanes[lane].consumers
            }
            for node in graph.nodes:
                report = NodeReport(node.kind, node.name, node.op, process=node.process)
                inp = (
                    Input(
                        [rx[(i, node.name)] for i in node.inputs],
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
                        StageNode(
                            report, stages[node.name], inp, outs, err, node.policy.action, row
                        )
                    )
                else:
                    assert inp is not None
                    nodes.append(_SinkNode(report, self._sink(node), inp, row))
            self._loop(nodes, stop)
        except BaseException as exc:
            for n in nodes:
                if not n.done:
                    n.abort()
            if isinstance(exc, ExecError):
                exc.report = self._report(nodes, stop)
            raise
        finally:
            for lane_handle in made.values():
                lane_handle.close()
                lanes.unlink(lane_handle.name, backing=backing)  # type: ignore[arg-type]
            self._close_counters()
        return self._report(nodes, stop)

    def _close_counters(self) -> None:
        counters, self._counters = self._counters, None
        if counters is None:
            return
        counters.finish()
        counters.close()
        if counters.path is not None:
            lanes.unlink_counters(counters.name)

    def _report(self, nodes: list[Node], stop: StopToken) -> RunReport:
        for n in nodes:
            if isinstance(n, StageNode):
                self._fold(n)
            n.report.busy_ns = n.busy
        graph = self.graph
        return RunReport(
            graph.pipeline,
            graph.target,
            self.executor,
            [n.report for n in nodes],
            stopped=stop.requested,
        )

    @staticmethod
    def _fold(n: StageNode) -> None:
        c, r = n.counters, n.report
        r.records_in, r.records_out = c.records_in, c.records_out
        r.errors, r.skipped, r.routed = c.errors, c.skipped, c.routed
        r.error_codes = dict(c.error_codes)
        extra = getattr(n.stage, "counters", None)
        if callable(extra):
            r.extra = dict(extra())

    def _loop(self, nodes: list[Node], stop: StopToken) -> None:
        batch = self._batch
        rounds = 0
        while True:
            progress = run_round(nodes, batch, stop, TIMED[rounds & 4095])
            rounds += 1
            if all(n.done for n in nodes):
                return
            if progress:
                continue
            waiting = [
                n
                for n in nodes
                if isinstance(n, _SourceNode) and not n.done and n.idle and not n.out.pending
            ]
            fds = [fd for n in waiting if (fd := n.adapter.fileno()) is not None]
            if fds and not stop.requested:
                wake = stop.wake_fd
                ready, _, _ = select.select([*fds, *([wake] if wake is not None else [])], [], [])
                if wake is not None and wake in ready:
                    _drain(wake)
                continue
            raise PipelineStalled(
                "the pipeline is stalled, every node waits on another: "
                + "; ".join(n.blocked() for n in nodes if not n.done)
                + ". A round_robin merge waits for its turn input even while others fill up: "
                "use merge = ready, or larger lanes"
            )


def timed_round(n: int) -> bool:
    """Whether round ``n`` is timed: one in ``TIMED_ROUNDS`` (8), scattered by a
    multiplicative hash so that no periodic pattern of busy and idle rounds escapes it."""
    return ((n * 0x9E3779B1) & 0xFFFFFFFF) >> 29 == 0


#: :func:`timed_round` of 0 .. 4095, for the round loops (an index costs less than a call).
TIMED: tuple[bool, ...] = tuple(timed_round(n) for n in range(4096))


def run_round(nodes: Sequence[Node], batch: int, stop: StopToken, timed: bool = True) -> bool:
    """Visit every node once; return whether any moved something.

    In a ``timed`` round, a visit that moves something is time its node was busy (reading,
    its work, publishing): one clock reading per such visit, the previous one starting it (a
    visit that moves nothing takes no reading, so its few microseconds go to the next busy
    node). Callers time the rounds :func:`timed_round` picks, one in ``TIMED_ROUNDS``, which
    count that many times: a sample, so the clock costs nothing noticeable even at one record
    per batch.
    """
    progress = False
    if not timed:
        for n in nodes:
            if not n.done and n.run(batch, stop):
                progress = True
        return progress
    t = monotonic_ns()
    for n in nodes:
        if not n.done and n.run(batch, stop):
            progress = True
            now = monotonic_ns()
            if n.loop_timed:
                n.busy += (now - t) * TIMED_ROUNDS
            t = now
    return progress


def _drain(fd: int) -> None:
    """Empty a signal wake-up pipe (non-blocking) so the next wait does not return at once."""
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def run_sp(
    spec: PipelineSpecV1,
    *,
    sources: Mapping[str, RecordSource | Iterable[bytes | str]] | None = None,
    sinks: Mapping[str, RecordSink] | None = None,
    batch: int = DEFAULT_BATCH,
    stop: StopToken | None = None,
) -> RunReport:
    """Run ``spec`` with :class:`LaneGraphSP` and return its report."""
    return LaneGraphSP(spec, sources=sources, sinks=sinks, batch=batch).run(stop)
