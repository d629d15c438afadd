"""Reconnect with exponential backoff, clock and sleep injected (tests pass fakes)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from byteor.adapters._errors import AdapterError

__all__ = ["Backoff", "retry"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays ``initial_s * factor**n`` capped at ``max_s``, with +-``jitter`` relative noise."""

    initial_s: float = 0.1
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.1
    max_attempts: int | None = None  # None: forever

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``attempt`` (0-based)."""
        base = min(self.max_s, self.initial_s * self.factor**attempt)
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand() - 1.0)))


async def retry(
    op: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    on_retry: Callable[[int, AdapterError, float], None] | None = None,
) -> T:
    """Run ``op`` until it succeeds; retry only on retriable :class:`AdapterError`.

    A non-retriable error, or the last permitted attempt's error, is raised as is.
    """
    attempt = 0
    while True:
        try:
            return await op()
        except AdapterError as exc:
            if not exc.retriable or (
                backoff.max_attempts is not None and attempt + 1 >= backoff.max_attempts
            ):
                raise
            wait = backoff.delay(attempt, rand)
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            await sleep(wait)
            attempt += 1
