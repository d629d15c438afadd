"""IO-free hot-loop primitives: no asyncio, sockets, mmap, threads, logging or clock reads.

* :mod:`~byteor.kernel.protocols` - ``LaneTx`` / ``LaneRx``, the lane methods executors use;
* :mod:`~byteor.kernel.step` - the stage step contract (``Emit``, ``StageError``,
  ``BatchResult``, ``Stage``) and error policies and counters;
* :mod:`~byteor.kernel.watermark` - acknowledgement watermarks and upstream commit order;
* :mod:`~byteor.kernel.barrier` - ``SeqBarrier``.
"""

from __future__ import annotations

from byteor.kernel.barrier import CursorSource, SeqBarrier
from byteor.kernel.protocols import BytesLike, LaneRx, LaneTx
from byteor.kernel.step import (
    ERROR_ACTIONS,
    BatchResult,
    Emit,
    ErrorAction,
    ErrorPolicy,
    RecordFailure,
    Stage,
    StageCounters,
    StageError,
    StepResult,
    step_each,
)
from byteor.kernel.watermark import (
    AckPath,
    Commit,
    UpstreamTracker,
    done_watermark,
    path_done,
)

__all__ = [
    # lanes, as executors see them
    "LaneTx",
    "LaneRx",
    "BytesLike",
    "CursorSource",
    "SeqBarrier",
    # stepping
    "Stage",
    "Emit",
    "StageError",
    "StepResult",
    "RecordFailure",
    "BatchResult",
    "step_each",
    "ErrorAction",
    "ErrorPolicy",
    "ERROR_ACTIONS",
    "StageCounters",
    # acknowledgements
    "AckPath",
    "path_done",
    "done_watermark",
    "Commit",
    "UpstreamTracker",
]
