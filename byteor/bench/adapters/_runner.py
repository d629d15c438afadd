"""Running the adapter cases: skips, interleaving, summaries, the table and the JSON document."""

# ruff: noqa: PLC0415 - each case module imports its client library; it is imported where it is
#   used, so one missing library makes that case "skipped" instead of failing the benchmark.

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from byteor.adapters import AdapterError
from byteor.bench._common import (
    command_line,
    described,
    finish,
    pick,
    say,
    speed_warning,
    versions,
    warn_if_busy,
)
from byteor.bench.adapters._harness import (
    Case,
    Impl,
    Kind,
    Plan,
    bounded,
    payloads,
    time_sink,
    time_source,
)
from byteor.bench.lanes import (
    BenchFailure,
    _fmt_rate,
    _speed_probe_ns,
    machine_info,
    source_info,
)
from byteor.cli.common import EXIT_OK, CliError, emit

__all__ = ["CASES", "TARGET", "Row", "run_benchmark", "summarise", "run_cli"]

#: adapter name -> "module:Case"; a case whose adapter has not landed is reported as skipped.
CASES: dict[str, str] = {
    "redis": "byteor.bench.adapters.redis:RedisCase",
    "kafka": "byteor.bench.adapters.kafka:KafkaCase",
    "nats": "byteor.bench.adapters.nats:NatsCase",
    "rabbitmq": "byteor.bench.adapters.rabbitmq:RabbitMQCase",
    "http": "byteor.bench.adapters.http:HttpCase",
    "websocket": "byteor.bench.adapters.websocket:WebSocketCase",
    "grpc": "byteor.bench.adapters.grpc:GrpcCase",
    "s3": "byteor.bench.adapters.s3:S3Case",
    "postgres": "byteor.bench.adapters.postgres:PostgresCase",
}
TARGET = 0.90  # ours / hand-written, issues 5 and 6
QUICK_DIVISOR = 10
SIZE = 128
BATCH = 500
REPEAT = 3
KINDS: tuple[Kind, ...] = ("source", "sink")
#: the distributions whose versions go into the JSON document
VERSIONS = (
    "byteor",
    "redis",
    "aiokafka",
    "nats-py",
    "aio-pika",
    "httpx",
    "uvicorn",
    "starlette",
    "websockets",
    "grpcio",
    "protobuf",
    "aioboto3",
    "asyncpg",
)


@dataclass
class Row:
    """One adapter side (source or sink): its runs, ours and hand-written."""

    adapter: str
    kind: Kind
    status: str = "ok"  # ok | skipped | failed
    detail: str = ""
    ours_what: str = ""
    hand_what: str = ""
    records: int = 0
    runs: dict[Impl, list[dict[str, Any]]] = field(default_factory=lambda: {"hand": [], "ours": []})
    bound_what: str = ""  # the case's extra line for this side (Case.bounds), if any
    bound_runs: list[dict[str, Any]] = field(default_factory=list)


def _load_case(name: str) -> Case | str:
    """The case for adapter ``name``, or why it cannot run here (one line)."""
    module_name, _, attr = CASES[name].partition(":")
    try:
        from byteor.adapters import load_adapter

        load_adapter(name)
        case: Case = getattr(importlib.import_module(module_name), attr)()
    except AdapterError as exc:
        return str(exc)
    except ImportError as exc:
        return f"{name}: cannot import {exc.name or exc} (pip install 'byteor[{name}]')"
    return case.skip_reason() or case


def _tag(case: Case, kind: Kind, impl: str, rep: int) -> str:
    return f"{case.name}-{kind}-{impl}-{rep}-{uuid.uuid4().hex[:8]}"


async def _run_once(
    case: Case, kind: Kind, impl: Impl, plan: Plan, items: list[bytes], rep: int, timeout_s: float
) -> dict[str, Any]:
    """One timed run on a fresh target; checked before it becomes a number."""
    target = await case.create(_tag(case, kind, impl, rep))
    run: dict[str, Any]
    try:
        if kind == "source":
            await bounded(case.prefill(target, items, plan.batch), timeout_s)
            side = case.source(impl, target, plan)
            try:
                tally = await bounded(time_source(side, plan), timeout_s)
            finally:
                await side.abort()
            await bounded(case.verify_source(target, plan), timeout_s)
            run = {
                "rate": tally.rate,
                "elapsed_s": tally.elapsed_ns / 1e9,
                "records": tally.received,
                "first_batch": tally.first,
                "cpu_us_per_record": tally.cpu_us,
            }
        else:
            sink = case.sink(impl, target, plan)
            written = await bounded(time_sink(sink, plan, items), timeout_s)
            await bounded(case.verify_sink(target, plan), timeout_s)
            run = {
                "rate": written.rate,
                "elapsed_s": written.elapsed_ns / 1e9,
                "records": plan.records,
                "cpu_us_per_record": written.cpu_us,
            }
        details = case.details(target)
        if details:
            run["details"] = details
        return run
    finally:
        await case.drop(target)


async def _run_bound(
    case: Case, kind: Kind, plan: Plan, items: list[bytes], rep: int, timeout_s: float
) -> dict[str, Any]:
    """One run of the case's bound for ``kind`` (Case.bounds) on a fresh target."""
    target = await case.create(_tag(case, kind, "bound", rep))
    try:
        if kind == "source":
            await bounded(case.prefill(target, items, plan.batch), timeout_s)
        run = await bounded(case.run_bound(kind, target, plan), timeout_s)
        details = case.details(target)
        if details:
            run["details"] = details
        return run
    finally:
        await case.drop(target)


async def _run_all(
    cases: Sequence[Case],
    rows: dict[tuple[str, Kind], Row],
    plans: dict[str, Plan],
    repeat: int,
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    items = {name: payloads(plan) for name, plan in plans.items()}
    total = sum(len(KINDS) * 2 + len(case.bounds) for case in cases) * repeat
    done = 0
    try:
        for rep in range(repeat):
            # Alternate who goes first, so drift and warm-up do not favour one side.
            order: tuple[Impl, Impl] = ("hand", "ours") if rep % 2 == 0 else ("ours", "hand")
            for case in cases:
                for kind in KINDS:
                    row = rows[(case.name, kind)]
                    for impl in order:
                        done += 1
                        if row.status != "ok":
                            continue  # one failure is enough
                        label = (
                            f"[{done:>2}/{total}] {case.name:<9} {kind:<6} {impl:<4}"
                            f"  run {rep + 1}/{repeat}"
                        )
                        probe = _speed_probe_ns()
                        try:
                            run = await _run_once(
                                case, kind, impl, plans[case.name], items[case.name], rep, timeout_s
                            )
                        except (BenchFailure, AdapterError) as exc:
                            row.status, row.detail = "failed", f"{impl}: {exc}"
                            progress(f"{label}  FAILED: {exc}")
                            continue
                        except Exception as exc:  # a client-library error: one line, not a trace
                            row.status = "failed"
                            row.detail = f"{impl}: {type(exc).__name__}: {exc}"
                            progress(f"{label}  FAILED: {row.detail}")
                            continue
                        run["probe_ns"] = probe
                        row.runs[impl].append(run)
                        progress(f"{label}  {_fmt_rate(run['rate'])} records/s")
                    if kind in case.bounds:
                        done += 1
                        if row.status == "ok":
                            await _bound_once(case, kind, row, plans[case.name],
                                              items[case.name], rep, repeat, done, total,
                                              timeout_s, progress)  # fmt: skip
    finally:
        for case in cases:
            await case.close()


async def _bound_once(
    case: Case,
    kind: Kind,
    row: Row,
    plan: Plan,
    items: list[bytes],
    rep: int,
    repeat: int,
    done: int,
    total: int,
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    """Run the bound of ``row`` once; a failure fails the row, like ours or the hand loop's."""
    label = f"[{done:>2}/{total}] {case.name:<9} {kind:<6} {'bound':<5} run {rep + 1}/{repeat}"
    probe = _speed_probe_ns()
    try:
        run = await _run_bound(case, kind, plan, items, rep, timeout_s)
    except (BenchFailure, AdapterError) as exc:
        row.status, row.detail = "failed", f"bound: {exc}"
        progress(f"{label}  FAILED: {exc}")
        return
    except Exception as exc:  # a client-library error: one line, not a trace
        row.status, row.detail = "failed", f"bound: {type(exc).__name__}: {exc}"
        progress(f"{label}  FAILED: {row.detail}")
        return
    run["probe_ns"] = probe
    row.bound_runs.append(run)
    progress(f"{label}  {_fmt_rate(run['rate'])} records/s")


def plan_for(case: Case, records: int | None, size: int, batch: int, quick: bool) -> Plan:
    """What ``case`` moves: ``records`` when given, else the case's own count (a tenth with
    ``quick``), never less than four batches."""
    if records is None:
        records = max(case.records // QUICK_DIVISOR if quick else case.records, 4 * batch)
    return Plan(records, size, batch)


def run_benchmark(
    names: Sequence[str],
    *,
    records: int | None = None,
    size: int = SIZE,
    batch: int = BATCH,
    quick: bool = False,
    repeat: int = REPEAT,
    timeout_s: float = 120.0,
    progress: Callable[[str], None] = say,
) -> tuple[list[Row], dict[str, str]]:
    """Run every named case (source and sink, ours and by hand) ``repeat`` times, interleaved.

    Returns the rows and the server version of each case that ran.
    """
    rows: dict[tuple[str, Kind], Row] = {}
    cases: list[Case] = []
    plans: dict[str, Plan] = {}
    for name in names:
        loaded = _load_case(name)
        for kind in KINDS:
            row = rows[(name, kind)] = Row(name, kind)
            if isinstance(loaded, str):
                row.status, row.detail = "skipped", loaded
            else:
                row.ours_what = getattr(loaded, f"ours_{kind}")
                row.hand_what = getattr(loaded, f"hand_{kind}")
                row.bound_what = loaded.bounds.get(kind, "")
                row.records = plan_for(loaded, records, size, batch, quick).records
        if isinstance(loaded, str):
            progress(f"{name}: skipped ({loaded})")
        else:
            cases.append(loaded)
            plans[name] = plan_for(loaded, records, size, batch, quick)
    servers: dict[str, str] = {}

    async def main() -> None:
        for case in cases:
            servers[case.name] = await case.server()
        await _run_all(cases, rows, plans, repeat, timeout_s, progress)

    asyncio.run(main())
    return list(rows.values()), servers


def summarise(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Best/median per impl, ours/hand (median over median, and per adjacent pair)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        doc: dict[str, Any] = {
            "adapter": row.adapter,
            "kind": row.kind,
            "records": row.records,
            "status": row.status,
            "detail": row.detail,
            "ours": row.ours_what,
            "hand": row.hand_what,
            "runs": row.runs,
        }
        hand = [r["rate"] for r in row.runs["hand"]]
        ours = [r["rate"] for r in row.runs["ours"]]
        if row.status == "ok" and hand and ours:
            doc["hand_median"] = statistics.median(hand)
            doc["hand_best"] = max(hand)
            doc["ours_median"] = statistics.median(ours)
            doc["ours_best"] = max(ours)
            doc["ratio"] = doc["ours_median"] / doc["hand_median"]
            doc["ratio_pairs"] = [o / h for o, h in zip(ours, hand, strict=False)]
            hand_cpu = statistics.median(r["cpu_us_per_record"] for r in row.runs["hand"])
            ours_cpu = statistics.median(r["cpu_us_per_record"] for r in row.runs["ours"])
            doc["hand_cpu_us"], doc["ours_cpu_us"] = hand_cpu, ours_cpu
            doc["cpu_ratio"] = hand_cpu / ours_cpu
            doc["target"] = TARGET
            doc["target_met"] = doc["ratio"] >= TARGET
            if row.bound_runs:
                bound = statistics.median(r["rate"] for r in row.bound_runs)
                doc["bound"] = {
                    "what": row.bound_what,
                    "runs": row.bound_runs,
                    "median": bound,
                    "cpu_us": statistics.median(r["cpu_us_per_record"] for r in row.bound_runs),
                    "ours_share": doc["ours_median"] / bound,
                    "hand_share": doc["hand_median"] / bound,
                }
        out.append(doc)
    return out


def _table(
    results: Sequence[dict[str, Any]], size: int, batch: int, repeat: int, machine: str
) -> str:
    lines = [
        f"byteor bench adapters: records of {size} B, batches of {batch},"
        f" {repeat} run(s) each; {machine}",
        "",
        f"{'':<24}  {'records/s, median':^30}  {'':>8}  {'CPU us a record':^26}",
        f"{'adapter':<9} {'side':<6} {'records':>7}  {'hand':>9}  {'ours':>9}  {'ours/hand':>9}"
        f"  {'>= ' + format(TARGET, '.2f'):<8}  {'hand':>7}  {'ours':>7}  {'hand/ours':>9}",
    ]
    for r in results:
        head = f"{r['adapter']:<9} {r['kind']:<6} {r['records'] or '':>7}"
        if "ratio" not in r:
            status = r["status"].upper() if r["status"] != "ok" else "NO RUNS"
            lines.append(f"{head}  {status}: {r['detail']}")
            continue
        lines.append(
            f"{head}  {_fmt_rate(r['hand_median']):>9}  {_fmt_rate(r['ours_median']):>9}"
            f"  {r['ratio']:>8.2f}x  {'met' if r['target_met'] else 'MISSED':<8}"
            f"  {r['hand_cpu_us']:>7.1f}  {r['ours_cpu_us']:>7.1f}  {r['cpu_ratio']:>8.2f}x"
        )
        bound = r.get("bound")
        if bound:
            lines.append(
                f"{'':<17}bound  {_fmt_rate(bound['median']):>9}  (ours at"
                f" {bound['ours_share']:.2f}x of it, hand at {bound['hand_share']:.2f}x;"
                f" {bound['cpu_us']:.1f} us CPU a record)"
            )
    notes = [
        "Rates are records/s, median over the runs; ours/hand is median over median and the"
        f" target is ours >= {TARGET:.2f} of the hand-written loop. Ours and the hand-written"
        " loop use the same client library, records, batch size and server, alternating who"
        " goes first. CPU is this process's CPU time per record over the same interval"
        " (the client's work, steadier than wall time when the machine is shared).",
        "Source: a pre-filled stream read to the end, every record acknowledged; timed from the"
        " first batch received to the source stopped with every acknowledgement upstream"
        " (checked on the server after each run). Sink: timed from the first write to the last"
        " confirmed; the server then holds exactly the records, in order (checked).",
        "Every record carries its sequence number; each batch is checked in the timed loop,"
        " with the same code for ours and the hand-written loop.",
    ]
    lines.append("")
    for note in notes:
        lines.extend(textwrap.wrap(note, 100))
    for r in results:
        if r["ours"]:
            for who in ("ours", "hand"):
                lines.extend(described(f"{r['adapter']} {r['kind']}: {who} = {r[who]}"))
            if r.get("bound"):
                lines.extend(described(f"{r['adapter']} {r['kind']}: bound = {r['bound']['what']}"))
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> str:
    parts = ["byteor", "bench", "adapters"]
    for flag in ("only", "records", "size", "batch"):
        value = getattr(args, flag, None)
        if value:
            parts += [f"--{flag}", ",".join(value) if isinstance(value, list) else str(value)]
    if getattr(args, "repeat", REPEAT) != REPEAT:
        parts += ["--repeat", str(args.repeat)]
    return command_line(parts, args)


def select(only: Sequence[str] | None) -> list[str]:
    """Adapter names from ``--only`` (comma-separated, repeatable); all when not given."""
    return pick(only, CASES, "adapter case")


def _positive(args: argparse.Namespace, flag: str, default: int) -> int:
    value = getattr(args, flag, None)
    value = default if value is None else int(value)
    if value < 1:
        raise CliError(f"--{flag} must be at least 1")
    return value


def run_cli(args: argparse.Namespace) -> int:
    """``byteor bench adapters``: exit 0 when every case that could run ran clean, 1 on a
    failure (a lost, duplicated or unacknowledged record, an error, a hang)."""
    names = select(getattr(args, "only", None))
    if getattr(args, "list", False):
        emit(args, "\n".join(CASES), {"adapters": list(CASES)})
        return EXIT_OK
    quick = bool(getattr(args, "quick", False))
    records = None if getattr(args, "records", None) is None else _positive(args, "records", 0)
    size = _positive(args, "size", SIZE)
    if size < 8:
        raise CliError("--size: every record needs at least 8 bytes (its sequence number)")
    batch = _positive(args, "batch", BATCH)
    if records is not None and records < 2 * batch:
        raise CliError("--records must be at least twice --batch (the first batch is not timed)")
    repeat = _positive(args, "repeat", 1 if quick else REPEAT)
    started = time.monotonic()
    machine = machine_info()
    machine["versions"] = versions(VERSIONS)
    machine["start_method"] = None
    warn_if_busy(machine)
    rows, servers = run_benchmark(
        names,
        records=records,
        size=size,
        batch=batch,
        quick=quick,
        repeat=repeat,
        timeout_s=float(getattr(args, "timeout", None) or 120.0),
    )
    results = summarise(rows)
    failed = [r for r in results if r["status"] == "failed"]
    probes = [run["probe_ns"] for row in rows for runs in row.runs.values() for run in runs]
    doc: dict[str, Any] = {
        "benchmark": "byteor bench adapters",
        "command": _command(args),
        "argv": list(sys.argv),
        "machine": machine,
        "servers": servers,
        "source": source_info(),
        "settings": {
            "records": records if records is not None else "per adapter (see results)",
            "size": size,
            "batch": batch,
            "repeat": repeat,
            "quick": quick,
            "target": TARGET,
            "timing": (
                "source: perf_counter_ns from the first non-empty batch to the source stopped"
                " with every ack upstream; rate = records after the first batch / that time."
                " sink: from the first write to the last confirmed; rate = records / that time."
            ),
            "aggregate": "median and best over repeat runs; ratio = ours median / hand median",
            "check": "sequence numbers of every batch in the timed loop; upstream state after",
        },
        "results": results,
        "failures": [f"{r['adapter']} {r['kind']}: {r['detail']}" for r in failed],
        "skipped": [
            f"{r['adapter']} {r['kind']}: {r['detail']}"
            for r in results
            if r["status"] == "skipped"
        ],
        "load_average_after": list(os.getloadavg()),
        "speed_probe_ns": {"min": min(probes), "max": max(probes)} if probes else None,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    text = _table(
        results,
        size,
        batch,
        repeat,
        f"{machine['cpus_usable']} CPUs, {machine['implementation']} {machine['python']}",
    )
    if servers:
        text += "\nservers: " + "; ".join(f"{k} {v}" for k, v in servers.items())
    text += speed_warning(probes, "compare the pairs in --json")
    return finish(args, text, doc, bool(failed))
