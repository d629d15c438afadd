"""The key set of spec version 1: which keys exist, their value types and defaults.

Keys are dot-separated. Top-level keys are fixed; entity keys are ``<kind>.<name>.<field>``
with ``<kind>`` one of ``lane``, ``stage``, ``source``, ``sink``; stages, sources and sinks
also take free-form ``<kind>.<name>.param.<key...>`` text parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from byteor.spec._constants import (
    BACKINGS,
    CRASH_POLICIES,
    DEFAULT_BACKING,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MERGE,
    DEFAULT_ON_CRASH,
    DEFAULT_POLICY,
    DEFAULT_PROCESS,
    DEFAULT_RESTART_BACKOFF_MS,
    DEFAULT_WAIT,
    LANE_KINDS,
    LANE_POLICIES,
    MERGE_ORDERS,
    TARGETS,
    WAIT_MODES,
)

__all__ = [
    "ValueType",
    "KeyRule",
    "TOP_LEVEL",
    "ENTITY_FIELDS",
    "PARAM_ENTITIES",
    "KEY_RE",
    "rule_for",
    "normalize_value",
    "parse_int",
    "split_list",
    "op_syntax_ok",
    "key_candidates",
]

ValueType = Literal["int", "name", "names", "enum", "op", "text"]

KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*", re.ASCII)
_INT_RE: Final = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*", re.ASCII)
_BUILTIN_OP_RE: Final = re.compile(r"[a-z_][a-z0-9_]*", re.ASCII)
_MAX_INT_DIGITS: Final = 24


@dataclass(frozen=True, slots=True)
class KeyRule:
    """What a key holds: its type, allowed words, default (canonical text) and whether required."""

    vtype: ValueType
    required: bool = False
    default: str | None = None
    choices: tuple[str, ...] = ()
    example: str = ""


TOP_LEVEL: Final[dict[str, KeyRule]] = {
    "byteor.spec": KeyRule("int", required=True, example="1"),
    "pipeline.name": KeyRule("name", required=True, example="orders"),
    "pipeline.target": KeyRule("enum", required=True, choices=TARGETS, example="lane_graph"),
}

ENTITY_FIELDS: Final[dict[str, dict[str, KeyRule]]] = {
    "lane": {
        "kind": KeyRule("enum", required=True, choices=LANE_KINDS, example="events"),
        "capacity": KeyRule("int", required=True, example="1024"),
        "slot_bytes": KeyRule("int", required=True, example="256"),
        "policy": KeyRule("enum", default=DEFAULT_POLICY, choices=LANE_POLICIES),
        "wait": KeyRule("enum", default=DEFAULT_WAIT, choices=WAIT_MODES),
        "backing": KeyRule("enum", default=DEFAULT_BACKING, choices=BACKINGS),
    },
    "stage": {
        "op": KeyRule("op", required=True, example="identity"),
        "in": KeyRule("names", required=True, example="raw"),
        "out": KeyRule("names"),
        "after": KeyRule("names"),
        "process": KeyRule("name", default=DEFAULT_PROCESS),
        "merge": KeyRule("enum", default=DEFAULT_MERGE, choices=MERGE_ORDERS),
        "on_crash": KeyRule("enum", default=DEFAULT_ON_CRASH, choices=CRASH_POLICIES),
        "max_restarts": KeyRule("int", default=str(DEFAULT_MAX_RESTARTS), example="3"),
        "restart_backoff_ms": KeyRule(
            "int", default=str(DEFAULT_RESTART_BACKOFF_MS), example="100"
        ),
    },
    "source": {
        "adapter": KeyRule("name", required=True, example="kafka"),
        "out": KeyRule("name", required=True, example="raw"),
    },
    "sink": {
        "adapter": KeyRule("name", required=True, example="stdout"),
        "in": KeyRule("names", required=True, example="raw"),
        "after": KeyRule("names"),
        "merge": KeyRule("enum", default=DEFAULT_MERGE, choices=MERGE_ORDERS),
    },
}

PARAM_ENTITIES: Final = frozenset({"stage", "source", "sink"})
_TEXT: Final = KeyRule("text")


def rule_for(key: str) -> KeyRule | None:
    """The rule of ``key``, or ``None`` when the key is not part of spec version 1."""
    top = TOP_LEVEL.get(key)
    if top is not None:
        return top
    segs = key.split(".")
    fields = ENTITY_FIELDS.get(segs[0])
    if fields is None or len(segs) < 3:
        return None
    if len(segs) == 3:
        return fields.get(segs[2])
    if segs[2] == "param" and segs[0] in PARAM_ENTITIES:
        return _TEXT
    return None


def parse_int(text: str) -> int | None:
    """A decimal integer (sign, leading zeros and ``_`` separators allowed), else ``None``."""
    if _INT_RE.fullmatch(text) is None or len(text) > _MAX_INT_DIGITS:
        return None
    return int(text.replace("_", ""))


def split_list(text: str) -> list[str] | None:
    """Comma-separated items, stripped; ``None`` when an item is empty."""
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        return None
    return items


def normalize_value(rule: KeyRule, raw: str) -> str:
    """The canonical text of ``raw`` for ``rule``; ``raw`` itself when it does not fit the type."""
    if rule.vtype == "int":
        n = parse_int(raw)
        return raw if n is None else str(n)
    if rule.vtype == "names":
        items = split_list(raw)
        return raw if items is None else ", ".join(items)
    if rule.vtype == "enum":
        low = raw.lower()
        return low if low in rule.choices else raw
    return raw


def op_syntax_ok(op: str) -> bool:
    """A built-in op name (``identity``) or ``package.module:function`` (qualname allowed)."""
    if ":" not in op:
        return _BUILTIN_OP_RE.fullmatch(op) is not None
    module, _, func = op.partition(":")
    parts = [*module.split("."), *func.split(".")]
    return all(p.isidentifier() and p.isascii() for p in parts)


def key_candidates(key: str) -> list[str]:
    """Known keys a mistyped ``key`` may have meant (for "did you mean")."""
    segs = key.split(".")
    out = list(TOP_LEVEL)
    if len(segs) >= 2:
        name = segs[1]
        for kind, fields in ENTITY_FIELDS.items():
            out.extend(f"{kind}.{name}.{f}" for f in fields)
            if kind in PARAM_ENTITIES and len(segs) >= 4:
                out.append(f"{kind}.{name}.param." + ".".join(segs[3:]))
    return out
