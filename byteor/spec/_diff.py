"""Semantic diff: what changed between two specs, by meaning rather than by text.

Both sides are compared as effective settings (defaults filled in) when both validate, so a
spelled-out default is no change; otherwise as their canonical keys. Equal canonical hashes
mean an empty diff and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from byteor.spec._api import SpecSource, canonical_hash, parse_spec
from byteor.spec._codec import spec_to_items
from byteor.spec._kv import KvDocument, canonical_items, parse_kv
from byteor.spec._model import PipelineSpecV1

__all__ = ["KeyChange", "SpecDiff", "diff_specs", "group_of"]

ChangeKind = Literal["added", "removed", "changed"]
_GROUP_ORDER = {"pipeline": 0, "lane": 1, "stage": 2, "source": 3, "sink": 4}


@dataclass(frozen=True, slots=True)
class KeyChange:
    """One key that differs; ``old`` is ``None`` when added, ``new`` when removed."""

    key: str
    change: ChangeKind
    old: str | None
    new: str | None

    @property
    def group(self) -> str:
        return group_of(self.key)

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "change": self.change,
            "old": self.old,
            "new": self.new,
            "group": self.group,
        }


def group_of(key: str) -> str:
    """``"lane raw"``, ``"stage enrich"``, ... or ``"pipeline"`` for top-level keys."""
    segs = key.split(".")
    if segs[0] in ("lane", "stage", "source", "sink") and len(segs) >= 2:
        return f"{segs[0]} {segs[1]}"
    return "pipeline"


def _group_sort(group: str) -> tuple[int, str]:
    kind = group.split(" ", 1)[0]
    return _GROUP_ORDER.get(kind, 9), group


@dataclass(frozen=True, slots=True)
class SpecDiff:
    """The differences between spec ``a`` and spec ``b``."""

    hash_a: str
    hash_b: str
    changes: tuple[KeyChange, ...]

    @property
    def equal(self) -> bool:
        return not self.changes

    def groups(self) -> dict[str, list[KeyChange]]:
        """Changes grouped by ``pipeline``, then each lane, stage, source and sink."""
        out: dict[str, list[KeyChange]] = {}
        for change in self.changes:
            out.setdefault(change.group, []).append(change)
        return {g: out[g] for g in sorted(out, key=_group_sort)}

    def to_dict(self) -> dict[str, object]:
        return {
            "equal": self.equal,
            "hash_a": self.hash_a,
            "hash_b": self.hash_b,
            "groups": {g: [c.to_dict() for c in cs] for g, cs in self.groups().items()},
        }

    def render(self) -> str:
        if self.equal:
            return f"no differences ({self.hash_a})\n"
        lines = [f"--- {self.hash_a}", f"+++ {self.hash_b}"]
        for group, changes in self.groups().items():
            lines.append(f"{group}:")
            for c in changes:
                if c.change == "added":
                    lines.append(f"  + {c.key} = {c.new}")
                elif c.change == "removed":
                    lines.append(f"  - {c.key} = {c.old}")
                else:
                    lines.append(f"  ~ {c.key}: {c.old} -> {c.new}")
        return "\n".join(lines) + "\n"


def _items(source: SpecSource, effective: bool) -> dict[str, str]:
    if isinstance(source, PipelineSpecV1):
        return dict(spec_to_items(source, defaults=effective))
    doc = source if isinstance(source, KvDocument) else parse_kv(source)
    if effective:
        spec = parse_spec(doc).spec
        assert spec is not None
        return dict(spec_to_items(spec, defaults=True))
    return dict(canonical_items(doc))


def _valid(source: SpecSource) -> bool:
    return isinstance(source, PipelineSpecV1) or parse_spec(source).ok


def diff_specs(a: SpecSource, b: SpecSource) -> SpecDiff:
    """Added, removed and changed keys from ``a`` to ``b``, sorted by key."""
    effective = _valid(a) and _valid(b)
    left, right = _items(a, effective), _items(b, effective)
    changes: list[KeyChange] = []
    for key in sorted(left.keys() | right.keys(), key=lambda k: k.encode("utf-8")):
        old, new = left.get(key), right.get(key)
        if old == new:
            continue
        kind: ChangeKind = "added" if old is None else "removed" if new is None else "changed"
        changes.append(KeyChange(key, kind, old, new))
    return SpecDiff(canonical_hash(a), canonical_hash(b), tuple(changes))
