"""Router (fan-out by key or to all) and Merge (fan-in in a documented order) over lanes.

Neither keeps a queue of its own: a message is always in a lane (or in the caller's hands), so
memory stays bounded by the lanes' capacities.

Routing hash (reproducible in any language)
-------------------------------------------
A key becomes bytes, then its route is ``crc32(key_bytes) % len(senders)``:

* ``bytes``, ``bytearray``, ``memoryview``: the bytes as they are;
* ``str``: its UTF-8 encoding;
* ``int`` in ``[-2**63, 2**64)``: 8 bytes, little-endian, two's complement (what a C
  ``uint64_t``/``int64_t`` holds in memory on x86-64).

``crc32`` is CRC-32/ISO-HDLC, the checksum of zlib, gzip and PNG (polynomial ``0x04C11DB7``
reflected, initial value and final XOR ``0xFFFFFFFF``; ``crc32(b"123456789") == 0xCBF43926``),
taken as an unsigned 32-bit integer. Python's ``hash()`` is never used: it is randomized per
process, so two processes would route the same key differently.
"""

from __future__ import annotations

import bisect
import os
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from byteor.lanes._errors import LaneClosed, LaneTimeout, WouldBlock
from byteor.lanes._ring import BytesLike, Consumer, Producer

__all__ = [
    "Router",
    "RouterStatistics",
    "Merge",
    "MergeStatistics",
    "KeyLike",
    "key_bytes",
    "route_of",
]

KeyLike = bytes | bytearray | memoryview | str | int
RouterMode = Literal["hash", "broadcast"]
MergeOrder = Literal["round_robin", "ready"]

_U64 = (1 << 64) - 1


def key_bytes(key: KeyLike) -> bytes:
    """The bytes a key is hashed as (see the module docstring)."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, int) and not isinstance(key, bool):
        if not -(1 << 63) <= key <= _U64:
            raise ValueError(f"int key {key} does not fit 64 bits")
        return (key & _U64).to_bytes(8, "little")
    raise TypeError(f"a routing key is bytes, str or int, not {type(key).__name__}")


def route_of(key: KeyLike, routes: int) -> int:
    """The route of ``key`` among ``routes`` outputs: ``crc32(key_bytes(key)) % routes``."""
    if routes < 1:
        raise ValueError("routes must be >= 1")
    return zlib.crc32(key_bytes(key)) % routes


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    return time.monotonic() + timeout


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


@dataclass(frozen=True, slots=True)
class RouterStatistics:
    """What one :class:`Router` sent (counted by the router, in this process).

    Attributes:
        mode: ``"hash"`` or ``"broadcast"``.
        routed: messages delivered to each sender, by index (broadcast counts every copy).
        sent: messages handed to the router (a broadcast message counts once).
    """

    mode: str
    routed: tuple[int, ...]
    sent: int


class Router:
    """Fan-out: one message to one lane chosen by key hash, or to every lane.

    Args:
        senders: the producers to route to, in route order (route ``i`` is ``senders[i]``).
        mode: ``"hash"`` sends each message to ``senders[route_of(key, len(senders))]``;
            ``"broadcast"`` sends it to every sender, in index order.
        key: hash mode: a function giving a message's key when ``send`` gets none. Without
            either, the message bytes themselves are the key.

    Messages with equal keys go to the same lane, so their order is kept. A blocking send
    waits on the lane it goes to; in broadcast mode a full lane holds back the rest.
    """

    def __init__(
        self,
        senders: Sequence[Producer],
        mode: RouterMode = "hash",
        key: Callable[[Any], KeyLike] | None = None,
    ) -> None:
        if not senders:
            raise ValueError("a Router needs at least one sender")
        if mode not in ("hash", "broadcast"):
            raise ValueError(f"unknown router mode {mode!r}: use 'hash' or 'broadcast'")
        if key is not None and mode != "hash":
            raise ValueError("key= is for hash mode; broadcast sends every message to all")
        self._senders = tuple(senders)
        self._mode: RouterMode = mode
        self._key = key
        self._routed = [0] * len(self._senders)
        self._sent = 0

    @property
    def senders(self) -> tuple[Producer, ...]:
        return self._senders

    @property
    def mode(self) -> str:
        return self._mode

    def route(self, data: Any, key: KeyLike | None = None) -> int:
        """The index of the sender a message goes to in hash mode."""
        if key is None:
            key = self._key(data) if self._key is not None else bytes(data)
        return zlib.crc32(key_bytes(key)) % len(self._senders)

    def send(
        self, data: BytesLike, key: KeyLike | None = None, timeout: float | None = None
    ) -> None:
        """Send one message to its route (hash) or to every sender (broadcast).

        ``timeout`` bounds the whole call. A broadcast that times out has reached the senders
        before the full one (the :class:`LaneTimeout` message names them) and no others.
        """
        if self._mode == "hash":
            r = self.route(data, key)
            self._senders[r].send(data, timeout)
            self._routed[r] += 1
        else:
            if key is not None:
                raise ValueError("broadcast ignores keys; send(data) without key=")
            deadline = _deadline(timeout)
            for r, tx in enumerate(self._senders):
                try:
                    tx.send(data, _remaining(deadline))
                except LaneTimeout as exc:
                    raise LaneTimeout(
                        f"broadcast timed out at route {r}; routes 0..{r - 1} have the "
                        f"message: {exc}"
                    ) from exc
                self._routed[r] += 1
        self._sent += 1

    def send_batch(
        self,
        items: Sequence[BytesLike] | npt.NDArray[Any],
        keys: Sequence[KeyLike] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Send many messages (bytes-likes or a numpy record array); returns the count.

        Hash mode splits the batch by route, keeping the order within each route, and sends
        the routes' parts one after another in route order. ``keys`` (one per item) overrides
        the router's key function. ``timeout`` bounds the whole call.
        """
        n = len(items)
        if keys is not None and len(keys) != n:
            raise ValueError(f"{len(keys)} keys for {n} items")
        if n == 0:
            return 0
        deadline = _deadline(timeout)
        if self._mode == "broadcast":
            if keys is not None:
                raise ValueError("broadcast ignores keys; send_batch(items) without keys=")
            for r, tx in enumerate(self._senders):
                tx.send_batch(items, _remaining(deadline))
                self._routed[r] += n
            self._sent += n
            return n
        if keys is None:
            routes = [self.route(item) for item in items]
        else:
            nroutes = len(self._senders)
            routes = [zlib.crc32(key_bytes(k)) % nroutes for k in keys]
        if isinstance(items, np.ndarray):
            by_route = np.asarray(routes, dtype=np.int64)
            for r, tx in enumerate(self._senders):
                part = items[by_route == r]
                if len(part):
                    tx.send_batch(part, _remaining(deadline))
                    self._routed[r] += len(part)
        else:
            parts: list[list[BytesLike]] = [[] for _ in self._senders]
            for item, r in zip(items, routes, strict=True):
                parts[r].append(item)
            for r, (tx, part) in enumerate(zip(self._senders, parts, strict=True)):
                if part:
                    tx.send_batch(part, _remaining(deadline))
                    self._routed[r] += len(part)
        self._sent += n
        return n

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(mode=self._mode, routed=tuple(self._routed), sent=self._sent)

    def close(self) -> None:
        """Close every sender: their consumers get :class:`LaneClosed` after draining."""
        for tx in self._senders:
            tx.close()


@dataclass(frozen=True, slots=True)
class MergeStatistics:
    """What one :class:`Merge` received (counted by the merge, in this process).

    Attributes:
        order: ``"round_robin"`` or ``"ready"``.
        received: messages returned from each input, by index.
        live: the inputs still in the rotation (not closed and drained), in index order.
    """

    order: str
    received: tuple[int, ...]
    live: tuple[int, ...]


class Merge:
    """Fan-in: receive from several lanes as one stream of ``(input_index, message)``.

    Orders:

    * ``"round_robin"`` (deterministic, whatever the timing): exactly one message from input
      0, then one from input 1, ..., then input 0 again, waiting on each input in turn until
      it has a message. An input that is closed and drained (its receiver raised
      :class:`LaneClosed`) leaves the rotation at that point and the turn passes to the next
      live input. So for given input contents the output sequence is always the same: the
      inputs interleaved one by one, the longer ones' tails in rotation after the shorter
      ones run out. A :class:`LaneTimeout` leaves the turn where it was: the next call waits
      on the same input. An input that never receives anything stalls the merge; use
      ``"ready"`` for inputs of unbalanced rates.
    * ``"ready"`` (fair, *not* deterministic): returns a message from whichever input has
      one, scanning from the input after the one last served and wrapping around, so a busy
      input cannot starve the others. With nothing available it spins, yields, then polls
      with sleeps doubling from 50 us up to ``max_sleep`` (there is no futex wake-up across
      several lanes). So a merge that has been idle for a while answers up to ``max_sleep``
      late, and an idle merge costs about 0.4% of a core at the default 50 ms (each sleep
      costs ~30 us of CPU on a VM); lower ``max_sleep`` trades CPU for latency.

    Both orders raise :class:`LaneClosed` once every input is closed and drained. A message is
    what its receiver returned: a view valid until the next message *from the same input* is
    received. The merge holds nothing itself.

    Args:
        receivers: the consumers to merge; ``input_index`` is the position in this sequence.
        order: ``"round_robin"`` or ``"ready"`` (above).
        max_sleep: ``"ready"`` only: the longest poll interval while idle, in seconds.
    """

    def __init__(
        self,
        receivers: Sequence[Consumer],
        order: MergeOrder = "round_robin",
        *,
        max_sleep: float = 0.05,
    ) -> None:
        if not receivers:
            raise ValueError("a Merge needs at least one receiver")
        if order not in ("round_robin", "ready"):
            raise ValueError(f"unknown merge order {order!r}: use 'round_robin' or 'ready'")
        if max_sleep <= 0:
            raise ValueError("max_sleep must be > 0")
        self._receivers = tuple(receivers)
        self._order: MergeOrder = order
        self._max_sleep = max_sleep
        # Input indexes still in the rotation, ascending; the turn is the first live input at
        # or after ``_next`` (an input index, so inputs leaving never shift it).
        self._live: list[int] = list(range(len(self._receivers)))
        self._next = 0
        self._received = [0] * len(self._receivers)

    @property
    def receivers(self) -> tuple[Consumer, ...]:
        return self._receivers

    @property
    def order(self) -> str:
        return self._order

    @property
    def live(self) -> tuple[int, ...]:
        """The inputs not yet closed and drained."""
        return tuple(self._live)

    def _turn_pos(self) -> int:
        """Position in ``_live`` of the input whose turn it is (the first live one at or
        after ``_next``, wrapping around)."""
        pos = bisect.bisect_left(self._live, self._next)
        return 0 if pos == len(self._live) else pos

    def _drop(self, index: int) -> None:
        # A closed and drained input leaves; the turn passes to the live input after it.
        self._live.remove(index)
        self._next = index + 1

    def _all_closed(self) -> LaneClosed:
        return LaneClosed(f"all {len(self._receivers)} merged inputs are closed and drained")

    def _served(self, index: int, message: memoryview | bytes) -> tuple[int, memoryview | bytes]:
        self._received[index] += 1
        self._next = index + 1
        return index, message

    def receive(self, timeout: float | None = None) -> tuple[int, memoryview | bytes]:
        """The next ``(input_index, message)`` in this merge's order.

        Raises :class:`LaneTimeout` after ``timeout`` seconds (the whole call) and
        :class:`LaneClosed` once every input is closed and drained.
        """
        deadline = _deadline(timeout)
        if self._order == "ready":
            return self._receive_ready(deadline)
        while self._live:
            index = self._live[self._turn_pos()]
            try:
                message = self._receivers[index].receive(_remaining(deadline))
            except LaneClosed:
                self._drop(index)
                continue
            return self._served(index, message)
        raise self._all_closed()

    def receive_nowait(self) -> tuple[int, memoryview | bytes]:
        """Like :meth:`receive` without waiting: raises :class:`WouldBlock` when the next
        message in this order is not there yet (round-robin: the input whose turn it is)."""
        if self._order == "ready":
            got = self._scan()
            if got is None:
                if not self._live:
                    raise self._all_closed()
                raise WouldBlock("no merged input has a message")
            return got
        while self._live:
            index = self._live[self._turn_pos()]
            try:
                message = self._receivers[index].receive_nowait()
            except LaneClosed:
                self._drop(index)
                continue
            return self._served(index, message)
        raise self._all_closed()

    def _scan(self) -> tuple[int, memoryview | bytes] | None:
        """One pass over the live inputs from the turn on; the first message found, if any."""
        pos = self._turn_pos()
        for index in self._live[pos:] + self._live[:pos]:
            try:
                message = self._receivers[index].receive_nowait()
            except WouldBlock:
                continue
            except LaneClosed:
                self._live.remove(index)
                continue
            return self._served(index, message)
        return None

    def _receive_ready(self, deadline: float | None) -> tuple[int, memoryview | bytes]:
        spins, yields = 50, 200
        sleep_s = 50e-6
        n = 0
        while True:
            got = self._scan()
            if got is not None:
                return got
            if not self._live:
                raise self._all_closed()
            if deadline is not None and time.monotonic() >= deadline:
                raise LaneTimeout(f"no merged input ({len(self._live)} live) had a message in time")
            n += 1
            if n <= spins:
                continue
            if n <= spins + yields:
                os.sched_yield()
                continue
            pause = sleep_s
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            sleep_s = min(sleep_s * 2, self._max_sleep)

    def __iter__(self) -> Iterator[tuple[int, memoryview | bytes]]:
        """Every ``(input_index, message)`` until all inputs are closed and drained."""
        while True:
            try:
                yield self.receive()
            except LaneClosed:
                return

    def statistics(self) -> MergeStatistics:
        return MergeStatistics(
            order=self._order, received=tuple(self._received), live=tuple(self._live)
        )

    def close(self) -> None:
        """Close every receiver."""
        for rx in self._receivers:
            rx.close()
