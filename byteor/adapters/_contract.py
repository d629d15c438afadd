"""The adapter contract: what a source and a sink promise, and how an adapter declares itself.

Sources and sinks are ABCs (users subclass them); every method that talks to the outside is
``async`` and never blocks the event loop. A source's :meth:`Source.next_batch` returns what
is ready, waiting at most ``timeout_s`` — an empty list is a normal answer. Back-pressure is
:meth:`Source.pause` / :meth:`Source.resume`: a paused source returns no new records (it may
keep redeliveries buffered) and stops asking upstream for more.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from byteor.adapters._config import ConfigSchema, ConfigValue
from byteor.adapters._record import OutRecord, Record
from byteor.spec import AdapterCapabilities, Delivery

__all__ = ["Backpressure", "Capabilities", "Health", "Source", "Sink", "Adapter"]

Backpressure = Literal["pause", "credit", "none"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter promises.

    Attributes:
        source: delivery guarantee and ordering scope as a source (``None``: cannot be one).
        sink: the same as a sink.
        max_batch: the largest batch one call moves (1: no batching).
        backpressure: ``pause`` (the source stops fetching when paused), ``credit``
            (the server bounds in-flight records, e.g. a prefetch), ``none``.
    """

    source: Delivery | None
    sink: Delivery | None
    max_batch: int
    backpressure: Backpressure


@dataclass(frozen=True, slots=True)
class Health:
    """A source's or sink's state right now. ``lag`` is records behind, when known."""

    connected: bool
    lag: int | None = None
    detail: str = ""


class Source(ABC):
    """Delivers batches of :class:`Record`, each with its acknowledgement."""

    @abstractmethod
    async def start(self) -> None:
        """Connect; after this, :meth:`next_batch` may be called."""

    @abstractmethod
    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> Sequence[Record]:
        """Up to ``max_records`` ready records, waiting at most ``timeout_s`` for the first:
        a list, or a :class:`~byteor.adapters.RecordBatch` (the same records, made from its
        columns when read)."""

    @abstractmethod
    def pause(self) -> None:
        """Stop taking new records from upstream (back-pressure)."""

    @abstractmethod
    def resume(self) -> None:
        """Take records again after :meth:`pause`."""

    @property
    @abstractmethod
    def paused(self) -> bool: ...

    @abstractmethod
    async def stop(self) -> None:
        """Stop cleanly: settled acknowledgements are flushed upstream, unsettled records
        stay with upstream for redelivery. Idempotent."""

    @abstractmethod
    def health(self) -> Health: ...


class Sink(ABC):
    """Writes batches; a write returns only once the system durably accepted all of it."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        """Write ``records``; return only when all are accepted, else raise AdapterError."""

    @abstractmethod
    async def stop(self) -> None:
        """Flush and close. Idempotent."""

    @abstractmethod
    def health(self) -> Health: ...


class Adapter(ABC):
    """What an entry point of the ``byteor.adapters`` group loads: one per adapter name."""

    name: ClassVar[str]
    summary: ClassVar[str]
    extra: ClassVar[str | None] = None
    client_module: ClassVar[str | None] = None
    config: ClassVar[ConfigSchema]
    capabilities: ClassVar[Capabilities]

    def source(self, params: Mapping[str, str]) -> Source:
        """A source configured from a spec node's params, validated here.

        ``params`` is what :class:`byteor.spec.SourceSpec` holds in ``params``: the spec's
        ``source.<name>.param.<k> = value`` lines with the ``source.<name>.param.`` prefix
        taken off, values as text. An executor hands that mapping over unchanged.

        Raises:
            AdapterConfigError: the params have error findings (all of them in the message).
        """
        return self.make_source(self.config.parse(params))

    def sink(self, params: Mapping[str, str]) -> Sink:
        """A sink configured from a spec node's params (``sink.<name>.param.<k>``)."""
        return self.make_sink(self.config.parse(params))

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        raise NotImplementedError(f"{self.name} cannot be a source")

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        raise NotImplementedError(f"{self.name} cannot be a sink")

    def capabilities_with(self, config: Mapping[str, ConfigValue]) -> Capabilities:
        """What the adapter promises configured with ``config`` (typed, defaults filled in).

        The class's :attr:`capabilities` unless a setting changes the promise (core NATS is
        at most once, an HTTP source answering on admission loses what it holds when it
        stops): such adapters override this, so ``byteor describe`` shows what a node of a
        spec really gets.
        """
        return self.capabilities

    @classmethod
    def declaration(cls) -> AdapterCapabilities:
        """The declaration in the spec's shape: what :data:`byteor.spec.ADAPTERS` holds for
        this adapter (a test keeps the two equal for the adapters shipped here)."""
        caps = cls.capabilities
        return AdapterCapabilities(
            cls.name, cls.summary, cls.extra, cls.client_module, caps.source, caps.sink
        )

    def declaration_for(self, params: Mapping[str, str]) -> AdapterCapabilities:
        """The declaration for one spec node's ``params``: :meth:`capabilities_with` their
        typed values, or :meth:`declaration` when the params do not validate."""
        values, findings = self.config.validate(params)
        if any(f.severity == "error" for f in findings):
            return self.declaration()
        caps = self.capabilities_with(values)
        return AdapterCapabilities(
            self.name, self.summary, self.extra, self.client_module, caps.source, caps.sink
        )
