"""PipelinePlanV2: what an author writes. Nodes and their inputs; lanes are implied.

A plan names sources, stages and sinks and, for each stage and sink, the nodes it reads
from (``inputs``). Everything the author does not care about is left out: lane kinds,
capacities, slot sizes and placement are chosen by lowering (``byteor.lower``), guided by
optional hints (``message_bytes``, ``capacity``, ``journal``, ``process``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "PLAN_VERSION",
    "PlanSeverity",
    "PlanFinding",
    "PlanSource",
    "PlanStage",
    "PlanSink",
    "PipelinePlanV2",
]

PLAN_VERSION: Final = 2

PlanSeverity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class PlanFinding:
    """One problem in a plan; the same fields as a spec finding.

    Attributes:
        code: stable identifier, e.g. ``"PL301"``.
        severity: ``"error"`` or ``"warning"``.
        key: the dotted TOML key it is about (``stages.enrich.inputs``), "" for the file.
        line: 1-based line in the TOML text, ``None`` when unknown (built in code).
        message: what is wrong and what to do.
        suggestion: the "did you mean" candidate, when there is one.
    """

    code: str
    severity: PlanSeverity
    key: str
    line: int | None
    message: str
    suggestion: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity,
            "key": self.key,
            "line": self.line,
            "message": self.message,
            "suggestion": self.suggestion,
        }

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "-"
        key = f" {self.key}:" if self.key else ""
        return f"{where}: {self.severity} {self.code}:{key} {self.message}"


@dataclass(frozen=True, slots=True)
class PlanSource:
    """An ingress adapter.

    Attributes:
        name: node name.
        adapter: adapter name (``kafka``, ``file``, ...).
        params: adapter parameters, as text.
        message_bytes: largest record it emits (sizes its lane's slots).
        capacity: slots of its output lane (a power of two).
        journal: journal what it admits (a journal lane, the source of replay).
    """

    name: str
    adapter: str
    params: Mapping[str, str] = field(default_factory=dict)
    message_bytes: int | None = None
    capacity: int | None = None
    journal: bool = False


@dataclass(frozen=True, slots=True)
class PlanStage:
    """A processing step.

    Attributes:
        name: node name.
        op: a built-in op or ``module:function``.
        inputs: the nodes it reads, in merge order.
        params: parameters for the op, as text.
        process: the process to run in (``None``: lowering decides).
        message_bytes: largest record it emits.
        capacity: slots of its output lane.
        merge: ``round_robin`` or ``ready`` when it has several inputs.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    params: Mapping[str, str] = field(default_factory=dict)
    process: str | None = None
    message_bytes: int | None = None
    capacity: int | None = None
    merge: str | None = None


@dataclass(frozen=True, slots=True)
class PlanSink:
    """An egress adapter reading one or more nodes."""

    name: str
    adapter: str
    inputs: tuple[str, ...]
    params: Mapping[str, str] = field(default_factory=dict)
    merge: str | None = None


@dataclass(frozen=True, slots=True)
class PipelinePlanV2:
    """A whole plan. Nodes keep the order they were written in."""

    name: str
    sources: tuple[PlanSource, ...] = ()
    stages: tuple[PlanStage, ...] = ()
    sinks: tuple[PlanSink, ...] = ()
    version: int = PLAN_VERSION

    def node_names(self) -> list[str]:
        return [
            *(n.name for n in self.sources),
            *(n.name for n in self.stages),
            *(n.name for n in self.sinks),
        ]

    def readers(self) -> dict[str, list[str]]:
        """Node name -> the stages and sinks that read it, sorted (one pass over the plan)."""
        out: dict[str, set[str]] = {}
        for stage in self.stages:
            for item in stage.inputs:
                out.setdefault(item, set()).add(stage.name)
        for sink in self.sinks:
            for item in sink.inputs:
                out.setdefault(item, set()).add(sink.name)
        return {k: sorted(v) for k, v in out.items()}

    def consumers_of(self, name: str) -> list[str]:
        """Stages and sinks that read ``name``, sorted by name."""
        readers = [s.name for s in self.stages if name in s.inputs]
        readers += [s.name for s in self.sinks if name in s.inputs]
        return sorted(readers)
