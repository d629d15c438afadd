"""Records and their acknowledgement handles.

A source hands out :class:`Record` objects, each with an :class:`Ack`. Settling it is the
downstream's promise about that record: ``ack`` means *fully processed and confirmed by every
sink*, ``nack`` means *deliver it again*. An acknowledgement settles once; the source decides
when to tell upstream (it commits in order, never ahead of an unsettled record).

Theory of operation (batches). A source may hand out a :class:`RecordBatch` instead of a list:
the batch's columns (payloads, keys, headers, positions) and one :class:`Settler` for all of
its records. A consumer that wants the columns reads them and never makes a record; one that
indexes or iterates gets :class:`LazyAckRecord` objects, made on first access and kept (the
same object every time). :func:`ack_all` / :func:`nack_all` of the whole batch then settle it
with one :meth:`Settler.settle_batch` call and a state on the batch: nothing per record when
no record was made, one look at each record made otherwise (to refuse the batch if one of them
was settled on its own, and to mark them settled). Records settled one by one, or a list of
some of the batch's records, go the per-record way, as for any LazyAckRecord.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from itertools import repeat
from typing import ClassVar, Literal, Self, cast, overload

from byteor.adapters._errors import AckError

__all__ = [
    "Ack",
    "AckState",
    "Record",
    "OutRecord",
    "Headers",
    "RecordRow",
    "make_records",
    "record_blank",
    "LazyAckRecord",
    "RecordBatch",
    "Settler",
    "ack_all",
    "nack_all",
]

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

    @classmethod
    def settled_all(cls, acks: Sequence[Self], ok: bool) -> Awaitable[None] | None:
        """Called once by :func:`ack_all` / :func:`nack_all` for the handles of a batch that
        are of class ``cls`` (in batch order, each already marked settled), instead of one
        :meth:`settled` per handle; for subclasses to override when a source can take a run
        of settlements at once.

        The default tells each handle as :meth:`ack` / :meth:`nack` would, in order, and
        returns an awaitable only if one of them needs awaiting.
        """
        pending: list[Awaitable[None]] | None = None
        for a in acks:
            cb = a._on_settle
            done = cb(ok) if cb is not None else a.settled(ok)
            if done is not None:
                if pending is None:
                    pending = []
                pending.append(done)
        return None if pending is None else _await_in_order(pending)


async def _await_in_order(pending: list[Awaitable[None]]) -> None:
    for done in pending:
        await done


def _settled_handle(state: AckState) -> Ack:
    handle = Ack()
    handle._state = state
    return handle


#: What a lazy record's ``ack`` reads once :func:`ack_all` / :func:`nack_all` settled it
#: without a handle: a handle in that state (settling it again raises AckError).
_SETTLED: dict[AckState, Ack] = {s: _settled_handle(s) for s in ("acked", "nacked")}


class Settler(ABC):
    """What a source can put in a :class:`LazyAckRecord`'s ``ack`` field instead of a
    handle: one object for many records (a fetched run, a batch), that makes a record's
    handle only when ``record.ack`` is first read, and settles whole batches of records
    whose handle was never made (:func:`ack_all`, :func:`nack_all`) without making one.

    A record that downstream acknowledges with ``ack_all`` then costs the source one object
    (the Record) instead of two. Besides the time to make the handle, every object that
    lives as long as its record is work for the garbage collector: a gen-0 collection comes
    once 700 more objects are alive than at the last one, and what it finds alive is promoted
    and traversed again by later, full collections (``byteor bench adapters``: about half of
    the Kafka source's CPU time before it made one object per record).
    """

    __slots__ = ()

    @abstractmethod
    def make_ack(self, record: LazyAckRecord) -> Ack:
        """The handle of ``record`` (one of ours, pending), made when first asked for."""

    @abstractmethod
    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> Awaitable[None] | None:
        """Settle ``records`` (ours, each pending and once, in batch order) as their handles'
        ``ack`` (``ok``) or ``nack`` would have one by one; a plain method when telling the
        source needs no I/O, else it returns an awaitable."""

    def settle_batch(self, batch: RecordBatch, ok: bool) -> Awaitable[None] | None:
        """Settle every record of ``batch`` (one of ours, whole, pending and once; already
        marked settled) as :meth:`settle` would have them: what :func:`ack_all` /
        :func:`nack_all` of a whole :class:`RecordBatch` call. Override to settle from the
        batch's columns without its records.

        The default makes the batch's records (they read as settled) and hands them to
        :meth:`settle`, so a Settler written before batches existed keeps working.
        """
        return self.settle(cast("list[LazyAckRecord]", batch.records()), ok)

    def settled_ack(self, state: AckState) -> Ack:
        """What ``ack`` reads for one of our records once ``ack_all`` / ``nack_all`` settled
        it: a handle in ``state`` that refuses to settle again (asked once per call, may be
        shared). Override to keep something the record needs reachable from it."""
        return _SETTLED[state]


async def ack_all(records: Iterable[Record]) -> None:
    """``ack`` every record of a batch: what downstream does once every sink confirmed it.

    Each record settles as with ``await record.ack.ack()``, but the batch costs one coroutine
    instead of one per record, a source's :meth:`Ack.settled_all` or :meth:`Settler.settle`
    takes its records at once, and a :class:`LazyAckRecord` needs no handle made. Records
    with handles settle first, then lazy ones, each source's in batch order. If any record
    was settled before (or appears twice), AckError is raised and this call settles none.
    A whole :class:`RecordBatch` settles through its Settler's :meth:`Settler.settle_batch`,
    without its records.
    """
    if isinstance(records, RecordBatch):
        await records._settle("acked", True)
        return
    await _settle_all(records, "acked", True)


async def nack_all(records: Iterable[Record]) -> None:
    """``nack`` every record of a batch (deliver them again), like :func:`ack_all`."""
    if isinstance(records, RecordBatch):
        await records._settle("nacked", False)
        return
    await _settle_all(records, "nacked", False)


_NOTHING = object()


async def _settle_all(records: Iterable[Record], state: AckState, ok: bool) -> None:
    handles: list[Ack] = []
    lazy: list[tuple[Settler, list[LazyAckRecord]]] = []
    last: object = _NOTHING  # the Settler of the record before, if it had one
    mark: Ack | None = None
    same: list[LazyAckRecord] = []
    get, put = _get_ack, _set_ack
    for r in records:
        held = get(r)
        if held is last:  # the common case: one Settler for a run of records
            same.append(r)  # type: ignore[arg-type]
            put(r, mark)
            continue
        if isinstance(held, Ack):
            if held._state != "pending":  # settled before, or twice in the batch
                _undo(handles, lazy)
                raise AckError(f"acknowledgement already settled ({held._state})")
            held._state = state
            handles.append(held)
        else:  # a Settler: no handle was made, so the record is pending
            last, mark, same = held, held.settled_ack(state), [r]  # type: ignore[list-item]
            lazy.append((held, same))
            put(r, mark)
    if handles:
        kind = handles[0].__class__
        if all(h.__class__ is kind for h in handles):
            done = kind.settled_all(handles, ok)
            if done is not None:
                await done
        else:
            by_kind: dict[type[Ack], list[Ack]] = {}
            for h in handles:  # one call per class, each in batch order
                by_kind.setdefault(h.__class__, []).append(h)
            for group_kind, group in by_kind.items():
                done = group_kind.settled_all(group, ok)
                if done is not None:
                    await done
    for settler, group_records in lazy:
        done = settler.settle(group_records, ok)
        if done is not None:
            await done


def _undo(handles: list[Ack], lazy: list[tuple[Settler, list[LazyAckRecord]]]) -> None:
    """Put back what :func:`_settle_all` changed before it found a settled record."""
    for h in handles:
        h._state = "pending"
    for settler, group in lazy:
        for r in group:
            _set_ack(r, settler)


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

_ack_slot = vars(Record)["ack"]
#: A record's ``ack`` slot as stored (a LazyAckRecord may hold its Settler there).
_get_ack: Callable[[Record], Ack | Settler] = _ack_slot.__get__
_set_ack: Callable[[Record, Ack | Settler | None], None] = _ack_slot.__set__


class LazyAckRecord(Record):
    """A :class:`Record` whose ``ack`` field may hold the source's :class:`Settler` instead
    of a handle: reading ``record.ack`` makes the handle then (once; it is kept), and
    :func:`ack_all` / :func:`nack_all` settle such records without making one. Otherwise a
    Record: same fields, frozen, equal by value."""

    __slots__ = ()

    @property
    def ack(self) -> Ack:
        held = _get_ack(self)
        if isinstance(held, Ack):
            return held
        handle = held.make_ack(self)
        _set_ack(self, handle)
        return handle

    @ack.setter
    def ack(self, value: Ack | Settler) -> None:
        # Reached only through object.__setattr__ (copy, pickle): Record.__setattr__ refuses.
        _set_ack(self, value)

    def __eq__(self, other: object) -> bool:
        # Equal to any Record of the same value (the dataclass's __eq__ wants the same class).
        if not isinstance(other, Record):
            return NotImplemented
        return (self.payload, self.key, self.headers, self.position) == (
            other.payload,
            other.key,
            other.headers,
            other.position,
        )

    __hash__ = Record.__hash__


#: What :func:`make_records` takes per record: payload, key, headers, position, and the
#: ack handle (or, for a LazyAckRecord, the Settler that stands in for it).
RecordRow = tuple[bytes, "bytes | None", Headers, object, "Ack | Settler"]


def _blank_of(cls: type[Record]) -> type | None:
    """A plain class with exactly ``cls``'s slots, whose instances can become ``cls``
    instances by assigning ``__class__`` (same layout); None where the interpreter refuses."""
    blank = type(f"_Blank{cls.__name__}", (), {"__slots__": tuple(f.name for f in fields(cls))})
    try:
        probe = blank()
        probe.__class__ = cls
    except TypeError:
        return None
    return blank


_BLANK = _blank_of(Record)
#: Classes whose instances make_records may make from a blank (checked once each).
_SAME_LAYOUT: set[type[Record]] = {Record}


def record_blank(cls: type[Record] = Record) -> type | None:
    """The plain class :func:`make_records` fills for ``cls``, for a source whose rows are
    not tuples of five (a driver's row objects): an instance of it, its five slots
    (``payload``, ``key``, ``headers``, ``position``, ``ack``) set by plain attribute stores,
    becomes a ``cls`` by ``blank.__class__ = cls``, without a tuple made per row for
    :func:`make_records`. None where the interpreter refuses the class change (build with
    ``cls(...)`` then); TypeError when ``cls`` adds slots to Record."""
    blank = _BLANK
    if blank is None:  # pragma: no cover - an interpreter that refuses the class change
        return None
    if cls not in _SAME_LAYOUT:
        try:
            blank().__class__ = cls
        except TypeError:
            raise TypeError(
                f"make_records: {cls.__qualname__} adds slots to Record; give it"
                " __slots__ = () or build its records with its constructor"
            ) from None
        _SAME_LAYOUT.add(cls)
    return blank


def make_records(rows: Iterable[RecordRow], cls: type[Record] = Record) -> list[Record]:
    """``[cls(*row) for row in rows]``, in about a third of the time; ``cls`` is
    :class:`Record` or a subclass that adds no slots (e.g. a :class:`LazyAckRecord`).

    A source builds one Record per message, and the frozen dataclass's ``__init__`` (even the
    fast one above) is a Python call setting five slots through their descriptors, ~250 ns
    on the project's machine. Here each record starts as an instance of a plain class with
    the same slots, is filled with ordinary attribute stores, then becomes a ``cls`` by
    assigning ``__class__`` (allowed between classes of identical layout): ~100 ns. The
    results are ordinary, frozen records.
    """
    blank = record_blank(cls)
    if blank is None:  # pragma: no cover - an interpreter that refuses the class change
        return [cls(*row) for row in rows]  # type: ignore[arg-type]
    out: list[Record] = []
    append = out.append
    for payload, key, headers, position, ack in rows:
        r = blank()
        r.payload = payload
        r.key = key
        r.headers = headers
        r.position = position
        r.ack = ack
        r.__class__ = cls
        append(r)
    return out


_Positions = Sequence[object] | Callable[[], Sequence[object]]


def _check_positions(positions: Sequence[object], n: int) -> None:
    if len(positions) != n:
        raise ValueError(
            f"RecordBatch: {len(positions)} positions for {n} payloads; give one per payload"
        )


class RecordBatch(Sequence[Record]):
    """A source's batch as columns: an immutable sequence of :class:`LazyAckRecord` made
    from them only when read (see the module docstring).

    Args:
        payloads: one payload per record.
        keys: one key per record, or None when every key is None.
        headers: one headers tuple per record, or None when every record has none.
        positions: one position per record, or a function that gives them (called once,
            when a record is first made, or the positions read).
        settler: the Settler of every record of the batch.

    ``payloads``, ``keys`` and ``headers`` are the columns as given (not copies: read them,
    do not change them). Indexing or iterating makes each record once and keeps it, so
    ``batch[i] is batch[i]`` and ``batch[i].ack`` is the record's handle as for any
    LazyAckRecord. Equal to a list (or batch) of equal records; ``+`` gives a list.

    A source whose records are its own kind of LazyAckRecord (one that adds no slots) sets
    :attr:`record_class` on a subclass, and overrides :meth:`slot_positions` when that
    class keeps something else than the position in the slot.
    """

    #: The class of the records made: :class:`LazyAckRecord` or a subclass adding no slots.
    record_class: ClassVar[type[LazyAckRecord]] = LazyAckRecord

    __slots__ = (
        "payloads",
        "keys",
        "headers",
        "_positions",
        "settler",
        "_made",
        "_whole",
        "_state",
    )

    def __init__(
        self,
        payloads: list[bytes],
        keys: list[bytes | None] | None,
        headers: list[Headers] | None,
        positions: _Positions,
        settler: Settler,
    ) -> None:
        n = len(payloads)
        for name, column in (("keys", keys), ("headers", headers)):
            if column is not None and len(column) != n:
                raise ValueError(
                    f"RecordBatch: {len(column)} {name} for {n} payloads; give one per payload,"
                    " or None when every record has none"
                )
        if not callable(positions):
            _check_positions(positions, n)
        self.payloads = payloads
        self.keys = keys
        self.headers = headers
        self._positions = positions
        self.settler = settler
        #: The records made so far, by index (None: not made); None until one is made.
        self._made: list[Record | None] | None = None
        self._whole = False  # every record made
        self._state: AckState = "pending"  # settled as a whole by ack_all / nack_all

    @property
    def state(self) -> AckState:
        """``pending`` until :func:`ack_all` / :func:`nack_all` settled the whole batch
        (records settled one by one leave it pending)."""
        return self._state

    @property
    def positions(self) -> Sequence[object]:
        """The position of each record (the source's function called the first time)."""
        positions = self._positions
        if callable(positions):
            positions = self._positions = positions()
            _check_positions(positions, len(self.payloads))
        return positions

    def __len__(self) -> int:
        return len(self.payloads)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return self.records()[index]
        n = len(self.payloads)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("RecordBatch index out of range")
        made = self._made
        if made is None:
            made = self._made = [None] * n
        r = made[index]
        if r is None:
            r = made[index] = self._make(index)
        return r

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordBatch | list):
            return self.records() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Iterable[Record]) -> list[Record]:
        if isinstance(other, RecordBatch | list):
            return self.records() + list(other)
        return NotImplemented

    def __radd__(self, other: Iterable[Record]) -> list[Record]:
        if isinstance(other, list):
            return other + self.records()
        return NotImplemented

    def __repr__(self) -> str:
        return f"<RecordBatch of {len(self.payloads)} records, {self._state}>"

    def records(self) -> list[Record]:
        """Every record of the batch, in order (a new list; each record is made once)."""
        made = self._made
        if made is None:  # none made yet: all at once
            made = self._made = self._make_all()  # type: ignore[assignment]
        elif not self._whole:
            make = self._make
            for i, r in enumerate(made):
                if r is None:
                    made[i] = make(i)
        self._whole = True
        return made.copy()  # type: ignore[union-attr,return-value]

    def _ack(self) -> Ack | Settler:
        state = self._state
        return self.settler if state == "pending" else self.settler.settled_ack(state)

    def slot_positions(self) -> Sequence[object]:
        """What each record made holds in its ``position`` slot: :attr:`positions`. A
        subclass whose :attr:`record_class` makes a record's position when it is read (from
        an id, an ack subject) gives what that is made from, so that no position is made
        before one is asked for."""
        return self.positions

    def _make(self, i: int) -> Record:
        keys, headers = self.keys, self.headers
        return self.record_class(
            self.payloads[i],
            None if keys is None else keys[i],
            () if headers is None else headers[i],
            self.slot_positions()[i],
            self._ack(),  # type: ignore[arg-type]
        )

    def _make_all(self) -> list[Record]:
        """Every record, none made before, by :func:`make_records` (one ack handle for all)."""
        keys, headers = self.keys, self.headers
        rows = zip(
            self.payloads,
            repeat(None) if keys is None else keys,
            repeat(()) if headers is None else headers,
            self.slot_positions(),
            repeat(self._ack()),
            strict=False,  # a column of None / () and the handle are repeats
        )
        return make_records(rows, self.record_class)

    async def _settle(self, state: AckState, ok: bool) -> None:
        """The whole batch settles: at most one look at each record made (none made: O(1)),
        then one :meth:`Settler.settle_batch`. AckError, and nothing settled, when the batch
        or one of its records was settled before."""
        if self._state != "pending":
            raise AckError(f"acknowledgement already settled (the batch was {self._state})")
        settler, made = self.settler, self._made
        handles: list[Ack] = []
        if made is not None:
            for r in made:
                if r is None:
                    continue
                held = _get_ack(r)
                if held is settler:
                    continue
                if not isinstance(held, Ack) or held._state != "pending":
                    state_was = held._state if isinstance(held, Ack) else "settled"
                    raise AckError(
                        f"acknowledgement already settled ({state_was}): a record of this"
                        " batch was settled on its own; settle the others one by one"
                    )
                handles.append(held)  # made and not settled: the batch settles it
        self._state = state
        if made is not None:
            mark = settler.settled_ack(state)
            for h in handles:
                h._state = state
            for r in made:
                if r is not None and _get_ack(r) is settler:
                    _set_ack(r, mark)
        done = settler.settle_batch(self, ok)
        if done is not None:
            await done
