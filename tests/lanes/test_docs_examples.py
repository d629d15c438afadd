"""docs/lanes.md stays true: every ```python block runs, and the layout drawings are layout.py's."""

from __future__ import annotations

import os
import pathlib
import re
import textwrap

import pytest

import byteor.lanes as bl
from byteor.lanes import layout as L

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "lanes.md").read_text("utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)
TEXT_BLOCKS = re.findall(r"```text\n(.*?)```", DOC, flags=re.S)


def _title(block: str) -> str:
    """The heading above a block, as its test id."""
    before = DOC[: DOC.index(block)]
    return re.findall(r"^#+ (.*)$", before, flags=re.M)[-1].split(":")[0].lower()


def test_every_kind_has_an_example() -> None:
    assert [_title(b) for b in PYTHON_BLOCKS] == [
        "events",
        "journal",
        "slots",
        "fanout",
        "router and merge",
        "async",
    ]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_title)
def test_example_runs(block: str) -> None:
    shm_before = {n for n in os.listdir("/dev/shm") if n.startswith("byteor-docs-")}
    code = compile(block, f"docs/lanes.md ({_title(block)})", "exec")
    exec(code, {"__name__": "__docs__"})
    # Each example cleans up after itself.
    shm_after = {n for n in os.listdir("/dev/shm") if n.startswith("byteor-docs-")}
    assert shm_after == shm_before
    for name in re.findall(r'"(docs-[a-z-]+)"', block):
        with pytest.raises(bl.SegmentNotFound):
            bl.attach(name, backing="memory")


def _layout_drawings() -> list[str]:
    """The literal (``::``) blocks of layout.py's docstring, dedented."""
    assert L.__doc__ is not None
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", L.__doc__)
    return [textwrap.dedent(b).strip("\n") for b in blocks]


def test_layout_drawings_match_layout_py() -> None:
    drawings = _layout_drawings()
    assert len(drawings) == 10  # the lane segment's 6, the counters segment's 4
    shown = [b.strip("\n") for b in TEXT_BLOCKS]
    for i, drawing in enumerate(drawings):
        assert drawing in shown, (
            f"drawing {i} of byteor/lanes/layout.py is not in docs/lanes.md: copy it again"
        )
