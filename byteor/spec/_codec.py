"""Between the flat text and the typed spec: decoding (with findings) and canonical encoding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from byteor.spec._constants import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MERGE,
    DEFAULT_ON_CRASH,
    DEFAULT_PROCESS,
    DEFAULT_RESTART_BACKOFF_MS,
    SPEC_VERSION,
)
from byteor.spec._findings import Finding, did_you_mean, hint, make
from byteor.spec._kv import KvDocument, render_items
from byteor.spec._model import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec
from byteor.spec._schema import (
    ENTITY_FIELDS,
    TOP_LEVEL,
    key_candidates,
    parse_int,
    rule_for,
    split_list,
)

__all__ = ["Decoded", "decode_document", "spec_to_items", "encode_spec"]

_ENTITY_WORD = {"lane": "lane", "stage": "stage", "source": "source", "sink": "sink"}


@dataclass(slots=True)
class Decoded:
    """A document turned into a (possibly incomplete) typed spec.

    ``skip`` holds the keys that already have a finding or are missing; the semantic checks
    leave them alone so one mistake is reported once. ``explicit`` holds every key the text set.
    """

    spec: PipelineSpecV1
    findings: list[Finding]
    lines: dict[str, int] = field(default_factory=dict)
    skip: set[str] = field(default_factory=set)
    explicit: set[str] = field(default_factory=set)


def _entity_lines(doc: KvDocument) -> dict[tuple[str, str], int]:
    first: dict[tuple[str, str], int] = {}
    for e in doc.entries:
        segs = e.key.split(".")
        if len(segs) >= 3 and segs[0] in ENTITY_FIELDS and rule_for(e.key) is not None:
            first.setdefault((segs[0], segs[1]), e.line)
    return first


def decode_document(doc: KvDocument) -> Decoded:
    """Type every known key, report unknown, mistyped and missing keys."""
    findings = list(doc.findings)
    lines = doc.lines()
    skip: set[str] = set()
    values: dict[str, Any] = {}
    params: dict[tuple[str, str], dict[str, str]] = {}
    for e in doc.entries:
        rule = rule_for(e.key)
        if rule is None:
            guess = did_you_mean(e.key, key_candidates(e.key), cutoff=0.75)
            findings.append(
                make(
                    "SP201",
                    e.key,
                    e.line,
                    f"{e.key} is not a key of spec version 1{hint(guess)}; "
                    "see docs/spec.md for the key set",
                    guess,
                )
            )
            continue
        segs = e.key.split(".")
        if rule.vtype == "text":
            params.setdefault((segs[0], segs[1]), {})[".".join(segs[3:])] = e.value
            continue
        if rule.vtype == "int":
            n = parse_int(e.value)
            if n is None:
                findings.append(
                    make(
                        "SP203",
                        e.key,
                        e.line,
                        f"{e.key} must be a whole number (e.g. {rule.example or 1024}), "
                        f"not {e.value!r}",
                    )
                )
                skip.add(e.key)
                n = 0
            values[e.key] = n
        elif rule.vtype == "names":
            items = split_list(e.value)
            if items is None:
                findings.append(
                    make(
                        "SP203",
                        e.key,
                        e.line,
                        f"{e.key} must be a comma-separated list of names (e.g. a, b), "
                        f"without empty items: {e.value!r}",
                    )
                )
                skip.add(e.key)
                items = []
            values[e.key] = tuple(items)
        elif rule.vtype == "enum":
            low = e.value.lower()
            values[e.key] = low if low in rule.choices else e.value
        else:
            values[e.key] = e.value

    # Entities exist when at least one of their known keys is set.
    entity_first = _entity_lines(doc)
    for key, rule in TOP_LEVEL.items():
        if key not in values and rule.required:
            findings.append(
                make(
                    "SP202",
                    key,
                    None,
                    f"{key} is missing: add `{key} = {rule.example}`",
                )
            )
            skip.add(key)
    for (kind, name), line in sorted(entity_first.items(), key=lambda kv: kv[1]):
        for fname, rule in ENTITY_FIELDS[kind].items():
            key = f"{kind}.{name}.{fname}"
            if rule.required and key not in values:
                findings.append(
                    make(
                        "SP202",
                        key,
                        line,
                        f"{_ENTITY_WORD[kind]} {name!r} has no {fname}: add "
                        f"`{key} = {rule.example}`",
                    )
                )
                skip.add(key)

    def get(key: str, default: Any) -> Any:
        return values.get(key, default)

    def names_of(kind: str) -> list[str]:
        return sorted({n for (k, n) in entity_first if k == kind})

    lanes = [
        LaneSpec(
            name=n,
            kind=get(f"lane.{n}.kind", ""),
            capacity=get(f"lane.{n}.capacity", 0),
            slot_bytes=get(f"lane.{n}.slot_bytes", 0),
            policy=get(f"lane.{n}.policy", "block"),
            wait=get(f"lane.{n}.wait", "backoff"),
            backing=get(f"lane.{n}.backing", "shm"),
        )
        for n in names_of("lane")
    ]
    stages = [
        StageSpec(
            name=n,
            op=get(f"stage.{n}.op", ""),
            inputs=get(f"stage.{n}.in", ()),
            outputs=get(f"stage.{n}.out", ()),
            after=get(f"stage.{n}.after", ()),
            process=get(f"stage.{n}.process", DEFAULT_PROCESS),
            merge=get(f"stage.{n}.merge", DEFAULT_MERGE),
            params=params.get(("stage", n), {}),
            on_crash=get(f"stage.{n}.on_crash", DEFAULT_ON_CRASH),
            max_restarts=get(f"stage.{n}.max_restarts", DEFAULT_MAX_RESTARTS),
            restart_backoff_ms=get(f"stage.{n}.restart_backoff_ms", DEFAULT_RESTART_BACKOFF_MS),
        )
        for n in names_of("stage")
    ]
    sources = [
        SourceSpec(
            name=n,
            adapter=get(f"source.{n}.adapter", ""),
            output=get(f"source.{n}.out", ""),
            params=params.get(("source", n), {}),
        )
        for n in names_of("source")
    ]
    sinks = [
        SinkSpec(
            name=n,
            adapter=get(f"sink.{n}.adapter", ""),
            inputs=get(f"sink.{n}.in", ()),
            after=get(f"sink.{n}.after", ()),
            merge=get(f"sink.{n}.merge", DEFAULT_MERGE),
            params=params.get(("sink", n), {}),
        )
        for n in names_of("sink")
    ]
    spec = PipelineSpecV1.build(
        name=get("pipeline.name", ""),
        target=get("pipeline.target", ""),
        lanes=lanes,
        stages=stages,
        sources=sources,
        sinks=sinks,
    )
    spec = _with_version(spec, get("byteor.spec", SPEC_VERSION))
    return Decoded(spec, findings, lines, skip, set(lines))


def _with_version(spec: PipelineSpecV1, version: int) -> PipelineSpecV1:
    if version == spec.version:
        return spec
    return PipelineSpecV1(
        name=spec.name,
        target=spec.target,
        lanes=spec.lanes,
        stages=spec.stages,
        sources=spec.sources,
        sinks=spec.sinks,
        version=version,
    )


def _params(prefix: str, params: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(f"{prefix}.param.{k}", v) for k, v in params.items()]


def spec_to_items(spec: PipelineSpecV1, *, defaults: bool = False) -> list[tuple[str, str]]:
    """The spec as ``(key, value)`` pairs sorted bytewise.

    Args:
        spec: the spec.
        defaults: also list keys at their default value (the effective settings, for
            ``diff`` and ``describe``); the canonical form leaves them out.
    """
    items: list[tuple[str, str]] = [
        ("byteor.spec", str(spec.version)),
        ("pipeline.name", spec.name),
        ("pipeline.target", str(spec.target)),
    ]

    def opt(key: str, value: str) -> None:
        rule = rule_for(key)
        if defaults or rule is None or value != rule.default:
            items.append((key, value))

    for lane in spec.lanes.values():
        p = f"lane.{lane.name}"
        items += [
            (f"{p}.kind", lane.kind),
            (f"{p}.capacity", str(lane.capacity)),
            (f"{p}.slot_bytes", str(lane.slot_bytes)),
        ]
        opt(f"{p}.policy", lane.policy)
        opt(f"{p}.wait", lane.wait)
        opt(f"{p}.backing", lane.backing)
    for stage in spec.stages.values():
        p = f"stage.{stage.name}"
        items += [(f"{p}.op", stage.op), (f"{p}.in", ", ".join(stage.inputs))]
        if stage.outputs:
            items.append((f"{p}.out", ", ".join(stage.outputs)))
        if stage.after:
            items.append((f"{p}.after", ", ".join(stage.after)))
        opt(f"{p}.process", stage.process)
        if len(stage.inputs) > 1 or stage.merge != DEFAULT_MERGE:
            opt(f"{p}.merge", stage.merge)
        opt(f"{p}.on_crash", stage.on_crash)
        opt(f"{p}.max_restarts", str(stage.max_restarts))
        opt(f"{p}.restart_backoff_ms", str(stage.restart_backoff_ms))
        items += _params(p, stage.params)
    for source in spec.sources.values():
        p = f"source.{source.name}"
        items += [(f"{p}.adapter", source.adapter), (f"{p}.out", source.output)]
        items += _params(p, source.params)
    for sink in spec.sinks.values():
        p = f"sink.{sink.name}"
        items += [(f"{p}.adapter", sink.adapter), (f"{p}.in", ", ".join(sink.inputs))]
        if sink.after:
            items.append((f"{p}.after", ", ".join(sink.after)))
        if len(sink.inputs) > 1 or sink.merge != DEFAULT_MERGE:
            opt(f"{p}.merge", sink.merge)
        items += _params(p, sink.params)
    items.sort(key=lambda kv: kv[0].encode("utf-8"))
    return items


def encode_spec(spec: PipelineSpecV1) -> str:
    """The canonical text of a typed spec."""
    return render_items(spec_to_items(spec))
