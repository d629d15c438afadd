"""PipelinePlanV2 from TOML and from the builder, and validate_plan_v2."""

from __future__ import annotations

import pytest
from plan_stages import tag, upper

import byteor.plan as P


def test_orders_toml(orders_toml: str) -> None:
    parsed = P.parse_plan_toml(orders_toml)
    assert parsed.findings == ()
    plan = parsed.plan
    assert plan is not None and plan.name == "orders" and plan.version == 2
    assert [s.name for s in plan.sources] == ["kafka_in"]
    src = plan.sources[0]
    assert src.params == {"topic": "orders", "bootstrap_servers": "localhost:9092"}
    assert src.message_bytes == 1000
    enrich = plan.stages[0]
    assert (enrich.op, enrich.inputs, enrich.process) == (
        "examples.orders:enrich",
        ("kafka_in",),
        "workers",
    )
    audit = next(s for s in plan.sinks if s.name == "audit")
    assert audit.params == {"path": "/var/log/orders.log", "fsync": "true"}
    assert next(s for s in plan.sinks if s.name == "nats_out").inputs == ("enrich",)
    assert plan.consumers_of("enrich") == ["audit", "nats_out"]


def test_bytes_and_crlf_read_the_same(orders_toml: str) -> None:
    a = P.plan_from_toml(orders_toml)
    b = P.plan_from_toml(orders_toml.replace("\n", "\r\n").encode("utf-8"))
    assert a == b


def _codes(text: str | bytes) -> list[tuple[str, str, int | None]]:
    return [(f.code, f.key, f.line) for f in P.parse_plan_toml(text).findings]


def test_toml_syntax_error_has_a_line() -> None:
    [(code, _, line)] = _codes('name = "x"\n[sources.a]\nadapter = \n')
    assert (code, line) == ("PL102", 3)


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"\x00\x01", "PL101"), (b'name = "\xff"', "PL101"), (b"x" * (P.MAX_PLAN_BYTES + 1), "PL101")],
)
def test_unreadable(data: bytes, code: str) -> None:
    parsed = P.parse_plan_toml(data)
    assert [f.code for f in parsed.findings] == [code] and parsed.plan is None


def test_unknown_keys_with_did_you_mean() -> None:
    text = 'name = "p"\nnmae = 1\n[sources.a]\nadapter = "kafka"\nmesage_bytes = 8\n'
    text += '[sinks.b]\nadapter = "stdout"\ninputs = ["a"]\n'
    found = P.parse_plan_toml(text).findings
    assert [(f.code, f.key, f.line, f.suggestion) for f in found] == [
        ("PL201", "nmae", 2, "name"),
        ("PL201", "sources.a.mesage_bytes", 5, "message_bytes"),
    ]


def test_semantic_findings_with_lines() -> None:
    text = """name = "p"
[sources.a]
adapter = "kafka"
[sources.lonely]
adapter = "kafka"
capacity = 1000
[stages.x]
op = "identity"
inputs = ["a", "y", "b"]
merge = "redy"
[stages.y]
op = "pkg:fn"
inputs = ["x"]
[sinks.b]
adapter = "stdout"
inputs = ["xx"]
"""
    got = {(f.code, f.key, f.line) for f in P.parse_plan_toml(text).findings}
    assert ("PL303", "sources.lonely", 4) in got
    assert ("PL204", "sources.lonely.capacity", 6) in got
    assert ("PL307", "stages.x.inputs", 9) in got
    assert ("PL206", "stages.x.merge", 10) in got
    assert ("PL304", "stages.x.inputs", 9) in got
    assert ("PL301", "sinks.b.inputs", 16) in got


def test_missing_and_wrong_types() -> None:
    text = "version = 3\n[sources.a]\nparams = 5\n[stages.s]\ninputs = [1]\n"
    got = {(f.code, f.key) for f in P.parse_plan_toml(text).findings}
    assert {
        ("PL202", "name"),
        ("PL202", "sources.a"),
        ("PL203", "sources.a.params"),
        ("PL202", "stages.s"),
        ("PL203", "stages.s.inputs"),
        ("PL205", "version"),
    } <= got
    assert not any(code == "PL207" and key == "name" for code, key in got)


def test_plan_validation_error_lists_all() -> None:
    with pytest.raises(P.PlanValidationError) as info:
        P.plan_from_toml('name = "p"\n')
    assert [f.code for f in info.value.findings] == ["PL309"]
    assert "no source" in str(info.value)


# -- builder ---------------------------------------------------------------------------------


def test_builder_with_decorators() -> None:
    b = P.PlanBuilder("demo")
    src = b.source("gen", "generator", count=10, rate=1.5, tags=["a", "b"], sasl={"user": "u"})

    decorated = b.stage(inputs=src, process="w1", message_bytes=64)(upper)
    assert decorated is upper and decorated(b"x") == b"X"
    b.stage(tag)
    b.connect(upper, tag)
    b.sink("out", "stdout", inputs=tag)
    plan = b.build()
    assert [s.name for s in plan.stages] == ["upper", "tag"]
    assert plan.stages[0].op == "plan_stages:upper"
    assert plan.stages[0].inputs == ("gen",) and plan.stages[0].process == "w1"
    assert plan.stages[1].inputs == ("upper",)
    assert plan.sources[0].params == {
        "count": "10",
        "rate": "1.5",
        "tags": "a, b",
        "sasl.user": "u",
    }
    assert P.validate_plan_v2(plan) == []


def test_builder_equals_toml(clicks_toml: str) -> None:
    b = P.PlanBuilder("clicks")
    b.source("gen", "generator", count=1000000)
    b.add_stage("parse", "examples.clicks:parse", inputs="gen")
    b.add_stage("enrich", "examples.clicks:enrich", inputs="parse", message_bytes=512)
    b.add_stage("count", "count", inputs="enrich")
    b.sink("out", "stdout", inputs="count")
    assert b.build() == P.plan_from_toml(clicks_toml)


def test_builder_misuse() -> None:
    b = P.PlanBuilder("p")
    b.source("a", "kafka")
    with pytest.raises(P.PlanError, match="already exists"):
        b.sink("a", "stdout")

    def local(x: bytes) -> bytes:
        return x

    with pytest.raises(P.PlanError, match="module level"):
        b.stage(local)
    with pytest.raises(P.PlanError, match="decorate it"):
        b.sink("o", "stdout", inputs=upper)
    with pytest.raises(P.PlanError, match="empty"):
        b.source("c", "kafka", topic="  ")
    b.sink("o", "stdout", inputs="nope")
    with pytest.raises(P.PlanValidationError) as info:
        b.build()
    assert [f.code for f in info.value.findings] == ["PL303", "PL301"]
    assert all(f.line is None for f in info.value.findings)
    assert b.build(validate=False).sinks[0].inputs == ("nope",)
