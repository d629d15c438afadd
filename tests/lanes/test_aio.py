"""Async edges: receive_async / receive_batch_async / send_async / send_batch_async.

Every wait here ends on explicit synchronization (the sleep flag in the segment, a thread's
syscall in /proc, a threading.Event), never on "sleep a bit"; the deadlines only bound a
failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata

import anyio
import pytest

import byteor.lanes as bl
from byteor.lanes import _aio
from byteor.lanes import layout as L

pytestmark = pytest.mark.timeout(30)

_FUTEX_SYSCALL = 202  # x86-64


# -- synchronization helpers ------------------------------------------------------------------


def _consumer_sleep_flag(lane: bl.Lane, rx: bl.Consumer) -> Callable[[], bool]:
    """Whether ``rx`` has raised its "I am asleep" byte in the producer block."""
    seg = lane.segment
    offset = seg.geometry.producer_offset + L.ProducerBlock.consumer_sleeping.offset + rx.index
    return lambda: seg.buf[offset] != 0


def _producer_sleep_flag(lane: bl.Lane) -> Callable[[], bool]:
    seg = lane.segment
    offset = seg.geometry.producer_offset + L.ProducerBlock.sleeping.offset
    return lambda: seg.buf[offset] != 0


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the loop run until ``cond()`` holds (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        await anyio.sleep(0)


def _until_sync(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0)


def _in_futex_wait(tid: int) -> bool:
    """Whether thread ``tid`` of this process is blocked in the futex syscall right now."""
    with open(f"/proc/self/task/{tid}/syscall") as f:
        fields = f.read().split()
    return bool(fields) and fields[0] == str(_FUTEX_SYSCALL)


def _other_threads_in_lane_code() -> bool:
    """Whether a thread other than this one runs code of ``byteor.lanes`` (a worker slice)."""
    me = threading.get_ident()
    for ident, frame in sys._current_frames().items():
        f = frame if ident != me else None
        while f is not None:
            if f"byteor{os.sep}lanes{os.sep}" in f.f_code.co_filename:
                return True
            f = f.f_back
    return False


def _drain(rx: bl.Consumer) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(bytes(rx.receive_nowait()))
        except bl.WouldBlock:
            return out


# -- receive -------------------------------------------------------------------------------


async def test_nowait_path_needs_no_thread(core_make_lane) -> None:
    lane = core_make_lane("events")
    tx, rx = lane.sender(), lane.receiver()
    tx.send(b"a")
    tx.send(b"b")
    assert bytes(await rx.receive_async()) == b"a"
    assert [bytes(m) for m in await rx.receive_batch_async(10)] == [b"b"]
    assert lane.statistics().consumers[0].waits == 0


async def test_heartbeat_keeps_ticking_while_receive_waits(core_make_lane, core_backing) -> None:
    """The loop is free while receive_async waits: a heartbeat task ticks 50 times, and only
    then does another thread send. A receive that blocked the loop would time out instead."""
    lane = core_make_lane("events", backing=core_backing)
    tx, rx = lane.sender(), lane.receiver()
    go = threading.Event()
    sender = threading.Thread(target=lambda: go.wait(5.0) and tx.send(b"late"))
    sender.start()
    ticks = 0
    ticks_at_receive = -1

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.001)
            ticks += 1
            if ticks == 50:
                go.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            message = await rx.receive_async(timeout=5.0)
            ticks_at_receive = ticks
            tg.cancel_scope.cancel()
    finally:
        go.set()
        sender.join()
    assert bytes(message) == b"late"
    assert ticks_at_receive >= 50
    # One wait, however many worker slices it took.
    assert lane.statistics().consumers[0].waits == 1


async def test_receive_async_gets_message_sent_later_by_another_thread(
    core_make_lane, core_backing
) -> None:
    lane = core_make_lane("events", backing=core_backing)
    tx, rx = lane.sender(), lane.receiver()
    asleep = _consumer_sleep_flag(lane, rx)

    def send_when_asleep() -> None:
        _until_sync(asleep)
        tx.send_batch([b"x1", b"x2", b"x3"])

    sender = threading.Thread(target=send_when_asleep)
    sender.start()
    try:
        first = bytes(await rx.receive_async(timeout=10.0))
    finally:
        sender.join()
    rest = [bytes(m) for m in await rx.receive_batch_async(10, timeout=10.0)]
    assert [first, *rest] == [b"x1", b"x2", b"x3"]
    assert not asleep()


async def test_receive_batch_async_waits_then_returns_views(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=16)
    tx, rx = lane.sender(), lane.receiver()
    asleep = _consumer_sleep_flag(lane, rx)
    async with anyio.create_task_group() as tg:
        result: list[list[bytes]] = []

        async def reader() -> None:
            batch = await rx.receive_batch_async(8, timeout=10.0)
            result.append([bytes(m) for m in batch])

        tg.start_soon(reader)
        await _until(asleep)
        tx.send_batch([b"%d" % i for i in range(5)])
    assert result == [[b"0", b"1", b"2", b"3", b"4"]]
    assert rx.position == 5


async def test_best_effort_consumer_async_counts_loss(core_make_lane) -> None:
    lane = core_make_lane("fanout", capacity=4)
    tx = lane.sender()
    rx = lane.receiver(policy="best_effort", start="latest")
    for i in range(10):
        tx.send(b"%d" % i)  # overruns rx: the ring keeps only the last 4
    got = [bytes(m) for m in await rx.receive_batch_async(10)]
    got += _drain(rx)
    assert got == [b"6", b"7", b"8", b"9"]
    assert rx.lost == 6


async def test_receive_async_timeout(core_make_lane) -> None:
    lane = core_make_lane("events")
    lane.sender()
    rx = lane.receiver()
    with pytest.raises(bl.LaneTimeout, match="within 0"):
        await rx.receive_async(timeout=0)
    started = time.monotonic()
    with pytest.raises(bl.LaneTimeout):
        await rx.receive_async(timeout=0.12)
    assert time.monotonic() - started >= 0.12
    with pytest.raises(bl.LaneTimeout):
        await rx.receive_batch_async(4, timeout=0.06)
    with pytest.raises(ValueError, match="timeout"):
        await rx.receive_async(timeout=-1)
    assert rx.position == 0


async def test_lane_closed_propagates_after_drain(core_make_lane) -> None:
    lane = core_make_lane("events")
    tx, rx = lane.sender(), lane.receiver()
    tx.send(b"last")
    tx.close()
    assert bytes(await rx.receive_async()) == b"last"
    with pytest.raises(bl.LaneClosed):
        await rx.receive_async()
    with pytest.raises(bl.LaneClosed):
        await rx.receive_batch_async(4)


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
async def test_close_wakes_a_waiting_receive(core_make_lane, batch: bool) -> None:
    lane = core_make_lane("events")
    tx, rx = lane.sender(), lane.receiver()
    asleep = _consumer_sleep_flag(lane, rx)
    outcome: list[BaseException] = []

    async def reader() -> None:
        try:
            if batch:
                await rx.receive_batch_async(4)
            else:
                await rx.receive_async()
        except bl.LaneError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await _until(asleep)
        started = time.monotonic()
        tx.close()
    assert [type(e) for e in outcome] == [bl.LaneClosed]
    # Woken by the close's futex wake; a missed wake would cost a 50 ms slice, not 30 s.
    assert time.monotonic() - started < 5.0


async def test_idle_async_receiver_costs_under_one_percent_of_a_core(core_make_lane) -> None:
    """Waiting in a worker thread costs about what a blocking receive does: the thread sleeps
    in futex slices and comes back to the loop only once a second."""
    lane = core_make_lane("events")
    lane.sender()
    rx = lane.receiver()
    with pytest.raises(bl.LaneTimeout):
        await rx.receive_async(timeout=0.2)  # warm: the worker thread exists from here on
    cpu0, wall0 = time.process_time(), time.monotonic()
    with pytest.raises(bl.LaneTimeout):
        await rx.receive_async(timeout=2.0)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    print(f"\nidle receive_async: {cpu * 1e3:.2f} ms CPU over {wall:.2f} s ({cpu / wall:.3%})")
    # 1% of the wall time, plus a fixed 5 ms for the three thread handoffs and the retries.
    assert cpu < 0.01 * wall + 0.005


# -- cancellation ----------------------------------------------------------------------------


@pytest.mark.parametrize("backing", ["memory", "shm"])
async def test_cancel_scope_then_receive_gets_message_once(core_make_lane, backing: str) -> None:
    lane = core_make_lane("events", backing=backing)
    tx, rx = lane.sender(), lane.receiver()
    asleep = _consumer_sleep_flag(lane, rx)
    got: list[bytes] = []
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def reader() -> None:
            with scope:
                got.append(bytes(await rx.receive_async()))

        tg.start_soon(reader)
        await _until(asleep)
        cancelled_at = time.monotonic()
        scope.cancel()
    assert time.monotonic() - cancelled_at < 1.0  # not waiting out a slice or more
    assert got == []
    assert scope.cancelled_caught
    assert rx.position == 0
    # The abandoned worker was told to stop: the sleep flag comes down and it leaves.
    await _until(lambda: not asleep() and not _other_threads_in_lane_code())
    tx.send(b"m1")
    await _until(lambda: not _other_threads_in_lane_code())
    assert rx.position == 0  # nothing left behind takes the message
    assert bytes(await rx.receive_async(timeout=5.0)) == b"m1"
    with pytest.raises(bl.WouldBlock):
        rx.receive_nowait()
    assert rx.position == 1


async def test_cancel_racing_a_delivery_takes_nothing(core_make_lane) -> None:
    """The message arrives and the wait is cancelled in the same loop step: the cancelled
    call must not have taken it, so the next receive gets it, once."""
    lane = core_make_lane("events")
    tx, rx = lane.sender(), lane.receiver()
    asleep = _consumer_sleep_flag(lane, rx)
    got: list[bytes] = []
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def reader() -> None:
            with scope:
                got.append(bytes(await rx.receive_async()))

        tg.start_soon(reader)
        await _until(asleep)
        tx.send(b"raced")
        scope.cancel()  # no await in between: the reader resumes only to be cancelled
    assert got == []
    await _until(lambda: not _other_threads_in_lane_code())
    assert rx.position == 0
    assert [bytes(await rx.receive_async(timeout=5.0))] == [b"raced"]
    assert _drain(rx) == []


async def test_asyncio_task_cancel_then_batch_receive_gets_every_message_once(
    core_make_lane,
) -> None:
    lane = core_make_lane("events", capacity=8)
    tx, rx = lane.sender(), lane.receiver()
    asleep = _consumer_sleep_flag(lane, rx)
    task = asyncio.ensure_future(rx.receive_batch_async(8))
    await _until(asleep)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    tx.send_batch([b"a", b"b", b"c"])
    await _until(lambda: not _other_threads_in_lane_code())
    assert rx.position == 0
    assert [bytes(m) for m in await rx.receive_batch_async(8, timeout=5.0)] == [b"a", b"b", b"c"]
    assert _drain(rx) == []


def test_kick_ends_a_worker_wait_at_once(core_make_lane, monkeypatch) -> None:
    """A cancelled wait's thread stops on the kick's futex wake, not at the end of its slice
    (30 s here, so nothing else can end it early)."""
    monkeypatch.setattr(_aio, "_SLICE", 30.0)
    lane = core_make_lane("events")
    lane.sender()
    rx = lane.receiver()
    kick = _aio._Kick()
    tid: list[int] = []

    def worker() -> None:
        tid.append(threading.get_native_id())
        _aio._consumer_wait(rx, rx.position, 30.0, kick)  # type: ignore[arg-type]

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    _until_sync(lambda: bool(tid) and _in_futex_wait(tid[0]))
    kicked = time.monotonic()
    kick()
    thread.join(5.0)
    assert not thread.is_alive()
    assert time.monotonic() - kicked < 5.0
    assert not _consumer_sleep_flag(lane, rx)()


# -- send ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backing", ["memory", "shm"])
async def test_send_async_waits_for_room(core_make_lane, backing: str) -> None:
    lane = core_make_lane("events", backing=backing, capacity=4)
    tx, rx = lane.sender(), lane.receiver()
    for i in range(4):
        await tx.send_async(b"%d" % i)
    producer_asleep = _producer_sleep_flag(lane)
    sent = anyio.Event()

    async def writer() -> None:
        await tx.send_async(b"4", timeout=10.0)
        sent.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await _until(producer_asleep)
        assert not sent.is_set()
        assert lane.statistics().full_waits == 1
        # Another thread frees one slot; its release wakes the sleeping producer.
        reader = threading.Thread(target=lambda: (rx.receive(), rx.release()))
        reader.start()
        await sent.wait()
        reader.join()
    assert rx.position == 1
    assert _drain(rx) == [b"1", b"2", b"3", b"4"]
    assert lane.statistics().published == 5
    assert lane.statistics().drops == 0  # waiting is not dropping


async def test_send_async_timeout_and_cancel_leave_nothing_sent(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=2)
    tx, rx = lane.sender(), lane.receiver()
    await tx.send_batch_async([b"a", b"b"])
    with pytest.raises(bl.LaneTimeout, match="stayed full"):
        await tx.send_async(b"late", timeout=0.06)
    with anyio.move_on_after(0.06) as scope:
        await tx.send_async(b"cancelled")
    assert scope.cancelled_caught
    assert tx.position == 2
    assert _drain(rx) == [b"a", b"b"]
    with pytest.raises(bl.MessageTooLarge):
        await tx.send_async(b"x" * 65)


async def test_send_batch_async_larger_than_the_lane(core_make_lane, core_backing) -> None:
    lane = core_make_lane("events", backing=core_backing, capacity=8)
    tx, rx = lane.sender(), lane.receiver()
    items = [b"m%03d" % i for i in range(100)]
    received: list[bytes] = []

    def reader() -> None:
        while len(received) < len(items):
            for m in rx.receive_batch(16, timeout=10.0):
                received.append(bytes(m))
        rx.release()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert await tx.send_batch_async(items, timeout=10.0) == 100
    finally:
        thread.join(10.0)
    assert received == items
    assert lane.statistics().drops == 0


async def test_send_batch_async_timeout_says_how_many(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=4)
    tx, rx = lane.sender(), lane.receiver()
    with pytest.raises(bl.LaneTimeout, match="after 4 of 6"):
        await tx.send_batch_async([b"%d" % i for i in range(6)], timeout=0.06)
    assert _drain(rx) == [b"0", b"1", b"2", b"3"]


async def test_same_loop_producer_and_consumer(core_make_lane) -> None:
    """Both ends on one loop: each await lets the other side run; every message once, in
    order, through a lane much smaller than the stream."""
    lane = core_make_lane("events", capacity=4)
    tx, rx = lane.sender(), lane.receiver()
    n = 300
    received: list[bytes] = []

    async def consume() -> None:
        while True:
            try:
                received.append(bytes(await rx.receive_async(timeout=10.0)))
            except bl.LaneClosed:
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for i in range(n):
            await tx.send_async(b"%d" % i, timeout=10.0)
        tx.close()
    assert received == [b"%d" % i for i in range(n)]


# -- trio ------------------------------------------------------------------------------------


def _trio_unusable() -> str | None:
    """Why anyio's trio backend cannot run here, or None."""
    try:
        import trio
    except ImportError:
        return "trio is not installed"
    need = None
    for req in metadata.requires("anyio") or []:
        m = re.match(r"trio\s*>=\s*([0-9.]+)", req)
        if m and "extra" in req:
            need = m.group(1)
    if need is None:
        return None

    def as_tuple(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:3])

    if as_tuple(trio.__version__) < as_tuple(need):
        return f"anyio's trio backend needs trio >= {need}; trio {trio.__version__} is installed"
    return None


@pytest.mark.skipif(_trio_unusable() is not None, reason=str(_trio_unusable()))
def test_under_trio(core_make_lane) -> None:
    lane = core_make_lane("events", capacity=4)
    tx, rx = lane.sender(), lane.receiver()
    asleep = _consumer_sleep_flag(lane, rx)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def cancelled_reader() -> None:
                with scope:
                    await rx.receive_async()

            tg.start_soon(cancelled_reader)
            await _until(asleep)
            scope.cancel()
        tg_result: list[bytes] = []
        async with anyio.create_task_group() as tg:

            async def reader() -> None:
                for _ in range(6):
                    tg_result.append(bytes(await rx.receive_async(timeout=10.0)))

            tg.start_soon(reader)
            await tx.send_batch_async([b"%d" % i for i in range(6)], timeout=10.0)
        got.extend(tg_result)
        return got

    assert anyio.run(main, backend="trio") == [b"%d" % i for i in range(6)]
