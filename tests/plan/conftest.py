from __future__ import annotations

import pathlib

import pytest

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def orders_toml() -> str:
    return (DATA / "orders.toml").read_text(encoding="utf-8")


@pytest.fixture
def clicks_toml() -> str:
    return (DATA / "clicks.toml").read_text(encoding="utf-8")
