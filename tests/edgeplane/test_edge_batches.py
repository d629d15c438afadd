"""The edge-in with a source that hands out RecordBatch: frames from the columns (keys and
headers included), batches the watermark passed whole acknowledged whole, without records."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from byteor.adapters import (
    Ack,
    Headers,
    Health,
    LazyAckRecord,
    OutRecord,
    Record,
    RecordBatch,
    Settler,
    Source,
)
from byteor.edgeplane._edge import PendingBatches
from byteor.edgeplane._run import run_inline
from byteor.spec import LaneSpec, PipelineSpecV1, SinkSpec, SourceSpec, StageSpec
from byteor.testing._memory import MemoryBroker

_ids = itertools.count()


class _Tally(Settler):
    """Every settlement of the source's batches: how many records each way, how many
    batches whole, how many records were made."""

    __slots__ = ("acked", "whole", "whole_records", "made", "spans")

    def __init__(self) -> None:
        self.acked: list[int] = []  # positions, in the order they settled
        self.whole = self.whole_records = 0
        self.made = 0  # records made (a batch's positions asked for)
        self.spans: dict[int, range] = {}  # id of a batch -> its positions

    def make_ack(self, record: LazyAckRecord) -> Ack:
        raise AssertionError("the edge-in read a record's handle")

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        assert ok
        self.acked += [r.position for r in records]  # type: ignore[misc]

    def settle_batch(self, batch: RecordBatch, ok: bool) -> None:
        assert ok
        span = self.spans.pop(id(batch))
        self.whole += 1
        self.whole_records += len(span)
        self.acked += span


class _BatchSource(Source):
    """Hands ``records`` out as RecordBatch, ``size`` at a time; counts records made."""

    def __init__(self, records: list[OutRecord], size: int) -> None:
        self.records, self.size, self.at = records, size, 0
        self.tally = _Tally()

    async def start(self) -> None:
        pass

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> Sequence[Record]:
        take = self.records[self.at : self.at + min(max_records, self.size)]
        if not take:
            await asyncio.sleep(min(timeout_s, 0.01))
            return []
        first, self.at = self.at, self.at + len(take)
        keys: list[bytes | None] | None = [r.key for r in take]
        headers: list[Headers] | None = [r.headers for r in take]
        if all(k is None for k in keys or ()):
            keys = None
        if not any(headers or ()):
            headers = None
        tally = self.tally

        def positions() -> list[int]:
            tally.made += len(take)
            return list(range(first, first + len(take)))

        batch = RecordBatch([r.payload for r in take], keys, headers, positions, tally)
        tally.spans[id(batch)] = range(first, first + len(take))
        return batch

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    @property
    def paused(self) -> bool:
        return False

    async def stop(self) -> None:
        pass

    def health(self) -> Health:
        return Health(connected=True)


def _tags(i: int) -> tuple[bytes | None, Headers]:
    if i % 4 == 1:
        return b"k%d" % i, (("seq", b"%d" % i),)
    if i % 4 == 2:
        return b"", ()  # an empty key is a key
    if i % 4 == 3:
        return None, (("only", b"headers"),)
    return None, ()


async def test_a_source_of_record_batches_runs_through_from_its_columns() -> None:
    n, name = 2000, f"edge-batches-{next(_ids)}"
    broker = MemoryBroker.named(name)
    # batches 0 .. 4 carry neither keys nor headers (the columns are None), then mixed
    sent = [OutRecord(b"r-%d" % i, *(_tags(i) if i >= 160 else (None, ()))) for i in range(n)]
    source = _BatchSource(sent, size=32)
    spec = PipelineSpecV1.build(
        "batches",
        "lane_graph",
        lanes=[LaneSpec(x, "events", 64, 128) for x in ("raw", "out")],
        stages=[StageSpec("up", "byteor_edgeplane_testops:upper", ("raw",), ("out",))],
        sources=[SourceSpec("src", "memory", "raw", {"topic": "in", "broker": name})],
        sinks=[SinkSpec("dst", "memory", ("out",), params={"topic": "out", "broker": name})],
    )
    try:
        stop = asyncio.Event()
        run = asyncio.create_task(run_inline(spec, sources={"src": source}, stop=stop, batch=32))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(source.tally.acked) < n:
            assert loop.time() < deadline and not run.done(), "every record acknowledged"
            await asyncio.sleep(0.001)
        stop.set()
        summary = await asyncio.wait_for(run, 10)
        assert summary["duplicates"] == 0
        assert source.tally.acked == list(range(n)), "each once, in order"
        upper = [OutRecord(r.payload.upper(), r.key, r.headers) for r in sent]
        assert broker.topic("out").records == upper
        # batches the watermark passed whole settled whole, none of their records made; the
        # ones it cut were made into records (and settled as records)
        assert source.tally.whole >= 1
        assert source.tally.made == n - source.tally.whole_records
    finally:
        MemoryBroker.drop(name)


def test_pending_batches_release_a_record_batch_whole_and_a_cut_one_as_records() -> None:
    tally = _Tally()
    whole = RecordBatch([b"a", b"b"], None, None, [0, 1], tally)
    cut = RecordBatch([b"c", b"d", b"e"], None, None, [2, 3, 4], tally)
    plain = [Record(b"f", None, (), 5, Ack())]
    pending = PendingBatches()
    pending.add(0, whole)
    pending.add(2, cut)
    pending.add(5, plain)
    runs = pending.release_runs(3)
    assert runs[0] is whole and runs[1] == [cut[0]] and len(runs) == 2
    assert pending.count == 3
    rest = pending.release_runs(6)
    assert rest == [[cut[1], cut[2], plain[0]]], "parts and lists run together"
    assert pending.count == 0 and pending.release_runs(9) == []
