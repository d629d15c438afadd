"""``adapter = kafka``: Kafka topics through consumer groups (``pip install 'byteor[kafka]'``).

Source, theory of operation. An ``AIOKafkaConsumer`` joins a consumer group with automatic
commits off. Every record handed out gets an entry in its partition's ledger (offsets in
ascending order); ``ack`` marks the entry, and the partition's *watermark* moves past every
leading acknowledged entry. The offset committed for a partition is the watermark: one past
the highest offset such that every record up to it was acknowledged, so a commit never runs
ahead of an unsettled record. Commits go out in the background (one in flight at a time,
started by ``next_batch``), and are awaited by :meth:`KafkaSource.commit`, by a rebalance and
by ``stop``.

``nack`` of offset *o* seeks the partition back to *o*: the record and what follows it in the
partition are delivered again, in order, except records already acknowledged (their entries
are kept and skipped when they come back). A rebalance listener commits each partition's
watermark before the partition is given up, then forgets its ledger; acknowledgements that
arrive later for a forgotten partition change nothing (the new owner starts from the
commit). ``pause`` pauses every assigned partition (and those assigned later) in the
consumer, which keeps heartbeating. ``stop`` commits the watermarks and leaves the group;
whatever was not acknowledged is delivered again to the next member.

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
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
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
from byteor.adapters._record import Ack, OutRecord, Record
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


class _Entry:
    """A handed-out record in its partition's ledger."""

    __slots__ = ("offset", "acked")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.acked = False


_offset = attrgetter("offset")
_value = itemgetter(1)


class _Partition:
    """One assigned partition's acknowledgement ledger.

    ``ledger`` holds the handed-out entries above the watermark, offsets ascending;
    ``done_to`` is the watermark (one past the last offset with everything up to it acked);
    ``next_offset`` the next offset to hand out (after a nack: the rewind point).
    """

    __slots__ = ("ledger", "done_to", "committed", "next_offset")

    def __init__(self) -> None:
        self.ledger: deque[_Entry] = deque()
        self.done_to: int | None = None
        self.committed: int | None = None
        self.next_offset: int | None = None

    def admit(self, offset: int) -> _Entry | None:
        """The entry for a fetched record, or ``None`` to skip it (stale, or acked already)."""
        nxt = self.next_offset
        if nxt is not None and offset < nxt:
            return None  # fetched before a rewind; what follows the rewind point comes again
        self.next_offset = offset + 1
        if self.done_to is not None and offset < self.done_to:
            return None  # acked, and below the watermark
        ledger = self.ledger
        if ledger and offset <= ledger[-1].offset:
            # Redelivered after a nack: the entry it had (an out-of-order offset, never seen
            # on a real log, is inserted where it belongs).
            at = bisect_left(ledger, offset, key=_offset)
            if ledger[at].offset == offset:
                entry = ledger[at]
                return None if entry.acked else entry
            entry = _Entry(offset)
            ledger.insert(at, entry)
            return entry
        entry = _Entry(offset)
        ledger.append(entry)
        return entry

    def ack(self, entry: _Entry) -> bool:
        """Mark ``entry`` acked; True when the watermark moved."""
        entry.acked = True
        ledger = self.ledger
        if ledger[0] is not entry:
            return False  # something below it is still out
        while ledger and ledger[0].acked:
            self.done_to = ledger.popleft().offset + 1
        return True

    def due(self) -> int | None:
        """The offset to commit, when the watermark is past the last commit."""
        if self.done_to is None or (self.committed is not None and self.done_to <= self.committed):
            return None
        return self.done_to


_Due = dict[TopicPartition, tuple[_Partition, int]]


class _RecordAck(Ack):
    """A record's acknowledgement: settling updates its partition's ledger, without I/O (the
    commit goes out later), so ``settled`` is a plain method and there is no closure."""

    __slots__ = ("_source", "_tp", "_part", "_entry")

    def __init__(
        self, source: KafkaSource, tp: TopicPartition, part: _Partition, entry: _Entry
    ) -> None:
        Ack.__init__(self)
        self._source, self._tp, self._part, self._entry = source, tp, part, entry

    def settled(self, ok: bool) -> None:
        part, entry = self._part, self._entry
        if self._source._parts.get(self._tp) is not part or entry.acked:
            return  # the partition was given up (or we stopped): its new owner redelivers
        if ok:
            part.ack(entry)
        else:
            self._source._rewind(self._tp, part, entry)


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
            self._parts.pop(tp, None)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._parts[tp] = _Partition()  # a fresh ledger: old handles no longer count
        if self._paused and assigned and self._consumer is not None:
            self._consumer.pause(*assigned)
        if self._assigned is not None:
            self._assigned.set()

    # -- acknowledgements and commits -------------------------------------------------------

    def _rewind(self, tp: TopicPartition, part: _Partition, entry: _Entry) -> None:
        """A nack: the partition is read again from ``entry`` on (unless it already is)."""
        consumer = self._consumer
        if consumer is None or (part.next_offset is not None and entry.offset >= part.next_offset):
            return
        try:
            consumer.seek(tp, entry.offset)
        except kerr.IllegalStateError:
            return  # being revoked right now: redelivered from the commit
        part.next_offset = entry.offset

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
        out: list[Record] = []
        for tp, msgs in fetched.items():
            part = self._parts.get(tp)
            if part is None:
                # The fetch raced a rebalance (revoked, or assigned and not yet announced):
                # give the records back so that they come again under a ledger.
                self._give_back({tp: msgs})
                continue
            topic, partition = tp.topic, tp.partition
            for m in msgs:
                entry = part.admit(m.offset)
                if entry is None:
                    continue
                headers = m.headers
                if headers:
                    headers = tuple(headers)
                    if None in map(_value, headers):  # a null header value
                        headers = tuple((k, b"" if v is None else v) for k, v in headers)
                else:
                    headers = ()
                out.append(
                    Record(
                        m.value if m.value is not None else b"",
                        m.key,
                        headers,
                        KafkaPosition(topic, partition, m.offset),
                        _RecordAck(self, tp, part, entry),
                    )
                )
        return out

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
