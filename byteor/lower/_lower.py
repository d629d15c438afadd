"""lower_v2: PipelinePlanV2 -> PipelineSpecV1, deterministically.

Theory of operation. A plan connects nodes; a spec connects them through lanes. For the
``lane_graph`` target every node that is read gets one output lane, named after it:

* read by one node: an **events** lane (bounded, lossless, one consumer);
* read by several: a **fanout** lane (every reader sees every record);
* a source with ``journal = true`` (or ``journal_sources``): a **journal** lane, so what
  it admitted can be replayed;
* a node reading several nodes reads their lanes in the order of its ``inputs``: a
  **merge** of several events lanes, ordered by its ``merge`` setting (many-to-one never
  shares one lane, since a lane has one producer).

For ``single_ring`` the plan must be a chain (one source, stages one after another, sinks
at the end); it becomes one **slots** lane ``ring`` that stages transform in place, each
gated on the one before it (``after``), with the sinks gated on the last stage.

``target="auto"`` picks ``single_ring`` for a linear chain (one source, one sink) and
``lane_graph`` otherwise; an explicit ``single_ring`` also takes several sinks at the end.
Capacity comes from the producer's ``capacity`` hint or ``opts.capacity``; slot size from
its ``message_bytes`` hint rounded up to 8, or ``opts.slot_bytes``. Placement: a stage's
``process`` if set, else ``main`` (``placement="single"``) or its own process named after
it (``placement="per_stage"``). Nodes and lanes are visited in sorted order, so the same
plan and options always give the same canonical hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from byteor.lower._errors import LowerError
from byteor.plan import PipelinePlanV2, PlanFinding, validate_plan_v2
from byteor.spec import (
    DEFAULT_PROCESS,
    MAX_CAPACITY,
    MAX_CONSUMERS,
    MAX_SLOT_BYTES,
    MIN_CAPACITY,
    SLOT_ALIGN,
    Finding,
    LaneKind,
    LaneSpec,
    MergeOrder,
    PipelineSpecV1,
    SinkSpec,
    SourceSpec,
    StageSpec,
    Target,
    WaitMode,
    capacity_ok,
    has_errors,
    slot_bytes_ok,
    validate_v1,
)

__all__ = ["LowerOptions", "TargetChoice", "lower_v2", "ring_compatible", "RING_LANE"]

TargetChoice = Literal["auto", "single_ring", "lane_graph"]
Placement = Literal["single", "per_stage"]
RING_LANE = "ring"


@dataclass(frozen=True, slots=True)
class LowerOptions:
    """Choices lowering makes where the plan is silent.

    Attributes:
        capacity: lane capacity when the producer gives no hint (a power of two).
        slot_bytes: slot size when the producer gives no ``message_bytes`` hint.
        placement: ``single`` (stages without ``process`` share ``main``) or ``per_stage``
            (each such stage gets its own process).
        journal_sources: journal every source's output (for replay).
        wait: wait strategy of every lane, ``backoff`` or ``spin``.
    """

    capacity: int = 1024
    slot_bytes: int = 256
    placement: Placement = "single"
    journal_sources: bool = False
    wait: WaitMode = "backoff"


def _finding(code: str, key: str, message: str) -> Finding:
    return Finding(code, "error", key, None, message)


def _from_plan(f: PlanFinding) -> Finding:
    return Finding(f.code, f.severity, f.key, f.line, f.message, f.suggestion)


def _round_slot(n: int) -> int:
    return max(SLOT_ALIGN, (n + SLOT_ALIGN - 1) // SLOT_ALIGN * SLOT_ALIGN)


def ring_compatible(
    plan: PipelinePlanV2, opts: LowerOptions | None = None, *, linear: bool = False
) -> str | None:
    """``None`` when a single ring can run the plan, else the reason it cannot.

    A ring runs one source, then stages one after another, then any number of sinks at the
    end. With ``linear`` (what ``target="auto"`` asks) there must also be exactly one sink:
    several sinks are a fan-out, which auto lowers to a lane graph.
    """
    opts = opts or LowerOptions()
    if linear and len(plan.sinks) != 1:
        return f"it has {len(plan.sinks)} sinks (a linear chain ends in one)"
    if len(plan.sources) != 1:
        return f"it has {len(plan.sources)} sources (a single ring has one)"
    n_readers = len(plan.stages) + len(plan.sinks)
    if n_readers > MAX_CONSUMERS:
        return f"its {n_readers} stages and sinks exceed the {MAX_CONSUMERS} readers of one ring"
    src = plan.sources[0]
    if src.journal or opts.journal_sources:
        return "its source is journaled (a journal needs a lane_graph)"
    stages = {s.name: s for s in plan.stages}
    sinks = {s.name: s for s in plan.sinks}
    current = src.name
    seen = 0
    index = plan.readers()
    while True:
        readers = index.get(current, [])
        stage_readers = [r for r in readers if r in stages]
        if not stage_readers:
            break
        if len(readers) != 1:
            return f"{current!r} is read by {', '.join(readers)} (a single ring is one chain)"
        nxt = stages[stage_readers[0]]
        if len(nxt.inputs) != 1:
            return f"stage {nxt.name!r} merges several inputs"
        current = nxt.name
        seen += 1
    if seen != len(stages):
        return "not every stage is on one chain from the source"
    for sink in sinks.values():
        if sink.inputs != (current,):
            return f"sink {sink.name!r} does not read only the end of the chain"
    return None


def lower_v2(
    plan: PipelinePlanV2,
    target: TargetChoice = "auto",
    opts: LowerOptions | None = None,
) -> PipelineSpecV1:
    """Lower a plan to a spec.

    Args:
        plan: the plan.
        target: ``single_ring``, ``lane_graph`` or ``auto`` (a chain gets a single ring).
        opts: defaults for what the plan leaves out.

    Raises:
        LowerError: the plan has error findings, an option or hint does not fit the lane
            ABI, or the plan cannot run on the requested target.
    """
    opts = opts or LowerOptions()
    plan_findings = [_from_plan(f) for f in validate_plan_v2(plan)]
    if has_errors(plan_findings):
        raise LowerError(plan_findings)
    problems = _check_options(plan, opts, target)
    if problems:
        raise LowerError(problems)
    reason = ring_compatible(plan, opts)
    chosen: Target
    if target == "auto":
        linear = ring_compatible(plan, opts, linear=True) is None
        chosen = "single_ring" if linear else "lane_graph"
    elif target == "single_ring" and reason is not None:
        raise LowerError(
            [
                _finding(
                    "LW104",
                    "target",
                    f"plan {plan.name!r} cannot run on a single ring: {reason}; "
                    "use --target lane_graph (or auto)",
                )
            ]
        )
    else:
        chosen = target
    spec = _single_ring(plan, opts) if chosen == "single_ring" else _lane_graph(plan, opts)
    findings = validate_v1(spec)
    if has_errors(findings):  # pragma: no cover - a lowering bug, reported rather than hidden
        raise LowerError(findings)
    return spec


def _check_options(plan: PipelinePlanV2, opts: LowerOptions, target: str) -> list[Finding]:
    out: list[Finding] = []
    if target not in ("auto", "single_ring", "lane_graph"):
        out.append(
            _finding("LW100", "target", f"target {target!r}: use auto, single_ring or lane_graph")
        )
    if not capacity_ok(opts.capacity):
        out.append(
            _finding(
                "LW101",
                "opts.capacity",
                f"capacity {opts.capacity} must be a power of two from {MIN_CAPACITY} "
                f"to {MAX_CAPACITY}",
            )
        )
    if not slot_bytes_ok(opts.slot_bytes):
        out.append(
            _finding(
                "LW101",
                "opts.slot_bytes",
                f"slot_bytes {opts.slot_bytes} must be a multiple of 8 up to {MAX_SLOT_BYTES}",
            )
        )
    if opts.placement not in ("single", "per_stage"):
        out.append(_finding("LW101", "opts.placement", "placement: use single or per_stage"))
    if opts.wait not in ("backoff", "spin"):
        out.append(_finding("LW101", "opts.wait", "wait: use backoff or spin"))
    hinted = [(f"sources.{s.name}", s.message_bytes, s.capacity) for s in plan.sources]
    hinted += [(f"stages.{s.name}", s.message_bytes, s.capacity) for s in plan.stages]
    for key, message_bytes, capacity in hinted:
        if message_bytes is not None and message_bytes > MAX_SLOT_BYTES:
            out.append(
                _finding(
                    "LW102",
                    f"{key}.message_bytes",
                    f"message_bytes {message_bytes} is larger than a lane slot can be "
                    f"({MAX_SLOT_BYTES}): pass large payloads by reference (object storage)",
                )
            )
        if capacity is not None and capacity > MAX_CAPACITY:
            out.append(
                _finding(
                    "LW103",
                    f"{key}.capacity",
                    f"capacity {capacity} is larger than a lane can hold ({MAX_CAPACITY})",
                )
            )
    return out


def _process(opts: LowerOptions, explicit: str | None, stage: str) -> str:
    if explicit is not None:
        return explicit
    return DEFAULT_PROCESS if opts.placement == "single" else stage


def _merge(merge: str | None) -> MergeOrder:
    return "ready" if merge == "ready" else "round_robin"


def _single_ring(plan: PipelinePlanV2, opts: LowerOptions) -> PipelineSpecV1:
    src = plan.sources[0]
    order: list[str] = []
    index = plan.readers()
    current = src.name
    stages = {s.name: s for s in plan.stages}
    while True:
        nxt = [r for r in index.get(current, []) if r in stages]
        if not nxt:
            break
        current = nxt[0]
        order.append(current)
    sizes = [src.message_bytes, *(stages[s].message_bytes for s in order)]
    hinted_sizes = [s for s in sizes if s is not None]
    caps = [c for c in (src.capacity, *(stages[s].capacity for s in order)) if c is not None]
    ring = LaneSpec(
        RING_LANE,
        "slots",
        capacity=max(caps) if caps else opts.capacity,
        slot_bytes=_round_slot(max(hinted_sizes)) if hinted_sizes else opts.slot_bytes,
        wait=opts.wait,
    )
    spec_stages = [
        StageSpec(
            name,
            stages[name].op,
            inputs=(RING_LANE,),
            after=(order[i - 1],) if i else (),
            process=_process(opts, stages[name].process, name),
            params=dict(stages[name].params),
        )
        for i, name in enumerate(order)
    ]
    sinks = [
        SinkSpec(
            s.name,
            s.adapter,
            inputs=(RING_LANE,),
            after=(order[-1],) if order else (),
            params=dict(s.params),
        )
        for s in sorted(plan.sinks, key=lambda s: s.name)
    ]
    return PipelineSpecV1.build(
        plan.name,
        "single_ring",
        lanes=[ring],
        stages=spec_stages,
        sources=[SourceSpec(src.name, src.adapter, RING_LANE, dict(src.params))],
        sinks=sinks,
    )


def _lane_graph(plan: PipelinePlanV2, opts: LowerOptions) -> PipelineSpecV1:
    lanes: list[LaneSpec] = []
    producers = [(s.name, s.message_bytes, s.capacity, s.journal) for s in plan.sources]
    producers += [(s.name, s.message_bytes, s.capacity, False) for s in plan.stages]
    source_names = {s.name for s in plan.sources}
    has_lane: set[str] = set()
    index = plan.readers()
    for name, message_bytes, capacity, journal in sorted(producers):
        readers = index.get(name, [])
        if not readers:
            continue
        kind: LaneKind
        if journal or (opts.journal_sources and name in source_names):
            kind = "journal"
        elif len(readers) == 1:
            kind = "events"
        else:
            kind = "fanout"
        lanes.append(
            LaneSpec(
                name,
                kind,
                capacity=capacity if capacity is not None else opts.capacity,
                slot_bytes=(
                    _round_slot(message_bytes) if message_bytes is not None else opts.slot_bytes
                ),
                wait=opts.wait,
            )
        )
        has_lane.add(name)
    stages = [
        StageSpec(
            s.name,
            s.op,
            inputs=s.inputs,
            outputs=(s.name,) if s.name in has_lane else (),
            process=_process(opts, s.process, s.name),
            merge=_merge(s.merge),
            params=dict(s.params),
        )
        for s in sorted(plan.stages, key=lambda s: s.name)
    ]
    sinks = [
        SinkSpec(s.name, s.adapter, inputs=s.inputs, merge=_merge(s.merge), params=dict(s.params))
        for s in sorted(plan.sinks, key=lambda s: s.name)
    ]
    sources = [
        SourceSpec(s.name, s.adapter, s.name, dict(s.params))
        for s in sorted(plan.sources, key=lambda s: s.name)
    ]
    return PipelineSpecV1.build(
        plan.name, "lane_graph", lanes=lanes, stages=stages, sources=sources, sinks=sinks
    )
