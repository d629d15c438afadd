"""``byteor bench adapters``: each adapter's source and sink against a hand-written asyncio loop.

Theory of operation
-------------------
For every adapter there is a *case* (one module each: ``redis.py``, ...) with four sides: our
source, a hand-written source, our sink and a hand-written sink. The hand-written sides use the
same client library to do the same work the way a careful user would write it directly (for
Redis: ``XREADGROUP COUNT n`` + ``XACK`` of the ids; ``XADD`` pipelined per batch); ours go
through the adapter's public contract (``next_batch`` + ``ack()`` of every record;
``write_batch``). Same records, same payload size, same batch size, same server, same run.

* Source runs read a stream pre-filled outside the timed region. The clock starts at the first
  non-empty batch (connection and group set-up are never timed) and stops once the source is
  stopped with every acknowledgement upstream: our adapters may hold acks back and send them
  with the next read or at stop, so stopping is part of the work.
* Sink runs write pre-built batches; the clock runs from the first write to the last one
  confirmed by the server.
* Nothing becomes a number unchecked: every record carries its sequence number, every batch is
  checked inside the timed loop with the same code for both sides, and after each run the
  server is asked whether every record was acknowledged (source) or is stored exactly once, in
  order (sink). A failed check fails the run and the exit code.

Each run gets a fresh stream/topic/queue (bucket directory, table), dropped afterwards. Ours
and the hand-written loop alternate who goes first in each repeat; the table shows medians and
ours/hand, and the target of issues 5 and 6 (ours at >= 90 % of the hand-written loop). An
adapter whose extra is not installed or whose server does not answer is reported as skipped,
with the reason.

Server adapters (HTTP, WebSocket, gRPC) *are* the server of their source and a client of their
sink's server. Their counterpart runs in a peer process (``_peer.py``), the same for ours and
the hand loop: for a source, a client that sends pre-built requests (prepared in the pre-fill
step, untimed) and reports every acknowledgement it heard; the clock stops when it has heard
the last one, and the check is its report plus the server's own counts. For a sink, one of our
sources drained by a loop that checks every record's sequence; the check is its report. A
case may add a *bound* to a side (``Case.bounds``): one more line, e.g. the HTTP source
against a bare server answering 202 without parsing anything.
"""

from __future__ import annotations

from byteor.bench.adapters._harness import Case, Plan, SinkSide, SourceSide, Tally
from byteor.bench.adapters._runner import CASES, TARGET, run_benchmark, run_cli, summarise

__all__ = [
    "CASES",
    "TARGET",
    "Case",
    "Plan",
    "SourceSide",
    "SinkSide",
    "Tally",
    "run_benchmark",
    "run_cli",
    "summarise",
]
