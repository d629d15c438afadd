"""Pipeline commands: ``lower``, ``describe``, ``dot``, ``capabilities``.

Exit codes: 0 ok, 1 findings, 2 usage error or unreadable input.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from byteor.cli._adapters import declared
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
from byteor.lower import LowerOptions, describe_spec, render_description, to_dot
from byteor.spec import (
    ADAPTERS,
    BUILTIN_OPS,
    LANE_KINDS,
    MAX_CAPACITY,
    MAX_SLOT_BYTES,
    MIN_CAPACITY,
    MIN_SLOT_BYTES,
    SPEC_VERSION,
    TARGETS,
    canonical_hash,
    encode_spec,
)

__all__ = ["register"]

_LANE_KIND_TEXT = {
    "events": "bounded lossless queue, one producer, one consumer",
    "journal": "append-only, keeps the last `capacity` entries; replay source; file-backable",
    "slots": "sequenced ring: stages transform slots in place, gated by sequence barriers",
    "fanout": "every consumer sees every message; block on the slowest or overwrite laggers",
}
_TARGET_TEXT = {
    "single_ring": "a linear chain of stages over one slots ring, one process",
    "lane_graph": "a graph of stages joined by lanes: fan-out, merges, many processes",
}


def _positive(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lower",
        help="lower a plan (.toml) to a canonical spec",
        description="Exit 0 with the spec on stdout (or in -o FILE), 1 when the plan has "
        "findings or cannot run on the target, 2 if unreadable.",
    )
    p.add_argument("plan", help="plan file (- for stdin)")
    add_target_flag(p)
    p.add_argument("--capacity", type=_positive, default=1024, help="default lane capacity")
    p.add_argument("--slot-bytes", type=_positive, default=256, help="default slot size")
    p.add_argument(
        "--placement",
        choices=("single", "per_stage"),
        default="single",
        help="stages without a process: all in `main`, or one process each",
    )
    p.add_argument("--journal-sources", action="store_true", help="journal every source")
    p.add_argument("--wait", choices=("backoff", "spin"), default="backoff")
    p.add_argument("-o", "--output", help="write the spec to this file instead of stdout")
    add_json_flag(p)
    p.set_defaults(handler=_lower)

    p = sub.add_parser(
        "describe",
        help="processes, lanes (kind, geometry, shared memory), barriers, delivery per path",
    )
    p.add_argument("file", help="spec or plan file (- for stdin)")
    add_target_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=_describe)

    p = sub.add_parser("dot", help="Graphviz DOT of the pipeline (render: dot -Tsvg)")
    p.add_argument("file", help="spec or plan file (- for stdin)")
    add_target_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=_dot)

    p = sub.add_parser(
        "capabilities",
        help="lane kinds, targets, built-in ops, adapters (installed or the extra to install)",
    )
    add_json_flag(p)
    p.set_defaults(handler=_capabilities)


def _invalid(args: argparse.Namespace, loaded: Loaded, what: str) -> int:
    emit(
        args,
        render_findings(loaded) + f"\n{loaded.path}: invalid {loaded.kind}, no {what}",
        {"file": loaded.path, "valid": False, "findings": findings_json(loaded)},
    )
    return EXIT_FINDINGS


def _lower(args: argparse.Namespace) -> int:
    data = read_bytes(args.plan)
    if sniff_kind(args.plan, data) == "spec" and not args.plan.endswith(".toml"):
        raise CliError(
            f"{args.plan}: looks like a spec, not a plan (a plan is TOML with "
            "[sources.<name>] tables); `byteor fmt` formats a spec",
            EXIT_USAGE,
        )
    opts = LowerOptions(
        capacity=args.capacity,
        slot_bytes=args.slot_bytes,
        placement=args.placement,
        journal_sources=args.journal_sources,
        wait=args.wait,
    )
    loaded = load(args.plan, args.target, opts, data=data)
    if loaded.spec is None:
        return _invalid(args, loaded, "spec")
    text = encode_spec(loaded.spec)
    h = canonical_hash(loaded.spec)
    doc = {"file": args.plan, "target": loaded.spec.target, "hash": h, "spec": text}
    if args.output:
        write_text(args.output, text)
        emit(args, f"{args.output}: {loaded.spec.target} spec, {h}", doc)
    elif getattr(args, "json", False):
        emit(args, text, doc)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_OK


def _describe(args: argparse.Namespace) -> int:
    loaded = load(args.file, args.target)
    if loaded.spec is None:
        return _invalid(args, loaded, "description")
    d = describe_spec(loaded.spec, declared(loaded))
    d["warnings"] = findings_json(loaded)
    text = render_description(d)
    if loaded.findings:
        text += "\n" + render_findings(loaded) + "\n"
    emit(args, text, d)
    return EXIT_OK


def _dot(args: argparse.Namespace) -> int:
    loaded = load(args.file, args.target)
    if loaded.spec is None:
        return _invalid(args, loaded, "graph")
    dot = to_dot(loaded.spec)
    if getattr(args, "json", False):
        emit(args, dot, {"file": loaded.path, "dot": dot, "hash": canonical_hash(loaded.spec)})
    else:
        sys.stdout.write(dot)
        sys.stdout.flush()
    return EXIT_OK


def _installed(module: str | None) -> bool:
    if module is None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _adapter_rows() -> list[dict[str, Any]]:
    """Every adapter a spec can name: the spec's table and the registry (third parties too).

    Adapters shipped here are described from the spec's table, which a test keeps equal to
    their declarations, and "installed" is whether their client library can be found: no
    client library is imported, so the command stays fast. A third-party adapter is not in
    the table: it is loaded to read its declaration, and a failure to load it is its status.
    """
    from byteor.adapters import AdapterUnavailable, available_adapters, load_adapter

    registry = available_adapters()
    rows: list[dict[str, Any]] = []
    for name in sorted(set(ADAPTERS) | set(registry)):
        entry = registry.get(name)
        caps = ADAPTERS.get(name)
        problem = None
        if caps is None and entry is not None:
            try:
                caps = load_adapter(name).declaration()
            except AdapterUnavailable as exc:
                problem = str(exc)
        extra = caps.extra if caps is not None else entry.extra if entry is not None else None
        client = caps.client_module if caps is not None else None
        third_party = name not in ADAPTERS
        install = entry.install_hint() if entry is not None and third_party else None
        if extra is not None:
            install = f"pip install 'byteor[{extra}]'"
        rows.append(
            {
                "name": name,
                "summary": caps.summary if caps is not None else "",
                "roles": [] if caps is None else _roles(caps),
                "builtin": extra is None and not third_party,
                "third_party": third_party,
                "distribution": entry.distribution if entry is not None else None,
                "extra": extra,
                "install": install,
                "client_module": client,
                "installed": problem is None and _installed(client),
                "problem": problem,
                "source": None if caps is None or caps.source is None else _delivery(caps.source),
                "sink": None if caps is None or caps.sink is None else _delivery(caps.sink),
            }
        )
    rows.sort(key=lambda a: (a["builtin"], a["third_party"], a["name"]))
    return rows


def _roles(caps: Any) -> list[str]:
    return [r for r, d in (("source", caps.source), ("sink", caps.sink)) if d is not None]


def _capabilities(args: argparse.Namespace) -> int:
    adapters = _adapter_rows()
    doc: dict[str, Any] = {
        "spec_version": SPEC_VERSION,
        "targets": [{"name": t, "summary": _TARGET_TEXT[t]} for t in TARGETS],
        "lane_kinds": [{"name": k, "summary": _LANE_KIND_TEXT[k]} for k in LANE_KINDS],
        "lane_limits": {
            "capacity": [MIN_CAPACITY, MAX_CAPACITY],
            "slot_bytes": [MIN_SLOT_BYTES, MAX_SLOT_BYTES],
        },
        "builtin_ops": [{"name": k, "summary": v} for k, v in BUILTIN_OPS.items()],
        "adapters": adapters,
    }
    lines = [f"spec version {SPEC_VERSION}", "", "targets:"]
    lines += [f"  {t['name']:<12} {t['summary']}" for t in doc["targets"]]
    lines += ["", "lane kinds:"]
    lines += [f"  {k['name']:<12} {k['summary']}" for k in doc["lane_kinds"]]
    lines.append(
        f"  capacity: power of two {MIN_CAPACITY}..{MAX_CAPACITY}; slot_bytes: multiple of 8 "
        f"{MIN_SLOT_BYTES}..{MAX_SLOT_BYTES}"
    )
    lines += ["", "built-in ops:"]
    lines += [f"  {o['name']:<12} {o['summary']}" for o in doc["builtin_ops"]]
    lines += ["", "adapters:"]
    for a in adapters:
        if a["builtin"]:
            status = "built in"
        elif a["problem"] is not None:
            status = f"not loadable: {a['problem']}"
        elif a["installed"]:
            status = f"installed ({a['client_module'] or a['distribution']}): {a['install']}"
        else:
            status = f"not installed: {a['install']}"
        lines.append(f"  {a['name']:<10} {'/'.join(a['roles']) or '-':<12} {status}")
        if a["summary"]:
            lines.append(f"  {'':<10} {a['summary']}")
    emit(args, "\n".join(lines), doc)
    return EXIT_OK


def _delivery(d: Any) -> dict[str, str]:
    return {"guarantee": d.guarantee, "ordering": d.ordering, "condition": d.condition}
