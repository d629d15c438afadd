"""``byteor snapshot NAME``: the lane and node counters of a running pipeline, read from its
segments.

A named run (``byteor run --name NAME``, any executor; MP and SingleRing runs also under their
run id) keeps its lanes in ``/dev/shm/byteor-<NAME>.<lane>`` and its per-node counters in
``/dev/shm/byteor-<NAME>.-counters``. Each segment is attached (validated; nothing is written,
no endpoint is made) and read:

* per lane: published, consumed, used, lag, full-waits, drops, overruns, and per consumer its
  position, lag and loss. ``drops`` counts sends refused for lack of room (``send_nowait``):
  the executors retry them, so on events lanes it measures back-pressure, not loss. A
  consumer's position is what its node has *finished* with (explicit release);
* per node (source, stage, sink): records in and out, errors (skipped, routed), records it
  holds uncommitted, what it is doing (``idle``, ``working`` on records it took: in its op or
  between two steps, ``blocked`` waiting for room, ``done``), its process and pid, busy share
  (time in its work over time since it started), restarts and what they cost (records taken
  again, outputs published twice).
  Each row is a consistent set, committed when everything its node took was published, so a
  stage's counters add up in every snapshot: in = out + skipped + routed for a 1:1 op.

``--watch [SECONDS]`` repeats the view (text: redrawn in place on a terminal, with records per
second since the previous view; ``--json``: one document per line, each with ``at_ns`` for
rates) until the run's segments are gone or ``--count`` views were shown.

Exit codes: 0 shown, 1 nothing of that name (nothing running), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from byteor.cli._output import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, add_json_flag, emit_error

__all__ = ["register", "read_snapshot"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "snapshot",
        help="lane and stage counters of a running pipeline, read from its shared memory",
        description="Read the lane and per-stage counters of a running pipeline (byteor run "
        "--name NAME) from /dev/shm/byteor-NAME.*, without disturbing it. Exit 0 shown, 1 "
        "nothing of that name, 2 usage.",
    )
    p.add_argument("name", help="the run's name (byteor run --name) or run id")
    p.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=1.0,
        default=None,
        metavar="SECONDS",
        help="repeat every SECONDS (default 1) until the run ends",
    )
    p.add_argument("--count", type=int, default=None, help="with --watch: stop after N views")
    p.add_argument("--dir", default=None, help="where segments live (default /dev/shm)")
    add_json_flag(p)
    p.set_defaults(handler=_snapshot)


def _lane_names(directory: str, name: str) -> list[str]:
    from byteor.exec import COUNTERS_SUFFIX
    from byteor.lanes import SHM_PREFIX

    head = f"{SHM_PREFIX}{name}."
    counters = f"{SHM_PREFIX}{name}{COUNTERS_SUFFIX}"
    try:
        files = os.listdir(directory)
    except OSError:
        return []
    return sorted(f[len(SHM_PREFIX) :] for f in files if f.startswith(head) and f != counters)


def read_nodes(name: str, directory: str | None = None) -> dict[str, Any] | None:
    """The per-node counters of run ``name`` (``None`` when it has no counters segment)."""
    from byteor import lanes
    from byteor.exec import COUNTERS_SUFFIX

    try:
        counters = lanes.attach_counters(f"{name}{COUNTERS_SUFFIX}", directory=directory)
    except lanes.SegmentNotFound:
        return None
    except lanes.LaneError as exc:
        return {"error": str(exc)}
    try:
        rows = counters.read_all()
    finally:
        counters.close()
    now = time.monotonic_ns()
    return {
        r.name: {
            "kind": r.role,
            "process": r.group,
            "pid": r.pid,
            "alive": r.alive,
            "phase": _phase(r),
            "records_in": r.records_in,
            "records_out": r.records_out,
            "errors": r.errors,
            "skipped": r.skipped,
            "routed": r.routed,
            "inflight": r.inflight,
            "busy_s": round(r.busy_ns / 1e9, 6),
            "busy_share": round(r.busy_share(now), 4),
            "restarts": r.restarts,
            "redelivered": r.redelivered,
            "duplicates": r.duplicates,
            "consistent": r.consistent,
        }
        for r in rows
    }


def _phase(r: Any) -> str:
    """What a node does: ``working`` (holds records it took: in its op, or between two
    steps), ``idle``, ``blocked`` (waiting for room in an output), ``done``."""
    if not r.pid:
        return "not started"
    if r.phase in ("idle", "step") and r.inflight:
        return "working"
    return str(r.phase)


def read_snapshot(name: str, directory: str | None = None) -> dict[str, Any]:
    """Every lane and node of run ``name`` as plain data:
    ``{"name", "at_ns", "lanes": {lane: counters}, "nodes": {node: counters}}``."""
    from byteor import lanes
    from byteor.lanes import SHM_DIR

    where = directory or SHM_DIR
    out: dict[str, Any] = {}
    nodes = read_nodes(name, directory)
    for seg_name in _lane_names(where, name):
        lane = seg_name[len(name) + 1 :]
        try:
            if directory is None:
                handle = lanes.attach(seg_name)
            else:
                path = os.path.join(directory, f"byteor-{seg_name}")
                handle = lanes.attach(seg_name, backing="file", path=path)
        except lanes.SegmentNotFound:
            continue  # the run ended while we looked
        except lanes.LaneError as exc:
            out[lane] = {"error": str(exc)}
            continue
        try:
            st = handle.statistics()
        finally:
            handle.close()
        out[lane] = {
            "kind": st.kind,
            "capacity": st.capacity,
            "slot_bytes": st.slot_bytes,
            "published": st.published,
            "consumed": st.consumed,
            "used": st.used,
            "lag": st.lag,
            "full_waits": st.full_waits,
            "drops": st.drops,
            "overruns": st.overruns,
            "closed": st.closed,
            "producer_pid": st.producer_pid,
            "producer_attached": st.producer_attached,
            "consumers": {
                c.name: {
                    "policy": c.policy,
                    "position": c.position,
                    "lag": c.lag,
                    "lost": c.lost,
                    "waits": c.waits,
                    "pid": c.pid,
                    "attached": c.attached,
                }
                for c in st.consumers
            },
        }
    doc: dict[str, Any] = {"name": name, "at_ns": time.monotonic_ns(), "lanes": out}
    doc["nodes"] = {} if nodes is None else nodes
    return doc


def _nodes_text(doc: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    nodes = doc["nodes"]
    if "error" in nodes:
        return [f"  counters unreadable: {nodes['error']}"]
    if not nodes:
        return []
    seconds = (doc["at_ns"] - previous["at_ns"]) / 1e9 if previous else 0.0
    rate_head = f" {'in/s':>9}" if seconds > 0 else ""
    lines = [
        "",
        f"  {'node':<16} {'kind':<6} {'process':<10} {'in':>11} {'out':>11} {'errors':>7} "
        f"{'skip':>6} {'route':>6} {'held':>5} {'phase':<11} {'busy':>5}{rate_head}",
    ]
    for name, n in nodes.items():
        line = (
            f"  {name:<16} {n['kind']:<6} {n['process']:<10} {n['records_in']:>11} "
            f"{n['records_out']:>11} {n['errors']:>7} {n['skipped']:>6} {n['routed']:>6} "
            f"{n['inflight']:>5} {n['phase']:<11} {n['busy_share']:>5.0%}"
        )
        if seconds > 0:
            before = (previous or {}).get("nodes", {}).get(name, {}).get("records_in", 0)
            line += f" {(n['records_in'] - before) / seconds:>9.0f}"
        if n["restarts"]:
            line += (
                f"  restarts {n['restarts']} (taken again {n['redelivered']}, "
                f"published twice {n['duplicates']})"
            )
        if n["pid"] and not n["alive"] and n["phase"] != "done":
            line += "  (its process is gone)"
        lines.append(line)
    return lines


def _text(doc: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    lanes_ = doc["lanes"]
    nodes = doc["nodes"]
    count = f", {len(nodes)} node(s)" if nodes and "error" not in nodes else ""
    lines = [f"byteor snapshot {doc['name']}: {len(lanes_)} lane(s){count}"]
    lines.append(
        f"  {'lane':<16} {'kind':<8} {'published':>11} {'consumed':>11} {'lag':>7} "
        f"{'used/cap':>11} {'full-waits':>10} {'drops':>7} {'overruns':>8}  state"
    )
    for lane, s in lanes_.items():
        if "error" in s:
            lines.append(f"  {lane:<16} unreadable: {s['error']}")
            continue
        state = "closed" if s["closed"] else ("live" if s["producer_attached"] else "no producer")
        used = f"{s['used']}/{s['capacity']}"
        lines.append(
            f"  {lane:<16} {s['kind']:<8} {s['published']:>11} {s['consumed']:>11} "
            f"{s['lag']:>7} {used:>11} {s['full_waits']:>10} {s['drops']:>7} "
            f"{s['overruns']:>8}  {state}"
        )
        for cname, c in s["consumers"].items():
            lines.append(
                f"    <- {cname:<13} {c['policy']:<11} at {c['position']:>11}  lag {c['lag']:>7}"
                f"  lost {c['lost']:>6}  waits {c['waits']:>6}"
                + ("" if c["attached"] else "  (detached)")
            )
    lines += _nodes_text(doc, previous)
    return "\n".join(lines) + "\n"


def _snapshot(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        emit_error(args, "--count must be >= 1", EXIT_USAGE)
        return EXIT_USAGE
    if args.watch is not None and args.watch < 0:
        emit_error(args, "--watch SECONDS must be >= 0", EXIT_USAGE)
        return EXIT_USAGE
    shown = 0
    redraw = args.watch is not None and not args.json and sys.stdout.isatty()
    previous: dict[str, Any] | None = None
    try:
        while True:
            doc = read_snapshot(args.name, args.dir)
            if not doc["lanes"] and not doc["nodes"]:
                if shown:
                    sys.stderr.write(f"byteor: run {args.name!r} ended (its segments are gone)\n")
                    return EXIT_OK
                emit_error(
                    args,
                    f"nothing named byteor-{args.name}.* in {args.dir or '/dev/shm'}: is the "
                    "run going? Name it with byteor run --name NAME (or use its run id); "
                    "byteor doctor lists every segment",
                    EXIT_FINDINGS,
                )
                return EXIT_FINDINGS
            if args.json:
                json.dump(
                    doc, sys.stdout, sort_keys=True, indent=None if args.watch is not None else 2
                )
                sys.stdout.write("\n")
            else:
                sys.stdout.write(("\x1b[H\x1b[2J" if redraw else "") + _text(doc, previous))
            previous = doc
            sys.stdout.flush()
            shown += 1
            if args.watch is None or (args.count is not None and shown >= args.count):
                return EXIT_OK
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK
