"""Validation: every finding has a stable code, severity, key, line and an actionable message."""

from __future__ import annotations

import pytest

import byteor.spec as S

HEAD = "byteor.spec = 1\npipeline.name = p\npipeline.target = lane_graph\n"
LANE = "lane.{n}.kind = {k}\nlane.{n}.capacity = 64\nlane.{n}.slot_bytes = 64\n"


def lane(n: str, k: str = "events") -> str:
    return LANE.format(n=n, k=k)


BASE = HEAD + lane("a") + "source.src.adapter = kafka\nsource.src.out = a\n"


def findings(text: str) -> list[S.Finding]:
    return S.validate_v1(text)


def only(text: str, code: str) -> S.Finding:
    hits = [f for f in findings(text) if f.code == code]
    assert len(hits) == 1, findings(text)
    return hits[0]


def test_valid_minimal() -> None:
    assert findings(BASE + "sink.out.adapter = stdout\nsink.out.in = a\n") == []


def test_all_findings_are_returned_not_just_the_first() -> None:
    text = HEAD.replace("= 1", "= 7") + "lane.a.kind = evnts\nlane.a.capacity = 3\n"
    text += "lane.a.slot_bytes = 9\nlane.a.sise = 1\nstage.s.op = ???\nstage.s.in = a\n"
    codes = [f.code for f in findings(text)]
    for code in ("SP206", "SP205", "SP210", "SP211", "SP201", "SP203", "SP319", "SP302"):
        assert code in codes, codes
    # stable order: by line
    lines = [f.line for f in findings(text) if f.line is not None]
    assert lines == sorted(lines)


def test_unknown_key_did_you_mean() -> None:
    f = only(BASE + "lane.a.capacty = 64\n", "SP201")
    assert f.key == "lane.a.capacty" and f.line == 9 and f.suggestion == "lane.a.capacity"
    assert "did you mean 'lane.a.capacity'" in f.message
    f = only(BASE + "lanes.a.kind = events\n", "SP201")
    assert f.suggestion == "lane.a.kind"
    f = only(BASE + "source.src.params.topic = t\n", "SP201")
    assert f.suggestion == "source.src.param.topic"


def test_missing_keys_point_at_the_entity() -> None:
    text = HEAD + "lane.a.kind = events\nsource.src.adapter = kafka\nsource.src.out = a\n"
    f = [x for x in findings(text) if x.code == "SP202"]
    assert {x.key for x in f} == {"lane.a.capacity", "lane.a.slot_bytes"}
    assert all(x.line == 4 and "add `lane.a." in x.message for x in f)
    missing = [x for x in findings("pipeline.name = p\n") if x.code == "SP202"]
    assert {x.key for x in missing} == {"byteor.spec", "pipeline.target"}
    assert all(x.line is None for x in missing)


@pytest.mark.parametrize(
    ("value", "code", "hint"),
    [
        ("1000", "SP210", "use 512 or 1024"),
        ("1", "SP210", "use 2 or more"),
        (str(1 << 25), "SP210", "at most"),
        ("lots", "SP203", "whole number"),
    ],
)
def test_capacity(value: str, code: str, hint: str) -> None:
    f = only(BASE.replace("capacity = 64", f"capacity = {value}"), code)
    assert f.key == "lane.a.capacity" and f.line == 5 and hint in f.message


@pytest.mark.parametrize(
    ("value", "hint"), [("12", "use 16"), ("4", "at least 8"), (str((1 << 20) + 8), "1 MiB")]
)
def test_slot_bytes(value: str, hint: str) -> None:
    f = only(BASE.replace("slot_bytes = 64", f"slot_bytes = {value}"), "SP211")
    assert f.line == 6 and hint in f.message


def test_slot_bytes_limits_accepted() -> None:
    for v in (8, 1 << 20):
        text = BASE.replace("slot_bytes = 64", f"slot_bytes = {v}") + "sink.o.adapter = stdout\n"
        assert findings(text + "sink.o.in = a\n") == []


def test_bad_enum_did_you_mean() -> None:
    f = only(BASE.replace("kind = events", "kind = fanuot"), "SP205")
    assert f.suggestion == "fanout" and f.line == 4


def test_references_and_producers() -> None:
    text = BASE + lane("b") + "stage.s.op = identity\nstage.s.in = aa\nstage.s.out = b\n"
    f = only(text, "SP301")
    assert f.key == "stage.s.in" and f.suggestion == "a"
    no_consumer = [(f.key, f.line) for f in findings(text) if f.code == "SP304"]
    assert no_consumer == [("lane.a.kind", 4), ("lane.b.kind", 9)]
    two = BASE + "source.s2.adapter = nats\nsource.s2.out = a\nsink.o.adapter = stdout\n"
    f = only(two + "sink.o.in = a\n", "SP303")
    assert f.key == "source.src.out"
    assert "one producer" in f.message


def test_no_producer() -> None:
    f = only(BASE + lane("b") + "sink.o.adapter = stdout\nsink.o.in = a, b\n", "SP302")
    assert f.key == "lane.b.kind" and f.line == 9


def test_events_lane_with_two_consumers() -> None:
    text = BASE + "sink.x.adapter = stdout\nsink.x.in = a\nsink.y.adapter = nats\nsink.y.in = a\n"
    f = only(text, "SP305")
    assert "fanout" in f.message
    ok = text.replace("kind = events", "kind = fanout")
    assert findings(ok) == []


def test_fanout_with_one_consumer_is_a_warning() -> None:
    text = BASE.replace("kind = events", "kind = fanout") + "sink.x.adapter = stdout\n"
    f = only(text + "sink.x.in = a\n", "SP318")
    assert f.severity == "warning"
    assert S.parse_spec(text + "sink.x.in = a\n").ok


def test_cycle() -> None:
    text = BASE + lane("b", "fanout") + lane("c")
    text += "stage.x.op = identity\nstage.x.in = a, c\nstage.x.out = b\n"
    text += "stage.y.op = identity\nstage.y.in = b\nstage.y.out = c\n"
    text += "sink.o.adapter = stdout\nsink.o.in = b\n"
    f = only(text, "SP306")
    assert "x -> y -> x" in f.message and f.key == "stage.x.in"


def test_policy_and_backing_per_kind() -> None:
    text = BASE + "lane.a.policy = overwrite\nlane.a.backing = file\nsink.o.adapter = stdout\n"
    text += "sink.o.in = a\n"
    codes = [(f.code, f.key) for f in findings(text)]
    assert ("SP308", "lane.a.policy") in codes and ("SP308", "lane.a.backing") in codes
    journal = text.replace("kind = events", "kind = journal")
    assert findings(journal) == []


def test_adapters_and_ops() -> None:
    text = BASE + "sink.o.adapter = kafak\nsink.o.in = a\n"
    f = only(text, "SP314")
    assert f.severity == "warning" and f.suggestion == "kafka"
    f = only(BASE + "sink.o.adapter = generator\nsink.o.in = a\n", "SP315")
    assert "only be a source" in f.message
    text = BASE + lane("b") + "stage.s.op = identiy\nstage.s.in = a\nstage.s.out = b\n"
    text += "sink.o.adapter = stdout\nsink.o.in = b\n"
    f = only(text, "SP313")
    assert f.severity == "warning" and f.suggestion == "identity"
    assert only(text.replace("identiy", "pkg:"), "SP203").key == "stage.s.op"


def test_names() -> None:
    f = only(BASE.replace("pipeline.name = p", "pipeline.name = 9lives"), "SP207")
    assert f.key == "pipeline.name"
    long = "x" * 49
    f = only(BASE + f"sink.{long}.adapter = stdout\nsink.{long}.in = a\n", "SP207")
    assert "48 bytes" in f.message


def test_duplicate_node_names_and_list_items() -> None:
    text = BASE + "sink.src.adapter = stdout\nsink.src.in = a\n"
    assert only(text, "SP312").key == "sink.src"
    text = BASE + "sink.o.adapter = stdout\nsink.o.in = a, a\n"
    assert only(text, "SP212").key == "sink.o.in"


def test_merge_rules() -> None:
    text = BASE + "sink.o.adapter = stdout\nsink.o.in = a\nsink.o.merge = ready\n"
    assert only(text, "SP317").line == 11
    text = BASE + lane("b") + "source.s2.adapter = nats\nsource.s2.out = b\n"
    text += "sink.o.adapter = stdout\nsink.o.in = a, b\nsink.o.merge = ready\n"
    spec = S.decode_spec(text)
    assert spec.sinks["o"].merge == "ready" and spec.sinks["o"].inputs == ("a", "b")


def test_after_needs_a_shared_slots_lane() -> None:
    text = BASE + lane("b") + "stage.s.op = identity\nstage.s.in = a\nstage.s.out = b\n"
    text += "sink.o.adapter = stdout\nsink.o.in = b\nsink.o.after = s\n"
    assert only(text, "SP309").key == "sink.o.after"
    assert only(text.replace("after = s", "after = t"), "SP310").key == "sink.o.after"


# -- single_ring ----------------------------------------------------------------------------


def test_single_ring_rules(ring_text: str) -> None:
    assert findings(ring_text) == []
    f = only(ring_text.replace("lane.ring.kind = slots", "lane.ring.kind = events"), "SP401")
    assert f.key == "pipeline.target" and f.line == 3
    forked = ring_text.replace("stage.count.after = enrich", "stage.count.after = parse")
    assert only(forked, "SP404").key == "stage.enrich.after"
    assert only(ring_text.replace("sink.out.after = count", "sink.out.after = enrich"), "SP405")
    moved = ring_text + "stage.parse.process = other\n"
    assert findings(moved) == []  # a ring's stages may run in processes of their own
    out = ring_text + "stage.parse.out = ring\n"
    assert only(out, "SP403").key == "stage.parse.out"
    two = ring_text + "source.g2.adapter = generator\nsource.g2.out = ring\n"
    assert only(two, "SP402")


def test_single_ring_example_decodes_into_a_chain(ring_text: str) -> None:
    spec = S.decode_spec(ring_text)
    assert spec.lanes["ring"].wait == "spin"
    assert spec.stages["enrich"].after == ("parse",)
    assert spec.sinks["out"].after == ("count",)


def test_programmatic_spec_findings_have_no_line() -> None:
    spec = S.PipelineSpecV1.build(
        "p",
        "lane_graph",
        lanes=[S.LaneSpec("a", "events", 100, 64)],
        sources=[S.SourceSpec("s", "kafka", "a")],
        sinks=[S.SinkSpec("o", "stdout", ("a",))],
    )
    [f] = S.validate_v1(spec)
    assert (f.code, f.key, f.line) == ("SP210", "lane.a.capacity", None)


def test_every_code_is_documented_with_a_severity() -> None:
    for code, (severity, title) in S.CODES.items():
        assert severity in ("error", "warning") and title
        assert code[:2] in ("KV", "SP")
