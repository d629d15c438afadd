"""Router (hash or broadcast fan-out) and Merge (round-robin or ready fan-in)."""

from __future__ import annotations

import random
import threading
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import byteor.lanes as bl
from byteor.lanes.router import key_bytes, route_of

# -- the routing hash ----------------------------------------------------------------------


def crc32_reference(data: bytes) -> int:
    """CRC-32/ISO-HDLC bit by bit, as another language would write it from the docstring."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_key_bytes_encoding() -> None:
    assert key_bytes(b"ab") == b"ab"
    assert key_bytes(bytearray(b"ab")) == b"ab"
    assert key_bytes(memoryview(b"ab")) == b"ab"
    assert key_bytes("é") == b"\xc3\xa9"
    assert key_bytes(42) == b"\x2a" + b"\0" * 7
    assert key_bytes(-1) == b"\xff" * 8
    assert key_bytes(2**64 - 1) == b"\xff" * 8
    assert key_bytes(-(2**63)) == b"\0" * 7 + b"\x80"
    with pytest.raises(ValueError):
        key_bytes(2**64)
    with pytest.raises(ValueError):
        key_bytes(-(2**63) - 1)
    with pytest.raises(TypeError):
        key_bytes(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        key_bytes(True)


def test_pinned_routes() -> None:
    # Pinned: changing any of these re-routes every user's keys.
    assert crc32_reference(b"123456789") == 0xCBF43926  # the CRC-32 check value
    assert route_of(b"123456789", 4) == 0xCBF43926 % 4 == 2
    assert zlib.crc32(b"a") == 0xE8B7BE43
    assert [route_of(k, 3) for k in ("user-1", "user-2", "user-3")] == [2, 1, 0]
    assert [route_of(k, 4) for k in ("user-1", "user-2", "user-3")] == [0, 2, 0]
    assert route_of(42, 4) == 0x0D94A1F7 % 4 == 3
    assert route_of(-1, 3) == 0x2144DF1C % 3 == 1
    assert route_of(b"", 5) == 0
    assert route_of("anything", 1) == 0
    with pytest.raises(ValueError):
        route_of(b"x", 0)


@given(st.binary(max_size=64), st.integers(1, 17))
def test_route_is_crc32_mod_n(key: bytes, n: int) -> None:
    assert route_of(key, n) == crc32_reference(key) % n


# -- Router ----------------------------------------------------------------------------------


def events_lanes(core_make_lane, n: int, capacity: int = 64) -> list[bl.Lane]:
    return [core_make_lane("events", capacity=capacity, slot_bytes=32) for _ in range(n)]


def drain(rx: bl.Consumer) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(bytes(rx.receive_nowait()))
        except bl.WouldBlock:
            return out


def test_hash_routing_by_key(core_make_lane) -> None:
    lanes = events_lanes(core_make_lane, 3)
    router = bl.Router([ln.sender() for ln in lanes])
    rxs = [ln.receiver() for ln in lanes]
    keys = ["user-1", "user-2", "user-3"]
    for i in range(12):
        router.send(f"{keys[i % 3]}:{i}".encode(), key=keys[i % 3])
    assert [drain(rx) for rx in rxs] == [
        [b"user-3:2", b"user-3:5", b"user-3:8", b"user-3:11"],
        [b"user-2:1", b"user-2:4", b"user-2:7", b"user-2:10"],
        [b"user-1:0", b"user-1:3", b"user-1:6", b"user-1:9"],
    ]
    s = router.statistics()
    assert (s.mode, s.routed, s.sent) == ("hash", (4, 4, 4), 12)


def test_hash_routing_with_a_key_function_or_the_message(core_make_lane) -> None:
    lanes = events_lanes(core_make_lane, 4)
    rxs = [ln.receiver() for ln in lanes]
    txs = [ln.sender() for ln in lanes]
    by_prefix = bl.Router(txs, key=lambda m: bytes(m[:6]))
    for m in (b"user-1 hello", b"user-2 hi", b"user-1 again"):
        by_prefix.send(m)
    assert drain(rxs[0]) == [b"user-1 hello", b"user-1 again"]
    assert drain(rxs[2]) == [b"user-2 hi"]
    assert by_prefix.route(b"user-3 x") == 0
    whole = bl.Router(txs)  # no key at all: the message is the key
    whole.send(b"123456789")
    assert drain(rxs[2]) == [b"123456789"]
    whole.send(b"payload", key=42)  # an explicit key wins
    assert drain(rxs[3]) == [b"payload"]
    assert whole.statistics().routed == (0, 0, 1, 1)


def test_broadcast_reaches_all(core_make_lane) -> None:
    lanes = events_lanes(core_make_lane, 3)
    router = bl.Router([ln.sender() for ln in lanes], mode="broadcast")
    rxs = [ln.receiver() for ln in lanes]
    for i in range(5):
        router.send(b"m%d" % i)
    router.send_batch([b"b0", b"b1"])
    expected = [b"m0", b"m1", b"m2", b"m3", b"m4", b"b0", b"b1"]
    assert [drain(rx) for rx in rxs] == [expected] * 3
    s = router.statistics()
    assert (s.mode, s.routed, s.sent) == ("broadcast", (7, 7, 7), 7)
    with pytest.raises(ValueError):
        router.send(b"x", key="k")
    with pytest.raises(ValueError):
        bl.Router([lanes[0].sender()], mode="broadcast", key=bytes)


def test_broadcast_timeout_says_which_routes_have_it(core_make_lane) -> None:
    lanes = events_lanes(core_make_lane, 3, capacity=2)
    rxs = [ln.receiver() for ln in lanes]
    txs = [ln.sender() for ln in lanes]
    txs[1].send(b"fill")
    txs[1].send(b"fill")
    router = bl.Router(txs, mode="broadcast")
    with pytest.raises(bl.LaneTimeout, match="route 1"):
        router.send(b"x", timeout=0)
    assert drain(rxs[0]) == [b"x"]
    assert drain(rxs[2]) == []
    assert router.statistics().routed == (1, 0, 0)


def test_send_batch_splits_by_route_keeping_order(core_make_lane) -> None:
    lanes = events_lanes(core_make_lane, 3)
    router = bl.Router([ln.sender() for ln in lanes])
    rxs = [ln.receiver() for ln in lanes]
    keys = [f"k{i % 7}" for i in range(40)]
    items = [f"{k}/{i}".encode() for i, k in enumerate(keys)]
    assert router.send_batch(items, keys=keys) == 40
    got = [drain(rx) for rx in rxs]
    for r in range(3):
        assert got[r] == [m for m, k in zip(items, keys, strict=True) if route_of(k, 3) == r]
    assert router.statistics().routed == tuple(len(g) for g in got)
    assert sum(router.statistics().routed) == 40
    with pytest.raises(ValueError):
        router.send_batch(items, keys=keys[:-1])
    assert router.send_batch([]) == 0


def test_send_batch_of_numpy_records_by_key(core_make_lane) -> None:
    lanes = [core_make_lane("events", capacity=64, slot_bytes=16) for _ in range(2)]
    router = bl.Router([ln.sender() for ln in lanes])
    rxs = [ln.receiver() for ln in lanes]
    rec = np.dtype([("account", "<u8"), ("amount", "<i8")])
    recs = np.zeros(30, dtype=rec)
    recs["account"] = np.arange(30) % 5
    recs["amount"] = np.arange(30) * 10
    router.send_batch(recs, keys=[int(a) for a in recs["account"]])
    for r, rx in enumerate(rxs):
        got = rx.receive_array(rec, 64, timeout=0)
        mine = recs[[route_of(int(a), 2) == r for a in recs["account"]]]
        assert got.tobytes() == mine.tobytes()


# -- Merge -------------------------------------------------------------------------------


def merged_lanes(core_make_lane, contents: list[list[bytes]], capacity: int = 16):
    lanes = [core_make_lane("events", capacity=capacity, slot_bytes=32) for _ in contents]
    txs = [ln.sender() for ln in lanes]
    rxs = [ln.receiver() for ln in lanes]
    return txs, rxs


def round_robin_model(contents: list[list[bytes]]) -> list[tuple[int, bytes]]:
    """One from each input in turn; exhausted inputs leave the rotation."""
    out = []
    queues = [list(c) for c in contents]
    live = list(range(len(queues)))
    while live:
        for i in list(live):
            if queues[i]:
                out.append((i, queues[i].pop(0)))
            else:
                live.remove(i)
    return out


def test_round_robin_order_is_exact(core_make_lane) -> None:
    contents = [[b"a0", b"a1", b"a2"], [b"b0"], [b"c0", b"c1"]]
    txs, rxs = merged_lanes(core_make_lane, contents)
    for tx, c in zip(txs, contents, strict=True):
        tx.send_batch(c)
        tx.close()
    merge = bl.Merge(rxs)
    got = [(i, bytes(m)) for i, m in merge]
    assert got == [(0, b"a0"), (1, b"b0"), (2, b"c0"), (0, b"a1"), (2, b"c1"), (0, b"a2")]
    assert got == round_robin_model(contents)
    with pytest.raises(bl.LaneClosed):
        merge.receive()
    s = merge.statistics()
    assert (s.order, s.received, s.live) == ("round_robin", (3, 1, 2), ())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_round_robin_order_does_not_depend_on_timing(core_make_lane, seed: int) -> None:
    rng = random.Random(seed)
    contents = [[f"{i}:{j}".encode() for j in range(rng.randrange(0, 300))] for i in range(4)]
    txs, rxs = merged_lanes(core_make_lane, contents, capacity=4)

    def produce(tx: bl.Producer, items: list[bytes], rnd: random.Random) -> None:
        k = 0
        while k < len(items):
            n = rnd.randrange(1, 6)
            tx.send_batch(items[k : k + n], timeout=30)
            k += n
        tx.close()

    threads = [
        threading.Thread(target=produce, args=(tx, c, random.Random(seed * 10 + i)))
        for i, (tx, c) in enumerate(zip(txs, contents, strict=True))
    ]
    for t in threads:
        t.start()
    merge = bl.Merge(rxs)
    got = []
    while True:
        try:
            i, m = merge.receive(timeout=30)
        except bl.LaneClosed:
            break
        got.append((i, bytes(m)))
    for t in threads:
        t.join(30)
    assert got == round_robin_model(contents)


def test_closed_inputs_drop_out(core_make_lane) -> None:
    txs, rxs = merged_lanes(core_make_lane, [[], [], []])
    txs[1].close()  # closed before sending anything
    merge = bl.Merge(rxs)
    txs[0].send(b"a0")
    txs[2].send(b"c0")
    assert [(i, bytes(m)) for i, m in (merge.receive(0), merge.receive(0))] == [
        (0, b"a0"),
        (2, b"c0"),
    ]
    assert merge.live == (0, 2)
    txs[0].send(b"a1")
    txs[0].close()
    txs[2].send(b"c1")
    txs[2].send(b"c2")
    assert [(i, bytes(m)) for i, m in (merge.receive(0) for _ in range(3))] == [
        (0, b"a1"),
        (2, b"c1"),
        (2, b"c2"),  # input 0 closed and drained: the turn passes to 2 again
    ]
    assert merge.live == (2,)
    txs[2].close()
    with pytest.raises(bl.LaneClosed):
        merge.receive(0)
    assert merge.live == ()


def test_round_robin_timeout_keeps_the_turn(core_make_lane) -> None:
    txs, rxs = merged_lanes(core_make_lane, [[], []])
    merge = bl.Merge(rxs)
    txs[1].send(b"b0")
    with pytest.raises(bl.LaneTimeout):
        merge.receive(timeout=0)  # input 0's turn; it has nothing
    with pytest.raises(bl.WouldBlock):
        merge.receive_nowait()  # still input 0's turn, though input 1 has data
    txs[0].send(b"a0")
    assert [(i, bytes(m)) for i, m in (merge.receive(0), merge.receive(0))] == [
        (0, b"a0"),
        (1, b"b0"),
    ]


def test_ready_serves_inputs_fairly_from_the_one_after_the_last(core_make_lane) -> None:
    txs, rxs = merged_lanes(core_make_lane, [[], [], []])
    merge = bl.Merge(rxs, order="ready")
    for i in (0, 1):
        txs[i].send_batch([b"%d-%d" % (i, j) for j in range(3)])
    got = [(i, bytes(m)) for i, m in (merge.receive(0) for _ in range(4))]
    assert got == [(0, b"0-0"), (1, b"1-0"), (0, b"0-1"), (1, b"1-1")]
    txs[2].send(b"2-0")
    # The scan starts after input 1 (the last served): input 2 first, then 0.
    got = [(i, bytes(m)) for i, m in (merge.receive(0) for _ in range(3))]
    assert got == [(2, b"2-0"), (0, b"0-2"), (1, b"1-2")]
    with pytest.raises(bl.WouldBlock):
        merge.receive_nowait()
    with pytest.raises(bl.LaneTimeout):
        merge.receive(timeout=0)
    for tx in txs:
        tx.close()
    with pytest.raises(bl.LaneClosed):
        merge.receive(timeout=0)
    with pytest.raises(bl.LaneClosed):
        merge.receive_nowait()
    assert merge.statistics().received == (3, 3, 1)


@pytest.mark.timeout(60)
def test_ready_returns_every_message_exactly_once(core_make_lane) -> None:
    contents = [[f"{i}:{j}".encode() for j in range(n)] for i, n in enumerate((500, 0, 37, 250))]
    txs, rxs = merged_lanes(core_make_lane, contents, capacity=8)

    def produce(tx: bl.Producer, items: list[bytes]) -> None:
        for k in range(0, len(items), 3):
            tx.send_batch(items[k : k + 3], timeout=30)
        tx.close()

    threads = [
        threading.Thread(target=produce, args=(tx, c)) for tx, c in zip(txs, contents, strict=True)
    ]
    for t in threads:
        t.start()
    merge = bl.Merge(rxs, order="ready", max_sleep=0.001)
    got: list[list[bytes]] = [[] for _ in contents]
    while True:
        try:
            i, m = merge.receive(timeout=30)
        except bl.LaneClosed:
            break
        got[i].append(bytes(m))
    for t in threads:
        t.join(30)
    assert got == contents  # each input complete, in its own order, nothing else


def test_merge_validates_arguments(core_make_lane) -> None:
    _, rxs = merged_lanes(core_make_lane, [[]])
    with pytest.raises(ValueError):
        bl.Merge([])
    with pytest.raises(ValueError):
        bl.Merge(rxs, order="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bl.Router([])
    with pytest.raises(ValueError):
        bl.Router([core_make_lane("events").sender()], mode="random")  # type: ignore[arg-type]
