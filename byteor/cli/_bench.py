"""``byteor bench ...``: benchmarks that print ratios against peers measured in the same run."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from byteor.cli._output import EXIT_USAGE, add_json_flag


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "bench", help="measure lanes, pipelines, adapters and EdgePlane against peers"
    )
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="WHAT")
    lanes = bench_sub.add_parser(
        "lanes",
        help="1 producer process -> 1 consumer process",
        description=(
            "Move messages from one producer process to one consumer process over our lanes"
            " and over the peers a user would pick instead (multiprocessing Queue and Pipe,"
            " pyzmq, faster-fifo); print each with its ratio to pyzmq PUSH/PULL. Progress goes"
            " to stderr. Exit 1 when any run fails its checks (order, count, a hang)."
        ),
    )
    add_json_flag(lanes)
    lanes.add_argument("--quick", action="store_true", help="a twentieth of the messages (< 15 s)")
    lanes.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="run only paths matching PATTERN (a glob like 'ours/*', or a substring like"
        " 'numpy'); repeatable. The pyzmq baselines are kept for the ratios.",
    )
    lanes.add_argument(
        "--no-baseline", action="store_true", help="with --only: do not add the pyzmq baselines"
    )
    lanes.add_argument(
        "--sizes", metavar="BYTES,...", help="message sizes in bytes (default: 64,1024)"
    )
    lanes.add_argument(
        "--repeat", type=int, default=3, metavar="N", help="runs per path (default: 3)"
    )
    _add_run_flags(lanes, "paths", "byteor.bench.lanes")

    adapters = bench_sub.add_parser(
        "adapters",
        help="each adapter's source and sink against a hand-written loop",
        description=(
            "Measure each adapter's source and sink in records/s against a hand-written asyncio"
            " loop using the same client library for the same work, in the same run, and"
            " print ours/hand (target: >= 0.90). Needs the servers (scripts/services.sh); an"
            " adapter whose server or client library is missing is reported as skipped."
            " Progress goes to stderr. Exit 1 when any run fails its checks (a record lost,"
            " duplicated or not acknowledged upstream, an error, a hang)."
        ),
    )
    add_json_flag(adapters)
    adapters.add_argument(
        "--only",
        action="append",
        metavar="NAME,...",
        help="only these adapters (comma-separated, repeatable; default: all)",
    )
    adapters.add_argument(
        "--records",
        type=int,
        metavar="N",
        help="records per run (default: each adapter its own count, about a second a run)",
    )
    adapters.add_argument("--size", type=int, metavar="BYTES", help="payload size (default: 128)")
    adapters.add_argument("--batch", type=int, metavar="N", help="records per batch (default: 500)")
    adapters.add_argument(
        "--repeat", type=int, metavar="N", help="runs per side (default: 3; --quick 1)"
    )
    adapters.add_argument(
        "--quick", action="store_true", help="a tenth of the records, one run per side (~10 s)"
    )
    _add_run_flags(adapters, "adapter cases", "byteor.bench.adapters")

    pipeline = bench_sub.add_parser(
        "pipeline",
        help="decode -> transform -> encode on every executor against mp.Queue by hand",
        description=(
            "Run one 3-stage pipeline (decode JSON -> transform -> encode JSON) on SingleRing"
            " (1, 2 and 4 processes), LaneGraph SP and LaneGraph MP (2 and 4 processes), per"
            " message, batched and framed (256 records a message), and the same pipeline"
            " hand-written with"
            " multiprocessing.Queue between processes; print records/s, the ratio to the"
            " hand-written version and which target to pick for this machine's cores. Every"
            " run's output is checked byte for byte. Progress goes to stderr. Exit 1 when any"
            " run fails its checks (a record lost, changed or reordered, a hang)."
        ),
    )
    add_json_flag(pipeline)
    pipeline.add_argument(
        "--quick", action="store_true", help="a tenth of the records, one run each (~5 s)"
    )
    pipeline.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="only targets matching PATTERN (a glob like 'ring/*' or a substring); repeatable."
        " The hand-written baseline is kept for the ratios.",
    )
    pipeline.add_argument(
        "--records",
        type=int,
        metavar="N",
        help="records per batched and framed run (default: 600000; per-message runs take a tenth)",
    )
    pipeline.add_argument(
        "--repeat", type=int, metavar="N", help="runs per target and mode (default: 3; --quick 1)"
    )
    _add_run_flags(pipeline, "targets", "byteor.bench.pipeline")

    edgeplane = bench_sub.add_parser(
        "edgeplane",
        help="EdgePlane end to end (Kafka -> NATS, Redis -> PostgreSQL) against a hand loop",
        description=(
            "Run two pipelines with one transform stage through EdgePlane (edgeplane run:"
            " Kafka -> NATS JetStream, Redis Streams -> PostgreSQL) and as a hand-written"
            " asyncio loop with the same client libraries doing the same work, in the same"
            " run; print records/s, ours/hand (target: >= 0.90), EdgePlane's latency"
            " percentiles at a steady rate, and the memory of a run whose sink is blocked."
            " Needs the servers (scripts/services.sh). Progress goes to stderr. Exit 1 when"
            " any run fails its checks (a record lost, duplicated, not transformed or not"
            " acknowledged upstream, a hang)."
        ),
    )
    add_json_flag(edgeplane)
    edgeplane.add_argument(
        "--quick",
        action="store_true",
        help="10,000 records, one round, 3 s of latency, the sink blocked 10 s (~1 min)",
    )
    edgeplane.add_argument(
        "--only",
        action="append",
        metavar="CASE,...",
        help="only these cases: kafka_nats, redis_pg, rss_sink_stopped (default: all)",
    )
    edgeplane.add_argument(
        "--records", type=int, metavar="N", help="records per throughput run (default: 100000)"
    )
    edgeplane.add_argument(
        "--repeat", type=int, metavar="N", help="rounds of ours and hand (default: 3; --quick 1)"
    )
    edgeplane.add_argument(
        "--latency-seconds",
        type=float,
        metavar="S",
        help="length of each steady-rate latency run, 0 for none (default: 10; --quick 3)",
    )
    edgeplane.add_argument(
        "--latency-rate",
        type=float,
        metavar="N",
        help="records/s of the latency runs (default: half of ours' median throughput)",
    )
    edgeplane.add_argument(
        "--hold-seconds",
        type=float,
        metavar="S",
        help="how long rss_sink_stopped blocks the sink (default: 60; --quick 10)",
    )
    edgeplane.add_argument(
        "--rss-records",
        type=int,
        metavar="N",
        help="records upstream of the blocked sink (default: 200000; --quick 50000)",
    )
    _add_run_flags(edgeplane, "cases", "byteor.bench.edgeplane")

    def _help(args: argparse.Namespace) -> int:
        bench.print_help()
        return EXIT_USAGE

    bench.set_defaults(handler=_help)


def _add_run_flags(parser: argparse.ArgumentParser, listed: str, module: str) -> None:
    """The flags every bench command takes (--timeout, --save, --list) and its handler: the
    ``run_cli`` of ``module``, imported on use (the benchmarks pull in numpy, the peers and
    the client libraries; the rest of the CLI must not)."""
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="a run that takes longer fails as hung (default: 120)",
    )
    parser.add_argument(
        "--save", metavar="FILE", help="also write the JSON document to FILE (with the table)"
    )
    parser.add_argument("--list", action="store_true", help=f"list the {listed} and exit")

    def run(args: argparse.Namespace) -> int:
        run_cli: Callable[[argparse.Namespace], int] = importlib.import_module(module).run_cli
        return run_cli(args)

    parser.set_defaults(handler=run)
