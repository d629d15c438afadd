"""lower_v2: lane kinds, geometry, placement, targets, determinism; describe and dot."""

from __future__ import annotations

import dataclasses

import pytest

import byteor.lower as L
import byteor.plan as P
import byteor.spec as S

# Pinned: lowering is deterministic, so the same plan and options give these hashes forever
# (a change here is a change of the lowering contract).
ORDERS_HASH = "sha256:d80324b81e428c9b11c57b1692d69bbc4d9530bc7bfbafebeafbae3344d18e4c"
CLICKS_HASH = "sha256:1eb8473cf981289fbf1728e0b3e895caa628e9bd1367a69cf4529dfc0de84ce5"


def test_auto_fanout_is_a_lane_graph(orders_plan: P.PipelinePlanV2) -> None:
    spec = L.lower_v2(orders_plan)
    assert spec.target == "lane_graph"
    assert spec.lanes["kafka_in"] == S.LaneSpec("kafka_in", "events", 1024, 1000)
    assert spec.lanes["enrich"].kind == "fanout" and spec.lanes["enrich"].slot_bytes == 2048
    assert spec.stages["enrich"].outputs == ("enrich",)
    assert spec.stages["enrich"].process == "workers"
    assert spec.sinks["audit"].params == {"path": "/var/log/orders.log", "fsync": "true"}
    assert S.validate_v1(spec) == []
    assert S.canonical_hash(spec) == ORDERS_HASH


def test_auto_chain_is_a_single_ring(clicks_plan: P.PipelinePlanV2) -> None:
    spec = L.lower_v2(clicks_plan)
    assert spec.target == "single_ring"
    assert list(spec.lanes) == ["ring"]
    assert spec.lanes["ring"].kind == "slots" and spec.lanes["ring"].slot_bytes == 512
    assert [spec.stages[n].after for n in ("parse", "enrich", "count")] == [
        (),
        ("parse",),
        ("enrich",),
    ]
    assert spec.sinks["out"].after == ("count",)
    assert S.canonical_hash(spec) == CLICKS_HASH


def test_same_plan_lowers_to_both_targets(clicks_plan: P.PipelinePlanV2) -> None:
    graph = L.lower_v2(clicks_plan, "lane_graph")
    assert graph.target == "lane_graph"
    assert {n: lane.kind for n, lane in graph.lanes.items()} == {
        "gen": "events",
        "parse": "events",
        "enrich": "events",
        "count": "events",
    }
    assert S.validate_v1(graph) == []
    # the explicit single_ring also takes several sinks at the end of the chain
    b = P.PlanBuilder("two")
    b.source("g", "generator")
    b.add_stage("s", "identity", inputs="g")
    b.sink("a", "stdout", inputs="s")
    b.sink("b", "file", inputs="s")
    plan = b.build()
    assert L.lower_v2(plan).target == "lane_graph"
    ring = L.lower_v2(plan, "single_ring")
    assert ring.target == "single_ring" and ring.sinks["b"].after == ("s",)


def test_single_ring_refused_with_the_reason(orders_plan: P.PipelinePlanV2) -> None:
    b = P.PlanBuilder("m")
    b.source("a", "kafka")
    b.source("b", "nats")
    b.add_stage("join", "identity", inputs=["b", "a"], merge="ready")
    b.sink("o", "stdout", inputs="join")
    plan = b.build()
    with pytest.raises(L.LowerError) as info:
        L.lower_v2(plan, "single_ring")
    [f] = info.value.findings
    assert f.code == "LW104" and "2 sources" in f.message
    spec = L.lower_v2(plan)
    # many-to-one: one events lane per producer, merged by the consumer in input order
    assert spec.stages["join"].inputs == ("b", "a") and spec.stages["join"].merge == "ready"
    assert spec.lanes["a"].kind == "events" and spec.lanes["b"].kind == "events"


def test_options_and_hints() -> None:
    b = P.PlanBuilder("h")
    b.source("src", "kafka", capacity=64, message_bytes=13, journal=True)
    b.add_stage("x", "identity", inputs="src")
    b.add_stage("y", "identity", inputs="x", process="pinned")
    b.sink("o", "stdout", inputs="y")
    opts = L.LowerOptions(capacity=4096, slot_bytes=128, placement="per_stage", wait="spin")
    spec = L.lower_v2(b.build(), "auto", opts)
    assert spec.target == "lane_graph"  # a journaled source needs a lane graph
    assert spec.lanes["src"] == S.LaneSpec("src", "journal", 64, 16, wait="spin")
    assert spec.lanes["x"] == S.LaneSpec("x", "events", 4096, 128, wait="spin")
    assert spec.stages["x"].process == "x" and spec.stages["y"].process == "pinned"
    assert spec.lanes["y"].kind == "events" and spec.sinks["o"].inputs == ("y",)


def test_journal_sources_option(clicks_plan: P.PipelinePlanV2) -> None:
    spec = L.lower_v2(clicks_plan, opts=L.LowerOptions(journal_sources=True))
    assert spec.target == "lane_graph" and spec.lanes["gen"].kind == "journal"


def test_terminal_stage_has_no_output_lane() -> None:
    b = P.PlanBuilder("t")
    b.source("s", "kafka")
    b.add_stage("act", "pkg.actions:call_api", inputs="s")
    b.add_stage("copy", "identity", inputs="s")
    b.sink("o", "stdout", inputs="copy")
    spec = L.lower_v2(b.build())
    assert spec.stages["act"].outputs == ()
    assert spec.lanes["s"].kind == "fanout"


def test_bad_plan_and_bad_options_raise_lower_error() -> None:
    b = P.PlanBuilder("bad")
    b.source("s", "kafka", message_bytes=(1 << 20) + 1)
    b.sink("o", "stdout", inputs="s")
    with pytest.raises(L.LowerError) as info:
        L.lower_v2(b.build())
    assert [f.code for f in info.value.findings] == ["LW102"]
    with pytest.raises(L.LowerError) as info:
        L.lower_v2(b.build(), opts=L.LowerOptions(capacity=1000, slot_bytes=12))
    assert {f.key for f in info.value.findings} >= {"opts.capacity", "opts.slot_bytes"}
    invalid = P.PlanBuilder("x")
    invalid.sink("o", "stdout", inputs="nope")
    with pytest.raises(L.LowerError) as info:
        L.lower_v2(invalid.build(validate=False))
    assert {f.code for f in info.value.findings} == {"PL301", "PL309"}


def test_deterministic_regardless_of_authoring_order(orders_plan: P.PipelinePlanV2) -> None:
    shuffled = dataclasses.replace(
        orders_plan,
        sinks=tuple(reversed(orders_plan.sinks)),
    )
    a = L.lower_v2(orders_plan)
    b = L.lower_v2(shuffled)
    assert S.encode_spec(a) == S.encode_spec(b)
    assert S.canonical_hash(L.lower_v2(orders_plan)) == S.canonical_hash(a)


# -- describe and dot ------------------------------------------------------------------------


def test_describe_orders(orders_plan: P.PipelinePlanV2) -> None:
    d = L.describe_spec(L.lower_v2(orders_plan))
    assert d["hash"] == ORDERS_HASH
    assert [p["name"] for p in d["processes"]] == ["edge", "workers"]
    lanes = {ln["name"]: ln for ln in d["lanes"]}
    assert lanes["enrich"]["consumers"] == ["sink audit", "sink nats_out"]
    assert lanes["enrich"]["shm_bytes"] == S.segment_bytes(1024, 2048, 16)
    assert lanes["kafka_in"]["max_consumers"] == 1
    assert d["total_shm_bytes"] == sum(ln["shm_bytes"] for ln in d["lanes"])
    paths = {(p["source"], p["sink"]): p for p in d["paths"]}
    assert set(paths) == {("kafka_in", "audit"), ("kafka_in", "nats_out")}
    p = paths[("kafka_in", "nats_out")]
    assert p["via"] == ["enrich"] and p["guarantee"] == "at-least-once"
    assert p["ordering"] == "per-partition"
    text = L.render_description(d)
    assert "kafka_in -> enrich -> nats_out: at-least-once" in text


def test_describe_guarantee_degrades(clicks_plan: P.PipelinePlanV2) -> None:
    spec = L.lower_v2(clicks_plan)
    [path] = L.describe_spec(spec)["paths"]
    assert path["via"] == ["parse", "enrich", "count"]
    assert path["guarantee"] == "best-effort"  # stdout confirms nothing
    overwrite = S.PipelineSpecV1.build(
        "o",
        "lane_graph",
        lanes=[S.LaneSpec("a", "fanout", 64, 64, policy="overwrite")],
        sources=[S.SourceSpec("k", "kafka", "a")],
        sinks=[S.SinkSpec("n", "nats", ("a",)), S.SinkSpec("m", "mystery", ("a",))],
    )
    paths = {p["sink"]: p for p in L.describe_spec(overwrite)["paths"]}
    assert paths["n"]["guarantee"] == "best-effort"
    assert any("overwrites" in r for r in paths["n"]["reasons"])
    assert paths["m"]["guarantee"] == "unknown"
    barrier = L.describe_spec(overwrite)["barriers"][0]
    assert barrier["waits_for"] == [] and "never waits" in barrier["note"]


def test_dot_is_deterministic_and_well_formed(orders_plan: P.PipelinePlanV2) -> None:
    spec = L.lower_v2(orders_plan)
    dot = L.to_dot(spec)
    assert dot == L.to_dot(S.decode_spec(S.encode_spec(spec)))
    assert dot.startswith('digraph "orders" {') and dot.endswith("}\n")
    assert dot.count("{") == dot.count("}")
    assert '"source:kafka_in" -> "stage:enrich"' in dot
    assert '"stage:enrich" -> "sink:nats_out"' in dot
    assert 'label="process workers"' in dot
    ring = L.to_dot(S.decode_spec(S.encode_spec(L.lower_v2(_clicks()))))
    assert '"stage:parse" -> "stage:enrich"' in ring and '"stage:count" -> "sink:out"' in ring


def _clicks() -> P.PipelinePlanV2:
    b = P.PlanBuilder("clicks")
    b.source("gen", "generator")
    b.add_stage("parse", "identity", inputs="gen")
    b.add_stage("enrich", "identity", inputs="parse")
    b.add_stage("count", "count", inputs="enrich")
    b.sink("out", "stdout", inputs="count")
    return b.build()


def test_big_chain_is_fast_and_not_a_ring() -> None:
    b = P.PlanBuilder("big")
    b.source("s0", "kafka")
    for i in range(1, 2001):
        b.add_stage(f"s{i}", "identity", inputs=f"s{i - 1}")
    b.sink("o", "stdout", inputs="s2000")
    plan = b.build()
    assert "exceed the 64 readers" in (L.ring_compatible(plan) or "")
    spec = L.lower_v2(plan)
    assert spec.target == "lane_graph" and len(spec.lanes) == 2001
    [path] = L.describe_spec(spec)["paths"]
    assert len(path["via"]) == 2000 and len(path["lanes"]) == 2001


def test_path_explosion_is_capped() -> None:
    b = P.PlanBuilder("lattice")
    b.source("s", "kafka")
    prev = ["s"]
    for layer in range(20):
        cur = [f"n{layer}_{k}" for k in range(2)]
        for name in cur:
            b.add_stage(name, "identity", inputs=prev, merge="ready" if len(prev) > 1 else None)
        prev = cur
    b.add_stage("t", "identity", inputs=prev)
    b.add_stage("dead_end", "identity", inputs="t")
    b.sink("o", "stdout", inputs="t")
    d = L.describe_spec(L.lower_v2(b.build()))
    assert len(d["paths"]) == L.MAX_PATHS and d["paths_truncated"] is True
    assert "within each input; merged at" in d["paths"][0]["ordering"]


def test_a_single_ring_places_its_stages_like_a_lane_graph(clicks_plan: P.PipelinePlanV2) -> None:
    opts = L.LowerOptions(placement="per_stage")
    ring = L.lower_v2(clicks_plan, "single_ring", opts)
    assert {n: st.process for n, st in ring.stages.items()} == {
        "parse": "parse",
        "enrich": "enrich",
        "count": "count",
    }
    assert S.validate_v1(ring) == []
    single = L.lower_v2(clicks_plan, "single_ring")
    assert {st.process for st in single.stages.values()} == {"main"}
