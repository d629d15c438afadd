"""A spec as the graph an executor runs: lanes, and nodes in a deterministic order.

``single_ring`` specs run as the equivalent chain: the source, then each stage in ``after``
order, then the sinks, joined by lanes of the ring's geometry (``<ring>.0``, ``<ring>.1``,
...). That gives the same records out as the ring, where stages transform in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from byteor.exec._errors import ExecError, StageConfigError
from byteor.kernel import ErrorPolicy
from byteor.spec import PipelineSpecV1

__all__ = ["LaneDef", "NodeDef", "Graph", "build_graph", "EXEC_PARAMS"]

NodeKind = Literal["source", "stage", "sink"]

#: Stage parameters the executor reads itself (never handed to the op).
EXEC_PARAMS = ("on_error", "error_lane")


@dataclass(frozen=True, slots=True)
class LaneDef:
    name: str
    kind: str
    capacity: int
    slot_bytes: int
    overwrite: bool
    consumers: tuple[str, ...]  # node names, in node order


@dataclass(frozen=True, slots=True)
class NodeDef:
    """A source, stage or sink. ``outputs`` are the op's ports (error lane excluded)."""

    kind: NodeKind
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    op: str = ""  # stages: the op; sources and sinks: the adapter
    merge: str = "round_robin"
    process: str = "main"
    params: Mapping[str, str] = field(default_factory=dict)
    policy: ErrorPolicy = field(default_factory=ErrorPolicy)


@dataclass(frozen=True, slots=True)
class Graph:
    pipeline: str
    target: str
    lanes: Mapping[str, LaneDef]
    nodes: tuple[NodeDef, ...]  # sources, then stages and sinks in flow order

    def node(self, name: str) -> NodeDef:
        return next(n for n in self.nodes if n.name == name)


def _policy(stage: str, params: Mapping[str, str], outputs: tuple[str, ...]) -> ErrorPolicy:
    action = params.get("on_error", "fail")
    lane = params.get("error_lane")
    if action not in ("fail", "skip", "route"):
        raise StageConfigError(
            f"stage {stage!r}: param on_error = {action!r}: use fail, skip or route"
        )
    if action == "route":
        if lane is None:
            raise StageConfigError(
                f"stage {stage!r}: on_error = route needs param error_lane = <one of its outputs>"
            )
        if lane not in outputs:
            raise StageConfigError(
                f"stage {stage!r}: error_lane = {lane!r} is not one of its outputs "
                f"({', '.join(outputs) or 'none'}): add it to stage.{stage}.out"
            )
        return ErrorPolicy("route", lane)
    if lane is not None:
        raise StageConfigError(f"stage {stage!r}: error_lane is for on_error = route")
    return ErrorPolicy(action)  # type: ignore[arg-type]


def _flow_order(nodes: list[NodeDef]) -> tuple[NodeDef, ...]:
    """Topological order (producers before consumers), ties by kind then name."""
    rank = {"source": 0, "stage": 1, "sink": 2}
    producer: dict[str, str] = {}
    for n in nodes:
        for lane in n.outputs:
            producer[lane] = n.name
        if n.policy.lane is not None:
            producer[n.policy.lane] = n.name
    deps = {n.name: {producer[i] for i in n.inputs if i in producer} for n in nodes}
    by_name = {n.name: n for n in nodes}
    done: list[NodeDef] = []
    placed: set[str] = set()
    while len(done) < len(nodes):
        ready = sorted(
            (by_name[name] for name, d in deps.items() if name not in placed and d <= placed),
            key=lambda n: (rank[n.kind], n.name),
        )
        if not ready:
            raise ExecError("the graph has a cycle; validate the spec first")
        done.append(ready[0])
        placed.add(ready[0].name)
    return tuple(done)


def build_graph(spec: PipelineSpecV1) -> Graph:
    """The runnable graph of a valid spec.

    Raises:
        StageConfigError: a stage's error policy does not fit its outputs.
        ExecError: something the executors cannot run (a slots lane in a lane_graph).
    """
    if spec.target == "single_ring":
        return _ring_graph(spec)
    nodes: list[NodeDef] = []
    for src in spec.sources.values():
        nodes.append(NodeDef("source", src.name, (), (src.output,), src.adapter, params=src.params))
    for st in spec.stages.values():
        policy = _policy(st.name, st.params, st.outputs)
        ports = tuple(o for o in st.outputs if o != policy.lane)
        params = {k: v for k, v in st.params.items() if k not in EXEC_PARAMS}
        nodes.append(
            NodeDef("stage", st.name, st.inputs, ports, st.op, st.merge, st.process, params, policy)
        )
    for sk in spec.sinks.values():
        nodes.append(
            NodeDef("sink", sk.name, sk.inputs, (), sk.adapter, sk.merge, params=sk.params)
        )
    ordered = _flow_order(nodes)
    lanes: dict[str, LaneDef] = {}
    for name in sorted(spec.lanes):
        lane = spec.lanes[name]
        if lane.kind == "slots":
            raise ExecError(
                f"lane {name!r} is a slots lane in a lane_graph: LaneGraph runs events, "
                "fanout and journal lanes (lower the plan again, or use target single_ring)"
            )
        consumers = tuple(n.name for n in ordered if name in n.inputs)
        lanes[name] = LaneDef(
            name, lane.kind, lane.capacity, lane.slot_bytes, lane.policy == "overwrite", consumers
        )
    return Graph(spec.name, spec.target, lanes, ordered)


def _ring_graph(spec: PipelineSpecV1) -> Graph:
    (ring,) = spec.lanes.values()
    (src,) = spec.sources.values()
    chain: list[str] = []
    remaining = dict(spec.stages)
    while remaining:
        prev = chain[-1] if chain else None
        nxt = sorted(
            n for n, st in remaining.items() if (st.after == (prev,) if prev else not st.after)
        )
        if len(nxt) != 1:
            raise ExecError("single_ring stages must form one chain; validate the spec first")
        chain.append(nxt[0])
        del remaining[nxt[0]]
    lane_names = [f"{ring.name}.{i}" for i in range(len(chain) + 1)]
    nodes: list[NodeDef] = [
        NodeDef("source", src.name, (), (lane_names[0],), src.adapter, params=src.params)
    ]
    for i, name in enumerate(chain):
        st = spec.stages[name]
        policy = _policy(st.name, st.params, ())
        params = {k: v for k, v in st.params.items() if k not in EXEC_PARAMS}
        nodes.append(
            NodeDef(
                "stage",
                name,
                (lane_names[i],),
                (lane_names[i + 1],),
                st.op,
                process=st.process,
                params=params,
                policy=policy,
            )
        )
    last = lane_names[-1]
    sinks = sorted(spec.sinks)
    for name in sinks:
        sk = spec.sinks[name]
        nodes.append(NodeDef("sink", name, (last,), (), sk.adapter, params=sk.params))
    lanes = {
        ln: LaneDef(
            ln,
            "fanout" if ln == last and len(sinks) > 1 else "events",
            ring.capacity,
            ring.slot_bytes,
            False,
            tuple(sinks) if ln == last else (chain[i] if i < len(chain) else "",),
        )
        for i, ln in enumerate(lane_names)
    }
    return Graph(spec.name, spec.target, lanes, tuple(nodes))
