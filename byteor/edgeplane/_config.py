"""EdgePlane's configuration: options, ``${VAR}`` interpolation, secrets, loading a pipeline.

Theory of operation
-------------------
**Interpolation** runs on the text of a spec or plan before it is parsed, so every later
step (validation, lowering, the canonical hash) sees the values a run will use. Two forms
exist, as in a shell or a compose file: ``${VAR}`` (``VAR`` must be set; set-but-empty gives
an empty value) and ``${VAR:-default}`` (the default when ``VAR`` is unset or empty; a
default may hold further placeholders, resolved only when the default is used). ``$$`` is
a literal ``$``; any other ``$`` is left as it is. Comments are not interpolated (a spec's
``#`` lines, TOML's ``#`` to the end of the line), so a commented-out placeholder needs no
variable. A missing variable, a malformed placeholder or one left open is a
:class:`~byteor.edgeplane._errors.InterpolationError` naming the file, line and variable.

A value is *text of the target syntax* once it is put in, so it is escaped for where it
lands: inside a TOML ``"basic"`` string ``\\`` and ``"`` are escaped (a password with a quote
reads back as itself, it does not end the string); a TOML ``'literal'`` string cannot hold a
quote or a line break, and a spec line or a bare TOML value cannot hold a line break, so such
values are refused with an error saying where to move them. Defaults are written in the
file, in its own syntax, and are copied as they are.

**Secrets.** The values put in for variables whose name contains ``TOKEN``, ``PASSWORD``,
``PASSWD``, ``SECRET``, ``KEY`` or ``CREDENTIAL`` (any case; a default used for such a
variable too), the values of every variable named with ``--secret-env`` (interpolated or
not: the user said they are secret) and the password of every ``scheme://user:password@``
URL found in the interpolated text are collected in a :class:`Redactor`, which replaces
each of them with ``***`` in any text: log records (a ``logging.Filter``, see
:mod:`byteor.edgeplane._logging`), ``describe`` output and error messages. Each secret is
also matched in the forms other layers print it in (percent-encoded, JSON- and
repr-escaped). Every non-empty secret is redacted, however short: over-redacting a log line
is a nuisance, printing a password is a leak.

**Options** come from flags, then ``EDGEPLANE_*`` environment variables, then defaults
(:class:`EdgePlaneOptions`, :func:`resolve_options`). One table (``OPTIONS``) drives the
flags, the parsing of both sources (the same checks, the same messages) and the
environment section of ``--help`` (:func:`environment_help`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from byteor.adapters import AdapterUse, uses_in_document, validate_adapters
from byteor.edgeplane._errors import (
    InterpolationError,
    MissingVariable,
    OptionError,
    PipelineFileError,
)
from byteor.lower import LowerError, TargetChoice, lower_v2
from byteor.plan import MAX_PLAN_BYTES, PipelinePlanV2, parse_plan_toml
from byteor.spec import (
    MAX_SPEC_BYTES,
    PipelineSpecV1,
    canonical_hash,
    is_name,
    parse_spec,
    validate_v1,
)

__all__ = [
    "Syntax",
    "Interpolated",
    "interpolate",
    "SECRET_WORDS",
    "is_secret_name",
    "url_passwords",
    "Redactor",
    "collect_secrets",
    "EdgePlaneOptions",
    "OptionDef",
    "OPTIONS",
    "DEFAULT_METRICS_ADDR",
    "add_option_arguments",
    "add_path_argument",
    "resolve_options",
    "environment_help",
    "import_dirs",
    "extend_import_path",
    "LoadedPipeline",
    "load_pipeline",
]

Syntax = Literal["kv", "toml"]

# -- interpolation ----------------------------------------------------------------------------

_NAME_START: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS: Final = _NAME_START | frozenset("0123456789")
_LINE_BREAKS: Final = frozenset("\n\r\x85\u2028\u2029")

# Where a placeholder stands (TOML lexical states; a spec line is _OUT).
_OUT: Final = 0
_COMMENT: Final = 1
_BASIC: Final = 2  # "..."
_ML_BASIC: Final = 3  # """..."""
_LITERAL: Final = 4  # '...'
_ML_LITERAL: Final = 5  # '''...'''

_TOML_ESCAPES: Final = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n"}
_TOML_ESCAPES_MORE: Final = {"\f": "\\f", "\r": "\\r"}


@dataclass(frozen=True, slots=True)
class Interpolated:
    """Text with its placeholders resolved.

    Attributes:
        text: the text to parse.
        values: ``name -> value`` of every placeholder resolved, the default when one was
            used (what went into the text, before escaping), in order of first use.
    """

    text: str
    values: Mapping[str, str]

    def __repr__(self) -> str:  # the text and values may hold secrets
        return f"Interpolated({len(self.text)} chars, variables {sorted(self.values)})"


def _toml_basic_escape(value: str) -> str:
    out = []
    for c in value:
        esc = _TOML_ESCAPES.get(c) or _TOML_ESCAPES_MORE.get(c)
        if esc is not None:
            out.append(esc)
        elif ord(c) < 32 or ord(c) == 127:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def _control(value: str, allowed: str = "\t") -> bool:
    return any((ord(c) < 32 or ord(c) == 127) and c not in allowed for c in value)


class _Scanner:
    """One pass over a text: copies it, resolving placeholders outside comments."""

    def __init__(self, text: str, env: Mapping[str, str], path: str, syntax: Syntax) -> None:
        self.text = text
        self.env = env
        self.path = path
        self.syntax = syntax
        self.values: dict[str, str] = {}

    def error(self, line: int, variable: str, message: str) -> InterpolationError:
        return InterpolationError(self.path, line, variable, message)

    def run(self) -> str:
        if self.syntax == "kv":
            out = []
            for number, line in enumerate(self.text.split("\n"), start=1):
                if line.strip().startswith("#"):
                    out.append(line)
                else:
                    out.append(self.expand_all(line, number, _OUT))
            return "\n".join(out)
        return self.toml()

    def expand_all(self, segment: str, line: int, state: int) -> str:
        """``segment`` (no line break) with every ``$$`` and placeholder resolved."""
        out = []
        i = 0
        n = len(segment)
        while i < n:
            j = segment.find("$", i)
            if j < 0:
                out.append(segment[i:])
                break
            out.append(segment[i:j])
            if segment.startswith("$$", j):
                out.append("$")
                i = j + 2
            elif segment.startswith("${", j):
                text, i = self.placeholder(segment, j, line, state, evaluate=True)
                out.append(text)
            else:
                out.append("$")
                i = j + 1
        return "".join(out)

    def placeholder(
        self, s: str, start: int, line: int, state: int, *, evaluate: bool
    ) -> tuple[str, int]:
        """Resolve the placeholder at ``s[start:]`` (``${``); returns (text, end index).

        With ``evaluate`` false it is only checked (an unused default's placeholders).
        """
        i = start + 2
        n = len(s)
        if i >= n or s[i] not in _NAME_START:
            shown = s[start : min(n, start + 12)]
            raise self.error(
                line,
                "",
                f"{shown!r} is not a placeholder: use ${{NAME}} or ${{NAME:-default}} with NAME "
                "of letters, digits and _ (not starting with a digit); write $$ for a literal $",
            )
        j = i
        while j < n and s[j] in _NAME_CHARS:
            j += 1
        name = s[i:j]
        if j >= n:
            raise self.error(
                line, name, f"${{{name} is not closed: end it with }} on the same line"
            )
        default: str | None = None
        if s[j] == "}":
            end = j + 1
        elif s.startswith(":-", j):
            parts: list[str] = []
            k = j + 2
            use_default = evaluate and not self.env.get(name)
            while True:
                if k >= n:
                    raise self.error(
                        line, name, f"${{{name}:-... is not closed: end it with }} on the same line"
                    )
                c = s[k]
                if c == "}":
                    break
                if s.startswith("$$", k):
                    parts.append("$")
                    k += 2
                elif s.startswith("${", k):
                    text, k = self.placeholder(s, k, line, state, evaluate=use_default)
                    parts.append(text)
                else:
                    parts.append(c)
                    k += 1
            default = "".join(parts)
            end = k + 1
        else:
            raise self.error(
                line,
                name,
                f"${{{name}{s[j]}...}} is not supported: use ${{{name}}} or "
                f"${{{name}:-default}} (write $$ for a literal $)",
            )
        if not evaluate:
            return "", end
        value = self.env.get(name)
        if default is not None and not value:
            self.values.setdefault(name, default)
            return default, end
        if value is None:
            raise MissingVariable(
                self.path,
                line,
                name,
                f"${{{name}}} is not set: export {name}=..., or give a default with "
                f"${{{name}:-value}}",
            )
        self.values.setdefault(name, value)
        return self.escape(value, name, line, state), end

    def escape(self, value: str, name: str, line: int, state: int) -> str:
        """``value`` as text of the place it lands in (see the module docstring)."""
        if state in (_BASIC, _ML_BASIC):
            return _toml_basic_escape(value)
        where = "a spec line" if self.syntax == "kv" else "a bare TOML value"
        if state == _LITERAL:
            if "'" in value or _control(value):
                raise self.error(
                    line,
                    name,
                    f"the value of {name} has a ' or a control character, which a "
                    f"'single-quoted' TOML string cannot hold: put ${{{name}}} in a "
                    '"double-quoted" string',
                )
            return value
        if state == _ML_LITERAL:
            if "'''" in value or _control(value, "\t\n"):
                raise self.error(
                    line,
                    name,
                    f"the value of {name} has ''' or a control character, which a '''literal''' "
                    f'TOML string cannot hold: put ${{{name}}} in a "double-quoted" string',
                )
            return value
        if any(c in _LINE_BREAKS for c in value):
            fix = (
                "spec values are one line"
                if self.syntax == "kv"
                else f'put ${{{name}}} in a "double-quoted" string'
            )
            raise self.error(
                line,
                name,
                f"the value of {name} has a line break, which {where} cannot hold: {fix}",
            )
        return value

    def toml(self) -> str:
        s = self.text
        n = len(s)
        out: list[str] = []
        state = _OUT
        line = 1
        i = 0
        while i < n:
            c = s[i]
            if c == "$" and state != _COMMENT:
                if s.startswith("$$", i):
                    out.append("$")
                    i += 2
                elif s.startswith("${", i):
                    text, i = self.placeholder(s, i, line, state, evaluate=True)
                    out.append(text)
                else:
                    out.append("$")
                    i += 1
                continue
            step = 1
            if c == "\n":
                line += 1
                if state in (_COMMENT, _BASIC, _LITERAL):
                    state = _OUT  # a line break ends a comment (and, invalidly, a string)
            elif state == _OUT:
                if c == "#":
                    state = _COMMENT
                elif c == '"':
                    state, step = (_ML_BASIC, 3) if s.startswith('"""', i) else (_BASIC, 1)
                elif c == "'":
                    state, step = (_ML_LITERAL, 3) if s.startswith("'''", i) else (_LITERAL, 1)
            elif state in (_BASIC, _ML_BASIC) and c == "\\":
                step = 2  # the escaped character is copied with its backslash
            elif (state == _BASIC and c == '"') or (state == _LITERAL and c == "'"):
                state = _OUT
            elif (state == _ML_BASIC and s.startswith('"""', i)) or (
                state == _ML_LITERAL and s.startswith("'''", i)
            ):
                # A closing run may be up to 5 quotes long: 1 or 2 belong to the string.
                while step < 5 and i + step < n and s[i + step] == c:
                    step += 1
                step = max(step, 3)
                state = _OUT
            out.append(s[i : i + step])
            if step == 2 and s[i + 1 : i + 2] == "\n":
                line += 1  # a line-ending backslash in a multi-line basic string
            i += step
        return "".join(out)


def interpolate(
    text: str, env: Mapping[str, str], *, syntax: Syntax = "kv", path: str = "<text>"
) -> Interpolated:
    """Resolve ``${VAR}``, ``${VAR:-default}`` and ``$$`` in ``text`` (see the module
    docstring).

    Args:
        text: a spec (``syntax="kv"``) or plan (``"toml"``) text.
        env: the variables (``os.environ``, usually).
        path: named in errors.

    Raises:
        MissingVariable: a ``${VAR}`` without default whose variable is not set.
        InterpolationError: a malformed or unclosed placeholder, or a value that cannot
            stand where its placeholder is.
    """
    scanner = _Scanner(text, env, path, syntax)
    return Interpolated(scanner.run(), dict(scanner.values))


# -- secrets ----------------------------------------------------------------------------------

SECRET_WORDS: Final = ("TOKEN", "PASSWORD", "PASSWD", "SECRET", "KEY", "CREDENTIAL")

# scheme://user:password@ with the password up to the token's last '@' (passwords are often
# not percent-encoded, and a lenient client takes them that way). In free text a quote ends
# the token; in a value on its own (a param) it is part of the password.
_URL_PASSWORD_IN_TEXT: Final = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:(?P<pw>[^\s'\"]+)@(?=[^\s'\"@]*(?:[\s'\"]|$))"
)
_URL_PASSWORD_IN_VALUE: Final = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:(?P<pw>\S+)@(?=[^\s@]*(?:\s|$))"
)


def is_secret_name(name: str) -> bool:
    """Whether a variable's name says its value is secret (``DB_PASSWORD``, ``API_KEY``)."""
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


def url_passwords(text: str, *, value: bool = False) -> list[str]:
    """The password of every ``scheme://user:password@host`` URL in ``text``; with
    ``value``, ``text`` is one value (a param), whose quotes belong to it."""
    pattern = _URL_PASSWORD_IN_VALUE if value else _URL_PASSWORD_IN_TEXT
    return [m.group("pw") for m in pattern.finditer(text)]


def _forms(secret: str) -> set[str]:
    """``secret`` as other layers may print it: as is, percent-encoded and -decoded,
    JSON-escaped, repr-escaped."""
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.unquote(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }
    return {f for f in forms if f}


class Redactor:
    """Replaces every secret value with ``***`` in any text.

    Longer secrets are matched first, so a secret that contains another is hidden whole.
    ``repr`` shows how many secrets there are, never one of them.
    """

    __slots__ = ("_pattern", "_count")

    MASK: Final = "***"

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        count = 0
        for secret in dict.fromkeys(secrets):
            if secret:
                count += 1
                forms |= _forms(secret)
        self._count = count
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        """``text`` with every secret (in every form) replaced by ``***``."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(self.MASK, text)

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def __len__(self) -> int:
        """How many different secrets were given (not counting their other forms)."""
        return self._count

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __repr__(self) -> str:
        return f"Redactor({self._count} secret{'s' if self._count != 1 else ''})"


def collect_secrets(
    interpolated: Interpolated,
    env: Mapping[str, str],
    secret_env: Iterable[str] = (),
    texts: Iterable[str] = (),
) -> Redactor:
    """The :class:`Redactor` of a run: secret-named variables' values, ``secret_env``
    variables' values, and URL passwords in the interpolated text, in those values and in
    ``texts`` (a spec's param values, unescaped)."""
    listed = set(secret_env)
    found: list[str] = []
    for name, value in interpolated.values.items():
        if name in listed or is_secret_name(name):
            found.append(value)
    for name in sorted(listed):
        listed_value = env.get(name)
        if listed_value:
            found.append(listed_value)
    found += url_passwords(interpolated.text)
    for text in (*interpolated.values.values(), *texts):
        found += url_passwords(text, value=True)
    return Redactor(found)


# -- options ----------------------------------------------------------------------------------

DEFAULT_METRICS_ADDR: Final = ("127.0.0.1", 9464)
LogFormat = Literal["text", "json"]
RestartPolicy = Literal["fail", "restart"]
ProgressMode = Literal["auto", "on", "off"]
_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class EdgePlaneOptions:
    """How ``edgeplane run`` runs, resolved from flags > ``EDGEPLANE_*`` > defaults.

    Attributes:
        name: the run's name (its segments are ``/dev/shm/byteor-<name>.*``); ``None``:
            the spec's pipeline name.
        metrics_addr: ``(host, port)`` of the metrics endpoint (port 0: any free port);
            ``None``: no endpoint.
        log_format: ``text`` or ``json`` (one object per line).
        log_level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        drain_timeout: seconds a graceful stop may take before the run is ended at once.
        restart: what a dead process does to the run: ``restart`` the data plane, or
            ``fail`` (stop everything cleanly, exit non-zero).
        max_restarts: restarts allowed before the run fails anyway (within
            ``restart_window``).
        restart_window: seconds of the sliding window the restarts are counted in; 0: the
            whole run.
        progress: the progress line: ``auto`` (when stderr is a terminal), ``on``, ``off``.
        secret_env: variables whose values are secret whatever their names.
        path: folders put first on ``sys.path`` (``--path``, ``EDGEPLANE_PATH``), as given;
            the pipeline file's folder goes on it too (:func:`extend_import_path`).
    """

    name: str | None = None
    metrics_addr: tuple[str, int] | None = DEFAULT_METRICS_ADDR
    log_format: LogFormat = "text"
    log_level: str = "info"
    drain_timeout: float = 30.0
    restart: RestartPolicy = "restart"
    max_restarts: int = 5
    restart_window: float = 0.0
    progress: ProgressMode = "auto"
    secret_env: tuple[str, ...] = ()
    path: tuple[str, ...] = ()


class _Parse(Protocol):
    def __call__(self, text: str, where: str) -> object: ...


def _choice(*choices: str) -> _Parse:
    def parse(text: str, where: str) -> object:
        value = text.strip().lower()
        if value not in choices:
            raise OptionError(where, f"{where}={text!r}: use one of {', '.join(choices)}")
        return value

    return parse


def _name(text: str, where: str) -> object:
    value = text.strip()
    if not is_name(value):
        raise OptionError(
            where,
            f"{where}={text!r}: a run name is 1 to 48 bytes of A-Z a-z 0-9 _ - (it names the "
            "run's /dev/shm segments)",
        )
    return value


def _addr(text: str, where: str) -> object:
    value = text.strip()
    if value.lower() == "off":
        return None
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:9464
    ok = bool(sep) and bool(host) and port_text.isdigit() and int(port_text) <= 65535
    if not ok:
        raise OptionError(
            where,
            f"{where}={text!r}: give HOST:PORT (127.0.0.1:9464, 0.0.0.0:9464, [::1]:9464; "
            "port 0 picks a free one) or off",
        )
    return (host, int(port_text))


def _seconds(text: str, where: str) -> object:
    try:
        value = float(text.strip())
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise OptionError(where, f"{where}={text!r}: give a number of seconds > 0, e.g. 30")
    return value


def _window(text: str, where: str) -> object:
    try:
        value = float(text.strip())
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise OptionError(
            where,
            f"{where}={text!r}: give a number of seconds >= 0, e.g. 600 (0: count every "
            "restart of the run)",
        )
    return value


def _count(text: str, where: str) -> object:
    value = text.strip()
    if not value.isdigit():
        raise OptionError(where, f"{where}={text!r}: give a whole number >= 0")
    return int(value)


def _names(text: str, where: str) -> object:
    names = tuple(n for n in re.split(r"[\s,]+", text.strip()) if n)
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
    if bad:
        raise OptionError(where, f"{where}: {bad[0]!r} is not a variable name")
    return names


def _dirs(text: str, where: str) -> object:
    dirs = tuple(d for d in text.split(os.pathsep) if d.strip())
    for d in dirs:
        if not os.path.isdir(d):
            raise OptionError(
                where,
                f"{where}: {d!r} is not a folder: give folders that hold the modules a "
                f"pipeline names as module:function ({os.pathsep!r} between several)",
            )
    return dirs


@dataclass(frozen=True, slots=True)
class OptionDef:
    """One option: its :class:`EdgePlaneOptions` field, flag, variable, parser, help and
    default as shown."""

    dest: str
    flag: str
    env: str
    parse: _Parse = field(repr=False)
    help: str
    default: str


OPTIONS: Final = (
    OptionDef("name", "--name", "EDGEPLANE_NAME", _name, "run name", "the spec's name"),
    OptionDef(
        "metrics_addr",
        "--metrics-addr",
        "EDGEPLANE_METRICS_ADDR",
        _addr,
        "HOST:PORT of /metrics, /live, /ready; off disables",
        "127.0.0.1:9464",
    ),
    OptionDef(
        "log_format",
        "--log-format",
        "EDGEPLANE_LOG_FORMAT",
        _choice("text", "json"),
        "text, or json (one object per line)",
        "text",
    ),
    OptionDef(
        "log_level",
        "--log-level",
        "EDGEPLANE_LOG_LEVEL",
        _choice(*_LEVELS),
        "/".join(_LEVELS),
        "info",
    ),
    OptionDef(
        "drain_timeout",
        "--drain-timeout",
        "EDGEPLANE_DRAIN_TIMEOUT",
        _seconds,
        "seconds a graceful stop may take",
        "30",
    ),
    OptionDef(
        "restart",
        "--restart",
        "EDGEPLANE_RESTART",
        _choice("restart", "fail"),
        "a dead process: restart the data plane, or fail",
        "restart",
    ),
    OptionDef(
        "max_restarts",
        "--max-restarts",
        "EDGEPLANE_MAX_RESTARTS",
        _count,
        "restarts before the run fails anyway (within --restart-window)",
        "5",
    ),
    OptionDef(
        "restart_window",
        "--restart-window",
        "EDGEPLANE_RESTART_WINDOW",
        _window,
        "count only the restarts of the last SECONDS; 0: the whole run",
        "0",
    ),
    OptionDef(
        "progress",
        "--progress/--no-progress",
        "EDGEPLANE_PROGRESS",
        _choice("auto", "on", "off"),
        "progress line on stderr: auto (a terminal), on, off",
        "auto",
    ),
    OptionDef(
        "secret_env",
        "--secret-env",
        "EDGEPLANE_SECRET_ENV",
        _names,
        "more variables whose values are secret (comma-separated)",
        "none",
    ),
    OptionDef(
        "path",
        "--path",
        "EDGEPLANE_PATH",
        _dirs,
        f"more folders to import module:function from ({os.pathsep!r}-separated)",
        "the file's folder",
    ),
)


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option's flag to ``parser`` (each defaults to ``None``: not given, so
    :func:`resolve_options` falls back to the environment)."""
    for opt in OPTIONS:
        if opt.dest == "progress":
            group = parser.add_mutually_exclusive_group()
            group.add_argument(
                "--progress",
                dest="progress",
                action="store_const",
                const="on",
                default=None,
                help="show the progress line even when stderr is not a terminal",
            )
            group.add_argument(
                "--no-progress",
                dest="progress",
                action="store_const",
                const="off",
                help="never show the progress line",
            )
        elif opt.dest == "secret_env":
            parser.add_argument(
                "--secret-env",
                dest="secret_env",
                action="append",
                default=None,
                metavar="VAR",
                help="VAR's value is secret: replaced by *** in logs, describe and errors "
                "(repeat for several)",
            )
        elif opt.dest == "path":
            add_path_argument(parser)
        else:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                default=None,
                help=f"{opt.help} (env {opt.env}; default {opt.default})",
            )


def add_path_argument(parser: argparse.ArgumentParser) -> None:
    """``--path DIR`` (repeatable): more folders to import ``module:function`` from."""
    parser.add_argument(
        "--path",
        dest="path",
        action="append",
        default=None,
        metavar="DIR",
        help="import module:function ops and adapters from DIR too, before installed "
        "packages (repeat for several; env EDGEPLANE_PATH, os.pathsep-separated; the spec's "
        "or plan's own folder is always searched, after them)",
    )


def import_dirs(flags: Iterable[str] | None, env: Mapping[str, str]) -> tuple[str, ...]:
    """The ``--path`` folders, then ``EDGEPLANE_PATH``'s (they add up), each checked.

    Raises:
        OptionError: a folder that does not exist.
    """
    dirs: list[str] = []
    for item in flags or ():
        dirs += _dirs(str(item), "--path")  # type: ignore[arg-type]
    if env.get("EDGEPLANE_PATH", "").strip():
        dirs += _dirs(env["EDGEPLANE_PATH"], "EDGEPLANE_PATH")  # type: ignore[arg-type]
    return tuple(dict.fromkeys(dirs))


def resolve_options(
    flags: argparse.Namespace | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> EdgePlaneOptions:
    """The options of a run: a flag given wins over its ``EDGEPLANE_*`` variable, which wins
    over the default. ``--secret-env`` and ``EDGEPLANE_SECRET_ENV`` add up (a secret is never
    dropped), and so do ``--path`` and ``EDGEPLANE_PATH``.

    Args:
        flags: parsed arguments (:func:`add_option_arguments`) or a mapping of option field
            names to strings; ``None`` or a missing field means "not given".
        env: the environment (default ``os.environ``).

    Raises:
        OptionError: a value is not accepted; the message names the flag or variable.
    """
    given: Mapping[str, Any] = (
        vars(flags) if isinstance(flags, argparse.Namespace) else (flags or {})
    )
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = given.get(opt.dest)
        if opt.dest == "secret_env":
            names: list[str] = []
            if environ.get(opt.env):
                names += _names(environ[opt.env], opt.env)  # type: ignore[arg-type]
            flag_values = [raw] if isinstance(raw, str) else list(raw or ())
            for item in flag_values:
                names += _names(str(item), opt.flag)  # type: ignore[arg-type]
            values[opt.dest] = tuple(dict.fromkeys(names))
            continue
        if opt.dest == "path":
            flag_dirs = [raw] if isinstance(raw, str) else list(raw or ())
            values[opt.dest] = import_dirs(flag_dirs, environ)
            continue
        if raw is not None:
            flag = opt.flag.split("/")[0]
            values[opt.dest] = opt.parse(str(raw), flag)
        elif environ.get(opt.env, "").strip():
            values[opt.dest] = opt.parse(environ[opt.env], opt.env)
    return EdgePlaneOptions(**values)


def environment_help() -> str:
    """The environment section of ``--help`` (use ``RawDescriptionHelpFormatter``, or the
    table is reflowed)."""
    width = max(len(o.env) for o in OPTIONS)
    lines = [
        "environment (a flag given wins over its variable; --secret-env and --path add to theirs):"
    ]
    for o in OPTIONS:
        lines.append(f"  {o.env:<{width}}  {o.flag:<24} {o.help} (default {o.default})")
    lines.append(
        "  ${VAR} and ${VAR:-default} in the spec or plan are read from the environment too."
    )
    return "\n".join(lines)


# -- loading a pipeline -----------------------------------------------------------------------


def extend_import_path(pipeline_path: str, dirs: Sequence[str] = ()) -> list[str]:
    """Make the ``module:function`` names of a pipeline importable, in this process and the
    children it forks (they inherit ``sys.path``): ``dirs`` (``--path``, ``EDGEPLANE_PATH``)
    go first on ``sys.path``, in order, like ``PYTHONPATH``; the pipeline file's own folder
    goes last, so a module beside the file is found without ever hiding an installed one
    (a ``kafka.py`` next to the plan does not replace the client library). Folders already
    on ``sys.path`` stay where they are. Returns the folders added.
    """
    have = {os.path.abspath(p or os.curdir) for p in sys.path}
    added: list[str] = []
    front = [os.path.abspath(d) for d in dirs]
    for d in reversed(front):
        if d not in have:
            sys.path.insert(0, d)
            have.add(d)
            added.insert(0, d)
    own = os.path.dirname(os.path.abspath(pipeline_path))
    if own not in have:
        sys.path.append(own)
        added.append(own)
    if added:
        importlib.invalidate_caches()  # a finder may have listed a folder before its files
    return added


class _FindingLike(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def line(self) -> int | None: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True, slots=True, repr=False)
class LoadedPipeline:
    """A pipeline file read, interpolated, validated (and lowered, for a plan).

    Attributes:
        path: the file.
        kind: ``spec`` or ``plan``.
        spec: the spec to run (holds secret values: pass what you print through
            ``redactor``).
        spec_hash: the canonical hash of ``spec`` (``sha256:...``).
        redactor: replaces this run's secrets with ``***``.
        source_text: the file as written, before interpolation.
        variables: the names of the variables put in, in order of first use.
        warnings: warning findings, one line each, already redacted.
    """

    path: str
    kind: Literal["spec", "plan"]
    spec: PipelineSpecV1
    spec_hash: str
    redactor: Redactor
    source_text: str
    variables: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"LoadedPipeline(path={self.path!r}, kind={self.kind!r}, "
            f"name={self.spec.name!r}, spec_hash={self.spec_hash!r}, redactor={self.redactor!r})"
        )


def _kind(path: str, text: str) -> Literal["spec", "plan"]:
    if path.endswith(".toml"):
        return "plan"
    if path.endswith((".spec", ".kv")):
        return "spec"
    if any(line.lstrip().startswith("[") for line in text.split("\n")):
        return "plan"
    return "spec"


def _read(path: str) -> str:
    limit = max(MAX_SPEC_BYTES, MAX_PLAN_BYTES)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise PipelineFileError(path, f"{path}: no such file") from None
    except IsADirectoryError:
        raise PipelineFileError(path, f"{path}: is a directory; give a spec or plan file") from None
    except PermissionError:
        raise PipelineFileError(path, f"{path}: permission denied") from None
    except OSError as exc:
        raise PipelineFileError(path, f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise PipelineFileError(path, f"{path}: larger than {limit} bytes; is it a pipeline?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PipelineFileError(
            path, f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None


def _one_line(path: str, findings: Sequence[_FindingLike], redactor: Redactor) -> PipelineFileError:
    errors = [f for f in findings if f.severity == "error"]
    first = errors[0]
    where = f"{path}:{first.line}" if first.line is not None else path
    key = f" [{first.key}]" if first.key else ""
    more = (
        f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''}: "
        f"`edgeplane validate {path}` lists them)"
        if len(errors) > 1
        else ""
    )
    message = " ".join(f"{where}: error {first.code}{key}: {first.message}{more}".split())
    return PipelineFileError(path, redactor.redact(message), first.line)


def _warning_lines(
    path: str, findings: Sequence[_FindingLike], redactor: Redactor
) -> tuple[str, ...]:
    out = []
    for f in findings:
        if f.severity != "error":
            where = f"{path}:{f.line}" if f.line is not None else path
            key = f" [{f.key}]" if f.key else ""
            out.append(redactor.redact(f"{where}: {f.severity} {f.code}{key}: {f.message}"))
    return tuple(out)


def _plan_uses(plan: PipelinePlanV2, lines: Mapping[str, int]) -> list[AdapterUse]:
    """The plan's sources and sinks as AdapterUse values, with the plan's lines."""
    uses = []
    nodes: list[tuple[Literal["source", "sink"], str, Any]] = [
        ("source", "sources", n) for n in plan.sources
    ]
    nodes += [("sink", "sinks", n) for n in plan.sinks]
    for role, table, node in nodes:
        base = f"{table}.{node.name}"
        node_line = lines.get(f"{base}.adapter", lines.get(base))
        params_line = lines.get(f"{base}.params", node_line)
        param_lines = {}
        for k in node.params:
            line = lines.get(f"{base}.params.{k}", params_line)
            if line is not None:
                param_lines[k] = line
        uses.append(AdapterUse(role, node.name, node.adapter, node.params, node_line, param_lines))
    return uses


def load_pipeline(
    path: str,
    env: Mapping[str, str] | None = None,
    *,
    secret_env: Iterable[str] = (),
    target: TargetChoice = "auto",
    check_adapters: bool = True,
) -> LoadedPipeline:
    """Read a spec (``.spec``/``.kv``) or plan (``.toml``) file, interpolate it, validate it
    (and lower a plan to ``target``), and collect its secrets.

    Args:
        path: the file; any other extension is sniffed (a ``[table]`` line: a plan).
        env: the variables for ``${VAR}`` (default ``os.environ``).
        secret_env: variables whose values are secret whatever their names.
        target: the target a plan is lowered to.
        check_adapters: also check each source's and sink's params against its adapter's
            config schema, as ``byteor validate`` does (only the adapters named are imported).

    Raises:
        PipelineFileError: unreadable file, or error findings (one line: the first error,
            how many more, with secrets redacted).
        InterpolationError: a placeholder cannot be resolved (``MissingVariable`` for an
            unset variable without default).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    source_text = _read(path)
    kind = _kind(path, source_text)
    done = interpolate(source_text, environ, syntax="toml" if kind == "plan" else "kv", path=path)
    redactor = collect_secrets(done, environ, secret_env)
    findings: list[_FindingLike]
    if kind == "spec":
        parsed = parse_spec(done.text)
        findings = list(parsed.findings)
        if check_adapters:
            findings = list(validate_adapters(uses_in_document(parsed.document), findings))
        if parsed.spec is None or any(f.severity == "error" for f in findings):
            raise _one_line(path, findings, redactor)
        spec = parsed.spec
    else:
        parsed_plan = parse_plan_toml(done.text)
        findings = list(parsed_plan.findings)
        if parsed_plan.plan is None:
            raise _one_line(path, findings, redactor)
        try:
            spec = lower_v2(parsed_plan.plan, target)
        except LowerError as exc:
            raise _one_line(path, [*findings, *exc.findings], redactor) from None
        findings += validate_v1(spec)
        if check_adapters:
            uses = _plan_uses(parsed_plan.plan, parsed_plan.lines)
            findings = list(validate_adapters(uses, findings))
        if any(f.severity == "error" for f in findings):
            raise _one_line(path, findings, redactor)
    # The params as the nodes will read them (a TOML string unescaped): URLs in them too.
    params = [v for n in spec.sources.values() for v in n.params.values()]
    params += [v for n in spec.stages.values() for v in n.params.values()]
    params += [v for n in spec.sinks.values() for v in n.params.values()]
    redactor = collect_secrets(done, environ, secret_env, params)
    return LoadedPipeline(
        path=path,
        kind=kind,
        spec=spec,
        spec_hash=canonical_hash(spec),
        redactor=redactor,
        source_text=source_text,
        variables=tuple(done.values),
        warnings=_warning_lines(path, findings, redactor),
    )
