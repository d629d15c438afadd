"""receive_batch_nowait and rewrite_batch: batches that never wait, rewritten in place."""

from __future__ import annotations

import gc
import threading

import pytest

import byteor.lanes as bl


def test_nowait_batches_raise_instead_of_waiting(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("events", backing=core_backing, capacity=8, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    with pytest.raises(bl.WouldBlock):
        rx.receive_batch_nowait(4)
    sent = [b"m%d" % i for i in range(11)]
    got: list[bytes] = []
    for k in range(0, 11, 3):
        tx.send_batch(sent[k : k + 3])
        while len(got) < min(k + 3, 11):  # a batch stops at the ring's end
            got += rx.receive_batch_nowait(8, copy=True)  # type: ignore[arg-type]
        with pytest.raises(bl.WouldBlock):
            rx.receive_batch_nowait(8)
    assert got == sent
    tx.close()
    with pytest.raises(bl.LaneClosed):
        rx.receive_batch_nowait(8)


def test_nowait_never_crosses_the_ring_end(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=8, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    tx.send_batch([b"x"] * 6)
    assert len(rx.receive_batch_nowait(8)) == 6
    rx.release()
    tx.send_batch([b"%d" % i for i in range(5)])  # slots 6, 7, then 0, 1, 2
    assert [bytes(m) for m in rx.receive_batch_nowait(8)] == [b"0", b"1"]
    assert [bytes(m) for m in rx.receive_batch_nowait(8)] == [b"2", b"3", b"4"]


@pytest.mark.parametrize("same_length", [True, False])
def test_stages_rewrite_batches_in_place(
    core_make_lane, core_backing: str, same_length: bool
) -> None:
    lane = core_make_lane(
        "slots",
        backing=core_backing,
        capacity=16,
        slot_bytes=32,
        consumers=[("s1", []), ("s2", ["s1"])],
    )
    tx = lane.sender()
    s1, s2 = lane.receiver("s1"), lane.receiver("s2")
    sent = [b"%02d" % i if same_length else b"r" * (i % 4) for i in range(12)]
    tx.send_batch(sent)
    batch = s1.receive_batch_nowait(16, copy=True)
    assert batch == sent and all(type(m) is bytes for m in batch)
    with pytest.raises(bl.WouldBlock):  # s2 reads after s1, which has not released yet
        s2.receive_batch_nowait(16)
    new = [b"<" + m + b">" for m in batch]  # type: ignore[operator]
    s1.rewrite_batch(new)
    s1.release()
    assert [bytes(m) for m in s2.receive_batch_nowait(16)] == new
    with pytest.raises(bl.ConsumerError, match="2 item"):
        s2.rewrite_batch(new[:2])
    with pytest.raises(bl.MessageTooLarge):
        s2.rewrite_batch([b"z" * 33] * 12)
    s2.rewrite_batch([b""] * 12)  # empty records are records too
    s2.release()
    # The producer may now reuse the slots; what s2 wrote is what the ring holds.
    reader = lane.receiver("late", start="earliest", after=["s2"])
    assert [bytes(m) for m in reader.receive_batch_nowait(16)] == [b""] * 12


def test_rewrite_batch_needs_a_batch(core_make_lane) -> None:
    lane = core_make_lane("slots", capacity=8, slot_bytes=16, consumers=[("s1", [])])
    tx, s1 = lane.sender(), lane.receiver("s1")
    tx.send(b"a")
    with pytest.raises(bl.ConsumerError, match="batch received"):
        s1.rewrite_batch([b"b"])
    assert bytes(s1.receive(timeout=0)) == b"a"
    with pytest.raises(bl.ConsumerError, match="batch received"):
        s1.rewrite_batch([b"b"])


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_batches_of_mixed_lengths_keep_every_byte(core_make_lane, kind: type) -> None:
    lane = core_make_lane("events", capacity=32, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    sent = [bytes([i]) * (i % 6) + b"\0" * (i % 3) for i in range(20)]  # trailing NULs kept
    tx.send_batch([kind(m) for m in sent])  # bytes go through numpy padding, the rest a loop
    got = rx.receive_batch_nowait(32, copy=True)
    assert got == sent


def test_wait_sees_a_message_without_taking_it(core_make_lane, core_backing: str) -> None:
    lane = core_make_lane("slots", backing=core_backing, capacity=8, consumers=[("s1", [])])
    tx, s1 = lane.sender(), lane.receiver("s1")
    assert s1.wait(timeout=0) is False
    sender = threading.Thread(target=tx.send, args=(b"a",))
    sender.start()  # sent before or while s1 waits: either way the wait ends with it
    assert s1.wait(timeout=10) is True
    sender.join()
    assert s1.wait(timeout=0) is True  # still there: waiting takes nothing
    assert bytes(s1.receive(timeout=0)) == b"a"
    tx.close()
    with pytest.raises(bl.LaneClosed):
        s1.wait(timeout=0)


@pytest.mark.parametrize("mixed", [False, True])
def test_batches_larger_than_one_copy_piece_keep_every_byte_and_seq(
    core_make_lane, mixed: bool
) -> None:
    # 4 KiB rows are copied 32 at a time: 100 of them take four pieces, and a bytearray in the
    # third piece sends the rest of the batch one by one.
    lane = core_make_lane("events", capacity=128, slot_bytes=4096)
    tx, rx = lane.sender(), lane.receiver()
    tx.send(b"first")
    rx.receive(timeout=0)
    sent = [bytes([i]) * (4096 - (i % 5 if mixed else 0)) for i in range(100)]
    items: list[bytes | bytearray] = list(sent)
    if mixed:
        items[70] = bytearray(items[70])
    assert tx.send_batch(items, timeout=0) == 100
    assert rx.receive_batch_nowait(100, copy=True) == sent
    seg = lane.segment
    words = [
        seg.q[seg.desc_word + 2 * (s % 128) : seg.desc_word + 2 * (s % 128) + 2]
        for s in (1, 64, 100)
    ]
    assert [w.tolist() for w in words] == [[len(sent[s - 1]), s] for s in (1, 64, 100)]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_large_batch_of_views_is_made_without_a_collection(core_make_lane, enabled: bool) -> None:
    lane = core_make_lane("events", capacity=256, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    sent = [b"%d" % i for i in range(200)]
    tx.send_batch(sent)
    collections: list[str] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        collections.append(phase)

    was, threshold = gc.isenabled(), gc.get_threshold()
    gc.collect()  # the young count starts at 0: the call's few other objects stay below 100
    gc.set_threshold(100)  # without the pause, 200 new views would set off a collection
    (gc.enable if enabled else gc.disable)()
    gc.callbacks.append(seen)
    try:
        views = rx.receive_batch(200)
        during = len(collections)  # allocates nothing the collector counts
        assert gc.isenabled() is enabled  # left as it was found
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*threshold)
        (gc.enable if was else gc.disable)()
    assert during == 0
    assert [bytes(v) for v in views] == sent
