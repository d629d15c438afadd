"""The pipeline spec, version 1: a stable, canonical, diff-friendly contract.

A spec is flat ``key = value`` text (see ``docs/spec.md`` for the key set)::

    spec = byteor.spec.decode_spec(text)          # typed PipelineSpecV1, or SpecValidationError
    findings = byteor.spec.validate_v1(text)      # every finding, never raises
    byteor.spec.canonical(text)                   # the canonical text
    byteor.spec.canonical_hash(spec)              # "sha256:..."
    byteor.spec.diff_specs(a, b)                  # added / removed / changed, grouped

This package does no I/O: callers read files and hand over text or bytes.
"""

from __future__ import annotations

from byteor.spec._api import (
    ParsedSpec,
    SpecSource,
    canonical,
    canonical_hash,
    decode_spec,
    parse_spec,
    validate_v1,
)
from byteor.spec._capabilities import (
    ADAPTERS,
    BUILTIN_OPS,
    GUARANTEE_RANK,
    AdapterCapabilities,
    Delivery,
    Guarantee,
)
from byteor.spec._codec import encode_spec, spec_to_items
from byteor.spec._compat import CompatibilityReason, CompatibilityReport, check_compatibility
from byteor.spec._constants import (
    BACKINGS,
    DEFAULT_PROCESS,
    LANE_KINDS,
    LANE_POLICIES,
    MAX_CAPACITY,
    MAX_CONSUMERS,
    MAX_NAME_BYTES,
    MAX_SLOT_BYTES,
    MAX_SPEC_BYTES,
    MERGE_ORDERS,
    MIN_CAPACITY,
    MIN_SLOT_BYTES,
    SLOT_ALIGN,
    SPEC_VERSION,
    TARGETS,
    WAIT_MODES,
    Backing,
    LaneKind,
    LanePolicy,
    MergeOrder,
    Target,
    WaitMode,
    capacity_ok,
    is_name,
    max_consumers_for,
    segment_bytes,
    slot_bytes_ok,
)
from byteor.spec._diff import KeyChange, SpecDiff, diff_specs
from byteor.spec._errors import SpecError, SpecValidationError
from byteor.spec._findings import CODES, Finding, Severity, did_you_mean, has_errors
from byteor.spec._kv import KvDocument, KvEntry, parse_kv
from byteor.spec._model import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec
from byteor.spec._validate import LaneUse, lane_uses

__all__ = [
    # model
    "PipelineSpecV1",
    "LaneSpec",
    "StageSpec",
    "SourceSpec",
    "SinkSpec",
    "Target",
    "LaneKind",
    "LanePolicy",
    "WaitMode",
    "Backing",
    "MergeOrder",
    # text
    "KvDocument",
    "KvEntry",
    "parse_kv",
    "ParsedSpec",
    "SpecSource",
    "parse_spec",
    "decode_spec",
    "encode_spec",
    "spec_to_items",
    "canonical",
    "canonical_hash",
    # validation
    "validate_v1",
    "Finding",
    "Severity",
    "CODES",
    "has_errors",
    "did_you_mean",
    "LaneUse",
    "lane_uses",
    # diff and compatibility
    "diff_specs",
    "SpecDiff",
    "KeyChange",
    "check_compatibility",
    "CompatibilityReport",
    "CompatibilityReason",
    # capabilities
    "ADAPTERS",
    "AdapterCapabilities",
    "Delivery",
    "Guarantee",
    "GUARANTEE_RANK",
    "BUILTIN_OPS",
    # vocabulary and limits
    "SPEC_VERSION",
    "TARGETS",
    "LANE_KINDS",
    "LANE_POLICIES",
    "WAIT_MODES",
    "BACKINGS",
    "MERGE_ORDERS",
    "DEFAULT_PROCESS",
    "MIN_CAPACITY",
    "MAX_CAPACITY",
    "MIN_SLOT_BYTES",
    "MAX_SLOT_BYTES",
    "SLOT_ALIGN",
    "MAX_CONSUMERS",
    "MAX_NAME_BYTES",
    "MAX_SPEC_BYTES",
    "is_name",
    "capacity_ok",
    "slot_bytes_ok",
    "max_consumers_for",
    "segment_bytes",
    # errors
    "SpecError",
    "SpecValidationError",
]
