"""Adapters as a spec names them: the spec's static table equals the adapters' declarations,
a spec node's params are what ``Adapter.source``/``sink`` take, and the checks of
``byteor.adapters._speccheck`` (what ``byteor validate`` reports).

The NATS and PostgreSQL tests run against the servers of ``scripts/services.sh``.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from byteor.adapters import (
    BUILTIN,
    EXECUTOR_ADAPTERS,
    AdapterError,
    AdapterUse,
    ConfigValue,
    OutRecord,
    Record,
    _registry,
    check_adapter_uses,
    declarations_for,
    load_adapter,
    uses_in_document,
    uses_of_spec,
    validate_adapters,
)
from byteor.spec import ADAPTERS, Finding, decode_spec, parse_kv, parse_spec
from byteor.testing import MemoryBroker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "third_party_adapter"
NATS_URL = "nats://127.0.0.1:4222"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _client_installed(name: str) -> bool:
    module = BUILTIN[name].client_module
    return module is None or importlib.util.find_spec(module) is not None


def _required(name: str) -> dict[str, str]:
    """The smallest valid params of an adapter: a word for every required key."""
    return {f.name: "x" for f in load_adapter(name).config.fields if f.required}


def _text(value: ConfigValue) -> str:
    """How a spec writes a typed value (what a plan's TOML value lowers to)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _spec(*lines: str) -> str:
    head = [
        "byteor.spec = 1",
        "pipeline.name = p",
        "pipeline.target = lane_graph",
        "lane.a.kind = events",
        "lane.a.capacity = 64",
        "lane.a.slot_bytes = 64",
    ]
    return "\n".join([*head, *lines]) + "\n"


# -- the static table and the declarations ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_table_row_is_the_adapters_declaration(name: str) -> None:
    if not _client_installed(name):
        pytest.skip(f"{name}'s client library is not installed: {BUILTIN[name].install_hint()}")
    assert load_adapter(name).declaration() == ADAPTERS[name]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_declaration_is_the_default_configuration(name: str) -> None:
    """``declaration()`` (and so the table) promises what a node with default params gets."""
    if not _client_installed(name):
        pytest.skip(f"{name}'s client library is not installed")
    adapter = load_adapter(name)
    assert adapter.declaration_for(_required(name)) == adapter.declaration()


def test_declarations_follow_the_params() -> None:
    nats_adapter, http = load_adapter("nats"), load_adapter("http")
    core = nats_adapter.declaration_for({"subject": "s", "mode": "core"})
    assert core.source is not None and core.source.guarantee == "best-effort"
    assert core.sink is not None and core.sink.guarantee == "best-effort"
    admitted = http.declaration_for({})
    assert admitted.source is not None and admitted.source.guarantee == "best-effort"
    confirmed = http.declaration_for({"respond": "confirmed"})
    assert confirmed.source is not None and confirmed.source.guarantee == "at-least-once"
    unordered = http.declaration_for({"url": "http://h/", "mode": "record", "concurrency": "4"})
    assert unordered.sink is not None and unordered.sink.ordering == "none"
    assert http.declaration_for({"respond": "whenever"}) == http.declaration()  # invalid params


# -- params from a spec are what the adapters take --------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_config_key_can_be_written_in_a_spec(name: str) -> None:
    """Each key is a legal ``param.<k>`` and its default, written as a spec value, reads back
    as the same typed value: what the spec hands over is what the schema expects."""
    if not _client_installed(name):
        pytest.skip(f"{name}'s client library is not installed")
    adapter = load_adapter(name)
    given = {f.name: ("x" if f.required else _text(f.default)) for f in adapter.config.fields}
    written = {k: v for k, v in given.items() if v != ""}  # a spec value is never empty
    lines = [f"source.in.adapter = {name}", "source.in.out = a"]
    lines += [f"source.in.param.{k} = {v}" for k, v in written.items()]
    lines += ["sink.out.adapter = file", "sink.out.in = a", "sink.out.param.path = /dev/null"]
    spec = decode_spec(_spec(*lines))
    assert dict(spec.sources["in"].params) == written
    values, findings = adapter.config.validate(spec.sources["in"].params)
    assert findings == []
    defaults = {f.name: f.default for f in adapter.config.fields if not f.required}
    assert {k: values[k] for k in defaults} == defaults


async def test_a_spec_nodes_params_configure_the_adapter() -> None:
    """``Adapter.source(spec.sources[n].params)`` / ``sink(...)`` as an executor calls them."""
    spec = decode_spec(
        _spec(
            "source.in.adapter = memory",
            "source.in.out = a",
            "source.in.param.topic = orders",
            "source.in.param.broker = spec-params",
            "source.in.param.group = billing",
            "sink.out.adapter = memory",
            "sink.out.in = a",
            "sink.out.param.topic = orders",
            "sink.out.param.broker = spec-params",
            "sink.out.param.capacity = 2",
        )
    )
    adapter = load_adapter("memory")
    sink = adapter.sink(spec.sinks["out"].params)
    src = adapter.source(spec.sources["in"].params)
    await sink.start()
    await src.start()
    try:
        await sink.write_batch([OutRecord(b"a"), OutRecord(b"b")])
        with pytest.raises(AdapterError, match="is full"):  # capacity = 2 reached the topic
            await sink.write_batch([OutRecord(b"c")])
        got = await src.next_batch(10, timeout_s=1.0)
        assert [r.payload for r in got] == [b"a", b"b"]
        topic = MemoryBroker.named("spec-params").topic("orders")
        assert "billing" in topic.groups
    finally:
        await src.stop()
        await sink.stop()
        MemoryBroker.drop("spec-params")


async def _fetch(src: object, n: int, deadline_s: float = 10.0) -> list[Record]:
    got: list[Record] = []
    end = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < end:
        got += await src.next_batch(n - len(got), timeout_s=0.5)  # type: ignore[attr-defined]
    return got


async def test_nats_subject_greater_than_reads_the_whole_stream() -> None:
    """A spec cannot write an empty value: ``subject = >`` is the JetStream source's "no
    filter" (every subject of the stream), and the consumer is created without one."""
    tag = uuid.uuid4().hex[:8]
    stream = f"WHOLE_{tag}"
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"w{tag}.a.*", f"w{tag}.b"])
    try:
        await js.publish(f"w{tag}.a.x", b"1")
        await js.publish(f"w{tag}.b", b"2")
        spec = decode_spec(
            _spec(
                "source.in.adapter = nats",
                "source.in.out = a",
                f"source.in.param.servers = {NATS_URL}",
                f"source.in.param.stream = {stream}",
                "source.in.param.subject = >",
                "source.in.param.durable = whole",
                "sink.out.adapter = stdout",
                "sink.out.in = a",
            )
        )
        src = load_adapter("nats").source(spec.sources["in"].params)
        await src.start()
        try:
            got = await _fetch(src, 2)
            assert [r.payload for r in got] == [b"1", b"2"]
            for r in got:
                await r.ack.ack()
        finally:
            await src.stop()
        info = await js.consumer_info(stream, "whole")
        assert not info.config.filter_subject
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_postgres_key_and_headers_columns_none_are_not_stored() -> None:
    """``key_column = none`` / ``headers_column = none``: a spec's way to store neither."""
    table = f"spec_none_{uuid.uuid4().hex[:8]}"
    sink = load_adapter("postgres").sink(
        {"dsn": PG_DSN, "table": table, "key_column": "none", "headers_column": "NONE"}
    )
    conn = await asyncpg.connect(PG_DSN)
    try:
        await sink.start()
        await sink.write_batch([OutRecord(b"p", b"k", (("h", b"v"),))])
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
        )
        assert {c["column_name"] for c in columns} == {"id", "txid", "payload", "dedupe_key"}
        assert await conn.fetchval(f'SELECT payload FROM "{table}"') == b"p"
    finally:
        await sink.stop()
        await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        await conn.close()


# -- the checks ------------------------------------------------------------------------------


def test_uses_read_from_a_spec_text_even_with_errors_elsewhere() -> None:
    text = _spec(
        "lane.a.capacity = 100",  # a duplicate key: the spec has errors
        "source.in.adapter = kafka",
        "source.in.out = a",
        "source.in.param.topc = orders",
        "sink.out.adapter = nats",
        "sink.out.in = a",
    )
    parsed = parse_spec(text)
    assert parsed.spec is None
    uses = {u.node: u for u in uses_in_document(parse_kv(text))}
    assert uses["in"] == AdapterUse("source", "in", "kafka", {"topc": "orders"}, 8, {"topc": 10})
    assert uses["out"].role == "sink" and uses["out"].line == 11 and uses["out"].params == {}


def test_check_reports_spec_keys_and_lines() -> None:
    uses = [
        AdapterUse(
            "source",
            "in",
            "kafka",
            {"topc": "orders", "start": "middle", "linger_ms": "soon"},
            3,
            {"topc": 4, "start": 5, "linger_ms": 6},
        )
    ]
    found = [(f.code, f.severity, f.key, f.line, f.suggestion) for f in check_adapter_uses(uses)]
    assert found == [
        ("AD502", "error", "source.in.param.topic", 3, None),
        ("AD501", "error", "source.in.param.topc", 4, "topic"),
        ("AD504", "error", "source.in.param.start", 5, None),
        ("AD503", "error", "source.in.param.linger_ms", 6, None),
    ]


def test_executor_adapters_are_left_to_the_executors() -> None:
    assert {"file", "stdin", "stdout", "generator", "memory"} == EXECUTOR_ADAPTERS
    uses = [AdapterUse("sink", "out", "memory"), AdapterUse("sink", "f", "file", {"x": "1"})]
    assert check_adapter_uses(uses) == []
    assert declarations_for(uses) == {}


def test_unknown_adapter_keeps_the_spec_finding_or_is_checked() -> None:
    spec_text = _spec(
        "source.in.adapter = generator",
        "source.in.out = a",
        "sink.out.adapter = kafak",
        "sink.out.in = a",
    )
    spec = decode_spec(spec_text)
    [sp314] = [f for f in parse_spec(spec_text).findings if f.code == "SP314"]
    merged = validate_adapters(uses_of_spec(spec, {"sink.out.adapter": 9}), [sp314])
    [f] = merged
    assert isinstance(f, Finding) and f.code == "SP314" and f.line == 9
    assert f.suggestion == "kafka" and "did you mean 'kafka'?" in f.message


# -- third-party adapters: the registry knows what the spec's table cannot ------------------


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example third-party package and a dist-info folder on ``sys.path``."""
    import shutil
    import sys

    shutil.copytree(EXAMPLE / "byteor_shout", tmp_path / "byteor_shout")
    (tmp_path / "byteor_needs_lib.py").write_text("import byteor_some_missing_client\n")
    info = tmp_path / "byteor_shout-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: byteor-shout\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[byteor.adapters]\nshout = byteor_shout:ShoutAdapter\n"
        "needs-lib = byteor_needs_lib:Adapter\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _registry._forget()
    yield tmp_path
    _registry._forget()
    for mod in ("byteor_shout", "byteor_needs_lib"):
        sys.modules.pop(mod, None)


def test_third_party_adapter_is_checked_and_its_sp314_dropped(site: Path) -> None:
    sp314 = Finding("SP314", "warning", "source.in.adapter", 2, "not known", None)
    uses = [AdapterUse("source", "in", "shout", {"topik": "t"}, 2, {"topik": 3})]
    merged = validate_adapters(uses, [sp314])
    assert [(f.code, f.key, f.line, f.suggestion) for f in merged] == [
        ("AD502", "source.in.param.topic", 2, None),
        ("AD501", "source.in.param.topik", 3, "topic"),
    ]
    typo = [AdapterUse("source", "in", "shoutt", {}, 2)]
    [f] = validate_adapters(typo, [sp314])
    assert f.code == "SP314" and f.suggestion == "shout"  # found in the registry only


def test_missing_client_library_is_a_warning_with_the_install_hint(site: Path) -> None:
    [f] = check_adapter_uses([AdapterUse("sink", "out", "needs-lib", {"a": "b"}, 7)])
    assert (f.code, f.severity, f.key, f.line) == ("AD505", "warning", "sink.out.adapter", 7)
    assert "pip install 'byteor-shout'" in f.message and "not checked" in f.message


def test_registry_reports_a_module_that_fails_on_import(site: Path) -> None:
    (site / "byteor_broken.py").write_text("raise RuntimeError('boom')\n")
    (site / "byteor_noattr.py").write_text("X = 1\n")
    entry_points = site / "byteor_shout-0.1.0.dist-info" / "entry_points.txt"
    entry_points.write_text(
        entry_points.read_text()
        + "broken = byteor_broken:Adapter\nnoattr = byteor_noattr:Adapter\n"
    )
    _registry._forget()
    found = check_adapter_uses(
        [AdapterUse("source", "a", "broken", {}, 1), AdapterUse("source", "b", "noattr", {}, 2)]
    )
    assert [(f.code, f.severity) for f in found] == [("AD505", "warning")] * 2
    assert "RuntimeError: boom" in found[0].message
    assert "has no 'Adapter'" in found[1].message


def test_the_examples_of_docs_adapters_validate() -> None:
    """Every spec fragment in ``docs/adapters.md`` uses keys and values its adapter takes."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "adapters.md").read_text()
    blocks = [b for b in docs.split("```")[1::2] if "adapter = " in b and ".param." in b]
    assert len(blocks) >= 9  # one per adapter, and "In a spec"
    for block in blocks:
        uses = uses_in_document(parse_kv(block))
        assert uses and check_adapter_uses(uses) == [], block
