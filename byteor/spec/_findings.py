"""Findings: what validation reports, one per problem, each with a stable code.

Codes never change meaning once released; a retired code is not reused. ``KV1xx`` are
syntax problems of the text, ``SP2xx`` structural problems of keys and values, ``SP3xx``
semantic problems of the graph, ``SP4xx`` the rules of the ``single_ring`` target.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["Severity", "Finding", "CODES", "did_you_mean", "has_errors", "sort_findings"]

Severity = Literal["error", "warning"]

#: Every code, its severity and a one-line title (the docs table is generated from this).
CODES: Final[dict[str, tuple[Severity, str]]] = {
    "KV101": ("error", "line is not valid UTF-8"),
    "KV102": ("error", "binary content (NUL byte)"),
    "KV103": ("error", "input is too large"),
    "KV104": ("error", "line is not `key = value`"),
    "KV105": ("error", "key has illegal characters"),
    "KV106": ("error", "duplicate key"),
    "KV107": ("error", "empty value"),
    "KV108": ("error", "control character in value"),
    "KV109": ("error", "too many findings, the rest were not reported"),
    "SP201": ("error", "unknown key"),
    "SP202": ("error", "missing required key"),
    "SP203": ("error", "value has the wrong type"),
    "SP205": ("error", "value is not one of the allowed words"),
    "SP206": ("error", "unsupported spec version"),
    "SP207": ("error", "invalid name"),
    "SP210": ("error", "capacity is not a power of two in range"),
    "SP211": ("error", "slot_bytes does not fit the lane ABI"),
    "SP212": ("error", "duplicate item in a list"),
    "SP213": ("error", "value out of range"),
    "SP301": ("error", "reference to an unknown lane"),
    "SP302": ("error", "lane has no producer"),
    "SP303": ("error", "lane has more than one producer"),
    "SP304": ("error", "lane has no consumer"),
    "SP305": ("error", "events lane has more than one consumer"),
    "SP306": ("error", "cycle"),
    "SP308": ("error", "setting not allowed for this lane kind"),
    "SP309": ("error", "`after` needs a shared slots lane"),
    "SP310": ("error", "reference to an unknown stage"),
    "SP312": ("error", "name used by two nodes"),
    "SP313": ("warning", "op is not a built-in op"),
    "SP314": ("warning", "adapter is not known"),
    "SP315": ("error", "adapter cannot play this role"),
    "SP316": ("error", "too many consumers for one lane"),
    "SP317": ("error", "merge set on a single input"),
    "SP318": ("warning", "fanout lane with a single consumer"),
    "SP319": ("error", "pipeline has no source"),
    "SP320": ("error", "stages of one process disagree on the crash policy"),
    "SP321": ("error", "restart asked for a stage of the main process"),
    "SP322": ("warning", "restart setting without on_crash = restart"),
    "SP323": ("error", "restart asked for a stage reading an overwrite lane"),
    "SP401": ("error", "single_ring needs exactly one slots lane"),
    "SP402": ("error", "single_ring needs exactly one source"),
    "SP403": ("error", "single_ring stages transform in place"),
    "SP404": ("error", "single_ring stages must form one chain"),
    "SP405": ("error", "single_ring sinks must follow the last stage"),
    "SP407": ("error", "single_ring stages are not restarted"),
    # SP406 ("single_ring runs in one process") is retired: SingleRing places stages in
    # processes like LaneGraph MP.
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in a spec.

    Attributes:
        code: stable identifier, e.g. ``"SP201"``.
        severity: ``"error"`` (the spec is invalid) or ``"warning"``.
        key: the spec key the finding is about ("" for the whole input).
        line: 1-based line in the input, or ``None`` when there is no line (missing key,
            a spec built in code).
        message: what is wrong and what to do about it.
        suggestion: the "did you mean" candidate, when there is one.
    """

    code: str
    severity: Severity
    key: str
    line: int | None
    message: str
    suggestion: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity,
            "key": self.key,
            "line": self.line,
            "message": self.message,
            "suggestion": self.suggestion,
        }

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "-"
        key = f" {self.key}:" if self.key else ""
        return f"{where}: {self.severity} {self.code}:{key} {self.message}"


def make(
    code: str, key: str, line: int | None, message: str, suggestion: str | None = None
) -> Finding:
    """A finding with the severity registered for ``code``."""
    return Finding(code, CODES[code][0], key, line, message, suggestion)


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The closest candidate to ``word``, or ``None`` if nothing is close."""
    pool = sorted(set(candidates))
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=cutoff)
    return matches[0] if matches else None


def hint(suggestion: str | None) -> str:
    return f" (did you mean {suggestion!r}?)" if suggestion else ""


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings in a stable order: by line (no line last), then code, then key."""
    return sorted(
        findings,
        key=lambda f: (f.line is None, f.line or 0, f.code, f.key, f.message),
    )
