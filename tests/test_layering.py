"""The import rules of shared/ARCHITECTURE.md ("Layers and who may import whom"), checked by
reading every module of ``byteor/`` with ``ast`` (nothing is imported, so a module that
would fail to import is still checked).

* ``byteor.spec`` and ``byteor.plan`` import nothing of ours but ``byteor.errors`` and their
  own package, and no I/O module;
* ``byteor.kernel`` likewise, and not ``ctypes`` either: it is the sans-IO hot loop;
* ``byteor.lanes`` knows nothing of specs, plans, lowering, executors, adapters or the CLI;
* no package reaches into another's private modules or names: a module of ``byteor.<pkg>``
  imports ``byteor.<other>`` only through its public modules and names (no ``_``-prefixed
  part), except the generated code in :data:`PRIVATE_ALLOWED`. What another package needs
  gets a public home (``byteor.exec.nodes``, ``byteor.cli.common``, a package export).

Every import counts, at module level or inside a function (a lazy import is still a
dependency), except that imports under ``if TYPE_CHECKING:`` never run and so are exempt from
the I/O rule (not from the layering of our own packages). ``importlib.import_module("x")``
and ``__import__("x")`` with a literal name count as imports of ``x``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "byteor"

IO_MODULES = frozenset(
    {
        "os",
        "io",
        "socket",
        "asyncio",
        "threading",
        "logging",
        "time",
        "mmap",
        "subprocess",
        "pathlib",
        "select",
        "signal",
    }
)


@dataclass(frozen=True)
class Import:
    """One import found in a module: the absolute module name, where, and how; ``name`` is
    what ``from module import name`` takes when it is not a module of ours itself."""

    module: str
    path: str
    line: int
    type_checking_only: bool
    name: str | None = None


@dataclass(frozen=True)
class Rule:
    """Modules under ``package`` may import ours only from ``allowed`` (prefixes), must not
    import ours from ``forbidden`` (prefixes), and must not import ``banned`` third-party or
    stdlib modules (top-level names)."""

    package: str
    allowed: tuple[str, ...] | None = None
    forbidden: tuple[str, ...] = ()
    banned: frozenset[str] = frozenset()


RULES = (
    Rule("byteor.spec", allowed=("byteor.errors", "byteor.spec"), banned=IO_MODULES),
    Rule("byteor.plan", allowed=("byteor.errors", "byteor.plan"), banned=IO_MODULES),
    Rule(
        "byteor.kernel",
        allowed=("byteor.errors", "byteor.kernel"),
        banned=IO_MODULES | {"ctypes"},
    ),
    Rule(
        "byteor.lanes",
        forbidden=(
            "byteor.spec",
            "byteor.plan",
            "byteor.lower",
            "byteor.exec",
            "byteor.adapters",
            "byteor.cli",
        ),
    ),
)


# -- the checker ------------------------------------------------------------------------------


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_from(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` in ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split("."))
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def find_imports(
    source: str, module: str, path: str, *, is_package: bool = False, root: Path = ROOT
) -> list[Import]:
    """Every import of ``source`` (the text of ``module``), with relative names resolved.

    ``from pkg import name`` imports ``pkg.name`` when that is a module of ours, so
    ``from byteor import errors`` is ``byteor.errors`` while ``from byteor import
    __version__`` is the ``byteor`` facade itself.
    """
    tree = ast.parse(source, filename=path)
    found: list[Import] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, path, node.lineno, guarded))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, is_package, node.level, node.module)
            if base == "__future__":
                return
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                if base.split(".")[0] == "byteor" and _is_module(sub, root):
                    found.append(Import(sub, path, node.lineno, guarded))
                else:
                    found.append(Import(base, path, node.lineno, guarded, alias.name))
        elif isinstance(node, ast.Call) and _dynamic_import_name(node) is not None:
            found.append(Import(_dynamic_import_name(node) or "", path, node.lineno, guarded))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


def _dynamic_import_name(call: ast.Call) -> str | None:
    func = call.func
    dynamic = (isinstance(func, ast.Name) and func.id in {"__import__", "import_module"}) or (
        isinstance(func, ast.Attribute)
        and func.attr == "import_module"
        and isinstance(func.value, ast.Name)
        and func.value.id == "importlib"
    )
    if dynamic and call.args and isinstance(call.args[0], ast.Constant):
        value = call.args[0].value
        if isinstance(value, str):
            return value
    return None


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(rule: Rule, imports: list[Import]) -> list[str]:
    """One line per import that breaks ``rule``: ``path:line: imports X (why)``."""
    out: list[str] = []
    for imp in imports:
        name = imp.module
        where = f"{imp.path}:{imp.line}"
        if _within(name, "byteor"):
            if rule.allowed is not None and not any(_within(name, a) for a in rule.allowed):
                out.append(
                    f"{where}: imports {name} ({rule.package} may import only "
                    f"{', '.join(rule.allowed)})"
                )
            elif any(_within(name, f) for f in rule.forbidden):
                out.append(f"{where}: imports {name} ({rule.package} must not know it)")
        elif name.split(".")[0] in rule.banned and not imp.type_checking_only:
            out.append(f"{where}: imports {name} (no I/O modules in {rule.package})")
    return out


#: Private modules other packages may import all the same: generated code (gRPC stubs).
PRIVATE_ALLOWED = ("byteor.adapters._grpc_gen",)


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def owner_package(module: str, root: Path = ROOT) -> str:
    """The package a module of ours belongs to for privacy: ``byteor.<pkg>`` for everything
    under ``byteor/<pkg>/``, ``byteor`` for the modules directly under ``byteor/``."""
    parts = module.split(".")
    if len(parts) > 1 and (root / parts[0] / parts[1] / "__init__.py").is_file():
        return ".".join(parts[:2])
    return parts[0]


def private_reaches(module: str, imports: list[Import]) -> list[str]:
    """One line per import of ``module`` that takes a private module or name (a part that
    starts with ``_``) of another package: ``path:line: imports X (private to P)``."""
    out: list[str] = []
    mine = owner_package(module)
    for imp in imports:
        parts = imp.module.split(".")
        if parts[0] != "byteor":
            continue
        first = next((i for i in range(1, len(parts)) if _private(parts[i])), None)
        if first is None and imp.name is not None and _private(imp.name):
            parts, first = [*parts, imp.name], len(parts)  # a private name of a public module
        if first is None:
            continue
        taken = ".".join(parts)
        owner = owner_package(".".join(parts[:first]))
        if owner == mine or any(_within(taken, a) for a in PRIVATE_ALLOWED):
            continue
        out.append(f"{imp.path}:{imp.line}: imports {taken} (private to {owner})")
    return out


def package_modules(package: str) -> list[Path]:
    base = ROOT / Path(*package.split("."))
    if base.with_suffix(".py").is_file():
        return [base.with_suffix(".py")]
    return sorted(base.rglob("*.py")) if base.is_dir() else []


def check_package(rule: Rule) -> list[str]:
    problems: list[str] = []
    for path in package_modules(rule.package):
        rel = str(path.relative_to(ROOT))
        imports = find_imports(
            path.read_text(encoding="utf-8"),
            module_name(path),
            rel,
            is_package=path.name == "__init__.py",
        )
        problems += violations(rule, imports)
    return problems


# -- the rules hold -----------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.package)
def test_layering(rule: Rule) -> None:
    modules = package_modules(rule.package)
    if rule.package in ("byteor.spec", "byteor.plan", "byteor.kernel", "byteor.lanes"):
        assert modules, f"{rule.package} has no modules: has it moved?"
    problems = check_package(rule)
    assert not problems, (
        f"{len(problems)} import(s) break the layering of {rule.package} "
        "(shared/ARCHITECTURE.md, 'Layers and who may import whom'):\n  " + "\n  ".join(problems)
    )


def test_no_package_reaches_into_another_s_private_modules() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 20
    problems: list[str] = []
    for path in modules:
        module = module_name(path)
        imports = find_imports(
            path.read_text(encoding="utf-8"),
            module,
            str(path.relative_to(ROOT)),
            is_package=path.name == "__init__.py",
        )
        problems += private_reaches(module, imports)
    assert not problems, (
        f"{len(problems)} import(s) reach into another package's private modules or names. "
        "Import the public name instead (the package's __init__, or a public module such as "
        "byteor.exec.nodes or byteor.cli.common), or give what is needed a public home there; "
        f"generated code may be added to PRIVATE_ALLOWED:\n  " + "\n  ".join(problems)
    )


def test_every_module_parses() -> None:
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 20
    for path in paths:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# -- the checker catches what it should (so the tests above can fail) ---------------------------

SPEC = Rule("byteor.spec", allowed=("byteor.errors", "byteor.spec"), banned=IO_MODULES)
KERNEL = next(r for r in RULES if r.package == "byteor.kernel")
LANES = next(r for r in RULES if r.package == "byteor.lanes")


def check(rule: Rule, source: str, module: str = "byteor.spec._x", is_package: bool = False):
    return violations(rule, find_imports(source, module, "m.py", is_package=is_package))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os", ["m.py:1: imports os (no I/O modules in byteor.spec)"]),
        ("import os.path", ["m.py:1: imports os.path (no I/O modules in byteor.spec)"]),
        ("from os import path", ["m.py:1: imports os (no I/O modules in byteor.spec)"]),
        ("import logging as log", ["m.py:1: imports logging (no I/O modules in byteor.spec)"]),
        ("from pathlib import Path", ["m.py:1: imports pathlib (no I/O modules in byteor.spec)"]),
        (
            "def f():\n    import asyncio\n",
            ["m.py:2: imports asyncio (no I/O modules in byteor.spec)"],
        ),
        (
            "import importlib\nimportlib.import_module('socket')",
            ["m.py:2: imports socket (no I/O modules in byteor.spec)"],
        ),
        ("__import__('time')", ["m.py:1: imports time (no I/O modules in byteor.spec)"]),
        (
            "from byteor.lanes import create",
            [
                "m.py:1: imports byteor.lanes (byteor.spec may import only byteor.errors, "
                "byteor.spec)"
            ],
        ),
        (
            "from byteor import __version__",
            ["m.py:1: imports byteor (byteor.spec may import only byteor.errors, byteor.spec)"],
        ),
        (
            "from ..plan import x",
            [
                "m.py:1: imports byteor.plan (byteor.spec may import only byteor.errors, "
                "byteor.spec)"
            ],
        ),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from byteor.lanes import L\n",
            [
                "m.py:3: imports byteor.lanes (byteor.spec may import only byteor.errors, "
                "byteor.spec)"
            ],
        ),
    ],
)
def test_checker_finds(source: str, expected: list[str]) -> None:
    assert check(SPEC, source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "from __future__ import annotations",
        "import re, hashlib, difflib, tomllib, datetime",
        "from byteor.errors import ByteorError",
        "from byteor import errors",
        "from byteor.spec._kv import parse_kv",
        "from . import _kv",
        "from ._kv import parse_kv",
        "import ospath_lookalike",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pathlib import Path\n",
        "import typing\nif typing.TYPE_CHECKING:\n    import os\n",
    ],
)
def test_checker_allows(source: str) -> None:
    assert check(SPEC, source) == []


def test_checker_type_checking_else_branch_runs() -> None:
    source = "if TYPE_CHECKING:\n    pass\nelse:\n    import os\n"
    assert check(SPEC, source) == ["m.py:4: imports os (no I/O modules in byteor.spec)"]


def test_checker_relative_imports_in_a_package_init() -> None:
    # In byteor/spec/__init__.py, "from . import x" is byteor.spec.x and ".." is byteor.
    assert check(SPEC, "from . import _kv", "byteor.spec", is_package=True) == []
    assert check(SPEC, "from .. import errors", "byteor.spec", is_package=True) == []
    assert check(SPEC, "from ..lanes import layout", "byteor.spec", is_package=True) == [
        "m.py:1: imports byteor.lanes.layout (byteor.spec may import only byteor.errors, "
        "byteor.spec)"
    ]


def test_checker_kernel_bans_ctypes() -> None:
    assert check(KERNEL, "import ctypes", "byteor.kernel.x") == [
        "m.py:1: imports ctypes (no I/O modules in byteor.kernel)"
    ]


@pytest.mark.parametrize(
    "package", ["spec", "plan", "lower", "exec", "adapters", "cli", "cli._output"]
)
def test_checker_lanes_forbidden(package: str) -> None:
    module = f"byteor.{package}"
    found = check(LANES, f"import {module}", "byteor.lanes._x")
    assert found == [f"m.py:1: imports {module} (byteor.lanes must not know it)"]


def test_checker_lanes_may_use_kernel_errors_and_io() -> None:
    source = "import os, mmap, ctypes\nfrom byteor.kernel.barrier import SeqBarrier\n"
    source += "from byteor.errors import ByteorError\n"
    assert check(LANES, source, "byteor.lanes._x") == []


def reaches(source: str, module: str = "byteor.edgeplane._x") -> list[str]:
    return private_reaches(module, find_imports(source, module, "m.py"))


@pytest.mark.parametrize(
    ("source", "taken", "owner"),
    [
        ("from byteor.lanes._segment import SHM_DIR", "byteor.lanes._segment", "byteor.lanes"),
        ("import byteor.exec._sp", "byteor.exec._sp", "byteor.exec"),
        ("from byteor.exec import _sp", "byteor.exec._sp", "byteor.exec"),
        ("from byteor.exec import _hidden", "byteor.exec._hidden", "byteor.exec"),
        ("from byteor.exec.nodes import _hidden", "byteor.exec.nodes._hidden", "byteor.exec"),
        ("from ...cli._output import emit", "byteor.cli._output", "byteor.cli"),
        ("importlib.import_module('byteor.cli._load')", "byteor.cli._load", "byteor.cli"),
        (
            "def f():\n    from byteor.spec._findings import x",
            "byteor.spec._findings",
            "byteor.spec",
        ),
        (
            "if TYPE_CHECKING:\n    from byteor.lanes._lane import L",
            "byteor.lanes._lane",
            "byteor.lanes",
        ),
        ("from byteor import _lazy", "byteor._lazy", "byteor"),
    ],
)
def test_private_reach_found(source: str, taken: str, owner: str) -> None:
    (found,) = reaches(source, "byteor.edgeplane.sub._x")
    assert found.startswith("m.py:") and found.endswith(f": imports {taken} (private to {owner})")


@pytest.mark.parametrize(
    "source",
    [
        "from byteor.exec.nodes import StageNode",
        "from byteor.lanes import SHM_DIR",
        "from byteor import lanes",
        "from byteor.edgeplane._status import W_HELD",  # its own package
        "from .._frame import STAMP",  # its own package, relatively
        "from byteor.adapters._grpc_gen import stream_pb2",  # generated: allowed
        "import byteor.adapters._grpc_gen.stream_pb2_grpc",
        "from byteor.spec import *",
        "from os import _exit",  # not ours
    ],
)
def test_private_reach_allowed(source: str) -> None:
    assert reaches(source, "byteor.edgeplane.sub._x") == []


def test_private_reach_owner_is_the_top_level_package() -> None:
    # A subpackage's private module is its top-level package's to use; modules directly under
    # byteor/ (the facade) are byteor's.
    assert reaches("from byteor.bench.adapters._harness import x", "byteor.bench.lanes") == []
    assert reaches("from byteor.exec._sp import x", "byteor.errors") == [
        "m.py:1: imports byteor.exec._sp (private to byteor.exec)"
    ]
    assert reaches("from byteor import _lazy", "byteor.errors") == []


def test_facade_names_every_layer_lazily() -> None:
    """``import byteor`` imports no layer; each facade name resolves to its layer's object."""
    code = (
        "import sys, byteor\n"
        "assert not any(m.startswith(('byteor.exec', 'byteor.lanes')) for m in sys.modules)\n"
        "import byteor.exec, byteor.lower, byteor.spec\n"
        "assert byteor.run_sp is byteor.exec.run_sp\n"
        "assert byteor.lower_v2 is byteor.lower.lower_v2\n"
        "assert byteor.canonical_hash is byteor.spec.canonical_hash\n"
        "assert all(hasattr(byteor, n) for n in byteor.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
