"""SingleRing: a chain of stages over one SequencedSlots ring, processing in place.

Theory of operation
-------------------
A ``single_ring`` spec has one ``slots`` lane. The source publishes each record into its
own slot; each stage is a consumer of the ring that reads a slot only after the stage before
it released it (``after = [previous]``, a ``SeqBarrier``), steps its op and rewrites the slot
in place; every sink reads after the last stage. The producer is gated by the slowest
consumer, so the ring is the only buffer: nothing is copied from one stage to the next.

Everything moves in batches: a stage takes up to ``batch`` consecutive slots with one bulk
copy (``receive_batch_nowait(copy=True)``), steps them with one ``step_batch`` call and
writes the results back with one ``rewrite_batch`` (a single strided copy when they have one
length), then releases the slots to the next stage.

A slot holds one record as it is, so the common case (a stage that emits one record per
record) needs no framing. A stage may also emit zero or several: the records out of a batch
are laid over its slots in order, one per slot while they last, the rest of the slots marked
empty, or, with more records than slots, several framed in one slot (like ``batch``: u32le
length, bytes). Marked slots are told apart by their length: the ring is created with
``slot_bytes + 8``, a record is at most ``slot_bytes``, and a marked slot is exactly full,
ending with the framed length (u32le) and a tag, ``N`` (none) or ``F`` (framed). Records are
read back in slot order, so every stage and sink sees the same sequence of records as in
LaneGraph SP, whatever the batch boundaries: the output is byte-identical. What a stage emits
at ``finish`` has no slot to go to: such an op fails the run (run it as a ``lane_graph``).

Placement: the spec's ``process`` of each stage. With every stage in ``main`` the whole chain
runs in this process, in rounds (source, stages in chain order, sinks) like LaneGraph SP.
Otherwise the run is LaneGraph MP's: each other process name is a forked worker running its
stages over its own attachment of the ring, the source, sinks and ``main`` stages run in the
supervisor, which watches the workers (a worker that dies fails the run with ``WorkerDied``
naming its stages; the others are killed and the ring unlinked; workers die with the
supervisor). Stages of one process need not be neighbours in the chain.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import select
import struct
from collections.abc import Iterable, Mapping, Sequence
from time import monotonic_ns
from typing import BinaryIO, Final, TextIO

from byteor import lanes
from byteor.exec._errors import ExecError, PipelineStalled, StageFailed
from byteor.exec._graph import NodeDef
from byteor.exec._local import RecordSink, RecordSource
from byteor.exec._mp import LaneGraphMP, processes_of
from byteor.exec._ops import frame, unframe
from byteor.exec._report import NodeReport, RunReport, StopToken
from byteor.exec._sp import DEFAULT_BATCH, Node, Outbox, _drain, _SourceNode
from byteor.kernel import Stage, StageCounters
from byteor.spec import PipelineSpecV1

__all__ = ["SingleRing", "run_single_ring"]

_run_ids = itertools.count()
_TAG_ROOM: Final = 8  # bytes added to each slot for the marks (slot sizes are multiples of 8)
_MARK: Final = struct.Struct("<Ic")  # at the end of a marked slot: framed length, tag
_NONE, _FRAMED = b"N", b"F"
# How a process of a multi-process run waits for the ring: a short spin (another process on
# another core answers within microseconds), a few yields, then asleep until woken.
_WAIT: Final = lanes.WaitStrategy(spins=100, yields=20, sleep_slice=0.002)
_WAITER_TIMEOUT_S: Final = 0.005


def _marked(tag: bytes, content: bytes, room: int) -> bytes:
    """A marked slot: ``content``, zero padding, its length and ``tag``, ``room`` bytes in all."""
    return content + bytes(room - _MARK.size - len(content)) + _MARK.pack(len(content), tag)


def _unmark(data: bytes, room: int) -> list[bytes]:
    """The records of a slot longer than a record."""
    if len(data) == room:
        n, tag = _MARK.unpack_from(data, room - _MARK.size)
        if tag == _NONE:
            return []
        if tag == _FRAMED and n <= room - _MARK.size:
            out = unframe(data[:n])
            if out is not None:
                return out
    raise ExecError(
        f"a ring slot of {len(data)} bytes holds no record this run wrote: the ring was "
        "written by something else"
    )


def _records_of(slots: list[bytes], limit: int, room: int) -> list[bytes]:
    """The records held by consecutive slots, in order."""
    if len(slots) == 1:
        return slots if len(slots[0]) <= limit else _unmark(slots[0], room)
    if not slots or max(map(len, slots)) <= limit:
        return slots
    out: list[bytes] = []
    for s in slots:
        if len(s) <= limit:
            out.append(s)
        else:
            out += _unmark(s, room)
    return out


def _too_long(who: str, size: int, limit: int) -> ExecError:
    return ExecError(
        f"{who} emitted a record of {size} bytes; the ring's slot_bytes is {limit}: "
        "raise lane slot_bytes"
    )


def _lay_out(records: list[bytes], slots: int, limit: int, room: int, who: str) -> list[bytes]:
    """``records`` laid over ``slots`` slots in order (see the theory of operation). One record
    a slot is the records as they are: the caller checks their lengths as it writes them."""
    n = len(records)
    if n == slots:
        return records
    if n and max(map(len, records)) > limit:
        raise _too_long(who, max(map(len, records)), limit)
    if n < slots:
        none = _marked(_NONE, b"", room)
        return records + [none] * (slots - n)
    out: list[bytes] = []
    for k in range(slots):
        part = records[k * n // slots : (k + 1) * n // slots]
        if len(part) == 1:
            out.append(part[0])
            continue
        content = frame(part)
        if len(content) > room - _MARK.size:
            raise ExecError(
                f"{who} emitted {len(part)} records of {len(content)} framed bytes for one "
                f"slot of {room - _MARK.size}: raise lane slot_bytes"
            )
        out.append(_marked(_FRAMED, content, room))
    return out


class _RingOutbox(Outbox):
    """The source's end of the ring: refuses a record longer than the spec's slot_bytes
    (the ring's slots are longer, to hold the marks)."""

    def __init__(self, name: str, tx: lanes.Producer, limit: int, who: str) -> None:
        super().__init__(name, tx)
        self.limit = limit
        self.who = who

    def flush(self) -> int:
        pending = self.pending
        if pending and max(map(len, pending)) > self.limit:
            big = max(map(len, pending))
            raise ExecError(
                f"{self.who} read a record of {big} bytes; the ring's slot_bytes is "
                f"{self.limit}: raise lane slot_bytes"
            )
        return super().flush()


class _RingSource(_SourceNode):
    """The source (LaneGraph SP's), noting whether its last visit moved anything."""

    progressed = False

    def run(self, batch: int, stop: StopToken) -> bool:
        self.progressed = super().run(batch, stop)
        return self.progressed


class _RingStage(Node):
    """A stage: batches of slots in, ``step_batch``, the results back into the same slots."""

    def __init__(
        self,
        report: NodeReport,
        stage: Stage,
        rx: lanes.Consumer,
        action: str,
        limit: int,
        room: int,
    ) -> None:
        super().__init__(report)
        self._report = report
        self.stage = stage
        self.rx = rx
        self.action = action
        self.limit = limit
        self.room = room
        self.counters = StageCounters()
        self.who = f"stage {report.name!r}"
        self.progressed = False
        self.busy = 0  # ns in the op (what a run's report calls busy)

    @property
    def report(self) -> NodeReport:
        """The node's report, with the counters so far (what MP sends to the supervisor)."""
        c, r = self.counters, self._report
        r.records_in, r.records_out = c.records_in, c.records_out
        r.errors, r.skipped, r.routed = c.errors, c.skipped, c.routed
        r.error_codes = dict(c.error_codes)
        extra = getattr(self.stage, "counters", None)
        if callable(extra):
            r.extra = dict(extra())
        return r

    @report.setter
    def report(self, value: NodeReport) -> None:
        self._report = value

    def run(self, batch: int, stop: StopToken) -> bool:
        if self.done:
            return False
        rx, moved = self.rx, 0
        limit, room = self.limit, self.room
        c = self.counters
        try:
            while moved < batch:
                want = batch - moved
                # One slot alone takes the per-message path, cheaper than a batch of one.
                slots = (
                    [bytes(rx.receive_nowait())]
                    if want == 1
                    else rx.receive_batch_nowait(want, copy=True)
                )
                n = len(slots)
                moved += n
                records = _records_of(slots, limit, room)  # type: ignore[arg-type]
                if not records:
                    continue
                first = c.records_in
                c.records_in += len(records)
                t0 = monotonic_ns()
                result = self.stage.step_batch(records)
                self.busy += monotonic_ns() - t0
                for failure in result.failures:
                    c.count_error(failure.error, self.action)  # type: ignore[arg-type]
                    if self.action == "fail":
                        raise StageFailed(
                            self._report.name,
                            first + failure.index,
                            failure.error.code,
                            failure.error.message,
                        )
                out = result.ports[0] if result.ports else []
                c.records_out += len(out)
                laid = out if len(out) == n else _lay_out(out, n, limit, room, self.who)
                try:
                    if n == 1:
                        rx.rewrite(laid[0])
                        longest = len(laid[0])
                    else:
                        longest = rx.rewrite_batch(laid)
                except lanes.MessageTooLarge:
                    longest = room + 1
                if longest > limit and laid is out:
                    raise _too_long(self.who, max(map(len, out)), limit)
        except lanes.WouldBlock:
            pass
        except lanes.LaneClosed:
            emit = self.stage.finish()
            if any(emit.ports):
                raise ExecError(
                    f"{self.who} emits records at the end of the stream; a single_ring has "
                    "no slot for them: run the spec as a lane_graph"
                ) from None
            self.done = True
        rx.release()
        self.progressed = moved > 0 or self.done
        return self.progressed

    def blocked(self) -> str:
        return f"{self.who} waits for the ring"


class _RingSink(Node):
    """A sink: reads batches of slots after the last stage and writes their records."""

    def __init__(
        self, report: NodeReport, adapter: RecordSink, rx: lanes.Consumer, limit: int, room: int
    ) -> None:
        super().__init__(report)
        self.adapter = adapter
        self.rx = rx
        self.limit = limit
        self.room = room
        self.hash = hashlib.sha256()
        self.progressed = False
        self.busy = 0  # ns in the adapter's writes

    def run(self, batch: int, stop: StopToken) -> bool:
        if self.done:
            return False
        rx, report, moved = self.rx, self.report, 0
        try:
            while moved < batch:
                want = batch - moved
                slots = (
                    [bytes(rx.receive_nowait())]
                    if want == 1
                    else rx.receive_batch_nowait(want, copy=True)
                )
                moved += len(slots)
                records = _records_of(slots, self.limit, self.room)  # type: ignore[arg-type]
                if not records:
                    continue
                t0 = monotonic_ns()
                self.adapter.write(records)
                self.busy += monotonic_ns() - t0
                data = b"\n".join(records)
                self.hash.update(data)
                self.hash.update(b"\n")
                report.bytes += len(data) + 1
                report.records_in += len(records)
                report.records_out += len(records)
        except lanes.WouldBlock:
            pass
        except lanes.LaneClosed:
            self.adapter.close()
            report.sha256 = self.hash.hexdigest()
            self.done = True
        rx.release()
        self.progressed = moved > 0 or self.done
        return self.progressed

    def blocked(self) -> str:
        return f"sink {self.name!r} waits for the ring"

    def abort(self) -> None:
        self.report.sha256 = self.hash.hexdigest()
        self.adapter.close()


class _RingWaiter(Node):
    """A process's sleep on the ring: after a round in which none of its other nodes moved a
    record, waits (up to ``timeout``) for the next slot its first waiting node reads from
    another process, woken by that process's release instead of polling. Multi-process runs
    only; its report names no node of the graph, so it is dropped from the run's report."""

    def __init__(
        self,
        nodes: Sequence[Node],
        waits: Sequence[tuple[Node, lanes.Consumer]],
        timeout: float,
    ) -> None:
        super().__init__(NodeReport("stage", "-waiter", ""))
        self.nodes = list(nodes)
        self.waits = list(waits)
        self.timeout = timeout

    def run(self, batch: int, stop: StopToken) -> bool:
        nodes = self.nodes
        if all(n.done for n in nodes):
            self.done = True
            return False
        if any(n.progressed for n in nodes):  # type: ignore[attr-defined]
            return False
        for node, rx in self.waits:
            if not node.done:
                try:
                    return rx.wait(self.timeout)
                except lanes.LaneClosed:
                    return True  # the node has the end of the stream to take
        return False

    def blocked(self) -> str:
        return "waits on the ring"


class SingleRing(LaneGraphMP):
    """Runs a ``single_ring`` spec over one SequencedSlots ring in shared memory.

    Stages run where the spec places them (``process``): all in this process by default,
    else each process name in a worker of its own, supervised as in :class:`LaneGraphMP`.

    Args: as for :class:`LaneGraphMP`; ``run_id`` names the ring's segment
    ``byteor-<run_id>.<lane>`` (default ``sr<pid>-<n>-<pipeline>``).
    """

    executor = "single_ring"

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
        if spec.target != "single_ring":
            raise ExecError(
                f"SingleRing runs single_ring specs, this one targets {spec.target}: "
                "lower the plan with --target single_ring, or use LaneGraph"
            )
        restarting = sorted(n for n, st in spec.stages.items() if st.on_crash == "restart")
        if restarting:
            raise ExecError(
                f"stage {restarting[0]!r} says on_crash = restart, which a single_ring cannot"
                " do: its stages rewrite slots in place, and a restarted stage would process"
                " again the slots its predecessor had rewritten but not released; run the"
                " spec as a lane_graph (a restarted stage resumes from its last commit)"
            )
        super().__init__(
            spec,
            sources=sources,
            sinks=sinks,
            batch=batch,
            stdin=stdin,
            stdout=stdout,
            run_id=run_id,
        )
        (self._ring,) = spec.lanes.values()

    @property
    def processes(self) -> list[str]:
        """The processes the run uses, ``main`` (this one) first."""
        return processes_of(self.graph)

    # -- building ---------------------------------------------------------------------------

    def _lanes(self, run_id: str) -> dict[str, lanes.Lane]:
        """The ring, created with every stage and sink declared (each after the one before),
        under each name the chain graph gives its links."""
        ring = self._ring
        chain = [n.name for n in self.graph.nodes if n.kind == "stage"]
        sinks = [n.name for n in self.graph.nodes if n.kind == "sink"]
        declared: list[str | tuple[str, list[str]]] = []
        prev: list[str] = []
        for name in chain:
            declared.append((name, prev))
            prev = [name]
        declared += [(name, prev) for name in sinks]
        lane = lanes.create(
            f"{run_id}.{ring.name}",
            "slots",
            ring.capacity,
            ring.slot_bytes + _TAG_ROOM,
            max_consumers=max(16, len(declared)),
            consumers=declared,
            backing="shm",
        )
        return dict.fromkeys(self.graph.lanes, lane)

    @staticmethod
    def _release(made: Mapping[str, lanes.Lane]) -> None:
        for handle in {id(h): h for h in made.values()}.values():
            try:
                handle.close()
            finally:
                lanes.unlink(handle.name, backing="shm")

    def _nodes(
        self, defs: Sequence[NodeDef], made: Mapping[str, lanes.Lane], stages: Mapping[str, Stage]
    ) -> list[Node]:
        """The nodes for ``defs`` over this process's handle(s) on the ring."""
        limit = self._ring.slot_bytes
        room = limit + _TAG_ROOM
        chain = self.graph.nodes  # source, stages in chain order, sinks
        upstream = {n.name: chain[k - 1] for k, n in enumerate(chain) if k}
        last_stage = next((n for n in reversed(chain) if n.kind == "stage"), chain[0])
        nodes: list[Node] = []
        waiting: list[tuple[Node, lanes.Consumer]] = []  # nodes that read another process
        for node in defs:
            report = NodeReport(node.kind, node.name, node.op)
            if node.kind == "source":
                lane = made[node.outputs[0]]
                who = f"source {node.name!r}"
                out = _RingOutbox(self._ring.name, lane.sender(), limit, who)
                nodes.append(_RingSource(report, self._source(node), out))
                continue
            rx = made[node.inputs[0]].receiver(node.name, wait=_WAIT)
            if node.kind == "stage":
                nodes.append(
                    _RingStage(report, stages[node.name], rx, node.policy.action, limit, room)
                )
                before = upstream[node.name]
            else:
                nodes.append(_RingSink(report, self._sink(node), rx, limit, room))
                before = last_stage
            if before.process != node.process:
                waiting.append((nodes[-1], rx))
        if len(self.processes) > 1 and waiting:
            nodes.append(_RingWaiter(nodes, waiting, _WAITER_TIMEOUT_S))
        return nodes

    # -- running ----------------------------------------------------------------------------

    def run(self, stop: StopToken | None = None) -> RunReport:
        """Run to the end of the source (or a stop request) and report.

        Raises:
            WorkerDied: a stage process exited before the pipeline finished (names it).
            StageFailed: a stage's policy is ``fail`` and a record failed.
            ExecError: an op, adapter or ring problem.
        """
        fixed = self._fixed_id
        run_id = fixed or f"sr{os.getpid()}-{next(_run_ids)}-{self.graph.pipeline}"
        if len(self.processes) > 1:
            self._fixed_id = run_id  # LaneGraph MP's run, under this executor's name
            try:
                return super().run(stop)
            finally:
                self._fixed_id = fixed
        stop = stop or StopToken()
        stages = self._stages()
        self.run_id = run_id
        made = self._lanes(run_id)
        nodes: list[Node] = []
        try:
            nodes = self._nodes(self.graph.nodes, made, stages)
            self._ring_loop(nodes, stop)
        except BaseException as exc:
            for n in nodes:
                if not n.done:
                    n.abort()
            if isinstance(exc, ExecError):
                exc.report = self._merge_reports(nodes, [], stop)
            raise
        finally:
            self._release(made)
        return self._merge_reports(nodes, [], stop)

    def _ring_loop(self, nodes: Sequence[Node], stop: StopToken) -> None:
        """Rounds over the chain in this process (source, stages, sinks), each node moving up
        to a batch without waiting, until every sink has the end of the stream. A round that
        moves nothing waits for the source's input (stdin) or a stop; a chain cannot stall
        otherwise, so anything else is reported as a stall."""
        batch = self._batch
        sinks = [n for n in nodes if isinstance(n, _RingSink)]
        sources = [n for n in nodes if isinstance(n, _SourceNode)]
        while True:
            progress = False
            for n in nodes:
                if n.run(batch, stop):
                    progress = True
            if progress:
                if sinks[0].done and all(sk.done for sk in sinks):
                    return
                continue
            fds = [
                fd
                for n in sources
                if not n.done and n.idle and not n.out.pending
                if (fd := n.adapter.fileno()) is not None
            ]
            if fds and not stop.requested:
                wake = stop.wake_fd
                ready, _, _ = select.select([*fds, *([wake] if wake is not None else [])], [], [])
                if wake is not None and wake in ready:
                    _drain(wake)
                continue
            raise PipelineStalled(
                "the ring is stalled: " + "; ".join(n.blocked() for n in nodes if not n.done)
            )


def run_single_ring(
    spec: PipelineSpecV1,
    *,
    sources: Mapping[str, RecordSource | Iterable[bytes | str]] | None = None,
    sinks: Mapping[str, RecordSink] | None = None,
    batch: int = DEFAULT_BATCH,
    stop: StopToken | None = None,
) -> RunReport:
    """Run ``spec`` with :class:`SingleRing` and return its report."""
    return SingleRing(spec, sources=sources, sinks=sinks, batch=batch).run(stop)
