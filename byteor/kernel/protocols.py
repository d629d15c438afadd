"""``LaneTx`` and ``LaneRx``: the lane methods executors and adapters rely on.

Executors and adapters know lanes only through these protocols, so a shared-memory lane, an
in-memory lane and a test double are interchangeable. ``byteor.lanes.Producer`` and
``byteor.lanes.Consumer`` match them (a type check in ``tests/kernel`` keeps that true).

Vocabulary (the same for every lane kind):

* ``send`` waits for room (``timeout`` seconds at most, then ``LaneTimeout``);
  ``send_nowait`` raises ``WouldBlock`` when the lane is full;
* ``receive`` waits for a message, ``receive_nowait`` raises ``WouldBlock`` when there is
  none; both raise ``LaneClosed`` once the producer closed and everything was read;
* a received message is a view valid until the next receive from the same receiver (or
  ``release``): copy it to keep it;
* ``position`` counts messages published (sender) or received (receiver).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["BytesLike", "LaneTx", "LaneRx"]

BytesLike = bytes | bytearray | memoryview


@runtime_checkable
class LaneTx(Protocol):
    """The producing end of a lane."""

    @property
    def position(self) -> int:
        """The next sequence this sender publishes (= messages published so far)."""
        ...

    def send(self, data: BytesLike, timeout: float | None = None) -> None:
        """Publish one message, waiting for room."""
        ...

    def send_nowait(self, data: BytesLike) -> None:
        """Publish one message or raise ``WouldBlock``."""
        ...

    def send_batch(self, items: Sequence[BytesLike], timeout: float | None = None) -> int:
        """Publish every item, waiting for room as needed; returns the count."""
        ...

    def send_batch_nowait(self, items: Sequence[BytesLike]) -> int:
        """Publish as many items as fit now, in order; returns how many (``WouldBlock``: none)."""
        ...

    def close(self) -> None:
        """Mark the lane finished: receivers get ``LaneClosed`` after draining it."""
        ...


@runtime_checkable
class LaneRx(Protocol):
    """The consuming end of a lane."""

    @property
    def position(self) -> int:
        """The next sequence this receiver reads (= messages received so far)."""
        ...

    def receive(self, timeout: float | None = None) -> memoryview | bytes:
        """The next message, waiting for it."""
        ...

    def receive_nowait(self) -> memoryview | bytes:
        """The next message, or ``WouldBlock`` when none is there."""
        ...

    def receive_batch(
        self, max_count: int, timeout: float | None = None
    ) -> list[memoryview | bytes]:
        """At least one and at most ``max_count`` messages."""
        ...

    def receive_batch_nowait(
        self, max_count: int, *, copy: bool = False
    ) -> list[memoryview | bytes]:
        """At least one and at most ``max_count`` messages (``bytes`` of their own with
        ``copy``), or ``WouldBlock`` when none is there."""
        ...

    def release(self) -> None:
        """Give back the slot of the last message received."""
        ...

    def close(self) -> None:
        """Stop reading."""
        ...
