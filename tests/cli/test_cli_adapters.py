"""The CLI and the adapters: ``validate`` checks every source's and sink's params against its
adapter's schema, ``describe`` takes delivery from the adapters' declarations, and
``capabilities`` lists every adapter with its install command. Run in-process."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor.adapters import _registry
from byteor.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "third_party_adapter"

HEAD = """\
byteor.spec = 1
pipeline.name = p
pipeline.target = lane_graph
lane.a.kind = events
lane.a.capacity = 64
lane.a.slot_bytes = 64
"""

# Lines 7-16: a kafka source with every kind of param mistake, a nats sink in core mode.
BAD = (
    HEAD
    + """\
source.in.adapter = kafka
source.in.out = a
source.in.param.topc = orders
source.in.param.start = middle
source.in.param.linger_ms = soon
sink.out.adapter = nats
sink.out.in = a
sink.out.param.subject = done
sink.out.param.mode = core
"""
)

PLAN = """\
name = "p"

[sources.in]
adapter = "kafka"
params = { topic = "orders", grup = "billing" }

[sinks.out]
adapter = "http"
inputs = "in"

[sinks.out.params]
url = "http://127.0.0.1:9/"
concurrency = "many"
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code, out = run(capsys, *argv, "--json")
    return code, json.loads(out)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_validate_reports_adapter_findings_like_spec_findings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "bad.spec", BAD)
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert out.splitlines() == [
        f"{path}:7: error AD502 [source.in.param.topic]: kafka needs config 'topic': the "
        "topic (a source may read several, comma-separated)",
        f"{path}:9: error AD501 [source.in.param.topc]: kafka has no config key 'topc' "
        "(did you mean 'topic'?)",
        f"{path}:10: error AD504 [source.in.param.start]: kafka config 'start' must be one of "
        "earliest, latest, got 'middle'",
        f"{path}:11: error AD503 [source.in.param.linger_ms]: kafka config 'linger_ms' must be "
        "int, got 'soon'",
        f"{path}: invalid spec: 4 error(s), 0 warning(s)",
    ]
    code, doc = run_json(capsys, "validate", path)
    assert code == 1 and doc["valid"] is False and doc["errors"] == 4 and doc["warnings"] == 0
    assert doc["findings"][1] == {  # type: ignore[index]
        "code": "AD501",
        "severity": "error",
        "key": "source.in.param.topc",
        "line": 9,
        "message": "kafka has no config key 'topc' (did you mean 'topic'?)",
        "suggestion": "topic",
    }
    assert doc["hash"] is not None  # the spec itself is well formed


def test_validate_reports_spec_and_adapter_findings_together(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "both.spec", BAD.replace("capacity = 64", "capacity = 60"))
    code, doc = run_json(capsys, "validate", path)
    codes = [(f["code"], f["line"]) for f in doc["findings"]]  # type: ignore[attr-defined]
    assert code == 1 and codes[0] == ("SP210", 5) and ("AD501", 9) in codes
    assert doc["hash"] is None


def test_validate_a_plan_names_spec_keys_and_plan_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "p.toml", PLAN)
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert f"{path}:5: error AD501 [source.in.param.grup]:" in out
    assert "(did you mean 'group'?)" in out
    assert f"{path}:13: error AD503 [sink.out.param.concurrency]:" in out
    assert "invalid plan: 2 error(s)" in out


def test_validate_clean_file_is_ok(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fixed = (
        BAD.replace("param.topc", "param.topic")
        .replace("middle", "latest")
        .replace("= soon", "= 5")
    )
    code, doc = run_json(capsys, "validate", write(tmp_path, "ok.spec", fixed), "--strict")
    assert code == 0 and doc["findings"] == [] and doc["valid"] is True


@pytest.fixture
def no_aiokafka(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process without aiokafka: importing it fails as if it were not installed."""
    monkeypatch.setitem(sys.modules, "aiokafka", None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "byteor.adapters.kafka", raising=False)
    _registry._forget()
    yield
    _registry._forget()


def test_missing_client_library_is_a_warning_unless_strict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, no_aiokafka: None
) -> None:
    path = write(tmp_path, "bad.spec", BAD)
    code, out = run(capsys, "validate", path)
    assert code == 0  # the kafka params cannot be checked here: not an error
    assert out.splitlines()[0] == (
        f"{path}:7: warning AD505 [source.in.adapter]: the kafka adapter needs the 'aiokafka' "
        "library: pip install 'byteor[kafka]'; source 'in''s params are not checked here"
    )
    assert "1 warning(s)" in out
    code, doc = run_json(capsys, "validate", path, "--strict")
    assert code == 1 and doc["valid"] is True and doc["warnings"] == 1
    # describe falls back to the spec's table for kafka
    code, doc = run_json(capsys, "describe", path)
    [p] = doc["paths"]  # type: ignore[misc]
    assert code == 0 and "offsets committed" in p["reasons"][0]


def test_unknown_adapter_did_you_mean(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "u.spec", BAD.replace("adapter = kafka", "adapter = kafak"))
    code, doc = run_json(capsys, "validate", path)
    [f] = [f for f in doc["findings"] if f["code"] == "SP314"]  # type: ignore[attr-defined]
    assert f["key"] == "source.in.adapter" and f["line"] == 7 and f["suggestion"] == "kafka"
    assert code == 0  # a warning, as before; its params are not checked
    assert [f["code"] for f in doc["findings"]] == ["SP314"]  # type: ignore[attr-defined]


def test_describe_uses_the_declaration_for_the_params(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok = BAD.replace("param.topc", "param.topic").replace("middle", "latest")
    ok = ok.replace("= soon", "= 5")
    code, doc = run_json(capsys, "describe", write(tmp_path, "core.spec", ok))
    [p] = doc["paths"]  # type: ignore[misc]
    assert code == 0 and p["guarantee"] == "best-effort"  # core NATS: at most once
    assert "sink out (nats): best-effort, flushed to the server" in p["reasons"][1]
    jetstream = ok.replace("mode = core", "mode = jetstream")
    code, doc = run_json(capsys, "describe", write(tmp_path, "js.spec", jetstream))
    assert doc["paths"][0]["guarantee"] == "at-least-once"  # type: ignore[index]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example third-party package, installed by a dist-info folder on ``sys.path``."""
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


def test_third_party_adapters_in_validate_and_capabilities(
    capsys: pytest.CaptureFixture[str], site: Path
) -> None:
    spec = HEAD + (
        "source.in.adapter = shout\nsource.in.out = a\nsource.in.param.topik = t\n"
        "sink.out.adapter = shoutt\nsink.out.in = a\n"
    )
    code, doc = run_json(capsys, "validate", write(site, "s.spec", spec))
    found = [(f["code"], f["key"], f["suggestion"]) for f in doc["findings"]]  # type: ignore[attr-defined]
    assert code == 1
    assert found == [
        ("SP314", "sink.out.adapter", "shout"),  # the registry's name, not the table's
        ("AD502", "source.in.param.topic", None),
        ("AD501", "source.in.param.topik", "topic"),
    ]
    code, doc = run_json(capsys, "capabilities")
    rows = {a["name"]: a for a in doc["adapters"]}  # type: ignore[attr-defined]
    assert rows["shout"]["third_party"] is True and rows["shout"]["installed"] is True
    assert rows["shout"]["install"] == "pip install 'byteor-shout'"
    assert rows["shout"]["roles"] == ["source", "sink"]
    assert rows["needs-lib"]["installed"] is False
    assert "pip install 'byteor-shout'" in rows["needs-lib"]["problem"]
    assert rows["kafka"]["third_party"] is False and rows["kafka"]["installed"] is True
    code, out = run(capsys, "capabilities")
    assert "installed (aiokafka): pip install 'byteor[kafka]'" in out
    assert "  shout      source/sink  installed (byteor-shout): pip install 'byteor-shout'" in out
    assert "  needs-lib  -            not loadable: " in out


def test_capabilities_without_a_client_library(
    capsys: pytest.CaptureFixture[str], no_aiokafka: None
) -> None:
    code, out = run(capsys, "capabilities")
    assert code == 0
    assert "  kafka      source/sink  not installed: pip install 'byteor[kafka]'" in out
