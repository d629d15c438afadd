"""The conformance suite every adapter runs (ours and third parties').

An adapter provides a :class:`Harness` (how to make a fresh source and sink on an isolated
topic, how to put records upstream, how to read back what a sink wrote); the checks below
use nothing else. Run them from pytest by subclassing :class:`ConformanceTests` and defining
a ``harness`` fixture::

    class TestRedisConformance(ConformanceTests):
        @pytest.fixture
        async def harness(self):
            yield RedisHarness(...)

Each check is also a plain ``async def check_*(harness)`` function (like trio's
``check_two_way_stream``), for other runners.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence

from byteor.adapters import AdapterError, OutRecord, Record, Sink, Source

__all__ = [
    "Harness",
    "ConformanceTests",
    "CHECKS",
    "check_round_trip",
    "check_acked_not_redelivered",
    "check_unacked_redelivered_after_stop",
    "check_nack_redelivers",
    "check_stop_cleanly",
    "check_pause_resume",
    "check_sink_confirms_only_accepted",
]

#: How long a check waits for records that must arrive (seconds).
ARRIVE_S = 10.0
#: How long a check watches for records that must not arrive.
QUIET_S = 0.3


class Harness(ABC):
    """What an adapter gives the suite. Each instance works on its own fresh topic/stream."""

    #: How long to wait for records that must arrive.
    arrive_s: float = ARRIVE_S

    @abstractmethod
    async def new_source(self) -> Source:
        """A started source on the harness's topic, in the harness's consumer group."""

    @abstractmethod
    async def new_sink(self) -> Sink:
        """A started sink writing to the harness's topic."""

    @abstractmethod
    async def produce(self, records: Sequence[OutRecord]) -> None:
        """Put records upstream directly (not through the sink under test)."""

    @abstractmethod
    async def written(self) -> list[OutRecord]:
        """Everything on the topic, in order (read directly, not through a source)."""

    async def rejecting_sink(self) -> Sink | None:
        """A started sink whose writes the system refuses (``None``: cannot be arranged)."""
        return None

    async def close(self) -> None:
        """Remove the topic/stream and anything else the harness created."""
        return None


def _records(n: int, tag: str = "r") -> list[OutRecord]:
    return [
        OutRecord(f"{tag}{i}".encode(), f"k{i % 3}".encode(), (("i", str(i).encode()),))
        for i in range(n)
    ]


async def _collect(source: Source, n: int, deadline_s: float = ARRIVE_S) -> list[Record]:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    got: list[Record] = []
    while len(got) < n:
        left = end - loop.time()
        if left <= 0:
            break
        got.extend(await source.next_batch(n - len(got), timeout_s=min(left, 0.5)))
    return got


async def _nothing_more(source: Source) -> Sequence[Record]:
    return await source.next_batch(1000, timeout_s=QUIET_S)


def _content(records: Sequence[Record | OutRecord]) -> list[tuple[bytes, bytes | None, object]]:
    return [(r.payload, r.key, tuple(r.headers)) for r in records]


async def check_round_trip(h: Harness) -> None:
    """Every produced record arrives once, in order, with payload, key and headers."""
    sent = _records(50)
    await h.produce(sent)
    src = await h.new_source()
    try:
        got = await _collect(src, 50, h.arrive_s)
        assert _content(got) == _content(sent), "records differ from what was produced"
        for r in got:
            await r.ack.ack()
        assert await _nothing_more(src) == [], "a record arrived twice"
        assert src.health().connected
    finally:
        await src.stop()


async def check_acked_not_redelivered(h: Harness) -> None:
    """Acked records are gone for the group: a new source does not see them again."""
    await h.produce(_records(10))
    src = await h.new_source()
    got = await _collect(src, 10, h.arrive_s)
    assert len(got) == 10
    for r in got:
        await r.ack.ack()
    await src.stop()
    again = await h.new_source()
    try:
        assert await _nothing_more(again) == [], "acked records were delivered again"
    finally:
        await again.stop()


async def check_unacked_redelivered_after_stop(h: Harness) -> None:
    """Records handed out but never settled come back, exactly those, after a stop."""
    sent = _records(10)
    await h.produce(sent)
    src = await h.new_source()
    got = await _collect(src, 10, h.arrive_s)
    assert len(got) == 10
    for r in got[:6]:
        await r.ack.ack()
    await src.stop()
    again = await h.new_source()
    try:
        back = await _collect(again, 4, h.arrive_s)
        assert sorted(_content(back)) == sorted(_content(sent[6:])), "wrong records redelivered"
        for r in back:
            await r.ack.ack()
        assert await _nothing_more(again) == []
    finally:
        await again.stop()


async def check_nack_redelivers(h: Harness) -> None:
    """A nacked record is delivered again; its neighbours, acked, are not."""
    sent = _records(3)
    await h.produce(sent)
    src = await h.new_source()
    try:
        got = await _collect(src, 3, h.arrive_s)
        assert len(got) == 3
        await got[0].ack.ack()
        await got[1].ack.nack()
        await got[2].ack.ack()
        back = await _collect(src, 1, h.arrive_s)
        assert _content(back) == _content(sent[1:2]), "the nacked record did not come back"
        await back[0].ack.ack()
        assert await _nothing_more(src) == []
    finally:
        await src.stop()


async def check_stop_cleanly(h: Harness) -> None:
    """Stop is idempotent, reports disconnected, and leaves nothing running."""
    await h.produce(_records(5))
    src = await h.new_source()
    got = await _collect(src, 5, h.arrive_s)
    assert len(got) == 5
    before = {t for t in asyncio.all_tasks() if not t.done()}
    await src.stop()
    await src.stop()
    assert not src.health().connected
    await asyncio.sleep(0)
    after = {t for t in asyncio.all_tasks() if not t.done()}
    assert after <= before, f"tasks left running after stop: {after - before}"
    sink = await h.new_sink()
    await sink.stop()
    await sink.stop()
    assert not sink.health().connected


async def check_pause_resume(h: Harness) -> None:
    """A paused source hands out nothing new; after resume the records arrive."""
    src = await h.new_source()
    try:
        src.pause()
        assert src.paused
        await h.produce(_records(5))
        assert await _nothing_more(src) == [], "a paused source handed out records"
        src.resume()
        assert not src.paused
        got = await _collect(src, 5, h.arrive_s)
        assert len(got) == 5
        for r in got:
            await r.ack.ack()
    finally:
        await src.stop()


async def check_sink_confirms_only_accepted(h: Harness) -> None:
    """When write_batch returns, the system holds the whole batch; a refused write raises."""
    sink = await h.new_sink()
    try:
        first, second = _records(7, "a"), _records(5, "b")
        await sink.write_batch(first)
        assert _content(await h.written()) == _content(first)
        await sink.write_batch(second)
        assert _content(await h.written()) == _content(first + second)
        assert sink.health().connected
    finally:
        await sink.stop()
    bad = await h.rejecting_sink()
    if bad is not None:
        before = len(await h.written())
        try:
            raised = False
            try:
                await bad.write_batch(_records(3, "x"))
            except AdapterError:
                raised = True
            assert raised, "a refused write returned as if confirmed"
            assert len(await h.written()) == before, "a refused write left records behind"
        finally:
            await bad.stop()


CHECKS = (
    check_round_trip,
    check_acked_not_redelivered,
    check_unacked_redelivered_after_stop,
    check_nack_redelivers,
    check_stop_cleanly,
    check_pause_resume,
    check_sink_confirms_only_accepted,
)


class ConformanceTests:
    """Mixin for pytest: subclass it as ``Test...`` and define a ``harness`` fixture."""

    async def test_round_trip(self, harness: Harness) -> None:
        await check_round_trip(harness)

    async def test_acked_not_redelivered(self, harness: Harness) -> None:
        await check_acked_not_redelivered(harness)

    async def test_unacked_redelivered_after_stop(self, harness: Harness) -> None:
        await check_unacked_redelivered_after_stop(harness)

    async def test_nack_redelivers(self, harness: Harness) -> None:
        await check_nack_redelivers(harness)

    async def test_stop_cleanly(self, harness: Harness) -> None:
        await check_stop_cleanly(harness)

    async def test_pause_resume(self, harness: Harness) -> None:
        await check_pause_resume(harness)

    async def test_sink_confirms_only_accepted(self, harness: Harness) -> None:
        await check_sink_confirms_only_accepted(harness)
