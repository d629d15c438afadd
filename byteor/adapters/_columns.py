"""Records received and not handed out yet, as columns: the queue of the served sources (the
gRPC and WebSocket sources, whose clients send messages of many records).

Theory of operation. Such a source keeps each message it admits as one :class:`Chunk`: its
columns as received (ids, payloads, keys or None, headers or None), the ``origin`` it came on
(a gRPC stream, a WebSocket connection: what answers the client), the first record's sequence
number and how many were handed out (``at``). No object is made per record until a consumer
reads one.

:func:`take_runs` takes up to ``max_records`` records off the front of the queue as *runs*: the
consecutive records of one origin, one chunk (a whole message, its columns as received: the
common case) or several appended (new lists). Only the chunk it stops in is sliced. Each run
becomes one :class:`RecordBatch` with one Settler for its origin; :func:`batch_or_records`
hands out the single batch as it is, or the records of several in one list.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from byteor.adapters._record import Headers, Record, RecordBatch

__all__ = ["Chunk", "batch_or_records", "take_runs"]

Origin = TypeVar("Origin")  # what a chunk came on (a stream, a connection)
Id = TypeVar("Id")  # a record's id as its client gave it


class Chunk(Generic[Origin, Id]):
    """Records of one origin not handed out yet, as columns: ``keys`` and ``headers`` are
    None when no record has any; ``seq`` is the first record's sequence number, ``at`` the
    first not handed out."""

    __slots__ = ("origin", "ids", "payloads", "keys", "headers", "seq", "at")

    def __init__(
        self,
        origin: Origin,
        ids: list[Id],
        payloads: list[bytes],
        keys: list[bytes | None] | None,
        headers: list[Headers] | None,
        seq: int = 0,
    ) -> None:
        self.origin, self.ids, self.payloads = origin, ids, payloads
        self.keys, self.headers = keys, headers
        self.seq, self.at = seq, 0

    @property
    def left(self) -> int:
        return len(self.ids) - self.at

    def extend(
        self,
        ids: list[Id],
        payloads: list[bytes],
        keys: list[bytes | None] | None,
        headers: list[Headers] | None,
    ) -> None:
        """Append the columns of the origin's next message (new lists: this chunk's own may
        be a message's as received, or in a batch already)."""
        n, m = len(self.ids), len(ids)
        self.ids = self.ids + ids
        self.payloads = self.payloads + payloads
        if keys is not None or self.keys is not None:
            self.keys = (self.keys or [None] * n) + (keys or [None] * m)
        if headers is not None or self.headers is not None:
            none: list[Headers] = [()]
            self.headers = (self.headers or none * n) + (headers or none * m)


def take_runs(
    queue: deque[Chunk[Origin, Id]], max_records: int, gone: Callable[[Origin], bool] | None = None
) -> list[Chunk[Origin, Id]]:
    """Up to ``max_records`` records off the front of ``queue``, as one chunk per run of one
    origin's records (sequence numbers run on within a run). Chunks of an origin ``gone``
    says is gone are dropped on the way."""
    runs: list[Chunk[Origin, Id]] = []
    want = max_records
    while queue and want > 0:
        chunk = queue[0]
        if gone is not None and gone(chunk.origin):
            queue.popleft()
            continue
        a, n = chunk.at, len(chunk.ids)
        b = min(n, a + want)
        if a == 0 and b == n:  # the whole message, the common case: no slices
            queue.popleft()
            ids, payloads, keys, headers = chunk.ids, chunk.payloads, chunk.keys, chunk.headers
        else:
            chunk.at = b
            if b == n:
                queue.popleft()
            ids, payloads = chunk.ids[a:b], chunk.payloads[a:b]
            keys = None if chunk.keys is None else chunk.keys[a:b]
            headers = None if chunk.headers is None else chunk.headers[a:b]
        if runs and runs[-1].origin is chunk.origin:
            runs[-1].extend(ids, payloads, keys, headers)
        else:
            runs.append(Chunk(chunk.origin, ids, payloads, keys, headers, chunk.seq + a))
        want -= b - a
    return runs


def batch_or_records(batches: list[RecordBatch]) -> Sequence[Record]:
    """The one batch as it is (no record made), else the records of each in one list."""
    if len(batches) == 1:
        return batches[0]
    out: list[Record] = []
    for batch in batches:
        out += batch.records()
    return out
