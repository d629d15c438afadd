"""docs/spec.md stays true: its examples validate, their hashes and the code tables match."""

from __future__ import annotations

import pathlib
import re

import byteor.plan as P
import byteor.spec as S

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "spec.md").read_text("utf-8")
DATA = pathlib.Path(__file__).parent / "data"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def test_examples_validate_and_match_the_test_data() -> None:
    blocks = _blocks("spec")
    assert len(blocks) == 2
    targets = []
    for block in blocks:
        spec = S.decode_spec(block)
        assert S.validate_v1(block) == []
        targets.append(spec.target)
        assert f"Canonical hash: `{S.canonical_hash(block)}`" in DOC
    assert targets == ["lane_graph", "single_ring"]
    assert blocks[0] == (DATA / "lane_graph.spec").read_text("utf-8")
    assert blocks[1] == (DATA / "single_ring.spec").read_text("utf-8")


def test_plan_example_is_a_valid_plan() -> None:
    [toml] = _blocks("toml")
    parsed = P.parse_plan_toml(toml)
    assert parsed.findings == ()


def test_every_code_is_in_the_tables() -> None:
    for code, (severity, title) in {**S.CODES, **P.PLAN_CODES}.items():
        assert f"| {code} | {severity} | {title} |" in DOC, code


def test_every_key_is_documented() -> None:
    from byteor.spec._schema import ENTITY_FIELDS, TOP_LEVEL

    for key in TOP_LEVEL:
        assert f"`{key}`" in DOC
    for fields in ENTITY_FIELDS.values():
        for name in fields:
            assert f"`{name}`" in DOC, name
