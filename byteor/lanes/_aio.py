"""asyncio (and trio, through anyio) edges of the lanes: await without blocking the loop.

Filled in by the async work; the classes here are mixed into Producer and Consumer.
"""

from __future__ import annotations

__all__ = ["AsyncProducerMixin", "AsyncConsumerMixin"]


class AsyncProducerMixin:
    """``await tx.send_async(data)``."""


class AsyncConsumerMixin:
    """``await rx.receive_async()``."""
