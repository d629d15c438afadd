"""User ops for the executor tests, referred to as ``byteor_exec_testops:<name>``.

(pytest puts this directory on sys.path, so the module imports by its bare name.)
"""

from __future__ import annotations

import os
import signal

from byteor.exec import StageContext
from byteor.kernel import Emit, StageError


def upper(record: bytes) -> bytes:
    return record.upper()


def explode(record: bytes) -> list[str]:
    return [f"{record.decode()}-{i}" for i in range(2)]


def fail_on_x(record: bytes) -> bytes:
    if b"x" in record:
        raise ValueError(f"no x please: {record.decode()}")
    return record


def error_on_x(record: bytes) -> StageError | bytes:
    return StageError("test.x", "x found") if b"x" in record else record


def is_even(record: bytes) -> bool:
    return int(record) % 2 == 0


def first_char(record: bytes) -> str:
    return record[:1].decode()


def bad_return(record: bytes) -> int:
    return 42


class Suffix:
    """A class op: instantiated with the StageContext, reads its params."""

    def __init__(self, ctx: StageContext) -> None:
        self.suffix = ctx.params.get("suffix", "!").encode()
        self.ports = ctx.ports
        self.seen = 0

    def step(self, record: bytes) -> Emit:
        self.seen += 1
        return Emit.to_all(self.ports, record + self.suffix)

    def finish(self) -> bytes:
        return f"seen={self.seen}".encode()


class NeedsParam:
    def __init__(self, ctx: StageContext) -> None:
        raise KeyError("needs param 'x'")


class Nested:
    @staticmethod
    def twice(record: bytes) -> bytes:
        return record * 2


_SIGNALS = {"int": signal.SIGINT, "term": signal.SIGTERM}


class SignalAt:
    """Sends itself a signal (``param.signal``, ``int`` or ``term``) when it sees record number
    ``param.at``, ``param.times`` times (the graceful-stop tests)."""

    def __init__(self, ctx: StageContext) -> None:
        self.at = int(ctx.params.get("at", "0"))
        self.times = int(ctx.params.get("times", "1"))
        self.sig = _SIGNALS[ctx.params.get("signal", "int")]
        self.n = 0

    def step(self, record: bytes) -> bytes:
        if self.n == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), self.sig)
        self.n += 1
        return record


class KillAt:
    """SIGKILLs its own process when it sees record number ``param.at`` (the supervisor
    tests: a worker dies mid-run, at an exact point, without a sleep)."""

    def __init__(self, ctx: StageContext) -> None:
        self.at = int(ctx.params.get("at", "0"))
        self.n = 0

    def step(self, record: bytes) -> bytes:
        if self.n == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.n += 1
        return record


class SnapshotAt:
    """At record ``param.at``, writes ``byteor snapshot`` of run ``param.name`` (as JSON) to
    ``param.into``: a snapshot taken mid-run from inside the run, with no timing involved."""

    def __init__(self, ctx: StageContext) -> None:
        self.at = int(ctx.params["at"])
        self.name = ctx.params["name"]
        self.into = ctx.params["into"]
        self.n = 0

    def step(self, record: bytes) -> bytes:
        if self.n == self.at:
            import json

            from byteor.cli._snapshot import read_snapshot

            with open(self.into, "w") as f:
                json.dump(read_snapshot(self.name), f)
        self.n += 1
        return record


def fail_every_third(record: bytes) -> bytes:
    """Raises for records whose number is a multiple of 3 (with on_error = skip: skipped)."""
    if int(record) % 3 == 0:
        raise ValueError(f"{record.decode()} is a multiple of 3")
    return record


class SnapshotTwice(SnapshotAt):
    """:class:`SnapshotAt`, and at the end of its input (``finish``, when every stage before it
    has finished and committed) another snapshot into ``param.into`` + ``.end``."""

    def finish(self) -> None:
        import json

        from byteor.cli._snapshot import read_snapshot

        with open(self.into + ".end", "w") as f:
            json.dump(read_snapshot(self.name), f)


class KillOnce:
    """SIGKILLs its own process at record number ``param.at`` (counted from where this process
    started), once per run: it first creates the file ``param.marker``, and a process that finds
    it there goes on. Without ``param.marker`` it kills every process that reaches the record."""

    def __init__(self, ctx: StageContext) -> None:
        self.at = int(ctx.params.get("at", "0"))
        self.marker = ctx.params.get("marker")
        self.n = 0

    def step(self, record: bytes) -> bytes:
        if self.n == self.at:
            if self.marker is None:
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        self.n += 1
        return record


class StuckAt:
    """At record ``param.at`` creates the file ``param.marker`` and never returns: user code
    stuck (the stall tests; the supervisor kills the process)."""

    def __init__(self, ctx: StageContext) -> None:
        self.at = int(ctx.params.get("at", "0"))
        self.marker = ctx.params["marker"]
        self.n = 0

    def step(self, record: bytes) -> bytes:
        if self.n == self.at:
            import threading

            with open(self.marker, "w"):
                pass
            threading.Event().wait()
        self.n += 1
        return record
