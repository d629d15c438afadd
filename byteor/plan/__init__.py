"""PipelinePlanV2: the authoring model, from TOML or from Python.

::

    plan = byteor.plan.plan_from_toml(text)       # or PlanBuilder(...).build()
    findings = byteor.plan.validate_plan_v2(plan)

Lowering a plan to a spec is :func:`byteor.lower.lower_v2`. This package does no I/O.
"""

from __future__ import annotations

from byteor.plan._builder import InputLike, NodeRef, PlanBuilder
from byteor.plan._errors import PlanError, PlanValidationError
from byteor.plan._model import (
    PLAN_VERSION,
    PipelinePlanV2,
    PlanFinding,
    PlanSeverity,
    PlanSink,
    PlanSource,
    PlanStage,
)
from byteor.plan._params import flatten_params
from byteor.plan._toml import MAX_PLAN_BYTES, ParsedPlan, parse_plan_toml, plan_from_toml
from byteor.plan._validate import PLAN_CODES, validate_plan_v2

__all__ = [
    "PipelinePlanV2",
    "PlanSource",
    "PlanStage",
    "PlanSink",
    "PLAN_VERSION",
    "PlanBuilder",
    "NodeRef",
    "InputLike",
    "ParsedPlan",
    "parse_plan_toml",
    "plan_from_toml",
    "MAX_PLAN_BYTES",
    "validate_plan_v2",
    "PlanFinding",
    "PlanSeverity",
    "PLAN_CODES",
    "flatten_params",
    "PlanError",
    "PlanValidationError",
]
