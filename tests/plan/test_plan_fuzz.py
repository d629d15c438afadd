"""Random and mutated plans never raise: every problem is a finding."""

from __future__ import annotations

import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st

import byteor.lower as L
import byteor.plan as P
import byteor.spec as S

EXAMPLE = (pathlib.Path(__file__).parent / "data" / "orders.toml").read_text("utf-8")
_VALUES = ['"x"', "1", "true", "[]", '["a", "kafka_in"]', "{}", "{ a = [1, { b = 2 }] }", "-3",
           "3.5", "1979-05-27", "'enrich'", "[1, 2]"]  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    parsed = P.parse_plan_toml(text)
    assert all(f.code in P.PLAN_CODES for f in parsed.findings)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from(["op", "inputs", "adapter", "params",
                  "capacity", "message_bytes", "merge", "journal", "process", "bogus"]),
                  st.sampled_from(_VALUES)),
        min_size=1, max_size=5,
    )
)  # fmt: skip
def test_mutated_example_lowers_or_reports(edits: list[tuple[int, str, str]]) -> None:
    lines = EXAMPLE.split("\n")
    for at, key, value in edits:
        lines.insert(at % (len(lines) + 1), f"{key} = {value}")
    parsed = P.parse_plan_toml("\n".join(lines))
    if parsed.plan is None:
        assert any(f.severity == "error" for f in parsed.findings)
        return
    try:
        spec = L.lower_v2(parsed.plan)
    except L.LowerError as exc:
        assert exc.findings
        return
    assert S.validate_v1(spec) == [] or not S.has_errors(S.validate_v1(spec))
