"""What adapters and built-in ops declare, as a static table until adapters exist.

Each adapter will declare an :class:`AdapterCapabilities` itself (returned by its entry
point in the ``byteor.adapters`` group); until then this table stands in for them, with the
same shape, so ``describe`` and validation already derive delivery guarantees from
declarations rather than from adapter names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "Guarantee",
    "Delivery",
    "AdapterCapabilities",
    "ADAPTERS",
    "BUILTIN_OPS",
    "GUARANTEE_RANK",
]

Guarantee = Literal["at-least-once", "best-effort"]

#: Higher is stronger; a path is as strong as its weakest part.
GUARANTEE_RANK: Final[dict[str, int]] = {"best-effort": 0, "at-least-once": 1}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one side of an adapter promises.

    Attributes:
        guarantee: ``at-least-once`` (nothing confirmed is lost; a crash may repeat a bounded
            window) or ``best-effort`` (a crash or a slow reader may lose records).
        ordering: the order kept, e.g. ``per-partition``, ``total`` or ``none``.
        condition: when the guarantee holds, in a few words.
    """

    guarantee: Guarantee
    ordering: str
    condition: str


@dataclass(frozen=True, slots=True)
class AdapterCapabilities:
    """One adapter's declaration.

    Attributes:
        name: the ``adapter`` value in a spec.
        summary: one line for ``byteor capabilities``.
        extra: the pip extra holding its client library (``byteor[kafka]``), or ``None``
            for an adapter built into the core.
        client_module: the import name of that client library.
        source: what it promises as a source (``None``: it cannot be one).
        sink: what it promises as a sink (``None``: it cannot be one).
    """

    name: str
    summary: str
    extra: str | None
    client_module: str | None
    source: Delivery | None
    sink: Delivery | None


def _a(
    name: str,
    summary: str,
    extra: str | None,
    module: str | None,
    source: Delivery | None,
    sink: Delivery | None,
) -> tuple[str, AdapterCapabilities]:
    return name, AdapterCapabilities(name, summary, extra, module, source, sink)


_ALO: Final = "at-least-once"
_BE: Final = "best-effort"

ADAPTERS: Final[dict[str, AdapterCapabilities]] = dict(
    [
        _a(
            "kafka",
            "Apache Kafka / Redpanda topics (consumer groups)",
            "kafka",
            "aiokafka",
            Delivery(_ALO, "per-partition", "offsets committed after every sink confirmed"),
            Delivery(_ALO, "per-partition", "acks=all, confirmed by the broker"),
        ),
        _a(
            "nats",
            "NATS subjects and JetStream streams",
            "nats",
            "nats",
            Delivery(_ALO, "per-subject", "JetStream consumer, acked after sinks confirmed"),
            Delivery(_ALO, "per-subject", "JetStream publish acknowledged"),
        ),
        _a(
            "redis",
            "Redis Streams (consumer groups)",
            "redis",
            "redis",
            Delivery(_ALO, "per-stream", "XACK after every sink confirmed"),
            Delivery(_ALO, "per-stream", "XADD returned an id"),
        ),
        _a(
            "rabbitmq",
            "RabbitMQ queues (AMQP 0-9-1)",
            "rabbitmq",
            "aio_pika",
            Delivery(_ALO, "per-queue", "manual ack after every sink confirmed"),
            Delivery(_ALO, "per-queue", "publisher confirms"),
        ),
        _a(
            "grpc",
            "gRPC streaming ingress and egress",
            "grpc",
            "grpc",
            Delivery(_ALO, "per-stream", "response sent after admission, client retries"),
            Delivery(_ALO, "per-stream", "call returned OK"),
        ),
        _a(
            "http",
            "HTTP ingress (webhooks) and HTTP calls",
            "http",
            "httpx",
            Delivery(_ALO, "none", "request acknowledged (2xx) only after admission"),
            Delivery(_ALO, "none", "2xx response, retried otherwise"),
        ),
        _a(
            "websocket",
            "WebSocket streams",
            "websocket",
            "websockets",
            Delivery(_BE, "per-connection", "no acknowledgement in the protocol"),
            Delivery(_BE, "per-connection", "no acknowledgement in the protocol"),
        ),
        _a(
            "s3",
            "S3-compatible object storage",
            "s3",
            "aioboto3",
            Delivery(_ALO, "per-object", "object position checkpointed after confirmation"),
            Delivery(_ALO, "per-object", "PUT succeeded"),
        ),
        _a(
            "postgres",
            "PostgreSQL tables (polling or logical replication) and writes",
            "postgres",
            "asyncpg",
            Delivery(_ALO, "total", "cursor advanced after every sink confirmed"),
            Delivery(_ALO, "total", "transaction committed"),
        ),
        _a(
            "file",
            "local files, one record per line",
            None,
            None,
            Delivery(_ALO, "total", "byte offset checkpointed after confirmation"),
            Delivery(_ALO, "total", "written and fsynced"),
        ),
        _a(
            "stdin",
            "standard input, one record per line",
            None,
            None,
            Delivery(_BE, "total", "a pipe cannot be read again after a crash"),
            None,
        ),
        _a(
            "stdout",
            "standard output, one record per line",
            None,
            None,
            None,
            Delivery(_BE, "total", "no confirmation from a terminal or pipe"),
        ),
        _a(
            "generator",
            "synthetic records for tests and benchmarks",
            None,
            None,
            Delivery(_ALO, "total", "deterministic: regenerated from its position"),
            None,
        ),
        _a(
            "memory",
            "in-process lists for tests and examples",
            None,
            None,
            Delivery(_BE, "total", "lost when the process exits"),
            Delivery(_BE, "total", "lost when the process exits"),
        ),
    ]
)

#: Ops every stage resolver knows without importing user code.
BUILTIN_OPS: Final[dict[str, str]] = {
    "identity": "pass every record through unchanged",
    "drop": "discard every record (counts as processed)",
    "count": "pass records through, counting records and bytes",
    "map": "fn = module:function applied to each record (None drops, a list expands)",
    "filter": "keep records matching fn, contains or regex (invert = true: the others)",
    "key_by": "route each record to output crc32(key) % outputs; key: field (JSON) or fn",
    "route": "route by a JSON field: route.<value> = <output lane>, default = <lane>|drop",
    "batch": "size records into one framed record (u32le length + bytes each)",
    "unbatch": "split a framed batch back into its records",
    "json_decode": "check each record is JSON and write it canonically (sorted, compact)",
    "json_encode": "each UTF-8 record as a JSON string, or {field: text} with field",
}
