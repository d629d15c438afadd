"""receive_batch(copy=True): bytes of their own, exact, valid after the next receive."""

from __future__ import annotations

import byteor.lanes as bl


def test_copied_batches_are_exact_and_outlive_the_slots(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=8, slot_bytes=32)
    tx, rx = lane.sender(), lane.receiver()
    sent = [bytes([i]) * (i % 5) for i in range(40)]  # varying lengths, empty ones included
    got: list[bytes] = []
    kept: list[bytes] = []
    for k in range(0, len(sent), 4):
        tx.send_batch(sent[k : k + 4])
        while len(got) < k + 4:
            batch = rx.receive_batch(8, timeout=0, copy=True)
            assert all(type(m) is bytes for m in batch)
            got.extend(batch)  # type: ignore[arg-type]
            kept = list(batch)  # type: ignore[arg-type]
    assert got == sent
    # The ring has lapped the last batch's slots five times over; the copies are unchanged.
    assert kept == sent[-len(kept) :]


def test_equal_lengths_take_the_same_path(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=16, slot_bytes=16)
    tx, rx = lane.sender(), lane.receiver()
    sent = [b"%015d" % i for i in range(12)]
    tx.send_batch(sent)
    assert rx.receive_batch(16, timeout=0, copy=True) == sent
    assert lane.statistics().consumers[0].position <= 12
    tx.send(b"x")
    assert bytes(rx.receive(timeout=0)) == b"x"
    assert bl.LaneStatistics  # the public name stays importable
