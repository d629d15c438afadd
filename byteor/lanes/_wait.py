"""Waiting: spin, then yield the CPU, then sleep on a futex in bounded slices.

Spinning costs a core but answers in nanoseconds; ``os.sched_yield`` costs ~0.3 us a call
and lets the other side run when processes outnumber cores; sleeping costs nothing while
idle but ~35 us to wake on these machines. An idle receiver ends up asleep, waking once per
``sleep_slice`` to re-check (a guard against a missed wake, see ``_platform``), which is far
below 1% of a core.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["WaitStrategy", "DEFAULT_WAIT", "BUSY_WAIT"]


@dataclass(frozen=True, slots=True)
class WaitStrategy:
    """How long to spin and to yield before sleeping.

    Attributes:
        spins: checks of the condition before yielding the CPU.
        yields: ``sched_yield`` calls (each followed by a check) before sleeping.
        sleep_slice: the longest single sleep, in seconds, before checking again.
    """

    spins: int = 200
    yields: int = 400
    sleep_slice: float = 0.05

    def wait(
        self,
        ready: Callable[[], bool],
        sleep: Callable[[float], None],
        deadline: float | None,
    ) -> bool:
        """Return True once ``ready()`` holds, False when ``deadline`` (monotonic) passes."""
        for _ in range(self.spins):
            if ready():
                return True
        yield_ = os.sched_yield
        for n in range(self.yields):
            yield_()
            if ready():
                return True
            if deadline is not None and n % 32 == 31 and time.monotonic() >= deadline:
                return False
        while True:
            if deadline is None:
                slice_s = self.sleep_slice
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return ready()
                slice_s = min(self.sleep_slice, remaining)
            sleep(slice_s)
            if ready():
                return True


DEFAULT_WAIT = WaitStrategy()
# For benchmarks and latency-critical pairs that own a core each: never sleep early.
BUSY_WAIT = WaitStrategy(spins=2000, yields=1_000_000, sleep_slice=0.01)
