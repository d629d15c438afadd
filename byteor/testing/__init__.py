"""Testing helpers: the in-memory adapter and the adapter conformance suite.

::

    from byteor.testing import ConformanceTests, MemoryHarness

    class TestMemoryConformance(ConformanceTests):
        @pytest.fixture
        async def harness(self):
            h = MemoryHarness()
            yield h
            await h.close()
"""

from __future__ import annotations

from byteor.testing._conformance import (
    CHECKS,
    ConformanceTests,
    Harness,
    check_acked_not_redelivered,
    check_nack_redelivers,
    check_pause_resume,
    check_round_trip,
    check_sink_confirms_only_accepted,
    check_stop_cleanly,
    check_unacked_redelivered_after_stop,
)
from byteor.testing._memory import (
    MemoryAdapter,
    MemoryBroker,
    MemorySink,
    MemorySource,
    MemoryTopic,
)
from byteor.testing._memory_harness import MemoryHarness

__all__ = [
    # the in-memory adapter
    "MemoryAdapter",
    "MemoryBroker",
    "MemoryTopic",
    "MemorySource",
    "MemorySink",
    # the conformance suite
    "Harness",
    "ConformanceTests",
    "CHECKS",
    "check_round_trip",
    "check_acked_not_redelivered",
    "check_unacked_redelivered_after_stop",
    "check_nack_redelivers",
    "check_stop_cleanly",
    "check_pause_resume",
    "check_sink_confirms_only_accepted",
    "MemoryHarness",
]
