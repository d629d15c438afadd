"""The ``byteor`` operator CLI.

Every command takes ``--json`` and exits with a code scripts can rely on:

* ``0`` success,
* ``1`` findings or differences (the command ran, the answer is "no"),
* ``2`` usage errors or unreadable input.

Commands live in one module each under ``byteor.cli`` and register themselves through
:data:`COMMAND_MODULES`; a module exposes ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import ClassVar, NoReturn

from byteor import __version__
from byteor.cli._output import EXIT_USAGE, CliError, emit_error

__all__ = ["main", "build_parser"]

# Each entry is imported lazily by name so that a broken optional dependency of one command
# never takes the whole CLI down.
COMMAND_MODULES: tuple[str, ...] = (
    "byteor.cli._bench",
    "byteor.cli._doctor",
    "byteor.cli._spec",
    "byteor.cli._graph",
    "byteor.cli._run",
    "byteor.cli._snapshot",
)


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error under ``--json`` also prints the JSON document.

    Scripts that pass ``--json`` parse stdout; a misspelt option must not leave them with
    nothing to parse. Subcommand parsers inherit the class (``add_subparsers`` uses it).
    """

    json_output: ClassVar[bool] = False

    def error(self, message: str) -> NoReturn:
        if self.json_output:
            command = self.prog.removeprefix("byteor").strip()
            text = f"{command}: {message}" if command else message
            emit_error(argparse.Namespace(json=True), text, EXIT_USAGE)
            sys.exit(EXIT_USAGE)
        super().error(message)


class _JsonParser(_Parser):
    json_output = True


def build_parser(json_output: bool = False) -> argparse.ArgumentParser:
    parser_class = _JsonParser if json_output else _Parser
    parser = parser_class(
        prog="byteor",
        description="ByteOr operator CLI: lanes, specs, pipelines.",
        epilog="Exit codes: 0 ok, 1 findings or differences, 2 usage error or unreadable input.",
    )
    parser.add_argument("--version", action="version", version=f"byteor {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        parser_class=parser_class,
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(json_output="--json" in argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(handler(args))
    except CliError as exc:
        emit_error(args, str(exc), exc.code)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
