"""Can a running pipeline of spec A move to spec B in place?

In place means: the lane segments stay (so their geometry must not change and none may
disappear), no record in flight meets different code, and upstream positions still map to
the same adapters. Anything else is a blocker: drain the pipeline and start B fresh.
Changes that only restart a process (parameters, placement, wait strategy, crash policy) are
notes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from byteor.spec._model import PipelineSpecV1

__all__ = ["CompatibilityReason", "CompatibilityReport", "check_compatibility"]

Impact = Literal["blocker", "note"]


@dataclass(frozen=True, slots=True)
class CompatibilityReason:
    """One reason: a stable ``code``, ``blocker`` or ``note``, the key and what it means."""

    code: str
    impact: Impact
    key: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "impact": self.impact, "key": self.key, "message": self.message}


@dataclass(frozen=True, slots=True)
class CompatibilityReport:
    """All reasons; compatible when none is a blocker."""

    reasons: tuple[CompatibilityReason, ...]

    @property
    def compatible(self) -> bool:
        return all(r.impact != "blocker" for r in self.reasons)

    def to_dict(self) -> dict[str, object]:
        return {"compatible": self.compatible, "reasons": [r.to_dict() for r in self.reasons]}


def _producer(spec: PipelineSpecV1, lane: str) -> str | None:
    for src in spec.sources.values():
        if src.output == lane:
            return f"source {src.name}"
    for st in spec.stages.values():
        if lane in st.outputs:
            return f"stage {st.name}"
    return None


def check_compatibility(a: PipelineSpecV1, b: PipelineSpecV1) -> CompatibilityReport:
    """Every reason why ``b`` can or cannot replace a running ``a`` in place."""
    out: list[CompatibilityReason] = []

    def add(code: str, impact: Impact, key: str, message: str) -> None:
        out.append(CompatibilityReason(code, impact, key, message))

    if a.name != b.name:
        add(
            "CP101",
            "blocker",
            "pipeline.name",
            f"pipeline renamed {a.name!r} -> {b.name!r}: lane segments are named after the "
            "pipeline, so B would start on new, empty lanes",
        )
    if a.target != b.target:
        add(
            "CP102",
            "blocker",
            "pipeline.target",
            f"target changed {a.target} -> {b.target}: a different executor runs B",
        )

    removed = sorted(set(a.lanes) - set(b.lanes))
    added = sorted(set(b.lanes) - set(a.lanes))
    renamed: dict[str, str] = {}
    for old in removed:
        la = a.lanes[old]
        for new in added:
            lb = b.lanes[new]
            if new in renamed.values():
                continue
            same_shape = (la.kind, la.capacity, la.slot_bytes) == (
                lb.kind,
                lb.capacity,
                lb.slot_bytes,
            )
            if same_shape and _producer(a, old) == _producer(b, new):
                renamed[old] = new
                break
    for old in removed:
        if old in renamed:
            add(
                "CP111",
                "blocker",
                f"lane.{old}",
                f"lane {old!r} looks renamed to {renamed[old]!r}: records in flight stay in "
                f"{old!r}; drain it first, or keep the old name",
            )
        else:
            add(
                "CP110",
                "blocker",
                f"lane.{old}",
                f"lane {old!r} is removed: records in flight in it would be lost; drain it first",
            )
    for new in added:
        if new not in renamed.values():
            add("CP114", "note", f"lane.{new}", f"lane {new!r} is added (created at start)")
    for name in sorted(set(a.lanes) & set(b.lanes)):
        la, lb = a.lanes[name], b.lanes[name]
        for attr in ("kind", "capacity", "slot_bytes", "backing"):
            va, vb = getattr(la, attr), getattr(lb, attr)
            if va != vb:
                add(
                    "CP112",
                    "blocker",
                    f"lane.{name}.{attr}",
                    f"lane {name!r} {attr} changes {va} -> {vb}: the segment's geometry is "
                    "fixed at creation; drain the lane and recreate it",
                )
        for attr in ("policy", "wait"):
            va, vb = getattr(la, attr), getattr(lb, attr)
            if va != vb:
                add(
                    "CP113",
                    "note",
                    f"lane.{name}.{attr}",
                    f"lane {name!r} {attr} changes {va} -> {vb}: its consumers re-register",
                )

    for name in sorted(set(a.stages) - set(b.stages)):
        add(
            "CP121",
            "blocker",
            f"stage.{name}",
            f"stage {name!r} is removed: what it has not processed yet would be lost",
        )
    for name in sorted(set(b.stages) - set(a.stages)):
        add("CP125", "note", f"stage.{name}", f"stage {name!r} is added")
    for name in sorted(set(a.stages) & set(b.stages)):
        sa, sb = a.stages[name], b.stages[name]
        p = f"stage.{name}"
        if sa.op != sb.op:
            add(
                "CP120",
                "blocker",
                f"{p}.op",
                f"stage {name!r} op changes {sa.op} -> {sb.op}: records in flight and replays "
                "would meet different code; deploy B as a new version",
            )
        for attr, word in (("inputs", "in"), ("outputs", "out"), ("after", "after")):
            va, vb = getattr(sa, attr), getattr(sb, attr)
            if va != vb:
                add(
                    "CP122",
                    "blocker",
                    f"{p}.{word}",
                    f"stage {name!r} is rewired ({word}: {', '.join(va) or '-'} -> "
                    f"{', '.join(vb) or '-'}): consumer positions do not carry over",
                )
        if sa.process != sb.process:
            add(
                "CP123",
                "note",
                f"{p}.process",
                f"stage {name!r} moves from process {sa.process} to {sb.process}: both restart",
            )
        if sa.merge != sb.merge:
            add(
                "CP126",
                "note",
                f"{p}.merge",
                f"stage {name!r} merge changes {sa.merge} -> {sb.merge}: output order differs "
                "from here on",
            )
        if dict(sa.params) != dict(sb.params):
            add("CP124", "note", f"{p}.param", f"stage {name!r} parameters change: it restarts")
        crash_a = (sa.on_crash, sa.max_restarts, sa.restart_backoff_ms)
        crash_b = (sb.on_crash, sb.max_restarts, sb.restart_backoff_ms)
        if crash_a != crash_b:
            add(
                "CP127",
                "note",
                f"{p}.on_crash",
                f"stage {name!r} crash policy changes {'/'.join(map(str, crash_a))} -> "
                f"{'/'.join(map(str, crash_b))}: its supervisor restarts",
            )

    for role, xa, xb in (("source", a.sources, b.sources), ("sink", a.sinks, b.sinks)):
        for name in sorted(set(xa) - set(xb)):
            add(
                "CP131",
                "blocker",
                f"{role}.{name}",
                f"{role} {name!r} is removed: its unconfirmed records would be lost",
            )
        for name in sorted(set(xb) - set(xa)):
            add("CP134", "note", f"{role}.{name}", f"{role} {name!r} is added")
        for name in sorted(set(xa) & set(xb)):
            na, nb = xa[name], xb[name]
            p = f"{role}.{name}"
            if na.adapter != nb.adapter:
                add(
                    "CP130",
                    "blocker",
                    f"{p}.adapter",
                    f"{role} {name!r} adapter changes {na.adapter} -> {nb.adapter}: upstream "
                    "positions do not carry over",
                )
            wa = getattr(na, "output", None) or getattr(na, "inputs", None)
            wb = getattr(nb, "output", None) or getattr(nb, "inputs", None)
            if wa != wb:
                add(
                    "CP132",
                    "blocker",
                    p,
                    f"{role} {name!r} is rewired to other lanes: positions do not carry over",
                )
            if dict(na.params) != dict(nb.params):
                add(
                    "CP133",
                    "note",
                    f"{p}.param",
                    f"{role} {name!r} parameters change: the adapter reconnects",
                )
    return CompatibilityReport(tuple(out))
