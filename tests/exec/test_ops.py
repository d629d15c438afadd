"""Built-in ops and the resolver (built-in, module:function, byteor.ops entry points)."""

from __future__ import annotations

import pathlib
import sys
import zlib

import pytest

from byteor.exec import (
    BUILTIN_SUMMARIES,
    OpNotFound,
    StageConfigError,
    StageContext,
    frame,
    resolve_op,
    unframe,
)
from byteor.exec._ops import BUILTIN_FACTORIES
from byteor.kernel import Emit, RecordFailure, Stage, StageError
from byteor.spec import BUILTIN_OPS


def make(op: str, outputs: tuple[str, ...] = ("out",), **params: str) -> Stage:
    return resolve_op(op, StageContext("s", params, outputs))


def ports(op: str, records: list[bytes], outputs: tuple[str, ...] = ("out",), **params: str):
    result = make(op, outputs, **params).step_batch(records)
    return result.ports, result.failures


def test_builtins_cover_the_spec_vocabulary() -> None:
    assert set(BUILTIN_OPS) == set(BUILTIN_SUMMARIES) == set(BUILTIN_FACTORIES)
    assert list(BUILTIN_SUMMARIES) == [
        "identity",
        "drop",
        "count",
        "map",
        "filter",
        "key_by",
        "route",
        "batch",
        "unbatch",
        "json_decode",
        "json_encode",
    ]


def test_identity_drop_count() -> None:
    assert ports("identity", [b"a", b"b"], ("x", "y")) == ([[b"a", b"b"], [b"a", b"b"]], [])
    assert ports("drop", [b"a", b"b"]) == ([[]], [])
    count = make("count")
    assert count.step_batch([b"ab", b"c"]).ports == [[b"ab", b"c"]]
    assert count.step(b"dddd") == Emit(((b"dddd",),))
    assert count.counters() == {"records": 3, "bytes": 7}  # type: ignore[attr-defined]


def test_map_and_filter() -> None:
    assert ports("map", [b"a", b"b"], fn="byteor_exec_testops:upper") == ([[b"A", b"B"]], [])
    assert ports("map", [b"a"], fn="byteor_exec_testops:explode") == ([[b"a-0", b"a-1"]], [])
    records = [b"1", b"2", b"3", b"4"]
    assert ports("filter", records, fn="byteor_exec_testops:is_even") == ([[b"2", b"4"]], [])
    assert ports("filter", records, fn="byteor_exec_testops:is_even", invert="true") == (
        [[b"1", b"3"]],
        [],
    )
    assert ports("filter", [b"abc", b"xyz"], contains="b") == ([[b"abc"]], [])
    assert ports("filter", [b"a1", b"bb", b"c22"], regex=r"\d+$") == ([[b"a1", b"c22"]], [])
    got, failures = ports("filter", [b"1", b"z"], fn="byteor_exec_testops:is_even")
    assert got == [[]]
    assert failures == [
        RecordFailure(
            1,
            StageError(
                "op.raised",
                "filter fn byteor_exec_testops:is_even raised ValueError: invalid literal for "
                "int() with base 10: b'z'",
            ),
        )
    ]


@pytest.mark.parametrize(
    ("op", "params", "message"),
    [
        ("map", {}, "op 'map' needs param fn = module:function"),
        ("filter", {}, "exactly one of param fn, contains, regex"),
        ("filter", {"contains": "a", "regex": "b"}, "exactly one of param fn, contains, regex"),
        ("filter", {"regex": "("}, "param regex: missing ), unterminated subpattern"),
        ("identity", {"speed": "1"}, "op 'identity' does not take param speed (it takes: none)"),
        ("batch", {"size": "0"}, "param size must be >= 1"),
        ("batch", {"size": "lots"}, "param size = 'lots' is not an integer"),
        ("key_by", {"field": "a", "fn": "m:f"}, "takes field or fn, not both"),
        ("route", {}, "op 'route' needs param field"),
        ("route", {"field": "t", "route.a": "nowhere"}, "'nowhere' is not one of its outputs"),
    ],
)
def test_bad_params_are_refused_with_the_reason(
    op: str, params: dict[str, str], message: str
) -> None:
    with pytest.raises(StageConfigError, match="stage 's': ") as info:
        make(op, **params)
    assert message in str(info.value)


def test_key_by_uses_the_lane_router_hash() -> None:
    outs = ("a", "b", "c")
    records = [b'{"user": "ann"}', b'{"user": 7}', b'{"user": "bob"}', b'{"user": [1]}']
    got, failures = ports("key_by", records, outs, field="user")
    expected: list[list[bytes]] = [[], [], []]
    keys = [b"ann", (7).to_bytes(8, "little"), b"bob", b"[1]"]
    for record, key in zip(records, keys, strict=True):
        expected[zlib.crc32(key) % 3].append(record)
    assert got == expected and failures == []
    # Without a field the whole record is the key.
    got, _ = ports("key_by", [b"x", b"y"], ("a", "b"))
    assert got[zlib.crc32(b"x") % 2][0] == b"x"
    got, failures = ports("key_by", [b"nope", b"{}"], ("a", "b"), field="user")
    assert [f.error.code for f in failures] == ["json.invalid", "key_by.no_field"]
    got, _ = ports("key_by", [b"apple", b"berry"], ("a", "b"), fn="byteor_exec_testops:first_char")
    expected = [[], []]
    expected[zlib.crc32(b"a") % 2].append(b"apple")
    expected[zlib.crc32(b"b") % 2].append(b"berry")
    assert got == expected


def test_route_by_field_value() -> None:
    outs = ("orders", "refunds", "other")
    params = {"field": "t", "route.order": "orders", "route.refund": "refunds"}
    records = [b'{"t": "order"}', b'{"t": "refund"}', b'{"t": "x"}', b"[]"]
    got, failures = ports("route", records, outs, **params)
    assert got == [[b'{"t": "order"}'], [b'{"t": "refund"}'], []]
    assert [(f.index, f.error.code) for f in failures] == [
        (2, "route.unmatched"),
        (3, "route.no_field"),
    ]
    got, failures = ports("route", records[:3], outs, default="other", **params)
    assert got == [[records[0]], [records[1]], [records[2]]] and failures == []
    got, failures = ports("route", records[:3], outs, default="drop", **params)
    assert got == [[records[0]], [records[1]], []] and failures == []


def test_batch_and_unbatch_round_trip_and_flush_at_the_end() -> None:
    batcher = make("batch", size="2")
    result = batcher.step_batch([b"a", b"bc", b"d"])
    assert result.ports == [[b"\x01\x00\x00\x00a\x02\x00\x00\x00bc"]]
    assert batcher.finish() == Emit(((frame([b"d"]),),))
    assert batcher.finish() == Emit(((),))
    assert ports("unbatch", [frame([b"a", b"", b"bc"]), frame([])]) == ([[b"a", b"", b"bc"]], [])
    got, failures = ports("unbatch", [b"\x05\x00\x00\x00ab", b"\x01"])
    assert got == [[]] and [f.error.code for f in failures] == ["unbatch.framing"] * 2
    assert unframe(frame([b"x" * 300, b"y"])) == [b"x" * 300, b"y"]


def test_json_decode_writes_canonical_json_and_refuses_the_rest() -> None:
    got, failures = ports(
        "json_decode", [b'{ "b": 1, "a": [1, 2.5, "\xc3\xa9"] }', b"nope", b"NaN", b"[1, 2]"]
    )
    assert got == [[b'{"a":[1,2.5,"\xc3\xa9"],"b":1}', b"[1,2]"]]
    assert [(f.index, f.error.code) for f in failures] == [(1, "json.invalid"), (2, "json.invalid")]


def test_json_encode() -> None:
    assert ports("json_encode", [b'say "hi"', b"\xc3\xa9"]) == (
        [[b'"say \\"hi\\""', b'"\xc3\xa9"']],
        [],
    )
    assert ports("json_encode", [b"hi"], field="msg") == ([[b'{"msg":"hi"}']], [])
    got, failures = ports("json_encode", [b"\xff"])
    assert got == [[]] and failures[0].error.code == "json.not_utf8"


# -- module:function ---------------------------------------------------------------------------


def test_module_function_ops() -> None:
    assert make("byteor_exec_testops:upper").step(b"ab") == Emit(((b"AB",),))
    assert make("byteor_exec_testops:Nested.twice").step(b"ab") == Emit(((b"abab",),))
    assert make("byteor_exec_testops:error_on_x").step(b"x") == StageError("test.x", "x found")
    assert make("byteor_exec_testops:fail_on_x").step(b"x") == StageError(
        "op.raised", "byteor_exec_testops:fail_on_x raised ValueError: no x please: x"
    )
    assert make("byteor_exec_testops:bad_return").step(b"x") == StageError(
        "op.bad_return",
        "byteor_exec_testops:bad_return returned int; return bytes, str, None, a list of them, "
        "an Emit or a StageError",
    )


def test_class_ops_get_the_context_and_finish() -> None:
    stage = make("byteor_exec_testops:Suffix", ("a", "b"), suffix="?")
    assert stage.step_batch([b"x", b"y"]).ports == [[b"x?", b"y?"], [b"x?", b"y?"]]
    assert stage.finish() == Emit(((b"seen=2",), (b"seen=2",)))
    with pytest.raises(StageConfigError, match=r"NeedsParam\(ctx\) raised KeyError"):
        make("byteor_exec_testops:NeedsParam")


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("byteor_exec_testops:nope", "module 'byteor_exec_testops' has no 'nope'"),
        ("nope_op", "op 'nope_op' is not a built-in op"),
    ],
)
def test_unresolvable_ops_say_why(op: str, message: str) -> None:
    with pytest.raises(OpNotFound) as info:
        make(op)
    assert message in str(info.value)


# -- entry points ---------------------------------------------------------------------------------


def _install_dist(root: pathlib.Path, name: str, entry_points: str) -> None:
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_entry_point_ops_load_lazily(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "byteor_ep_plugin.py").write_text(
        "LOADED = True\n\ndef shout(record):\n    return record.upper() + b'!'\n"
    )
    _install_dist(
        tmp_path,
        "byteor_ep_plugin",
        "[byteor.ops]\nshout = byteor_ep_plugin:shout\nbroken = byteor_ep_plugin:missing\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "byteor_ep_plugin", raising=False)
    # A built-in never looks at entry points, so the plugin is not imported.
    make("identity")
    assert "byteor_ep_plugin" not in sys.modules
    assert make("shout").step(b"hi") == Emit(((b"HI!",),))
    assert "byteor_ep_plugin" in sys.modules
    with pytest.raises(OpNotFound, match="entry point broken = byteor_ep_plugin:missing failed"):
        make("broken")


def test_clashing_entry_points_are_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_dist(tmp_path / "a", "plug_a", "[byteor.ops]\ndup = mod_a:f\n")
    _install_dist(tmp_path / "b", "plug_b", "[byteor.ops]\ndup = mod_b:f\n")
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    with pytest.raises(OpNotFound, match=r"registered by several packages \(mod_a:f, mod_b:f\)"):
        make("dup")
