"""Semantic diff and in-place compatibility."""

from __future__ import annotations

import byteor.spec as S


def test_identical_meaning_is_no_diff(graph_text: str) -> None:
    noisy = (
        "# c\n"
        + graph_text.replace("capacity = 4096", "capacity = 04096")
        + ("lane.raw.policy = block\n")
    )
    d = S.diff_specs(graph_text, noisy)
    assert d.equal and d.hash_a == d.hash_b
    assert d.render().startswith("no differences")


def test_changes_grouped_by_entity(graph_text: str) -> None:
    b = graph_text.replace("lane.raw.capacity = 4096", "lane.raw.capacity = 8192")
    b = b.replace("sink.audit.param.path = /var/log/orders.log\n", "")
    b += "lane.enriched.policy = overwrite\nstage.enrich.param.mode = fast\n"
    d = S.diff_specs(graph_text, b)
    assert not d.equal and d.hash_a != d.hash_b
    groups = d.groups()
    assert list(groups) == ["lane enriched", "lane raw", "stage enrich", "sink audit"]
    [policy] = groups["lane enriched"]
    # effective values: the default "block" shows as the old value, not as an addition
    assert (policy.change, policy.old, policy.new) == ("changed", "block", "overwrite")
    [cap] = groups["lane raw"]
    assert (cap.key, cap.old, cap.new) == ("lane.raw.capacity", "4096", "8192")
    [param] = groups["stage enrich"]
    assert (param.change, param.new) == ("added", "fast")
    [path] = groups["sink audit"]
    assert (path.change, path.old, path.new) == ("removed", "/var/log/orders.log", None)
    doc = d.to_dict()
    assert doc["equal"] is False and "lane raw" in doc["groups"]  # type: ignore[operator]
    text = d.render()
    assert "  ~ lane.raw.capacity: 4096 -> 8192" in text
    assert "  - sink.audit.param.path = /var/log/orders.log" in text


def test_diff_of_invalid_specs_uses_canonical_keys() -> None:
    d = S.diff_specs("lane.x.capacity = 16\nb = 2\n", "lane.x.capacity = 016\nc = 3\n")
    assert [(c.key, c.change) for c in d.changes] == [("b", "removed"), ("c", "added")]
    assert all(c.group == "pipeline" for c in d.changes)


def _spec(text: str) -> S.PipelineSpecV1:
    return S.decode_spec(text)


def test_compatible_changes_are_notes(graph_text: str) -> None:
    b = graph_text.replace("stage.enrich.process = workers", "stage.enrich.process = w2")
    b += "source.kafka_in.param.group = g2\nlane.raw.wait = spin\n"
    report = S.check_compatibility(_spec(graph_text), _spec(b))
    assert report.compatible
    assert {r.code for r in report.reasons} == {"CP123", "CP133", "CP113"}
    assert all(r.impact == "note" for r in report.reasons)


def test_blockers_are_each_listed(graph_text: str) -> None:
    b = graph_text.replace("lane.raw.capacity = 4096", "lane.raw.capacity = 8192")
    b = b.replace("examples.orders:enrich", "examples.orders:enrich_v2")
    b = b.replace("sink.audit.adapter = file\nsink.audit.in = enriched\n", "")
    b = b.replace("sink.audit.param.path = /var/log/orders.log\n", "")
    report = S.check_compatibility(_spec(graph_text), _spec(b))
    assert not report.compatible
    got = {(r.code, r.key) for r in report.reasons}
    assert got == {
        ("CP112", "lane.raw.capacity"),
        ("CP120", "stage.enrich.op"),
        ("CP131", "sink.audit"),
    }


def test_renamed_lane_is_recognized(graph_text: str) -> None:
    b = graph_text.replace("lane.raw.", "lane.incoming.").replace("= raw\n", "= incoming\n")
    report = S.check_compatibility(_spec(graph_text), _spec(b))
    codes = [(r.code, r.key) for r in report.reasons]
    assert ("CP111", "lane.raw") in codes
    assert not report.compatible
    assert "incoming" in next(r.message for r in report.reasons if r.code == "CP111")


def test_same_spec_is_compatible_with_no_reasons(ring_text: str) -> None:
    report = S.check_compatibility(_spec(ring_text), _spec(ring_text))
    assert report.compatible and report.reasons == ()
