"""Fanout lanes: every consumer sees every message; critical consumers gate, best-effort ones
are overrun and count their loss exactly. Memory and shm; one multi-process test."""

from __future__ import annotations

import contextlib
import multiprocessing

import numpy as np
import pytest

import byteor.lanes as bl


def enc(i: int) -> bytes:
    return i.to_bytes(8, "little") + b"f" * (i % 5)


def dec(view: memoryview | bytes) -> int:
    return int.from_bytes(bytes(view[:8]), "little")


def drain(rx: bl.Consumer) -> list[int]:
    out: list[int] = []
    while True:
        try:
            out.append(dec(rx.receive_nowait()))
        except bl.WouldBlock:
            return out


def test_every_consumer_sees_every_message(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane(
        "fanout", backing=core_backing, capacity=8, slot_bytes=32, consumers=["a", "b", "c"]
    )
    tx = lane.sender()
    rxs = [lane.receiver(n) for n in ("a", "b", "c")]
    got: list[list[bytes]] = [[], [], []]
    total = 300
    sent = 0
    rounds = 0
    while sent < total:
        while sent < total:
            try:
                tx.send_nowait(enc(sent))
            except bl.WouldBlock:
                break
            sent += 1
        rounds += 1
        for k, rx in enumerate(rxs):
            # Each drains differently: by message, by batch, all at once.
            if k == 0:
                with contextlib.suppress(bl.WouldBlock):
                    for _ in range(3):
                        got[k].append(bytes(rx.receive_nowait()))
            elif k == 1:
                with contextlib.suppress(bl.LaneTimeout):
                    got[k] += [bytes(v) for v in rx.receive_batch(5, timeout=0)]
            else:
                got[k] += [enc(i) for i in drain(rx)]
    tx.close()
    for k, rx in enumerate(rxs):
        with contextlib.suppress(bl.LaneClosed):
            while True:
                got[k].append(bytes(rx.receive(timeout=0)))
        assert got[k] == [enc(i) for i in range(total)], k
    assert rounds > total // 8  # the ring really filled and wrapped
    s = lane.statistics()
    assert [c.position for c in s.consumers] == [total] * 3
    assert s.overruns == 0


def test_a_critical_consumer_gates_the_producer(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane(
        "fanout", backing=core_backing, capacity=4, slot_bytes=16, consumers=["fast", "slow"]
    )
    tx = lane.sender()
    fast = lane.receiver("fast", publish_every=1)
    slow = lane.receiver("slow", publish_every=1)
    for i in range(4):
        tx.send_nowait(enc(i))
    assert drain(fast) == [0, 1, 2, 3]
    fast.release()
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(enc(4))
    assert lane.statistics().drops == 1
    assert dec(slow.receive_nowait()) == 0
    slow.release()
    tx.send_nowait(enc(4))  # exactly one slot came free
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(enc(5))
    s = lane.statistics()
    assert {c.name: (c.position, c.lag) for c in s.consumers} == {"fast": (4, 1), "slow": (1, 4)}
    assert s.consumed == 1
    assert drain(slow) == [1, 2, 3, 4]
    assert drain(fast) == [4]


def test_best_effort_is_overrun_with_exact_loss(core_make_lane, core_backing: str) -> None:
    cap = 8
    lane = core_make_lane(
        "fanout", backing=core_backing, capacity=cap, slot_bytes=16, consumers=["crit"]
    )
    tx = lane.sender()
    crit = lane.receiver("crit")
    for i in range(5):  # before the best-effort consumer exists
        tx.send(enc(i))
    assert drain(crit) == list(range(5))
    be = lane.receiver(policy="best_effort")
    start = be.position
    assert start == 5  # "latest" by default
    total = 5 + 40 * cap
    sent = 5
    delivered: list[int] = []
    lost_seen = 0
    # The producer runs ahead of the best-effort reader by varying amounts, the critical one
    # keeps up; every gap the reader sees must be exactly the loss it is told about.
    burst = 1
    while sent < total:
        for _ in range(min(burst, total - sent)):
            tx.send_nowait(enc(sent))
            sent += 1
            assert dec(crit.receive_nowait()) == sent - 1
        burst = burst * 3 % (3 * cap + 1) or 1
        for _ in range(1 + burst % 3):
            try:
                seq = dec(be.receive_nowait())
            except bl.WouldBlock:
                break
            expected = (delivered[-1] + 1) if delivered else start
            assert seq - expected == be.lost - lost_seen, (seq, expected, be.lost, lost_seen)
            lost_seen = be.lost
            delivered.append(seq)
    tail = drain(be)
    if tail:
        expected = (delivered[-1] + 1) if delivered else start
        assert tail[0] - expected == be.lost - lost_seen
        assert tail == list(range(tail[0], tail[0] + len(tail)))
    delivered += tail
    assert delivered[-1] == total - 1
    assert len(delivered) + be.lost == total - start
    assert be.lost > 0
    s = lane.statistics()
    (bes,) = [c for c in s.consumers if c.policy == "best_effort"]
    assert bes.lost == be.lost == s.overruns
    assert bes.position == total


def test_best_effort_never_gates(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("fanout", backing=core_backing, capacity=4, slot_bytes=16)
    tx = lane.sender()
    be = lane.receiver(policy="best_effort")
    for i in range(40):
        tx.send_nowait(enc(i))
    assert lane.statistics().drops == 0
    got = drain(be)
    assert got == list(range(40 - len(got), 40))
    assert len(got) + be.lost == 40
    assert len(got) >= 3  # at most the slot in flux is lost from the last lap


def test_named_consumers_resume_by_name(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane(
        "fanout", backing=core_backing, capacity=4, slot_bytes=16, consumers=["a"]
    )
    tx = lane.sender()
    a = lane.receiver("a")
    for i in range(4):
        tx.send(enc(i))
    assert [dec(a.receive_nowait()) for _ in range(2)] == [0, 1]
    a.close()
    # A closed named consumer keeps its line and still gates the producer.
    tx.send_nowait(enc(4))
    tx.send_nowait(enc(5))
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(enc(6))
    s = lane.statistics()
    (line,) = s.consumers
    assert (line.name, line.position, line.attached) == ("a", 2, False)
    with pytest.raises(bl.ConsumerError):
        lane.receiver("a", policy="best_effort")
    again = lane.receiver("a")
    assert again.position == 2
    assert drain(again) == [2, 3, 4, 5]
    assert lane.consumer_names() == ["a"]


def test_anonymous_consumers_are_freed_on_close(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("fanout", backing=core_backing, capacity=4, slot_bytes=16)
    tx = lane.sender()
    anon = lane.receiver()
    tx.send(enc(0))
    assert dec(anon.receive_nowait()) == 0
    assert len(lane.statistics().consumers) == 1
    for i in range(1, 4):
        tx.send_nowait(enc(i))
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(enc(4))
    anon.close()
    assert lane.statistics().consumers == ()
    for i in range(4, 4 + 3 * 4):
        tx.send_nowait(enc(i))  # nothing gates any more
    # The freed line is reused by the next receiver.
    again = lane.receiver()
    assert again.index == anon.index
    assert again.position == tx.position  # anonymous ones start at the latest


def test_close_raises_lane_closed_after_draining(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane(
        "fanout", backing=core_backing, capacity=8, slot_bytes=16, consumers=["a", "b"]
    )
    tx = lane.sender()
    a, b = lane.receiver("a"), lane.receiver("b")
    be = lane.receiver(policy="best_effort")
    tx.send_batch([enc(i) for i in range(3)])
    tx.close()
    for rx in (a, b, be):
        assert [dec(rx.receive(timeout=0)) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(bl.LaneClosed):
            rx.receive(timeout=0)
        with pytest.raises(bl.LaneClosed):
            rx.receive_nowait()
    assert lane.statistics().closed


REC = np.dtype([("seq", "<u8"), ("value", "<f4"), ("flag", "u1"), ("pad", "V3")])


def test_numpy_batches_reach_every_consumer(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane(
        "fanout", backing=core_backing, capacity=16, slot_bytes=16, consumers=["a", "b"]
    )
    tx = lane.sender()
    a, b = lane.receiver("a"), lane.receiver("b")
    be = lane.receiver(policy="best_effort")
    recs = np.zeros(12, dtype=REC)
    recs["seq"] = np.arange(12)
    recs["value"] = np.arange(12) / 4
    recs["flag"] = np.arange(12) % 3
    tx.send_batch(recs, timeout=0)
    for rx in (a, b, be):
        parts = []
        while sum(map(len, parts)) < 12:
            parts.append(rx.receive_array(REC, 5, timeout=0).copy())
        assert [len(p) for p in parts][:2] == [5, 5]
        assert np.concatenate(parts).tobytes() == recs.tobytes()


# -- across processes -------------------------------------------------------------------

MP_TOTAL = 1_000_000
MP_CHUNK = 4096
MP_SINGLE = 200_000  # sent and received one by one
MP_BYTES = 400_000  # then in batches of bytes; the rest as numpy records


def _critical_reader(name: str, consumer: str, conn) -> None:  # child process
    try:
        lane = bl.attach(name, kind="fanout")
        rx = lane.receiver(consumer)
        expected = 0
        while expected < MP_SINGLE:
            seq = int.from_bytes(rx.receive(timeout=30), "little")
            if seq != expected:
                conn.send(("order", expected, seq))
                return
            expected += 1
        while expected < MP_BYTES:
            views = rx.receive_batch(min(MP_CHUNK, MP_BYTES - expected), timeout=30)
            for view in views:
                seq = int.from_bytes(view, "little")
                if seq != expected:
                    conn.send(("order", expected, seq))
                    return
                expected += 1
        while True:
            try:
                arr = rx.receive_array("<u8", MP_CHUNK, timeout=30)
            except bl.LaneClosed:
                break
            n = len(arr)
            if not np.array_equal(arr, np.arange(expected, expected + n, dtype=np.uint64)):
                conn.send(("order", expected, int(arr[0])))
                return
            expected += n
        conn.send(("ok", expected, rx.lost))
        rx.close()
    except BaseException as exc:
        conn.send(("error", repr(exc), 0))
    finally:
        conn.close()


@pytest.mark.multiprocess
@pytest.mark.timeout(120)
def test_two_critical_consumer_processes_move_a_million_messages(core_make_lane) -> None:
    lane = core_make_lane(
        "fanout", backing="shm", capacity=1 << 14, slot_bytes=8, consumers=["p1", "p2"]
    )
    ctx = multiprocessing.get_context("fork")
    pipes = []
    procs = []
    for consumer in ("p1", "p2"):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_critical_reader, args=(lane.name, consumer, child), daemon=True)
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    tx = lane.sender()
    # One by one, then batches of bytes, then numpy batches; the payload is the sequence.
    for i in range(MP_SINGLE):
        tx.send(i.to_bytes(8, "little"), timeout=30)
    for k in range(MP_SINGLE, MP_BYTES, MP_CHUNK):
        stop = min(k + MP_CHUNK, MP_BYTES)
        tx.send_batch([i.to_bytes(8, "little") for i in range(k, stop)], timeout=30)
    seq = np.arange(MP_BYTES, MP_TOTAL, dtype=np.uint64)
    for k in range(0, len(seq), MP_CHUNK):
        tx.send_batch(seq[k : k + MP_CHUNK], timeout=30)
    tx.close()
    results = [pipe.recv() for pipe in pipes]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert results == [("ok", MP_TOTAL, 0), ("ok", MP_TOTAL, 0)]
    s = lane.statistics()
    assert s.published == MP_TOTAL
    assert sorted((c.name, c.position, c.lost) for c in s.consumers) == [
        ("p1", MP_TOTAL, 0),
        ("p2", MP_TOTAL, 0),
    ]
    assert s.overruns == 0
    assert s.drops == 0
