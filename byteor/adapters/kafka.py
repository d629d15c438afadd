"""``adapter = kafka``: Kafka topics through consumer groups (``pip install 'byteor[kafka]'``).

Source, theory of operation. An ``AIOKafkaConsumer`` joins a consumer group with automatic
commits off. The records of a partition that one ``next_batch`` hands out make one *run* in
the partition's ledger (runs in offset order): the run's first offset and a byte per offset
(out, acked, or no record there). ``ack`` marks the record's byte; the partition's
*watermark* moves past every leading run with nothing out, and past the acknowledged start
of the first run still out. The offset committed for a partition is the watermark: one past
the highest offset such that every record up to it was acknowledged, so a commit never runs
ahead of an unsettled record. Commits go out in the background (one in flight at a time,
started by ``next_batch``), and are awaited by :meth:`KafkaSource.commit`, by a rebalance and
by ``stop``.

Per record the source makes one object, the Record: it holds its offset in place of the
:class:`KafkaPosition` and its run in place of the ack handle (a :class:`LazyAckRecord`),
both made only when read; :func:`ack_all` settles a batch on the runs directly. Everything
else per record (aiokafka's own record objects included) is let go as the batch is built, so
the garbage collector rarely runs (``byteor bench adapters``: about 1.2 us of CPU a record
where aiokafka alone costs 1.05).

``nack`` of offset *o* seeks the partition back to *o*: the record and what follows it in the
partition are delivered again, in order, except records already acknowledged (their runs
are kept, and acknowledged offsets skipped when they come back). A rebalance listener
commits each partition's watermark before the partition is given up, then forgets its
ledger; acknowledgements that arrive later for a forgotten partition change nothing (the new
owner starts from the commit). ``pause`` pauses every assigned partition (and those assigned
later) in the consumer, which keeps heartbeating. ``stop`` commits the watermarks and leaves
the group; whatever was not acknowledged is delivered again to the next member.

Sink: an ``AIOKafkaProducer`` with ``acks="all"``; a batch is confirmed once the future of
every record in it resolved. The idempotent producer stays off (Tansu, the test broker,
refuses it); a retried batch may therefore write some records twice (at-least-once).

Topics must exist: both sides check on start, from the cluster's full metadata (asking about
one topic can make a broker create it). Client errors are translated at the boundary:
unreachable brokers and timeouts into :class:`AdapterUnreachable`, unknown topics into
:class:`AdapterNotFound`, refused credentials into :class:`AdapterAuthError`; other Kafka
errors keep their ``retriable`` flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

# aiokafka ships no type hints (no py.typed): its names are Any to mypy.
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka import errors as kerr

from byteor.adapters._backoff import Backoff, retry
from byteor.adapters._config import ConfigField, ConfigSchema, ConfigValue
from byteor.adapters._contract import Adapter, Capabilities, Health, Sink, Source
from byteor.adapters._errors import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
    AdapterUnreachable,
    map_errors,
)
from byteor.adapters._record import (
    Ack,
    AckState,
    LazyAckRecord,
    OutRecord,
    Record,
    RecordRow,
    Settler,
    _get_ack,
    make_records,
)
from byteor.spec import Delivery

__all__ = ["KafkaAdapter", "KafkaSource", "KafkaSink", "KafkaPosition", "Security"]

log = logging.getLogger("byteor.adapters.kafka")

_ERRORS: dict[type[BaseException], type[AdapterError]] = {
    kerr.SaslAuthenticationFailed: AdapterAuthError,
    kerr.AuthenticationFailedError: AdapterAuthError,
    kerr.AuthenticationMethodNotSupported: AdapterAuthError,
    kerr.TopicAuthorizationFailedError: AdapterAuthError,
    kerr.GroupAuthorizationFailedError: AdapterAuthError,
    kerr.ClusterAuthorizationFailedError: AdapterAuthError,
    kerr.UnknownTopicOrPartitionError: AdapterNotFound,
    kerr.KafkaConnectionError: AdapterUnreachable,
    kerr.KafkaTimeoutError: AdapterUnreachable,
    kerr.RequestTimedOutError: AdapterUnreachable,
    kerr.NodeNotReadyError: AdapterUnreachable,
    kerr.ConsumerStoppedError: AdapterError,
    TimeoutError: AdapterUnreachable,
    OSError: AdapterUnreachable,
}

#: Retrying a commit that failed retriably (aiokafka already retries inside one call).
RECONNECT = Backoff(initial_s=0.05, max_s=2.0, max_attempts=20)


@contextlib.contextmanager
def _mapped(address: str, what: str = "") -> Iterator[None]:
    """:func:`map_errors` for aiokafka; Kafka errors it does not name keep their
    ``retriable`` flag."""
    try:
        with map_errors("kafka", address, _ERRORS, what=what):
            yield
    except kerr.KafkaError as exc:
        raise AdapterError(
            f"kafka: {type(exc).__name__}: {exc} (brokers {address})",
            adapter="kafka",
            address=address,
            retriable=bool(getattr(exc, "retriable", False)),
        ) from exc


def _translate(exc: BaseException, address: str, what: str) -> AdapterError:
    """The error ``exc`` becomes at the boundary (for exceptions caught, not raised)."""
    try:
        with _mapped(address, what):
            raise exc
    except AdapterError as err:
        return err
    except Exception:
        return AdapterError(
            f"kafka: {type(exc).__name__}: {exc} (brokers {address})",
            adapter="kafka",
            address=address,
        )


def _topic_names(topics: Iterable[str]) -> str:
    names = [repr(t) for t in topics]
    return ("topic " if len(names) == 1 else "topics ") + ", ".join(names)


class Security(NamedTuple):
    """How to talk to the brokers: ``security_protocol``, SASL credentials, and the CA file
    that TLS checks the brokers against (empty: the system's)."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "PLAIN"
    username: str = ""
    password: str = ""
    cafile: str = ""

    def client_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            args["ssl_context"] = ssl.create_default_context(cafile=self.cafile or None)
        if self.protocol.startswith("SASL"):
            args["sasl_mechanism"] = self.mechanism
            args["sasl_plain_username"] = self.username
            args["sasl_plain_password"] = self.password
        return args


#: No TLS, no SASL.
PLAINTEXT = Security()


class KafkaPosition(NamedTuple):
    """Where a record sits: its topic, partition and offset."""

    topic: str
    partition: int
    offset: int


#: A run's mark per offset: handed out and not settled; acknowledged; no record there.
_OUT, _ACKED, _GAP = 0, 1, 2
_OUT_BYTE, _ACKED_BYTE = bytes([_OUT]), bytes([_ACKED])


class _Run(Settler):
    """The records of one partition handed out by one ``next_batch``: one ledger entry for
    the lot instead of one per record, and the :class:`Settler` in their ``ack`` field.

    ``marks`` has a byte per offset from ``base`` to ``end - 1``: ``_OUT`` for a record
    handed out and not acknowledged, ``_ACKED``, or ``_GAP`` for an offset without a record
    (a control record, a compacted one), which holds nothing back. ``left`` counts the
    ``_OUT`` marks. Acknowledging a record is a byte store and a decrement.

    ``sole`` holds while every ``_OUT`` mark belongs to exactly one record that still has the
    run in its ``ack`` field (no handle made, nothing redelivered into the run, nothing
    nacked): then ``ack_all`` of ``left`` of the run's records is all of them, and the run is
    acknowledged at once.
    """

    __slots__ = ("part", "base", "end", "marks", "left", "sole")

    def __init__(self, part: _Partition, base: int, end: int, marks: bytearray, left: int) -> None:
        self.part, self.base, self.end, self.marks, self.left = part, base, end, marks, left
        self.sole = True

    def ack(self, index: int) -> None:
        """Mark the record at ``base + index`` acknowledged (once: a second handle of the same
        record changes nothing); a run with nothing left out lets the watermark past it."""
        marks = self.marks
        if marks[index]:
            return
        marks[index] = _ACKED
        self.left -= 1
        if not self.left:
            self.part.drop_done()

    # -- Settler: records handed out with the run in their ack field

    def make_ack(self, record: LazyAckRecord) -> Ack:
        self.sole = False  # this record's mark now belongs to its handle
        return _RecordAck(self, _stored_position(record) - self.base)

    def settled_ack(self, state: AckState) -> Ack:
        return _RecordAck(self, -1, state)  # keeps the run (and so the position) reachable

    def settle(self, records: Sequence[LazyAckRecord], ok: bool) -> None:
        base = self.base
        if not ok:
            self.sole = False  # their marks stay out, with no record to settle them
            for r in records:
                _RecordAck(self, _stored_position(r) - base, "nacked").settled(False)
            return
        if self.sole and len(records) == self.left:
            # Distinct, pending, ours (ack_all checks): with `sole`, every record out.
            self.marks = self.marks.replace(_OUT_BYTE, _ACKED_BYTE)
            self.left = 0
            self.part.drop_done()
            return
        marks = self.marks
        left = self.left
        for r in records:  # ack() inline: this runs once per record
            i = _stored_position(r) - base
            if not marks[i]:
                marks[i] = _ACKED
                left -= 1
        self.left = left
        if not left:
            self.part.drop_done()


class _Partition:
    """One assigned partition's acknowledgement ledger: the runs handed out above the
    watermark, offsets ascending.

    ``done_to`` is one past the last run dropped (everything below it acked); ``high`` one
    past the highest offset a run covers; ``next_offset`` the next offset to hand out (after
    a nack: the rewind point). ``live`` turns False when the partition is given up or the
    source stops: a nack that arrives later seeks nothing (an ack only marks a ledger that
    nothing reads any more).
    """

    __slots__ = ("tp", "source", "runs", "done_to", "high", "committed", "next_offset", "live")

    def __init__(self, tp: TopicPartition, source: KafkaSource | None = None) -> None:
        self.tp, self.source = tp, source
        self.runs: deque[_Run] = deque()
        self.done_to: int | None = None
        self.high: int | None = None
        self.committed: int | None = None
        self.next_offset: int | None = None
        self.live = True

    def admit_run(self, first: int, n: int) -> _Run | None:
        """One new run for ``n`` fetched records at consecutive offsets from ``first`` when
        all of them are new (the usual case), else None: use :meth:`admit`."""
        nxt, high = self.next_offset, self.high
        if (nxt is not None and first < nxt) or (high is not None and first < high):
            return None
        end = first + n
        self.next_offset = self.high = end
        run = _Run(self, first, end, bytearray(n), n)
        self.runs.append(run)
        return run

    def admit(self, offsets: Sequence[int]) -> list[_Run | None]:
        """Per fetched offset (ascending, as aiokafka hands them out) the run that holds it,
        or None to skip the record: fetched before a rewind, or acked already."""
        out: list[_Run | None] = []
        tail: list[int] = []
        for offset in offsets:
            nxt = self.next_offset
            if nxt is not None and offset < nxt:
                out.append(None)  # fetched before a rewind: it comes again after the seek
                continue
            self.next_offset = offset + 1
            if self.done_to is not None and offset < self.done_to:
                out.append(None)  # acked, and below the watermark
            elif self.high is not None and offset < self.high:
                out.append(self._again(offset))  # redelivered after a nack
            else:
                tail.append(offset)  # new: one run for all of them, below
        if tail:
            base, end = tail[0], tail[-1] + 1
            marks = bytearray([_GAP]) * (end - base)
            for offset in tail:
                marks[offset - base] = _OUT
            run = _Run(self, base, end, marks, len(tail))
            self.runs.append(run)
            self.high = end
            out += [run] * len(tail)
        return out

    def _again(self, offset: int) -> _Run | None:
        """The run of a redelivered ``offset`` below ``high``; None if it is acked. An offset
        no run covers, or one marked as a gap (never seen on a real log), is let in where it
        belongs."""
        runs = self.runs
        at = bisect_right(runs, offset, key=_base) - 1
        if at >= 0 and offset < runs[at].end:
            run = runs[at]
            run.sole = False  # a second record for the offset, or one where a gap was
            index = offset - run.base
            mark = run.marks[index]
            if mark == _ACKED:
                return None
            if mark == _GAP:
                run.marks[index] = _OUT
                run.left += 1
            return run
        run = _Run(self, offset, offset + 1, bytearray(1), 1)
        runs.insert(at + 1, run)
        return run

    def drop_done(self) -> None:
        """Let the watermark past the leading runs with nothing left out."""
        runs = self.runs
        while runs and not runs[0].left:
            self.done_to = runs.popleft().end

    def watermark(self) -> int | None:
        """One past the highest offset with every record up to it acknowledged."""
        mark = self.done_to
        if self.runs:
            run = self.runs[0]
            out = run.marks.find(_OUT)  # >= 0: a first run with nothing out is dropped
            if out > 0:
                mark = run.base + out
        return mark

    def due(self) -> int | None:
        """The offset to commit, when the watermark is past the last commit."""
        mark = self.watermark()
        if mark is None or (self.committed is not None and mark <= self.committed):
            return None
        return mark


_base = attrgetter("base")
_value = itemgetter(1)
_stored_position = vars(Record)["position"].__get__
_store_position = vars(Record)["position"].__set__

_Due = dict[TopicPartition, tuple[_Partition, int]]


class _RecordAck(Ack):
    """A record's acknowledgement handle, made when ``record.ack`` is first read: the run
    and the record's index in it. Settling marks the run, without I/O (the commit goes out
    later), so ``settled`` is a plain method, and :meth:`settled_all` marks a whole batch
    in one loop."""

    __slots__ = ("_run", "_index")

    def __init__(self, run: _Run, index: int, state: AckState = "pending") -> None:
        self._on_settle = None
        self._state = state
        self._run, self._index = run, index

    def settled(self, ok: bool) -> None:
        run = self._run
        if ok:
            run.ack(self._index)
            return
        part = run.part
        if part.live and part.source is not None and not run.marks[self._index]:
            part.source._rewind(part, run.base + self._index)

    @classmethod
    def settled_all(cls, acks: Sequence[_RecordAck], ok: bool) -> None:
        if not ok:
            for a in acks:
                a.settled(False)
            return
        for a in acks:  # _Run.ack inline: this runs once per record
            run = a._run
            marks = run.marks
            i = a._index
            if marks[i]:
                continue
            marks[i] = _ACKED
            run.left -= 1
            if not run.left:
                run.part.drop_done()


class _KafkaRecord(LazyAckRecord):
    """A record from Kafka, handed out with its offset in the ``position`` field and its run
    in the ``ack`` field: the :class:`KafkaPosition` and the ack handle are made when asked
    for, instead of two more objects per record that live as long as it does (see
    :class:`Settler`). Otherwise a :class:`Record` (same fields, frozen; a position given
    to the constructor, e.g. by ``dataclasses.replace``, is kept)."""

    __slots__ = ()

    @property
    def position(self) -> object:
        stored = _stored_position(self)
        if stored.__class__ is not int:
            return stored
        held = _get_ack(self)
        run = held if isinstance(held, _Run) else held._run  # type: ignore[union-attr]
        tp = run.part.tp
        return KafkaPosition(tp.topic, tp.partition, stored)

    @position.setter
    def position(self, value: object) -> None:
        # Reached only through object.__setattr__ (copy, pickle): Record.__setattr__ refuses.
        _store_position(self, value)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards aiokafka's rebalance callbacks to the source."""

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._source._on_assigned(assigned)


class KafkaSource(Source):
    """Reads topics as a member of a consumer group; commits follow the acknowledgements."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        group: str,
        *,
        client_id: str = "byteor",
        start_at: str = "earliest",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        fetch_max_wait_ms: int = 500,
        max_partition_fetch_bytes: int = 1 << 20,
        request_timeout_ms: int = 40_000,
        commit_interval_ms: int = 0,
        commit_timeout_ms: int = 10_000,
        join_timeout_ms: int = 30_000,
        security: Security = PLAINTEXT,
        backoff: Backoff = RECONNECT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._address = bootstrap_servers
        self._topics = tuple(topics)
        self._group = group
        self._consumer_args: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=start_at,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            request_timeout_ms=request_timeout_ms,
            **security.client_args(),
        )
        self._commit_interval_s = commit_interval_ms / 1000
        self._commit_timeout_s = commit_timeout_ms / 1000
        self._join_timeout_s = join_timeout_ms / 1000
        self._backoff, self._sleep = backoff, sleep
        self._consumer: AIOKafkaConsumer | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._paused = False
        self._assigned: asyncio.Event | None = None  # made in start(), on the running loop
        self._commit_task: asyncio.Task[None] | None = None
        self._commit_at = 0.0  # loop time before which no background commit starts
        self._commit_failures = 0
        self._failure: AdapterError | None = None  # a non-retriable commit error, raised next
        self._trouble = ""  # why the last commit could not reach the broker ("" when fine)

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return _mapped(self._address, _topic_names(self._topics))

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise AdapterError("kafka: source is not started", adapter="kafka")
        return self._consumer

    async def start(self) -> None:
        """Connect, check that the topics exist, join the group and wait (at most
        ``join_timeout_ms``) for the first partition assignment."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(**self._consumer_args)
        assigned = self._assigned = asyncio.Event()
        try:
            with self._errors():
                await consumer.start()
                existing = await consumer.topics()
                missing = [t for t in self._topics if t not in existing]
                if missing:
                    raise AdapterNotFound("kafka", self._address, _topic_names(missing))
                consumer.subscribe(list(self._topics), listener=_Listener(self))
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        try:
            await asyncio.wait_for(assigned.wait(), self._join_timeout_s)
        except TimeoutError:
            log.warning(
                "kafka: group %r gave no assignment within %.1f s; records arrive once it does",
                self._group,
                self._join_timeout_s,
            )

    # -- rebalancing (called by aiokafka's coordinator task) --------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what is acknowledged in ``revoked``, then forget their ledgers."""
        if self._consumer is not None and revoked:
            await self._settle_commit_task(self._commit_timeout_s)
            due = self._due(revoked)
            if due:
                try:
                    await self._commit(due)
                except AdapterError as exc:
                    log.warning(
                        "kafka: commit before giving up %s failed (%s); the new owner gets "
                        "their records again from the last commit",
                        sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked),
                        exc,
                    )
        for tp in revoked:
            part = self._parts.pop(tp, None)
            if part is not None:
                part.live = False

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            old = self._parts.get(tp)
            if old is not None:
                old.live = False  # a fresh ledger: old handles no longer count
            self._parts[tp] = _Partition(tp, self)
        if self._paused and assigned and self._consumer is not None:
            self._consumer.pause(*assigned)
        if self._assigned is not None:
            self._assigned.set()

    # -- acknowledgements and commits -------------------------------------------------------

    def _rewind(self, part: _Partition, offset: int) -> None:
        """A nack: the partition is read again from ``offset`` on (unless it already is)."""
        consumer = self._consumer
        if consumer is None or (part.next_offset is not None and offset >= part.next_offset):
            return
        try:
            consumer.seek(part.tp, offset)
        except kerr.IllegalStateError:
            return  # being revoked right now: redelivered from the commit
        part.next_offset = offset

    def _due(self, tps: Iterable[TopicPartition] | None = None) -> _Due:
        due: _Due = {}
        for tp in self._parts if tps is None else tps:
            part = self._parts.get(tp)
            if part is not None and (offset := part.due()) is not None:
                due[tp] = (part, offset)
        return due

    async def _commit(self, due: _Due) -> None:
        """One commit, bounded by ``commit_timeout_ms`` (aiokafka itself would wait for the
        coordinator forever)."""
        consumer = self._require()
        offsets = {tp: offset for tp, (_, offset) in due.items()}
        try:
            with self._errors():
                try:
                    await asyncio.wait_for(consumer.commit(offsets), self._commit_timeout_s)
                except TimeoutError:
                    raise AdapterUnreachable(
                        "kafka",
                        self._address,
                        f"no answer to a commit within {self._commit_timeout_s:g} s",
                    ) from None
        except AdapterUnreachable as exc:
            self._trouble = str(exc)
            raise
        self._trouble = ""
        for part, offset in due.values():
            if part.committed is None or offset > part.committed:
                part.committed = offset

    def _harvest(self, task: asyncio.Task[None]) -> None:
        """Take the outcome of a finished background commit."""
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            self._commit_failures = 0
            return
        if isinstance(exc, AdapterError) and exc.retriable:
            wait = self._backoff.delay(self._commit_failures)
            self._commit_failures += 1
            self._commit_at = asyncio.get_running_loop().time() + wait
            log.warning("kafka: commit failed, retrying in %.2f s: %s", wait, exc)
        elif isinstance(exc.__cause__, kerr.CommitFailedError | kerr.IllegalStateError):
            # The group rebalanced under the commit: the revoke callback committed what
            # it could, and the rest is redelivered by the new owner.
            log.info("kafka: commit overtaken by a rebalance: %s", exc)
        elif isinstance(exc, AdapterError):
            self._failure = exc
        else:
            self._failure = AdapterError(
                f"kafka: commit failed: {type(exc).__name__}: {exc}",
                adapter="kafka",
                address=self._address,
            )

    async def _settle_commit_task(self, timeout_s: float | None = None) -> None:
        task = self._commit_task
        if task is None:
            return
        if not task.done():
            await asyncio.wait({task}, timeout=timeout_s)
            if not task.done():
                return
        self._commit_task = None
        self._harvest(task)

    def _maybe_commit(self) -> None:
        """Start a background commit when the watermark moved and none is in flight."""
        task = self._commit_task
        if task is not None:
            if not task.done():
                return
            self._commit_task = None
            self._harvest(task)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        now = asyncio.get_running_loop().time()
        if now < self._commit_at:
            return
        due = self._due()
        if due:
            self._commit_at = now + self._commit_interval_s
            self._commit_task = asyncio.create_task(self._commit(due))

    async def commit(self) -> None:
        """Commit every acknowledged offset now; return once the broker has them.

        Each attempt waits at most ``commit_timeout_ms``; retried with backoff while the
        broker is unreachable. ``next_batch`` commits in the background; this is for a
        caller that needs the checkpoint to be durable.
        """
        self._require()
        await self._settle_commit_task()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        due = self._due()
        if due:
            await retry(lambda: self._commit(due), self._backoff, sleep=self._sleep)

    # -- reading ----------------------------------------------------------------------------

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> list[Record]:
        consumer = self._require()
        self._maybe_commit()
        if self._paused:
            # Polling keeps the member in the group (max_poll_interval_ms); paused
            # partitions return nothing.
            with self._errors():
                self._give_back(await consumer.getmany(timeout_ms=0))
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            left_ms = max(0, int((deadline - loop.time()) * 1000))
            with self._errors():
                fetched = await consumer.getmany(timeout_ms=left_ms, max_records=max_records)
            out = self._hand_out(fetched)
            if out or left_ms == 0 or self._paused:
                return out

    def _give_back(self, fetched: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Return fetched records to the consumer: the next fetch starts at the first."""
        consumer = self._consumer
        for tp, msgs in fetched.items():
            if msgs and consumer is not None:
                with contextlib.suppress(kerr.IllegalStateError):
                    consumer.seek(tp, msgs[0].offset)

    def _hand_out(self, fetched: Mapping[TopicPartition, Sequence[Any]]) -> list[Record]:
        rows: list[RecordRow] = []
        append = rows.append
        for tp, msgs in fetched.items():
            part = self._parts.get(tp)
            if part is None:
                # The fetch raced a rebalance (revoked, or assigned and not yet announced):
                # give the records back so that they come again under a ledger.
                self._give_back({tp: msgs})
                continue
            if not msgs:
                continue
            n = len(msgs)
            first = msgs[0].offset
            run = part.admit_run(first, n) if msgs[-1].offset - first + 1 == n else None
            runs: Iterable[_Run | None] = (
                repeat(run, n) if run is not None else part.admit([m.offset for m in msgs])
            )
            # Each of aiokafka's records is let go as soon as ours replaces it (popped off
            # getmany's list, which is ours, reversed): at most about one new object per
            # record is alive at a time, so a batch of 500 makes no gen-0 collection (with
            # the list kept whole it made one a batch, promoting the batch: 1.6 instead of
            # 1.2 us of CPU a record in `byteor bench adapters`).
            mine = msgs if isinstance(msgs, list) else list(msgs)
            mine.reverse()
            pop = mine.pop
            for run in runs:
                m = pop()
                if run is None:
                    continue
                headers = m.headers
                if headers:
                    headers = tuple(headers)
                    if None in map(_value, headers):  # a null header value
                        headers = tuple((k, b"" if v is None else v) for k, v in headers)
                else:
                    headers = ()
                value = m.value
                # The offset stands in for the position and the run for the ack handle
                # (_KafkaRecord): both are made when asked for.
                append((b"" if value is None else value, m.key, headers, m.offset, run))
        return make_records(rows, _KafkaRecord)

    # -- back-pressure, stop, health --------------------------------------------------------

    def pause(self) -> None:
        self._paused = True
        if self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        if self._consumer is not None:
            self._consumer.resume(*self._consumer.assignment())

    @property
    def paused(self) -> bool:
        return self._paused

    async def stop(self) -> None:
        """Commit the watermarks (within ``commit_timeout_ms``) and leave the group."""
        consumer = self._consumer
        if consumer is None:
            return
        try:
            await self._settle_commit_task(self._commit_timeout_s)
            self._failure = None
            due = self._due()
            if due:
                await self._commit(due)
        except AdapterError as exc:
            log.warning(
                "kafka: commit at stop failed (%s); records above the last commit will be "
                "delivered again",
                exc,
            )
        finally:
            task, self._commit_task = self._commit_task, None
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            self._consumer = None
            for part in self._parts.values():
                part.live = False
            self._parts.clear()
            self._failure = None
            with contextlib.suppress(kerr.KafkaError):
                await consumer.stop()

    def health(self) -> Health:
        """Connected while the group's coordinator answers; lag summed over the assigned
        partitions whose highwater a fetch has reported (the next record to hand out up to
        the end of the partition)."""
        consumer = self._consumer
        if consumer is None:
            return Health(connected=False, detail="stopped")
        assigned = consumer.assignment()
        lag: int | None = None
        for tp, part in self._parts.items():
            if tp in assigned and part.next_offset is not None:
                high = consumer.highwater(tp)
                if high is not None:
                    lag = (lag or 0) + max(0, high - part.next_offset)
        if self._trouble:
            return Health(connected=False, lag=lag, detail=self._trouble)
        if self._assigned is None or not self._assigned.is_set():
            return Health(connected=True, lag=lag, detail=f"joining group {self._group!r}")
        # aiokafka has no public connection state; its group coordinator forgets the broker
        # it talks to as soon as a request to it fails, and finds it again on its own.
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is not None and getattr(coordinator, "coordinator_id", 0) is None:
            return Health(
                connected=False, lag=lag, detail=f"group coordinator lost ({self._address})"
            )
        return Health(connected=True, lag=lag)


class KafkaSink(Sink):
    """Produces to one topic with ``acks=all``; a batch returns once every record is acked."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        client_id: str = "byteor",
        linger_ms: int = 0,
        max_batch_size: int = 16_384,
        max_request_size: int = 1_048_576,
        compression: str = "none",
        request_timeout_ms: int = 40_000,
        security: Security = PLAINTEXT,
    ) -> None:
        self._address, self._topic = bootstrap_servers, topic
        self._producer_args: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=False,  # Tansu refuses InitProducerId; see docs/adapters.md
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
            max_request_size=max_request_size,
            compression_type=None if compression == "none" else compression,
            request_timeout_ms=request_timeout_ms,
            **security.client_args(),
        )
        self._producer: AIOKafkaProducer | None = None
        self._trouble = ""

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return _mapped(self._address, _topic_names([self._topic]))

    async def start(self) -> None:
        if self._producer is not None:
            return
        try:
            producer = AIOKafkaProducer(**self._producer_args)
        except RuntimeError as exc:  # a compression library is missing
            raise AdapterConfigError(
                f"kafka: {exc}; install the codec's library or use compression = gzip",
                adapter="kafka",
            ) from exc
        try:
            with self._errors():
                await producer.start()
                cluster = await producer.client.fetch_all_metadata()
                if self._topic not in cluster.topics():
                    raise AdapterNotFound("kafka", self._address, _topic_names([self._topic]))
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        producer = self._producer
        if producer is None:
            raise AdapterError("kafka: sink is not started", adapter="kafka")
        futures: list[asyncio.Future[Any]] = []
        refused: BaseException | None = None
        topic = self._topic
        try:
            for rec in records:
                futures.append(
                    await producer.send(
                        topic, rec.payload, key=rec.key, headers=list(rec.headers) or None
                    )
                )
        except Exception as exc:  # refused before it left: what was queued still goes out
            refused = exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), refused)
        if failed is None:
            self._trouble = ""
            return
        confirmed = sum(1 for r in results if not isinstance(r, BaseException))
        err = _translate(failed, self._address, _topic_names([self._topic]))
        err.args = (f"{err} ({confirmed} of {len(records)} records of the batch confirmed)",)
        if isinstance(err, AdapterUnreachable):
            self._trouble = str(err)
        raise err from failed

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(kerr.KafkaError):
                await producer.stop()

    def health(self) -> Health:
        if self._producer is None:
            return Health(connected=False, detail="stopped")
        if self._trouble:
            return Health(connected=False, detail=self._trouble)
        return Health(connected=True)


class KafkaAdapter(Adapter):
    name = "kafka"
    summary = "Apache Kafka / Redpanda topics (consumer groups)"
    extra = "kafka"
    client_module = "aiokafka"
    config = ConfigSchema(
        "kafka",
        (
            ConfigField("bootstrap_servers", str, "127.0.0.1:9092",
                        "host:port of one or more brokers, comma-separated"),
            ConfigField("topic", str, doc="the topic (a source may read several, comma-separated)"),
            ConfigField("group", str, "byteor", "source: consumer group id"),
            ConfigField("client_id", str, "byteor", "client id the brokers see"),
            ConfigField("start", str, "earliest", "source: where a group without commits starts",
                        ("earliest", "latest")),
            ConfigField("session_timeout_ms", int, 10_000,
                        "source: a member silent this long is dropped from the group"),
            ConfigField("heartbeat_interval_ms", int, 3_000,
                        "source: heartbeat period (well under the session timeout)"),
            ConfigField("max_poll_interval_ms", int, 300_000,
                        "source: leave the group when not polled this long"),
            ConfigField("fetch_max_wait_ms", int, 500,
                        "source: how long the broker may hold a fetch for data"),
            ConfigField("max_partition_fetch_bytes", int, 1 << 20,
                        "source: fetch size per partition"),
            ConfigField("commit_interval_ms", int, 0,
                        "source: least time between background commits (0: whenever acked)"),
            ConfigField("commit_timeout_ms", int, 10_000,
                        "source: how long stop and a rebalance wait for their commit"),
            ConfigField("join_timeout_ms", int, 30_000,
                        "source: how long start waits for the first assignment"),
            ConfigField("linger_ms", int, 0, "sink: wait this long to fill a producer batch"),
            ConfigField("max_batch_size", int, 16_384, "sink: producer batch size in bytes"),
            ConfigField("max_request_size", int, 1_048_576,
                        "sink: largest produce request (and record) in bytes"),
            ConfigField("compression", str, "none", "sink: compression codec",
                        ("none", "gzip", "snappy", "lz4", "zstd")),
            ConfigField("request_timeout_ms", int, 40_000,
                        "how long a request may take, retries included"),
            ConfigField("security_protocol", str, "PLAINTEXT", "how to talk to the brokers",
                        ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
            ConfigField("sasl_mechanism", str, "PLAIN", "SASL mechanism",
                        ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
            ConfigField("username", str, "", "SASL user"),
            ConfigField("password", str, "", "SASL password"),
            ConfigField("ssl_cafile", str, "", "TLS: CA file for the brokers (empty: system)"),
        ),
    )  # fmt: skip
    capabilities = Capabilities(
        source=Delivery(
            "at-least-once", "per-partition", "offsets committed after every sink confirmed"
        ),
        sink=Delivery("at-least-once", "per-partition", "acks=all, confirmed by the broker"),
        max_batch=10_000,
        backpressure="pause",
    )

    @staticmethod
    def _security(config: Mapping[str, ConfigValue]) -> Security:
        return Security(
            str(config["security_protocol"]),
            str(config["sasl_mechanism"]),
            str(config["username"]),
            str(config["password"]),
            str(config["ssl_cafile"]),
        )

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        topics = [t.strip() for t in str(config["topic"]).split(",") if t.strip()]
        return KafkaSource(
            str(config["bootstrap_servers"]),
            topics,
            str(config["group"]),
            client_id=str(config["client_id"]),
            start_at=str(config["start"]),
            session_timeout_ms=int(config["session_timeout_ms"]),
            heartbeat_interval_ms=int(config["heartbeat_interval_ms"]),
            max_poll_interval_ms=int(config["max_poll_interval_ms"]),
            fetch_max_wait_ms=int(config["fetch_max_wait_ms"]),
            max_partition_fetch_bytes=int(config["max_partition_fetch_bytes"]),
            request_timeout_ms=int(config["request_timeout_ms"]),
            commit_interval_ms=int(config["commit_interval_ms"]),
            commit_timeout_ms=int(config["commit_timeout_ms"]),
            join_timeout_ms=int(config["join_timeout_ms"]),
            security=self._security(config),
        )

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        topic = str(config["topic"]).strip()
        if "," in topic:
            raise AdapterConfigError(
                f"kafka: a sink writes one topic, got {topic!r}", adapter="kafka"
            )
        return KafkaSink(
            str(config["bootstrap_servers"]),
            topic,
            client_id=str(config["client_id"]),
            linger_ms=int(config["linger_ms"]),
            max_batch_size=int(config["max_batch_size"]),
            max_request_size=int(config["max_request_size"]),
            compression=str(config["compression"]),
            request_timeout_ms=int(config["request_timeout_ms"]),
            security=self._security(config),
        )
