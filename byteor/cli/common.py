"""What the ``byteor`` CLI shares with the commands built on it (``edgeplane``, the benches).

Theory of operation
-------------------
A product's command line and a bench command behave like ``byteor``'s own commands: the same
exit codes, one JSON document on stdout under ``--json``, errors as one line the user can act
on (:class:`CliError`, never a traceback), and ``validate`` / ``describe`` that load a plan or
spec file, check its adapters and report findings exactly as ``byteor validate`` does. This
module is that surface; the modules that define it are private to ``byteor.cli``.

* Output: :data:`EXIT_OK` (0), :data:`EXIT_FINDINGS` (1), :data:`EXIT_USAGE` (2),
  :class:`CliError`, :func:`add_json_flag`, :func:`emit`, :func:`emit_error`.
* Loading: :func:`read_bytes` (bounded, usage errors for missing or unreadable paths),
  :func:`sniff_kind` (plan or spec), :func:`load` (parse, lower a plan, validate) into a
  :class:`Loaded`, :func:`render_findings` and :func:`findings_json` for its findings.
* Adapters: :func:`check_adapters` (what the adapters say about their params, added to the
  loaded file's findings) and :func:`declared` (each node's adapter declaration, for the
  adapters importable here).
"""

from __future__ import annotations

from byteor.cli._adapters import check_adapters, declared
from byteor.cli._load import Loaded, findings_json, load, read_bytes, render_findings, sniff_kind
from byteor.cli._output import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_json_flag,
    emit,
    emit_error,
)

__all__ = [
    # output
    "EXIT_OK",
    "EXIT_FINDINGS",
    "EXIT_USAGE",
    "CliError",
    "add_json_flag",
    "emit",
    "emit_error",
    # loading
    "Loaded",
    "read_bytes",
    "sniff_kind",
    "load",
    "render_findings",
    "findings_json",
    # adapters
    "check_adapters",
    "declared",
]
