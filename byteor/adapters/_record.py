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
    """One record's acknowledgement handle. Settles exactly once.

    A source either passes ``on_settle(ok)``, awaited once when the record settles, or
    subclasses ``Ack`` and overrides :meth:`settled` (leaving ``on_settle`` out). The subclass
    costs one object per record where the callback costs an ``Ack`` plus a closure and its
    cells, and its ``settled`` may be a plain function when telling the source needs no I/O
    (one coroutine less per acknowledgement): at tens of thousands of records a second, that
    is a measurable share of a source's time (``byteor bench adapters``).
    """

    __slots__ = ("_on_settle", "_state")

    def __init__(self, on_settle: Callable[[bool], Awaitable[None]] | None = None) -> None:
        self._on_settle = on_settle
        self._state: AckState = "pending"

    @property
    def state(self) -> AckState:
        return self._state

    async def ack(self) -> None:
        """The record was fully processed downstream: upstream may forget it."""
        if self._state != "pending":
            raise AckError(f"acknowledgement already settled ({self._state})")
        self._state = "acked"
        cb = self._on_settle
        done = cb(True) if cb is not None else self.settled(True)
        if done is not None:
            await done

    async def nack(self) -> None:
        """The record was not processed: upstream must deliver it again."""
        if self._state != "pending":
            raise AckError(f"acknowledgement already settled ({self._state})")
        self._state = "nacked"
        cb = self._on_settle
        done = cb(False) if cb is not None else self.settled(False)
        if done is not None:
            await done

    def settled(self, ok: bool) -> Awaitable[None] | None:
        """Called once, when the record settles (``ok``: acked); for subclasses to override,
        either as a plain method or as ``async def``.

        The base class has nothing to tell: an ``Ack`` made without ``on_settle`` and not
        subclassed settles silently.
        """
        return None


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


def _fast_init(cls: type[Record]) -> None:
    """Give the frozen ``cls`` an ``__init__`` that sets its slots through their descriptors.

    A source builds one Record per message. The ``__init__`` dataclasses generates for a frozen
    class calls ``object.__setattr__`` once per field; writing the slots through their member
    descriptors does the same (the instance stays frozen: ``__setattr__`` still raises) in
    about 60 % of the time, some 200 ns a record on the project's machine.
    """
    slots = vars(cls)
    set_payload, set_key, set_headers, set_position, set_ack = (
        slots[name].__set__ for name in ("payload", "key", "headers", "position", "ack")
    )

    def __init__(
        self: Record,
        payload: bytes,
        key: bytes | None,
        headers: Headers,
        position: object,
        ack: Ack,
    ) -> None:
        set_payload(self, payload)
        set_key(self, key)
        set_headers(self, headers)
        set_position(self, position)
        set_ack(self, ack)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__doc__ = cls.__init__.__doc__
    cls.__init__ = __init__  # type: ignore[method-assign]


_fast_init(Record)
