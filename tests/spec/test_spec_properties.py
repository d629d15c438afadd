"""Properties of the codec, fed random, mutated and noisy specs (hypothesis)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import byteor.spec as S

_NAMES = st.from_regex(r"[a-z_][a-z0-9_-]{0,10}", fullmatch=True)
_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chain_specs(draw: st.DrawFn) -> S.PipelineSpecV1:
    """A valid lane_graph chain: source -> stage_1 .. stage_n -> sink(s)."""
    n = draw(st.integers(0, 4))
    names = draw(st.lists(_NAMES, min_size=n + 3, max_size=n + 3, unique=True))
    lane_names = draw(st.lists(_NAMES, min_size=n + 1, max_size=n + 1, unique=True))
    sinks = draw(st.integers(1, 3))
    lanes = []
    for i, ln in enumerate(lane_names):
        last = i == n
        kind = "fanout" if last and sinks > 1 else draw(st.sampled_from(["events", "journal"]))
        lanes.append(
            S.LaneSpec(
                ln,
                kind,  # type: ignore[arg-type]
                capacity=1 << draw(st.integers(1, 24)),
                slot_bytes=8 * draw(st.integers(1, 1 << 17)),
                policy="overwrite" if kind == "fanout" and draw(st.booleans()) else "block",
                wait=draw(st.sampled_from(["backoff", "spin"])),
                backing="file" if kind == "journal" and draw(st.booleans()) else "shm",
            )
        )
    params = st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z]{1,4})?", fullmatch=True),
        st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1)
        .map(str.strip)
        .filter(bool),
        max_size=3,
    )
    stages = [
        S.StageSpec(
            names[i + 1],
            op=draw(st.sampled_from(["identity", "count", "pkg.mod:fn", "a:B.method"])),
            inputs=(lane_names[i],),
            outputs=(lane_names[i + 1],),
            process=draw(st.sampled_from(["main", "w1", "w2"])),
            params=draw(params),
        )
        for i in range(n)
    ]
    sink_names = [f"{names[-1]}{j}" for j in range(sinks)]
    return S.PipelineSpecV1.build(
        name=names[0],
        target="lane_graph",
        lanes=lanes,
        stages=stages,
        sources=[S.SourceSpec(names[0], "kafka", lane_names[0], draw(params))],
        sinks=[S.SinkSpec(sn, "nats", (lane_names[-1],)) for sn in sink_names],
    )


def _noisy(spec: S.PipelineSpecV1, rnd: random.Random) -> str:
    """The same spec, written the way people write: any order, comments, CRLF, padding."""
    lines = []
    for key, value in S.spec_to_items(spec, defaults=rnd.random() < 0.5):
        if key.endswith(("capacity", "slot_bytes")) and rnd.random() < 0.3:
            value = "+" + "0" * rnd.randint(0, 3) + value
        if value in ("events", "fanout", "journal") and rnd.random() < 0.3:
            value = value.upper()
        lines.append(
            f"{' ' * rnd.randint(0, 2)}{key}{' ' * rnd.randint(0, 3)}="
            f"{' ' * rnd.randint(0, 3)}{value}{' ' * rnd.randint(0, 2)}"
        )
        if rnd.random() < 0.2:
            lines.append("# a comment = with equals")
        if rnd.random() < 0.1:
            lines.append("")
    rnd.shuffle(lines)
    eol = rnd.choice(["\n", "\r\n"])
    return eol.join(lines) + eol * rnd.randint(0, 2)


@_SETTINGS
@given(chain_specs(), st.randoms(use_true_random=False))
def test_noisy_text_decodes_to_the_same_spec(spec: S.PipelineSpecV1, rnd: random.Random) -> None:
    assert S.validate_v1(spec) == []
    text = _noisy(spec, rnd)
    parsed = S.parse_spec(text)
    assert parsed.findings == (), parsed.findings
    assert parsed.spec == spec
    assert S.canonical(text) == S.encode_spec(spec)
    assert S.canonical_hash(text) == S.canonical_hash(spec)


@_SETTINGS
@given(chain_specs())
def test_parse_of_canonical_is_the_same_spec(spec: S.PipelineSpecV1) -> None:
    text = S.encode_spec(spec)
    assert S.decode_spec(text) == spec
    assert S.canonical(text) == text
    assert text.endswith("\n") and "\r" not in text
    keys = [line.split(" = ", 1)[0].encode() for line in text.splitlines()]
    assert keys == sorted(keys)


@_SETTINGS
@given(st.text(max_size=400))
def test_random_text_never_raises_and_canonical_is_idempotent(text: str) -> None:
    parsed = S.parse_spec(text)
    assert all(f.code in S.CODES for f in parsed.findings)
    once = S.canonical(text)
    assert S.canonical(once) == once


@_SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    findings = S.validate_v1(data)
    assert all(f.line is None or f.line >= 1 for f in findings)
    once = S.canonical(data)
    assert S.canonical(once) == once


_MUTATIONS = ["delete", "insert", "dup_line", "swap", "truncate", "junk_tail"]


@_SETTINGS
@given(
    st.sampled_from(["lane_graph", "single_ring"]),
    st.lists(
        st.tuples(st.sampled_from(_MUTATIONS), st.integers(0, 10_000), st.characters()),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_specs(which: str, mutations: list[tuple[str, int, str]]) -> None:
    from pathlib import Path

    text = (Path(__file__).parent / "data" / f"{which}.spec").read_text(encoding="utf-8")
    for op, pos, ch in mutations:
        i = pos % (len(text) + 1)
        lines = text.split("\n")
        j = pos % len(lines)
        if op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "insert":
            text = text[:i] + ch + text[i:]
        elif op == "dup_line":
            lines.insert(j, lines[j])
            text = "\n".join(lines)
        elif op == "swap":
            lines[0], lines[j] = lines[j], lines[0]
            text = "\n".join(lines)
        elif op == "truncate":
            text = text[:i]
        else:
            text = text + "\n" + ch * (pos % 7) + " trailing junk"
    parsed = S.parse_spec(text)
    if parsed.spec is not None:
        # x parses: canonical(parse(canonical(x))) == canonical(x)
        c = S.canonical(text)
        assert S.canonical(S.decode_spec(c)) == c
    once = S.canonical(text)
    assert S.canonical(once) == once
