"""ByteOr: bounded shared-memory lanes, canonical pipeline specs and deterministic executors.

Start here. The facade names the few things most programs need; each comes from its layer:

>>> import byteor
>>> plan = byteor.plan_from_toml(text)                      # doctest: +SKIP
>>> spec = byteor.lower_v2(plan, "auto", byteor.LowerOptions())   # doctest: +SKIP
>>> byteor.validate_v1(spec)                                # doctest: +SKIP
>>> report = byteor.run_sp(spec)                            # doctest: +SKIP

* :mod:`byteor.plan` — the authoring model (TOML or ``PlanBuilder``),
* :mod:`byteor.lower` — plan to spec,
* :mod:`byteor.spec` — the canonical key-value spec, its hash and validation,
* :mod:`byteor.exec` — executors (SP, MP, SingleRing),
* :mod:`byteor.kernel` — the hot-loop protocols,
* :mod:`byteor.lanes` — the IndexBus transport.

Names are imported on first use, so ``import byteor`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from byteor.errors import ByteorError

if TYPE_CHECKING:  # the same names, for type checkers and editors
    from byteor.exec import RunReport, run_mp, run_single_ring, run_sp
    from byteor.kernel import LaneRx, LaneTx, SeqBarrier
    from byteor.lower import LowerOptions, describe_spec, lower_v2
    from byteor.plan import PipelinePlanV2, PlanBuilder, plan_from_toml, validate_plan_v2
    from byteor.spec import (
        PipelineSpecV1,
        canonical,
        canonical_hash,
        diff_specs,
        parse_spec,
        validate_v1,
    )

__version__ = "0.1.0"

#: Facade name -> the layer that defines it.
_FACADE: Final[dict[str, str]] = {
    # plan
    "PipelinePlanV2": "byteor.plan",
    "PlanBuilder": "byteor.plan",
    "plan_from_toml": "byteor.plan",
    "validate_plan_v2": "byteor.plan",
    # lower
    "lower_v2": "byteor.lower",
    "LowerOptions": "byteor.lower",
    "describe_spec": "byteor.lower",
    # spec
    "PipelineSpecV1": "byteor.spec",
    "parse_spec": "byteor.spec",
    "canonical": "byteor.spec",
    "canonical_hash": "byteor.spec",
    "validate_v1": "byteor.spec",
    "diff_specs": "byteor.spec",
    # exec
    "run_sp": "byteor.exec",
    "run_mp": "byteor.exec",
    "run_single_ring": "byteor.exec",
    "RunReport": "byteor.exec",
    # kernel
    "LaneTx": "byteor.kernel",
    "LaneRx": "byteor.kernel",
    "SeqBarrier": "byteor.kernel",
}

__all__ = [
    "ByteorError",
    "__version__",
    "PipelinePlanV2",
    "PlanBuilder",
    "plan_from_toml",
    "validate_plan_v2",
    "lower_v2",
    "LowerOptions",
    "describe_spec",
    "PipelineSpecV1",
    "parse_spec",
    "canonical",
    "canonical_hash",
    "validate_v1",
    "diff_specs",
    "run_sp",
    "run_mp",
    "run_single_ring",
    "RunReport",
    "LaneTx",
    "LaneRx",
    "SeqBarrier",
]


def __getattr__(name: str) -> Any:
    module = _FACADE.get(name)
    if module is None:
        raise AttributeError(f"module 'byteor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
