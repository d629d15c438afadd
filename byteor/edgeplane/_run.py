"""``edgeplane run``: load a pipeline, start its data plane, watch it, summarize.

The order of a run, and why:

1. Options (flags > ``EDGEPLANE_*`` > defaults); ``--path`` folders and the pipeline
   file's own folder go on ``sys.path`` (forked children inherit it), so the
   ``module:function`` ops beside a plan import; then the pipeline file: interpolated,
   validated with its adapters' config schemas, a plan lowered (``_config.load_pipeline``),
   then EdgePlane's own shape checks (``EP1xx``). Nothing is created before all of it holds.
2. Logging for the run (text or JSON lines, secrets redacted) and the progress line.
3. The stages' ops are resolved and every server adapter is imported, so an unknown op or
   a missing client library is one line and exit 2, before any process exists.
4. The supervisor (:class:`~byteor.edgeplane._supervisor.DataPlane`) reclaims what a dead
   run of the same name left, creates the segments and forks the processes; only then the
   metrics endpoint's thread starts (a fork copies a process with its threads' locks held).
5. SIGTERM/SIGINT drain (exit 0 once everything admitted is written and acknowledged); a
   second signal kills everything at once (exit 128 + the signal).

Exit codes: 0 the run ended (its sources ended, or a stop drained it); 1 the file has error
findings or the run failed (one line says why); 2 usage, unreadable input, a missing
variable, op or client library, or a run of that name still going; 128 + N a second
signal N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any, TextIO

from byteor.adapters import Sink, Source
from byteor.edgeplane._config import (
    EdgePlaneOptions,
    LoadedPipeline,
    Redactor,
    extend_import_path,
    load_pipeline,
    resolve_options,
)
from byteor.edgeplane._errors import (
    ConfigError,
    InterpolationError,
    ObserveError,
    ObserveUnavailable,
    OptionError,
    PipelineFileError,
    RunError,
)
from byteor.edgeplane._logging import ProgressLine, setup_logging
from byteor.edgeplane._supervisor import DataPlane, PlaneConfig, shape_findings
from byteor.exec import ExecError, StopToken
from byteor.spec import PipelineSpecV1

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "run_command", "run_inline", "summary_text"]

log = logging.getLogger("byteor.edgeplane")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_BATCH = 256


class ForcedExit(BaseException):
    """A second signal: leave now (a BaseException, so nothing on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopToken]:
    """A StopToken that SIGINT/SIGTERM set (with a wake-up descriptor for the supervisor's
    wait); a second signal raises :class:`ForcedExit`."""
    stop = StopToken()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.requested:
            raise ForcedExit(signum)
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


class _Failed(Exception):
    """A run that stops before it starts: the message and the exit code."""

    def __init__(self, message: str, code: int, summary: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.summary = dict(summary or {})


def _load(
    args: argparse.Namespace, options: EdgePlaneOptions, env: Mapping[str, str]
) -> LoadedPipeline:
    path = args.file
    try:
        loaded = load_pipeline(path, env, secret_env=options.secret_env, target=args.target)
    except InterpolationError as exc:
        raise _Failed(str(exc), EXIT_USAGE) from None
    except PipelineFileError as exc:  # findings (exit 1), or a file that cannot be read (2)
        raise _Failed(str(exc), EXIT_FAILED if ": error " in str(exc) else EXIT_USAGE) from None
    findings = shape_findings(loaded.spec)
    if findings:
        first = findings[0]
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise _Failed(
            loaded.redactor.redact(f"{path}: error {first.code} [{first.key}]: {first.message}")
            + more,
            EXIT_FAILED,
        )
    return loaded


def _adapter_statuses(plane: DataPlane) -> Any:
    # The metrics extra is optional: imported only when the endpoint is on.
    from byteor.edgeplane._observe import (  # noqa: PLC0415
        AdapterStatus,
        LatencyHistogram,
    )

    def statuses() -> list[AdapterStatus]:
        return [
            AdapterStatus(
                node=s.node,
                kind=s.kind,
                adapter=s.adapter,
                connected=s.connected,
                records=s.records,
                acked=s.acked,
                nacked=s.nacked,
                commit_watermark=s.committed if s.kind == "source" else None,
                lag=s.lag,
                latency=None if s.latency is None else LatencyHistogram.of(s.latency),
                end_to_end=None if s.end_to_end is None else LatencyHistogram.of(s.end_to_end),
                upstream=s.upstream,
                detail=s.detail,
            )
            for s in plane.edge_states()
        ]

    return statuses


def _observe(
    plane: DataPlane, loaded: LoadedPipeline, addr: tuple[str, int], explicit: bool
) -> Any:
    """Start the metrics endpoint; ``None`` when its extra is missing and nobody asked."""
    try:
        from byteor.edgeplane._observe import (  # noqa: PLC0415 - optional extra
            RunCollector,
            start_observe_server,
        )
    except ObserveUnavailable as exc:
        if explicit:
            raise _Failed(str(exc), EXIT_USAGE) from None
        log.warning("no metrics endpoint: %s", exc)
        return None
    collector = RunCollector(
        plane.run_name,
        lanes=list(plane.topo.graph.lanes),
        adapters=_adapter_statuses(plane),
        spec_hash=loaded.spec_hash,
        process="supervisor",
        redactor=loaded.redactor,
    )
    try:
        return start_observe_server(addr, collector, ready=plane.ready, redactor=loaded.redactor)
    except ObserveError as exc:
        raise _Failed(str(exc), EXIT_USAGE) from None


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3g} ms"


def summary_text(doc: Mapping[str, Any]) -> str:
    """The run summary as text lines (stderr)."""
    elapsed = float(doc.get("elapsed_s", 0.0))
    rate = doc["records_in"] / elapsed if elapsed > 0 else 0.0
    how = " (stopped by signal: drained)" if doc.get("stopped") else ""
    lines = [
        f"edgeplane run {doc['run']}: {doc['records_in']:,} in, {doc['records_out']:,} out, "
        f"{doc['acked']:,} acknowledged in {elapsed:.3f} s ({rate:,.0f} rec/s){how}"
    ]
    busy = doc.get("busy_s", {})
    for group in ("sources", "stages", "sinks"):
        for name, n in doc[group].items():
            what = n.get("op", n.get("adapter"))
            line = f"  {group[:-1]:<6} {name:<16} {what:<20} in {n['records_in']:>10,}"
            line += f"  out {n['records_out']:>10,}"
            if name in busy and elapsed > 0:
                line += f"  busy {min(1.0, busy[name] / elapsed):>4.0%}"
            if group == "sources" and n.get("pauses"):
                line += f"  paused {n['pauses']}x (back-pressure)"
            if group == "stages" and n["errors"]:
                line += f"  errors {n['errors']} (skipped {n['skipped']}, routed {n['routed']})"
            if group == "sinks" and n.get("failed_writes"):
                line += f"  failed writes retried {n['failed_writes']}"
            e2e = n.get("end_to_end") or {}
            if group == "sinks" and e2e.get("count"):
                line += f"  end to end p50 {_ms(e2e['p50_s'])} p99 {_ms(e2e['p99_s'])}"
                if e2e.get("beyond_ring"):
                    line += f" ({e2e['beyond_ring']:,} beyond the ring)"
            lines.append(line)
    if doc.get("restarts"):
        recovery = ", ".join(f"{r:.2f} s" for r in doc.get("recovery_s", []))
        lines.append(
            f"restarts: {doc['restarts']} (running again after {recovery or '-'}); "
            f"at-least-once: {doc['duplicates']:,} record(s) delivered again by upstream "
            "(duplicates at most)"
        )
    return "\n".join(lines) + "\n"


def _emit_json(doc: Mapping[str, Any], stream: TextIO, redactor: Redactor) -> None:
    stream.write(redactor.redact(json.dumps(doc, indent=2, sort_keys=True)) + "\n")
    stream.flush()


def _fail(
    message: str,
    code: int,
    *,
    as_json: bool,
    stream: TextIO,
    redactor: Redactor,
    base: Mapping[str, Any] | None = None,
) -> int:
    message = " ".join(redactor.redact(message).split())  # one line, always
    if as_json:
        _emit_json({**(base or {}), "error": message, "exit_code": code}, stream, redactor)
    sys.stderr.write(f"edgeplane: error: {message}\n")
    sys.stderr.flush()
    return code


def run_command(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """``edgeplane run`` with parsed ``args`` (see the module docstring); returns the exit
    code."""
    environ: Mapping[str, str] = os.environ if env is None else env
    as_json = bool(getattr(args, "json", False))
    redactor = Redactor()
    summary_to = sys.stdout if as_json else sys.stderr
    try:
        try:
            options = resolve_options(args, environ)
        except OptionError as exc:
            raise _Failed(str(exc), EXIT_USAGE) from None
        if args.batch < 1:
            raise _Failed("--batch must be >= 1", EXIT_USAGE)
        extend_import_path(args.file, options.path)
        loaded = _load(args, options, environ)
        redactor = loaded.redactor
        spec = loaded.spec
        if any(s.adapter == "stdout" for s in spec.sinks.values()):
            summary_to = sys.stderr  # stdout carries records
        run = options.name or spec.name
        base: dict[str, Any] = {"file": args.file, "spec_hash": loaded.spec_hash, "run": run}
        return _run_loaded(args, options, loaded, run, base, as_json, summary_to, environ)
    except _Failed as exc:
        return _fail(
            str(exc),
            exc.code,
            as_json=as_json,
            stream=summary_to,
            redactor=redactor,
            base=exc.summary,
        )


def _run_loaded(
    args: argparse.Namespace,
    options: EdgePlaneOptions,
    loaded: LoadedPipeline,
    run: str,
    base: dict[str, Any],
    as_json: bool,
    summary_to: TextIO,
    environ: Mapping[str, str],
) -> int:
    redactor = loaded.redactor
    progress = ProgressLine(sys.stderr, options.progress)
    handler = setup_logging(
        options.log_format,
        options.log_level,
        redactor,
        run,
        "supervisor",
        progress=progress if progress.enabled else None,
    )
    try:
        config = PlaneConfig(
            run=run,
            batch=args.batch,
            restart=options.restart,
            max_restarts=options.max_restarts,
            restart_window=options.restart_window,
            drain_timeout=options.drain_timeout,
            log_format=options.log_format,
            log_level=options.log_level,
        )
        try:
            plane = DataPlane(loaded.spec, config, redactor=redactor)
            plane.check_adapters()
        except RunError as exc:
            raise _Failed(str(exc), exc.exit_code) from None
        except ExecError as exc:  # an op that cannot be resolved or configured
            raise _Failed(str(exc), EXIT_USAGE) from None
        for warning in loaded.warnings:  # (a missing client library was an error above)
            log.warning("%s", warning)
        explicit = getattr(args, "metrics_addr", None) is not None or bool(
            environ.get("EDGEPLANE_METRICS_ADDR", "").strip()
        )
        server: list[Any] = []

        def started() -> None:
            if options.metrics_addr is not None:
                server.append(_observe(plane, loaded, options.metrics_addr, explicit))

        def tick() -> None:
            if progress.enabled:
                progress.update(*plane.progress())

        t0 = time.perf_counter()
        try:
            with stop_on_signals() as stop:
                plane.run(stop, tick=tick, on_started=started)
        except RunError as exc:
            doc = base | exc.summary | {"elapsed_s": round(time.perf_counter() - t0, 6)}
            raise _Failed(str(exc), exc.exit_code, doc) from None
        except ForcedExit as exc:
            progress.clear()
            sys.stderr.write(
                f"edgeplane: stopped at once by a second signal {exc.signum}: what was not "
                "acknowledged stays upstream\n"
            )
            return 128 + exc.signum
        finally:
            for s in server:
                if s is not None:
                    s.stop()
        progress.clear()
        doc = base | plane.summary() | {"elapsed_s": round(time.perf_counter() - t0, 6)}
        if as_json:
            _emit_json(doc, summary_to, redactor)
        elif options.log_format == "json":  # stderr stays one JSON object per line
            log.info("run finished", extra={"summary": doc})
        else:
            sys.stderr.write(redactor.redact(summary_text(doc)))
            sys.stderr.flush()
        return EXIT_OK
    except ConfigError as exc:
        raise _Failed(str(exc), EXIT_USAGE) from None
    finally:
        progress.clear()
        logging.getLogger().removeHandler(handler)


async def run_inline(
    spec: PipelineSpecV1,
    *,
    name: str | None = None,
    sources: Mapping[str, Source] | None = None,
    sinks: Mapping[str, Sink] | None = None,
    batch: int = DEFAULT_BATCH,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Run ``spec``'s data plane inside this event loop (edges as tasks, stages stepped
    between them, in-memory lanes) and return its summary: for tests and examples, where an
    in-process adapter such as ``memory`` is shared with the caller.

    Args:
        spec: a valid spec of a shape EdgePlane runs.
        name: the run's name (default: the spec's).
        sources, sinks: adapter objects to use instead of the spec's, by node name.
        batch: most records an edge or stage moves at a time.
        stop: set it to drain and stop (a source that never ends needs one).
    """
    plane = DataPlane(
        spec, PlaneConfig(run=name or spec.name, batch=batch), sources=sources, sinks=sinks
    )
    await plane.run_inline(stop)
    return plane.summary()
