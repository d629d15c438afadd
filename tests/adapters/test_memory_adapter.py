"""The in-memory adapter passes the conformance suite, and the suite catches broken adapters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from byteor.adapters import AdapterConfigError, OutRecord, Record, load_adapter
from byteor.testing import (
    ConformanceTests,
    Harness,
    MemoryAdapter,
    MemoryBroker,
    MemoryHarness,
    MemorySink,
    MemorySource,
    check_nack_redelivers,
    check_pause_resume,
    check_sink_confirms_only_accepted,
    check_unacked_redelivered_after_stop,
)


class TestMemoryConformance(ConformanceTests):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[Harness]:
        h = MemoryHarness()
        yield h
        await h.close()


# -- the suite has teeth: each broken variant fails the check meant for it ----------------------


class _NackIgnored(MemorySource):
    def _hand_out(self, g, index):  # type: ignore[no-untyped-def]
        rec = super()._hand_out(g, index)
        real = rec.ack._on_settle

        async def ack_always(ok: bool) -> None:
            await real(True)

        rec.ack._on_settle = ack_always
        return rec


class _ForgetsOnStop(MemorySource):
    async def stop(self) -> None:
        g = self._topic.group(self._group_name)
        g.held.clear()  # drops what it held instead of giving it back
        self._stopped = True


class _IgnoresPause(MemorySource):
    def pause(self) -> None:
        pass

    @property
    def paused(self) -> bool:
        return True


class _ConfirmsEarly(MemorySink):
    async def write_batch(self, records):  # type: ignore[no-untyped-def]
        with contextlib.suppress(Exception):  # swallows the refusal: confirms what was not accepted
            await super().write_batch(records)


class _Broken(MemoryHarness):
    arrive_s = 1.0

    def __init__(self, source_cls: type[MemorySource] = MemorySource) -> None:
        super().__init__()
        self.source_cls = source_cls

    async def new_source(self):  # type: ignore[no-untyped-def]
        src = self.source_cls(self.topic, "g")
        await src.start()
        return src

    async def rejecting_sink(self):  # type: ignore[no-untyped-def]
        sink = _ConfirmsEarly(self.broker.topic("full", capacity=2))
        await sink.start()
        return sink


@pytest.mark.parametrize(
    ("source_cls", "check"),
    [
        (_NackIgnored, check_nack_redelivers),
        (_ForgetsOnStop, check_unacked_redelivered_after_stop),
        (_IgnoresPause, check_pause_resume),
        (MemorySource, check_sink_confirms_only_accepted),  # the sink is the broken part
    ],
)
async def test_the_suite_catches_a_broken_adapter(source_cls, check) -> None:  # type: ignore[no-untyped-def]
    h = _Broken(source_cls)
    with pytest.raises(AssertionError):
        await check(h)
    await h.close()


# -- the adapter through the registry ---------------------------------------------------------


async def test_memory_adapter_through_the_registry() -> None:
    adapter = load_adapter("memory")
    assert isinstance(adapter, MemoryAdapter)
    assert load_adapter("memory") is adapter  # loaded once
    decl = adapter.declaration()
    assert decl.name == "memory" and decl.extra is None
    assert decl.source is not None and decl.source.guarantee == "at-least-once"
    cfg = {"topic": "orders", "broker": "registry-test"}
    sink = adapter.sink(cfg)
    src = adapter.source({**cfg, "group": "g1"})
    await sink.start()
    await src.start()
    try:
        await sink.write_batch([OutRecord(b"a", b"k"), OutRecord(b"b")])
        got: list[Record] = await src.next_batch(10, timeout_s=1.0)
        assert [(r.payload, r.key, r.position) for r in got] == [(b"a", b"k", 0), (b"b", None, 1)]
        assert src.health().lag == 2
        await got[1].ack.ack()
        assert src.health().lag == 2  # the commit never runs ahead of record 0
        await got[0].ack.ack()
        assert src.health().lag == 0
    finally:
        await src.stop()
        await sink.stop()
        MemoryBroker.drop("registry-test")


def test_memory_adapter_config_is_validated() -> None:
    adapter = load_adapter("memory")
    with pytest.raises(AdapterConfigError, match=r"AD501.*did you mean 'topic'"):
        adapter.source({"topik": "x"})
    with pytest.raises(AdapterConfigError, match=r"AD503.*capacity"):
        adapter.sink({"topic": "x", "capacity": "many"})


def test_a_broker_outlives_its_event_loop() -> None:
    # A named broker used from two asyncio.run calls: waiting must not hit a loop-bound event.
    import asyncio

    adapter = load_adapter("memory")
    cfg = {"topic": "t", "broker": "two-loops"}

    async def write_then_wait() -> list[bytes]:
        sink, src = adapter.sink(cfg), adapter.source(cfg)
        await sink.start()
        await src.start()
        await sink.write_batch([OutRecord(b"x")])
        got = await src.next_batch(10, timeout_s=0.5)
        for r in got:
            await r.ack.ack()
        assert await src.next_batch(10, timeout_s=0.05) == []  # waits on the event
        await src.stop()
        return [r.payload for r in got]

    try:
        assert asyncio.run(write_then_wait()) == [b"x"]
        assert asyncio.run(write_then_wait()) == [b"x"]
    finally:
        MemoryBroker.drop("two-loops")
