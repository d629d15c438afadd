"""``byteor bench ...``: benchmarks that print ratios against peers measured in the same run."""

from __future__ import annotations

import argparse

from byteor.cli._output import EXIT_USAGE, add_json_flag


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="measure lanes (and later pipelines) against peers")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="WHAT")
    lanes = bench_sub.add_parser("lanes", help="1 producer process -> 1 consumer process")
    add_json_flag(lanes)
    lanes.add_argument("--quick", action="store_true", help="short run (a few seconds)")
    lanes.set_defaults(handler=_run_lanes)
    bench.set_defaults(handler=lambda args: (bench.print_help(), EXIT_USAGE)[1])


def _run_lanes(args: argparse.Namespace) -> int:
    from byteor.bench.lanes import run_cli

    return run_cli(args)
