"""SequencedSlots lanes: claim, write in place, publish; stages chained by barriers rewrite in
place and never run ahead of upstream; the producer is gated by the last stage."""

from __future__ import annotations

import numpy as np
import pytest

import byteor.lanes as bl

CHAIN = ["s1", ("s2", ["s1"]), ("s3", ["s2"])]


def drain(rx: bl.Consumer) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(bytes(rx.receive_nowait()))
        except bl.WouldBlock:
            return out


def test_claim_write_in_place_publish(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("slots", backing=core_backing, capacity=4, slot_bytes=16, consumers=["c"])
    tx = lane.sender()
    rx = lane.receiver("c")
    for i in range(12):  # three laps
        seq, view = tx.claim(timeout=0)
        assert seq == i
        assert len(view) == 16  # the whole slot
        data = f"msg-{i}".encode()
        view[: len(data)] = data
        assert tx.position == i  # claimed, not yet published
        with pytest.raises(bl.WouldBlock):
            rx.receive_nowait()
        tx.publish(seq, len(data))
        assert tx.position == i + 1
        assert bytes(rx.receive_nowait()) == data
    with pytest.raises(bl.ConsumerError):
        tx.publish(5, 1)  # out of order
    seq, view = tx.claim(timeout=0)
    with pytest.raises(bl.MessageTooLarge):
        tx.publish(seq, 17)
    tx.publish(seq, 0)
    assert bytes(rx.receive_nowait()) == b""


def test_claim_times_out_when_full(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("slots", backing=core_backing, capacity=2, slot_bytes=8, consumers=["c"])
    tx = lane.sender()
    lane.receiver("c")
    for _ in range(2):
        seq, _view = tx.claim(timeout=0)
        tx.publish(seq, 1)
    with pytest.raises(bl.LaneTimeout):
        tx.claim(timeout=0)
    with pytest.raises(bl.LaneTimeout):
        tx.claim_batch(2, timeout=0)


@pytest.mark.parametrize("start", [0, 3, 6, 7])
def test_batch_claim_and_publish(core_make_lane, core_backing: str, start: int) -> None:
    cap = 8
    lane = core_make_lane(
        "slots", backing=core_backing, capacity=cap, slot_bytes=16, consumers=["c"]
    )
    tx = lane.sender()
    rx = lane.receiver("c")
    for _ in range(start):
        seq, _view = tx.claim(timeout=0)
        tx.publish(seq, 0)
        rx.receive_nowait()
    rx.release()
    expected: list[bytes] = []
    while len(expected) < cap:
        first, n = tx.claim_batch(5, timeout=0)
        assert first == start + len(expected)
        # Never across the ring's end, never more than asked or than fits.
        assert 1 <= n <= min(5, cap - first % cap, cap - len(expected))
        lengths = []
        for s in range(first, first + n):
            data = f"b{s}".encode() * (1 + s % 2)
            tx.slot(s)[: len(data)] = data
            lengths.append(len(data))
            expected.append(data)
        tx.publish_batch(first, lengths)
    assert tx.position == start + cap
    with pytest.raises(bl.LaneTimeout):
        tx.claim_batch(1, timeout=0)
    got: list[bytes] = []
    while len(got) < cap:
        got += [bytes(v) for v in rx.receive_batch(cap, timeout=0)]
    assert got == expected
    with pytest.raises(ValueError):
        tx.claim_batch(0)


def test_barrier_chain_rewrites_in_place_and_never_runs_ahead(
    core_make_lane, core_backing: str
) -> None:
    cap = 8
    lane = core_make_lane(
        "slots", backing=core_backing, capacity=cap, slot_bytes=32, consumers=CHAIN
    )
    tx = lane.sender()
    s1 = lane.receiver("s1", publish_every=1)
    s2 = lane.receiver("s2", publish_every=1)
    s3 = lane.receiver("s3", publish_every=1)
    for i in range(5):
        tx.send(f"m{i}".encode())
    # s2 and s3 see nothing until s1 has released something.
    with pytest.raises(bl.WouldBlock):
        s2.receive_nowait()
    with pytest.raises(bl.WouldBlock):
        s3.receive_nowait()
    for i in range(3):
        m = bytes(s1.receive_nowait())
        assert m == f"m{i}".encode()
        s1.rewrite(b"s1(" + m + b")")
    # s1 holds m2 (its last view), so it has released m0 and m1 only.
    got2 = []
    for _ in range(2):
        m = bytes(s2.receive_nowait())
        got2.append(m)
        s2.rewrite(b"s2(" + m + b")")
    assert got2 == [b"s1(m0)", b"s1(m1)"]
    with pytest.raises(bl.WouldBlock):
        s2.receive_nowait()  # would run ahead of s1
    # That failed receive released what s2 held (m1), so s3 may read m0 and m1, no more.
    assert bytes(s3.receive_nowait()) == b"s2(s1(m0))"
    assert bytes(s3.receive_nowait()) == b"s2(s1(m1))"
    with pytest.raises(bl.WouldBlock):
        s3.receive_nowait()
    s1.release()
    m = bytes(s2.receive_nowait())
    assert m == b"s1(m2)"
    s2.rewrite(b"s2(" + m + b")")
    with pytest.raises(bl.WouldBlock):
        s3.receive_nowait()  # s2 still holds m2
    s2.release()
    assert bytes(s3.receive_nowait()) == b"s2(s1(m2))"
    with pytest.raises(bl.WouldBlock):
        s3.receive_nowait()
    # The rest flows through in order.
    for _ in range(2):
        m = bytes(s1.receive_nowait())
        s1.rewrite(b"s1(" + m + b")")
    s1.release()
    for _ in range(2):
        m = bytes(s2.receive_nowait())
        s2.rewrite(b"s2(" + m + b")")
    s2.release()
    assert drain(s3) == [b"s2(s1(m3))", b"s2(s1(m4))"]
    positions = {c.name: c.position for c in lane.statistics().consumers}
    assert positions == {"s1": 5, "s2": 5, "s3": 5}  # drain()'s last try released m4


def test_the_last_stage_gates_the_producer(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("slots", backing=core_backing, capacity=4, slot_bytes=16, consumers=CHAIN)
    tx = lane.sender()
    s1, s2, s3 = (lane.receiver(n) for n in ("s1", "s2", "s3"))
    for i in range(4):
        tx.send_nowait(bytes([i]))
    assert drain(s1) == [bytes([i]) for i in range(4)]
    s1.release()
    assert drain(s2) == [bytes([i]) for i in range(4)]
    s2.release()
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(b"x")
    with pytest.raises(bl.LaneTimeout):
        tx.claim(timeout=0)
    assert s3.receive_nowait() == memoryview(b"\x00")
    s3.release()
    tx.send_nowait(b"\x04")
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(b"x")
    s = lane.statistics()
    assert s.consumed == 1  # the slowest stage
    assert s.drops == 2


def test_close_raises_lane_closed_after_draining_every_stage(
    core_make_lane, core_backing: str
) -> None:
    lane = core_make_lane("slots", backing=core_backing, capacity=8, slot_bytes=16, consumers=CHAIN)
    tx = lane.sender()
    stages = [lane.receiver(n) for n in ("s1", "s2", "s3")]
    tx.send_batch([b"a", b"b"])
    tx.close()
    for rx in stages:
        assert [bytes(rx.receive(timeout=0)) for _ in range(2)] == [b"a", b"b"]
        with pytest.raises(bl.LaneClosed):
            rx.receive(timeout=0)
        with pytest.raises(bl.LaneClosed):
            rx.receive()  # must not hang either


def test_a_downstream_stage_is_not_closed_before_upstream_releases(
    core_make_lane, core_backing: str
) -> None:
    lane = core_make_lane("slots", backing=core_backing, capacity=8, slot_bytes=16, consumers=CHAIN)
    tx = lane.sender()
    s1, s2 = lane.receiver("s1", publish_every=1), lane.receiver("s2", publish_every=1)
    tx.send(b"a")
    tx.close()
    # s1 has not read "a": s2 must wait for it, not report the lane closed.
    with pytest.raises(bl.LaneTimeout):
        s2.receive(timeout=0)
    assert bytes(s1.receive_nowait()) == b"a"
    s1.release()
    assert bytes(s2.receive_nowait()) == b"a"
    with pytest.raises(bl.LaneClosed):
        s2.receive_nowait()


REC = np.dtype([("seq", "<u8"), ("v", "<i4"), ("w", "<u4")])


def test_numpy_path_through_stages(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane(
        "slots", backing=core_backing, capacity=8, slot_bytes=16, consumers=["s1", ("s2", ["s1"])]
    )
    tx = lane.sender()
    s1, s2 = lane.receiver("s1"), lane.receiver("s2")
    recs = np.zeros(6, dtype=REC)
    recs["seq"] = np.arange(6)
    recs["v"] = np.arange(6) * -3
    recs["w"] = 0xDEADBEEF
    tx.send_batch(recs, timeout=0)
    a = s1.receive_array(REC, 8, timeout=0)
    assert a.tobytes() == recs.tobytes()
    a["w"] = np.arange(6)  # a stage may rewrite records in place through the view
    s1.release()
    b = s2.receive_array(REC, 8, timeout=0)
    assert b["seq"].tolist() == list(range(6))
    assert b["v"].tolist() == recs["v"].tolist()
    assert b["w"].tolist() == list(range(6))
