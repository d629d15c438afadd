"""``byteor run SPEC|PLAN``: run a pipeline with LaneGraph SP or MP.

``--executor sp`` runs every node in this process over in-memory lanes; ``mp`` runs each
``process`` group of stages in a worker process over shared-memory lanes under a supervisor
(sources, sinks and ``main`` stages in this process). ``ring`` runs a ``single_ring`` spec over
one SequencedSlots ring in shared memory, stages rewriting slots in place. ``auto`` (the
default) picks ``ring`` for a ``single_ring`` spec (the fastest target for a chain, see
BENCHMARKS.md), else ``mp`` when the spec places stages in more than one process, else
``sp``. All give the same output bytes.

A plan is lowered first (``--target``, default ``auto``). The run ends when every source has
ended; SIGINT or SIGTERM stop it gracefully (sources stop reading, what was admitted drains to
the sinks, exit 0); a second signal exits at once (128 + the signal number).

The summary (records per node, busy share, restarts, output sha256, elapsed seconds) goes to
stderr as text, or as one JSON document with ``--json``: on stdout, unless a ``stdout`` sink
writes records there, in which case on stderr. ``--name NAME`` puts the run's lanes and
per-node counters in shared memory under NAME for ``byteor snapshot NAME`` (with ``sp`` too).

MP supervises its workers: one that dies fails the run naming its stages, or is restarted
when the spec says ``on_crash = restart``; a stage that takes no record for
``--stall-timeout`` seconds while records wait for it (stuck in its op, a starved
round-robin merge) stops the run naming it.

Exit codes: 0 ran to the end (or stopped gracefully), 1 the spec has error findings or the run
failed (a stage under ``on_error = fail``, a stall, a dead worker), 2 unreadable input or
something this executor cannot run (an unknown op, a server adapter), 128 + N on a second
signal N.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from byteor.cli._output import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, add_json_flag

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run a spec or plan (SingleRing, LaneGraph SP or MP) and summarize",
        description="Run a pipeline spec or plan with SingleRing (ring) or the LaneGraph "
        "executor, in this process (sp) or one process per stage group (mp): deterministic, "
        "the same output bytes with every executor and on every run. Local adapters "
        "only (file, stdin, generator, stdout). SIGINT/SIGTERM drain and exit 0; a second "
        "signal exits at once. Exit 0 ok, 1 findings or a failed run, 2 unreadable or "
        "unsupported.",
    )
    p.add_argument("file", help="spec or plan (.toml) file")
    p.add_argument(
        "--target",
        choices=("auto", "single_ring", "lane_graph"),
        default="auto",
        help="target used when FILE is a plan (default: auto)",
    )
    p.add_argument(
        "--batch", type=int, default=64, help="most records a node moves at a time (default 64)"
    )
    p.add_argument(
        "--executor",
        choices=("auto", "sp", "mp", "ring"),
        default="auto",
        help="sp: every node in this process over in-memory lanes; mp: each stage "
        "`process` group in a worker process over /dev/shm lanes, watched by this process "
        "(a worker that dies fails the run, exit 1, naming its stages); ring: a single_ring "
        "spec over one shared-memory SequencedSlots ring, stages rewriting slots in place; "
        "auto (default): ring for a single_ring spec, else mp "
        "when the spec places stages in more than one process, else sp",
    )
    p.add_argument(
        "--name",
        default=None,
        help="name the run's shared-memory lanes byteor-NAME.<lane> and its per-node "
        "counters byteor-NAME.-counters, so that `byteor snapshot NAME` can read them while "
        "it runs (sp: lanes in shared memory instead of this process's; mp and ring: instead "
        "of a unique run id)",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="mp: stop the run when a stage takes no record for SECONDS while records wait "
        "for it, or stays that long inside its op (default 60; 0: never)",
    )
    add_json_flag(p)
    p.set_defaults(handler=_run)


class _ForcedExit(BaseException):
    """A second signal: leave now (a BaseException so nothing on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals() -> Iterator[Any]:
    """A StopToken that SIGINT/SIGTERM set; a second signal raises :class:`_ForcedExit`."""
    from byteor.exec import StopToken

    stop = StopToken()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.requested:
            raise _ForcedExit(signum)
        stop.request()

    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    stop.wake_fd = r
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(old_fd)
        os.close(r)
        os.close(w)


def _text(doc: dict[str, Any]) -> str:
    lines = [
        f"byteor run: {doc['pipeline']} ({doc['target']}, {doc['executor']}): "
        f"{doc['records_in']} in, {doc['records_out']} out in {doc['elapsed_s']:.3f} s"
        + (" (stopped by signal, in-flight records drained)" if doc["stopped"] else "")
    ]
    elapsed = doc["elapsed_s"]
    for group in ("sources", "stages", "sinks"):
        for name, n in doc[group].items():
            what = n.get("op", n.get("adapter"))
            line = f"  {n['kind']:<6} {name:<16} {what:<20} in {n['records_in']:>9}"
            line += f"  out {n['records_out']:>9}"
            busy = doc.get("busy_s", {}).get(name)
            if busy is not None and elapsed > 0:
                line += f"  busy {min(1.0, busy / elapsed):>4.0%}"
            if n["kind"] == "stage" and n["errors"]:
                line += f"  errors {n['errors']} (skipped {n['skipped']}, routed {n['routed']})"
            if n.get("restarts"):
                line += (
                    f"  restarted {n['restarts']}x: {n['redelivered']} record(s) taken again, "
                    f"{n['duplicates']} output(s) published twice"
                )
            lines.append(line)
    if doc.get("restarts"):
        lines.append(
            f"restarts: {doc['restarts']}; at-least-once: {doc['duplicates']} duplicate "
            "output(s) downstream"
        )
    lines.append(f"output sha256: {doc['output_sha256']}")
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    from byteor.cli._load import findings_json, load, render_findings
    from byteor.exec import (
        BUILTIN_SUMMARIES,
        DEFAULT_STALL_TIMEOUT,
        AdapterUnavailable,
        ExecError,
        LaneGraphMP,
        LaneGraphSP,
        OpNotFound,
        RunReport,
        SingleRing,
        StageConfigError,
    )
    from byteor.spec import canonical_hash

    as_json = bool(args.json)
    if args.batch < 1:
        return _fail(as_json, sys.stdout, "--batch must be >= 1", EXIT_USAGE, {})
    loaded = load(args.file, args.target)
    if loaded.spec is None or loaded.errors:
        if as_json:
            doc: dict[str, Any] = {"error": "invalid", "exit_code": EXIT_FINDINGS}
            doc["findings"] = findings_json(loaded)
            json.dump(doc, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        sys.stderr.write(render_findings(loaded) + "\n")
        return EXIT_FINDINGS
    spec = loaded.spec
    # The executor knows more built-in ops than the spec's table: no warning for those.
    loaded.findings = [
        f
        for f in loaded.findings
        if not (f.code == "SP313" and _op_of(spec, f.key) in BUILTIN_SUMMARIES)
    ]
    if loaded.warnings and not as_json:
        sys.stderr.write(render_findings(loaded) + "\n")
    to_stdout = any(s.adapter == "stdout" for s in spec.sinks.values())
    summary_to = sys.stderr if to_stdout or not as_json else sys.stdout
    base = {
        "file": args.file,
        "kind": loaded.kind,
        "spec_hash": canonical_hash(spec),
        "warnings": loaded.warnings,
    }
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", args.name):
        message = f"--name {args.name!r}: use 1-100 of A-Z a-z 0-9 _ -"
        return _fail(as_json, summary_to, message, EXIT_USAGE, base)
    if args.stall_timeout is not None and args.stall_timeout < 0:
        message = "--stall-timeout must be >= 0 seconds (0: never)"
        return _fail(as_json, summary_to, message, EXIT_USAGE, base)
    if args.executor == "ring" and spec.target != "single_ring":
        message = (
            f"--executor ring runs single_ring specs; this one targets {spec.target} "
            "(lower the plan with --target single_ring, or use --executor sp or mp)"
        )
        return _fail(as_json, summary_to, message, EXIT_USAGE, base)
    started = time.perf_counter()
    with _signals() as stop:
        try:
            executor = LaneGraphSP(spec, batch=args.batch, run_id=args.name)
            if args.executor == "ring" or (
                args.executor == "auto" and spec.target == "single_ring"
            ):
                executor = SingleRing(spec, batch=args.batch, run_id=args.name)
            elif args.executor == "mp" or (
                args.executor == "auto" and len({n.process for n in executor.graph.nodes}) > 1
            ):
                stall: float | None = DEFAULT_STALL_TIMEOUT
                if args.stall_timeout is not None:
                    stall = args.stall_timeout or None
                executor = LaneGraphMP(
                    spec, batch=args.batch, run_id=args.name, stall_timeout=stall
                )
            report = executor.run(stop)
        except (AdapterUnavailable, OpNotFound, StageConfigError) as exc:
            return _fail(as_json, summary_to, str(exc), EXIT_USAGE, base)
        except ExecError as exc:
            partial = exc.report if isinstance(exc.report, RunReport) else None
            if partial is not None:
                base |= partial.to_dict()
            return _fail(as_json, summary_to, str(exc), EXIT_FINDINGS, base)
        except _ForcedExit as exc:
            sys.stderr.write(f"byteor: stopped at once by a second signal {exc.signum}\n")
            return 128 + exc.signum
    summary = base | report.to_dict() | {"elapsed_s": round(time.perf_counter() - started, 6)}
    run_id = getattr(executor, "run_id", "")
    if run_id:
        summary["run_id"] = run_id
    if as_json:
        json.dump(summary, summary_to, indent=2, sort_keys=True)
        summary_to.write("\n")
    else:
        sys.stderr.write(_text(summary))
    summary_to.flush()
    return EXIT_OK


def _op_of(spec: Any, key: str) -> str | None:
    """The op of ``stage.<name>.op``."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "stage" and parts[2] == "op":
        st = spec.stages.get(parts[1])
        return None if st is None else str(st.op)
    return None


def _fail(as_json: bool, stream: Any, message: str, code: int, base: dict[str, Any]) -> int:
    if as_json:
        json.dump(base | {"error": message, "exit_code": code}, stream, indent=2, sort_keys=True)
        stream.write("\n")
    sys.stderr.write(f"byteor: error: {message}\n")
    return code
