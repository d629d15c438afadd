"""Records and their acknowledgement handles.

A source hands out :class:`Record` objects, each with an :class:`Ack`. Settling it is the
downstream's promise about that record: ``ack`` means *fully processed and confirmed by every
sink*, ``nack`` means *deliver it again*. An acknowledgement settles once; the source decides
when to tell upstream (it commits in order, never ahead of an unsettled record).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from byteor.adapters._errors import AckError

__all__ = ["Ack", "AckState", "Record", "OutRecord", "Headers"]

AckState = Literal["pending", "acked", "nacked"]
Headers = tuple[tuple[str, bytes], ...]


class Ack:
    """One record's acknowledgement handle. Settles exactly once."""

    __slots__ = ("_on_settle", "_state")

    def __init__(self, on_settle: Callable[[bool], Awaitable[None]]) -> None:
        self._on_settle = on_settle
        self._state: AckState = "pending"

    @property
    def state(self) -> AckState:
        return self._state

    async def ack(self) -> None:
        """The record was fully processed downstream: upstream may forget it."""
        await self._settle(True)

    async def nack(self) -> None:
        """The record was not processed: upstream must deliver it again."""
        await self._settle(False)

    async def _settle(self, ok: bool) -> None:
        if self._state != "pending":
            raise AckError(f"acknowledgement already settled ({self._state})")
        self._state = "acked" if ok else "nacked"
        await self._on_settle(ok)


@dataclass(frozen=True, slots=True)
class OutRecord:
    """What a sink writes: payload, optional key and headers."""

    payload: bytes
    key: bytes | None = None
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Record:
    """What a source delivers.

    Attributes:
        payload: the message body.
        key: the partitioning key, if the system has one.
        headers: name/value pairs in the order the system gave them.
        position: where it sits upstream (a partition offset, a stream id, a delivery tag).
        ack: its acknowledgement handle.
    """

    payload: bytes
    key: bytes | None
    headers: Headers
    position: object
    ack: Ack = field(repr=False, compare=False)

    def out(self) -> OutRecord:
        """The same content, ready for a sink."""
        return OutRecord(self.payload, self.key, self.headers)
