"""The CLI's side of checking adapters: which sources and sinks a loaded file names.

The checks themselves live in :mod:`byteor.adapters._speccheck` (the spec stays pure; an
executor needs the same checks). Here a spec file's or plan file's nodes become
:class:`~byteor.adapters.AdapterUse` values with the lines the user wrote: a spec's from its
text (even when the spec has errors elsewhere), a plan's from its TOML, keyed by the spec key
the plan lowers to (``source.in.param.topic``), so findings read the same for both.
``byteor.adapters`` is imported only by the commands that need it (``validate``,
``describe``, ``capabilities``), so ``byteor hash`` and ``byteor fmt`` stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from byteor.cli._load import Loaded
from byteor.plan import PlanSink, PlanSource

if TYPE_CHECKING:
    from byteor.adapters import AdapterUse
    from byteor.spec import AdapterCapabilities

__all__ = ["adapter_uses", "check_adapters", "declared"]


def _plan_line(lines: Mapping[str, int], *keys: str) -> int | None:
    for key in keys:
        if key in lines:
            return lines[key]
    return None


def adapter_uses(loaded: Loaded) -> list[AdapterUse]:
    """Every source and sink of ``loaded`` with the lines of its adapter and params."""
    from byteor.adapters import AdapterUse, uses_in_document, uses_of_spec

    if loaded.kind == "spec":
        if loaded.document is not None:
            return uses_in_document(loaded.document)
        return uses_of_spec(loaded.spec) if loaded.spec is not None else []
    if loaded.plan is None:
        return []
    at = loaded.plan_lines
    nodes: list[tuple[Literal["source", "sink"], str, PlanSource | PlanSink]] = [
        ("source", "sources", n) for n in loaded.plan.sources
    ]
    nodes += [("sink", "sinks", n) for n in loaded.plan.sinks]
    uses = []
    for role, table, node in nodes:
        base = f"{table}.{node.name}"
        node_line = _plan_line(at, f"{base}.adapter", base)
        params_line = _plan_line(at, f"{base}.params")
        param_lines = {}
        for k in node.params:
            line = _plan_line(at, f"{base}.params.{k}") or params_line or node_line
            if line is not None:
                param_lines[k] = line
        uses.append(AdapterUse(role, node.name, node.adapter, node.params, node_line, param_lines))
    return uses


def check_adapters(loaded: Loaded) -> None:
    """Add what the adapters say about their params to ``loaded.findings`` (in place)."""
    from byteor.adapters import validate_adapters

    loaded.findings = list(validate_adapters(adapter_uses(loaded), loaded.findings))


def declared(loaded: Loaded) -> dict[str, AdapterCapabilities]:
    """``node -> declaration`` for the nodes whose adapter can be imported here."""
    from byteor.adapters import declarations_for

    return declarations_for(adapter_uses(loaded))
