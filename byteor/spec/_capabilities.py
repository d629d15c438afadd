"""What adapters and built-in ops declare: the spec's static table of adapters.

The spec imports nothing of ours, so it cannot ask the adapters: this table holds, for each
adapter shipped with ByteOr, the same :class:`AdapterCapabilities` its ``Adapter.declaration()``
returns (``tests/adapters/test_declarations.py`` keeps the two equal), plus the adapters the
executors run themselves (``file``, ``stdin``, ``stdout``, ``generator``). Validation uses it
for SP314/SP315; ``byteor describe`` and ``byteor validate`` ask the adapters themselves when
they can be imported (``byteor.adapters._speccheck``) and fall back to this table otherwise.
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
            Delivery(
                _ALO,
                "per-subject",
                "mode=jetstream: acked after every sink confirmed (core: at most once)",
            ),
            Delivery(
                _ALO, "per-subject", "mode=jetstream: every PubAck received (core: best effort)"
            ),
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
            Delivery(_ALO, "per-queue", "publisher confirms, mandatory"),
        ),
        _a(
            "grpc",
            "gRPC record streams (byteor.v1.Records: Publish in, Publish or Subscribe out)",
            "grpc",
            "grpc",
            Delivery(
                _ALO,
                "per-stream",
                "Publish: acknowledged on the response stream after every sink confirmed; "
                "clients resend what was not acknowledged",
            ),
            Delivery(
                _ALO,
                "per-stream",
                "publish: every record acknowledged by the server; serve: by a Subscribe consumer",
            ),
        ),
        _a(
            "http",
            "HTTP ingest server (webhooks) and HTTP client",
            "http",
            "httpx",
            Delivery(
                _BE,
                "per-request",
                "respond = admitted: 202 on admission, records not yet acked are lost if the "
                "source stops or crashes (respond = confirmed: at least once)",
            ),
            Delivery(_ALO, "per-request", "2xx response, retried otherwise"),
        ),
        _a(
            "websocket",
            "WebSocket ingest server with per-record ack frames, and its client",
            "websocket",
            "websockets",
            Delivery(
                _ALO,
                "per-connection",
                "ack frame after every sink confirmed; the client resends what was not acked",
            ),
            Delivery(
                _ALO,
                "per-connection",
                "returns after every record's ack frame; unacked records resent after a reconnect",
            ),
        ),
        _a(
            "s3",
            "objects in an S3 bucket: rolled, multipart, deterministic keys; checkpointed reads",
            "s3",
            "aioboto3",
            Delivery(_ALO, "per-prefix (key order)", "checkpoint after every record of an object"),
            Delivery(_ALO, "per-partition", "every object of the batch uploaded"),
        ),
        _a(
            "postgres",
            "PostgreSQL outbox table (cursor, LISTEN/NOTIFY) and idempotent inserts",
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
            "in-memory topics with consumer groups (tests and examples)",
            None,
            None,
            Delivery(_ALO, "total", "acked in order, unsettled redelivered; in this process"),
            Delivery(_ALO, "total", "batch appended whole; in this process"),
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
