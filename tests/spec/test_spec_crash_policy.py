"""The crash policy keys (``on_crash``, ``max_restarts``, ``restart_backoff_ms``): defaults
keep every existing hash, values and placement rules have their findings, compatibility notes
the change."""

from __future__ import annotations

import byteor.spec as S

HEAD = "byteor.spec = 1\npipeline.name = p\npipeline.target = lane_graph\n"
LANES = "".join(
    f"lane.{n}.kind = events\nlane.{n}.capacity = 64\nlane.{n}.slot_bytes = 64\n"
    for n in ("raw", "mid", "done")
)
BASE = (
    HEAD
    + LANES
    + "source.src.adapter = generator\nsource.src.out = raw\n"
    + "stage.a.op = identity\nstage.a.in = raw\nstage.a.out = mid\nstage.a.process = w1\n"
    + "stage.b.op = identity\nstage.b.in = mid\nstage.b.out = done\nstage.b.process = w1\n"
    + "sink.out.adapter = stdout\nsink.out.in = done\n"
)
RESTART = "stage.{s}.on_crash = restart\n"


def codes(text: str) -> list[str]:
    return [f.code for f in S.validate_v1(text)]


def test_defaults_spelled_out_change_nothing() -> None:
    spelled = BASE + "".join(
        f"stage.{s}.on_crash = FAIL\nstage.{s}.max_restarts = 3\n"
        f"stage.{s}.restart_backoff_ms = 100\n"
        for s in ("a", "b")
    )
    assert S.validate_v1(spelled) == []
    assert S.canonical(spelled) == S.canonical(BASE)
    assert S.canonical_hash(spelled) == S.canonical_hash(BASE)
    assert "on_crash" not in S.canonical(BASE)


def test_a_restart_policy_round_trips() -> None:
    text = BASE + "".join(
        RESTART.format(s=s) + f"stage.{s}.max_restarts = 5\nstage.{s}.restart_backoff_ms = 0\n"
        for s in ("a", "b")
    )
    assert S.validate_v1(text) == []
    spec = S.decode_spec(text)
    a = spec.stages["a"]
    assert (a.on_crash, a.max_restarts, a.restart_backoff_ms) == ("restart", 5, 0)
    canonical = S.canonical(text)
    assert "stage.a.on_crash = restart\n" in canonical
    assert "stage.a.restart_backoff_ms = 0\n" in canonical
    assert S.decode_spec(canonical) == spec


def test_values_out_of_range_and_unknown_words() -> None:
    text = BASE + RESTART.format(s="a") + RESTART.format(s="b")
    assert codes(text + "stage.a.max_restarts = 0\n").count("SP213") == 1
    assert codes(text + "stage.a.max_restarts = 1001\n").count("SP213") == 1
    assert codes(text + "stage.a.restart_backoff_ms = 600001\n").count("SP213") == 1
    bad = [f for f in S.validate_v1(BASE + "stage.a.on_crash = restrat\n") if f.code == "SP205"]
    assert len(bad) == 1 and bad[0].suggestion == "restart"


def test_stages_of_one_process_share_the_policy() -> None:
    [f] = [f for f in S.validate_v1(BASE + RESTART.format(s="a")) if f.code == "SP320"]
    assert f.key == "stage.b.on_crash" and "'w1'" in f.message
    text = BASE + RESTART.format(s="a") + RESTART.format(s="b") + "stage.b.max_restarts = 9\n"
    assert codes(text) == ["SP320"]


def test_main_cannot_restart_itself() -> None:
    text = BASE.replace("stage.a.process = w1\n", "") + RESTART.format(s="a")
    [f] = [f for f in S.validate_v1(text) if f.code == "SP321"]
    assert f.key == "stage.a.on_crash" and "supervisor" in f.message


def test_settings_without_restart_warn() -> None:
    found = S.validate_v1(BASE + "stage.a.max_restarts = 9\n")
    assert [(f.code, f.severity, f.key) for f in found] == [
        ("SP322", "warning", "stage.a.max_restarts")
    ]


def test_overwrite_inputs_cannot_restart() -> None:
    text = (
        BASE.replace("lane.mid.kind = events", "lane.mid.kind = fanout")
        + "lane.mid.policy = overwrite\n"
        + RESTART.format(s="a")
        + RESTART.format(s="b")
    )
    [f] = [f for f in S.validate_v1(text) if f.code == "SP323"]
    assert f.key == "stage.b.on_crash" and "'mid'" not in f.message and "mid" in f.message


def test_single_ring_does_not_restart() -> None:
    ring = (
        "byteor.spec = 1\npipeline.name = r\npipeline.target = single_ring\n"
        "lane.ring.kind = slots\nlane.ring.capacity = 64\nlane.ring.slot_bytes = 64\n"
        "source.src.adapter = generator\nsource.src.out = ring\n"
        "stage.a.op = identity\nstage.a.in = ring\nstage.a.process = w1\n"
        "sink.out.adapter = stdout\nsink.out.in = ring\nsink.out.after = a\n"
    )
    assert S.validate_v1(ring) == []
    assert codes(ring + RESTART.format(s="a")) == ["SP407"]


def test_compatibility_notes_a_policy_change() -> None:
    a = S.decode_spec(BASE)
    b = S.decode_spec(BASE + RESTART.format(s="a") + RESTART.format(s="b"))
    report = S.check_compatibility(a, b)
    notes = [r for r in report.reasons if r.code == "CP127"]
    assert [r.key for r in notes] == ["stage.a.on_crash", "stage.b.on_crash"]
    assert all(r.impact == "note" and "fail/3/100 -> restart/3/100" in r.message for r in notes)
    assert report.compatible
