"""Graphviz DOT of a spec: nodes clustered by process, one edge per lane hop."""

from __future__ import annotations

from byteor.lower._describe import hops
from byteor.spec import PipelineSpecV1

__all__ = ["to_dot"]


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(spec: PipelineSpecV1) -> str:
    """DOT text (render with ``dot -Tsvg``). Deterministic: same spec, same bytes."""
    out = [
        f"digraph {_q(spec.name)} {{",
        "  rankdir=LR;",
        f"  label={_q(f'{spec.name} ({spec.target})')};",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
        '  subgraph "cluster_edge" {',
        '    label="edge (adapters)"; style=dashed;',
    ]
    for src in sorted(spec.sources.values(), key=lambda s: s.name):
        label = _q(f"{src.name}\n{src.adapter}")
        out.append(f"    {_q('source:' + src.name)} [shape=cds, label={label}];")
    for sink in sorted(spec.sinks.values(), key=lambda s: s.name):
        label = _q(f"{sink.name}\n{sink.adapter}")
        out.append(f"    {_q('sink:' + sink.name)} [shape=folder, label={label}];")
    out.append("  }")
    processes: dict[str, list[str]] = {}
    for st in sorted(spec.stages.values(), key=lambda s: s.name):
        processes.setdefault(st.process, []).append(
            f"    {_q('stage:' + st.name)} [shape=box, style=rounded, "
            f"label={_q(st.name + chr(10) + st.op)}];"
        )
    for i, (process, nodes) in enumerate(sorted(processes.items())):
        out.append(f"  subgraph {_q(f'cluster_p{i}')} {{")
        out.append(f"    label={_q('process ' + process)};")
        out.extend(nodes)
        out.append("  }")
    for src_node, lane_name, dst_node in hops(spec):
        lane = spec.lanes.get(lane_name)
        if lane is None:
            continue
        label = f"{lane_name}\n{lane.kind} {lane.capacity}x{lane.slot_bytes}"
        if lane.policy == "overwrite":
            label += "\noverwrite"
        style = ", style=bold" if lane.kind in ("fanout", "journal") else ""
        out.append(f"  {_q(src_node)} -> {_q(dst_node)} [label={_q(label)}{style}];")
    out.append("}")
    return "\n".join(out) + "\n"
