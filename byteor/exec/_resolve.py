"""Stage resolvers: ``op`` -> a runnable :class:`byteor.kernel.Stage`.

An op is, in this order:

1. a built-in op (``identity``, ``map``, ``key_by``, ... see ``BUILTIN_SUMMARIES``);
2. ``package.module:function`` (a dotted qualname after the colon is allowed): a function
   called per record, or a class instantiated with the :class:`StageContext`;
3. a name registered by an installed distribution in the ``byteor.ops`` entry-point group,
   pointing at the same kind of function or class. Entry points are looked up only when a
   name is not built in, and only the one named is loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Final

from byteor.exec._errors import OpNotFound
from byteor.exec._ops import BUILTIN_FACTORIES
from byteor.exec._stage import StageContext, stage_from_object
from byteor.kernel import Stage

__all__ = ["ENTRY_POINT_GROUP", "resolve_op", "import_object", "entry_point_ops"]

ENTRY_POINT_GROUP: Final = "byteor.ops"


def import_object(path: str, ctx: StageContext | None = None) -> object:
    """The object ``package.module:qualname`` names.

    Raises:
        OpNotFound: the module does not import or has no such attribute.
    """
    module_name, sep, qualname = path.partition(":")
    who = f"stage {ctx.name!r}: " if ctx is not None else ""
    if not sep or not module_name or not qualname:
        raise OpNotFound(f"{who}{path!r} is not `package.module:function`")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise OpNotFound(
            f"{who}cannot import module {module_name!r} for op {path!r}: {exc}; is it "
            "installed, or on PYTHONPATH?"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise OpNotFound(
                f"{who}module {module_name!r} has no {qualname!r} (op {path!r})"
            ) from None
    return obj


def entry_point_ops() -> dict[str, list[importlib.metadata.EntryPoint]]:
    """Every ``byteor.ops`` entry point by name (several when distributions clash)."""
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def _entry_point(name: str, ctx: StageContext) -> object:
    candidates = entry_point_ops().get(name, [])
    if not candidates:
        raise OpNotFound(
            f"stage {ctx.name!r}: op {name!r} is not a built-in op "
            f"({', '.join(BUILTIN_FACTORIES)}) and no installed package registers it in "
            f"the {ENTRY_POINT_GROUP!r} entry-point group; use `package.module:function` "
            "or install the package that provides it"
        )
    values = sorted({ep.value for ep in candidates})
    if len(values) > 1:
        raise OpNotFound(
            f"stage {ctx.name!r}: op {name!r} is registered by several packages "
            f"({', '.join(values)}); use `package.module:function` to pick one"
        )
    try:
        return candidates[0].load()
    except Exception as exc:
        raise OpNotFound(
            f"stage {ctx.name!r}: entry point {name} = {values[0]} failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def resolve_op(op: str, ctx: StageContext) -> Stage:
    """The stage that runs ``op`` with ``ctx``.

    Raises:
        OpNotFound: nothing runnable has that name.
        StageConfigError: the op does not accept the stage's parameters.
    """
    factory = BUILTIN_FACTORIES.get(op)
    if factory is not None:
        return factory(ctx, import_object)
    if ":" in op:
        obj = import_object(op, ctx)
        return stage_from_object(obj, ctx, op)
    obj = _entry_point(op, ctx)
    return stage_from_object(obj, ctx, f"entry point {op}")
