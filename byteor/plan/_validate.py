"""validate_plan_v2: the same kind of findings as the spec, about the authoring model."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Final, Protocol

from byteor.plan._model import PLAN_VERSION, PipelinePlanV2, PlanFinding, PlanSeverity

__all__ = ["PLAN_CODES", "validate_plan_v2", "plan_finding", "close_match", "is_plan_name"]

PLAN_CODES: Final[dict[str, tuple[PlanSeverity, str]]] = {
    "PL101": ("error", "input is not readable text"),
    "PL102": ("error", "TOML syntax error"),
    "PL201": ("error", "unknown key"),
    "PL202": ("error", "missing required key"),
    "PL203": ("error", "value has the wrong type"),
    "PL204": ("error", "value out of range"),
    "PL205": ("error", "unsupported plan version"),
    "PL206": ("error", "value is not one of the allowed words"),
    "PL207": ("error", "invalid name"),
    "PL301": ("error", "input names an unknown node"),
    "PL302": ("error", "name used by two nodes"),
    "PL303": ("error", "source is read by nothing"),
    "PL304": ("error", "cycle"),
    "PL305": ("error", "node has no inputs"),
    "PL306": ("error", "merge set on a single input"),
    "PL307": ("error", "input names a sink"),
    "PL308": ("error", "input listed twice"),
    "PL309": ("error", "plan has no source"),
}

_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_MAX_NAME_BYTES: Final = 48
_BUILTIN_OP_RE: Final = re.compile(r"[a-z_][a-z0-9_]*", re.ASCII)
MERGE_WORDS: Final = ("round_robin", "ready")


def plan_finding(
    code: str, key: str, line: int | None, message: str, suggestion: str | None = None
) -> PlanFinding:
    return PlanFinding(code, PLAN_CODES[code][0], key, line, message, suggestion)


def close_match(word: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return found[0] if found else None


def is_plan_name(text: str) -> bool:
    return _NAME_RE.fullmatch(text) is not None and len(text.encode()) <= _MAX_NAME_BYTES


def _op_ok(op: str) -> bool:
    if ":" not in op:
        return _BUILTIN_OP_RE.fullmatch(op) is not None
    module, _, func = op.partition(":")
    return all(p.isidentifier() and p.isascii() for p in [*module.split("."), *func.split(".")])


def validate_plan_v2(
    plan: PipelinePlanV2, lines: Mapping[str, int] | None = None
) -> list[PlanFinding]:
    """Every finding about a plan: names, references, merges, hints, cycles.

    Args:
        plan: the plan.
        lines: dotted TOML key -> line, when the plan came from a file.
    """
    where = lines or {}
    out: list[PlanFinding] = []

    def add(code: str, key: str, message: str, suggestion: str | None = None) -> None:
        line = where.get(key)
        if line is None:
            line = where.get(key.rsplit(".", 1)[0]) if "." in key else None
        out.append(plan_finding(code, key, line, message, suggestion))

    def name(what: str, value: str, key: str) -> None:
        if not is_plan_name(value):
            add(
                "PL207",
                key,
                f"{what} name {value!r} is not valid: use letters, digits, _ and -, starting "
                f"with a letter or _, at most {_MAX_NAME_BYTES} bytes",
            )

    if plan.version != PLAN_VERSION:
        add(
            "PL205",
            "version",
            f"plan version {plan.version} is not supported: this byteor reads version "
            f"{PLAN_VERSION}; set `version = {PLAN_VERSION}` or leave it out",
        )
    name("plan", plan.name, "name")
    if not plan.sources:
        add("PL309", "sources", "the plan has no source: add a [sources.<name>] table")

    kinds: dict[str, str] = {}
    for table, nodes in (
        ("sources", plan.sources),
        ("stages", plan.stages),
        ("sinks", plan.sinks),
    ):
        for node in nodes:
            key = f"{table}.{node.name}"
            name(table[:-1], node.name, key)
            if node.name in kinds:
                add(
                    "PL302",
                    key,
                    f"{node.name!r} names both a {kinds[node.name][:-1]} and a {table[:-1]}: "
                    "rename one, node names are shared",
                )
            kinds.setdefault(node.name, table)

    readers = _readers(plan)
    for src in plan.sources:
        key = f"sources.{src.name}"
        name("adapter", src.adapter, f"{key}.adapter")
        _hints(add, key, src.message_bytes, src.capacity)
        if not readers.get(src.name):
            add(
                "PL303",
                key,
                f"nothing reads source {src.name!r}: add it to the inputs of a stage or sink",
            )

    for stage in plan.stages:
        key = f"stages.{stage.name}"
        if not _op_ok(stage.op):
            add(
                "PL203",
                f"{key}.op",
                f"op {stage.op!r} is neither a built-in op nor `package.module:function`",
            )
        if stage.process is not None:
            name("process", stage.process, f"{key}.process")
        _hints(add, key, stage.message_bytes, stage.capacity)
        _inputs(add, plan, kinds, key, stage.name, stage.inputs, stage.merge)
    for sink in plan.sinks:
        key = f"sinks.{sink.name}"
        name("adapter", sink.adapter, f"{key}.adapter")
        _inputs(add, plan, kinds, key, sink.name, sink.inputs, sink.merge)

    _cycles(add, plan)
    return out


def _hints(add: _Add, key: str, message_bytes: int | None, capacity: int | None) -> None:
    if message_bytes is not None and message_bytes < 1:
        add("PL204", f"{key}.message_bytes", "message_bytes must be 1 or more")
    if capacity is not None and (capacity < 2 or capacity & (capacity - 1)):
        lower = 1 << max(1, capacity.bit_length() - 1)
        add(
            "PL204",
            f"{key}.capacity",
            f"capacity {capacity} must be a power of two, 2 or more: use {lower} or {lower * 2}",
        )


class _Add(Protocol):
    def __call__(
        self, code: str, key: str, message: str, suggestion: str | None = None
    ) -> None: ...


def _inputs(
    add: _Add,
    plan: PipelinePlanV2,
    kinds: Mapping[str, str],
    key: str,
    me: str,
    inputs: tuple[str, ...],
    merge: str | None,
) -> None:
    if not inputs:
        add("PL305", f"{key}.inputs", f'{me!r} reads nothing: set `inputs = ["<node>"]`')
    seen: set[str] = set()
    for item in inputs:
        if item in seen:
            add("PL308", f"{key}.inputs", f"{item!r} is listed twice in the inputs: list it once")
        seen.add(item)
        kind = kinds.get(item)
        if kind is None:
            guess = close_match(item, [n for n, k in kinds.items() if k != "sinks"])
            more = f" (did you mean {guess!r}?)" if guess else ""
            add(
                "PL301",
                f"{key}.inputs",
                f"input {item!r} is not a source or stage of this plan{more}",
                guess,
            )
        elif kind == "sinks":
            add(
                "PL307",
                f"{key}.inputs",
                f"input {item!r} is a sink, and sinks produce nothing: read its inputs instead",
            )
        elif item == me:
            add("PL304", f"{key}.inputs", f"{me!r} reads itself: remove it from its inputs")
    if merge is not None:
        if merge not in MERGE_WORDS:
            guess = close_match(merge, MERGE_WORDS)
            more = f" (did you mean {guess!r}?)" if guess else ""
            add("PL206", f"{key}.merge", f"merge {merge!r}: use round_robin or ready{more}", guess)
        elif len(inputs) < 2:
            add("PL306", f"{key}.merge", "merge only applies with two or more inputs: remove it")


def _readers(plan: PipelinePlanV2) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    pairs = [(s.name, s.inputs) for s in plan.stages] + [(s.name, s.inputs) for s in plan.sinks]
    for name, inputs in pairs:
        for item in inputs:
            out.setdefault(item, []).append(name)
    return {k: sorted(set(v)) for k, v in out.items()}


def _cycles(add: _Add, plan: PipelinePlanV2) -> None:
    stages = {s.name for s in plan.stages}
    readers = _readers(plan)
    succ = {n: [c for c in readers.get(n, []) if c in stages] for n in stages}
    state: dict[str, int] = {}
    reported: set[frozenset[str]] = set()
    for start in sorted(stages):
        if state.get(start):
            continue
        state[start] = 1
        path = [start]
        stack = [(start, list(succ[start]))]
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = todo.pop(0)
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    first = min(cycle)
                    i = cycle.index(first)
                    ring = [*cycle[i:], *cycle[:i], first]
                    add(
                        "PL304",
                        f"stages.{first}.inputs",
                        f"stages form a cycle: {' -> '.join(ring)}; break it",
                    )
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, list(succ[nxt])))
