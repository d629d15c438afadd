"""The conformance harness of the in-memory adapter (each harness: its own broker)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from byteor.adapters import OutRecord, Sink, Source
from byteor.testing._conformance import Harness
from byteor.testing._memory import MemoryBroker, MemorySink, MemorySource

__all__ = ["MemoryHarness"]

_n = itertools.count()


class MemoryHarness(Harness):
    def __init__(self) -> None:
        self.broker_name = f"conformance-{next(_n)}"
        self.broker = MemoryBroker.named(self.broker_name)
        self.topic = self.broker.topic("t")

    async def new_source(self) -> Source:
        src = MemorySource(self.topic, "g")
        await src.start()
        return src

    async def new_sink(self) -> Sink:
        sink = MemorySink(self.topic)
        await sink.start()
        return sink

    async def produce(self, records: Sequence[OutRecord]) -> None:
        self.topic.append(records)

    async def written(self) -> list[OutRecord]:
        return list(self.topic.records)

    async def rejecting_sink(self) -> Sink | None:
        full = self.broker.topic("full", capacity=2)
        sink = MemorySink(full)
        await sink.start()
        self._full = full
        return sink

    async def close(self) -> None:
        MemoryBroker.drop(self.broker_name)
