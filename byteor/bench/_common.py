"""What every ``byteor bench`` command does around its runs, said once.

Theory of operation
-------------------
Each command (``lanes``, ``pipeline``, ``adapters``, ``edgeplane``) measures its own thing, but
they begin and end alike. Before the runs: a warning on stderr when the machine is already
busy (:func:`warn_if_busy`), the versions of the libraries that ran (:func:`versions`) and,
where the command has named cases, the ``--only`` choice checked against them
(:func:`pick`). After: a warning when the machine's own speed moved during the runs
(:func:`speed_warning`), then :func:`finish` adds the failures under the table, writes the
JSON document to ``--save``, prints the table or the document and returns the exit code.
The document records the command that reproduces the run (:func:`command_line`); the table
ends with what each side ran, one indented paragraph each (:func:`described`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shlex
import sys
import textwrap
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from byteor.cli.common import EXIT_FINDINGS, EXIT_OK, CliError, emit

__all__ = [
    "command_line",
    "described",
    "finish",
    "pick",
    "say",
    "speed_warning",
    "versions",
    "warn_if_busy",
]

BUSY_LOAD = 0.5
"""A one-minute load average above this before the runs makes the numbers noisy."""


def say(text: str) -> None:
    """Progress and warnings go to stderr, so ``--json`` on stdout stays one document."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def versions(dists: Sequence[str]) -> dict[str, str | None]:
    """The installed version of each distribution in ``dists``, None for one not installed."""
    out: dict[str, str | None] = {}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def pick(only: Sequence[str] | None, cases: Collection[str], what: str) -> list[str]:
    """The case names ``--only`` asks for (comma-separated, repeatable, in the order given,
    once each), all of ``cases`` when not given; ``what`` names a case in the error."""
    if not only:
        return list(cases)
    names = [n.strip() for part in only for n in part.split(",") if n.strip()]
    unknown = [n for n in names if n not in cases]
    if unknown:
        raise CliError(f"--only: no {what} {', '.join(unknown)} (known: {', '.join(cases)})")
    return list(dict.fromkeys(names))


def warn_if_busy(machine: Mapping[str, Any]) -> None:
    """Say so when :func:`byteor.bench.lanes.machine_info`, taken before the runs, found the
    CPUs already in use."""
    load = machine["load_average"][0]
    if load > BUSY_LOAD:
        say(
            f"warning: the load average is {load:.2f} before the runs:"
            " something else is using the CPUs and the numbers will be noisy"
        )


def speed_warning(probes: Sequence[float], advice: str) -> str:
    """A line for under the table when the speed probes taken before each run differ by more
    than half (a shared VM does that for minutes at a time), followed by ``advice``; empty
    when the machine held its speed."""
    if not probes or max(probes) <= 1.5 * min(probes):
        return ""
    return (
        f"\nwarning: this machine's speed changed during the run (an empty Python loop took"
        f" {min(probes):.1f} to {max(probes):.1f} ns a turn): {advice}"
    )


def command_line(words: list[str], args: argparse.Namespace) -> str:
    """``words`` (the command and its own flags) with ``--quick``, ``--json`` and ``--save``
    as given, quoted for a shell: the line that runs the benchmark again."""
    parts = list(words)
    for flag in ("quick", "json"):
        if getattr(args, flag, False):
            parts.append(f"--{flag}")
    if getattr(args, "save", None):
        parts += ["--save", args.save]
    return shlex.join(parts)


def described(text: str) -> list[str]:
    """``text`` as table lines: wrapped at 100 columns, indented, its continuation deeper."""
    return textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent="      ")


def finish(args: argparse.Namespace, text: str, doc: Mapping[str, Any], failed: bool) -> int:
    """Add ``doc["failures"]`` under ``text`` when ``failed``, write ``doc`` to ``--save`` when
    given, print (``text``, or ``doc`` with ``--json``) and return the command's exit code."""
    if failed:
        text += "\n\nFAILED:\n" + "\n".join(f"  {f}" for f in doc["failures"])
    save = getattr(args, "save", None)
    if save:
        with open(save, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
    emit(args, text, doc)
    return EXIT_FINDINGS if failed else EXIT_OK
