"""Spec commands: ``validate``, ``fmt``, ``hash``, ``diff``, ``compatibility``.

Exit codes: 0 ok, 1 findings or differences, 2 usage error or unreadable input.
"""

from __future__ import annotations

import argparse
import sys

from byteor.cli._adapters import check_adapters
from byteor.cli._load import (
    Loaded,
    add_target_flag,
    findings_json,
    load,
    read_bytes,
    render_findings,
    sniff_kind,
    write_text,
)
from byteor.cli._output import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, CliError, add_json_flag, emit
from byteor.spec import (
    SpecSource,
    canonical,
    canonical_hash,
    check_compatibility,
    diff_specs,
    parse_kv,
)

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="check a spec or plan file: every finding with code, line and a fix",
        description="Validate a pipeline spec (key = value) or plan (.toml), and the params "
        "of every source and sink against its adapter's config schema (AD501-AD504; AD505, a "
        "warning, when the adapter's client library is not installed here). "
        "Exit 0 when valid, 1 on error findings (or warnings with --strict), 2 if unreadable.",
    )
    p.add_argument("file", help="spec or plan file (- for stdin)")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    add_target_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=_validate)

    p = sub.add_parser(
        "fmt",
        help="print a spec in canonical form, or rewrite it (--write)",
        description="Canonical form: keys sorted, values normalized, defaults and comments "
        "removed. Exit 1 when the file has syntax errors (nothing is written) or, with "
        "--check, when it is not canonical.",
    )
    p.add_argument("file", help="spec file (- for stdin)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-w", "--write", action="store_true", help="rewrite the file in place")
    mode.add_argument("--check", action="store_true", help="exit 1 if the file is not canonical")
    add_json_flag(p)
    p.set_defaults(handler=_fmt)

    p = sub.add_parser(
        "hash",
        help="canonical hash (sha256:...) of a spec, or of the spec a plan lowers to",
    )
    p.add_argument("file", help="spec or plan file (- for stdin)")
    add_target_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=_hash)

    p = sub.add_parser(
        "diff",
        help="semantic diff of two specs, grouped by lane, stage, source and sink",
        description="Exit 0 when both mean the same (equal hashes), 1 when they differ.",
    )
    p.add_argument("a", help="old spec or plan")
    p.add_argument("b", help="new spec or plan")
    add_target_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=_diff)

    p = sub.add_parser(
        "compatibility",
        help="can a running pipeline of spec A move to spec B in place?",
        description="Lists every reason. Exit 0 when compatible, 1 when not (or when a "
        "spec is invalid), 2 if unreadable.",
    )
    p.add_argument("a", help="running spec (or plan)")
    p.add_argument("b", help="new spec (or plan)")
    add_target_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=_compatibility)


def _summary(loaded: Loaded) -> str:
    if loaded.errors:
        return (
            f"{loaded.path}: invalid {loaded.kind}: {loaded.errors} error(s), "
            f"{loaded.warnings} warning(s)"
        )
    assert loaded.spec is not None
    extra = f", {loaded.warnings} warning(s)" if loaded.warnings else ""
    return (
        f"{loaded.path}: ok ({loaded.kind}, {loaded.spec.target}, "
        f"{canonical_hash(loaded.spec)}){extra}"
    )


def _validate(args: argparse.Namespace) -> int:
    loaded = load(args.file, args.target)
    check_adapters(loaded)
    failed = loaded.errors > 0 or (args.strict and loaded.warnings > 0)
    text = "\n".join(x for x in (render_findings(loaded), _summary(loaded)) if x)
    doc = {
        "file": loaded.path,
        "kind": loaded.kind,
        "valid": loaded.errors == 0,
        "errors": loaded.errors,
        "warnings": loaded.warnings,
        "findings": findings_json(loaded),
        "target": loaded.spec.target if loaded.spec else None,
        "hash": canonical_hash(loaded.spec) if loaded.spec else None,
    }
    emit(args, text, doc)
    return EXIT_FINDINGS if failed else EXIT_OK


def _fmt(args: argparse.Namespace) -> int:
    data = read_bytes(args.file)
    if sniff_kind(args.file, data) == "plan":
        raise CliError(
            f"{args.file}: is a plan; fmt formats specs (`byteor lower {args.file}` prints "
            "the spec of a plan)",
            EXIT_USAGE,
        )
    doc = parse_kv(data)
    if doc.findings:
        loaded = Loaded(args.file, "spec", data, findings=list(doc.findings))
        emit(
            args,
            render_findings(loaded) + f"\n{args.file}: not formatted: fix the syntax errors first",
            {"file": args.file, "formatted": False, "findings": findings_json(loaded)},
        )
        return EXIT_FINDINGS
    text = canonical(doc)
    changed = text.encode("utf-8") != data
    if args.write:
        if args.file == "-":
            raise CliError("--write needs a file, not stdin", EXIT_USAGE)
        if changed:
            write_text(args.file, text)
        emit(
            args,
            f"{args.file}: {'reformatted' if changed else 'already canonical'}",
            {"file": args.file, "formatted": True, "changed": changed, "hash": canonical_hash(doc)},
        )
        return EXIT_OK
    if args.check:
        emit(
            args,
            f"{args.file}: {'not canonical (run byteor fmt -w)' if changed else 'canonical'}",
            {"file": args.file, "canonical": not changed, "hash": canonical_hash(doc)},
        )
        return EXIT_FINDINGS if changed else EXIT_OK
    if getattr(args, "json", False):
        emit(args, text, {"file": args.file, "canonical": text, "changed": changed,
                          "hash": canonical_hash(doc)})  # fmt: skip
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_OK


def _require_spec(loaded: Loaded, what: str) -> None:
    if loaded.spec is None:
        raise _Invalid(loaded, what)


class _Invalid(Exception):
    def __init__(self, loaded: Loaded, what: str) -> None:
        super().__init__(what)
        self.loaded = loaded
        self.what = what


def _report_invalid(args: argparse.Namespace, exc: _Invalid) -> int:
    loaded = exc.loaded
    emit(
        args,
        render_findings(loaded) + f"\n{loaded.path}: invalid {loaded.kind}, no {exc.what}",
        {"file": loaded.path, "valid": False, "findings": findings_json(loaded)},
    )
    return EXIT_FINDINGS


def _hash(args: argparse.Namespace) -> int:
    loaded = load(args.file, args.target)
    try:
        _require_spec(loaded, "hash")
    except _Invalid as exc:
        return _report_invalid(args, exc)
    assert loaded.spec is not None
    h = canonical_hash(loaded.spec)
    emit(args, h, {"file": loaded.path, "kind": loaded.kind, "target": loaded.spec.target,
                   "hash": h})  # fmt: skip
    return EXIT_OK


def _diff_source(loaded: Loaded) -> SpecSource:
    if loaded.spec is not None:
        return loaded.spec
    if loaded.kind == "spec":
        return parse_kv(loaded.data)
    raise _Invalid(loaded, "diff")


def _diff(args: argparse.Namespace) -> int:
    a = load(args.a, args.target)
    b = load(args.b, args.target)
    try:
        sa, sb = _diff_source(a), _diff_source(b)
    except _Invalid as exc:
        return _report_invalid(args, exc)
    result = diff_specs(sa, sb)
    doc = result.to_dict()
    doc.update({"a": args.a, "b": args.b})
    emit(args, result.render(), doc)
    return EXIT_OK if result.equal else EXIT_FINDINGS


def _compatibility(args: argparse.Namespace) -> int:
    a = load(args.a, args.target)
    b = load(args.b, args.target)
    try:
        _require_spec(a, "compatibility check")
        _require_spec(b, "compatibility check")
    except _Invalid as exc:
        return _report_invalid(args, exc)
    assert a.spec is not None and b.spec is not None
    report = check_compatibility(a.spec, b.spec)
    lines = [f"{r.impact} {r.code} [{r.key}]: {r.message}" for r in report.reasons]
    verdict = (
        "compatible: B can replace a running A in place"
        if report.compatible
        else "incompatible: drain A and start B as a new deployment"
    )
    lines.append(verdict)
    doc = report.to_dict()
    doc.update({"a": args.a, "b": args.b, "hash_a": canonical_hash(a.spec),
                "hash_b": canonical_hash(b.spec)})  # fmt: skip
    emit(args, "\n".join(lines), doc)
    return EXIT_OK if report.compatible else EXIT_FINDINGS
