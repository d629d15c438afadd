"""A small Python builder for plans, with a decorator for stages.

::

    plan = PlanBuilder("orders")
    orders = plan.source("kafka_in", adapter="kafka", topic="orders")

    @plan.stage(inputs=orders)
    def enrich(record: bytes) -> bytes:
        return record.upper()

    plan.sink("nats_out", adapter="nats", inputs=enrich, subject="orders.enriched")
    spec = byteor.lower.lower_v2(plan.build())

The decorated function is returned unchanged (still callable in tests); its op is
``module:qualname``, which executors import in their own processes, so stage functions
must live at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from byteor.plan._errors import PlanError, PlanValidationError
from byteor.plan._model import PipelinePlanV2, PlanSink, PlanSource, PlanStage
from byteor.plan._params import ParamError, flatten_params
from byteor.plan._validate import validate_plan_v2

__all__ = ["PlanBuilder", "NodeRef", "InputLike"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A handle on a node added to a builder; pass it as an input of another node."""

    name: str


InputLike = str | NodeRef | Callable[..., Any]


class PlanBuilder:
    """Collects sources, stages, sinks and connections; :meth:`build` returns the plan."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._sources: dict[str, PlanSource] = {}
        self._stages: dict[str, PlanStage] = {}
        self._sinks: dict[str, PlanSink] = {}
        self._functions: dict[Callable[..., Any], str] = {}

    # -- nodes -----------------------------------------------------------------------------

    def source(
        self,
        name: str,
        adapter: str,
        *,
        message_bytes: int | None = None,
        capacity: int | None = None,
        journal: bool = False,
        **params: object,
    ) -> NodeRef:
        """Add a source; keyword arguments beyond the hints are adapter parameters."""
        self._fresh(name)
        self._sources[name] = PlanSource(
            name, adapter, self._params(name, params), message_bytes, capacity, journal
        )
        return NodeRef(name)

    def add_stage(
        self,
        name: str,
        op: str,
        *,
        inputs: InputLike | Iterable[InputLike] = (),
        process: str | None = None,
        message_bytes: int | None = None,
        capacity: int | None = None,
        merge: str | None = None,
        **params: object,
    ) -> NodeRef:
        """Add a stage running ``op`` (a built-in op or ``module:function``)."""
        self._fresh(name)
        self._stages[name] = PlanStage(
            name,
            op,
            self._inputs(inputs),
            self._params(name, params),
            process,
            message_bytes,
            capacity,
            merge,
        )
        return NodeRef(name)

    @overload
    def stage(self, fn: F, /) -> F: ...

    @overload
    def stage(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        inputs: InputLike | Iterable[InputLike] = (),
        process: str | None = None,
        message_bytes: int | None = None,
        capacity: int | None = None,
        merge: str | None = None,
        **params: object,
    ) -> Callable[[F], F]: ...

    def stage(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        inputs: InputLike | Iterable[InputLike] = (),
        process: str | None = None,
        message_bytes: int | None = None,
        capacity: int | None = None,
        merge: str | None = None,
        **params: object,
    ) -> F | Callable[[F], F]:
        """Decorator: the function becomes a stage named after it (or ``name``).

        Use it bare (``@plan.stage``, inputs connected later with :meth:`connect`) or with
        arguments (``@plan.stage(inputs=src)``).
        """

        def register(func: F) -> F:
            qualname = getattr(func, "__qualname__", "")
            module = getattr(func, "__module__", "")
            if "<" in qualname or not module:
                raise PlanError(
                    f"stage function {qualname or func!r} is not importable by module:name; "
                    "define it at module level so executors can import it"
                )
            node: str = name or str(getattr(func, "__name__", qualname))
            self.add_stage(
                node,
                f"{module}:{qualname}",
                inputs=inputs,
                process=process,
                message_bytes=message_bytes,
                capacity=capacity,
                merge=merge,
                **params,
            )
            self._functions[func] = node
            return func

        if fn is not None:
            return register(fn)
        return register

    def sink(
        self,
        name: str,
        adapter: str,
        *,
        inputs: InputLike | Iterable[InputLike] = (),
        merge: str | None = None,
        **params: object,
    ) -> NodeRef:
        """Add a sink; keyword arguments are adapter parameters."""
        self._fresh(name)
        self._sinks[name] = PlanSink(
            name, adapter, self._inputs(inputs), self._params(name, params), merge
        )
        return NodeRef(name)

    def connect(self, upstream: InputLike, downstream: InputLike) -> None:
        """Make ``downstream`` (a stage or sink) read ``upstream`` as its next input."""
        up = self._resolve(upstream)
        down = self._resolve(downstream)
        if down in self._stages:
            st = self._stages[down]
            self._stages[down] = PlanStage(
                st.name, st.op, (*st.inputs, up), st.params, st.process,
                st.message_bytes, st.capacity, st.merge,
            )  # fmt: skip
        elif down in self._sinks:
            sk = self._sinks[down]
            self._sinks[down] = PlanSink(sk.name, sk.adapter, (*sk.inputs, up), sk.params, sk.merge)
        else:
            raise PlanError(f"{down!r} is a source: sources have no inputs")

    def build(self, *, validate: bool = True) -> PipelinePlanV2:
        """The plan.

        Raises:
            PlanValidationError: ``validate`` is true and the plan has error findings.
        """
        plan = PipelinePlanV2(
            self._name,
            tuple(self._sources.values()),
            tuple(self._stages.values()),
            tuple(self._sinks.values()),
        )
        if validate:
            findings = validate_plan_v2(plan)
            if any(f.severity == "error" for f in findings):
                raise PlanValidationError(findings)
        return plan

    # -- helpers ---------------------------------------------------------------------------

    def _fresh(self, name: str) -> None:
        if name in self._sources or name in self._stages or name in self._sinks:
            raise PlanError(f"a node named {name!r} already exists: node names are unique")

    def _params(self, node: str, params: dict[str, object]) -> dict[str, str]:
        try:
            return flatten_params(params)
        except ParamError as exc:
            raise PlanError(f"{node}: {exc}") from None

    def _resolve(self, item: InputLike) -> str:
        if isinstance(item, str):
            return item
        if isinstance(item, NodeRef):
            return item.name
        name = self._functions.get(item)
        if name is None:
            raise PlanError(
                f"{getattr(item, '__qualname__', item)!r} is not a stage of this plan: "
                "decorate it with @plan.stage first"
            )
        return name

    def _inputs(self, inputs: InputLike | Iterable[InputLike]) -> tuple[str, ...]:
        if isinstance(inputs, str | NodeRef) or callable(inputs):
            return (self._resolve(inputs),)
        return tuple(self._resolve(i) for i in inputs)
