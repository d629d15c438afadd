"""Shared output helpers: human text or one JSON document, and the exit-code constants."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = [
    "EXIT_OK",
    "EXIT_FINDINGS",
    "EXIT_USAGE",
    "CliError",
    "add_json_flag",
    "emit",
    "emit_error",
]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A command failed in a way the user can act on; printed as one line, never a traceback."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def emit(args: argparse.Namespace, text: str, doc: Any) -> None:
    """Print ``doc`` as JSON when ``--json`` was given, otherwise ``text``."""
    if getattr(args, "json", False):
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def emit_error(args: argparse.Namespace, message: str, code: int) -> None:
    if getattr(args, "json", False):
        json.dump({"error": message, "exit_code": code}, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    sys.stderr.write(f"byteor: error: {message}\n")
