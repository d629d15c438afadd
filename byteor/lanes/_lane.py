"""The public face of a lane: create, attach, sender, receiver, statistics."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from byteor.lanes import layout as L
from byteor.lanes._errors import ConsumerError
from byteor.lanes._platform import pid_alive
from byteor.lanes._ring import Consumer, Producer
from byteor.lanes._segment import (
    _C_AFTER,
    _C_CURSOR,
    _C_LOST,
    _C_START_TIME,
    _C_WAITS,
    _P_CLAIMED,
    _P_CLOSED_PID,
    _P_CURSOR,
    _P_DROPS,
    _P_FULL_WAITS,
    _P_START_TIME,
    Segment,
    attach_segment,
    create_segment,
    unlink_segment,
)
from byteor.lanes._wait import DEFAULT_WAIT, WaitStrategy

__all__ = [
    "Lane",
    "LaneKind",
    "Backing",
    "Policy",
    "ConsumerSpec",
    "LaneStatistics",
    "ConsumerStatistics",
    "create",
    "attach",
    "unlink",
    "read_statistics",
]

LaneKind = Literal["events", "journal", "slots", "fanout"]
Backing = Literal["shm", "file", "memory"]
Policy = Literal["critical", "best_effort"]
Start = Literal["earliest", "latest"] | int
# A consumer declared at creation: a name, or (name, names it reads after) for slots.
ConsumerSpec = str | tuple[str, Sequence[str]]

# Consumer lines held by receivers of this process (pids tell processes apart, not threads).
_held_lines: dict[tuple[tuple[object, ...], int], weakref.ref[Consumer]] = {}
os.register_at_fork(after_in_child=_held_lines.clear)

_DEFAULT_MAX_CONSUMERS = {"events": 1, "journal": 16, "slots": 16, "fanout": 16}
_EVENTS_CONSUMER = "default"


@dataclass(frozen=True, slots=True)
class ConsumerStatistics:
    """One consumer line, read from the segment."""

    index: int
    name: str
    policy: str  # "critical" (gates the producer) or "best_effort" (may be overrun)
    position: int
    lag: int
    lost: int
    waits: int
    pid: int
    attached: bool


@dataclass(frozen=True, slots=True)
class LaneStatistics:
    """A lane's counters, read from the segment without disturbing its users."""

    name: str
    kind: str
    capacity: int
    slot_bytes: int
    segment_bytes: int
    published: int
    consumed: int
    used: int
    lag: int
    full_waits: int
    drops: int
    overruns: int
    producer_pid: int
    producer_attached: bool
    closed: bool
    consumers: tuple[ConsumerStatistics, ...]


def read_statistics(seg: Segment) -> LaneStatistics:
    """Read every counter of ``seg`` (also used by ``byteor snapshot`` and ``doctor``)."""
    q = seg.q
    p = seg.p
    consumers: list[ConsumerStatistics] = []
    for i in seg.active_consumers():
        base = seg.c(i)
        state = seg.consumer_state(i)
        pid = seg.consumer_pid(i)
        consumers.append(
            ConsumerStatistics(
                index=i,
                name=seg.consumer_name(i),
                policy="critical" if state == L.STATE_GATING else "best_effort",
                position=q[base + _C_CURSOR],
                lag=0,
                lost=q[base + _C_LOST],
                waits=q[base + _C_WAITS],
                pid=pid,
                attached=pid_alive(pid, q[base + _C_START_TIME]),
            )
        )
    published = q[p + _P_CURSOR]
    consumers = [
        ConsumerStatistics(
            c.index,
            c.name,
            c.policy,
            c.position,
            max(0, published - c.position),
            c.lost,
            c.waits,
            c.pid,
            c.attached,
        )
        for c in consumers
    ]
    gating = [c.position for c in consumers if c.policy == "critical"]
    consumed = min(gating) if gating else (min(c.position for c in consumers) if consumers else 0)
    closed_pid = q[p + _P_CLOSED_PID]
    producer_pid = closed_pid >> 32
    return LaneStatistics(
        name=seg.name,
        kind=seg.kind_name,
        capacity=seg.capacity,
        slot_bytes=seg.slot_bytes,
        segment_bytes=seg.geometry.total_bytes,
        published=published,
        consumed=consumed,
        used=max(0, published - min(gating)) if gating else 0,
        lag=max((c.lag for c in consumers), default=0),
        full_waits=q[p + _P_FULL_WAITS],
        drops=q[p + _P_DROPS],
        overruns=sum(c.lost for c in consumers),
        producer_pid=producer_pid,
        producer_attached=pid_alive(producer_pid, q[p + _P_START_TIME]),
        closed=bool(closed_pid & 0xFFFFFFFF),
        consumers=tuple(consumers),
    )


class Lane:
    """A handle on one lane segment. Make senders and receivers from it.

    Use :func:`create` in the process that owns the lane and :func:`attach` elsewhere.
    """

    def __init__(self, seg: Segment) -> None:
        self._seg = seg
        self._endpoints: list[Producer | Consumer] = []

    # -- identity -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._seg.name

    @property
    def kind(self) -> str:
        return self._seg.kind_name

    @property
    def capacity(self) -> int:
        return self._seg.capacity

    @property
    def slot_bytes(self) -> int:
        return self._seg.slot_bytes

    @property
    def max_consumers(self) -> int:
        return self._seg.max_consumers

    @property
    def backing(self) -> str:
        return self._seg.backing

    @property
    def path(self) -> str | None:
        """The segment file (``None`` for in-memory lanes)."""
        return self._seg.path

    @property
    def segment(self) -> Segment:
        return self._seg

    def __repr__(self) -> str:
        return (
            f"<Lane {self.name!r} kind={self.kind} capacity={self.capacity} "
            f"slot_bytes={self.slot_bytes} backing={self.backing}>"
        )

    # -- endpoints ------------------------------------------------------------------------

    def sender(self, *, wait: WaitStrategy = DEFAULT_WAIT) -> Producer:
        """The lane's one producer (a restarted producer resumes where the last one stopped)."""
        tx = Producer(self._seg, wait)
        self._endpoints.append(tx)
        return tx

    def receiver(
        self,
        name: str | None = None,
        *,
        policy: Policy | None = None,
        start: Start | None = None,
        after: Sequence[str] = (),
        publish_every: int | None = None,
        wait: WaitStrategy = DEFAULT_WAIT,
        explicit: bool = False,
    ) -> Consumer:
        """A consumer of this lane.

        Args:
            name: for fanout, journal and slots, a name makes the consumer durable: it keeps
                its line and position when closed or killed, and a receiver with the same name
                resumes there. Journal readers without a name are tailing readers.
            policy: fanout only: ``"critical"`` (default) gates the producer, ``"best_effort"``
                may be overrun and counts exactly what it lost.
            start: where a new consumer begins: ``"earliest"`` retained, ``"latest"``, or a
                sequence. Journals: durable readers default to earliest, tailing to latest.
            after: slots only: names of the consumers this one reads after (its SeqBarrier).
            publish_every: how often this consumer's releases reach its shared cursor (what
                the producer and ``statistics()`` see, and where a restarted durable consumer
                resumes). Releases are always published when the consumer waits, on
                ``release()`` and ``close()``, and when a producer in this process finds the
                lane full, so nothing ever stalls on a held-back release. Default 32; durable
                journal readers default to 1, so they resume exactly after the last message
                they received.
            explicit: the shared cursor moves only on ``release()``, never on its own
                (not on a receive, a wait or ``close()``): a consumer that releases only what
                it has finished with resumes, after a crash, at the first message it had not
                finished. Gating consumers only (not best-effort or tailing readers). The
                executors read their inputs this way (at-least-once across a restart).
        """
        kind = self._seg.kind
        if publish_every is None:
            publish_every = 1 if kind == L.KIND_JOURNAL and name is not None else 32
        if kind == L.KIND_EVENTS:
            rx = self._events_receiver(name, policy, start, after, publish_every, wait, explicit)
        else:
            rx = self._shared_receiver(
                kind, name, policy, start, after, publish_every, wait, explicit
            )
        self._endpoints.append(rx)
        _held_lines[(self._seg.identity, rx.index)] = weakref.ref(rx)
        return rx

    def _events_receiver(
        self,
        name: str | None,
        policy: Policy | None,
        start: Start | None,
        after: Sequence[str],
        publish_every: int,
        wait: WaitStrategy,
        explicit: bool,
    ) -> Consumer:
        if name not in (None, _EVENTS_CONSUMER) or policy not in (None, "critical") or after:
            raise ConsumerError(
                "an events lane has exactly one lossless consumer: call receiver() without "
                "name, policy or after (use a fanout lane for several consumers)"
            )
        if start is not None:
            raise ConsumerError("an events consumer always resumes where the last one stopped")
        seg = self._seg
        with seg.registration_lock():
            self._claim_line(0)
        return Consumer(
            seg, 0, overrun=False, publish_every=publish_every, wait=wait, explicit=explicit
        )

    def _claim_line(self, index: int) -> None:
        seg = self._seg
        held = _held_lines.get((seg.identity, index))
        other = held() if held is not None else None
        if other is not None and not other.closed:
            raise ConsumerError(
                f"consumer {seg.consumer_name(index)!r} of lane {seg.name!r} already has a "
                "receiver in this process: one receiver per consumer at a time; close it first"
            )
        pid = seg.consumer_pid(index)
        if pid and pid != os.getpid() and seg.consumer_alive(index):
            raise ConsumerError(
                f"consumer {seg.consumer_name(index)!r} of lane {seg.name!r} is held by live "
                f"process {pid}: one receiver per consumer at a time"
            )
        seg.claim_consumer(index)

    def _shared_receiver(
        self,
        kind: int,
        name: str | None,
        policy: Policy | None,
        start: Start | None,
        after: Sequence[str],
        publish_every: int,
        wait: WaitStrategy,
        explicit: bool,
    ) -> Consumer:
        seg = self._seg
        if after and kind != L.KIND_SLOTS:
            raise ConsumerError("after= (a SeqBarrier on other consumers) is for slots lanes")
        if policy is not None and kind != L.KIND_FANOUT:
            raise ConsumerError(
                "policy= is for fanout lanes; journal readers are durable when named, "
                "tailing otherwise"
            )
        if kind == L.KIND_FANOUT:
            overrun = policy == "best_effort"
        elif kind == L.KIND_JOURNAL:
            overrun = name is None
        else:
            overrun = False
        if policy not in (None, "critical", "best_effort"):
            raise ConsumerError(f"unknown policy {policy!r}: use 'critical' or 'best_effort'")
        if explicit and overrun:
            raise ConsumerError(
                "explicit release is for consumers that gate the producer; a best-effort or "
                "tailing reader's position is what it has read"
            )
        state = L.STATE_OVERRUN if overrun else L.STATE_GATING
        with seg.registration_lock():
            upstream = [self._index_of(u) for u in after]
            index = seg.find_consumer(name) if name else None
            if index is not None:
                if seg.consumer_state(index) != state:
                    raise ConsumerError(
                        f"consumer {name!r} of lane {seg.name!r} exists with policy "
                        f"{self._policy_name(seg.consumer_state(index))}"
                    )
                self._claim_line(index)
                stored = seg.q[seg.c(index) + _C_AFTER]
                if not upstream:
                    upstream = [u for u in range(seg.max_consumers) if stored >> u & 1]
                return Consumer(
                    seg,
                    index,
                    overrun=overrun,
                    upstream=upstream,
                    keep_line=True,
                    publish_every=publish_every,
                    wait=wait,
                    explicit=explicit,
                )
            index = self._free_line()
            position = self._start_position(kind, name, start, upstream, gating=not overrun)
            mask = 0
            for u in upstream:
                mask |= 1 << u
            seg.write_consumer(
                index, name=name or "", state=state, cursor=position, after_mask=mask
            )
            seg.claim_consumer(index)
            safe = overrun or self._joins_safely(index, position)
            return Consumer(
                seg,
                index,
                overrun=overrun,
                upstream=upstream,
                safe=safe,
                keep_line=name is not None,
                publish_every=publish_every,
                wait=wait,
                explicit=explicit,
            )

    @staticmethod
    def _policy_name(state: int) -> str:
        return "critical" if state == L.STATE_GATING else "best_effort"

    def _index_of(self, name: str) -> int:
        index = self._seg.find_consumer(name)
        if index is None:
            known = ", ".join(self.consumer_names()) or "none"
            raise ConsumerError(
                f"after={name!r}: lane {self.name!r} has no consumer of that name "
                f"(known: {known}); create upstream consumers first"
            )
        return index

    def _free_line(self) -> int:
        seg = self._seg
        for i in range(seg.max_consumers):
            if seg.consumer_state(i) == L.STATE_FREE:
                return i
        # Anonymous lines of dead processes are reclaimed; named ones are durable.
        for i in range(seg.max_consumers):
            if not seg.consumer_name(i) and not seg.consumer_alive(i):
                seg.free_consumer(i)
                return i
        raise ConsumerError(
            f"lane {seg.name!r} has no free consumer line (max_consumers="
            f"{seg.max_consumers}): close unused receivers, unsubscribe durable ones, or "
            "recreate the lane with a larger max_consumers"
        )

    def _start_position(
        self,
        kind: int,
        name: str | None,
        start: Start | None,
        upstream: Sequence[int],
        *,
        gating: bool = False,
    ) -> int:
        seg = self._seg
        q = seg.q
        published = q[seg.p + _P_CURSOR]
        if upstream:
            latest = min(q[seg.c(u) + _C_CURSOR] for u in upstream)
        else:
            latest = published
        # The oldest intact entry: a live producer may be writing anything below the
        # ``claimed`` it announced; a closed or dead one writes nothing.
        frontier = published
        claimed = q[seg.p + _P_CLAIMED]
        if claimed > published and self._producer_alive():
            frontier = claimed
        earliest = max(0, frontier - seg.capacity)
        if start is None:
            start = "earliest" if kind == L.KIND_JOURNAL and name is not None else "latest"
        if start == "latest":
            return latest
        if start == "earliest":
            return min(earliest, latest) if upstream else earliest
        if isinstance(start, int) and not isinstance(start, bool):
            if not earliest <= start <= latest:
                raise ConsumerError(
                    f"start={start} is outside the retained range [{earliest}, {latest}] of "
                    f"lane {seg.name!r}"
                )
            return start
        raise ConsumerError(f"start={start!r}: use 'earliest', 'latest' or a sequence number")

    def _producer_alive(self) -> bool:
        q = self._seg.q
        p = self._seg.p
        return pid_alive(q[p + _P_CLOSED_PID] >> 32, q[p + _P_START_TIME])

    def _joins_safely(self, index: int, position: int) -> bool:
        """Whether the producer cannot overwrite ``position`` before it has seen this line."""
        seg = self._seg
        q = seg.q
        others = [
            q[seg.c(i) + _C_CURSOR]
            for i in seg.active_consumers()
            if i != index and seg.consumer_state(i) == L.STATE_GATING
        ]
        if others:
            return position >= min(others)
        return q[seg.p + _P_CURSOR] - position <= seg.capacity // 2

    def consumer_names(self) -> list[str]:
        seg = self._seg
        return [seg.consumer_name(i) for i in seg.active_consumers()]

    def cursor_words(self, consumer: str) -> tuple[memoryview, int, int]:
        """For a reader that polls a consumer's progress often: the segment as 64-bit words,
        and the indexes in it of ``consumer``'s cursor and of the producer's published
        cursor. Two word loads (the consumer's first) then tell how far it is and how far it
        could be, where :meth:`statistics` builds a record per consumer and looks at
        ``/proc``. Read the words, never write them; they are valid until :meth:`close`.

        Raises:
            ConsumerError: the lane has no consumer of that name.
        """
        seg = self._seg
        index = seg.find_consumer(consumer)
        if index is None:
            known = ", ".join(self.consumer_names()) or "none"
            raise ConsumerError(f"lane {self.name!r} has no consumer {consumer!r} (known: {known})")
        return seg.q, seg.c(index) + _C_CURSOR, seg.p + _P_CURSOR

    # -- observing and lifetime ---------------------------------------------------------

    def statistics(self) -> LaneStatistics:
        return read_statistics(self._seg)

    def flush(self) -> None:
        """``msync`` a file-backed lane so it survives a machine crash, not just a process's."""
        self._seg.flush()

    def close(self) -> None:
        """Close every endpoint made from this handle and unmap the segment."""
        for ep in self._endpoints:
            ep.close()
        self._endpoints.clear()
        self._seg.close()

    def __enter__(self) -> Lane:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _parse_consumers(consumers: Iterable[ConsumerSpec]) -> list[tuple[str, tuple[str, ...]]]:
    out: list[tuple[str, tuple[str, ...]]] = []
    for c in consumers:
        if isinstance(c, str):
            out.append((c, ()))
        else:
            name, after = c
            out.append((name, tuple(after)))
    return out


def create(
    name: str,
    kind: LaneKind = "events",
    capacity: int = 1024,
    slot_bytes: int = 256,
    *,
    max_consumers: int | None = None,
    consumers: Iterable[ConsumerSpec] = (),
    backing: Backing = "shm",
    path: str | os.PathLike[str] | None = None,
    replace: bool = False,
) -> Lane:
    """Create a lane segment and return a handle on it.

    Args:
        name: 1-200 characters of ``A-Z a-z 0-9 _ . -``; the segment is
            ``/dev/shm/byteor-<name>`` (``backing="shm"``), ``path`` (``"file"``), or
            anonymous memory of this process (``"memory"``).
        kind: ``"events"``, ``"journal"``, ``"slots"`` or ``"fanout"``.
        capacity: slots in the ring, a power of two.
        slot_bytes: the largest message, a multiple of 8.
        max_consumers: consumer lines (events: 1; others: 16 by default).
        consumers: durable consumers registered before anything is sent, so none of them
            misses a message: names, or ``(name, after)`` for slots stages.
        replace: remove an existing segment of that name first.
    """
    if kind not in L.KIND_CODES:
        raise ValueError(f"unknown lane kind {kind!r}: use events, journal, slots or fanout")
    if max_consumers is None:
        max_consumers = _DEFAULT_MAX_CONSUMERS[kind]
    if kind == "events" and max_consumers != 1:
        raise ValueError("an events lane has exactly one consumer: leave max_consumers unset")
    declared = _parse_consumers(consumers)
    if kind == "events" and declared:
        raise ValueError("an events lane's one consumer is built in; consumers= is for others")
    seg = create_segment(
        name,
        L.KIND_CODES[kind],
        capacity,
        slot_bytes,
        max_consumers,
        backing=backing,
        path=None if path is None else os.fspath(path),
        replace=replace,
    )
    lane = Lane(seg)
    try:
        with seg.registration_lock():
            if kind == "events":
                seg.write_consumer(0, name=_EVENTS_CONSUMER, state=L.STATE_GATING, cursor=0)
            seen: set[str] = set()
            for i, (cname, after) in enumerate(declared):
                if cname in seen or not cname:
                    raise ConsumerError(f"consumer names must be unique and non-empty: {cname!r}")
                if i >= max_consumers:
                    raise ConsumerError(
                        f"{len(declared)} consumers declared but max_consumers={max_consumers}"
                    )
                mask = 0
                for a in after:
                    if a not in seen:
                        raise ConsumerError(
                            f"consumer {cname!r} reads after {a!r}, which is not declared before it"
                        )
                    mask |= 1 << next(j for j, (n, _) in enumerate(declared) if n == a)
                if mask and kind != "slots":
                    raise ConsumerError("after (a SeqBarrier) is for slots lanes")
                seg.write_consumer(i, name=cname, state=L.STATE_GATING, cursor=0, after_mask=mask)
                seen.add(cname)
    except BaseException:
        seg.close()
        unlink_segment(name, backing, None if path is None else os.fspath(path))
        raise
    return lane


def attach(
    name: str,
    *,
    kind: LaneKind | None = None,
    backing: Backing = "shm",
    path: str | os.PathLike[str] | None = None,
) -> Lane:
    """Attach to an existing lane, validating the whole segment first (untrusted input)."""
    expected = None if kind is None else L.KIND_CODES[kind]
    seg = attach_segment(
        name, backing=backing, path=None if path is None else os.fspath(path), kind=expected
    )
    return Lane(seg)


def unlink(
    name: str, *, backing: Backing = "shm", path: str | os.PathLike[str] | None = None
) -> bool:
    """Remove a lane's segment name; processes that mapped it keep working until they close."""
    return unlink_segment(name, backing, None if path is None else os.fspath(path))
