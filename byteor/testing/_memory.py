"""An in-memory adapter: a tiny broker with topics and consumer groups, for tests and examples.

Theory of operation: a :class:`MemoryTopic` is an append-only list. Each consumer group keeps
which indices were handed out and not yet settled (with the source that holds them), a
redelivery queue (nacked records, and what a stopped source still held) and the set of acked
indices; ``committed`` is the count of leading acked indices — what a real broker's commit
would be, never ahead of an unsettled record. A sink appends a whole batch or nothing (a
topic can be given a capacity to exercise rejection).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from byteor.adapters import (
    Ack,
    Adapter,
    AdapterError,
    Capabilities,
    ConfigField,
    ConfigSchema,
    ConfigValue,
    Health,
    OutRecord,
    Record,
    Sink,
    Source,
)
from byteor.spec import Delivery

__all__ = ["MemoryBroker", "MemoryTopic", "MemorySource", "MemorySink", "MemoryAdapter"]


@dataclass
class _Group:
    next_index: int = 0
    held: dict[int, int] = field(default_factory=dict)  # index -> source id
    redeliver: deque[int] = field(default_factory=deque)
    acked: set[int] = field(default_factory=set)
    committed: int = 0


class MemoryTopic:
    """An append-only list of records with consumer groups."""

    def __init__(self, name: str, capacity: int | None = None) -> None:
        self.name = name
        self.capacity = capacity
        self.records: list[OutRecord] = []
        self.groups: dict[str, _Group] = {}
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def changed(self) -> asyncio.Event:
        """Set when records arrive or come back; one event per event loop (a broker may
        outlive the loop that first used it, e.g. across ``asyncio.run`` calls)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._changed is None or (loop is not None and loop is not self._loop):
            self._changed, self._loop = asyncio.Event(), loop
        return self._changed

    def group(self, name: str) -> _Group:
        return self.groups.setdefault(name, _Group())

    def append(self, batch: Sequence[OutRecord]) -> None:
        if self.capacity is not None and len(self.records) + len(batch) > self.capacity:
            raise AdapterError(
                f"memory: topic {self.name!r} is full ({len(self.records)}/{self.capacity}); "
                f"batch of {len(batch)} rejected",
                adapter="memory",
                address=self.name,
                retriable=True,
            )
        self.records.extend(batch)
        self.changed.set()


class MemoryBroker:
    """Named topics. ``MemoryBroker.named("x")`` is shared by every adapter using ``broker=x``."""

    _brokers: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self) -> None:
        self.topics: dict[str, MemoryTopic] = {}

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        return cls._brokers.setdefault(name, cls())

    @classmethod
    def drop(cls, name: str) -> None:
        cls._brokers.pop(name, None)

    def topic(self, name: str, capacity: int | None = None) -> MemoryTopic:
        t = self.topics.get(name)
        if t is None:
            t = self.topics[name] = MemoryTopic(name, capacity)
        return t


_ids = itertools.count(1)


class MemorySource(Source):
    """Reads a topic as a member of a consumer group."""

    def __init__(self, topic: MemoryTopic, group: str = "byteor") -> None:
        self._topic = topic
        self._group_name = group
        self._id = next(_ids)
        self._started = False
        self._stopped = False
        self._paused = False

    async def start(self) -> None:
        self._started = True
        self._stopped = False

    def _take(self, max_records: int) -> list[Record]:
        g = self._topic.group(self._group_name)
        out: list[Record] = []
        while len(out) < max_records and g.redeliver:
            out.append(self._hand_out(g, g.redeliver.popleft()))
        while len(out) < max_records and g.next_index < len(self._topic.records):
            out.append(self._hand_out(g, g.next_index))
            g.next_index += 1
        return out

    def _hand_out(self, g: _Group, index: int) -> Record:
        g.held[index] = self._id
        rec = self._topic.records[index]

        async def settle(ok: bool) -> None:
            if g.held.get(index) != self._id:
                return  # given back when this source stopped: it will be delivered again
            del g.held[index]
            if ok:
                g.acked.add(index)
                while g.committed in g.acked:
                    g.acked.discard(g.committed)
                    g.committed += 1
            else:
                g.redeliver.append(index)
                self._topic.changed.set()

        return Record(rec.payload, rec.key, rec.headers, index, Ack(settle))

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> list[Record]:
        if not self._started or self._stopped:
            raise AdapterError("memory: source is not started", adapter="memory")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if not self._paused:
                self._topic.changed.clear()
                got = self._take(max_records)
                if got:
                    return got
            left = deadline - loop.time()
            if left <= 0:
                return []
            try:
                await asyncio.wait_for(self._topic.changed.wait(), left)
            except TimeoutError:
                return []

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._topic.changed.set()

    @property
    def paused(self) -> bool:
        return self._paused

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        g = self._topic.group(self._group_name)
        mine = sorted(i for i, owner in g.held.items() if owner == self._id)
        for i in mine:
            del g.held[i]
        g.redeliver.extend(mine)
        if mine:
            self._topic.changed.set()

    def health(self) -> Health:
        g = self._topic.group(self._group_name)
        return Health(
            connected=self._started and not self._stopped,
            lag=len(self._topic.records) - g.committed,
        )


class MemorySink(Sink):
    """Appends batches to a topic, all or nothing."""

    def __init__(self, topic: MemoryTopic) -> None:
        self._topic = topic
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        if not self._started:
            raise AdapterError("memory: sink is not started", adapter="memory")
        self._topic.append(list(records))

    async def stop(self) -> None:
        self._started = False

    def health(self) -> Health:
        return Health(connected=self._started, lag=0)


class MemoryAdapter(Adapter):
    """``adapter = memory``: config ``topic``, ``group``, ``broker``, ``capacity``."""

    name = "memory"
    summary = "in-memory topics with consumer groups (tests and examples)"
    config = ConfigSchema(
        "memory",
        (
            ConfigField("topic", str, doc="the topic to read or write"),
            ConfigField("group", str, "byteor", "consumer group of a source"),
            ConfigField("broker", str, "default", "name of the in-process broker"),
            ConfigField("capacity", int, 0, "most records the topic holds (0: unbounded)"),
        ),
    )
    capabilities = Capabilities(
        source=Delivery(
            "at-least-once", "total", "acked in order, unsettled redelivered; in this process"
        ),
        sink=Delivery("at-least-once", "total", "batch appended whole; in this process"),
        max_batch=1 << 20,
        backpressure="pause",
    )

    def _topic(self, config: Mapping[str, ConfigValue]) -> MemoryTopic:
        cap = int(config["capacity"])
        broker = MemoryBroker.named(str(config["broker"]))
        return broker.topic(str(config["topic"]), cap or None)

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        return MemorySource(self._topic(config), str(config["group"]))

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        return MemorySink(self._topic(config))
