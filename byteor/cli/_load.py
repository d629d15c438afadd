"""Reading spec and plan files for the CLI: the only place the spec commands touch disk.

A file is a plan when its name ends in ``.toml`` or it has a ``[table]`` line; otherwise it
is a spec. At most ``MAX_SPEC_BYTES + 1`` bytes are read, so a huge file is one finding,
not a memory problem. Missing, unreadable and directory paths are usage errors (exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from byteor.cli._output import EXIT_USAGE, CliError
from byteor.lower import LowerError, LowerOptions, TargetChoice, lower_v2
from byteor.plan import MAX_PLAN_BYTES, PipelinePlanV2, parse_plan_toml
from byteor.spec import MAX_SPEC_BYTES, KvDocument, PipelineSpecV1, parse_spec, validate_v1

__all__ = [
    "Loaded",
    "FindingLike",
    "read_bytes",
    "write_text",
    "sniff_kind",
    "load",
    "load_spec",
    "render_findings",
    "findings_json",
    "add_target_flag",
]

Kind = Literal["spec", "plan"]


class FindingLike(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def line(self) -> int | None: ...
    @property
    def message(self) -> str: ...

    def to_dict(self) -> dict[str, object]: ...


@dataclass
class Loaded:
    """What a file held: its kind, the spec (direct or lowered) and every finding.

    ``document`` is a spec file's parsed lines (kept when the spec has errors, so its
    adapters' params can still be checked); ``plan_lines`` maps a plan's dotted TOML keys
    to their lines.
    """

    path: str
    kind: Kind
    data: bytes
    spec: PipelineSpecV1 | None = None
    plan: PipelinePlanV2 | None = None
    findings: list[FindingLike] = field(default_factory=list)
    document: KvDocument | None = None
    plan_lines: Mapping[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == "warning")


def read_bytes(path: str) -> bytes:
    """The first ``MAX + 1`` bytes of ``path`` (``-`` is stdin); CliError(2) if unreadable."""
    limit = max(MAX_SPEC_BYTES, MAX_PLAN_BYTES) + 1
    if path == "-":
        return sys.stdin.buffer.read(limit)
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", EXIT_USAGE) from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, give a spec or plan file", EXIT_USAGE) from None
    except PermissionError:
        raise CliError(f"{path}: permission denied", EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}", EXIT_USAGE) from None


def write_text(path: str, text: str) -> None:
    """Replace ``path`` atomically with ``text`` (UTF-8)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".byteor-", dir=directory)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    except OSError as exc:
        raise CliError(f"{path}: cannot write: {exc.strerror or exc}", EXIT_USAGE) from None


def sniff_kind(path: str, data: bytes) -> Kind:
    if path.endswith(".toml"):
        return "plan"
    if path.endswith((".spec", ".kv")):
        return "spec"
    for raw in data[:65536].split(b"\n"):
        line = raw.strip()
        if line.startswith(b"["):
            return "plan"
    return "spec"


def add_target_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        choices=("auto", "single_ring", "lane_graph"),
        default="auto",
        help="target used when FILE is a plan (default: auto)",
    )


def load(
    path: str,
    target: TargetChoice = "auto",
    opts: LowerOptions | None = None,
    data: bytes | None = None,
) -> Loaded:
    """Read and check a spec or plan file; a plan is lowered to ``target``."""
    if data is None:
        data = read_bytes(path)
    kind = sniff_kind(path, data)
    loaded = Loaded(path, kind, data)
    if kind == "spec":
        parsed = parse_spec(data)
        loaded.spec = parsed.spec
        loaded.document = parsed.document
        loaded.findings = list(parsed.findings)
        return loaded
    parsed_plan = parse_plan_toml(data)
    loaded.plan = parsed_plan.plan
    loaded.plan_lines = parsed_plan.lines
    loaded.findings = list(parsed_plan.findings)
    if parsed_plan.plan is not None:
        try:
            loaded.spec = lower_v2(parsed_plan.plan, target, opts)
        except LowerError as exc:
            loaded.findings.extend(exc.findings)
        else:
            # warnings about the lowered spec (an unknown adapter, say) concern the plan too
            loaded.findings.extend(validate_v1(loaded.spec))
    return loaded


def load_spec(path: str, target: TargetChoice = "auto") -> Loaded:
    return load(path, target)


def render_findings(loaded: Loaded) -> str:
    lines = []
    for f in loaded.findings:
        where = f"{loaded.path}:{f.line}" if f.line is not None else loaded.path
        key = f" [{f.key}]" if f.key else ""
        lines.append(f"{where}: {f.severity} {f.code}{key}: {f.message}")
    return "\n".join(lines)


def findings_json(loaded: Loaded) -> list[dict[str, object]]:
    return [f.to_dict() for f in loaded.findings]
