"""The adapters a spec names, checked against the adapters themselves.

``byteor.spec`` is the pure contract: it imports nothing of ours, so it knows adapters only
through its static table (:data:`byteor.spec.ADAPTERS`): SP314 for a name the table lacks,
SP315 for a role the table says the adapter cannot play. The registry, the config schemas
and the declarations live in this package, which already depends on the spec (findings,
``AdapterCapabilities``); combining the two therefore belongs here, not in the spec (which
would have to import adapters) and not in the CLI (an executor checking a spec before it
connects anything needs the same answers). ``byteor validate`` and ``byteor describe`` call
it. Only the adapters a spec names are imported, with their client libraries.

What is checked, per source and sink (an :class:`AdapterUse`):

* an adapter the registry knows: its params against its :class:`ConfigSchema` (AD501-AD504,
  keyed ``source.<name>.param.<k>`` with the line of that param; AD502 on the node's
  ``adapter`` line), and, for a third-party adapter the spec's table cannot know, whether it
  can play the role (SP315);
* one whose module or client library cannot be imported here: AD505, a warning carrying the
  exact ``pip install`` command, so a spec can be validated where the extras are missing;
* a name neither the table nor the registry knows: the spec's SP314, its "did you mean"
  taken over both.

The adapters the executors run themselves (the table's rows without a pip extra: ``file``,
``stdin``, ``stdout``, ``generator``, ``memory``) are left alone: the executor that opens them
checks their params. (``memory`` is also the registry's in-memory test adapter, whose schema
asks for a ``topic`` that the executors' caller-fed ``memory`` nodes do not have.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol, TypeVar

from byteor.adapters._contract import Adapter
from byteor.adapters._errors import AdapterUnavailable
from byteor.adapters._registry import AdapterEntry, available_adapters, load_adapter
from byteor.spec import (
    ADAPTERS,
    AdapterCapabilities,
    Finding,
    KvDocument,
    PipelineSpecV1,
    did_you_mean,
)

__all__ = [
    "AdapterUse",
    "EXECUTOR_ADAPTERS",
    "uses_of_spec",
    "uses_in_document",
    "check_adapter_uses",
    "validate_adapters",
    "declarations_for",
]

Role = Literal["source", "sink"]

#: Adapters the executors open themselves (no pip extra): their params are theirs to check.
EXECUTOR_ADAPTERS: Final = frozenset(n for n, c in ADAPTERS.items() if c.extra is None)


@dataclass(frozen=True, slots=True)
class AdapterUse:
    """One source or sink of a spec: the adapter it names and the params it gives it.

    Attributes:
        role: ``source`` or ``sink``.
        node: the source's or sink's name.
        adapter: the ``adapter`` value.
        params: ``<k> -> value`` of its ``param.<k>`` keys (what ``Adapter.source`` takes).
        line: the line of its ``adapter`` key (``None``: unknown, e.g. built in code).
        param_lines: ``<k> -> line`` of each param, when known.
    """

    role: Role
    node: str
    adapter: str
    params: Mapping[str, str] = field(default_factory=dict)
    line: int | None = None
    param_lines: Mapping[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The spec key of its adapter: ``source.<node>.adapter``."""
        return f"{self.role}.{self.node}.adapter"

    @property
    def param_prefix(self) -> str:
        return f"{self.role}.{self.node}.param."


def uses_of_spec(spec: PipelineSpecV1, lines: Mapping[str, int] | None = None) -> list[AdapterUse]:
    """Every source and sink of a typed spec; ``lines`` maps spec keys to lines."""
    at = lines or {}
    out: list[AdapterUse] = []
    nodes: list[tuple[Role, str, str, Mapping[str, str]]] = [
        ("source", s.name, s.adapter, s.params) for s in spec.sources.values()
    ]
    nodes += [("sink", s.name, s.adapter, s.params) for s in spec.sinks.values()]
    for role, name, adapter, params in nodes:
        prefix = f"{role}.{name}.param."
        found = {k: at[prefix + k] for k in params if prefix + k in at}
        out.append(AdapterUse(role, name, adapter, params, at.get(f"{role}.{name}.adapter"), found))
    return out


def uses_in_document(doc: KvDocument) -> list[AdapterUse]:
    """Every source and sink of a spec text, read from its lines even when the spec has
    errors elsewhere (so every finding is reported at once)."""
    adapters: dict[tuple[Role, str], tuple[str, int]] = {}
    params: dict[tuple[Role, str], dict[str, str]] = {}
    param_lines: dict[tuple[Role, str], dict[str, int]] = {}
    for e in doc.entries:
        segs = e.key.split(".")
        if len(segs) < 3:
            continue
        role: Role
        if segs[0] == "source":
            role = "source"
        elif segs[0] == "sink":
            role = "sink"
        else:
            continue
        node = (role, segs[1])
        if segs[2] == "adapter" and len(segs) == 3:
            adapters[node] = (e.value, e.line)
        elif segs[2] == "param" and len(segs) > 3:
            k = ".".join(segs[3:])
            params.setdefault(node, {})[k] = e.value
            param_lines.setdefault(node, {})[k] = e.line
    return [
        AdapterUse(
            role,
            name,
            adapter,
            params.get((role, name), {}),
            line,
            param_lines.get((role, name), {}),
        )
        for (role, name), (adapter, line) in adapters.items()
    ]


def _load(
    use: AdapterUse, registry: Mapping[str, AdapterEntry]
) -> tuple[Adapter | None, list[Finding]]:
    """The adapter of ``use`` (``None``: not one to check), or the AD505 saying why not."""
    if use.adapter in EXECUTOR_ADAPTERS or use.adapter not in registry:
        return None, []
    try:
        return load_adapter(use.adapter), []
    except AdapterUnavailable as exc:
        message = f"{exc}; {use.role} {use.node!r}'s params are not checked here"
        return None, [Finding("AD505", "warning", use.key, use.line, message)]


def _config_findings(adapter: Adapter, use: AdapterUse) -> list[Finding]:
    _, found = adapter.config.validate(use.params, prefix=use.param_prefix)
    out = []
    for f in found:
        param = f.key.removeprefix(use.param_prefix)
        line = use.line if f.code == "AD502" else use.param_lines.get(param, use.line)
        out.append(replace(f, line=line))
    return out


def _role_finding(adapter: Adapter, use: AdapterUse) -> list[Finding]:
    """SP315 for an adapter the spec's table does not know (the spec checked the others)."""
    if use.adapter in ADAPTERS:
        return []
    decl = adapter.declaration()
    if getattr(decl, use.role) is not None:
        return []
    other = "a source" if decl.source is not None else "a sink"
    return [
        Finding(
            "SP315",
            "error",
            use.key,
            use.line,
            f"adapter {use.adapter!r} can only be {other}, not a {use.role}",
        )
    ]


def check_adapter_uses(uses: Iterable[AdapterUse]) -> list[Finding]:
    """AD501-AD505 (and SP315 for third-party adapters) for every use, in line order."""
    registry = available_adapters()
    out: list[Finding] = []
    for use in uses:
        adapter, found = _load(use, registry)
        out += found
        if adapter is not None:
            out += _role_finding(adapter, use)
            out += _config_findings(adapter, use)
    return sorted(out, key=lambda f: (f.line is None, f.line or 0, f.code, f.key))


def _unknown(use: AdapterUse, line: int | None) -> Finding:
    """SP314 with its "did you mean" over the spec's table and the registry."""
    guess = did_you_mean(use.adapter, [*ADAPTERS, *available_adapters()], cutoff=0.6)
    hint = f" (did you mean {guess!r}?)" if guess else ""
    return Finding(
        "SP314",
        "warning",
        use.key,
        line,
        f"adapter {use.adapter!r} is not a known adapter{hint}; a third-party adapter must "
        "be installed under the `byteor.adapters` entry-point group",
        guess,
    )


class _Coded(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def line(self) -> int | None: ...


F = TypeVar("F", bound=_Coded)


def validate_adapters(uses: Sequence[AdapterUse], findings: Sequence[F]) -> list[F | Finding]:
    """The spec's (or plan's) ``findings`` completed with what the adapters say.

    Each SP314 about one of ``uses`` is dropped when the registry knows the adapter (it is
    checked instead) and otherwise replaced by one whose "did you mean" covers the
    registry; the adapter findings (:func:`check_adapter_uses`) follow, in line order.
    """
    by_key = {u.key: u for u in uses}
    registry = available_adapters()
    out: list[F | Finding] = []
    for f in findings:
        use = by_key.get(f.key) if f.code == "SP314" else None
        if use is None:
            out.append(f)
        elif use.adapter not in registry:
            out.append(_unknown(use, f.line))
    return out + check_adapter_uses(uses)


def declarations_for(uses: Iterable[AdapterUse]) -> dict[str, AdapterCapabilities]:
    """``node -> declaration`` of every use whose adapter can be imported here, for its
    params (:meth:`Adapter.declaration_for`: core NATS is at most once, say). Nodes left
    out (the executors' own adapters, unknown or missing ones) fall back to the table."""
    registry = available_adapters()
    out: dict[str, AdapterCapabilities] = {}
    for use in uses:
        adapter, _ = _load(use, registry)
        if adapter is not None:
            out[use.node] = adapter.declaration_for(use.params)
    return out
