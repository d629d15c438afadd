"""The ``edgeplane`` command: ``run``, ``validate`` and ``describe`` a pipeline.

``validate`` and ``describe`` are ``byteor validate`` and ``byteor describe`` (the same
loading, adapter checks, findings and description: ``byteor.cli``), on the file after
``${VAR}`` interpolation, with EdgePlane's own shape checks (``EP1xx``) added and every
secret replaced by ``***`` in what they print.

Every command takes ``--json``. Exit codes: 0 ok; 1 findings or a failed run; 2 usage,
unreadable input or something this machine cannot run; 128 + N when ``run`` is stopped at
once by a second signal N.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NoReturn

from byteor import __version__
from byteor.cli.common import (
    CliError,
    add_json_flag,
    check_adapters,
    declared,
    findings_json,
    load,
    read_bytes,
    render_findings,
    sniff_kind,
)
from byteor.edgeplane._config import (
    Redactor,
    add_option_arguments,
    add_path_argument,
    collect_secrets,
    environment_help,
    extend_import_path,
    import_dirs,
    interpolate,
)
from byteor.edgeplane._errors import InterpolationError, OptionError
from byteor.edgeplane._run import DEFAULT_BATCH, EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_command
from byteor.edgeplane._supervisor import shape_findings
from byteor.exec import build_graph
from byteor.lower import describe_spec, render_description
from byteor.spec import canonical_hash

__all__ = ["main", "build_parser"]

_EXITS = (
    "exit codes: 0 ok, 1 findings or a failed run, 2 usage error, unreadable input or "
    "something this machine cannot run, 128+N stopped at once by a second signal N"
)


class _Usage(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error under ``--json`` also prints a JSON document."""

    json_output = False

    def error(self, message: str) -> NoReturn:
        if self.json_output:
            sys.stdout.write(json.dumps({"error": message, "exit_code": EXIT_USAGE}) + "\n")
        super().error(message)


def _json_parser(base: type[_Parser]) -> type[_Parser]:
    return type("_JsonParser", (base,), {"json_output": True})


def build_parser(json_output: bool = False) -> argparse.ArgumentParser:
    parser_class = _json_parser(_Parser) if json_output else _Parser
    parser = parser_class(
        prog="edgeplane",
        description="EdgePlane runs a pipeline's adapter loops: sources into shared-memory "
        "lanes, the stages in their own processes, the lanes out to the sinks; at least once "
        "end to end, with back-pressure, restarts and metrics.",
        epilog=f"{_EXITS}\n\n{environment_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgeplane (byteor {__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=parser_class)

    p = sub.add_parser(
        "run",
        help="run a spec or plan until its sources end or SIGTERM drains it",
        description="Run a pipeline spec or plan (.toml): one edge process per source and "
        "per sink, one process per stage group, lanes in /dev/shm/byteor-NAME.*. Upstream "
        "acknowledgements follow what the sinks confirmed. SIGTERM/SIGINT: stop reading, "
        "drain, acknowledge, exit 0; a second signal exits at once. The summary goes to "
        "stderr (or as JSON to stdout with --json).",
        epilog=f"{_EXITS}\n\n{environment_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="spec or plan (.toml) file")
    _target(p)
    p.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"most records an edge or stage moves at a time (default {DEFAULT_BATCH})",
    )
    add_option_arguments(p)
    add_json_flag(p)
    p.set_defaults(handler=run_command)

    p = sub.add_parser(
        "validate",
        help="check a spec or plan as `byteor validate` does, plus what EdgePlane runs",
        description="`byteor validate` on the file after ${VAR} interpolation (adapter params "
        "checked against their schemas), plus EdgePlane's checks (EP101: a stage or sink "
        "reading several lanes; EP102: a lane with policy overwrite; EP103: slot_bytes "
        "leaving no room for the 8-byte stamp). Secrets print as ***. "
        "Exit 0 valid, 1 error findings (or warnings with --strict), 2 unreadable.",
    )
    p.add_argument("file", help="spec or plan file")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    _secret_env(p)
    add_path_argument(p)
    _target(p)
    add_json_flag(p)
    p.set_defaults(handler=_validate)

    p = sub.add_parser(
        "describe",
        help="processes, lanes and delivery per path, as `byteor describe`, and the "
        "EdgePlane processes",
    )
    p.add_argument("file", help="spec or plan file")
    _secret_env(p)
    add_path_argument(p)
    _target(p)
    add_json_flag(p)
    p.set_defaults(handler=_describe)
    return parser


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        choices=("auto", "single_ring", "lane_graph"),
        default="auto",
        help="target a plan is lowered to (default: auto)",
    )


def _secret_env(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--secret-env",
        dest="secret_env",
        action="append",
        default=None,
        metavar="VAR",
        help="VAR's value is secret: printed as *** (repeat for several)",
    )


def _emit(args: argparse.Namespace, text: str, doc: Any, redactor: Redactor) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(redactor.redact(json.dumps(doc, indent=2, sort_keys=True)) + "\n")
    else:
        out = redactor.redact(text)
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
    sys.stdout.flush()


def _loaded(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Any, Redactor]:
    """The file through ``byteor.cli``'s loader after interpolation, adapters checked,
    EdgePlane's findings added; and the secrets to hide."""
    try:
        extend_import_path(args.file, import_dirs(getattr(args, "path", None), env))
    except OptionError as exc:
        raise _Usage(str(exc)) from None
    try:
        data = read_bytes(args.file)
    except CliError as exc:
        raise _Usage(str(exc), exc.code) from None
    secret_env = tuple(args.secret_env or ()) + tuple(
        n for n in env.get("EDGEPLANE_SECRET_ENV", "").replace(",", " ").split() if n
    )
    redactor = Redactor()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None  # the loader reports it as a finding, with the line
    if text is not None:
        syntax: Literal["kv", "toml"] = "toml" if sniff_kind(args.file, data) == "plan" else "kv"
        try:
            done = interpolate(text, env, syntax=syntax, path=args.file)
        except InterpolationError as exc:
            raise _Usage(str(exc)) from None
        data = done.text.encode("utf-8")
    loaded = load(args.file, args.target, data=data)
    check_adapters(loaded)
    if text is not None:
        params: list[str] = []
        if loaded.spec is not None:
            spec = loaded.spec
            for nodes in (spec.sources, spec.stages, spec.sinks):
                params += [v for n in nodes.values() for v in n.params.values()]
        redactor = collect_secrets(done, env, secret_env, params)
    if loaded.spec is not None and not loaded.errors:
        loaded.findings = [*loaded.findings, *shape_findings(loaded.spec)]
    return loaded, redactor


def _validate(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    loaded, redactor = _loaded(args, os.environ if env is None else env)
    failed = loaded.errors > 0 or (args.strict and loaded.warnings > 0)
    if loaded.errors:
        last = f"{loaded.path}: invalid {loaded.kind}: {loaded.errors} error(s), "
        last += f"{loaded.warnings} warning(s)"
    else:
        extra = f", {loaded.warnings} warning(s)" if loaded.warnings else ""
        last = (
            f"{loaded.path}: ok ({loaded.kind}, {loaded.spec.target}, "
            f"{canonical_hash(loaded.spec)}){extra}: EdgePlane can run it"
        )
    text = "\n".join(x for x in (render_findings(loaded), last) if x)
    ok = loaded.spec is not None and not loaded.errors
    doc = {
        "file": loaded.path,
        "kind": loaded.kind,
        "valid": loaded.errors == 0,
        "errors": loaded.errors,
        "warnings": loaded.warnings,
        "findings": findings_json(loaded),
        "target": loaded.spec.target if loaded.spec is not None else None,
        "hash": canonical_hash(loaded.spec) if ok else None,
    }
    _emit(args, text, doc, redactor)
    return EXIT_FAILED if failed else EXIT_OK


def edge_processes(spec: Any) -> list[dict[str, Any]]:
    """The processes ``edgeplane run`` starts for ``spec``, in start order."""
    graph = build_graph(spec)
    out: list[dict[str, Any]] = []
    for n in graph.nodes:
        if n.kind == "sink":
            out.append({"process": f"edge-out:{n.name}", "runs": [n.name], "adapter": n.op})
    groups: dict[str, list[str]] = {}
    for n in graph.nodes:
        if n.kind == "stage":
            groups.setdefault(n.process, []).append(n.name)
    for process in sorted(groups):
        out.append({"process": f"stages:{process}", "runs": groups[process]})
    for n in graph.nodes:
        if n.kind == "source":
            out.append({"process": f"edge-in:{n.name}", "runs": [n.name], "adapter": n.op})
    return out


def _describe(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    loaded, redactor = _loaded(args, os.environ if env is None else env)
    if loaded.spec is None:
        text = render_findings(loaded) + f"\n{loaded.path}: invalid {loaded.kind}, no description"
        _emit(
            args,
            text,
            {"file": loaded.path, "valid": False, "findings": findings_json(loaded)},
            redactor,
        )
        return EXIT_FAILED
    d = describe_spec(loaded.spec, declared(loaded))
    d["warnings"] = findings_json(loaded)
    processes = edge_processes(loaded.spec) if not loaded.errors else []
    d["edgeplane"] = {"processes": processes, "stamp_bytes": 8}
    text = render_description(d)
    if processes:
        text += "\nedgeplane processes (each lane's slots are 8 bytes wider, for the stamp):\n"
        for p in processes:
            adapter = f" ({p['adapter']})" if "adapter" in p else ""
            text += f"  {p['process']}{adapter}: {', '.join(p['runs'])}\n"
    if loaded.findings:
        text += "\n" + render_findings(loaded) + "\n"
    _emit(args, text, d, redactor)
    return EXIT_FAILED if loaded.errors else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """The ``edgeplane`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(json_output="--json" in args_list)
    args = parser.parse_args(args_list)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(handler(args))
    except _Usage as exc:
        if getattr(args, "json", False):
            sys.stdout.write(json.dumps({"error": str(exc), "exit_code": exc.code}) + "\n")
        sys.stderr.write(f"edgeplane: error: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
