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
"""

from __future__ import annotations

import hashlib
import itertools
import os
import select
from collections.abc import Iterable, Mapping, Sequence
from typing import BinaryIO, TextIO

from byteor import lanes
from byteor.exec._errors import ExecError, PipelineStalled, StageFailed
from byteor.exec._graph import Graph, LaneDef, NodeDef, build_graph
from byteor.exec._local import IterableSource, RecordSink, RecordSource, open_sink, open_source
from byteor.exec._report import NodeReport, RunReport, StopToken
from byteor.exec._resolve import resolve_op
from byteor.exec._stage import StageContext
from byteor.kernel import LaneRx, LaneTx, Stage, StageCounters
from byteor.spec import PipelineSpecV1

__all__ = ["LaneGraphSP", "run_sp", "DEFAULT_BATCH"]

DEFAULT_BATCH = 64
_run_ids = itertools.count()


class _Input:
    """One or several input lanes read as one stream, in the node's merge order."""

    def __init__(self, receivers: Sequence[lanes.Consumer], order: str, names: Sequence[str]):
        self.names = tuple(names)
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


class _Outbox:
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


class _Node:
    def __init__(self, report: NodeReport) -> None:
        self.report = report
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


class _SourceNode(_Node):
    def __init__(self, report: NodeReport, adapter: RecordSource, out: _Outbox) -> None:
        super().__init__(report)
        self.adapter = adapter
        self.out = out
        self.ended = False
        self.idle = False

    def run(self, batch: int, stop: StopToken) -> bool:
        moved = self.out.flush()
        self.report.records_out += moved
        if self.out.pending or self.done:
            return moved > 0
        if stop.requested or self.ended:
            self.adapter.close()
            self.out.tx.close()
            self.done = True
            return True
        got = self.adapter.poll(batch)
        if got is None:
            self.ended = True
            return True
        self.idle = not got
        if not got:
            return moved > 0
        self.report.records_in += len(got)
        self.out.pending.extend(got)
        self.report.records_out += self.out.flush()
        return True

    def blocked(self) -> str:
        if self.out.pending:
            return f"source {self.name!r} waits for room in lane {self.out.name!r}"
        return f"source {self.name!r} waits for input"

    def abort(self) -> None:
        self.adapter.close()


class _StageNode(_Node):
    def __init__(
        self,
        report: NodeReport,
        stage: Stage,
        inp: _Input,
        outs: list[_Outbox],
        error_out: _Outbox | None,
        action: str,
    ) -> None:
        super().__init__(report)
        self.stage = stage
        self.inp = inp
        self.outs = outs
        self.error_out = error_out
        self.action = action
        self.counters = StageCounters()
        self.finished = False
        self._all = [*outs, *([error_out] if error_out is not None else [])]

    def _flush(self) -> tuple[int, bool]:
        moved = 0
        for box in self._all:
            n = box.flush()
            moved += n
            if box is not self.error_out:
                self.counters.records_out += n
        return moved, any(box.pending for box in self._all)

    def run(self, batch: int, stop: StopToken) -> bool:
        moved, held = self._flush()
        if held or self.done:
            return moved > 0
        if self.inp.closed:
            if not self.finished:
                self.finished = True
                emit = self.stage.finish()
                for box, rest in zip(self.outs, emit.ports, strict=True):
                    box.pending.extend(rest)
                self._flush()
                return True
            for box in self._all:
                box.tx.close()
            self.done = True
            return True
        records = self.inp.take(batch)
        if not records:
            return moved > 0 or self.inp.closed
        first = self.counters.records_in
        self.counters.records_in += len(records)
        result = self.stage.step_batch(records)
        for failure in result.failures:
            self.counters.count_error(failure.error, self.action)  # type: ignore[arg-type]
            if self.action == "fail":
                raise StageFailed(
                    self.name, first + failure.index, failure.error.code, failure.error.message
                )
            if self.error_out is not None:
                self.error_out.pending.append(records[failure.index])
        for box, port in zip(self.outs, result.ports, strict=True):
            box.pending.extend(port)
        self._flush()
        return True

    def blocked(self) -> str:
        full = [box.name for box in self._all if box.pending]
        if full:
            return f"stage {self.name!r} waits for room in lane {', '.join(full)}"
        return f"stage {self.name!r} waits for a record on lane {self.inp.waiting_on}"


class _SinkNode(_Node):
    def __init__(self, report: NodeReport, adapter: RecordSink, inp: _Input) -> None:
        super().__init__(report)
        self.adapter = adapter
        self.inp = inp
        self.hash = hashlib.sha256()

    def run(self, batch: int, stop: StopToken) -> bool:
        if self.done:
            return False
        if self.inp.closed:
            self.adapter.close()
            self.report.sha256 = self.hash.hexdigest()
            self.done = True
            return True
        records = self.inp.take(batch)
        if not records:
            return self.inp.closed
        self.adapter.write(records)
        for r in records:
            self.hash.update(r)
            self.hash.update(b"\n")
        self.report.bytes += sum(len(r) for r in records) + len(records)
        self.report.records_in += len(records)
        self.report.records_out += len(records)
        return True

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

    def _create_lanes(self, prefix: str) -> dict[str, lanes.Lane]:
        made: dict[str, lanes.Lane] = {}
        try:
            for name, lane in self.graph.lanes.items():
                made[name] = lanes.create(
                    f"{prefix}{name}",
                    lane.kind,  # type: ignore[arg-type]
                    lane.capacity,
                    lane.slot_bytes,
                    max_consumers=None if lane.kind == "events" else max(16, len(lane.consumers)),
                    backing="memory",
                )
        except BaseException:
            for lane_handle in made.values():
                lane_handle.close()
                lanes.unlink(lane_handle.name, backing="memory")
            raise
        return made

    @staticmethod
    def _receiver(lane: lanes.Lane, spec: LaneDef, node: str) -> lanes.Consumer:
        if spec.kind == "events":
            return lane.receiver()
        if spec.kind == "fanout":
            return lane.receiver(
                node, policy="best_effort" if spec.overwrite else "critical", start="earliest"
            )
        # journal: named readers are durable (gate the writer); overwrite: tailing readers
        if spec.overwrite:
            return lane.receiver(start="earliest")
        return lane.receiver(node, start="earliest")

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
        prefix = f"sp{os.getpid()}-{next(_run_ids)}-{graph.pipeline}."
        made = self._create_lanes(prefix)
        nodes: list[_Node] = []
        try:
            rx = {
                (lane, node): self._receiver(made[lane], graph.lanes[lane], node)
                for lane in graph.lanes
                for node in graph.lanes[lane].consumers
            }
            for node in graph.nodes:
                report = NodeReport(node.kind, node.name, node.op)
                inp = (
                    _Input([rx[(i, node.name)] for i in node.inputs], node.merge, node.inputs)
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
                lanes.unlink(lane_handle.name, backing="memory")
        return self._report(nodes, stop)

    def _report(self, nodes: list[_Node], stop: StopToken) -> RunReport:
        for n in nodes:
            if isinstance(n, _StageNode):
                self._fold(n)
        graph = self.graph
        return RunReport(
            graph.pipeline,
            graph.target,
            self.executor,
            [n.report for n in nodes],
            stopped=stop.requested,
        )

    @staticmethod
    def _fold(n: _StageNode) -> None:
        c, r = n.counters, n.report
        r.records_in, r.records_out = c.records_in, c.records_out
        r.errors, r.skipped, r.routed = c.errors, c.skipped, c.routed
        r.error_codes = dict(c.error_codes)
        extra = getattr(n.stage, "counters", None)
        if callable(extra):
            r.extra = dict(extra())

    def _loop(self, nodes: list[_Node], stop: StopToken) -> None:
        batch = self._batch
        while True:
            progress = False
            for n in nodes:
                if not n.done and n.run(batch, stop):
                    progress = True
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
