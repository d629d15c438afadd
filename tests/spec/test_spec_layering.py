"""Import rules: spec and plan do no I/O and import nothing of ours but byteor.errors;
lower imports spec and plan only. Checked on the AST of every module."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "byteor"

IO_MODULES = {
    "os",
    "io",
    "pathlib",
    "asyncio",
    "socket",
    "logging",
    "time",
    "threading",
    "subprocess",
    "multiprocessing",
    "mmap",
    "shutil",
    "tempfile",
    "sys",
    "selectors",
    "signal",
    "random",
    "importlib",
    "glob",
    "fcntl",
}
ALLOWED_OURS = {
    "spec": {"byteor.errors", "byteor.spec"},
    "plan": {"byteor.errors", "byteor.plan"},
    "lower": {"byteor.errors", "byteor.spec", "byteor.plan", "byteor.lower"},
}


def _imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.append("<relative>")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.append("<dynamic>")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
            names.append("<open>")
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED_OURS))
def test_package_imports(package: str) -> None:
    files = sorted((ROOT / package).glob("*.py"))
    assert files, f"byteor/{package} has no modules"
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            where = f"byteor/{package}/{path.name} imports {name}"
            assert top not in IO_MODULES, where
            assert name not in ("<relative>", "<dynamic>", "<open>"), where
            if top == "byteor":
                assert any(
                    name == ok or name.startswith(ok + ".") for ok in ALLOWED_OURS[package]
                ), where


def test_the_checker_catches_a_violation(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom byteor.lanes import create\nx = open('f')\n")
    assert _imports(bad) == ["os", "byteor.lanes", "<open>"]
