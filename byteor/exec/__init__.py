"""Executors: run a spec.

* :class:`LaneGraphSP` runs every node in this process over in-memory lanes, with a
  deterministic scheduler (``single_ring`` specs run as their equivalent chain);
* :class:`LaneGraphMP` runs the same node code with each ``process`` group of stages in a
  worker process of its own, over shared-memory lanes, under a supervisor;
* :class:`SingleRing` runs a ``single_ring`` spec's chain over one SequencedSlots ring in
  shared memory, each stage rewriting the slots in place;
* :func:`resolve_op` maps a stage's ``op`` to a :class:`byteor.kernel.Stage`: built-in ops,
  ``package.module:function`` and the ``byteor.ops`` entry-point group; a user's op class
  runs as an :class:`ObjectStage`, the built-in ``batch`` and ``key_by`` ops are
  :class:`Batch` and :class:`KeyBy`;
* :mod:`byteor.exec.nodes` is the node machinery (inputs, outboxes, stage nodes, rounds) for
  runtimes that embed it with lanes and processes of their own (EdgePlane);
* local sources and sinks (``file``, ``stdin``, ``generator``, ``stdout``, ``memory``) need no
  server.

::

    report = byteor.exec.run_sp(spec, sources={"in": [b"a", b"b"]}, sinks={"out": sink})
    report.output_sha256, report.node("enrich").records_out

Per-stage error policy, from the stage's parameters: ``param.on_error = fail`` (default: the
run stops and names the stage and record), ``skip`` (drop and count), or ``route`` with
``param.error_lane = <one of the stage's out lanes>`` (the record goes there unchanged).

Every run keeps one counters row per node (records in and out, errors, busy time, restarts),
in shared memory when the run is named (``run_id``), for ``byteor snapshot``. In LaneGraph
MP a worker that dies restarts when its stages say ``on_crash = restart`` (at-least-once:
what it had taken and not finished is processed again), and a stage that takes no record
for ``stall_timeout`` seconds while records wait for it stops the run (:class:`StageStalled`).
"""

from __future__ import annotations

from byteor.exec._errors import (
    AdapterUnavailable,
    ExecError,
    OpNotFound,
    PipelineStalled,
    StageConfigError,
    StageFailed,
    StageStalled,
    WorkerDied,
)
from byteor.exec._graph import EXEC_PARAMS, Graph, LaneDef, NodeDef, build_graph
from byteor.exec._local import (
    LOCAL_SINKS,
    LOCAL_SOURCES,
    GeneratorSource,
    IterableSource,
    LineSource,
    ListSink,
    RecordSink,
    RecordSource,
    StreamSink,
    open_sink,
    open_source,
    splitmix64,
)
from byteor.exec._mp import DEFAULT_STALL_TIMEOUT, LaneGraphMP, processes_of, run_mp
from byteor.exec._ops import BUILTIN_SUMMARIES, Batch, KeyBy, canonical_json, frame, unframe
from byteor.exec._report import NodeReport, RunReport, StopToken
from byteor.exec._resolve import ENTRY_POINT_GROUP, entry_point_ops, import_object, resolve_op
from byteor.exec._single_ring import SingleRing, run_single_ring
from byteor.exec._sp import COMMIT_RECORDS, COUNTERS_SUFFIX, DEFAULT_BATCH, LaneGraphSP, run_sp
from byteor.exec._stage import ObjectStage, RecordStage, StageContext

__all__ = [
    # executors
    "LaneGraphSP",
    "run_sp",
    "LaneGraphMP",
    "run_mp",
    "SingleRing",
    "run_single_ring",
    "processes_of",
    "DEFAULT_BATCH",
    "DEFAULT_STALL_TIMEOUT",
    "COMMIT_RECORDS",
    "COUNTERS_SUFFIX",
    "RunReport",
    "NodeReport",
    "StopToken",
    "Graph",
    "LaneDef",
    "NodeDef",
    "build_graph",
    "EXEC_PARAMS",
    # ops
    "resolve_op",
    "import_object",
    "entry_point_ops",
    "ENTRY_POINT_GROUP",
    "BUILTIN_SUMMARIES",
    "StageContext",
    "RecordStage",
    "ObjectStage",
    "Batch",
    "KeyBy",
    "canonical_json",
    "frame",
    "unframe",
    # local sources and sinks
    "RecordSource",
    "RecordSink",
    "LineSource",
    "GeneratorSource",
    "IterableSource",
    "StreamSink",
    "ListSink",
    "open_source",
    "open_sink",
    "splitmix64",
    "LOCAL_SOURCES",
    "LOCAL_SINKS",
    # errors
    "ExecError",
    "OpNotFound",
    "StageConfigError",
    "AdapterUnavailable",
    "StageFailed",
    "PipelineStalled",
    "StageStalled",
    "WorkerDied",
]
