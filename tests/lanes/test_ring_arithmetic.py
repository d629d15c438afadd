"""Ring arithmetic on an in-memory lane: wrap-around, full, empty, cursor edges, batches.

Single process, backing="memory": fast and deterministic. A hypothesis state machine drives
the per-message and batch calls at random against a deque model.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import byteor.lanes as bl


def msg(i: int) -> bytes:
    # Varying lengths, so a length mix-up shows as well as a content one.
    return f"m{i}".encode() * (1 + i % 3)


def advance(tx: bl.Producer, rx: bl.Consumer, n: int, cap: int) -> None:
    """Move both cursors forward by ``n`` (at most a ring's worth at a time)."""
    done = 0
    while done < n:
        k = min(cap, n - done)
        for j in range(k):
            tx.send_nowait(msg(done + j))
        for j in range(k):
            assert bytes(rx.receive_nowait()) == msg(done + j)
        rx.release()
        done += k


@pytest.mark.parametrize("cap", [2, 4, 8])
def test_wrap_around_many_laps(core_make_lane, cap: int) -> None:
    lane = core_make_lane("events", capacity=cap, slot_bytes=32)
    tx, rx = lane.sender(), lane.receiver()
    seq = 0
    got = 0
    # Fill levels 1..cap in turn, so the ring's fill point moves around every slot.
    for lap in range(40 * cap):
        k = 1 + lap % cap
        for _ in range(k):
            tx.send_nowait(msg(seq))
            seq += 1
        for _ in range(k):
            assert bytes(rx.receive_nowait()) == msg(got)
            got += 1
        rx.release()  # the last view holds its slot until released
        assert tx.position == seq
        assert rx.position == got
    assert seq == got
    with pytest.raises(bl.WouldBlock):
        rx.receive_nowait()
    stats = lane.statistics()
    assert stats.published == seq
    assert stats.consumed == seq
    assert stats.lag == 0
    assert stats.drops == 0


@pytest.mark.parametrize("cap", [2, 4, 8])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_full_exactly_at_capacity(core_make_lane, cap: int, offset: int) -> None:
    lane = core_make_lane("events", capacity=cap, slot_bytes=32)
    tx, rx = lane.sender(), lane.receiver()
    advance(tx, rx, offset, cap)
    for i in range(cap):
        tx.send_nowait(msg(offset + i))
    assert lane.statistics().used == cap
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(b"x")
    assert lane.statistics().drops == 1
    with pytest.raises(bl.WouldBlock):
        tx.send_batch_nowait([b"x", b"y"])
    assert lane.statistics().drops == 2
    # A received view still holds its slot: the lane stays full until it is released.
    view = rx.receive_nowait()
    assert bytes(view) == msg(offset)
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(b"x")
    assert lane.statistics().drops == 3
    rx.release()
    tx.send_nowait(b"after")
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(b"x")
    assert lane.statistics().drops == 4
    assert [bytes(rx.receive_nowait()) for _ in range(cap)] == [
        msg(offset + i) for i in range(1, cap)
    ] + [b"after"]
    assert lane.statistics().published == offset + cap + 1


def test_send_times_out_when_full_and_counts_a_full_wait(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=2, slot_bytes=16)
    tx = lane.sender()
    lane.receiver()
    tx.send(b"a")
    tx.send(b"b")
    assert lane.statistics().full_waits == 0
    with pytest.raises(bl.LaneTimeout):
        tx.send(b"c", timeout=0)
    assert lane.statistics().full_waits == 1
    assert lane.statistics().published == 2


@pytest.mark.parametrize("cap", [2, 8])
def test_empty_raises_would_block(core_make_lane, cap: int) -> None:
    lane = core_make_lane("events", capacity=cap, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    with pytest.raises(bl.WouldBlock):
        rx.receive_nowait()
    with pytest.raises(bl.LaneTimeout):
        rx.receive(timeout=0)
    with pytest.raises(bl.LaneTimeout):
        rx.receive_batch(4, timeout=0)
    for lap in range(3 * cap):
        tx.send_nowait(msg(lap))
        assert bytes(rx.receive_nowait()) == msg(lap)
        with pytest.raises(bl.WouldBlock):
            rx.receive_nowait()


@pytest.mark.parametrize("cap", [4, 8])
@pytest.mark.parametrize("delta", [-1, 0, 1])
@pytest.mark.parametrize("laps", [1, 3])
def test_batches_at_the_ring_end(core_make_lane, cap: int, delta: int, laps: int) -> None:
    """Start both cursors next to a multiple of the capacity; batches stop at the ring's end."""
    lane = core_make_lane("events", capacity=cap, slot_bytes=32)
    tx, rx = lane.sender(), lane.receiver()
    start = laps * cap + delta
    advance(tx, rx, start, cap)
    to_end = cap - start % cap
    # send_batch_nowait stops at the end of the ring too (one chunk never wraps). It may
    # publish less than fits (the producer's cached limit), but never across the end.
    items = [msg(start + i) for i in range(cap)]
    sent = 0
    while sent < cap:
        n = tx.send_batch_nowait(items[sent:])
        assert 1 <= n <= cap - (start + sent) % cap
        sent += n
    assert tx.position == start + cap
    first = rx.receive_batch(100, timeout=0)
    assert [bytes(v) for v in first] == items[:to_end]
    if to_end < cap:
        rest = rx.receive_batch(100, timeout=0)
        assert [bytes(v) for v in rest] == items[to_end:]
    assert rx.position == start + cap
    with pytest.raises(bl.WouldBlock):
        rx.receive_nowait()


@pytest.mark.parametrize("available", [1, 2, 3])
def test_receive_batch_never_returns_more_than_available(core_make_lane, available: int) -> None:
    lane = core_make_lane("events", capacity=8, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    tx.send_batch([msg(i) for i in range(available)])
    got = rx.receive_batch(8, timeout=0)
    assert [bytes(v) for v in got] == [msg(i) for i in range(available)]
    with pytest.raises(bl.LaneTimeout):
        rx.receive_batch(8, timeout=0)
    tx.send_batch([b"p", b"q", b"r"])
    assert [bytes(v) for v in rx.receive_batch(2, timeout=0)] == [b"p", b"q"]
    assert [bytes(v) for v in rx.receive_batch(2, timeout=0)] == [b"r"]


REC = np.dtype([("seq", "<u8"), ("x", "<f8"), ("tag", "S4")])


def records(first: int, n: int) -> np.ndarray:
    a = np.zeros(n, dtype=REC)
    a["seq"] = np.arange(first, first + n)
    a["x"] = np.arange(first, first + n) * 0.5
    a["tag"] = [f"t{(first + i) % 100}".encode() for i in range(n)]
    return a


@pytest.mark.parametrize("delta", [-3, -1, 0, 1])
def test_receive_array_stops_at_the_ring_end_and_is_exact(core_make_lane, delta: int) -> None:
    cap = 8
    lane = core_make_lane("events", capacity=cap, slot_bytes=32)
    tx, rx = lane.sender(), lane.receiver()
    start = 2 * cap + delta
    advance(tx, rx, start, cap)
    to_end = cap - start % cap
    recs = records(start, cap)
    sent = 0
    while sent < cap:
        n = tx.send_batch_nowait(recs[sent:])
        assert 1 <= n <= cap - (start + sent) % cap
        sent += n
    a = rx.receive_array(REC, 100, timeout=0)
    assert len(a) == to_end
    assert a.tobytes() == recs[:to_end].tobytes()
    if to_end < cap:
        b = rx.receive_array(REC, 100, timeout=0)
        assert len(b) == cap - to_end
        assert b.tobytes() == recs[to_end:].tobytes()
        assert b["seq"].tolist() == list(range(start + to_end, start + cap))


@pytest.mark.parametrize(
    "items",
    [
        [b"a", b"bbbb", b"a"],  # first == last == shortest, a longer one between
        [b"aaaa", b"b", b"cccc"],
        [b"", b"xx", b""],
        [b"same"] * 3,
        [b"q" * i for i in range(8)],
    ],
)
def test_receive_batch_keeps_each_length(core_make_lane, items: list[bytes]) -> None:
    lane = core_make_lane("events", capacity=8, slot_bytes=32)
    tx, rx = lane.sender(), lane.receiver()
    tx.send_batch(items, timeout=0)
    assert [bytes(v) for v in rx.receive_batch(8, timeout=0)] == items


def test_receive_array_max_count(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=8, slot_bytes=32)
    tx, rx = lane.sender(), lane.receiver()
    recs = records(0, 6)
    tx.send_batch(recs)
    parts = [rx.receive_array(REC, 4, timeout=0), rx.receive_array(REC, 4, timeout=0)]
    assert [len(p) for p in parts] == [4, 2]
    assert np.concatenate(parts).tobytes() == recs.tobytes()


def test_message_too_large(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=4, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    tx.send(b"x" * 16)  # exactly a slot fits
    with pytest.raises(bl.MessageTooLarge):
        tx.send(b"x" * 17)
    with pytest.raises(bl.MessageTooLarge):
        tx.send_nowait(b"x" * 17)
    # A batch whose chunk holds an oversized message publishes none of that chunk.
    with pytest.raises(bl.MessageTooLarge):
        tx.send_batch([b"a", b"b", b"x" * 17])
    assert tx.position == 1
    with pytest.raises(bl.MessageTooLarge):
        tx.send_batch(np.zeros(2, dtype=[("a", "S17")]))
    assert tx.position == 1
    with pytest.raises(bl.MessageTooLarge):
        rx.receive_array(np.dtype("S17"), 1)
    assert bytes(rx.receive_nowait()) == b"x" * 16
    with pytest.raises(bl.WouldBlock):
        rx.receive_nowait()
    assert issubclass(bl.MessageTooLarge, ValueError)
    assert lane.statistics().published == 1


def test_zero_length_messages(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=4, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    for lap in range(5):
        tx.send(b"")
        tx.send(b"z")
        tx.send(memoryview(b""))
        got = [bytes(rx.receive_nowait()) for _ in range(3)]
        assert got == [b"", b"z", b""], lap
    rx.release()
    tx.send_batch([b""] * 4, timeout=0)
    got = []
    while len(got) < 4:  # a batch stops at the ring's end
        got += [bytes(v) for v in rx.receive_batch(8, timeout=0)]
    assert got == [b""] * 4
    # Ten equal (empty) lengths take the vectorized batch path.
    lane2 = core_make_lane("events", capacity=16, slot_bytes=16)
    tx2, rx2 = lane2.sender(), lane2.receiver()
    tx2.send_batch([b""] * 10)
    views = rx2.receive_batch(16, timeout=0)
    assert [len(v) for v in views] == [0] * 10
    assert lane2.statistics().published == 10


def test_views_stay_valid_until_the_next_receive(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=2, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    tx.send(b"first")
    tx.send(b"second")
    v0 = rx.receive_nowait()
    assert isinstance(v0, memoryview)
    # The producer cannot reuse v0's slot while v0 is held.
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(b"OVERWRITE")
    assert bytes(v0) == b"first"
    v1 = rx.receive_nowait()
    assert bytes(v0) == b"first"  # still intact: nothing was written since
    assert bytes(v1) == b"second"
    # Receiving v1 released v0's slot: the next send goes exactly there.
    tx.send_nowait(b"OVERWRITE")
    assert bytes(v0[:5]) == b"OVERW"
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(b"more")
    assert bytes(v1) == b"second"
    # Batch views are held as a group until the next receive.
    assert bytes(rx.receive_nowait()) == b"OVERWRITE"


# -- a model-based test: random calls against a deque -----------------------------------

SLOT = 16


class RingMachine(RuleBasedStateMachine):
    """The lane must behave like a deque of at most ``cap`` messages, where the messages of
    the last receive stay held (occupied) until the next receive or release. With
    ``publish_every`` > 1 releases reach the shared cursor late, but the producer of this
    process flushes them when it finds the lane full, so full and empty stay exact."""

    def __init__(self) -> None:
        super().__init__()
        self.lanes: list[tuple[bl.Lane, str]] = []

    @initialize(
        cap=st.sampled_from([2, 4, 8]),
        start=st.integers(0, 20),
        publish_every=st.sampled_from([1, 32]),
    )
    def setup(self, cap: int, start: int, publish_every: int) -> None:
        import uuid

        name = f"test-core-sm-{uuid.uuid4().hex[:12]}"
        self.lane = bl.create(name, "events", capacity=cap, slot_bytes=SLOT, backing="memory")
        self.lanes.append((self.lane, name))
        self.cap = cap
        self.tx = self.lane.sender()
        self.rx = self.lane.receiver(publish_every=publish_every)
        advance(self.tx, self.rx, start, cap)
        self.pending: deque[bytes] = deque()
        self.held = 0
        self.published = start
        self.received = start
        self.drops = 0
        self.every = publish_every

    def room(self) -> int:
        return self.cap - len(self.pending) - self.held

    @rule(data=st.binary(max_size=SLOT))
    def send_nowait(self, data: bytes) -> None:
        if self.room() == 0:
            try:
                self.tx.send_nowait(data)
            except bl.WouldBlock:
                self.drops += 1
                return
            raise AssertionError("send_nowait succeeded on a full lane")
        self.tx.send_nowait(data)
        self.pending.append(data)
        self.published += 1

    @rule(items=st.lists(st.binary(max_size=SLOT), min_size=1, max_size=10))
    def send_batch_nowait(self, items: list[bytes]) -> None:
        room = self.room()
        if room == 0:
            try:
                self.tx.send_batch_nowait(items)
            except bl.WouldBlock:
                self.drops += 1
                return
            raise AssertionError("send_batch_nowait succeeded on a full lane")
        n = self.tx.send_batch_nowait(items)
        to_end = self.cap - self.published % self.cap
        assert 1 <= n <= min(len(items), room, to_end)
        self.pending.extend(items[:n])
        self.published += n

    @rule()
    def receive_nowait(self) -> None:
        self.held = 0  # receiving releases what was held, even when nothing comes
        if not self.pending:
            with pytest.raises(bl.WouldBlock):
                self.rx.receive_nowait()
            return
        assert bytes(self.rx.receive_nowait()) == self.pending.popleft()
        self.held = 1
        self.received += 1

    @precondition(lambda self: bool(self.pending))
    @rule(k=st.integers(1, 10))
    def receive_batch(self, k: int) -> None:
        views = self.rx.receive_batch(k, timeout=0)
        to_end = self.cap - self.received % self.cap
        expect = min(k, len(self.pending), to_end)
        assert len(views) == expect
        for v in views:
            assert bytes(v) == self.pending.popleft()
        self.held = expect
        self.received += expect

    @rule()
    def release(self) -> None:
        self.rx.release()
        self.held = 0

    @invariant()
    def counters_match(self) -> None:
        if not hasattr(self, "lane"):
            return
        s = self.lane.statistics()
        assert s.published == self.published == self.tx.position
        released = self.received - self.held
        if self.every == 1:
            assert s.consumed == released
        else:
            # Releases reach the shared cursor at least every ``publish_every`` messages.
            assert released - self.every <= s.consumed <= released
        assert s.used == s.lag == self.published - s.consumed
        assert s.drops == self.drops
        assert self.rx.position == self.received

    def teardown(self) -> None:
        for lane, name in self.lanes:
            lane.close()
            bl.unlink(name, backing="memory")


RingMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ring_model = RingMachine.TestCase
