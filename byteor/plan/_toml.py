"""Plans as TOML files (parsed with tomllib; the caller reads the file).

::

    name = "orders"

    [sources.kafka_in]
    adapter = "kafka"
    params = { topic = "orders" }

    [stages.enrich]
    op = "examples.orders:enrich"
    inputs = ["kafka_in"]

    [sinks.nats_out]
    adapter = "nats"
    inputs = ["enrich"]
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from byteor.plan._errors import PlanValidationError
from byteor.plan._model import (
    PLAN_VERSION,
    PipelinePlanV2,
    PlanFinding,
    PlanSink,
    PlanSource,
    PlanStage,
)
from byteor.plan._params import ParamError, flatten_params
from byteor.plan._validate import close_match, plan_finding, validate_plan_v2

__all__ = ["ParsedPlan", "parse_plan_toml", "plan_from_toml", "MAX_PLAN_BYTES"]

MAX_PLAN_BYTES: Final = 1 << 20

_TOP_KEYS: Final = ("version", "name", "sources", "stages", "sinks")
_NODE_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "sources": ("adapter", "params", "message_bytes", "capacity", "journal"),
    "stages": ("op", "inputs", "params", "process", "message_bytes", "capacity", "merge"),
    "sinks": ("adapter", "inputs", "params", "merge"),
}
_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "sources": ("adapter",),
    "stages": ("op", "inputs"),
    "sinks": ("adapter", "inputs"),
}
_HEADER_RE: Final = re.compile(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_RE: Final = re.compile(r"\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")
_LINE_RE: Final = re.compile(r"at line (\d+)")


@dataclass(frozen=True, slots=True)
class ParsedPlan:
    """A plan read from TOML: the plan (``None`` on error findings) and every finding."""

    plan: PipelinePlanV2 | None
    findings: tuple[PlanFinding, ...]
    lines: Mapping[str, int]

    @property
    def ok(self) -> bool:
        return self.plan is not None


def _key_lines(text: str) -> dict[str, int]:
    """Dotted key -> line, from a light scan (tomllib keeps no positions)."""
    out: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.split("\n"), start=1):
        m = _HEADER_RE.match(line)
        if m and line.lstrip().startswith("["):
            table = ".".join(p.strip().strip("\"'") for p in m.group(1).split("."))
            out.setdefault(table, number)
            continue
        m = _KEY_RE.match(line)
        if m:
            key = ".".join(p.strip().strip("\"'") for p in m.group(1).split("."))
            full = f"{table}.{key}" if table else key
            out.setdefault(full, number)
            parts = full.split(".")
            for i in range(1, len(parts)):
                out.setdefault(".".join(parts[:i]), number)
    return out


def _decode(source: str | bytes) -> tuple[str | None, list[PlanFinding]]:
    if len(source) > MAX_PLAN_BYTES:
        return None, [
            plan_finding(
                "PL101", "", 1, f"input is larger than {MAX_PLAN_BYTES} bytes: not a plan file"
            )
        ]
    if isinstance(source, bytes):
        if b"\x00" in source:
            line = source.count(b"\n", 0, source.index(b"\x00")) + 1
            return None, [plan_finding("PL101", "", line, "binary content (NUL byte): not a plan")]
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = source.count(b"\n", 0, exc.start) + 1
            return None, [
                plan_finding("PL101", "", line, "not valid UTF-8: save the file as UTF-8")
            ]
        return text.removeprefix("\ufeff"), []
    return source.removeprefix("\ufeff"), []


def parse_plan_toml(source: str | bytes) -> ParsedPlan:
    """Parse and validate a TOML plan. Never raises on bad input."""
    text, findings = _decode(source)
    if text is None:
        return ParsedPlan(None, tuple(findings), {})
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _LINE_RE.search(str(exc))
        line = int(m.group(1)) if m else None
        return ParsedPlan(
            None,
            (plan_finding("PL102", "", line, f"TOML syntax error: {exc}"),),
            {},
        )
    except (ValueError, RecursionError) as exc:
        return ParsedPlan(None, (plan_finding("PL102", "", None, f"unreadable TOML: {exc}"),), {})
    lines = _key_lines(text)
    builder = _Loader(lines)
    plan = builder.load(data)
    # One mistake, one finding: keys the loader already reported are not checked again.
    reported = {f.key for f in builder.findings}
    later = [
        f
        for f in validate_plan_v2(plan, lines)
        if f.key not in reported and f.key.rsplit(".", 1)[0] not in reported
    ]
    findings = builder.findings + later
    findings.sort(key=lambda f: (f.line is None, f.line or 0, f.code, f.key))
    ok = not any(f.severity == "error" for f in findings)
    return ParsedPlan(plan if ok else None, tuple(findings), lines)


def plan_from_toml(source: str | bytes) -> PipelinePlanV2:
    """The plan of a TOML text.

    Raises:
        PlanValidationError: the text has error findings (all listed in ``.findings``).
    """
    parsed = parse_plan_toml(source)
    if parsed.plan is None:
        raise PlanValidationError(parsed.findings)
    return parsed.plan


class _Loader:
    def __init__(self, lines: Mapping[str, int]) -> None:
        self.lines = lines
        self.findings: list[PlanFinding] = []

    def add(self, code: str, key: str, message: str, suggestion: str | None = None) -> None:
        self.findings.append(plan_finding(code, key, self.lines.get(key), message, suggestion))

    def unknown(self, key: str, word: str, allowed: tuple[str, ...]) -> None:
        guess = close_match(word, allowed)
        more = f" (did you mean {guess!r}?)" if guess else ""
        self.add(
            "PL201",
            key,
            f"{key} is not a plan key{more}; allowed here: {', '.join(allowed)}",
            guess,
        )

    def wrong(self, key: str, expected: str, value: object) -> None:
        self.add(
            "PL203", key, f"{key} must be {expected}, not {type(value).__name__} {value!r:.40}"
        )

    def text(self, key: str, value: object, default: str = "") -> str:
        if isinstance(value, str):
            return value
        self.wrong(key, "a string", value)
        return default

    def integer(self, key: str, value: object) -> int | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.wrong(key, "an integer", value)
        return None

    def names(self, key: str, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.wrong(key, 'a node name or a list of names (["a", "b"])', value)
        return ()

    def params(self, key: str, value: object) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.wrong(key, 'a table (params = { topic = "t" })', value)
            return {}
        try:
            return flatten_params(value)
        except ParamError as exc:
            self.add("PL203", f"{key}.{exc.key}", str(exc))
            return {}

    def load(self, data: dict[str, Any]) -> PipelinePlanV2:
        for key in data:
            if key not in _TOP_KEYS:
                self.unknown(key, key, _TOP_KEYS)
        version = data.get("version", PLAN_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            self.wrong("version", "an integer", version)
            version = PLAN_VERSION
        if "name" not in data:
            self.add("PL202", "name", 'the plan has no name: add `name = "<pipeline>"`')
        name = self.text("name", data.get("name", ""), "")
        tables: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for table in ("sources", "stages", "sinks"):
            raw = data.get(table, {})
            if not isinstance(raw, dict):
                self.wrong(table, f"a table of {table} ([{table}.<name>])", raw)
                raw = {}
            entries: list[tuple[str, dict[str, Any]]] = []
            for node, body in raw.items():
                key = f"{table}.{node}"
                if not isinstance(body, dict):
                    self.wrong(key, f"a table ([{key}])", body)
                    continue
                for field in body:
                    if field not in _NODE_KEYS[table]:
                        self.unknown(f"{key}.{field}", field, _NODE_KEYS[table])
                for field in _REQUIRED[table]:
                    if field not in body:
                        example = {"adapter": '"kafka"', "op": '"identity"', "inputs": '["src"]'}
                        self.add(
                            "PL202",
                            key,
                            f"{table[:-1]} {node!r} has no {field}: add `{field} = "
                            f"{example[field]}` to [{key}]",
                        )
                entries.append((node, body))
            tables[table] = entries
        sources = tuple(
            PlanSource(
                name=n,
                adapter=self.text(f"sources.{n}.adapter", b.get("adapter", "")),
                params=self.params(f"sources.{n}.params", b.get("params")),
                message_bytes=self.integer(f"sources.{n}.message_bytes", b.get("message_bytes")),
                capacity=self.integer(f"sources.{n}.capacity", b.get("capacity")),
                journal=self.flag(f"sources.{n}.journal", b.get("journal", False)),
            )
            for n, b in tables["sources"]
        )
        stages = tuple(
            PlanStage(
                name=n,
                op=self.text(f"stages.{n}.op", b.get("op", "")),
                inputs=self.names(f"stages.{n}.inputs", b.get("inputs", [])),
                params=self.params(f"stages.{n}.params", b.get("params")),
                process=self.optional_text(f"stages.{n}.process", b.get("process")),
                message_bytes=self.integer(f"stages.{n}.message_bytes", b.get("message_bytes")),
                capacity=self.integer(f"stages.{n}.capacity", b.get("capacity")),
                merge=self.optional_text(f"stages.{n}.merge", b.get("merge")),
            )
            for n, b in tables["stages"]
        )
        sinks = tuple(
            PlanSink(
                name=n,
                adapter=self.text(f"sinks.{n}.adapter", b.get("adapter", "")),
                inputs=self.names(f"sinks.{n}.inputs", b.get("inputs", [])),
                params=self.params(f"sinks.{n}.params", b.get("params")),
                merge=self.optional_text(f"sinks.{n}.merge", b.get("merge")),
            )
            for n, b in tables["sinks"]
        )
        return PipelinePlanV2(name, sources, stages, sinks, version)

    def flag(self, key: str, value: object) -> bool:
        if isinstance(value, bool):
            return value
        self.wrong(key, "true or false", value)
        return False

    def optional_text(self, key: str, value: object) -> str | None:
        if value is None:
            return None
        return self.text(key, value) or None
