"""SingleRing: a chain of stages over one SequencedSlots ring, processing in place.

Theory of operation
-------------------
A ``single_ring`` spec has one ``slots`` lane. The source claims a sequence, writes the record
into its slot and publishes it; each stage is a consumer of the ring that reads a slot only
after the stage before it released it (``after = [previous]``, a ``SeqBarrier``), steps its op
and rewrites the slot in place; every sink reads after the last stage. The producer is gated by
the slowest consumer, so the ring is the only buffer: nothing is copied between stages.

A slot holds one tag byte before the payload, because a stage may emit zero or several records
for one: ``R`` one record, ``N`` none (dropped, skipped), ``F`` several, framed like ``batch``
(u32le length, bytes). The ring is created with ``slot_bytes + 8`` so a record of the spec's
``slot_bytes`` still fits with its tag. What a stage emits at ``finish`` has no slot to go to:
such an op fails the run (run it as a ``lane_graph``).

The loop is the same shape as LaneGraph SP's: rounds over source, stages in chain order and
sinks, each moving at most a batch without waiting. Everything is in this process (a
``single_ring`` spec runs in one process, SP406), and the order of records is the ring's, so
the output is byte-identical to LaneGraph SP and MP for the same spec and input.
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
from byteor.exec._local import RecordSink, RecordSource
from byteor.exec._ops import frame, unframe
from byteor.exec._report import NodeReport, RunReport, StopToken
from byteor.exec._sp import DEFAULT_BATCH, LaneGraphSP, _drain
from byteor.kernel import Stage, StageCounters
from byteor.spec import PipelineSpecV1

__all__ = ["SingleRing", "run_single_ring"]

_run_ids = itertools.count()
_ONE, _NONE, _FRAMED = b"R", b"N", b"F"
_TAG_ROOM = 8  # bytes added to each slot for the tag (slot sizes are multiples of 8)


def _encode(records: Sequence[bytes]) -> bytes:
    if not records:
        return _NONE
    if len(records) == 1:
        return _ONE + records[0]
    return _FRAMED + frame(records)


def _decode(slot: memoryview | bytes) -> list[bytes]:
    data = bytes(slot)
    tag = data[:1]
    if tag == _ONE:
        return [data[1:]]
    if tag == _NONE:
        return []
    if tag == _FRAMED:
        out = unframe(data[1:])
        if out is not None:
            return out
    raise ExecError(
        f"a ring slot holds an unknown tag {tag!r}: the ring was written by another run"
    )


class _RingStage:
    def __init__(
        self, report: NodeReport, stage: Stage, rx: lanes.Consumer, action: str, room: int
    ) -> None:
        self.report = report
        self.stage = stage
        self.rx = rx
        self.action = action
        self.room = room
        self.counters = StageCounters()
        self.done = False

    def run(self, batch: int) -> bool:
        rx, moved = self.rx, 0
        name = self.report.name
        try:
            while moved < batch:
                records = _decode(rx.receive_nowait())
                moved += 1
                if not records:
                    continue
                first = self.counters.records_in
                self.counters.records_in += len(records)
                result = self.stage.step_batch(records)
                for failure in result.failures:
                    self.counters.count_error(failure.error, self.action)  # type: ignore[arg-type]
                    if self.action == "fail":
                        raise StageFailed(
                            name, first + failure.index, failure.error.code, failure.error.message
                        )
                out = result.ports[0] if result.ports else []
                self.counters.records_out += len(out)
                data = _encode(out)
                if len(data) > self.room:
                    raise ExecError(
                        f"stage {name!r} emitted {len(out)} record(s) of {len(data) - 1} bytes "
                        f"for one slot of {self.room - 1}: raise lane slot_bytes"
                    )
                rx.rewrite(data)
        except lanes.WouldBlock:
            pass
        except lanes.LaneClosed:
            emit = self.stage.finish()
            if any(emit.ports):
                raise ExecError(
                    f"stage {name!r} emits records at the end of the stream; a single_ring has "
                    "no slot for them: run the spec as a lane_graph"
                ) from None
            self.done = True
        rx.release()
        return moved > 0 or self.done


class SingleRing(LaneGraphSP):
    """Runs a ``single_ring`` spec over one SequencedSlots ring in shared memory.

    Args: as for :class:`LaneGraphSP`, and ``run_id`` names the ring's segment
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
        super().__init__(
            spec, sources=sources, sinks=sinks, batch=batch, stdin=stdin, stdout=stdout
        )
        self._fixed_id = run_id
        self.run_id = run_id or ""

    def run(self, stop: StopToken | None = None) -> RunReport:
        """Run to the end of the source (or a stop request) and report.

        Raises:
            StageFailed: a stage's policy is ``fail`` and a record failed.
            ExecError: an op, adapter or ring problem.
        """
        stop = stop or StopToken()
        stages = self._stages()
        graph = self.graph
        (ring,) = self.spec.lanes.values()
        chain = [n for n in graph.nodes if n.kind == "stage"]
        (src_def,) = [n for n in graph.nodes if n.kind == "source"]
        sink_defs = [n for n in graph.nodes if n.kind == "sink"]
        run_id = self._fixed_id or f"sr{os.getpid()}-{next(_run_ids)}-{graph.pipeline}"
        self.run_id = run_id
        declared: list[str | tuple[str, list[str]]] = []
        prev: list[str] = []
        for st in chain:
            declared.append((st.name, prev))
            prev = [st.name]
        declared += [(sk.name, prev) for sk in sink_defs]
        room = ring.slot_bytes + _TAG_ROOM
        lane = lanes.create(
            f"{run_id}.{ring.name}",
            "slots",
            ring.capacity,
            room,
            max_consumers=max(16, len(declared)),
            consumers=declared,
            backing="shm",
        )
        reports = {n.name: NodeReport(n.kind, n.name, n.op) for n in graph.nodes}
        ring_stages: list[_RingStage] = []
        source: RecordSource | None = None
        sinks: list[tuple[NodeReport, RecordSink, lanes.Consumer]] = []
        try:
            tx = lane.sender()
            for st in chain:
                ring_stages.append(
                    _RingStage(
                        reports[st.name],
                        stages[st.name],
                        lane.receiver(st.name),
                        st.policy.action,
                        room,
                    )
                )
            for sk in sink_defs:
                sinks.append((reports[sk.name], self._sink(sk), lane.receiver(sk.name)))
            source = self._source(src_def)
            self._ring_loop(
                source, reports[src_def.name], tx, ring_stages, sinks, stop, ring.slot_bytes
            )
        except BaseException as exc:
            if source is not None:
                source.close()
            for _, adapter, _ in sinks:
                adapter.close()
            if isinstance(exc, ExecError):
                exc.report = self._ring_report(reports, ring_stages, stop)
            raise
        finally:
            lane.close()
            lanes.unlink(lane.name, backing="shm")
        return self._ring_report(reports, ring_stages, stop)

    def _ring_loop(
        self,
        source: RecordSource,
        src_report: NodeReport,
        tx: lanes.Producer,
        ring_stages: Sequence[_RingStage],
        sinks: Sequence[tuple[NodeReport, RecordSink, lanes.Consumer]],
        stop: StopToken,
        max_record: int,
    ) -> None:
        batch = self._batch
        pending: list[bytes] = []
        source_done = False
        sinks_done = [False] * len(sinks)
        hashes = [hashlib.sha256() for _ in sinks]
        while True:
            progress = False
            idle = False
            # -- the source: claim, write in place, publish
            if not source_done:
                if not pending and not stop.requested:
                    got = source.poll(batch)
                    if got is None:
                        stop_now = True
                    else:
                        stop_now = False
                        idle = not got
                        src_report.records_in += len(got)
                        pending = got
                else:
                    stop_now = stop.requested and not pending
                while pending:
                    try:
                        first, n = tx.claim_batch(len(pending), timeout=0)
                    except lanes.LaneTimeout:
                        break
                    lengths = []
                    for k in range(n):
                        rec = pending[k]
                        if len(rec) > max_record:
                            raise ExecError(
                                f"source {src_report.name!r} read a record of {len(rec)} bytes; "
                                f"the ring's slot_bytes is {max_record}"
                            )
                        slot = tx.slot(first + k)
                        slot[0:1] = _ONE
                        slot[1 : 1 + len(rec)] = rec
                        lengths.append(1 + len(rec))
                    tx.publish_batch(first, lengths)
                    del pending[:n]
                    src_report.records_out += n
                    progress = True
                if stop_now:
                    source.close()
                    tx.close()
                    source_done = True
                    progress = True
            # -- the stages, in chain order
            for st in ring_stages:
                if not st.done and st.run(batch):
                    progress = True
            # -- the sinks
            for i, (report, adapter, rx) in enumerate(sinks):
                if sinks_done[i]:
                    continue
                records: list[bytes] = []
                try:
                    for _ in range(batch):
                        records += _decode(rx.receive_nowait())
                        progress = True
                except lanes.WouldBlock:
                    pass
                except lanes.LaneClosed:
                    sinks_done[i] = True
                    progress = True
                rx.release()
                if records:
                    adapter.write(records)
                    for r in records:
                        hashes[i].update(r)
                        hashes[i].update(b"\n")
                    report.bytes += sum(len(r) for r in records) + len(records)
                    report.records_in += len(records)
                    report.records_out += len(records)
                if sinks_done[i]:
                    adapter.close()
                    report.sha256 = hashes[i].hexdigest()
            if source_done and all(sinks_done):
                return
            if progress:
                continue
            fd = source.fileno()
            if idle and fd is not None and not stop.requested:
                wake = stop.wake_fd
                ready, _, _ = select.select([fd, *([wake] if wake is not None else [])], [], [])
                if wake is not None and wake in ready:
                    _drain(wake)
                continue
            raise PipelineStalled("the ring is stalled: no stage or sink can move")

    def _ring_report(
        self, reports: Mapping[str, NodeReport], ring_stages: Sequence[_RingStage], stop: StopToken
    ) -> RunReport:
        for st in ring_stages:
            c, r = st.counters, st.report
            r.records_in, r.records_out = c.records_in, c.records_out
            r.errors, r.skipped, r.routed = c.errors, c.skipped, c.routed
            r.error_codes = dict(c.error_codes)
            extra = getattr(st.stage, "counters", None)
            if callable(extra):
                r.extra = dict(extra())
        graph = self.graph
        return RunReport(
            graph.pipeline,
            graph.target,
            self.executor,
            [reports[n.name] for n in graph.nodes],
            stopped=stop.requested,
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
