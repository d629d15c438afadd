from __future__ import annotations

import pathlib

import pytest

import byteor.plan as P

PLANS = pathlib.Path(__file__).resolve().parents[1] / "plan" / "data"


@pytest.fixture
def orders_plan() -> P.PipelinePlanV2:
    return P.plan_from_toml((PLANS / "orders.toml").read_text(encoding="utf-8"))


@pytest.fixture
def clicks_plan() -> P.PipelinePlanV2:
    return P.plan_from_toml((PLANS / "clicks.toml").read_text(encoding="utf-8"))
