"""Finding adapters: the ``byteor.adapters`` entry-point group, loaded lazily.

Like fsspec's registry: a table of ``name -> import path`` (with the pip extra that holds the
client library) for the adapters shipped here, merged with every entry point of the group
(third-party adapters register the same way). Nothing is imported until :func:`load_adapter`
asks for a name; a missing client library fails with the exact install command.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Final

from byteor.adapters._contract import Adapter
from byteor.adapters._errors import AdapterUnavailable

__all__ = ["GROUP", "AdapterEntry", "BUILTIN", "available_adapters", "load_adapter"]

GROUP: Final = "byteor.adapters"


@dataclass(frozen=True, slots=True)
class AdapterEntry:
    """Where an adapter lives. ``extra``/``client_module`` give the install hint."""

    name: str
    target: str  # "package.module:Attribute"
    extra: str | None = None
    client_module: str | None = None
    distribution: str | None = None  # for third parties: what to pip install

    def install_hint(self) -> str:
        if self.extra is not None:
            return f"pip install 'byteor[{self.extra}]'"
        if self.distribution is not None:
            return f"pip install '{self.distribution}'"
        return "reinstall byteor"


#: Adapters shipped with ByteOr (also declared as entry points in pyproject.toml).
BUILTIN: Final[dict[str, AdapterEntry]] = {
    e.name: e
    for e in (
        AdapterEntry("memory", "byteor.testing._memory:MemoryAdapter"),
        AdapterEntry("redis", "byteor.adapters.redis:RedisAdapter", "redis", "redis"),
        AdapterEntry("kafka", "byteor.adapters.kafka:KafkaAdapter", "kafka", "aiokafka"),
        AdapterEntry("nats", "byteor.adapters.nats:NatsAdapter", "nats", "nats"),
        AdapterEntry(
            "rabbitmq", "byteor.adapters.rabbitmq:RabbitMQAdapter", "rabbitmq", "aio_pika"
        ),
        AdapterEntry("postgres", "byteor.adapters.postgres:PostgresAdapter", "postgres", "asyncpg"),
        AdapterEntry("http", "byteor.adapters.http:HttpAdapter", "http", "httpx"),
        AdapterEntry(
            "websocket", "byteor.adapters.websocket:WebSocketAdapter", "websocket", "websockets"
        ),
        AdapterEntry("grpc", "byteor.adapters.grpc:GrpcAdapter", "grpc", "grpc"),
        AdapterEntry("s3", "byteor.adapters.s3:S3Adapter", "s3", "aioboto3"),
    )
}

_cache: dict[str, Adapter] = {}


def available_adapters() -> dict[str, AdapterEntry]:
    """Every adapter name known, built in or registered; imports nothing."""
    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        if ep.name in found:
            continue  # ours (or a name already taken): the first registration wins
        dist = ep.dist.name if ep.dist is not None else None
        found[ep.name] = AdapterEntry(ep.name, ep.value, distribution=dist)
    return dict(sorted(found.items()))


def load_adapter(name: str) -> Adapter:
    """Import the adapter called ``name`` (once) and return it.

    Raises:
        AdapterUnavailable: unknown name, or its client library is not installed (the
            message is the exact ``pip install`` command).
    """
    if name in _cache:
        return _cache[name]
    entries = available_adapters()
    entry = entries.get(name)
    if entry is None:
        known = ", ".join(entries) or "none"
        raise AdapterUnavailable(
            f"no adapter called {name!r} (known: {known}); third-party adapters register in "
            f"the {GROUP!r} entry-point group",
            adapter=name,
        )
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        client = entry.client_module
        if client is not None and (missing == client or missing.startswith(client + ".")):
            raise AdapterUnavailable(
                f"the {name} adapter needs the {client!r} library: {entry.install_hint()}",
                adapter=name,
            ) from exc
        if missing == module_name or module_name.startswith(missing + "."):
            raise AdapterUnavailable(
                f"the {name} adapter's module {module_name!r} is not installed: "
                f"{entry.install_hint()}",
                adapter=name,
            ) from exc
        raise AdapterUnavailable(
            f"the {name} adapter could not import {missing!r}: {entry.install_hint()}",
            adapter=name,
        ) from exc
    except Exception as exc:  # a broken third-party module must not take the caller down
        raise AdapterUnavailable(
            f"importing {module_name!r} for the {name} adapter failed "
            f"({type(exc).__name__}: {exc}): fix or reinstall it ({entry.install_hint()})",
            adapter=name,
        ) from exc
    obj: object = module
    for part in attr.split(".") if attr else ():
        if not hasattr(obj, part):
            raise AdapterUnavailable(
                f"{entry.target} (adapter {name!r}): {module_name!r} has no {attr!r}",
                adapter=name,
            )
        obj = getattr(obj, part)
    adapter = obj() if isinstance(obj, type) else obj
    if not isinstance(adapter, Adapter):
        raise AdapterUnavailable(
            f"{entry.target} (adapter {name!r}) is not a byteor.adapters.Adapter",
            adapter=name,
        )
    _cache[name] = adapter
    return adapter


def _forget() -> None:
    """Drop loaded adapters (tests that change sys.path)."""
    _cache.clear()
