"""Events lanes: one lossless consumer, statistics, close, the numpy path; memory and shm."""

from __future__ import annotations

import contextlib
import multiprocessing
import os

import numpy as np
import pytest

import byteor.lanes as bl


def seqmsg(i: int) -> bytes:
    return i.to_bytes(8, "little") + b"e" * (i % 7)


def test_lossless_single_consumer(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("events", backing=core_backing, capacity=8, slot_bytes=32)
    tx, rx = lane.sender(), lane.receiver()
    total = 1000
    sent = 0
    got: list[bytes] = []
    blocked = 0
    step = 0
    while len(got) < total:
        # Fill until full, then drain a varying amount, by message and by batch.
        while sent < total:
            try:
                tx.send_nowait(seqmsg(sent))
            except bl.WouldBlock:
                blocked += 1
                break
            sent += 1
        step += 1
        if step % 2:
            got += [bytes(v) for v in rx.receive_batch(1 + step % 5, timeout=0)]
        else:
            for _ in range(1 + step % 3):
                try:
                    got.append(bytes(rx.receive_nowait()))
                except bl.WouldBlock:
                    break
    assert got == [seqmsg(i) for i in range(total)]
    stats = lane.statistics()
    assert stats.published == total
    assert stats.drops == blocked
    assert stats.kind == "events"
    with pytest.raises(bl.WouldBlock):
        rx.receive_nowait()


def test_blocking_send_and_receive_timeouts(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("events", backing=core_backing, capacity=2, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    with pytest.raises(bl.LaneTimeout):
        rx.receive(timeout=0)
    tx.send(b"a", timeout=0)
    tx.send(b"b", timeout=0)
    with pytest.raises(bl.LaneTimeout):
        tx.send(b"c", timeout=0)
    with pytest.raises(bl.LaneTimeout):
        tx.send_batch([b"c", b"d"], timeout=0)
    assert bytes(rx.receive(timeout=0)) == b"a"
    assert bytes(rx.receive(timeout=0)) == b"b"
    tx.send(b"c", timeout=0)
    assert bytes(rx.receive(timeout=0)) == b"c"


def test_receiver_takes_no_name_policy_or_start(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("events", backing=core_backing)
    with pytest.raises(bl.ConsumerError):
        lane.receiver("someone")
    with pytest.raises(bl.ConsumerError):
        lane.receiver(policy="best_effort")
    with pytest.raises(bl.ConsumerError):
        lane.receiver(start="earliest")
    with pytest.raises(ValueError):
        core_make_lane("events", backing=core_backing, consumers=["a"])


def _try_receiver(name: str, backing: str, conn) -> None:  # child process
    try:
        lane = bl.attach(name, backing=backing)  # type: ignore[arg-type]
        rx = lane.receiver()
        rx.close()
        conn.send("accepted")
    except bl.ConsumerError as exc:
        conn.send(f"ConsumerError: {exc}")
    except BaseException as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
        os._exit(0)


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_second_live_receiver_is_rejected(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("events", backing=core_backing)
    rx = lane.receiver()
    ctx = multiprocessing.get_context("fork")

    def attempt() -> str:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_try_receiver, args=(lane.name, core_backing, child))
        p.start()
        child.close()
        answer = parent.recv()
        p.join(30)
        assert p.exitcode == 0
        return str(answer)

    answer = attempt()
    assert answer.startswith("ConsumerError"), answer
    assert str(os.getpid()) in answer  # it names the live holder
    rx.close()
    assert attempt() == "accepted"


def test_second_receiver_in_the_same_process_is_rejected(core_make_lane) -> None:
    lane = core_make_lane("events")
    tx = lane.sender()
    first = lane.receiver()
    tx.send(b"once")
    with pytest.raises(bl.ConsumerError):
        second = lane.receiver()
        # What goes wrong otherwise: the one message is delivered twice.
        assert bytes(first.receive_nowait()) == bytes(second.receive_nowait()) == b"once"


def test_statistics_fields(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("events", backing=core_backing, capacity=4, slot_bytes=16)
    tx = lane.sender()
    rx = lane.receiver(publish_every=1)
    s = lane.statistics()
    assert (s.capacity, s.slot_bytes, s.kind, s.closed) == (4, 16, "events", False)
    assert (s.published, s.consumed, s.lag, s.used, s.full_waits, s.drops) == (0, 0, 0, 0, 0, 0)
    assert s.producer_pid == os.getpid()
    assert s.producer_attached
    for i in range(3):
        tx.send(seqmsg(i))
    s = lane.statistics()
    assert (s.published, s.consumed, s.lag, s.used) == (3, 0, 3, 3)
    rx.receive_nowait()
    rx.receive_nowait()  # releases the first; the second is held
    s = lane.statistics()
    assert (s.published, s.consumed, s.lag, s.used) == (3, 1, 2, 2)
    (c,) = s.consumers
    assert (c.index, c.name, c.policy) == (0, "default", "critical")
    assert (c.position, c.lag, c.lost) == (1, 2, 0)
    assert c.pid == os.getpid()
    assert c.attached
    rx.release()
    assert lane.statistics().consumed == 2
    tx.send(b"x")
    tx.send(b"y")
    tx.send(b"z")
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(b"w")
    with pytest.raises(bl.WouldBlock):
        tx.send_batch_nowait([b"w"])
    s = lane.statistics()
    assert (s.published, s.used, s.drops, s.full_waits) == (6, 4, 2, 0)
    with pytest.raises(bl.LaneTimeout):
        tx.send(b"w", timeout=0)
    with pytest.raises(bl.LaneTimeout):
        tx.send(b"w", timeout=0)
    s = lane.statistics()
    assert (s.drops, s.full_waits) == (2, 2)
    with pytest.raises(bl.LaneTimeout):
        [rx.receive(timeout=0) for _ in range(5)]
    s = lane.statistics()
    assert (s.consumed, s.lag, s.used) == (6, 0, 0)
    assert s.consumers[0].waits >= 1
    tx.close()
    assert lane.statistics().closed


def test_close_raises_lane_closed_after_draining(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("events", backing=core_backing, capacity=8, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    tx.send_batch([b"a", b"b", b"c"])
    tx.close()
    assert bytes(rx.receive(timeout=0)) == b"a"
    assert [bytes(v) for v in rx.receive_batch(8, timeout=0)] == [b"b", b"c"]
    for _ in range(2):  # it stays closed
        with pytest.raises(bl.LaneClosed):
            rx.receive(timeout=0)
        with pytest.raises(bl.LaneClosed):
            rx.receive()  # no timeout: must not hang
        with pytest.raises(bl.LaneClosed):
            rx.receive_nowait()
        with pytest.raises(bl.LaneClosed):
            rx.receive_batch(4)
        with pytest.raises(bl.LaneClosed):
            rx.receive_array(np.uint64, 4)


@pytest.mark.parametrize("call", ["send", "send_nowait", "send_batch"])
def test_a_closed_sender_refuses_to_send(core_make_lane, call: str) -> None:
    lane = core_make_lane("events", capacity=8, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    tx.send(b"before")
    tx.close()
    with pytest.raises(bl.LaneClosed):
        if call == "send_batch":
            tx.send_batch([b"after"])
        else:
            getattr(tx, call)(b"after")
    assert bytes(rx.receive(timeout=0)) == b"before"
    with pytest.raises(bl.LaneClosed):
        rx.receive(timeout=0)


PACKED = np.dtype([("seq", "<u8"), ("price", "<f8"), ("qty", "<i4"), ("side", "u1")])
# Aligned: numpy copies fields, not padding, so compare those records field by field.
ALIGNED = np.dtype(PACKED.descr, align=True)


@pytest.mark.parametrize("REC", [PACKED, ALIGNED], ids=["packed", "aligned"])
def test_numpy_batch_round_trip(core_make_lane, core_backing: str, REC: np.dtype) -> None:
    lane = core_make_lane("events", backing=core_backing, capacity=16, slot_bytes=32)
    tx, rx = lane.sender(), lane.receiver()
    total = 200
    recs = np.zeros(total, dtype=REC)
    recs["seq"] = np.arange(total)
    recs["price"] = np.arange(total) * 0.25 + 100.0
    recs["qty"] = -np.arange(total)
    recs["side"] = np.arange(total) % 2
    sent = 0
    parts: list[np.ndarray] = []
    got = 0
    while got < total:
        if sent < total:
            with contextlib.suppress(bl.WouldBlock):
                sent += tx.send_batch_nowait(recs[sent : sent + 11])
        a = rx.receive_array(REC, 7, timeout=0)
        assert a.dtype == REC
        parts.append(a.copy())  # the view is valid only until the next receive
        got += len(a)
    out = np.concatenate(parts)
    assert len(out) == total
    for field in REC.names:
        assert out[field].tolist() == recs[field].tolist(), field
    if REC.itemsize == sum(REC.fields[f][0].itemsize for f in REC.names):
        assert out.tobytes() == recs.tobytes()
    assert out["seq"].tolist() == list(range(total))
