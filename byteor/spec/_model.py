"""The typed pipeline spec, version 1.

One class serves both targets; ``target`` says which executor runs it. Optional settings
carry their defaults here, and the canonical form leaves keys at their defaults out, so a
spec that spells a default and one that does not are the same spec with the same hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from byteor.spec._constants import (
    DEFAULT_BACKING,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MERGE,
    DEFAULT_ON_CRASH,
    DEFAULT_POLICY,
    DEFAULT_PROCESS,
    DEFAULT_RESTART_BACKOFF_MS,
    DEFAULT_WAIT,
    SPEC_VERSION,
    Backing,
    CrashPolicy,
    LaneKind,
    LanePolicy,
    MergeOrder,
    Target,
    WaitMode,
)

__all__ = ["LaneSpec", "StageSpec", "SourceSpec", "SinkSpec", "PipelineSpecV1"]


@dataclass(frozen=True, slots=True)
class LaneSpec:
    """A bounded shared-memory lane.

    Attributes:
        name: lane name (``lane.<name>.*``).
        kind: ``events``, ``journal``, ``slots`` or ``fanout``.
        capacity: slots in the ring, a power of two.
        slot_bytes: the largest message, a multiple of 8.
        policy: ``block`` (slow consumers gate the producer) or ``overwrite`` (lagging
            consumers lose messages and count them; fanout and journal only).
        wait: ``backoff`` (spin briefly, then sleep) or ``spin`` (busy-wait).
        backing: ``shm`` or ``file`` (journal only: survives a restart).
    """

    name: str
    kind: LaneKind
    capacity: int
    slot_bytes: int
    policy: LanePolicy = DEFAULT_POLICY
    wait: WaitMode = DEFAULT_WAIT
    backing: Backing = DEFAULT_BACKING


@dataclass(frozen=True, slots=True)
class StageSpec:
    """A stage: runs ``op`` on what arrives on its input lanes.

    Attributes:
        name: stage name (``stage.<name>.*``).
        op: a built-in op name or ``module:function``.
        inputs: lanes read, in merge order when there are several.
        outputs: lanes written (none for a terminal stage).
        after: stages it follows on a shared slots lane (its barrier).
        process: the process it runs in.
        merge: how several inputs are merged: ``round_robin`` or ``ready``.
        params: free-form parameters handed to the op.
        on_crash: when its process dies: ``fail`` the run, or ``restart`` the process.
        max_restarts: with ``restart``: restarts allowed per run before the run fails.
        restart_backoff_ms: with ``restart``: the wait before the first restart, doubled
            at each one after it.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    process: str = DEFAULT_PROCESS
    merge: MergeOrder = DEFAULT_MERGE
    params: Mapping[str, str] = field(default_factory=dict)
    on_crash: CrashPolicy = DEFAULT_ON_CRASH
    max_restarts: int = DEFAULT_MAX_RESTARTS
    restart_backoff_ms: int = DEFAULT_RESTART_BACKOFF_MS


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """An ingress adapter writing one lane."""

    name: str
    adapter: str
    output: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """An egress adapter reading one or more lanes."""

    name: str
    adapter: str
    inputs: tuple[str, ...]
    after: tuple[str, ...] = ()
    merge: MergeOrder = DEFAULT_MERGE
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PipelineSpecV1:
    """A whole pipeline: lanes, stages, sources and sinks, keyed by name."""

    name: str
    target: Target
    lanes: Mapping[str, LaneSpec] = field(default_factory=dict)
    stages: Mapping[str, StageSpec] = field(default_factory=dict)
    sources: Mapping[str, SourceSpec] = field(default_factory=dict)
    sinks: Mapping[str, SinkSpec] = field(default_factory=dict)
    version: int = SPEC_VERSION

    @classmethod
    def build(
        cls,
        name: str,
        target: Target,
        *,
        lanes: list[LaneSpec] | tuple[LaneSpec, ...] = (),
        stages: list[StageSpec] | tuple[StageSpec, ...] = (),
        sources: list[SourceSpec] | tuple[SourceSpec, ...] = (),
        sinks: list[SinkSpec] | tuple[SinkSpec, ...] = (),
    ) -> PipelineSpecV1:
        """Build a spec from lists of parts (each keyed by its ``name``)."""
        return cls(
            name=name,
            target=target,
            lanes={x.name: x for x in lanes},
            stages={x.name: x for x in stages},
            sources={x.name: x for x in sources},
            sinks={x.name: x for x in sinks},
        )
