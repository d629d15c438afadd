"""The KV codec: parsing with line numbers, the canonical form, the pinned hashes."""

from __future__ import annotations

import pytest

import byteor.spec as S

# Golden hashes: these change only if the canonical form changes, which breaks the contract.
GRAPH_HASH = "sha256:f4aa0dab727f0c3fcbedd136588af9f3c00b1f89d76718131c5b4010020c374a"
RING_HASH = "sha256:2f66244457b09a0abf779467bfc634e884b93b892ad0a3d1a028be3d2d9fb758"

GRAPH_CANONICAL = """\
byteor.spec = 1
lane.enriched.capacity = 1024
lane.enriched.kind = fanout
lane.enriched.slot_bytes = 2048
lane.raw.capacity = 4096
lane.raw.kind = events
lane.raw.slot_bytes = 1024
pipeline.name = orders
pipeline.target = lane_graph
sink.audit.adapter = file
sink.audit.in = enriched
sink.audit.param.path = /var/log/orders.log
sink.nats_out.adapter = nats
sink.nats_out.in = enriched
sink.nats_out.param.subject = orders.enriched
source.kafka_in.adapter = kafka
source.kafka_in.out = raw
source.kafka_in.param.bootstrap_servers = localhost:9092
source.kafka_in.param.topic = orders
stage.enrich.in = raw
stage.enrich.op = examples.orders:enrich
stage.enrich.out = enriched
stage.enrich.process = workers
"""


def test_examples_are_valid(graph_text: str, ring_text: str) -> None:
    for text in (graph_text, ring_text):
        parsed = S.parse_spec(text)
        assert parsed.findings == ()
        assert parsed.spec is not None


def test_decoded_types(graph_text: str) -> None:
    spec = S.decode_spec(graph_text)
    assert spec.name == "orders" and spec.target == "lane_graph" and spec.version == 1
    assert spec.lanes["raw"] == S.LaneSpec("raw", "events", 4096, 1024)
    assert spec.lanes["enriched"].kind == "fanout"
    assert spec.stages["enrich"].inputs == ("raw",)
    assert spec.stages["enrich"].process == "workers"
    assert spec.sources["kafka_in"].params == {
        "topic": "orders",
        "bootstrap_servers": "localhost:9092",
    }
    assert spec.sinks["audit"].inputs == ("enriched",)


def test_canonical_text_is_pinned(graph_text: str) -> None:
    assert S.canonical(graph_text) == GRAPH_CANONICAL
    assert S.encode_spec(S.decode_spec(graph_text)) == GRAPH_CANONICAL


def test_golden_hashes(graph_text: str, ring_text: str) -> None:
    assert S.canonical_hash(graph_text) == GRAPH_HASH
    assert S.canonical_hash(ring_text) == RING_HASH
    assert S.canonical_hash(S.decode_spec(ring_text)) == RING_HASH


def test_same_meaning_same_hash(graph_text: str) -> None:
    lines = [ln for ln in graph_text.splitlines() if ln and not ln.startswith("#")]
    noisy = "\ufeff# header comment\r\n" + "\r\n".join(reversed(lines))
    noisy += "\r\n\r\n   # trailing\r\n"
    noisy = noisy.replace("capacity = 4096", "capacity   =   +0004_096")
    noisy = noisy.replace("kind = events", "kind = EVENTS")
    noisy += "lane.raw.policy = block\nlane.raw.wait = backoff\nstage.enrich.merge = round_robin\n"
    assert S.canonical(noisy) == GRAPH_CANONICAL
    assert S.canonical_hash(noisy.encode("utf-8")) == GRAPH_HASH


def test_meaning_change_changes_hash(graph_text: str) -> None:
    changed = graph_text.replace("capacity = 4096", "capacity = 8192")
    assert S.canonical_hash(changed) != GRAPH_HASH
    assert S.canonical_hash(graph_text.replace("= orders\n", "= orders2\n", 1)) != GRAPH_HASH


def test_list_order_is_kept_and_normalized() -> None:
    doc = S.parse_kv("stage.m.in = b ,a,   c\n")
    assert S.canonical(doc) == "stage.m.in = b, a, c\n"


def test_hash_format() -> None:
    h = S.canonical_hash("")
    assert h == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_value_keeps_hash_sign_and_unicode() -> None:
    doc = S.parse_kv("source.a.param.url = http://h/p#frag ünï\n")
    assert doc.get("source.a.param.url") == "http://h/p#frag ünï"
    assert doc.findings == ()


def test_line_numbers_survive_comments_and_crlf() -> None:
    doc = S.parse_kv("# c\r\n\r\npipeline.name = x\r\n  # c2\r\nlane.a.kind = events\r\n")
    assert doc.lines() == {"pipeline.name": 3, "lane.a.kind": 5}
    assert doc.as_dict()["lane.a.kind"] == "events"


# -- bad input: findings with line numbers, never an exception -------------------------------


def _codes(source: str | bytes) -> list[tuple[str, int | None]]:
    return [(f.code, f.line) for f in S.parse_kv(source).findings]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (b"pipeline.name = a\n\xff\xfe = x\n", [("KV101", 2)]),
        (b"pipeline.name = a\nb\x00c = d\n", [("KV102", 2)]),
        ("a = b\njust words\n", [("KV104", 2)]),
        ("lane.r$w.kind = events\n", [("KV105", 1)]),
        ("lane raw.kind = events\n", [("KV105", 1)]),
        (" = value\n", [("KV105", 1)]),
        ("a = 1\nb = 2\na = 3\n", [("KV106", 3)]),
        ("a =\n", [("KV107", 1)]),
        ("a = x\ry\n", [("KV108", 1)]),
        ("a = x\x1by\n", [("KV108", 1)]),
        ("a = \ud800\n", [("KV101", 1)]),
    ],
)
def test_bad_lines(source: str | bytes, expected: list[tuple[str, int]]) -> None:
    assert _codes(source) == expected


def test_duplicate_keeps_first_and_names_both_lines() -> None:
    doc = S.parse_kv("a = 1\nb = 2\na = 3\n")
    assert doc.get("a") == "1"
    assert "line 1" in doc.findings[0].message


def test_too_large_is_one_finding() -> None:
    big = b"a = b\n" * (S.MAX_SPEC_BYTES // 6 + 1)
    findings = S.validate_v1(big)
    assert [f.code for f in findings] == ["KV103"]
    assert S.parse_kv(big.decode()).findings[0].code == "KV103"


def test_finding_flood_is_capped() -> None:
    doc = S.parse_kv("junk\n" * 1000)
    assert len(doc.findings) == 201
    assert doc.findings[-1].code == "KV109"


def test_garbage_bytes_validate_without_raising() -> None:
    junk = bytes(range(1, 256)) * 50
    findings = S.validate_v1(junk)
    assert findings and all(f.severity in ("error", "warning") for f in findings)
    assert any(f.code == "KV101" for f in findings)


def test_decode_spec_raises_with_all_findings() -> None:
    with pytest.raises(S.SpecValidationError) as info:
        S.decode_spec("byteor.spec = 1\npipeline.name = x\nbogus = 1\n")
    codes = {f.code for f in info.value.findings}
    assert {"SP201", "SP202", "SP319"} <= codes
    assert isinstance(info.value, S.SpecError)
