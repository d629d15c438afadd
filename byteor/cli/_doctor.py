"""``byteor doctor``: find lane segments whose creator is gone, and remove them on request."""

from __future__ import annotations

import argparse

from byteor.cli._output import add_json_flag


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser("doctor", help="list stale lane segments (creator gone); --remove them")
    add_json_flag(doctor)
    doctor.add_argument("--remove", action="store_true", help="unlink the stale segments found")
    doctor.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from byteor.lanes.doctor import run_cli

    return run_cli(args)
