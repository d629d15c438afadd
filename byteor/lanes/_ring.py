"""The ring: one producer, any number of consumers, over a mapped segment.

Theory of operation
-------------------
Every lane kind is the same ring. Sequence ``s`` lives in slot ``s & (capacity - 1)``: its
descriptor (length, flags, seq) and its payload. The producer's cursor counts what it has
published; each consumer's cursor counts what it has released. Both only grow.

* The producer writes payload, then descriptor, then stores its cursor (publish). It may write
  sequence ``s`` only when every *gating* consumer has released ``s - capacity``. It caches
  ``min(gating cursors) + capacity`` and looks at the consumers again only when it reaches
  its limit, so the fast path reads no consumer line at all. With no gating consumer it runs
  free. Before writing, it *announces* in the ``claimed`` word how far it may write without
  looking again: a short window (at most 256 sequences, or a whole batch) and never beyond
  what the gating consumers allow. Every slot it writes is below ``claimed``.
* A gating consumer reads the slot in place (a zero-copy view) and releases it by storing its
  cursor when it asks for the next one. It caches what is available the same way.
* An *overrun* consumer never holds the producer back. Slot ``s`` is intact while
  ``claimed <= s + capacity``. It copies the slot, then re-reads ``claimed``: if the producer
  may have been writing ``s + capacity`` the copy is discarded and counted as lost. That is
  how it learns its exact loss count. (A live writer thus keeps up to one window of the
  oldest entries in doubt; a closed or dead writer none.)
* A consumer may wait on other consumers instead of the producer (``after``): that is the
  ``SeqBarrier`` of SequencedSlots, and it is how stages of one ring run in order.

Registration (joining, leaving) takes a lock (``flock`` on the segment) and bumps a
registration epoch; the hot paths never take it. A consumer that joins behind the point
the producer may already be writing towards reads by copying and checking, like an overrun
consumer, until the producer has seen it (``epoch_seen``); then it switches to zero copy.

See ``_platform`` for the memory-ordering assumptions and how sleeping works.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
import weakref
from array import array
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from byteor.kernel.barrier import SeqBarrier
from byteor.lanes import layout as L
from byteor.lanes._aio import AsyncConsumerMixin, AsyncProducerMixin
from byteor.lanes._errors import (
    ConsumerError,
    CorruptSlot,
    LaneClosed,
    LaneTimeout,
    MessageTooLarge,
    WouldBlock,
)
from byteor.lanes._platform import futex_wait, futex_wake, pid_alive, process_start_time
from byteor.lanes._segment import (
    _C_CURSOR,
    _C_EPOCH,
    _C_LOST,
    _C_WAITS,
    _P_CLAIMED,
    _P_CLOSED_PID,
    _P_CONSUMER_SLEEPING,
    _P_CURSOR,
    _P_DROPS,
    _P_EPOCH_SEEN,
    _P_FULL_WAITS,
    _P_SLEEPING,
    _P_START_TIME,
    Segment,
    bump,
)
from byteor.lanes._wait import DEFAULT_WAIT, WaitStrategy

__all__ = ["Producer", "Consumer", "BytesLike"]

BytesLike = bytes | bytearray | memoryview

_LEN_MASK: Final = 0xFFFFFFFF
# From this many descriptors up, numpy stores a chunk's equal lengths and its sequence numbers
# (one call, ~1 ns a slot here) instead of word stores that convert each Python int (~7 ns a
# length, ~16 a sequence number from a range); below it numpy's fixed cost is the larger.
_NUMPY_DESCRIPTORS: Final = 16
# Rows joined at a time before their strided copy into the slots: small enough to stay cached.
_ROWS_PIECE_BYTES: Final = 128 * 1024
# From this many views up, receive_batch makes them with the garbage collector paused.
_GC_QUIET_VIEWS: Final = 64


def _all_equal(lengths: list[int]) -> bool:
    # list.count compares by identity first, and lengths below 257 are one cached int each:
    # a C-speed pass, where min() or max() compare each pair in Python.
    return lengths.count(lengths[0]) == len(lengths)


def _write_rows(
    buf: Any, off: int, stride: int, items: Sequence[BytesLike], lengths: list[int], longest: int
) -> None:
    """Write ``items`` at ``off``, ``off + stride``, ... (their ``lengths`` and the longest known).

    Eight or more go with strided numpy copies of rows as long as the longest: equal lengths
    from one join, others padded by numpy from a list of ``bytes`` (what lies past a message's
    length is not part of it). The rows go in pieces of about ``_ROWS_PIECE_BYTES``, so the
    joined piece is still in the cache when it is copied out (1 KiB rows: ~114 -> ~76 ns a row
    here). Fewer, or bytes-likes numpy will not pad, go one by one.
    """
    count = len(lengths)
    done = 0
    if count >= 8 and longest:
        equal = lengths.count(longest) == count
        per = max(8, _ROWS_PIECE_BYTES // longest)
        with contextlib.suppress(ValueError, TypeError):  # a bytearray or memoryview
            while done < count:
                piece = items[done : done + per]
                rows: npt.NDArray[np.uint8]
                if equal:
                    rows = np.frombuffer(b"".join(piece), dtype=np.uint8)
                else:
                    rows = np.array(piece, dtype=f"S{longest}").view(np.uint8)
                n = len(piece)
                dest: npt.NDArray[np.uint8] = np.ndarray(
                    shape=(n, longest),
                    dtype=np.uint8,
                    buffer=buf,
                    offset=off + done * stride,
                    strides=(stride, 1),
                )
                dest[...] = rows.reshape(n, longest)
                done += n
    if done:
        if done == count:
            return
        off += done * stride
        items, lengths = items[done:], lengths[done:]
    for data, n in zip(items, lengths, strict=True):
        buf[off : off + n] = data
        off += stride


def _store_lengths(
    q: memoryview, d: int, ndesc: npt.NDArray[np.uint64], i: int, lengths: list[int], equal: bool
) -> None:
    """Store the length words of slots ``i, i + 1, ...``, whose descriptors start at word ``d``
    of ``q`` (``ndesc``: the same descriptor table as a (capacity, 2) array)."""
    count = len(lengths)
    if equal and count >= _NUMPY_DESCRIPTORS:
        ndesc[i : i + count, 0] = lengths[0]
    else:
        # Strided stores through the word view: cheaper than numpy for short chunks.
        q[d : d + 2 * count : 2] = array("Q", lengths)


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    return time.monotonic() + timeout


class Producer(AsyncProducerMixin):
    """The single writer of a lane. Obtain one with ``lane.sender()``."""

    def __init__(self, seg: Segment, wait: WaitStrategy = DEFAULT_WAIT) -> None:
        self._seg = seg
        self._wait = wait
        q = seg.q
        p = seg.p
        with seg.registration_lock():
            closed_pid = q[p + _P_CLOSED_PID]
            owner = closed_pid >> 32
            if owner and owner != os.getpid() and pid_alive(owner, q[p + _P_START_TIME]):
                raise ConsumerError(
                    f"lane {seg.name!r} already has a live producer (pid {owner}): "
                    "a lane has exactly one producer; merge several lanes for more"
                )
            q[p + _P_START_TIME] = process_start_time(os.getpid())
            q[p + _P_CLOSED_PID] = os.getpid() << 32  # also reopens a closed lane
        self._q = q
        self._buf = seg.buf
        self._mask = seg.mask
        self._cap = seg.capacity
        self._slot = seg.slot_bytes
        self._pay = seg.payload_offset
        self._desc = seg.desc_word
        self._payloads = seg.payloads
        self._descriptor_words = seg.descriptors
        self._cur = p + _P_CURSOR
        self._sleep_word = p + _P_CONSUMER_SLEEPING
        self._extra_sleep_words = tuple(
            p + _P_CONSUMER_SLEEPING + k for k in range(1, (seg.max_consumers + 7) // 8)
        )
        self._head: int = q[self._cur]
        # Whatever a dead predecessor announced, nothing is being written now.
        q[p + _P_CLAIMED] = self._head
        self._window = max(1, min(256, seg.capacity // 4))
        self._epoch_word = L.SegmentHeader.header_crc.offset // 8
        self._limit = 0
        self._epoch = -1
        self._gating: tuple[int, ...] = ()
        self._closed = False
        self._ndesc: npt.NDArray[np.uint64] | None = None

    # -- identity -------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The next sequence this producer will publish (= messages published so far)."""
        return self._head

    # -- gating ---------------------------------------------------------------------------

    def _refresh(self, need: int = 1) -> bool:
        """Look at the consumers again; return whether the next sequence may be written.

        When fewer than ``need`` sequences may be written, consumers of this process are
        asked to publish the releases they hold back first.
        """
        if self._closed:
            raise LaneClosed(f"lane {self._seg.name!r}: this sender is closed")
        seg = self._seg
        q = self._q
        epoch = q[self._epoch_word] >> 32  # registration_epoch: high half of header word 8
        if epoch != self._epoch:
            self._gating = tuple(
                seg.c(i) + _C_CURSOR
                for i in range(seg.max_consumers)
                if seg.consumer_state(i) == L.STATE_GATING
            )
            self._epoch = epoch
        h = self._head
        want = h + max(self._window, need)
        if self._gating:
            gate = min([q[w] for w in self._gating]) + self._cap
            if h + need > gate and _publish_local_releases(seg.identity):
                gate = min([q[w] for w in self._gating]) + self._cap
            limit = min(gate, want)
        else:
            # Free running: at most half a ring ahead, so a consumer that joins within half a
            # ring of the head is safe before this producer has seen it (see Lane.receiver).
            limit = min(want, h + max(1, self._cap // 2))
        self._limit = limit
        # The announcement: stored before any write below it (x86 keeps stores in order).
        q[seg.p + _P_CLAIMED] = limit
        q[seg.p + _P_EPOCH_SEEN] = epoch
        return h < limit

    def _slowest_word(self) -> int:
        q = self._q
        return min(self._gating, key=lambda w: q[w]) if self._gating else self._cur

    def _wait_room(self, need: int, deadline: float | None) -> bool:
        """Wait until ``need`` more sequences may be written; False on timeout."""
        target = self._head + need

        def ready() -> bool:
            return self._refresh() and target <= self._limit

        if ready():
            return True
        q = self._q
        bump(q, self._seg.p + _P_FULL_WAITS)
        seg = self._seg
        sleeping = seg.p + _P_SLEEPING

        def sleep(slice_s: float) -> None:
            word = self._slowest_word()
            seen = q[word]
            q[sleeping] = 1
            try:
                if not ready():
                    futex_wait(seg.futex_address(word), seen, slice_s)
            finally:
                q[sleeping] = 0

        return self._wait.wait(ready, sleep, deadline)

    def _wake(self) -> None:
        # Consumers sleep on the producer cursor; waking is only attempted when one says so.
        futex_wake(self._seg.futex_address(self._cur))

    def _sleepers(self) -> bool:
        q = self._q
        if q[self._sleep_word]:
            return True
        return any(q[w] for w in self._extra_sleep_words)

    # -- per message ----------------------------------------------------------------------

    def send(self, data: BytesLike, timeout: float | None = None) -> None:
        """Publish one message, waiting for room (at most ``timeout`` seconds)."""
        h = self._head
        if h >= self._limit and not self._refresh() and not self._wait_room(1, _deadline(timeout)):
            raise LaneTimeout(
                f"lane {self._seg.name!r} stayed full for {timeout} s: its slowest "
                "consumer is not keeping up (see `byteor snapshot`)"
            )
        n = len(data)
        if n > self._slot:
            raise MessageTooLarge(
                f"message of {n} bytes does not fit lane {self._seg.name!r} "
                f"(slot_bytes={self._slot})"
            )
        i = h & self._mask
        off = i * self._slot
        self._payloads[off : off + n] = data
        d = i + i
        words = self._descriptor_words
        words[d] = n
        words[d + 1] = h
        self._head = h = h + 1
        q = self._q
        q[self._cur] = h
        if (q[self._sleep_word] or self._extra_sleep_words) and self._sleepers():
            self._wake()

    def send_nowait(self, data: BytesLike) -> None:
        """Publish one message or raise :class:`WouldBlock` if the lane is full."""
        if self._head >= self._limit and not self._refresh():
            bump(self._q, self._seg.p + _P_DROPS)
            raise WouldBlock(f"lane {self._seg.name!r} is full")
        self.send(data)

    # -- batches --------------------------------------------------------------------------

    def _room(self, want: int = 1) -> int:
        """How many sequences may be written now, looking again if fewer than ``want``."""
        room = self._limit - self._head
        if room < want:
            self._refresh(want)
            room = self._limit - self._head
        return room

    def send_batch(
        self,
        items: Sequence[BytesLike] | npt.NDArray[Any],
        timeout: float | None = None,
    ) -> int:
        """Publish every item (bytes-likes, or the records of a numpy array), waiting for room.

        Publishes in chunks as room appears; returns the count. A numpy array's records are
        copied with one vectorized copy per chunk and are read back with
        ``receive_array``.
        """
        total = len(items)
        deadline = _deadline(timeout)
        done = 0
        while done < total:
            room = self._room(min(total - done, self._cap - (self._head & self._mask)))
            if room <= 0:
                if not self._wait_room(1, deadline):
                    raise LaneTimeout(
                        f"lane {self._seg.name!r} stayed full for {timeout} s after "
                        f"{done} of {total} messages"
                    )
                continue
            done += self._publish_chunk(items, done, min(room, total - done))
        return total

    def send_batch_nowait(self, items: Sequence[BytesLike] | npt.NDArray[Any]) -> int:
        """Publish as many items as fit now and return how many (raise WouldBlock if none)."""
        if not len(items):
            return 0
        room = self._room(min(len(items), self._cap - (self._head & self._mask)))
        if room <= 0:
            bump(self._q, self._seg.p + _P_DROPS)
            raise WouldBlock(f"lane {self._seg.name!r} is full")
        return self._publish_chunk(items, 0, min(room, len(items)))

    def _publish_chunk(
        self, items: Sequence[BytesLike] | npt.NDArray[Any], start: int, count: int
    ) -> int:
        """Write and publish ``items[start:start + count]`` (trimmed at the ring's end)."""
        h = self._head
        i = h & self._mask
        # One chunk never crosses the end of the ring, so every copy below is one slice.
        count = min(count, self._cap - i)
        chunk = items[start : start + count]
        q = self._q
        d = self._desc + 2 * i  # descriptor words: [length | flags, seq] per slot
        if isinstance(chunk, np.ndarray):
            self._copy_array(chunk, i)
            self._descriptors()[i : i + count, 0] = chunk.dtype.itemsize
        else:
            lengths = list(map(len, chunk))
            equal = _all_equal(lengths)
            longest = lengths[0] if equal else max(lengths)
            if longest > self._slot:
                k = lengths.index(longest)
                raise MessageTooLarge(
                    f"message {start + k} of {longest} bytes does not fit lane "
                    f"{self._seg.name!r} (slot_bytes={self._slot}); the {start} before "
                    "its chunk were sent"
                )
            off = self._pay + i * self._slot
            _write_rows(self._buf, off, self._slot, chunk, lengths, longest)
            if count == 1:  # one message: two plain stores
                q[d] = lengths[0]
                q[d + 1] = h
                self._publish_to(h + 1)
                return 1
            _store_lengths(q, d, self._descriptors(), i, lengths, equal)
        # Sequence numbers after the lengths (the C reader's check, see cheader).
        if count >= _NUMPY_DESCRIPTORS:
            self._descriptors()[i : i + count, 1] = np.arange(h, h + count, dtype=np.uint64)
        else:
            q[d + 1 : d + 1 + 2 * count : 2] = array("Q", range(h, h + count))
        self._publish_to(h + count)
        return count

    def _descriptors(self) -> npt.NDArray[np.uint64]:
        """The descriptor table as a (capacity, 2) array of [length|flags, seq] words."""
        ndesc = self._ndesc
        if ndesc is None:
            ndesc = self._ndesc = np.ndarray(
                shape=(self._cap, 2), dtype=np.uint64, buffer=self._buf, offset=self._desc * 8
            )
        return ndesc

    def _copy_array(self, records: npt.NDArray[Any], i: int) -> None:
        n = records.dtype.itemsize
        if n > self._slot:
            raise MessageTooLarge(
                f"records of {n} bytes do not fit lane {self._seg.name!r} (slot_bytes={self._slot})"
            )
        dest: npt.NDArray[Any] = np.ndarray(
            shape=(len(records),),
            dtype=records.dtype,
            buffer=self._buf,
            offset=self._pay + i * self._slot,
            strides=(self._slot,),
        )
        dest[...] = records

    def _publish_to(self, h: int) -> None:
        self._q[self._cur] = h
        self._head = h
        if self._sleepers():
            self._wake()

    # -- claim / publish (SequencedSlots) -------------------------------------------------

    def claim(self, timeout: float | None = None) -> tuple[int, memoryview]:
        """Claim the next sequence; returns it and a writable view of its whole slot."""
        h = self._head
        if h >= self._limit and not self._refresh() and not self._wait_room(1, _deadline(timeout)):
            raise LaneTimeout(f"lane {self._seg.name!r} stayed full for {timeout} s")
        off = self._pay + (h & self._mask) * self._slot
        return h, self._buf[off : off + self._slot]

    def claim_batch(self, count: int, timeout: float | None = None) -> tuple[int, int]:
        """Claim up to ``count`` consecutive sequences (at least one, never across the ring's
        end); returns ``(first, n)``. Write each with :meth:`slot` and publish them together."""
        if count < 1:
            raise ValueError("claim_batch needs count >= 1")
        if self._room() <= 0 and not self._wait_room(1, _deadline(timeout)):
            raise LaneTimeout(f"lane {self._seg.name!r} stayed full for {timeout} s")
        h = self._head
        n = min(count, self._room(count), self._cap - (h & self._mask))
        return h, n

    def slot(self, seq: int) -> memoryview:
        """A writable view of the whole slot of a claimed sequence."""
        off = self._pay + (seq & self._mask) * self._slot
        return self._buf[off : off + self._slot]

    def publish(self, seq: int, length: int) -> None:
        """Publish the claimed ``seq`` holding ``length`` bytes (claims publish in order)."""
        if seq != self._head:
            raise ConsumerError(f"publish({seq}) out of order: the next to publish is {self._head}")
        self.publish_batch(seq, (length,))

    def publish_batch(self, first: int, lengths: Sequence[int]) -> None:
        """Publish claimed sequences ``first .. first + len(lengths) - 1`` with their lengths."""
        if first != self._head:
            raise ConsumerError(
                f"publish_batch({first}) out of order: the next to publish is {self._head}"
            )
        q = self._q
        h = first
        for n in lengths:
            if not 0 <= n <= self._slot:
                raise MessageTooLarge(f"length {n} exceeds slot_bytes={self._slot}")
            d = self._desc + 2 * (h & self._mask)
            q[d] = n
            q[d + 1] = h
            h += 1
        self._publish_to(h)

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Mark the lane finished: consumers get :class:`LaneClosed` once they have read it all."""
        if self._closed or self._seg.closed:
            return
        self._closed = True
        self._limit = 0  # every send path now reaches _refresh, which refuses
        q = self._q
        q[self._seg.p + _P_CLAIMED] = self._head  # nothing more will be written
        q[self._seg.p + _P_CLOSED_PID] = os.getpid() << 32 | 1
        futex_wake(self._seg.futex_address(self._cur))
        # Consumers waiting on another consumer (``after``) are woken by that consumer.


# Consumers of this process by segment identity: a producer that finds its lane full asks them
# to publish the releases they hold back (``publish_every``), so one thread can never wait on
# a release that only it could publish.
_local_consumers: dict[tuple[object, ...], weakref.WeakSet[Consumer]] = {}


# A forked child inherits copies of the parent's consumers: they are not the child's to flush.
os.register_at_fork(after_in_child=_local_consumers.clear)


def _publish_local_releases(identity: tuple[object, ...]) -> bool:
    consumers = _local_consumers.get(identity)
    if not consumers:
        return False
    for c in list(consumers):
        c._publish_held()
    return True


class Consumer(AsyncConsumerMixin):
    """One reader of a lane, with its own cursor. Obtain one with ``lane.receiver(...)``."""

    def __init__(
        self,
        seg: Segment,
        index: int,
        *,
        overrun: bool,
        upstream: Sequence[int] = (),
        safe: bool = True,
        keep_line: bool = True,
        publish_every: int = 32,
        wait: WaitStrategy = DEFAULT_WAIT,
        explicit: bool = False,
    ) -> None:
        if publish_every < 1:
            raise ValueError("publish_every must be >= 1")
        if explicit and overrun:
            raise ConsumerError(
                "explicit release is for consumers that gate the producer; an overrun "
                "(best-effort, tailing) consumer's position is what it has read"
            )
        self._every = publish_every
        self._seg = seg
        self._index = index
        self._wait = wait
        self._keep_line = keep_line
        q = seg.q
        self._q = q
        self._buf = seg.buf
        self._mask = seg.mask
        self._cap = seg.capacity
        self._slot = seg.slot_bytes
        self._pay = seg.payload_offset
        self._desc = seg.desc_word
        self._payloads = seg.payloads
        self._descriptor_words = seg.descriptors
        base = seg.c(index)
        self._base = base
        self._cur = base + _C_CURSOR
        self._pcur = seg.p + _P_CURSOR
        self._overrun = overrun
        self._pos: int = q[self._cur]
        # Explicit release: the shared cursor moves only on release(), to ``_granted``.
        self._explicit = explicit
        self._granted: int = self._pos
        self._epoch: int = q[base + _C_EPOCH]
        # Barrier: the producer cursor, or the cursors of the upstream consumers.
        words = tuple(seg.c(u) + _C_CURSOR for u in upstream) or (self._pcur,)
        self._barrier = SeqBarrier(q, words)
        self._bw = words[0] if len(words) == 1 else -1
        self._validating = not safe
        self._avail = self._pos if self._validating else 0
        # Who might sleep on my cursor: the producer, and (slots) consumers after me.
        self._wake_words: tuple[int, ...] = (seg.p + _P_SLEEPING,)
        if seg.kind == L.KIND_SLOTS:
            self._wake_words += tuple(
                seg.p + _P_CONSUMER_SLEEPING + k for k in range((seg.max_consumers + 7) // 8)
            )
        self._ww0 = self._wake_words[0]
        self._ww_more = len(self._wake_words) > 1
        # The next two words unrolled (a ring of up to 16 consumers has no more), the rest.
        self._ww1, self._ww2 = (*self._wake_words[1:3], self._ww0, self._ww0)[:2]
        self._ww_tail = self._wake_words[3:]
        self._sleep_byte = seg.p * 8 + L.ProducerBlock.consumer_sleeping.offset + index
        self._ndesc: npt.NDArray[np.uint64] | None = None
        self._batch_from = -1  # first sequence of the views a batch receive handed out
        self._closed = False
        if not overrun:
            _local_consumers.setdefault(seg.identity, weakref.WeakSet()).add(self)

    # -- identity -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._seg.consumer_name(self._index)

    @property
    def index(self) -> int:
        return self._index

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def position(self) -> int:
        """The next sequence this consumer will read."""
        return self._pos

    @property
    def lost(self) -> int:
        """Messages this consumer lost to overrun (always 0 for gating consumers)."""
        return int(self._q[self._base + _C_LOST])

    # -- availability and waiting ---------------------------------------------------------

    def _available(self) -> int:
        bw = self._bw
        return self._q[bw] if bw >= 0 else self._barrier.available()

    def _closed_and_drained(self, t: int) -> bool:
        q = self._q
        return bool(q[self._seg.p + _P_CLOSED_PID] & 0xFFFFFFFF) and t >= q[self._pcur]

    def _wait_for(self, t: int, deadline: float | None) -> bool:
        """Wait until sequence ``t`` is available; False on timeout. Raises LaneClosed."""
        q = self._q
        seg = self._seg

        def ready() -> bool:
            if self._available() > t:
                return True
            if self._closed_and_drained(t):
                raise LaneClosed(f"lane {seg.name!r} is closed and fully read")
            return False

        if ready():
            return True
        bump(q, self._base + _C_WAITS)
        buf = self._buf
        byte = self._sleep_byte

        def sleep(slice_s: float) -> None:
            word = self._bw if self._bw >= 0 else self._barrier.slowest_word()
            seen = q[word]
            buf[byte] = 1
            try:
                if not ready():
                    futex_wait(seg.futex_address(word), seen, slice_s)
            finally:
                buf[byte] = 0

        return self._wait.wait(ready, sleep, deadline)

    def _release(self, t: int) -> None:
        q = self._q
        q[self._cur] = t
        if q[self._ww0] or (
            self._ww_more
            and (
                q[self._ww1]
                or q[self._ww2]
                or (self._ww_tail and any(map(q.__getitem__, self._ww_tail)))
            )
        ):
            futex_wake(self._seg.futex_address(self._cur))

    # -- per message ----------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> memoryview | bytes:
        """The next message: a zero-copy view valid until the next receive or ``release()``.

        Receiving implicitly releases the previous message. Releases become visible to the
        producer at least every ``publish_every`` messages, whenever this consumer waits,
        and at once on :meth:`release` or :meth:`close`. Overrun (best-effort, tailing)
        consumers get a checked copy instead of a view, since the producer does not wait
        for them. Raises :class:`LaneTimeout` after ``timeout`` seconds and
        :class:`LaneClosed` once the producer closed and everything was read.
        """
        t = self._pos
        if t >= self._avail:
            return self._receive_slow(t, timeout)
        i = t & self._mask
        # The word holds length | flags << 32; flags are 0 for every message we write, so one
        # comparison both bounds the length and spots flags we do not know.
        n = self._descriptor_words[i + i]
        if n > self._slot:
            raise self._corrupt(t, n)
        off = i * self._slot
        self._pos = t + 1
        return self._payloads[off : off + n]

    def receive_nowait(self) -> memoryview | bytes:
        """Like :meth:`receive` but raise :class:`WouldBlock` instead of waiting."""
        t = self._pos
        if t >= self._avail and self._available() <= t:
            if not self._overrun:
                self._release(self._granted if self._explicit else t)
            if self._closed_and_drained(t):
                raise LaneClosed(f"lane {self._seg.name!r} is closed and fully read")
            raise WouldBlock(f"lane {self._seg.name!r} is empty")
        try:
            return self.receive(timeout=0)
        except LaneTimeout:
            # An overrun consumer found only entries lost while it looked.
            raise WouldBlock(f"lane {self._seg.name!r} is empty") from None

    def _receive_slow(self, t: int, timeout: float | None) -> memoryview | bytes:
        # Publish the releases held back so far (everything before t), waking a waiter.
        q = self._q
        self._release(self._granted if self._explicit else t)
        self._batch_from = -1
        bw = self._bw
        if bw >= 0:
            a = q[bw]
            if a <= t:
                # A tight first spin on the one word we wait for, before the general wait.
                for _ in range(self._wait.spins):
                    a = q[bw]
                    if a > t:
                        break
        else:
            a = self._barrier.available()
        if a <= t:
            if not self._wait_for(t, _deadline(timeout)):
                raise LaneTimeout(f"nothing arrived on lane {self._seg.name!r} within {timeout} s")
            a = self._available()
        if self._validating and (
            q[self._seg.p + _P_EPOCH_SEEN] >= self._epoch or not self._producer_alive()
        ):
            self._validating = False
        if self._overrun or self._validating:
            data = self._receive_checked(t, a)
            while data is None:
                t = self._pos
                if not self._wait_for(t, _deadline(timeout)):
                    raise LaneTimeout(
                        f"nothing arrived on lane {self._seg.name!r} within {timeout} s"
                    )
                data = self._receive_checked(t, self._available())
            return data
        # Up to ``publish_every`` messages are read without touching shared cursors.
        every = t + self._every
        self._avail = a if a < every else every
        i = t & self._mask
        n = self._descriptor_words[i + i]
        if n > self._slot:
            raise self._corrupt(t, n)
        off = i * self._slot
        self._pos = t + 1
        return self._payloads[off : off + n]

    def _producer_alive(self) -> bool:
        q = self._q
        p = self._seg.p
        return pid_alive(q[p + _P_CLOSED_PID] >> 32, q[p + _P_START_TIME])

    def _publish_held(self) -> None:
        """Make visible every release made so far (only the views last handed out stay held)."""
        if self._overrun or self._explicit or self._closed or self._seg.closed:
            return
        held = self._batch_from if self._batch_from >= 0 else self._pos - 1
        if held > self._q[self._cur]:
            self._release(held)

    def _receive_checked(self, t: int, published: int) -> bytes | None:
        """Copy sequence ``t`` (or the oldest one still intact) and prove it was not overrun.

        The producer writes only below the ``claimed`` it announced first, so slot ``s`` is
        intact while ``claimed <= s + capacity``. Returns None when every available entry
        was lost (``self._pos`` then points past them).
        """
        q = self._q
        cap = self._cap
        claimed_word = self._seg.p + _P_CLAIMED
        while True:
            oldest = q[claimed_word] - cap
            if t < oldest and not self._producer_alive():
                # A writer killed mid-announcement writes nothing more.
                oldest = q[self._pcur] - cap
            if t < oldest:
                bump(q, self._base + _C_LOST, oldest - t)
                t = oldest
                if t >= published:
                    published = q[self._pcur]
                    if t >= published:
                        self._pos = t
                        if not self._explicit:
                            q[self._cur] = t
                        return None
            i = t & self._mask
            n = q[self._desc + 2 * i] & _LEN_MASK
            off = self._pay + i * self._slot
            data = bytes(self._buf[off : off + min(n, self._slot)])
            if t + cap >= q[claimed_word]:
                if n > self._slot:
                    raise self._corrupt(t, n)
                self._pos = t + 1
                if not self._explicit:
                    q[self._cur] = t + 1
                return data
            # The producer may have started rewriting this slot while we copied it.

    def _corrupt(self, t: int, n: int) -> CorruptSlot:
        if n >> 32:
            return CorruptSlot(
                f"lane {self._seg.name!r}: slot of sequence {t} carries flags {n >> 32:#x} "
                "that this version does not know; the segment was written by something else"
            )
        return CorruptSlot(
            f"lane {self._seg.name!r}: slot of sequence {t} claims {n} bytes but slots hold "
            f"{self._slot}; the segment was written by something else: recreate the lane"
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a message can be received, without receiving it: True, or False after
        ``timeout`` seconds. Gives back what was received, like a receive (views end).

        Raises :class:`LaneClosed` once the producer closed and everything was read. It
        waits as a receive does (spin, yield, then sleep in the kernel until woken), so a
        loop serving several lanes can sleep on the one it expects next.
        """
        t = self._pos
        if self._available() > t:
            return True
        if not self._overrun:
            self._release(self._granted if self._explicit else t)
        return self._wait_for(t, _deadline(timeout))

    def release(self) -> None:
        """Give back the slot of the last message received (its view becomes invalid).

        For an ``explicit`` consumer this is the only way its shared cursor moves: it
        releases everything received so far, so the cursor says "done with all before".
        """
        if not self._overrun:
            self._granted = self._pos
            self._release(self._pos)

    # -- batches --------------------------------------------------------------------------

    def _batch_span(self, max_count: int, timeout: float | None) -> tuple[int, int]:
        """Release what was held, wait for data; return (first, count) readable in place."""
        t = self._pos
        self._release(self._granted if self._explicit else t)
        a = self._available()
        if a <= t:
            if not self._wait_for(t, _deadline(timeout)):
                raise LaneTimeout(f"nothing arrived on lane {self._seg.name!r} within {timeout} s")
            a = self._available()
        return t, min(a - t, max_count)

    def receive_batch(
        self, max_count: int, timeout: float | None = None, *, copy: bool = False
    ) -> list[memoryview | bytes]:
        """At least one and at most ``max_count`` messages, as views valid until the next
        receive or ``release()`` (copies for overrun consumers). A batch never crosses the
        end of the ring, so it may hold fewer messages than are available.

        With ``copy=True`` the messages are ``bytes`` of their own, made from one bulk copy of
        the batch's slots: faster than views for a consumer that reads every message (the
        copy streams the slots into the cache at once), and they stay valid for good.
        """
        if self._overrun or self._validating:
            first = self.receive(timeout)
            out: list[memoryview | bytes] = [first]
            while len(out) < max_count:
                try:
                    out.append(self.receive_nowait())
                except WouldBlock:
                    break
            return out
        t, count = self._batch_span(max_count, timeout)
        i = t & self._mask
        count = min(count, self._cap - i)
        # Each length word with its flags (0 for every message we write): one strided read,
        # and one comparison both bounds the lengths and spots flags we do not know.
        d = self._desc + 2 * i
        lengths: list[int] = self._q[d : d + 2 * count : 2].tolist()
        slot = self._slot
        equal = _all_equal(lengths)
        longest = lengths[0] if equal else max(lengths)
        if longest > slot:
            k = lengths.index(longest)
            raise self._corrupt(t + k, longest)
        start = self._pay + i * slot
        self._batch_from = t
        self._pos = t + count
        self._avail = self._pos  # the next receive publishes the release
        if copy and equal and longest:
            # One strided numpy read makes every message's bytes straight from its slot.
            rows = np.ndarray(
                shape=(count,), dtype=f"V{longest}", buffer=self._buf, offset=start, strides=(slot,)
            )
            return rows.tolist()  # type: ignore[no-any-return]
        src: memoryview | bytes = self._buf
        if copy:
            src = bytes(self._buf[start : start + count * slot])
            start = 0
        offsets = range(start, start + count * slot, slot)
        # A view is a GC-tracked object: making a batch of them crosses the collector's
        # threshold while the caller still holds the previous batch, so a young collection
        # walks (and promotes) both, and the promoted views later cost older collections too.
        # Made with the collector paused, the count goes back down when the caller drops the
        # previous batch, and nothing is walked (64 B, receive and check: ~200 -> ~145 ns a
        # message on average here). Only the list's making is paused, never a wait, and the
        # collector is left as it was found.
        quiet = not copy and count >= _GC_QUIET_VIEWS and gc.isenabled()
        if quiet:
            gc.disable()
        try:
            if equal:
                return [src[o : o + longest] for o in offsets]
            return [src[o : o + m] for o, m in zip(offsets, lengths, strict=True)]
        finally:
            if quiet:
                gc.enable()

    def receive_batch_nowait(
        self, max_count: int, *, copy: bool = False
    ) -> list[memoryview | bytes]:
        """Like :meth:`receive_batch` but raise :class:`WouldBlock` instead of waiting.

        Raises :class:`LaneClosed` once the producer closed and everything was read. An
        executor polling several lanes in rounds uses this: it never spins or sleeps.
        """
        t = self._pos
        if self._available() <= t:
            if not self._overrun:
                self._release(self._granted if self._explicit else t)
            if self._closed_and_drained(t):
                raise LaneClosed(f"lane {self._seg.name!r} is closed and fully read")
            raise WouldBlock(f"lane {self._seg.name!r} is empty")
        try:
            return self.receive_batch(max_count, timeout=0, copy=copy)
        except LaneTimeout:
            # An overrun consumer found only entries lost while it looked.
            raise WouldBlock(f"lane {self._seg.name!r} is empty") from None

    def _descriptors(self) -> npt.NDArray[np.uint64]:
        ndesc = self._ndesc
        if ndesc is None:
            ndesc = self._ndesc = np.ndarray(
                shape=(self._cap, 2), dtype=np.uint64, buffer=self._buf, offset=self._desc * 8
            )
        return ndesc

    def receive_array(
        self, dtype: npt.DTypeLike, max_count: int, timeout: float | None = None
    ) -> npt.NDArray[Any]:
        """Up to ``max_count`` records of ``dtype`` as one zero-copy numpy view (never across
        the ring's end, so possibly fewer than available). Valid until the next receive."""
        dt = np.dtype(dtype)
        if dt.itemsize > self._slot:
            raise MessageTooLarge(
                f"records of {dt.itemsize} bytes cannot come from slots of {self._slot}"
            )
        if self._overrun or self._validating:
            rows = self.receive_batch(max_count, timeout)
            return np.frombuffer(b"".join(bytes(r)[: dt.itemsize] for r in rows), dtype=dt)
        t, count = self._batch_span(max_count, timeout)
        i = t & self._mask
        count = min(count, self._cap - i)
        self._batch_from = t
        self._pos = t + count
        self._avail = self._pos
        arr: npt.NDArray[Any] = np.ndarray(
            shape=(count,),
            dtype=dt,
            buffer=self._buf,
            offset=self._pay + i * self._slot,
            strides=(self._slot,),
        )
        return arr

    # -- slots: rewrite in place ------------------------------------------------------------

    def rewrite(self, data: BytesLike) -> None:
        """Replace the payload of the message last received, in place (SequencedSlots stages)."""
        t = self._pos - 1
        if t < 0 or self._overrun:
            raise ConsumerError("rewrite() needs a message received in place by a gating consumer")
        n = len(data)
        if n > self._slot:
            raise MessageTooLarge(f"{n} bytes exceed slot_bytes={self._slot}")
        i = t & self._mask
        off = self._pay + i * self._slot
        self._buf[off : off + n] = data
        self._q[self._desc + 2 * i] = n

    def rewrite_batch(self, items: Sequence[BytesLike]) -> int:
        """Replace, in place and in order, the payloads of the batch last received with
        :meth:`receive_batch`: one item per message (SequencedSlots stages).

        Items are written with one strided copy, like :meth:`Producer.send_batch`. Call it
        before the next receive or ``release()``, which hand the slots on downstream. Returns
        the longest item's length (a caller with a tighter bound checks it without a pass).
        """
        first = self._batch_from
        count = self._pos - first
        if first < 0 or self._overrun or self._validating:
            raise ConsumerError(
                "rewrite_batch() needs a batch received in place by a gating consumer"
            )
        if len(items) != count:
            raise ConsumerError(
                f"rewrite_batch() got {len(items)} item(s) for a batch of {count} message(s)"
            )
        if not count:
            return 0
        lengths = list(map(len, items))
        equal = _all_equal(lengths)
        longest = lengths[0] if equal else max(lengths)
        slot = self._slot
        if longest > slot:
            raise MessageTooLarge(f"{longest} bytes exceed slot_bytes={slot}")
        i = first & self._mask  # a received batch never crosses the ring's end
        _write_rows(self._buf, self._pay + i * slot, slot, items, lengths, longest)
        _store_lengths(self._q, self._desc + 2 * i, self._descriptors(), i, lengths, equal)
        return longest

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop reading. Named consumers keep their line (and position) for a restart;
        anonymous ones free it so they stop holding the producer back."""
        if self._closed or self._seg.closed:
            return
        self._closed = True
        seg = self._seg
        with seg.registration_lock():
            if self._keep_line:
                if not self._overrun:
                    self._release(self._granted if self._explicit else self._pos)
                seg.release_consumer(self._index)
            else:
                seg.free_consumer(self._index)
        futex_wake(seg.futex_address(self._cur))

    def unsubscribe(self) -> None:
        """Free this consumer's line for good: it no longer gates the producer."""
        seg = self._seg
        self._closed = True
        with seg.registration_lock():
            seg.free_consumer(self._index)
        futex_wake(seg.futex_address(self._cur))
