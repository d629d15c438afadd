"""A third-party adapter registers through the entry-point group, and nothing is installed:
the example package and a ``dist-info`` folder naming its entry point go on ``sys.path``,
which is all ``importlib.metadata`` looks at."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from byteor.adapters import (
    AdapterUnavailable,
    OutRecord,
    _registry,
    available_adapters,
    load_adapter,
)
from byteor.testing import ConformanceTests, Harness, MemoryBroker, MemoryHarness

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "third_party_adapter"

ENTRY_POINTS = """\
[byteor.adapters]
shout = byteor_shout:ShoutAdapter
needs-lib = byteor_needs_lib:Adapter
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    shutil.copytree(EXAMPLE / "byteor_shout", tmp_path / "byteor_shout")
    (tmp_path / "byteor_needs_lib.py").write_text("import byteor_some_missing_client\n")
    info = tmp_path / "byteor_shout-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: byteor-shout\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    _registry._forget()
    yield tmp_path
    _registry._forget()
    for mod in ("byteor_shout", "byteor_needs_lib"):
        sys.modules.pop(mod, None)


def test_example_declares_the_entry_point() -> None:
    text = (EXAMPLE / "pyproject.toml").read_text()
    assert '[project.entry-points."byteor.adapters"]' in text
    assert 'shout = "byteor_shout:ShoutAdapter"' in text


def test_third_party_adapter_is_listed_without_being_imported(site: Path) -> None:
    entries = available_adapters()
    assert entries["shout"].target == "byteor_shout:ShoutAdapter"
    assert entries["shout"].distribution == "byteor-shout"
    assert "byteor_shout" not in sys.modules  # lazy: listing imports nothing
    assert "memory" in entries


async def test_third_party_adapter_loads_and_works(site: Path) -> None:
    adapter = load_adapter("shout")
    assert type(adapter).__module__ == "byteor_shout"
    assert adapter.declaration().name == "shout"
    sink = adapter.sink({"topic": "t", "broker": "shout-test"})
    src = adapter.source({"topic": "t", "broker": "shout-test"})
    await sink.start()
    await src.start()
    try:
        await sink.write_batch([OutRecord(b"hello")])
        got = await src.next_batch(5, timeout_s=1.0)
        assert [r.payload for r in got] == [b"HELLO"]
    finally:
        await src.stop()
        await sink.stop()
        MemoryBroker.drop("shout-test")


def test_third_party_missing_library_names_the_distribution(site: Path) -> None:
    with pytest.raises(AdapterUnavailable) as info:
        load_adapter("needs-lib")
    assert str(info.value) == (
        "the needs-lib adapter could not import 'byteor_some_missing_client': "
        "pip install 'byteor-shout'"
    )


class _ShoutHarness(MemoryHarness):
    async def written(self) -> list[OutRecord]:
        return [OutRecord(r.payload.lower(), r.key, r.headers) for r in self.topic.records]

    async def new_sink(self):  # type: ignore[no-untyped-def]
        from byteor_shout import ShoutSink

        sink = ShoutSink(self.topic)
        await sink.start()
        return sink


class TestShoutConformance(ConformanceTests):
    """A third party runs the same suite."""

    @pytest.fixture
    async def harness(self, site: Path) -> AsyncIterator[Harness]:
        h = _ShoutHarness()
        yield h
        await h.close()
