"""EdgePlane's logs: text or JSON lines on stderr, secrets redacted, and the progress line.

Every EdgePlane process (the supervisor, each edge process, each executor worker) calls
:func:`setup_logging` once with its run and process names. It installs one handler on the
root logger, so the client libraries' records (aiokafka, uvicorn, ...) go the same way:

* ``text``: ``2026-01-02T03:04:05.678Z INFO  byteor.edgeplane [orders/supervisor] msg``;
* ``json``: one object per line, ``{"ts", "level", "logger", "msg", "run", "process"}``,
  plus ``exc`` (the formatted exception) and ``stack`` when the record has them, and any
  ``extra=`` fields of the call. ``ts`` is ISO-8601 UTC with milliseconds.

The client libraries speak for themselves too (aiokafka logs a refused connection at ERROR
with its address, nats-py, aio_pika, asyncpg, botocore, uvicorn... warn and print
tracebacks), and what they report the adapter reports again, once, in our words: the one
line a failed run ends with. So below ``debug`` a :class:`QuietClients` filter on the handler
drops their records below CRITICAL (``CLIENT_LOGGERS``, by top-level logger name; asyncio
too, whose "Task exception was never retrieved" is a client's task); ``byteor.*`` records,
and a user's op or adapter logging under its own name, pass at the run's level.
``--log-level debug`` shows everything.

A :class:`RedactFilter` on that handler replaces the run's secrets with ``***`` in the
message (after ``%`` formatting: a secret passed as an argument is caught too), in the
formatted exception and stack, and in string ``extra`` fields, before any formatter sees the
record.

:class:`ProgressLine` draws ``in 12,345  out 12,300  3,456 rec/s  lag 45`` on stderr for an
interactive run: on a terminal it rewrites one line in place (at most every 0.5 s), and the
log handler erases it before a log line and draws it again after, so the two never mix; when
forced on a stream that is not a terminal it writes plain lines at the same pace. Its clock
is injectable, so tests drive time.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal, TextIO

from byteor.edgeplane._config import Redactor

__all__ = [
    "CLIENT_LOGGERS",
    "QuietClients",
    "RedactFilter",
    "JsonFormatter",
    "TextFormatter",
    "setup_logging",
    "ProgressLine",
    "format_progress",
]

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD: Final = frozenset(
    [*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime", "taskName"]
)


def _utc(created: float) -> str:
    stamp = _dt.datetime.fromtimestamp(created, tz=_dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: Top-level logger names of the client libraries the adapters use (and their transports).
CLIENT_LOGGERS: Final = frozenset(
    {
        "aiokafka", "kafka",
        "nats",
        "aio_pika", "aiormq", "pamqp",
        "asyncpg",
        "redis",
        "uvicorn", "starlette", "httpx", "httpcore", "h11", "h2", "hpack",
        "websockets",
        "grpc",
        "aioboto3", "aiobotocore", "boto3", "botocore", "s3transfer", "urllib3", "aiohttp",
        "asyncio",
    }
)  # fmt: skip


class QuietClients(logging.Filter):
    """Drops the client libraries' records below ``level`` (lets everything else through).

    Args:
        names: top-level logger names (``aiokafka`` covers ``aiokafka.conn``).
        level: the least level of theirs still shown.
    """

    def __init__(self, names: Iterable[str] = CLIENT_LOGGERS, level: int = logging.CRITICAL):
        super().__init__()
        self.names = frozenset(names)
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        return record.name.partition(".")[0] not in self.names


class RedactFilter(logging.Filter):
    """Replaces secrets in a record before it is formatted (always lets it through)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor.redact
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format: keep what there is rather than lose the record
            message = f"{record.msg!s} (arguments {record.args!r} do not fit its format)"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields)."""

    def __init__(self, run: str, process: str) -> None:
        super().__init__()
        self.run = run
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "run": self.run,
            "process": self.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger [run/process] message`` and the exception's lines after it."""

    def __init__(self, run: str, process: str) -> None:
        super().__init__()
        self.tag = f"[{run}/{process}]"

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_utc(record.created)} {record.levelname:<7} {record.name} {self.tag} "
            f"{record.getMessage()}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


class _Handler(logging.StreamHandler[TextIO]):
    """The EdgePlane handler: a stream handler that keeps clear of the progress line."""

    def __init__(self, stream: TextIO, progress: ProgressLine | None) -> None:
        super().__init__(stream)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        progress = self.progress
        if progress is None:
            super().emit(record)
            return
        with progress.lock:
            progress.hide()
            super().emit(record)
            progress.show()


def setup_logging(
    format: Literal["text", "json"],
    level: str | int,
    redactor: Redactor,
    run: str,
    process: str,
    *,
    stream: TextIO | None = None,
    progress: ProgressLine | None = None,
) -> logging.Handler:
    """Send every log record of this process to ``stream`` (default stderr) as text or JSON
    lines, secrets redacted; the client libraries' below CRITICAL only at ``debug`` (see the
    module docstring). Calling it again replaces the handler it installed before.

    Args:
        format: ``text`` or ``json``.
        level: ``debug``/``info``/``warning``/``error``/``critical`` (any case) or a number.
        redactor: the run's secrets (:func:`byteor.edgeplane._config.load_pipeline`).
        run: the run's name, on every line.
        process: this process's role, e.g. ``supervisor``, ``edge-in:orders``.
        progress: the progress line drawn on the same stream, kept clear of log lines.

    Returns:
        The handler (remove it from the root logger to undo).
    """
    if format not in ("text", "json"):
        raise ValueError(f"log format {format!r}: use text or json")
    numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level {level!r}: use debug, info, warning, error or critical")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    handler = _Handler(stream if stream is not None else sys.stderr, progress)
    if numeric > logging.DEBUG:
        handler.addFilter(QuietClients())  # before redaction: no work for what is dropped
    handler.addFilter(RedactFilter(redactor))
    handler.setFormatter(
        JsonFormatter(run, process) if format == "json" else TextFormatter(run, process)
    )
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler


# -- the progress line ------------------------------------------------------------------------

_ERASE: Final = "\r\x1b[K"


def format_progress(records_in: int, records_out: int, rate: float, lag: int | None) -> str:
    """``in 12,345  out 12,300  3,456 rec/s  lag 45`` (no lag part when ``lag`` is None)."""
    text = f"in {records_in:,}  out {records_out:,}  {round(rate):,} rec/s"
    return text if lag is None else f"{text}  lag {lag:,}"


class ProgressLine:
    """A progress line on ``stream`` for an interactive run.

    Args:
        stream: where to draw (default stderr).
        mode: ``auto`` (only when ``stream`` is a terminal), ``on`` (always: plain lines on
            a stream that is not a terminal), ``off``.
        interval: seconds between two draws at most.
        clock: monotonic seconds (injectable for tests).

    The rate is records in per second since the previous draw (since the start, for the
    first). Thread-safe: log lines from any thread erase and redraw it under ``lock``.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        mode: Literal["auto", "on", "off"] = "auto",
        *,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):  # a closed or odd stream
            tty = False
        self.tty = tty
        self.enabled = mode == "on" or (mode == "auto" and tty)
        self.interval = interval
        self.clock = clock
        self.lock = threading.RLock()
        self._last_draw: float | None = None
        self._prev_t = clock()
        self._prev_in = 0
        self._text = ""
        self._shown = False

    @property
    def text(self) -> str:
        """The line last drawn ("" before the first draw)."""
        return self._text

    def update(
        self, records_in: int, records_out: int, lag: int | None = None, *, force: bool = False
    ) -> bool:
        """Draw the line if ``interval`` has passed since the last draw (or ``force``);
        returns whether it drew."""
        if not self.enabled:
            return False
        with self.lock:
            now = self.clock()
            if not force and self._last_draw is not None and now - self._last_draw < self.interval:
                return False
            elapsed = now - self._prev_t
            rate = (records_in - self._prev_in) / elapsed if elapsed > 0 else 0.0
            self._prev_t = now
            self._prev_in = records_in
            self._last_draw = now
            self._text = format_progress(records_in, records_out, max(rate, 0.0), lag)
            self._write(self._text)
            return True

    def _write(self, text: str) -> None:
        try:
            if self.tty:
                self.stream.write(_ERASE + text)
                self._shown = True
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed under us: progress is not worth a crash
            self.enabled = False

    def hide(self) -> None:
        """Erase the line (a log line is about to be written)."""
        with self.lock:
            if self._shown:
                try:
                    self.stream.write(_ERASE)
                except (OSError, ValueError):
                    self.enabled = False
                self._shown = False

    def show(self) -> None:
        """Draw the last line again (after a log line)."""
        with self.lock:
            if self.enabled and self.tty and self._text and not self._shown:
                self._write(self._text)

    def clear(self) -> None:
        """Erase the line for good (the run is over); later updates draw nothing."""
        with self.lock:
            self.hide()
            with contextlib.suppress(OSError, ValueError):
                self.stream.flush()
            self.enabled = False
