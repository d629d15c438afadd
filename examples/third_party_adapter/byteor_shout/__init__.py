"""``adapter = shout``: the in-memory adapter, except that the sink upper-cases payloads.

A third-party adapter is a subclass of :class:`byteor.adapters.Adapter` (name, config schema,
capabilities, and factories for its source and sink) registered in the ``byteor.adapters``
entry-point group of its own package. Run ``byteor.testing.ConformanceTests`` against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from byteor.adapters import ConfigValue, OutRecord, Sink
from byteor.testing import MemoryAdapter, MemorySink

__all__ = ["ShoutAdapter", "ShoutSink"]


class ShoutSink(MemorySink):
    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        await super().write_batch([OutRecord(r.payload.upper(), r.key, r.headers) for r in records])


class ShoutAdapter(MemoryAdapter):
    name = "shout"
    summary = "in-memory topics, payloads upper-cased on the way out (an example)"

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        return ShoutSink(self._topic(config))
