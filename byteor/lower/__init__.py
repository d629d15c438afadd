"""Lowering: PipelinePlanV2 -> PipelineSpecV1, and views of a compiled spec.

::

    spec = byteor.lower.lower_v2(plan, target="auto", opts=LowerOptions(capacity=4096))
    byteor.lower.describe_spec(spec)   # processes, lanes, barriers, delivery per path
    byteor.lower.to_dot(spec)          # Graphviz
"""

from __future__ import annotations

from byteor.lower._describe import MAX_PATHS, describe_spec, hops, render_description
from byteor.lower._dot import to_dot
from byteor.lower._errors import LowerError
from byteor.lower._lower import RING_LANE, LowerOptions, TargetChoice, lower_v2, ring_compatible

__all__ = [
    "lower_v2",
    "LowerOptions",
    "TargetChoice",
    "ring_compatible",
    "RING_LANE",
    "LowerError",
    "describe_spec",
    "hops",
    "MAX_PATHS",
    "render_description",
    "to_dot",
]
