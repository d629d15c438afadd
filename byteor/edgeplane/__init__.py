"""EdgePlane: the product binary that runs a pipeline's adapter loops.

Ingress adapters feed lanes, executors run the hot loop in their own processes, egress
adapters drain the lanes; asyncio lives only in the edge processes (see ``docs/edgeplane.md``).

Surface modules: :mod:`._config` (options, ``${VAR}`` interpolation, secret redaction,
loading a spec or plan), :mod:`._observe` (Prometheus metrics read from shared memory,
``/live`` and ``/ready``), :mod:`._logging` (text or JSON logs, the progress line).
"""
