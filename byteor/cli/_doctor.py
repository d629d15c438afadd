"""``byteor doctor``: find lane segments whose creator is gone, and remove them on request."""

from __future__ import annotations

import argparse

from byteor.cli._output import add_json_flag


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="list lane segments (live, stale, invalid); --remove the stale and invalid ones",
        description=(
            "Validate every byteor-* segment of a directory as attach does and say whether it "
            "is live (a process that created or uses it still runs), stale (all of them are "
            "gone) or invalid (it fails validation). Segments of other users are listed as "
            "foreign and never touched. Exit 0 when nothing is stale or invalid, 1 when some "
            "are (and were not removed), 2 on a usage error."
        ),
    )
    add_json_flag(doctor)
    doctor.add_argument(
        "--remove", action="store_true", help="unlink the stale and invalid segments found"
    )
    doctor.add_argument(
        "--dir",
        metavar="DIR",
        default=None,
        help="the directory to scan (default: /dev/shm)",
    )
    doctor.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from byteor.lanes.doctor import run_cli

    return run_cli(args)
