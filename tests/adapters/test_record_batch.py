"""RecordBatch: a source's batch as columns, records made only when read, settled whole."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from byteor.adapters import (
    Ack,
    AckError,
    LazyAckRecord,
    Record,
    RecordBatch,
    Settler,
    ack_all,
    nack_all,
)


class _Ledger(Settler):
    """A toy source: what was settled, how, and which handles were made."""

    __slots__ = ("made", "settled", "batches")

    def __init__(self) -> None:
        self.made: list[object] = []
        self.settled: list[tuple[list[object], bool]] = []
        self.batches: list[tuple[RecordBatch, bool]] = []

    def make_ack(self, record: LazyAckRecord) -> Ack:
        self.made.append(record.position)
        ledger, position = self, record.position

        async def on_settle(ok: bool) -> None:
            ledger.settled.append(([position], ok))

        return Ack(on_settle)

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        self.settled.append(([r.position for r in records], ok))


class _BatchLedger(_Ledger):
    """A source that settles a whole batch from its columns."""

    __slots__ = ()

    def settle_batch(self, batch: RecordBatch, ok: bool) -> None:
        self.batches.append((batch, ok))


def _batch(settler: Settler, n: int = 4, calls: list[int] | None = None) -> RecordBatch:
    def positions() -> list[int]:
        if calls is not None:
            calls.append(n)
        return [10 + i for i in range(n)]

    keys: list[bytes | None] = [None, b"k1"] + [None] * (n - 2)
    headers = [(), (("h", b"v"),)] + [()] * (n - 2)
    return RecordBatch([b"p%d" % i for i in range(n)], keys, headers, positions, settler)


def test_records_are_made_once_from_the_columns() -> None:
    calls: list[int] = []
    batch = _batch(_Ledger(), calls=calls)
    assert len(batch) == 4 and calls == [], "no position asked before a record is made"
    assert batch.payloads == [b"p0", b"p1", b"p2", b"p3"]
    assert batch.keys == [None, b"k1", None, None]
    assert batch.headers == [(), (("h", b"v"),), (), ()]
    second = batch[1]
    assert type(second) is LazyAckRecord and calls == [4]
    assert (second.payload, second.key, second.headers, second.position) == (
        b"p1",
        b"k1",
        (("h", b"v"),),
        11,
    )
    assert batch[1] is second and batch[-3] is second
    every = list(batch)
    assert every[1] is second and [r.position for r in every] == [10, 11, 12, 13]
    assert [id(r) for r in batch] == [id(r) for r in every] and calls == [4]
    assert batch == [
        Record(b"p%d" % i, r.key, r.headers, 10 + i, Ack()) for i, r in enumerate(every)
    ]
    assert batch[1:3] == every[1:3]
    assert [] + batch == every and batch + [] == every  # noqa: RUF005 - what is tested
    with pytest.raises(IndexError):
        batch[4]


def test_columns_of_none_mean_no_keys_and_no_headers() -> None:
    batch = RecordBatch([b"a", b"b"], None, None, [1, 2], _Ledger())
    assert [(r.key, r.headers) for r in batch] == [(None, ()), (None, ())]
    with pytest.raises(ValueError, match="1 keys for 2 payloads"):
        RecordBatch([b"a", b"b"], [None], None, [1, 2], _Ledger())
    with pytest.raises(ValueError, match="3 positions for 2 payloads"):
        RecordBatch([b"a", b"b"], None, None, [1, 2, 3], _Ledger())


async def test_ack_all_of_a_batch_never_read_settles_it_once_without_records() -> None:
    ledger, calls = _BatchLedger(), []
    batch = _batch(ledger, calls=calls)
    await ack_all(batch)
    assert ledger.batches == [(batch, True)] and ledger.settled == [] and calls == []
    assert batch.state == "acked"
    for again in (ack_all, nack_all):
        with pytest.raises(AckError, match="already settled"):
            await again(batch)
    assert ledger.batches == [(batch, True)]
    late = batch[2]  # made after: reads as settled, refuses to settle again
    assert late.ack.state == "acked" and ledger.made == []
    with pytest.raises(AckError):
        await late.ack.ack()
    with pytest.raises(AckError):
        await ack_all([late])
    assert ledger.batches == [(batch, True)] and ledger.settled == []


async def test_records_read_but_not_settled_settle_with_the_batch() -> None:
    ledger = _BatchLedger()
    batch = _batch(ledger)
    first, handle = batch[0], batch[1].ack  # a record made, a handle made: neither settled
    await nack_all(batch)
    assert ledger.batches == [(batch, False)] and ledger.settled == []
    assert handle.state == "nacked" and first.ack.state == "nacked"
    with pytest.raises(AckError):
        await handle.ack()
    with pytest.raises(AckError):
        await first.ack.ack()
    assert ledger.made == [11] and ledger.settled == []


async def test_a_settler_without_settle_batch_gets_the_records() -> None:
    ledger = _Ledger()  # settle_batch: the default
    batch = _batch(ledger)
    await ack_all(batch)
    assert ledger.settled == [([10, 11, 12, 13], True)] and ledger.made == []
    assert [r.ack.state for r in batch] == ["acked"] * 4


@pytest.mark.parametrize("by_hand", [True, False])
async def test_a_batch_with_a_record_settled_on_its_own_settles_none(by_hand: bool) -> None:
    ledger = _BatchLedger()
    batch = _batch(ledger)
    if by_hand:
        await batch[2].ack.ack()
    else:
        await ack_all([batch[2]])
    before = list(ledger.settled)
    assert before == [([12], True)]
    for whole in (ack_all, nack_all):
        with pytest.raises(AckError, match="settled on its own"):
            await whole(batch)
    assert batch.state == "pending" and ledger.batches == [] and ledger.settled == before
    await ack_all(batch[:2] + batch[3:])  # the others, at once: the per-record way
    assert ledger.settled[1:] == [([10, 11, 13], True)] and ledger.batches == []
    assert [r.ack.state for r in batch] == ["acked"] * 4 and ledger.made == [12] * by_hand
    with pytest.raises(AckError):
        await ack_all(batch)


class _Tagged(LazyAckRecord):
    """A source's own record: its slot holds a tag, the position is made when read."""

    __slots__ = ()

    @property
    def position(self) -> object:
        return ("at", vars(Record)["position"].__get__(self))


class _TaggedBatch(RecordBatch):
    record_class = _Tagged
    __slots__ = ()

    def slot_positions(self) -> list[str]:
        return ["a", "b", "c"]


@pytest.mark.parametrize("whole", [True, False])
def test_record_class_and_slot_positions_make_the_records(whole: bool) -> None:
    calls: list[int] = []

    def positions() -> list[int]:
        calls.append(1)
        return [0, 1, 2]

    batch = _TaggedBatch([b"0", b"1", b"2"], None, None, positions, _Ledger())
    got = batch.records() if whole else [batch[2], batch[0], batch[1]]
    assert {type(r) for r in got} == {_Tagged}
    want = ["a", "b", "c"] if whole else ["c", "a", "b"]
    assert [r.position for r in got] == [("at", w) for w in want]
    assert calls == []  # the batch's own positions were never needed
