"""describe: the compiled pipeline as an operator sees it.

Processes and what runs in each, every lane with its geometry and shared-memory size, the
barriers (who waits for whom), and the delivery guarantee of every path from a source to a
sink. A path's guarantee is derived from what its adapters declare and from its lanes: it is
as strong as its weakest part, and a lane that overwrites lagging readers makes it best-effort.

The declarations come from the caller (``declared``: the CLI asks the adapters themselves,
for each node's params) and, for nodes it leaves out, from the spec's static table
(:data:`byteor.spec.ADAPTERS`): lowering stays free of adapters and their client libraries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from byteor.spec import (
    ADAPTERS,
    GUARANTEE_RANK,
    AdapterCapabilities,
    PipelineSpecV1,
    canonical_hash,
    lane_uses,
    max_consumers_for,
    segment_bytes,
)

__all__ = ["describe_spec", "render_description", "hops", "MAX_PATHS"]

EDGE_PROCESS: Final = "edge"
MAX_PATHS: Final = 256


def describe_spec(
    spec: PipelineSpecV1, declared: Mapping[str, AdapterCapabilities] | None = None
) -> dict[str, Any]:
    """A JSON-ready description of a (valid) spec.

    ``declared`` maps a source's or sink's name to its adapter's declaration (for its
    params); nodes it leaves out use the adapter's row of :data:`byteor.spec.ADAPTERS`.
    """
    uses = lane_uses(spec)
    processes: dict[str, list[str]] = {}
    for st in sorted(spec.stages.values(), key=lambda s: s.name):
        processes.setdefault(st.process, []).append(f"stage {st.name} ({st.op})")
    edge = [f"source {s.name} ({s.adapter})" for s in sorted(spec.sources.values(), key=_n)]
    edge += [f"sink {s.name} ({s.adapter})" for s in sorted(spec.sinks.values(), key=_n)]
    process_list = [{"name": EDGE_PROCESS, "role": "adapters (asyncio)", "runs": edge}]
    process_list += [
        {
            "name": name,
            "role": "single ring executor" if spec.target == "single_ring" else "stages",
            "runs": runs,
        }
        for name, runs in sorted(processes.items())
    ]

    lanes = []
    total = 0
    for name, lane in sorted(spec.lanes.items()):
        use = uses.get(name)
        consumers = [f"{role} {node}" for role, node, _ in (use.consumers if use else [])]
        producer = [f"{role} {node}" for role, node, _ in (use.producers if use else [])]
        max_cons = max_consumers_for(lane.kind, len(consumers))
        shm = segment_bytes(lane.capacity, lane.slot_bytes, max_cons)
        total += shm
        lanes.append(
            {
                "name": name,
                "kind": lane.kind,
                "capacity": lane.capacity,
                "slot_bytes": lane.slot_bytes,
                "max_consumers": max_cons,
                "shm_bytes": shm,
                "policy": lane.policy,
                "wait": lane.wait,
                "backing": lane.backing,
                "producer": producer[0] if producer else None,
                "consumers": consumers,
            }
        )

    paths = _paths(spec, declared or {})
    return {
        "pipeline": spec.name,
        "target": spec.target,
        "hash": canonical_hash(spec),
        "processes": process_list,
        "lanes": lanes,
        "total_shm_bytes": total,
        "barriers": _barriers(spec),
        "paths": paths,
        "paths_truncated": len(paths) >= MAX_PATHS,
    }


def _n(x: Any) -> str:
    return str(x.name)


def _barriers(spec: PipelineSpecV1) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    uses = lane_uses(spec)
    by_lane = _lane_readers(spec)
    for name, lane in sorted(spec.lanes.items()):
        use = uses[name]
        if not use.producers:
            continue
        role, producer, _ = use.producers[0]
        readers = by_lane.get(name, [])
        followed = {other for _, _, after in readers for other in after}
        gating = [
            f"{r} {n}" for r, n, _ in use.consumers if not (lane.kind == "slots" and n in followed)
        ]
        if lane.policy == "overwrite":
            note = "never waits: readers that lag lose records and count them"
            gating = []
        else:
            note = "waits for room: the slowest of these readers gates it"
        out.append(
            {"lane": name, "waiter": f"{role} {producer}", "waits_for": gating, "note": note}
        )
        if lane.kind == "slots":
            for word, node, after in readers:
                out.append(
                    {
                        "lane": name,
                        "waiter": f"{word} {node}",
                        "waits_for": [f"{role} {producer}"] + [f"stage {a}" for a in after],
                        "note": "sequence barrier: reads a slot once these passed it",
                    }
                )
    return out


Reader = tuple[str, str, tuple[str, ...]]


def _lane_readers(spec: PipelineSpecV1) -> dict[str, list[Reader]]:
    """Lane -> ``(role, name, after)`` of every stage and sink reading it, sorted."""
    out: dict[str, list[Reader]] = {}
    for st in spec.stages.values():
        for lane in st.inputs:
            out.setdefault(lane, []).append(("stage", st.name, st.after))
    for sk in spec.sinks.values():
        for lane in sk.inputs:
            out.setdefault(lane, []).append(("sink", sk.name, sk.after))
    for readers in out.values():
        readers.sort()
    return out


def hops(spec: PipelineSpecV1) -> list[tuple[str, str, str]]:
    """Every hop a record takes: ``(from "role:name", lane, to "role:name")``, sorted.

    On a slots lane a reader with ``after`` gets the record from the stages it follows
    (they pass it the slot), not from the producer.
    """
    out: set[tuple[str, str, str]] = set()
    by_lane = _lane_readers(spec)
    for lane, use in lane_uses(spec).items():
        is_slots = lane in spec.lanes and spec.lanes[lane].kind == "slots"
        for prole, producer, _ in use.producers:
            for word, node, after in by_lane.get(lane, []):
                if is_slots and after:
                    out.update((f"stage:{a}", lane, f"{word}:{node}") for a in after)
                else:
                    out.add((f"{prole}:{producer}", lane, f"{word}:{node}"))
    return sorted(out)


def _paths(
    spec: PipelineSpecV1, declared: Mapping[str, AdapterCapabilities]
) -> list[dict[str, Any]]:
    """Every path from a source to a sink (at most MAX_PATHS), depth first in name order."""
    nexts: dict[str, list[tuple[str, str]]] = {}
    back: dict[str, set[str]] = {}
    for src_node, lane, dst_node in hops(spec):
        nexts.setdefault(src_node, []).append((lane, dst_node))
        back.setdefault(dst_node, set()).add(src_node)
    # Only walk nodes from which a sink can be reached: the walk then ends in a path every time.
    useful = {f"sink:{s}" for s in spec.sinks}
    todo = list(useful)
    while todo:
        for prev in back.get(todo.pop(), ()):
            if prev not in useful:
                useful.add(prev)
                todo.append(prev)
    out: list[dict[str, Any]] = []
    for src in sorted(spec.sources.values(), key=_n):
        # entries: (node, lane that led here, parent entry); the stack holds entry indices
        entries: list[tuple[str, str, int]] = [(f"source:{src.name}", "", -1)]
        stack = [0]
        while stack and len(out) < MAX_PATHS:
            index = stack.pop()
            node = entries[index][0]
            for lane, nxt in reversed(nexts.get(node, [])):
                if nxt not in useful:
                    continue
                entries.append((nxt, lane, index))
                if nxt.startswith("sink:"):
                    out.append(_unwind(spec, declared, entries, len(entries) - 1))
                    if len(out) >= MAX_PATHS:
                        break
                else:
                    stack.append(len(entries) - 1)
    out.sort(key=lambda p: (p["source"], p["sink"], p["via"]))
    return out


def _unwind(
    spec: PipelineSpecV1,
    declared: Mapping[str, AdapterCapabilities],
    entries: list[tuple[str, str, int]],
    i: int,
) -> dict[str, Any]:
    nodes: list[str] = []
    lanes: list[str] = []
    while i >= 0:
        node, lane, parent = entries[i]
        nodes.append(node.partition(":")[2])
        if lane:
            lanes.append(lane)
        i = parent
    nodes.reverse()
    lanes.reverse()
    return _path(spec, declared, nodes[0], nodes[-1], nodes[1:-1], lanes)


def _path(
    spec: PipelineSpecV1,
    declared: Mapping[str, AdapterCapabilities],
    source: str,
    sink: str,
    via: list[str],
    lanes: list[str],
) -> dict[str, Any]:
    src = spec.sources[source]
    snk = spec.sinks[sink]
    src_caps = declared.get(source) or ADAPTERS.get(src.adapter)
    sink_caps = declared.get(sink) or ADAPTERS.get(snk.adapter)
    reasons: list[str] = []
    levels: list[str] = []
    ordering = "unknown"
    if src_caps is None or src_caps.source is None:
        reasons.append(f"source adapter {src.adapter!r} declares no delivery capability")
        levels.append("unknown")
    else:
        d = src_caps.source
        reasons.append(f"source {source} ({src.adapter}): {d.guarantee}, {d.condition}")
        levels.append(d.guarantee)
        ordering = d.ordering
    if sink_caps is None or sink_caps.sink is None:
        reasons.append(f"sink adapter {snk.adapter!r} declares no delivery capability")
        levels.append("unknown")
    else:
        d = sink_caps.sink
        reasons.append(f"sink {sink} ({snk.adapter}): {d.guarantee}, {d.condition}")
        levels.append(d.guarantee)
        if d.ordering == "none":
            ordering = "none"
    for lane in dict.fromkeys(lanes):
        spec_lane = spec.lanes.get(lane)
        if spec_lane is not None and spec_lane.policy == "overwrite":
            reasons.append(f"lane {lane} overwrites readers that lag: records may be lost")
            levels.append("best-effort")
    merged = [n for n in via if len(spec.stages[n].inputs) > 1]
    if len(snk.inputs) > 1:
        merged.append(sink)
    if merged and ordering not in ("none", "unknown"):
        ordering = f"{ordering} within each input; merged at {', '.join(merged)}"
    if "unknown" in levels:
        guarantee = "unknown"
    else:
        guarantee = min(levels, key=lambda g: GUARANTEE_RANK[g])
    return {
        "source": source,
        "sink": sink,
        "via": via,
        "lanes": lanes,
        "guarantee": guarantee,
        "ordering": ordering,
        "reasons": reasons,
    }


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def render_description(d: dict[str, Any]) -> str:
    """Plain text for a terminal."""
    lines = [f"pipeline {d['pipeline']} ({d['target']})  {d['hash']}", "", "processes:"]
    for p in d["processes"]:
        lines.append(f"  {p['name']}  [{p['role']}]")
        lines.extend(f"    {r}" for r in p["runs"])
    lines += ["", f"lanes ({_bytes(d['total_shm_bytes'])} shared memory):"]
    for ln in d["lanes"]:
        lines.append(
            f"  {ln['name']}: {ln['kind']} {ln['capacity']} x {ln['slot_bytes']} B = "
            f"{_bytes(ln['shm_bytes'])}, policy {ln['policy']}, wait {ln['wait']}, "
            f"backing {ln['backing']}"
        )
        lines.append(f"    {ln['producer']} -> {', '.join(ln['consumers']) or '(nobody)'}")
    lines += ["", "barriers:"]
    for b in d["barriers"]:
        waits = ", ".join(b["waits_for"]) or "nobody"
        lines.append(f"  [{b['lane']}] {b['waiter']} waits for {waits}: {b['note']}")
    lines += ["", "delivery per path:"]
    for p in d["paths"]:
        hops = " -> ".join([p["source"], *p["via"], p["sink"]])
        lines.append(f"  {hops}: {p['guarantee']}, order {p['ordering']}")
        lines.extend(f"    - {r}" for r in p["reasons"])
    if not d["paths"]:
        lines.append("  (no path from a source to a sink)")
    if d.get("paths_truncated"):
        lines.append(f"  (only the first {MAX_PATHS} paths are shown)")
    return "\n".join(lines) + "\n"
