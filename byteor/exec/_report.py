"""What a run did: counters per node and a hash of the output, as plain data."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeReport", "RunReport", "StopToken"]


@dataclass(slots=True)
class StopToken:
    """Asks a run to stop gracefully: sources stop reading, everything in flight drains.

    Attributes:
        requested: set by :meth:`request` (from a signal handler, say).
        wake_fd: a descriptor that becomes readable when a stop is requested (the write end
            of ``signal.set_wakeup_fd``), so a run waiting on input wakes up; or ``None``.
    """

    requested: bool = False
    wake_fd: int | None = None

    def request(self) -> None:
        self.requested = True


@dataclass(slots=True)
class NodeReport:
    """One source, stage or sink.

    ``records_in`` counts what it received (sources: what their adapter produced),
    ``records_out`` what it published (sinks: what they wrote).
    """

    kind: str
    name: str
    op: str
    records_in: int = 0
    records_out: int = 0
    errors: int = 0
    skipped: int = 0
    routed: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)
    sha256: str | None = None  # sinks: of the bytes written (each record and "\n")
    bytes: int = 0  # sinks: bytes written
    process: str = "main"  # the process it ran in
    busy_ns: int = 0  # time in the node's work: a stage's op, a source's poll, a sink's write
    restarts: int = 0  # stages of a restarted worker: how many times it was restarted
    redelivered: int = 0  # records the dead process had taken and the new one took again
    duplicates: int = 0  # outputs the dead process had published for those: published twice

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": self.kind,
            ("op" if self.kind == "stage" else "adapter"): self.op,
            "records_in": self.records_in,
            "records_out": self.records_out,
        }
        if self.kind == "stage":
            doc |= {
                "errors": self.errors,
                "skipped": self.skipped,
                "routed": self.routed,
                "error_codes": dict(sorted(self.error_codes.items())),
            }
            if self.extra:
                doc["counters"] = dict(sorted(self.extra.items()))
            if self.restarts:
                doc |= {
                    "restarts": self.restarts,
                    "redelivered": self.redelivered,
                    "duplicates": self.duplicates,
                }
        if self.kind == "sink":
            doc |= {"sha256": self.sha256, "bytes": self.bytes}
        return doc


@dataclass(slots=True)
class RunReport:
    """A finished run.

    Attributes:
        output_sha256: with one sink, the sha256 of the bytes it wrote (what ``sha256sum``
            of its file gives); with several, the sha256 of the lines ``<sink> <sha256>\\n``
            in sink-name order.
        stopped: a stop was requested and the run drained what was in flight.
    """

    pipeline: str
    target: str
    executor: str
    nodes: list[NodeReport]
    stopped: bool = False

    @property
    def sinks(self) -> list[NodeReport]:
        return sorted((n for n in self.nodes if n.kind == "sink"), key=lambda n: n.name)

    @property
    def records_in(self) -> int:
        return sum(n.records_out for n in self.nodes if n.kind == "source")

    @property
    def records_out(self) -> int:
        return sum(n.records_out for n in self.sinks)

    @property
    def restarts(self) -> int:
        """Restarts of worker processes (counted once per process, not per stage)."""
        seen: dict[str, int] = {}
        for n in self.nodes:
            if n.restarts:
                seen[n.process] = max(seen.get(n.process, 0), n.restarts)
        return sum(seen.values())

    @property
    def redelivered(self) -> int:
        return sum(n.redelivered for n in self.nodes)

    @property
    def duplicates(self) -> int:
        return sum(n.duplicates for n in self.nodes)

    @property
    def output_sha256(self) -> str:
        sinks = self.sinks
        if len(sinks) == 1 and sinks[0].sha256 is not None:
            return sinks[0].sha256
        h = hashlib.sha256()
        for s in sinks:
            h.update(f"{s.name} {s.sha256}\n".encode())
        return h.hexdigest()

    def node(self, name: str) -> NodeReport:
        return next(n for n in self.nodes if n.name == name)

    def to_dict(self) -> dict[str, Any]:
        def group(kind: str) -> dict[str, Any]:
            return {n.name: n.to_dict() for n in self.nodes if n.kind == kind}

        return {
            "pipeline": self.pipeline,
            "target": self.target,
            "executor": self.executor,
            "stopped": self.stopped,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "output_sha256": self.output_sha256,
            "restarts": self.restarts,
            "redelivered": self.redelivered,
            "duplicates": self.duplicates,
            "busy_s": {n.name: round(n.busy_ns / 1e9, 6) for n in self.nodes},
            "sources": group("source"),
            "stages": group("stage"),
            "sinks": group("sink"),
        }
