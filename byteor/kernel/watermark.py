"""Acknowledgement bookkeeping: when may a source commit upstream?

Theory of operation
-------------------
Every record a source admits gets the next sequence ``s`` of its ingress lane. Every record on
any lane carries a **low stamp**: the lowest ingress sequence it covers. A record on the
ingress lane is stamped ``s``; a stage stamps each output with the low stamp of the input it
came from, and a batch with the low stamp of its first input. Stages process in order, so low
stamps never decrease along a lane, nor in what a stage holds.

An ingress sequence is *done* when nothing derived from it is still in flight: every record
covering it was confirmed by a sink or dropped by a stage. So the done-watermark (every
sequence below it is done) is the minimum of:

* the ingress lane's published count (nothing at or above it was admitted yet), and
* for every hop (stage or sink) on every path from the ingress lane, the low stamp of the
  oldest record not *finished* there. A stage finishes an input when its outputs are
  published (or it dropped it); a record still on its input lane, or held back (a batcher),
  is unfinished. A sink finishes a record when the external system confirmed it.

Each hop reports that one number, its **unfinished** stamp, or ``None`` when it has nothing
unfinished (its input lane is empty and it holds nothing). "Processed through" and
"confirmed through" are the same number seen from the other side: every sequence below it
that reached the hop is processed (stage) or confirmed (sink) there. Dropped records simply
stop being anywhere, so they count as done without any bookkeeping of their own, and several
records with one stamp (a splitter's outputs) keep the stamp unfinished until the last one is.

The result is exact (it equals the longest done prefix) and so never goes back, provided the
cursors are read in flow order: the published count first, then the hops from the ingress
lane towards the sinks. Records only move downstream, so a record missed at one hop because
it just left is found at a hop read later (or it is done).

:class:`UpstreamTracker` keeps ``sequence -> (partition, position)`` for what a source admitted
and hands back, in order, what may be committed once the watermark passes it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "AckPath",
    "path_done",
    "done_watermark",
    "Commit",
    "UpstreamTracker",
]

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class AckPath:
    """One path from an ingress lane to a sink, as the unfinished stamps of its hops.

    Attributes:
        processed: for each stage on the path, from the ingress lane on: the low stamp of the
            oldest record unfinished there, or ``None``.
        confirmed: the same for the sink: the low stamp of the oldest record it has not had
            confirmed (received or still on its input lane), or ``None``. A path that ends in
            a stage without outputs has ``confirmed=None``.
    """

    processed: tuple[int | None, ...]
    confirmed: int | None = None

    def __post_init__(self) -> None:
        for stamp in (*self.processed, self.confirmed):
            if stamp is not None and stamp < 0:
                raise ValueError(f"stamp {stamp} is negative")


def path_done(path: AckPath, published: int) -> int:
    """Every ingress sequence below the returned value is done on this path.

    Args:
        path: the hops' unfinished stamps, read after ``published``.
        published: the ingress lane's published count.

    Raises:
        ValueError: a hop reports a stamp at or above ``published`` (the cursors were read
            out of order, or they are not from one pipeline).
    """
    if published < 0:
        raise ValueError(f"published count {published} is negative")
    done = published
    for depth, stamp in enumerate((*path.processed, path.confirmed)):
        if stamp is None:
            continue
        if stamp >= published:
            where = "the sink" if depth == len(path.processed) else f"hop {depth}"
            raise ValueError(
                f"{where} has stamp {stamp} unfinished but only {published} sequences were "
                "published: read the published count first, then the hops in flow order"
            )
        done = min(done, stamp)
    return done


def done_watermark(paths: Sequence[AckPath], published: int) -> int:
    """The minimum of :func:`path_done` over every path of one ingress lane."""
    if not paths:
        raise ValueError("an ingress lane needs at least one path to a sink")
    return min(path_done(p, published) for p in paths)


@dataclass(frozen=True, slots=True)
class Commit(Generic[P]):
    """One admitted record that may now be acknowledged upstream."""

    sequence: int
    partition: Hashable
    position: P


@dataclass(slots=True)
class UpstreamTracker(Generic[P]):
    """``sequence -> (partition, upstream position)`` for what a source admitted.

    Sequences are handed out consecutively from ``start`` (a restarted source starts at its
    ingress lane's published count). Memory is one entry per record above the watermark,
    which the lanes' capacities bound.
    """

    start: int = 0
    _next: int = field(init=False)
    _pending: deque[Commit[P]] = field(init=False, default_factory=deque)

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError("sequences start at 0 or above")
        self._next = self.start

    @property
    def next_sequence(self) -> int:
        """The sequence the next admitted record gets."""
        return self._next

    @property
    def pending(self) -> int:
        """Records admitted and not yet released."""
        return len(self._pending)

    def admit(self, partition: Hashable, position: P) -> int:
        """Record where the next record came from; returns its ingress sequence."""
        seq = self._next
        self._pending.append(Commit(seq, partition, position))
        self._next = seq + 1
        return seq

    def release(self, watermark: int) -> list[Commit[P]]:
        """Every admitted record below ``watermark`` not released before, in sequence order.

        ``watermark`` is a done-watermark (a stamp: sequences below it are done). Per
        partition, the commits come in admission order, so acknowledging them in the order
        given never acknowledges a position before an earlier one of the same partition.
        """
        if watermark > self._next:
            raise ValueError(f"watermark {watermark} is beyond the {self._next} sequences admitted")
        out: list[Commit[P]] = []
        pending = self._pending
        while pending and pending[0].sequence < watermark:
            out.append(pending.popleft())
        return out

    @staticmethod
    def latest(commits: Sequence[Commit[P]]) -> list[tuple[Hashable, P]]:
        """The last position per partition, partitions in first-seen order (what a
        Kafka-style "commit the offset" needs)."""
        last: dict[Hashable, P] = {}
        for c in commits:
            last[c.partition] = c.position
        return list(last.items())
