"""EdgePlane: the product binary that runs a pipeline's adapter loops.

Ingress adapters feed lanes, executors run the hot loop in their own processes, egress
adapters drain the lanes; asyncio lives only in the edge processes (see ``docs/edgeplane.md``).

Surface modules: :mod:`._config` (options, ``${VAR}`` interpolation, secret redaction,
loading a spec or plan), :mod:`._observe` (Prometheus metrics read from shared memory,
``/live`` and ``/ready``), :mod:`._logging` (text or JSON logs, the progress line).

Core modules: :mod:`._supervisor` (the data plane: segments, processes, restarts, drain),
:mod:`._edge` (the edge processes and the acknowledgement watermark), :mod:`._stages`
(stamped stages over the executors' node code), :mod:`._status` (the status segment),
:mod:`._run` and :mod:`.cli` (``edgeplane run``, ``validate``, ``describe``)::

    plane = DataPlane(spec, PlaneConfig(run="orders"))
    plane.run(stop)                        # until the sources end or stop drains it
    summary = await run_inline(spec, sources=..., sinks=..., stop=event)   # in-process
"""

from __future__ import annotations

from byteor.edgeplane._errors import (
    ConfigError,
    EdgePlaneError,
    InterpolationError,
    MissingVariable,
    ObserveError,
    ObserveUnavailable,
    OptionError,
    PipelineFileError,
    RunError,
)
from byteor.edgeplane._run import run_inline
from byteor.edgeplane._supervisor import DataPlane, EdgeState, PlaneConfig, shape_findings

__all__ = [
    # running
    "DataPlane",
    "PlaneConfig",
    "EdgeState",
    "run_inline",
    "shape_findings",
    # errors
    "EdgePlaneError",
    "ConfigError",
    "OptionError",
    "InterpolationError",
    "MissingVariable",
    "PipelineFileError",
    "ObserveError",
    "ObserveUnavailable",
    "RunError",
]
