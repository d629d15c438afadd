"""Explicit-release consumers: the shared cursor moves only on ``release()``.

What the executors' at-least-once restart rests on: a consumer that dies (or closes) without
releasing leaves its cursor at the last message it said it was done with, and the next
receiver of that line reads everything after it again.
"""

from __future__ import annotations

import pytest

import byteor.lanes as bl


def position(lane: bl.Lane, name: str = "default") -> int:
    return next(c.position for c in lane.statistics().consumers if c.name == name)


@pytest.mark.parametrize("kind", ["events", "fanout", "journal"])
def test_cursor_moves_only_on_release(core_make_lane, kind: str) -> None:
    consumers = () if kind == "events" else ("r",)
    lane = core_make_lane(kind, capacity=64, consumers=consumers)
    name = "default" if kind == "events" else "r"
    tx = lane.sender()
    rx = lane.receiver(None if kind == "events" else "r", explicit=True, publish_every=1)
    for i in range(40):
        tx.send(b"%d" % i)
    got = [bytes(rx.receive_nowait()) for _ in range(35)]  # crosses publish_every many times
    assert got == [b"%d" % i for i in range(35)]
    assert position(lane, name) == 0
    rx.release()
    assert position(lane, name) == 35
    got = [bytes(v) for v in rx.receive_batch(10, timeout=0)]
    assert got == [b"%d" % i for i in range(35, 40)]
    with pytest.raises(bl.WouldBlock):
        rx.receive_nowait()  # an empty lane publishes nothing either
    assert position(lane, name) == 35
    rx.close()  # closing does not release: the next receiver reads 35.. again
    assert position(lane, name) == 35
    again = lane.receiver(None if kind == "events" else "r", explicit=True)
    assert bytes(again.receive_nowait()) == b"35"


def test_unreleased_messages_gate_the_producer(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=4)
    tx, rx = lane.sender(), lane.receiver(explicit=True)
    for i in range(4):
        tx.send_nowait(b"%d" % i)
    assert [bytes(rx.receive_nowait()) for _ in range(4)] == [b"0", b"1", b"2", b"3"]
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(b"4")  # read, but not released: still not the producer's
    rx.release()
    tx.send_nowait(b"4")


def test_refused_for_readers_that_do_not_gate(core_make_lane) -> None:
    fan = core_make_lane("fanout")
    with pytest.raises(bl.ConsumerError, match="explicit release"):
        fan.receiver("b", policy="best_effort", explicit=True)
    journal = core_make_lane("journal")
    with pytest.raises(bl.ConsumerError, match="explicit release"):
        journal.receiver(explicit=True)  # a tailing reader


def test_cursor_words_read_what_statistics_reads(core_make_lane) -> None:
    # The cheap read of a consumer's progress (EdgePlane's watermark polls it): two word loads
    # that agree with statistics() as the consumer releases and the producer publishes.
    lane = core_make_lane("fanout", capacity=64, consumers=("a", "b"))
    tx = lane.sender()
    rx = lane.receiver("b", explicit=True, publish_every=1)
    q, consumer, producer = lane.cursor_words("b")
    assert (q[consumer], q[producer]) == (0, 0)
    for i in range(7):
        tx.send(b"%d" % i)
    assert [bytes(rx.receive_nowait()) for _ in range(5)] == [b"%d" % i for i in range(5)]
    assert (q[consumer], q[producer]) == (0, 7)  # taken, not released
    rx.release()
    assert (q[consumer], q[producer]) == (position(lane, "b"), 7) == (5, 7)
    assert q[lane.cursor_words("a")[1]] == position(lane, "a") == 0
    with pytest.raises(bl.ConsumerError, match=r"no consumer 'c' \(known: a, b\)"):
        lane.cursor_words("c")
