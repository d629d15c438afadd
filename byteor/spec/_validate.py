"""Checks on the typed spec: names, ranges, references, the lane rules, cycles, the target.

Theory of operation: a lane connects one producer (a source's ``out`` or a stage's
``out``) to its consumers (the ``in`` of stages and sinks). The checks build that table
once and then walk it; every finding names the key to change and says how. When a
spec came from text, ``lines`` maps keys to lines, and ``skip`` lists keys whose value
already carries a finding (or is missing): their value is not checked again, so one mistake
is reported once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from byteor.spec._capabilities import ADAPTERS, BUILTIN_OPS
from byteor.spec._constants import (
    BACKINGS,
    CRASH_POLICIES,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MERGE,
    DEFAULT_PROCESS,
    DEFAULT_RESTART_BACKOFF_MS,
    LANE_KINDS,
    LANE_POLICIES,
    MAX_CAPACITY,
    MAX_CONSUMERS,
    MAX_NAME_BYTES,
    MAX_RESTART_BACKOFF_MS,
    MAX_RESTARTS_LIMIT,
    MAX_SLOT_BYTES,
    MERGE_ORDERS,
    MIN_CAPACITY,
    MIN_SLOT_BYTES,
    SPEC_VERSION,
    TARGETS,
    WAIT_MODES,
    capacity_ok,
    is_name,
    slot_bytes_ok,
)
from byteor.spec._findings import Finding, did_you_mean, hint, make
from byteor.spec._model import PipelineSpecV1, StageSpec
from byteor.spec._schema import op_syntax_ok

__all__ = ["check_spec", "LaneUse", "lane_uses"]


@dataclass(slots=True)
class LaneUse:
    """Who writes and who reads a lane: ``(role, node, key)`` triples."""

    producers: list[tuple[str, str, str]] = field(default_factory=list)
    consumers: list[tuple[str, str, str]] = field(default_factory=list)


def lane_uses(spec: PipelineSpecV1) -> dict[str, LaneUse]:
    """Producers and consumers of every lane named anywhere (declared or not), by name."""
    uses: dict[str, LaneUse] = {name: LaneUse() for name in spec.lanes}
    for src in spec.sources.values():
        if src.output:
            uses.setdefault(src.output, LaneUse()).producers.append(
                ("source", src.name, f"source.{src.name}.out")
            )
    for st in spec.stages.values():
        for lane in st.outputs:
            uses.setdefault(lane, LaneUse()).producers.append(
                ("stage", st.name, f"stage.{st.name}.out")
            )
        for lane in st.inputs:
            uses.setdefault(lane, LaneUse()).consumers.append(
                ("stage", st.name, f"stage.{st.name}.in")
            )
    for sk in spec.sinks.values():
        for lane in sk.inputs:
            uses.setdefault(lane, LaneUse()).consumers.append(
                ("sink", sk.name, f"sink.{sk.name}.in")
            )
    return uses


def _power_hint(n: int) -> str:
    if n < MIN_CAPACITY:
        return f"use {MIN_CAPACITY} or more"
    if n > MAX_CAPACITY:
        return f"use at most {MAX_CAPACITY}"
    lower = 1 << (n.bit_length() - 1)
    return f"use {lower} or {lower * 2}"


def _slot_hint(n: int) -> str:
    if n < MIN_SLOT_BYTES:
        return f"use at least {MIN_SLOT_BYTES}"
    if n > MAX_SLOT_BYTES:
        return f"use at most {MAX_SLOT_BYTES} (1 MiB); larger messages belong in object storage"
    return f"use {(n + 7) // 8 * 8}"


class _Checker:
    def __init__(
        self,
        spec: PipelineSpecV1,
        lines: Mapping[str, int],
        skip: Iterable[str],
        explicit: Iterable[str] | None,
    ) -> None:
        self.spec = spec
        self.lines = lines
        self.skip = set(skip)
        self.explicit = None if explicit is None else set(explicit)
        self.out: list[Finding] = []
        # First line of each entity ("lane.raw"), for findings about a key that is missing.
        self.entity_lines: dict[str, int] = {}
        for k, v in lines.items():
            segs = k.split(".", 2)
            if len(segs) == 3:
                ent = f"{segs[0]}.{segs[1]}"
                self.entity_lines[ent] = min(v, self.entity_lines.get(ent, v))

    # -- helpers ---------------------------------------------------------------------------

    def line(self, key: str) -> int | None:
        line = self.lines.get(key)
        if line is not None:
            return line
        return self.entity_lines.get(".".join(key.split(".", 2)[:2]))

    def add(self, code: str, key: str, message: str, suggestion: str | None = None) -> None:
        self.out.append(make(code, key, self.line(key), message, suggestion))

    def ok(self, key: str) -> bool:
        return key not in self.skip

    def name(self, what: str, name: str, key: str) -> bool:
        if is_name(name):
            return True
        self.add(
            "SP207",
            key,
            f"{what} name {name!r} is not valid: use letters, digits, _ and -, starting "
            f"with a letter or _, at most {MAX_NAME_BYTES} bytes",
        )
        return False

    def enum(self, key: str, value: str, choices: tuple[str, ...]) -> bool:
        if value in choices:
            return True
        guess = did_you_mean(value.lower(), choices, cutoff=0.5)
        self.add(
            "SP205",
            key,
            f"{key} is {value!r}; use one of {', '.join(choices)}{hint(guess)}",
            guess,
        )
        return False

    def names_list(self, key: str, items: tuple[str, ...], what: str) -> None:
        seen: set[str] = set()
        for item in items:
            self.name(what, item, key)
            if item in seen:
                self.add("SP212", key, f"{key} lists {item!r} twice: list it once")
            seen.add(item)

    # -- checks ----------------------------------------------------------------------------

    def run(self) -> list[Finding]:
        self.top()
        self.lanes()
        self.nodes()
        self.references()
        self.lane_rules()
        self.after_rules()
        self.cycles()
        if self.spec.target == "single_ring" and self.ok("pipeline.target"):
            self.single_ring()
        self.crash_policies()
        return self.out

    def top(self) -> None:
        s = self.spec
        if s.version != SPEC_VERSION:
            self.add(
                "SP206",
                "byteor.spec",
                f"spec version {s.version} is not supported: this byteor reads version "
                f"{SPEC_VERSION}; set `byteor.spec = {SPEC_VERSION}` or upgrade byteor",
            )
        if self.ok("pipeline.name"):
            self.name("pipeline", s.name, "pipeline.name")
        if self.ok("pipeline.target"):
            self.enum("pipeline.target", s.target, TARGETS)
        if not s.sources:
            self.add(
                "SP319",
                "source",
                "the pipeline has no source: add source.<name>.adapter and source.<name>.out",
            )

    def lanes(self) -> None:
        for lane in self.spec.lanes.values():
            p = f"lane.{lane.name}"
            self.name("lane", lane.name, p)
            kind_ok = self.ok(f"{p}.kind") and self.enum(f"{p}.kind", lane.kind, LANE_KINDS)
            if self.ok(f"{p}.capacity") and not capacity_ok(lane.capacity):
                self.add(
                    "SP210",
                    f"{p}.capacity",
                    f"capacity {lane.capacity} must be a power of two from {MIN_CAPACITY} to "
                    f"{MAX_CAPACITY}: {_power_hint(lane.capacity)}",
                )
            if self.ok(f"{p}.slot_bytes") and not slot_bytes_ok(lane.slot_bytes):
                self.add(
                    "SP211",
                    f"{p}.slot_bytes",
                    f"slot_bytes {lane.slot_bytes} must be a multiple of 8 from "
                    f"{MIN_SLOT_BYTES} to {MAX_SLOT_BYTES}: {_slot_hint(lane.slot_bytes)}",
                )
            policy_ok = self.enum(f"{p}.policy", lane.policy, LANE_POLICIES)
            self.enum(f"{p}.wait", lane.wait, WAIT_MODES)
            backing_ok = self.enum(f"{p}.backing", lane.backing, BACKINGS)
            if (
                kind_ok
                and policy_ok
                and lane.policy == "overwrite"
                and lane.kind
                not in (
                    "fanout",
                    "journal",
                )
            ):
                self.add(
                    "SP308",
                    f"{p}.policy",
                    f"an {lane.kind} lane never overwrites (it is lossless): remove "
                    f"{p}.policy, or use a fanout or journal lane",
                )
            if kind_ok and backing_ok and lane.backing == "file" and lane.kind != "journal":
                self.add(
                    "SP308",
                    f"{p}.backing",
                    f"only a journal lane can be file-backed: remove {p}.backing, "
                    "or make the lane a journal",
                )

    def nodes(self) -> None:
        s = self.spec
        owners: dict[str, str] = {}
        for kind, names in (("source", s.sources), ("stage", s.stages), ("sink", s.sinks)):
            for name in names:
                if name in owners:
                    self.add(
                        "SP312",
                        f"{kind}.{name}",
                        f"{name!r} names both a {owners[name]} and a {kind}: rename one, "
                        "node names are shared by sources, stages and sinks",
                    )
                owners.setdefault(name, kind)
        for st in s.stages.values():
            p = f"stage.{st.name}"
            self.name("stage", st.name, p)
            if self.ok(f"{p}.op"):
                if not op_syntax_ok(st.op):
                    self.add(
                        "SP203",
                        f"{p}.op",
                        f"op {st.op!r} is neither a built-in op ({', '.join(BUILTIN_OPS)}) "
                        "nor `package.module:function`",
                    )
                elif ":" not in st.op and st.op not in BUILTIN_OPS:
                    guess = did_you_mean(st.op, BUILTIN_OPS, cutoff=0.6)
                    self.add(
                        "SP313",
                        f"{p}.op",
                        f"op {st.op!r} is not a built-in op{hint(guess)}; it must be "
                        "registered as an entry point in group `byteor.ops`",
                        guess,
                    )
            self.names_list(f"{p}.in", st.inputs, "lane")
            self.names_list(f"{p}.out", st.outputs, "lane")
            self.names_list(f"{p}.after", st.after, "stage")
            self.name("process", st.process, f"{p}.process")
            self.merge(p, st.merge, len(st.inputs))
        for src in s.sources.values():
            p = f"source.{src.name}"
            self.name("source", src.name, p)
            self.adapter(p, src.adapter, "source")
            if self.ok(f"{p}.out"):
                self.name("lane", src.output, f"{p}.out")
        for sk in s.sinks.values():
            p = f"sink.{sk.name}"
            self.name("sink", sk.name, p)
            self.adapter(p, sk.adapter, "sink")
            self.names_list(f"{p}.in", sk.inputs, "lane")
            self.names_list(f"{p}.after", sk.after, "stage")
            self.merge(p, sk.merge, len(sk.inputs))

    def merge(self, p: str, merge: str, inputs: int) -> None:
        if not self.enum(f"{p}.merge", merge, MERGE_ORDERS):
            return
        if inputs == 1 and merge != DEFAULT_MERGE:
            self.add(
                "SP317",
                f"{p}.merge",
                f"{p}.merge only applies with two or more inputs: remove it, or add inputs",
            )

    def adapter(self, p: str, adapter: str, role: str) -> None:
        key = f"{p}.adapter"
        if not self.ok(key) or not self.name("adapter", adapter, key):
            return
        caps = ADAPTERS.get(adapter)
        if caps is None:
            guess = did_you_mean(adapter, ADAPTERS, cutoff=0.6)
            self.add(
                "SP314",
                key,
                f"adapter {adapter!r} is not a known adapter{hint(guess)}; a third-party "
                "adapter must be installed under the `byteor.adapters` entry-point group",
                guess,
            )
            return
        if (role == "source" and caps.source is None) or (role == "sink" and caps.sink is None):
            roles = "a source" if caps.source is not None else "a sink"
            self.add(
                "SP315",
                key,
                f"adapter {adapter!r} can only be {roles}, not a {role}",
            )

    def references(self) -> None:
        s = self.spec
        lanes = list(s.lanes)

        def lane_ref(key: str, lane: str) -> None:
            if lane and lane not in s.lanes and is_name(lane):
                guess = did_you_mean(lane, lanes)
                self.add(
                    "SP301",
                    key,
                    f"lane {lane!r} is not declared{hint(guess)}: add lane.{lane}.kind, "
                    f"lane.{lane}.capacity and lane.{lane}.slot_bytes, or fix the name",
                    guess,
                )

        for src in s.sources.values():
            if self.ok(f"source.{src.name}.out"):
                lane_ref(f"source.{src.name}.out", src.output)
        for st in s.stages.values():
            for lane in st.inputs:
                lane_ref(f"stage.{st.name}.in", lane)
            for lane in st.outputs:
                lane_ref(f"stage.{st.name}.out", lane)
        for sk in s.sinks.values():
            for lane in sk.inputs:
                lane_ref(f"sink.{sk.name}.in", lane)
        for role, nodes in (("stage", s.stages), ("sink", s.sinks)):
            for node in nodes.values():
                for other in node.after:
                    if other not in s.stages and is_name(other):
                        guess = did_you_mean(other, s.stages)
                        self.add(
                            "SP310",
                            f"{role}.{node.name}.after",
                            f"{role}.{node.name}.after names {other!r}, which is not a "
                            f"stage{hint(guess)}",
                            guess,
                        )

    def lane_rules(self) -> None:
        s = self.spec
        for name, use in sorted(lane_uses(s).items()):
            lane = s.lanes.get(name)
            if lane is None:
                continue
            p = f"lane.{name}"
            kind_known = self.ok(f"{p}.kind") and lane.kind in LANE_KINDS
            if not use.producers:
                self.add(
                    "SP302",
                    f"{p}.kind",
                    f"lane {name!r} has no producer: set `out = {name}` on a source or "
                    "stage, or remove the lane",
                )
            for _, node, key in use.producers[1:]:
                first = use.producers[0]
                self.add(
                    "SP303",
                    key,
                    f"lane {name!r} is already written by {first[0]} {first[1]!r}; a lane "
                    f"has one producer: give {node!r} its own lane and merge them in the "
                    "consumer (`in = a, b`)",
                )
            if not use.consumers:
                self.add(
                    "SP304",
                    f"{p}.kind",
                    f"lane {name!r} has no consumer: add `in = {name}` to a stage or sink, "
                    "or remove the lane",
                )
            if kind_known and lane.kind == "events" and len(use.consumers) > 1:
                readers = ", ".join(repr(n) for _, n, _ in use.consumers)
                self.add(
                    "SP305",
                    f"{p}.kind",
                    f"events lane {name!r} has one consumer but is read by {readers}: "
                    "make it a fanout lane (every reader sees every message)",
                )
            if len(use.consumers) > MAX_CONSUMERS:
                self.add(
                    "SP316",
                    f"{p}.kind",
                    f"lane {name!r} has {len(use.consumers)} consumers, more than "
                    f"{MAX_CONSUMERS}: split them over several fanout lanes",
                )
            if (
                kind_known
                and lane.kind == "fanout"
                and len(use.consumers) == 1
                and s.target == "lane_graph"
            ):
                self.add(
                    "SP318",
                    f"{p}.kind",
                    f"fanout lane {name!r} has a single consumer: an events lane is cheaper",
                )

    def after_rules(self) -> None:
        s = self.spec
        reads: dict[str, set[str]] = {}
        for st in s.stages.values():
            reads[st.name] = set(st.inputs)
        for role, nodes in (("stage", s.stages), ("sink", s.sinks)):
            for node in nodes.values():
                key = f"{role}.{node.name}.after"
                mine = {
                    lane
                    for lane in node.inputs
                    if lane in s.lanes and s.lanes[lane].kind == "slots"
                }
                for other in node.after:
                    if other == node.name:
                        self.add("SP306", key, f"{node.name!r} cannot come after itself")
                        continue
                    if other not in s.stages:
                        continue
                    if not mine & reads[other]:
                        self.add(
                            "SP309",
                            key,
                            f"{role} {node.name!r} comes after {other!r}, but they share no "
                            "slots lane: `after` orders consumers of one slots lane; remove it "
                            "or read the same slots lane",
                        )

    def cycles(self) -> None:
        s = self.spec
        edges: dict[str, set[str]] = {}
        producers: dict[str, list[str]] = {}
        for st in s.stages.values():
            for lane in st.outputs:
                producers.setdefault(lane, []).append(st.name)
        for st in s.stages.values():
            edges.setdefault(st.name, set())
            for lane in st.inputs:
                for prod in producers.get(lane, []):
                    edges.setdefault(prod, set()).add(st.name)
            for other in st.after:
                if other in s.stages and other != st.name:
                    edges.setdefault(other, set()).add(st.name)
        reported: set[frozenset[str]] = set()
        state: dict[str, int] = {}
        for start in sorted(edges):
            if state.get(start):
                continue
            stack: list[tuple[str, list[str]]] = [(start, sorted(edges.get(start, ())))]
            path = [start]
            state[start] = 1
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
                    members = frozenset(cycle)
                    if members not in reported:
                        reported.add(members)
                        first = min(cycle)
                        i = cycle.index(first)
                        ring = [*cycle[i:], *cycle[:i], first]
                        self.add(
                            "SP306",
                            f"stage.{first}.in",
                            f"stages form a cycle: {' -> '.join(ring)}; a pipeline is a "
                            "graph without loops, break the cycle",
                        )
                elif not state.get(nxt):
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, sorted(edges.get(nxt, ()))))

    def crash_policies(self) -> None:
        """``on_crash`` and its settings: values, and what a restart can work with.

        A worker process restarts as a whole, so its stages share one policy; the ``main``
        process is the supervisor itself; a restarted stage resumes from the positions its
        inputs hold for it, which overwrite (best-effort) lanes do not keep.
        """
        s = self.spec
        by_process: dict[str, list[str]] = {}
        for st in s.stages.values():
            p = f"stage.{st.name}"
            if not self.ok(f"{p}.on_crash") or not self.enum(
                f"{p}.on_crash", st.on_crash, CRASH_POLICIES
            ):
                continue
            for key, value, low, high, default in (
                (f"{p}.max_restarts", st.max_restarts, 1, MAX_RESTARTS_LIMIT, DEFAULT_MAX_RESTARTS),
                (
                    f"{p}.restart_backoff_ms",
                    st.restart_backoff_ms,
                    0,
                    MAX_RESTART_BACKOFF_MS,
                    DEFAULT_RESTART_BACKOFF_MS,
                ),
            ):
                if not self.ok(key):
                    continue
                if not low <= value <= high:
                    self.add("SP213", key, f"{key} is {value}: use {low} to {high}")
                elif st.on_crash != "restart" and value != default:
                    self.add(
                        "SP322",
                        key,
                        f"{key} only applies with `{p}.on_crash = restart`: remove it, or "
                        "set on_crash",
                    )
            if st.on_crash != "restart":
                by_process.setdefault(st.process, []).append(st.name)
                continue
            by_process.setdefault(st.process, []).append(st.name)
            if s.target == "single_ring":
                self.add(
                    "SP407",
                    f"{p}.on_crash",
                    "SingleRing does not restart stage processes: remove "
                    f"{p}.on_crash, or use target lane_graph",
                )
            elif st.process == DEFAULT_PROCESS:
                self.add(
                    "SP321",
                    f"{p}.on_crash",
                    f"stage {st.name!r} runs in the main process, the supervisor, which "
                    f"cannot restart itself: set {p}.process = <a worker name> to restart it",
                )
            lossy = [
                lane
                for lane in st.inputs
                if lane in s.lanes and s.lanes[lane].policy == "overwrite"
            ]
            if lossy:
                self.add(
                    "SP323",
                    f"{p}.on_crash",
                    f"stage {st.name!r} reads overwrite lane {', '.join(lossy)}: a restarted "
                    "stage resumes where its inputs say it was, and an overwrite reader has no "
                    "such place; use policy block on the lane, or on_crash = fail",
                )
        for process, names in sorted(by_process.items()):
            if process == DEFAULT_PROCESS or len(names) < 2:
                continue
            want = _crash_policy(s.stages[names[0]])
            for name in names[1:]:
                if _crash_policy(s.stages[name]) != want:
                    self.add(
                        "SP320",
                        f"stage.{name}.on_crash",
                        f"stages {names[0]!r} and {name!r} share process {process!r} but not "
                        "its crash policy: a process restarts as a whole; give them the same "
                        "on_crash, max_restarts and restart_backoff_ms",
                    )

    def single_ring(self) -> None:
        s = self.spec
        if len(s.lanes) != 1 or any(lane.kind != "slots" for lane in s.lanes.values()):
            kinds = ", ".join(f"{n} ({lane.kind})" for n, lane in sorted(s.lanes.items()))
            self.add(
                "SP401",
                "pipeline.target",
                "a single_ring pipeline runs on exactly one lane of kind slots; this spec "
                f"has {kinds or 'none'}: use target lane_graph, or one slots lane",
            )
        if len(s.sources) != 1:
            self.add(
                "SP402",
                "pipeline.target",
                f"a single_ring pipeline has exactly one source, this one has "
                f"{len(s.sources)}: use target lane_graph",
            )
        for st in s.stages.values():
            if st.outputs:
                self.add(
                    "SP403",
                    f"stage.{st.name}.out",
                    "single_ring stages transform the ring's slots in place: remove "
                    f"stage.{st.name}.out and order stages with `after`",
                )
        heads = sorted(n for n, st in s.stages.items() if not st.after)
        followers: dict[str, list[str]] = {}
        for st in s.stages.values():
            if len(st.after) > 1:
                self.add(
                    "SP404",
                    f"stage.{st.name}.after",
                    f"stage {st.name!r} follows several stages; single_ring is one chain: "
                    "use lane_graph for a diamond",
                )
            for other in st.after:
                followers.setdefault(other, []).append(st.name)
        if s.stages and len(heads) != 1:
            self.add(
                "SP404",
                "pipeline.target",
                f"single_ring stages form one chain with one first stage; first stages now: "
                f"{', '.join(heads) or 'none'}: give each stage but the first `after = <previous>`",
            )
        for other, unsorted in sorted(followers.items()):
            after_it = sorted(unsorted)
            if len(after_it) > 1:
                self.add(
                    "SP404",
                    f"stage.{after_it[1]}.after",
                    f"stages {', '.join(sorted(after_it))} all follow {other!r}: a single "
                    "ring is one chain; use lane_graph to branch",
                )
        last = [n for n in s.stages if n not in followers]
        for sk in s.sinks.values():
            if s.stages and (len(last) != 1 or tuple(last) != sk.after):
                target = last[0] if len(last) == 1 else "<last stage>"
                self.add(
                    "SP405",
                    f"sink.{sk.name}.after",
                    f"sink {sk.name!r} must read the ring after its last stage: set "
                    f"`sink.{sk.name}.after = {target}`",
                )


def _crash_policy(st: StageSpec) -> tuple[object, ...]:
    """What a stage asks of its process when it dies (settings of ``fail`` do not matter)."""
    if st.on_crash != "restart":
        return (st.on_crash,)
    return (st.on_crash, st.max_restarts, st.restart_backoff_ms)


def check_spec(
    spec: PipelineSpecV1,
    lines: Mapping[str, int] | None = None,
    skip: Iterable[str] = (),
    explicit: Iterable[str] | None = None,
) -> list[Finding]:
    """Every finding about a typed spec (names, ranges, references, graph, target)."""
    return _Checker(spec, lines or {}, skip, explicit).run()
