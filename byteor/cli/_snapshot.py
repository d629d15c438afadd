"""``byteor snapshot NAME``: the lane counters of a running pipeline, read from its segments.

A multi-process or SingleRing run keeps its lanes in ``/dev/shm/byteor-<NAME>.<lane>`` (NAME
is ``byteor run --name``, else the run id ``mp<pid>-<n>-<pipeline>``). Each is attached
(validated, read-only use: no endpoint is made, nothing is written) and its counters read:
published, consumed, used, lag, full-waits, drops, overruns, per consumer position, lag and
loss. ``drops`` counts sends refused for lack of room (``send_nowait``): the executors retry
them, so on events lanes it measures back-pressure, not loss. Per-stage counters (records,
errors) are in the run's summary, not in shared memory yet.

``--watch [SECONDS]`` repeats the view (text: redrawn in place on a terminal; ``--json``: one
document per line) until the run's lanes are gone or ``--count`` views were shown.

Exit codes: 0 shown, 1 no lane of that name (nothing running), 2 usage.
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
        help="lane counters of a running pipeline, read from its shared memory",
        description="Read the lane counters of a running pipeline (byteor run --executor mp "
        "or ring) from /dev/shm/byteor-NAME.*, without disturbing it. Exit 0 shown, 1 no lane "
        "of that name, 2 usage.",
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
    from byteor.lanes._segment import SHM_PREFIX

    head = f"{SHM_PREFIX}{name}."
    try:
        files = os.listdir(directory)
    except OSError:
        return []
    return sorted(f[len(SHM_PREFIX) :] for f in files if f.startswith(head))


def read_snapshot(name: str, directory: str | None = None) -> dict[str, Any]:
    """Every lane of run ``name`` as plain data: ``{"name", "lanes": {lane: counters}}``."""
    from byteor import lanes
    from byteor.lanes._segment import SHM_DIR

    where = directory or SHM_DIR
    out: dict[str, Any] = {}
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
    return {"name": name, "lanes": out}


def _text(doc: dict[str, Any]) -> str:
    lanes_ = doc["lanes"]
    lines = [f"byteor snapshot {doc['name']}: {len(lanes_)} lane(s)"]
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
    try:
        while True:
            doc = read_snapshot(args.name, args.dir)
            if not doc["lanes"]:
                if shown:
                    sys.stderr.write(f"byteor: run {args.name!r} ended (its lanes are gone)\n")
                    return EXIT_OK
                emit_error(
                    args,
                    f"no lanes named byteor-{args.name}.* in {args.dir or '/dev/shm'}: is the "
                    "run going? Name it with byteor run --executor mp|ring --name NAME (or use "
                    "its run id); byteor doctor lists every segment",
                    EXIT_FINDINGS,
                )
                return EXIT_FINDINGS
            if args.json:
                json.dump(
                    doc, sys.stdout, sort_keys=True, indent=None if args.watch is not None else 2
                )
                sys.stdout.write("\n")
            else:
                sys.stdout.write(("\x1b[H\x1b[2J" if redraw else "") + _text(doc))
            sys.stdout.flush()
            shown += 1
            if args.watch is None or (args.count is not None and shown >= args.count):
                return EXIT_OK
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK
