"""The other end of a server adapter's benchmark, in a process of its own.

The HTTP, WebSocket and gRPC adapters *are* the server (a source) or talk to one (a sink).
Their counterpart — the client that loads a source, the server a sink writes to — must be the
same for ours and for the hand-written loop, and must not share this process: the bench
measures the side under test, and a counterpart in the same event loop would both slow it
down and bill its CPU to it. So the counterpart runs in a *peer* process, as Redis or Kafka
run in theirs.

One peer per case, started on first use and kept for all of the case's runs (an interpreter
with httpx, uvicorn or grpcio imported takes about a second to start). The case sends it
commands as JSON lines on its stdin; the peer runs each in a task of its own and answers each
exactly once, with the command's id, on its stdout (lines starting with :data:`MARK`, so a
library printing to stdout cannot be mistaken for an answer). A peer whose stdin closes exits.
What a command does is up to the case: its peer is a class (``module:Class``) whose instance
is awaited with ``(command, args)`` and returns a JSON-ready dict.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import itertools
import json
import os
import sys
import traceback
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from byteor.adapters import AdapterError, Source, ack_all, load_adapter
from byteor.bench.adapters._harness import READ_WAIT_S, Case, Plan, SourceSide, Tally
from byteor.bench.lanes import BenchFailure

__all__ = [
    "Peer",
    "PeerHandler",
    "LoadedSource",
    "ServedCase",
    "CasePeer",
    "Receiver",
    "Reports",
    "MARK",
    "main",
]

#: What starts every answer line on the peer's stdout.
MARK = "@peer "
#: How long a peer may take to start (imports included) before the case gives up on it.
START_S = 30.0

PeerHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
#: What a case keeps per target between its run and its check: the peer's report of a load,
#: and the server's own counts under ``"server"``.
Reports = dict[str, dict[str, Any]]
T = TypeVar("T")


class Peer:
    """The host's handle on one peer process (``entry`` is its ``module:Class``)."""

    def __init__(self, entry: str) -> None:
        self._entry = entry
        self._proc: asyncio.subprocess.Process | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=12)
        self._gone: str | None = None

    async def _started(self) -> asyncio.subprocess.Process:
        if self._gone is not None:
            raise BenchFailure(self._gone)
        if self._proc is None:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                self._entry,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            self._tasks = [
                asyncio.create_task(self._answers(self._proc), name="bench-peer-answers"),
                asyncio.create_task(self._errors(self._proc), name="bench-peer-stderr"),
            ]
            try:
                await asyncio.wait_for(self.ask("ping"), START_S)
            except TimeoutError:
                raise BenchFailure(
                    f"the peer process {self._entry} did not start within {START_S:.0f} s"
                ) from None
        return self._proc

    def send(self, cmd: str, **args: Any) -> asyncio.Future[dict[str, Any]]:
        """Send ``cmd``; the future is its answer (a failure in the peer raises BenchFailure)."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise BenchFailure(f"the peer process {self._entry} is not running")
        if self._gone is not None:
            raise BenchFailure(self._gone)
        n = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[n] = fut
        proc.stdin.write(json.dumps({"id": n, "cmd": cmd, "args": args}).encode() + b"\n")
        return fut

    async def ask(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send ``cmd`` (starting the peer if needed) and wait for its answer."""
        if cmd != "ping":
            await self._started()
        return await self.send(cmd, **args)

    async def start(self) -> None:
        """Start the peer now (untimed), if it is not running."""
        await self._started()

    async def _answers(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode("utf-8", "replace")
            if not text.startswith(MARK):
                continue  # something a library printed
            doc = json.loads(text[len(MARK) :])
            fut = self._waiting.pop(doc["id"], None)
            if fut is None or fut.done():
                continue
            if "error" in doc:
                fut.set_exception(BenchFailure(f"peer: {doc['error']}"))
            else:
                fut.set_result(doc["ok"])
        await proc.wait()
        tail = " | ".join(self._stderr)
        self._gone = f"the peer process {self._entry} exited ({proc.returncode})" + (
            f": {tail}" if tail else ""
        )
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(BenchFailure(self._gone))
        self._waiting.clear()

    async def _errors(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr.append(text[:300])

    async def close(self) -> None:
        """Close its stdin (it exits), wait for it briefly, then kill it if need be."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


class LoadedSource(SourceSide[T]):
    """A source side that is a server, loaded by the peer.

    The peer prepared the load in the case's ``prefill`` (every request or message built,
    untimed). ``open`` starts the server and tells the peer to go; ``close`` (timed) waits
    until the peer heard every acknowledgement — the source's equivalent of "every ack
    upstream" — and files the peer's report and the server's counts for the check; ``abort``
    stops the server (untimed: uvicorn, for one, looks at its exit flag every 100 ms).
    """

    def __init__(self, peer: Peer, target: str, reports: Reports) -> None:
        self._peer, self._target, self._reports = peer, target, reports
        self._load: asyncio.Future[dict[str, Any]] | None = None
        self._up = False

    @abstractmethod
    async def serve(self) -> str:
        """Start the server; where the peer reaches it (a URL or ``host:port``)."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Stop the server (idempotent)."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """The server's own counts for the check (records admitted, unsettled, ...)."""

    async def open(self) -> None:
        address = await self.serve()
        self._up = True
        self._load = self._peer.send("load", target=self._target, address=address)

    async def close(self) -> None:
        load, self._load = self._load, None
        if load is not None:
            report = await load
            self._reports[self._target] = {**report, "server": self.counts()}

    async def abort(self) -> None:
        load, self._load = self._load, None
        if load is not None:  # a failed run: the load fails when the server goes
            load.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._up:
            self._up = False
            await self.shutdown()


class ServedCase(Case):
    """What the HTTP, WebSocket and gRPC cases share: their counterpart is a peer process.

    Source runs: ``prefill`` has the peer build the load (untimed), the source side starts
    its server and the peer sends (:class:`LoadedSource`); the check is the peer's report —
    it sent ``records`` and heard ``acked`` of them acknowledged, both the plan's count — and
    the server's own counts: every record admitted, none left unsettled. Sink runs: the sink
    side asks the peer to ``serve`` a receiver (one of our sources, drained by a checking
    loop) and writes to it; the check is the receiver's report: exactly the records, in order.
    """

    address = ""  # the servers are ours or the peer's: nothing to probe
    #: The peer's ``module:Class``.
    peer_entry: ClassVar[str]

    def __init__(self) -> None:
        self.peer = Peer(self.peer_entry)
        self.reports: Reports = {}
        self._details: dict[str, dict[str, Any]] = {}

    def skip_reason(self) -> str | None:
        try:
            load_adapter(self.name)
        except AdapterError as exc:
            return str(exc)
        return None

    async def create(self, tag: str) -> str:
        await self.peer.start()
        return tag

    async def prefill(self, target: str, items: Sequence[bytes], batch: int) -> None:
        await self.peer.ask(
            "prepare", target=target, records=len(items), size=len(items[0]), batch=batch
        )

    async def receiver(self, target: str, plan: Plan) -> str:
        """Have the peer serve a receiver for a sink run; where it listens."""
        got = await self.peer.ask(
            "serve", target=target, records=plan.records, size=plan.size, batch=plan.batch
        )
        return str(got["address"])

    def check_load(self, target: str, report: dict[str, Any], plan: Plan) -> None:
        """The peer's report of a load: it sent the plan's records and heard them all acked."""
        self._details[target] = dict(report)
        if report["records"] != plan.records or report["acked"] != plan.records:
            raise BenchFailure(
                f"the client sent {report['records']} of {plan.records} records and heard"
                f" {report['acked']} acknowledged"
            )

    async def verify_source(self, target: str, plan: Plan) -> None:
        report = self.reports.pop(target, None)
        if report is None:
            raise BenchFailure("the client's report is missing (the run did not finish)")
        self.check_load(target, report, plan)
        server = report["server"]
        if server["admitted"] != plan.records or server["unsettled"]:
            raise BenchFailure(
                f"the server admitted {server['admitted']} of {plan.records} records,"
                f" {server['unsettled']} not acknowledged"
            )

    async def verify_sink(self, target: str, plan: Plan) -> None:
        got = await self.peer.ask("report", target=target)
        self._details[target] = got
        if got["error"]:
            raise BenchFailure(f"the receiver: {got['error']}")
        if got["received"] != plan.records:
            raise BenchFailure(f"the receiver got {got['received']} of {plan.records} records")

    def details(self, target: str) -> dict[str, Any]:
        return self._details.pop(target, {})

    async def drop(self, target: str) -> None:
        self.reports.pop(target, None)
        await self.peer.ask("drop", target=target)

    async def close(self) -> None:
        await self.peer.close()


# -- the peer's side -----------------------------------------------------------------------


class Receiver:
    """One of our sources drained by a checking loop: the server a sink run writes to.

    Every batch is checked as the bench checks its own (each record the next sequence
    number) and acknowledged with ``ack_all``; a failed check is kept for the report while
    the loop goes on acknowledging, so the writer does not hang on it.
    """

    def __init__(self, src: Source, plan: Plan) -> None:
        self.src = src
        self.tally = Tally(plan)
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="bench-receiver")

    async def _drain(self) -> None:
        batch = self.tally.plan.batch
        while True:
            recs = await self.src.next_batch(batch, timeout_s=READ_WAIT_S)
            if not recs:
                continue
            if self.error is None:
                try:
                    self.tally.take([r.payload for r in recs])
                except BenchFailure as exc:
                    self.error = str(exc)
            await ack_all(recs)

    async def end(self) -> dict[str, Any]:
        """Stop draining and the source; what it received."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.src.stop()
        return {"received": self.tally.received, "error": self.error}


class CasePeer(ABC):
    """A server case's peer: ``prepare`` and ``load`` a source under test, ``serve`` and
    ``report`` a receiver for a sink under test, ``drop`` what is left of a target."""

    def __init__(self) -> None:
        self._prepared: dict[str, Any] = {}
        self._receivers: dict[str, Receiver] = {}

    @abstractmethod
    def build(self, plan: Plan) -> Any:
        """Everything the load sends, encoded (untimed)."""

    @abstractmethod
    async def load(self, prepared: Any, address: str) -> dict[str, Any]:
        """Send it to the source at ``address`` until every record is acknowledged; the
        report (``records`` sent, ``acked`` of them, anything else worth keeping)."""

    @abstractmethod
    async def receiver(self) -> tuple[Source, str]:
        """A started source for a sink to write to, and where it listens."""

    async def __call__(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        target = args["target"]
        if cmd == "prepare":
            plan = Plan(args["records"], args["size"], args["batch"])
            self._prepared[target] = self.build(plan)
            return {}
        if cmd == "load":
            return await self.load(self._prepared.pop(target), args["address"])
        if cmd == "serve":
            src, address = await self.receiver()
            rx = Receiver(src, Plan(args["records"], args["size"], args["batch"]))
            rx.start()
            self._receivers[target] = rx
            return {"address": address}
        if cmd == "report":
            return await self._receivers.pop(target).end()
        if cmd == "drop":
            self._prepared.pop(target, None)
            left = self._receivers.pop(target, None)
            if left is not None:
                await left.end()
            return {}
        raise ValueError(f"unknown command {cmd!r}")

    async def aclose(self) -> None:
        for rx in list(self._receivers.values()):
            await rx.end()
        self._receivers.clear()


def _load(entry: str) -> PeerHandler:
    module, _, attr = entry.partition(":")
    handler: PeerHandler = getattr(importlib.import_module(module), attr)()
    return handler


async def _serve(handler: PeerHandler) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    tasks: set[asyncio.Task[None]] = set()

    def answer(doc: dict[str, Any]) -> None:
        out.write(MARK + json.dumps(doc) + "\n")
        out.flush()

    async def run(n: int, cmd: str, args: dict[str, Any]) -> None:
        try:
            result = {} if cmd == "ping" else await handler(cmd, args)
        except Exception as exc:
            traceback.print_exc()
            answer({"id": n, "error": f"{cmd}: {type(exc).__name__}: {exc}"})
        else:
            answer({"id": n, "ok": result})

    while line := await reader.readline():
        doc = json.loads(line)
        task = asyncio.create_task(run(doc["id"], doc["cmd"], doc.get("args", {})))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    close = getattr(handler, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def main(argv: list[str]) -> None:
    """``python -m byteor.bench.adapters._peer module:Class``."""
    handler = _load(argv[1])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(handler))


if __name__ == "__main__":
    main(sys.argv)
