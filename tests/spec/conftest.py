from __future__ import annotations

import pathlib

import pytest

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def graph_text() -> str:
    return (DATA / "lane_graph.spec").read_text(encoding="utf-8")


@pytest.fixture
def ring_text() -> str:
    return (DATA / "single_ring.spec").read_text(encoding="utf-8")
