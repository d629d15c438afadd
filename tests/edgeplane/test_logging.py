"""EdgePlane logs: JSON and text lines, secrets redacted, the progress line."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from byteor.edgeplane._config import Redactor
from byteor.edgeplane._logging import ProgressLine, format_progress, setup_logging

SECRET = "hunter2-s3cret"
ERASE = "\r\x1b[K"


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_fields() -> None:
    out = io.StringIO()
    setup_logging("json", "info", Redactor(), "orders", "supervisor", stream=out)
    log = logging.getLogger("byteor.edgeplane.supervisor")
    before = dt.datetime.now(dt.UTC)
    log.info("started %d processes", 3)
    log.debug("not shown at info")
    log.warning("lane %s is full", "raw", extra={"lane": "raw", "used": 1024})
    after = dt.datetime.now(dt.UTC)
    docs = [json.loads(line) for line in _lines(out)]
    assert len(docs) == 2
    first, second = docs
    assert {k: first[k] for k in ("level", "logger", "msg", "run", "process")} == {
        "level": "info",
        "logger": "byteor.edgeplane.supervisor",
        "msg": "started 3 processes",
        "run": "orders",
        "process": "supervisor",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    ts = dt.datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert before - dt.timedelta(milliseconds=1) <= ts <= after
    assert "exc" not in first
    assert second["level"] == "warning"
    assert second["msg"] == "lane raw is full"
    assert (second["lane"], second["used"]) == ("raw", 1024)


def test_exception_is_one_string_field() -> None:
    out = io.StringIO()
    setup_logging("json", "debug", Redactor(), "r", "edge-in:src", stream=out)
    try:
        raise ValueError("bad record 7")
    except ValueError:
        logging.getLogger("byteor.x").exception("stage failed")
    (doc,) = [json.loads(line) for line in _lines(out)]
    assert doc["msg"] == "stage failed"
    assert doc["level"] == "error"
    assert doc["exc"].startswith("Traceback (most recent call last):")
    assert doc["exc"].endswith("ValueError: bad record 7")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_are_redacted_everywhere_in_a_record(fmt: str) -> None:
    out = io.StringIO()
    red = Redactor([SECRET])
    setup_logging(fmt, "debug", red, "r", "p", stream=out)  # type: ignore[arg-type]
    log = logging.getLogger("aiokafka.conn")  # a client library's (shown at debug) too
    log.info(f"in the message {SECRET}")
    log.info("as an argument %s", SECRET)
    log.info("in an extra field", extra={"dsn": f"postgres://u:{SECRET}@h/db"})
    try:
        raise ConnectionError(f"cannot reach redis://app:{SECRET}@127.0.0.1:1")
    except ConnectionError:
        log.exception("connect failed")
    log.info("stack", stack_info=True, extra={"note": SECRET})
    text = out.getvalue()
    assert SECRET not in text
    # message, argument, exception (and the two extra fields in JSON; text shows no extras)
    assert text.count("***") == (5 if fmt == "json" else 3)
    assert "cannot reach redis://app:***@127.0.0.1:1" in text
    if fmt == "json":
        docs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert [d["msg"] for d in docs] == [
            "in the message ***",
            "as an argument ***",
            "in an extra field",
            "connect failed",
            "stack",
        ]
        assert docs[2]["dsn"] == "postgres://u:***@h/db"
        assert "ConnectionError: cannot reach redis://app:***@127.0.0.1:1" in docs[3]["exc"]


def test_text_lines() -> None:
    out = io.StringIO()
    setup_logging("text", "WARNING", Redactor(), "orders", "edge-out:db", stream=out)
    logging.getLogger("byteor.a").info("hidden")
    logging.getLogger("byteor.a").warning("sink slow: %d ms", 250)
    (line,) = _lines(out)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING byteor\.a \[orders/edge-out:db\] "
        r"sink slow: 250 ms",
        line,
    )


def test_client_libraries_are_quiet_below_critical_unless_debug() -> None:
    def emit() -> None:
        logging.getLogger("aiokafka.conn").error('Unable connect to "127.0.0.1:1"')
        logging.getLogger("nats.aio.client").warning("reconnecting")
        logging.getLogger("asyncio").error("Task exception was never retrieved")
        logging.getLogger("aiokafka").critical("broken")
        logging.getLogger("byteor.edgeplane").warning("ours")
        logging.getLogger("mymod").warning("a user's op")
        logging.getLogger("aiokafkax").warning("not aiokafka")

    out = io.StringIO()
    setup_logging("json", "info", Redactor(), "r", "edge-in:k", stream=out)
    emit()
    shown = [(d["logger"], d["msg"]) for d in map(json.loads, _lines(out))]
    assert shown == [
        ("aiokafka", "broken"),
        ("byteor.edgeplane", "ours"),
        ("mymod", "a user's op"),
        ("aiokafkax", "not aiokafka"),
    ]
    out = io.StringIO()
    setup_logging("json", "debug", Redactor(), "r", "edge-in:k", stream=out)
    emit()
    assert len(_lines(out)) == 7


def test_setup_again_replaces_its_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    h1 = setup_logging("text", "info", Redactor(), "r", "supervisor", stream=first)
    h2 = setup_logging("json", "info", Redactor(), "r", "edge-in:x", stream=second)
    root = logging.getLogger()
    assert h1 not in root.handlers
    assert h2 in root.handlers
    logging.getLogger("byteor.t").info("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["process"] == "edge-in:x"


def test_bad_format_and_level() -> None:
    with pytest.raises(ValueError, match="log format"):
        setup_logging("xml", "info", Redactor(), "r", "p")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="log level"):
        setup_logging("text", "loud", Redactor(), "r", "p")


# -- the progress line ------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_format() -> None:
    assert format_progress(12345, 12300, 3456.4, 45) == "in 12,345  out 12,300  3,456 rec/s  lag 45"
    assert format_progress(0, 0, 0.0, None) == "in 0  out 0  0 rec/s"


def test_refreshes_at_most_every_half_second_on_a_terminal() -> None:
    out = FakeTTY()
    clock = FakeClock()
    line = ProgressLine(out, "auto", clock=clock)
    assert line.enabled
    clock.now += 1.0
    assert line.update(2000, 1990, 5)  # rate since the start: 2000 in 1 s
    assert out.getvalue() == ERASE + "in 2,000  out 1,990  2,000 rec/s  lag 5"
    clock.now += 0.3
    assert not line.update(2600, 2600, 0)  # too soon
    clock.now += 0.2
    assert line.update(3000, 2990, 1)  # 1000 records in 0.5 s
    assert line.text == "in 3,000  out 2,990  2,000 rec/s  lag 1"
    assert out.getvalue().endswith(ERASE + line.text)
    assert line.update(3000, 3000, 0, force=True)
    line.clear()
    assert out.getvalue().endswith(ERASE)
    clock.now += 10
    assert not line.update(9000, 9000)  # over: nothing more is drawn
    assert out.getvalue().endswith(ERASE)


def test_off_and_not_a_terminal() -> None:
    clock = FakeClock()
    quiet = io.StringIO()
    assert not ProgressLine(quiet, "auto", clock=clock).update(1, 1)
    assert not ProgressLine(FakeTTY(), "off", clock=clock).update(1, 1)
    assert quiet.getvalue() == ""
    forced = io.StringIO()
    line = ProgressLine(forced, "on", clock=clock)
    clock.now += 2
    assert line.update(10, 10)
    clock.now += 0.5
    assert line.update(20, 20, 3)
    line.clear()
    assert forced.getvalue() == "in 10  out 10  5 rec/s\nin 20  out 20  20 rec/s  lag 3\n"


def test_log_lines_erase_and_redraw_the_progress_line() -> None:
    out = FakeTTY()
    clock = FakeClock()
    progress = ProgressLine(out, "auto", clock=clock)
    setup_logging("text", "info", Redactor(), "r", "supervisor", stream=out, progress=progress)
    clock.now += 1
    progress.update(5, 4)
    logging.getLogger("byteor.t").info("hello")
    text = out.getvalue()
    bar = "in 5  out 4  5 rec/s"
    start = ERASE + bar + ERASE
    assert text.startswith(start)
    log_line, rest = text[len(start) :].split("\n", 1)
    assert log_line.endswith("[r/supervisor] hello")
    assert rest == ERASE + bar
    progress.clear()
    logging.getLogger("byteor.t").info("after the end")
    assert out.getvalue().endswith("after the end\n")
