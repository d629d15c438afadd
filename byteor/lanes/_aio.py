"""asyncio (and trio, through anyio) edges of the lanes: await without blocking the loop.

Theory of operation
-------------------
An async call never waits on the event loop's thread. It goes through three steps:

1. a checkpoint (``anyio.lowlevel.checkpoint``), then the non-blocking call. The checkpoint
   comes *before* the attempt, so a task looping on ``receive_async`` lets other tasks run and
   a cancellation there cannot cost a message;
2. a few cooperative retries, each after ``await anyio.sleep(0)``: a peer task on the same loop
   (or a fast peer process) usually answers within a loop iteration, and no thread is involved;
3. sleeping in a worker thread (``anyio.to_thread.run_sync(..., abandon_on_cancel=True)``)
   on the lane's futex, in slices of at most ``_SLICE`` seconds (the worker re-checks between
   slices, so a missed wake costs at most one slice, as in the blocking calls), and returning
   to the loop's thread to retry the non-blocking call when woken, or after ``_CALL`` seconds
   at most. A thread handoff costs far more than a futex timeout (~0.6 ms against ~0.1 ms of
   CPU on a small VM), so an idle async receiver pays about what a blocking one does.

The worker thread only *waits*: it raises the sleep flag, re-checks, sleeps on the futex and
lowers the flag, exactly as a blocking ``receive``/``send`` does when it sleeps (see
``_platform``), and changes nothing else. Every change of endpoint state (taking a message,
publishing, refreshing the producer's limit) happens on the loop's thread in a synchronous
call with no ``await`` inside. So a cancellation, which can only land on an ``await``, leaves
the endpoint exactly as it was: no message is taken and lost, none is skipped. A cancelled
wait's thread is abandoned and told to stop (a flag, then a futex wake), so it ends in
microseconds (at most one slice, if the kick races with its going to sleep) instead of
lingering for the rest of its call.

The worker does not call ``Consumer._wait_for``/``Producer._wait_room``: those cannot be told
to stop (an abandoned one would sleep on until its deadline), they spin and yield before
sleeping on every call (at 50 ms calls, ~5% of a core), and the producer's one refreshes its
limit, a store (``claimed``) that an abandoned thread could make after the loop's thread had
moved on, which would void the overrun consumers' intact-slot proof.

Waits are counted once per call that had to sleep (``waits``, ``full_waits``), as for the
blocking calls, not once per worker call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread

from byteor.lanes._errors import LaneClosed, LaneTimeout, MessageTooLarge, WouldBlock
from byteor.lanes._platform import futex_wait, futex_wake
from byteor.lanes._segment import _C_WAITS, _P_FULL_WAITS, _P_SLEEPING, bump

if TYPE_CHECKING:
    import numpy.typing as npt

    from byteor.kernel.barrier import SeqBarrier
    from byteor.lanes._segment import Segment

__all__ = ["AsyncProducerMixin", "AsyncConsumerMixin"]

# The longest single futex sleep of a worker thread. It bounds how late a missed wake is
# noticed and how long a worker outlives a cancellation that raced with its going to sleep.
_SLICE: Final = 0.05
# The longest worker call before the loop's thread looks again (and returns a thread to the
# pool) when nothing happens.
_CALL: Final = 1.0
# ``await anyio.sleep(0)`` retries before a worker thread is involved.
_COOPERATIVE_RETRIES: Final = 3

_BytesLike = bytes | bytearray | memoryview


class _ConsumerCore(Protocol):
    """What the async receive needs from :class:`~byteor.lanes.Consumer`."""

    @property
    def _q(self) -> memoryview: ...
    @property
    def _buf(self) -> memoryview: ...
    @property
    def _seg(self) -> Segment: ...
    @property
    def _pos(self) -> int: ...
    @property
    def _base(self) -> int: ...
    @property
    def _bw(self) -> int: ...
    @property
    def _barrier(self) -> SeqBarrier: ...
    @property
    def _sleep_byte(self) -> int: ...
    def _available(self) -> int: ...
    def _closed_and_drained(self, t: int) -> bool: ...
    def receive_nowait(self) -> memoryview | bytes: ...
    def receive_batch(
        self, max_count: int, timeout: float | None = None
    ) -> list[memoryview | bytes]: ...
    def release(self) -> None: ...


class _ProducerCore(Protocol):
    """What the async send needs from :class:`~byteor.lanes.Producer`."""

    @property
    def _q(self) -> memoryview: ...
    @property
    def _seg(self) -> Segment: ...
    @property
    def _head(self) -> int: ...
    @property
    def _cap(self) -> int: ...
    @property
    def _slot(self) -> int: ...
    @property
    def _gating(self) -> tuple[int, ...]: ...
    @property
    def _closed(self) -> bool: ...
    def _room(self) -> int: ...
    def send(self, data: _BytesLike, timeout: float | None = None) -> None: ...
    def _publish_chunk(
        self, items: Sequence[_BytesLike] | npt.NDArray[Any], start: int, count: int
    ) -> int: ...


class _Kick:
    """Tells one worker wait to stop: a flag it checks, and the futex word it sleeps on."""

    __slots__ = ("stop", "address")

    def __init__(self) -> None:
        self.stop = False
        self.address = 0

    def __call__(self) -> None:
        self.stop = True
        if self.address:
            futex_wake(self.address)


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    return time.monotonic() + timeout


def _next_call(deadline: float | None) -> float:
    """How long the next worker call may wait, or 0.0 when the deadline has passed."""
    if deadline is None:
        return _CALL
    return max(0.0, min(_CALL, deadline - time.monotonic()))


async def _wait_in_thread(wait_fn: Any, *args: Any) -> None:
    """Run one worker wait; on cancellation abandon it and make it stop at once."""
    kick = _Kick()
    try:
        await anyio.to_thread.run_sync(wait_fn, *args, kick, abandon_on_cancel=True)
    except BaseException:
        kick()
        raise


# -- worker-thread waits: wait only, change nothing ------------------------------------------


def _consumer_wait(rx: _ConsumerCore, t: int, budget: float, kick: _Kick) -> None:
    """Sleep until sequence ``t`` may be readable, the lane closes, a kick, or ``budget``
    seconds have passed, in futex slices of at most ``_SLICE``."""
    q = rx._q
    buf = rx._buf
    byte = rx._sleep_byte
    end = time.monotonic() + budget
    while not kick.stop:
        word = rx._bw if rx._bw >= 0 else rx._barrier.slowest_word()
        address = rx._seg.futex_address(word)
        kick.address = address
        seen = q[word]
        buf[byte] = 1
        try:
            if kick.stop or rx._available() > t or rx._closed_and_drained(t):
                return
            remaining = end - time.monotonic()
            if remaining <= 0.0:
                return
            futex_wait(address, seen, min(_SLICE, remaining))
        finally:
            buf[byte] = 0


def _producer_wait(tx: _ProducerCore, target: int, budget: float, kick: _Kick) -> None:
    """Sleep until every gating consumer lets sequence ``target - 1`` be written, a kick, or
    ``budget`` seconds have passed, in futex slices of at most ``_SLICE``. The gating set may
    be stale (a consumer joined or left): the loop's thread refreshes it after each call, and
    a leaving consumer wakes its cursor's sleepers."""
    q = tx._q
    sleeping = tx._seg.p + _P_SLEEPING
    end = time.monotonic() + budget
    while not kick.stop:
        gating = tx._gating
        if not gating:
            return
        word = min(gating, key=q.__getitem__)
        address = tx._seg.futex_address(word)
        kick.address = address
        seen = q[word]
        q[sleeping] = 1
        try:
            if kick.stop or min([q[w] for w in gating]) + tx._cap >= target:
                return
            remaining = end - time.monotonic()
            if remaining <= 0.0:
                return
            futex_wait(address, seen, min(_SLICE, remaining))
        finally:
            q[sleeping] = 0


# -- the mixins -------------------------------------------------------------------------------


class AsyncProducerMixin:
    """``await tx.send_async(data)`` and ``await tx.send_batch_async(items)``."""

    async def send_async(
        self: _ProducerCore, data: _BytesLike, timeout: float | None = None
    ) -> None:
        """Publish one message, awaiting room (at most ``timeout`` seconds) without blocking
        the event loop. Raises :class:`LaneTimeout` when the lane stays full that long.

        Cancelling the await before it returns leaves the message unsent.
        """
        deadline = _deadline(timeout)
        if len(data) > self._slot:
            raise MessageTooLarge(
                f"message of {len(data)} bytes does not fit lane {self._seg.name!r} "
                f"(slot_bytes={self._slot})"
            )
        await anyio.lowlevel.checkpoint()
        if self._room() > 0:
            self.send(data)
            return
        for _ in range(_COOPERATIVE_RETRIES):
            await anyio.sleep(0)
            if self._room() > 0:
                self.send(data)
                return
        if self._closed:
            raise LaneClosed(f"lane {self._seg.name!r}: this sender is closed")
        bump(self._q, self._seg.p + _P_FULL_WAITS)
        while True:
            budget = _next_call(deadline)
            if budget <= 0.0:
                raise LaneTimeout(
                    f"lane {self._seg.name!r} stayed full for {timeout} s: its slowest "
                    "consumer is not keeping up (see `byteor snapshot`)"
                )
            await _wait_in_thread(_producer_wait, self, self._head + 1, budget)
            if self._room() > 0:
                self.send(data)
                return

    async def send_batch_async(
        self: _ProducerCore,
        items: Sequence[_BytesLike] | npt.NDArray[Any],
        timeout: float | None = None,
    ) -> int:
        """Publish every item (bytes-likes or a numpy record array) as room appears, without
        blocking the event loop; returns the count.

        ``timeout`` bounds the whole call. On :class:`LaneTimeout` or cancellation the items
        published so far stay published (they are the first ones, in order) and the rest are
        not sent; the timeout's message says how many were sent.
        """
        deadline = _deadline(timeout)
        total = len(items)
        done = 0
        await anyio.lowlevel.checkpoint()
        retries = 0
        counted = False
        while done < total:
            room = self._room()
            if room > 0:
                done += self._publish_chunk(items, done, min(room, total - done))
                retries = 0
                continue
            if retries < _COOPERATIVE_RETRIES:
                retries += 1
                await anyio.sleep(0)
                continue
            if not counted:
                bump(self._q, self._seg.p + _P_FULL_WAITS)
                counted = True
            budget = _next_call(deadline)
            if budget <= 0.0:
                raise LaneTimeout(
                    f"lane {self._seg.name!r} stayed full for {timeout} s after "
                    f"{done} of {total} messages"
                )
            await _wait_in_thread(_producer_wait, self, self._head + 1, budget)
        return total


class AsyncConsumerMixin:
    """``await rx.receive_async()`` and ``await rx.receive_batch_async(n)``."""

    async def receive_async(
        self: _ConsumerCore, timeout: float | None = None
    ) -> memoryview | bytes:
        """The next message, awaited without blocking the event loop.

        Same contract as :meth:`receive`: a zero-copy view valid until the next receive or
        ``release()`` (a checked copy for overrun consumers); :class:`LaneTimeout` after
        ``timeout`` seconds; :class:`LaneClosed` once the producer closed and everything was
        read. Cancelling the await before it returns takes no message: the next receive gets
        the one this call would have returned.
        """
        deadline = _deadline(timeout)
        await anyio.lowlevel.checkpoint()
        try:
            return self.receive_nowait()
        except WouldBlock:
            pass
        for _ in range(_COOPERATIVE_RETRIES):
            await anyio.sleep(0)
            try:
                return self.receive_nowait()
            except WouldBlock:
                pass
        bump(self._q, self._base + _C_WAITS)
        while True:
            budget = _next_call(deadline)
            if budget <= 0.0:
                raise LaneTimeout(f"nothing arrived on lane {self._seg.name!r} within {timeout} s")
            await _wait_in_thread(_consumer_wait, self, self._pos, budget)
            try:
                return self.receive_nowait()
            except WouldBlock:
                pass

    async def receive_batch_async(
        self: _ConsumerCore, max_count: int, timeout: float | None = None
    ) -> list[memoryview | bytes]:
        """At least one and at most ``max_count`` messages, awaited without blocking the event
        loop. Same contract as :meth:`receive_batch`; cancelling takes no message."""
        if max_count < 1:
            raise ValueError("receive_batch_async needs max_count >= 1")
        deadline = _deadline(timeout)
        await anyio.lowlevel.checkpoint()
        batch = _try_batch(self, max_count)
        if batch is not None:
            return batch
        for _ in range(_COOPERATIVE_RETRIES):
            await anyio.sleep(0)
            batch = _try_batch(self, max_count)
            if batch is not None:
                return batch
        bump(self._q, self._base + _C_WAITS)
        while True:
            budget = _next_call(deadline)
            if budget <= 0.0:
                raise LaneTimeout(f"nothing arrived on lane {self._seg.name!r} within {timeout} s")
            await _wait_in_thread(_consumer_wait, self, self._pos, budget)
            batch = _try_batch(self, max_count)
            if batch is not None:
                return batch


def _try_batch(rx: _ConsumerCore, max_count: int) -> list[memoryview | bytes] | None:
    """A batch if one is readable now; else release what is held (so the producer is never
    held back by a waiting consumer) and return None. Raises :class:`LaneClosed`."""
    t = rx._pos
    if rx._available() > t:
        return rx.receive_batch(max_count)  # does not wait: sequence t is readable
    rx.release()
    if rx._closed_and_drained(t):
        raise LaneClosed(f"lane {rx._seg.name!r} is closed and fully read")
    return None
