"""Records and acknowledgements: the subclass hook of Ack and the fast constructor of Record
behave exactly like the callback and the dataclass they stand in for."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Self

import pytest

from byteor.adapters import (
    Ack,
    AckError,
    LazyAckRecord,
    Record,
    RecordRow,
    Settler,
    ack_all,
    make_records,
    nack_all,
)


class _SyncAck(Ack):
    __slots__ = ("seen",)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def settled(self, ok: bool) -> None:
        self.seen.append(ok)


class _AsyncAck(_SyncAck):
    __slots__ = ()

    async def settled(self, ok: bool) -> None:  # type: ignore[override]
        self.seen.append(ok)


@pytest.mark.parametrize("kind", [_SyncAck, _AsyncAck])
async def test_a_subclass_is_told_once_and_settles_once(kind: type[_SyncAck]) -> None:
    a, n = kind(), kind()
    await a.ack()
    await n.nack()
    assert (a.seen, a.state, n.seen, n.state) == ([True], "acked", [False], "nacked")
    for settle in (a.ack, a.nack, n.ack):
        with pytest.raises(AckError, match="already settled"):
            await settle()
    assert (a.seen, n.seen) == ([True], [False])


async def test_the_callback_wins_and_a_bare_ack_settles_silently() -> None:
    seen: list[bool] = []

    async def on_settle(ok: bool) -> None:
        seen.append(ok)

    await Ack(on_settle).nack()
    bare = Ack()
    await bare.ack()
    assert seen == [False] and bare.state == "acked"


def test_record_is_still_a_frozen_dataclass() -> None:
    ack = Ack()
    rec = Record(b"p", b"k", (("h", b"v"),), 7, ack)
    assert (rec.payload, rec.key, rec.headers, rec.position, rec.ack) == (
        b"p",
        b"k",
        (("h", b"v"),),
        7,
        ack,
    )
    same = Record(payload=b"p", key=b"k", headers=(("h", b"v"),), position=7, ack=Ack())
    assert rec == same and hash(rec) == hash(same)  # the ack is not part of the value
    assert "ack" not in repr(rec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.payload = b"x"  # type: ignore[misc]
    moved = dataclasses.replace(rec, position=8)
    assert (moved.position, moved.payload, moved.ack) == (8, b"p", ack)
    assert [f.name for f in dataclasses.fields(Record)] == [
        "payload",
        "key",
        "headers",
        "position",
        "ack",
    ]
    with pytest.raises(TypeError):
        Record(b"p", None, (), 1)  # type: ignore[call-arg]


# -- batches: make_records, ack_all / nack_all, LazyAckRecord --------------------------------


class _Batch(_SyncAck):
    """A handle class whose source takes batches: records what settled_all was given."""

    __slots__ = ()
    calls: list[tuple[list[_SyncAck], bool]] = []

    @classmethod
    def settled_all(cls, acks: Sequence[Self], ok: bool) -> None:
        cls.calls.append((list(acks), ok))


def _recs(acks: Sequence[Ack]) -> list[Record]:
    return make_records([(b"%d" % i, None, (), i, a) for i, a in enumerate(acks)])


def test_make_records_makes_the_records_the_constructor_makes() -> None:
    ack = Ack()
    rows: list[RecordRow] = [(b"p", b"k", (("h", b"v"),), 7, ack), (b"q", None, (), None, ack)]
    made = make_records(rows)
    assert made == [Record(*row) for row in rows]
    assert all(type(r) is Record and r.ack is ack for r in made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].payload = b"x"  # type: ignore[misc]

    class _Wide(Record):
        __slots__ = ("extra",)

    with pytest.raises(TypeError, match="adds slots"):
        make_records(rows, _Wide)


async def test_ack_all_settles_each_handle_once_and_tells_each_class_once() -> None:
    _Batch.calls = []
    batch, plain, told = [_Batch() for _ in range(3)], _SyncAck(), []

    async def on_settle(ok: bool) -> None:
        told.append(ok)

    callback = Ack(on_settle)
    recs = _recs([batch[0], plain, batch[1], callback, batch[2]])
    await ack_all(recs)
    assert [r.ack.state for r in recs] == ["acked"] * 5
    assert _Batch.calls == [(batch, True)]  # one call, in batch order
    assert plain.seen == [True] and told == [True]  # the default: settled() / the callback
    with pytest.raises(AckError, match="already settled"):
        await recs[0].ack.ack()
    await nack_all(_recs([n := _SyncAck()]))
    assert n.state == "nacked" and n.seen == [False]


async def test_a_batch_with_a_settled_or_repeated_record_settles_nothing() -> None:
    _Batch.calls = []
    done, fresh = _Batch(), [_Batch(), _Batch()]
    await done.ack()
    for bad in (_recs([fresh[0], done, fresh[1]]), _recs([fresh[0], fresh[1]]) * 2):
        with pytest.raises(AckError):
            await ack_all(bad)
        assert [a.state for a in fresh] == ["pending", "pending"] and _Batch.calls == []
    await ack_all(_recs(fresh))
    assert _Batch.calls == [(fresh, True)]


class _Ledger(Settler):
    """A toy source: a set of pending positions."""

    __slots__ = ("out", "made", "settled")

    def __init__(self, n: int) -> None:
        self.out = set(range(n))
        self.made: list[object] = []
        self.settled: list[tuple[list[object], bool]] = []

    def make_ack(self, record: LazyAckRecord) -> Ack:
        self.made.append(record.position)
        ledger, position = self, record.position

        async def on_settle(ok: bool) -> None:
            ledger.settle_one(position, ok)

        return Ack(on_settle)

    def settle_one(self, position: object, ok: bool) -> None:
        self.settled.append(([position], ok))
        if ok:
            self.out.discard(position)  # type: ignore[arg-type]

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        self.settled.append(([r.position for r in records], ok))
        if ok:
            self.out -= {r.position for r in records}  # type: ignore[misc]


async def test_lazy_records_settle_in_batches_without_handles() -> None:
    ledger = _Ledger(6)
    recs = make_records([(b"%d" % i, None, (), i, ledger) for i in range(6)], LazyAckRecord)
    assert all(type(r) is LazyAckRecord for r in recs) and ledger.made == []
    plain = Record(b"0", None, (), 0, Ack())
    assert recs[0] == plain and plain == recs[0] and hash(recs[0]) == hash(plain)  # by value
    handle = recs[1].ack  # made when read, once
    assert recs[1].ack is handle and ledger.made == [1]
    await ack_all(recs[:4])
    assert ledger.settled == [([1], True), ([0, 2, 3], True)]  # handles first, then the rest
    assert ledger.out == {4, 5} and ledger.made == [1], "no handle made for 0, 2, 3"
    assert [r.ack.state for r in recs[:4]] == ["acked"] * 4
    with pytest.raises(AckError, match="already settled"):
        await recs[2].ack.ack()
    with pytest.raises(AckError):
        await ack_all([recs[4], recs[3]])  # 3 was acked: 4 stays as it was
    with pytest.raises(AckError):
        await nack_all([recs[4], recs[5], recs[4]])
    assert ledger.made == [1] and len(ledger.settled) == 2
    moved = dataclasses.replace(recs[4], position=40)  # reads the handle: made now
    assert (moved.position, moved.ack) == (40, recs[4].ack) and ledger.made == [1, 4]
    await nack_all([recs[5]])
    assert ledger.settled[-1] == ([5], False) and recs[5].ack.state == "nacked"
    assert copy.copy(recs[5]).ack is recs[5].ack
