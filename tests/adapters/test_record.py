"""Records and acknowledgements: the subclass hook of Ack and the fast constructor of Record
behave exactly like the callback and the dataclass they stand in for."""

from __future__ import annotations

import dataclasses

import pytest

from byteor.adapters import Ack, AckError, Record


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
