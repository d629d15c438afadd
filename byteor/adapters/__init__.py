"""Adapters: bridges between external systems and lanes.

A source delivers :class:`Record` batches, each with an :class:`Ack` (``ack``: fully
processed downstream; ``nack``: deliver again); a sink writes :class:`OutRecord` batches and
returns only once they are durably accepted. Adapters declare a config schema, capabilities
and health, and are found through the ``byteor.adapters`` entry-point group::

    adapter = byteor.adapters.load_adapter("redis")   # pip install 'byteor[redis]'
    source = adapter.source(spec.sources["in"].params)   # source.in.param.<k> = ...

The error tree is drawn in ``byteor/adapters/_errors.py``.
"""

from __future__ import annotations

from byteor.adapters._backoff import Backoff, retry
from byteor.adapters._config import ADAPTER_CODES, ConfigField, ConfigSchema, ConfigValue
from byteor.adapters._contract import Adapter, Backpressure, Capabilities, Health, Sink, Source
from byteor.adapters._errors import (
    AckError,
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFound,
    AdapterUnavailable,
    AdapterUnreachable,
    map_errors,
)
from byteor.adapters._record import (
    Ack,
    AckState,
    Headers,
    LazyAckRecord,
    OutRecord,
    Record,
    RecordBatch,
    RecordRow,
    Settler,
    ack_all,
    make_records,
    nack_all,
)
from byteor.adapters._registry import (
    BUILTIN,
    GROUP,
    AdapterEntry,
    available_adapters,
    load_adapter,
)
from byteor.adapters._speccheck import (
    EXECUTOR_ADAPTERS,
    AdapterUse,
    check_adapter_uses,
    declarations_for,
    uses_in_document,
    uses_of_spec,
    validate_adapters,
)

__all__ = [
    # records
    "Record",
    "OutRecord",
    "Headers",
    "Ack",
    "AckState",
    "ack_all",
    "nack_all",
    "make_records",
    "RecordRow",
    "LazyAckRecord",
    "RecordBatch",
    "Settler",
    # the contract
    "Source",
    "Sink",
    "Adapter",
    "Capabilities",
    "Backpressure",
    "Health",
    "ConfigSchema",
    "ConfigField",
    "ConfigValue",
    "ADAPTER_CODES",
    # errors
    "AdapterError",
    "AdapterUnreachable",
    "AdapterAuthError",
    "AdapterNotFound",
    "AdapterConfigError",
    "AdapterUnavailable",
    "AckError",
    "map_errors",
    # reconnecting
    "Backoff",
    "retry",
    # registry
    "GROUP",
    "AdapterEntry",
    "BUILTIN",
    "available_adapters",
    "load_adapter",
    # the adapters of a spec
    "AdapterUse",
    "EXECUTOR_ADAPTERS",
    "uses_of_spec",
    "uses_in_document",
    "check_adapter_uses",
    "validate_adapters",
    "declarations_for",
]
