"""The "ours" sides of a case whose adapter is driven the way downstream drives any source or
sink: a :class:`~byteor.adapters.Source` read with ``next_batch`` and each checked batch
acknowledged with ``ack_all`` (what an edge process does once every sink confirmed it), a
:class:`~byteor.adapters.Sink` written a batch of ``OutRecord`` at a time. A case hands in its
configured, not yet started, source or sink; what differs between adapters is only that. A
source that hands out a :class:`~byteor.adapters.RecordBatch` gives the check its payload
column, as each hand-written loop gives its own list of payloads (no record made to read it).
"""

from __future__ import annotations

from collections.abc import Sequence

from byteor.adapters import OutRecord, Record, RecordBatch, Sink, Source, ack_all
from byteor.bench.adapters._harness import READ_WAIT_S, SinkSide, SourceSide, batches

__all__ = ["AdapterSource", "AdapterSink"]


class AdapterSource(SourceSide[Sequence[Record]]):
    def __init__(self, source: Source) -> None:
        self._src = source

    async def open(self) -> None:
        await self._src.start()

    async def read(self, max_records: int) -> tuple[Sequence[bytes], Sequence[Record]]:
        recs = await self._src.next_batch(max_records, timeout_s=READ_WAIT_S)
        if isinstance(recs, RecordBatch):  # its payload column, as a hand loop's payload list
            return recs.payloads, recs
        return [r.payload for r in recs], recs

    async def ack(self, token: Sequence[Record]) -> None:
        await ack_all(token)

    async def close(self) -> None:
        await self._src.stop()


class AdapterSink(SinkSide[list[OutRecord]]):
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    async def open(self) -> None:
        await self._sink.start()

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[OutRecord]]:
        return [[OutRecord(p) for p in chunk] for chunk in batches(items, batch)]

    async def write(self, batch: list[OutRecord]) -> None:
        await self._sink.write_batch(batch)

    async def close(self) -> None:
        await self._sink.stop()
