"""The authoring CLI, run in-process: output, --json documents and exit codes."""

from __future__ import annotations

import json
import pathlib

import pytest

from byteor.cli import main

TESTS = pathlib.Path(__file__).resolve().parents[1]
GRAPH = str(TESTS / "spec" / "data" / "lane_graph.spec")
RING = str(TESTS / "spec" / "data" / "single_ring.spec")
ORDERS = str(TESTS / "plan" / "data" / "orders.toml")
CLICKS = str(TESTS / "plan" / "data" / "clicks.toml")
GRAPH_HASH = "sha256:f4aa0dab727f0c3fcbedd136588af9f3c00b1f89d76718131c5b4010020c374a"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def write(tmp_path: pathlib.Path, name: str, data: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return str(path)


# -- validate --------------------------------------------------------------------------------


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", GRAPH)
    assert code == 0 and "ok (spec, lane_graph" in out and GRAPH_HASH in out
    code, doc = run_json(capsys, "validate", ORDERS)
    assert code == 0 and doc["valid"] is True and doc["kind"] == "plan"
    assert doc["target"] == "lane_graph"


def test_validate_findings_exit_1_with_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    bad = write(tmp_path, "bad.spec", pathlib.Path(GRAPH).read_text().replace("4096", "4000"))
    code, out, _ = run(capsys, "validate", bad)
    assert code == 1 and ":7: error SP210 [lane.raw.capacity]" in out and "use 2048 or 4096" in out
    code, doc = run_json(capsys, "validate", bad)
    assert code == 1 and doc["valid"] is False and doc["errors"] == 1
    [finding] = doc["findings"]  # type: ignore[misc]
    assert finding == {
        "code": "SP210",
        "severity": "error",
        "key": "lane.raw.capacity",
        "line": 7,
        "message": finding["message"],
        "suggestion": None,
    }


def test_validate_strict_fails_on_warnings(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    warn = write(tmp_path, "w.spec", pathlib.Path(GRAPH).read_text().replace("= nats", "= natz"))
    assert run(capsys, "validate", warn)[0] == 0
    assert run(capsys, "validate", "--strict", warn)[0] == 1


@pytest.mark.parametrize(
    ("data", "code_"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "KV102"),
        (b"pipeline.name = \xc3\x28\n", "KV101"),
        (b"a" * (1 << 20) + b" = b\n", "KV103"),
        ("no equals sign here\n", "KV104"),
        ("lane.ra w.kind = events\n", "KV105"),
        ("pipeline.name = a\npipeline.name = b\n", "KV106"),
        ("byteor.spec = one\n", "SP203"),
    ],
)
def test_bad_input_gives_findings_not_tracebacks(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, data: str | bytes, code_: str
) -> None:
    path = write(tmp_path, "in.spec", data)
    code, doc = run_json(capsys, "validate", path)
    assert code == 1
    findings = doc["findings"]
    assert isinstance(findings, list)
    hit = next(f for f in findings if f["code"] == code_)
    assert isinstance(hit["line"], int) and hit["line"] >= 1


def test_unreadable_input_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    code, _, err = run(capsys, "validate", str(tmp_path / "missing.spec"))
    assert code == 2 and "no such file" in err
    code, out, err = run(capsys, "hash", str(tmp_path), "--json")
    assert code == 2 and json.loads(out)["exit_code"] == 2 and "directory" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["diff", GRAPH])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["lower", ORDERS, "--target", "ring"])
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["validate", "--json", "--bogus", "x"], "unrecognized arguments: --bogus"),
        (["validate", "--json"], "validate: the following arguments are required: file"),
        (["--json", "nope"], "invalid choice: 'nope'"),
    ],
)
def test_usage_error_under_json_prints_one_json_document(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["exit_code"] == 2
    assert says in doc["error"]
    assert says in err


def test_invalid_plan(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    plan = write(tmp_path, "p.toml", 'name = "p"\n[sources.a]\nadapter = "kafka"\n[sinks.b]\n'
                 'adapter = "stdout"\ninputs = ["aa"]\n')  # fmt: skip
    code, out, _ = run(capsys, "validate", plan)
    assert code == 1 and "p.toml:6: error PL301" in out and "did you mean 'a'" in out
    code, out, _ = run(capsys, "validate", write(tmp_path, "q.toml", "name = [\n"))
    assert code == 1 and "PL102" in out


# -- fmt and hash ----------------------------------------------------------------------------


def test_fmt_prints_check_and_writes(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    original = pathlib.Path(GRAPH).read_text()
    path = write(tmp_path, "g.spec", original.replace("\n", "\r\n"))
    code, out, _ = run(capsys, "fmt", path)
    assert code == 0 and out.startswith("byteor.spec = 1\nlane.enriched.capacity = 1024\n")
    assert "#" not in out and "\r" not in out
    assert run(capsys, "fmt", "--check", path)[0] == 1
    assert run(capsys, "fmt", "-w", path)[0] == 0
    assert pathlib.Path(path).read_text() == out
    assert run(capsys, "fmt", "--check", path)[0] == 0
    code, doc = run_json(capsys, "fmt", path)
    assert code == 0 and doc["changed"] is False and doc["hash"] == GRAPH_HASH


def test_fmt_refuses_syntax_errors_and_plans(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path = write(tmp_path, "x.spec", "pipeline.name = a\njunk line\n")
    code, out, _ = run(capsys, "fmt", "-w", path)
    assert code == 1 and "KV104" in out
    assert pathlib.Path(path).read_text() == "pipeline.name = a\njunk line\n"
    code, _, err = run(capsys, "fmt", ORDERS)
    assert code == 2 and "byteor lower" in err


def test_hash(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    assert run(capsys, "hash", GRAPH)[1] == GRAPH_HASH + "\n"
    code, doc = run_json(capsys, "hash", CLICKS)
    assert code == 0 and doc["target"] == "single_ring" and str(doc["hash"]).startswith("sha256:")
    code, doc = run_json(capsys, "hash", CLICKS, "--target", "lane_graph")
    assert doc["target"] == "lane_graph"
    code, out, _ = run(capsys, "hash", write(tmp_path, "b.spec", "pipeline.name = x\n"))
    assert code == 1 and "SP202" in out


# -- lower -----------------------------------------------------------------------------------


def test_lower(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    code, out, _ = run(capsys, "lower", CLICKS)
    assert code == 0 and "pipeline.target = single_ring\n" in out
    out_path = str(tmp_path / "o.spec")
    code, doc = run_json(capsys, "lower", ORDERS, "--capacity", "4096", "-o", out_path)
    assert code == 0 and doc["target"] == "lane_graph"
    written = pathlib.Path(out_path).read_text()
    assert "lane.kafka_in.capacity = 4096\n" in written
    assert run(capsys, "hash", out_path)[1].strip() == doc["hash"]
    code, out, _ = run(capsys, "lower", ORDERS, "--target", "single_ring", "--placement",
                       "per_stage", "--wait", "spin")  # fmt: skip
    assert code == 0 and "lane.ring.wait = spin" in out


def test_lower_failures(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    code, _, err = run(capsys, "lower", GRAPH)
    assert code == 2 and "looks like a spec" in err
    code, out, _ = run(capsys, "lower", ORDERS, "--capacity", "1000")
    assert code == 1 and "LW101" in out
    two = write(tmp_path, "two.toml", 'name = "t"\n[sources.a]\nadapter = "kafka"\n'
                '[sources.b]\nadapter = "nats"\n[sinks.o]\nadapter = "stdout"\n'
                'inputs = ["a", "b"]\n')  # fmt: skip
    code, out, _ = run(capsys, "lower", two, "--target", "single_ring")
    assert code == 1 and "LW104" in out and "2 sources" in out


# -- diff and compatibility ------------------------------------------------------------------


def test_diff(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    same = write(tmp_path, "same.spec", "# comment\n" + pathlib.Path(GRAPH).read_text())
    assert run(capsys, "diff", GRAPH, same)[0] == 0
    changed = write(
        tmp_path, "c.spec", pathlib.Path(GRAPH).read_text().replace("= workers", "= w2")
    )
    code, out, _ = run(capsys, "diff", GRAPH, changed)
    assert code == 1 and "stage enrich:\n  ~ stage.enrich.process: workers -> w2" in out
    code, doc = run_json(capsys, "diff", GRAPH, changed)
    assert code == 1 and doc["equal"] is False and list(doc["groups"]) == ["stage enrich"]  # type: ignore[call-overload]


def test_compatibility(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    assert run(capsys, "compatibility", GRAPH, GRAPH)[0] == 0
    bigger = write(tmp_path, "b.spec", pathlib.Path(GRAPH).read_text().replace("4096", "8192"))
    code, doc = run_json(capsys, "compatibility", GRAPH, bigger)
    assert code == 1 and doc["compatible"] is False
    assert [r["code"] for r in doc["reasons"]] == ["CP112"]  # type: ignore[union-attr]
    code, out, _ = run(capsys, "compatibility", GRAPH, write(tmp_path, "x.spec", "a = b\n"))
    assert code == 1 and "SP201" in out


# -- describe, dot, capabilities -------------------------------------------------------------


def test_describe(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "describe", GRAPH)
    assert code == 0
    assert "kafka_in -> enrich -> nats_out: at-least-once, order per-partition" in out
    assert "raw: events 4096 x 1024 B" in out
    code, doc = run_json(capsys, "describe", RING)
    assert code == 0 and doc["target"] == "single_ring"
    [path] = doc["paths"]  # type: ignore[misc]
    assert path["via"] == ["parse", "enrich", "count"] and path["guarantee"] == "best-effort"


def test_dot(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "dot", ORDERS)
    assert code == 0 and out.startswith('digraph "orders"') and "->" in out
    code, doc = run_json(capsys, "dot", GRAPH)
    assert code == 0 and '"stage:enrich" -> "sink:audit"' in str(doc["dot"])


def test_capabilities(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "capabilities")
    assert code == 0
    adapters = {a["name"]: a for a in doc["adapters"]}  # type: ignore[union-attr]
    planned = {"kafka", "nats", "redis", "rabbitmq", "grpc", "http", "websocket", "s3", "postgres"}
    assert planned <= set(adapters)
    assert adapters["kafka"]["install"] == "pip install 'byteor[kafka]'"
    assert adapters["stdout"]["builtin"] is True and adapters["stdout"]["roles"] == ["sink"]
    assert {k["name"] for k in doc["lane_kinds"]} == {"events", "journal", "slots", "fanout"}  # type: ignore[union-attr]
    code, out, _ = run(capsys, "capabilities")
    assert code == 0 and "built in" in out
    assert "pip install 'byteor[kafka]'" in out  # the extra, installed here or not
    assert ("not installed: pip install 'byteor[kafka]'" in out) != ("installed (aiokafka)" in out)


def test_installed_probe() -> None:
    from byteor.cli._graph import _installed

    assert _installed("json") is True
    assert _installed("surely_not_a_module_1234") is False
    assert _installed("broken..name") is False
    assert _installed(None) is True


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe\xfd" * 100,
        b"=\n==\n = = =\n",
        b"[sources.a]\nadapter = 1\n",
        b"pipeline.name = \x7f\n",
        "lane.ünï.kind = events\n".encode(),
        bytes(range(1, 256)),
    ],
)
def test_junk_never_tracebacks_in_any_command(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, data: bytes
) -> None:
    path = write(tmp_path, "junk", data)
    for argv in (["validate", path], ["fmt", path], ["hash", path], ["describe", path],
                 ["dot", path], ["diff", path, GRAPH], ["compatibility", GRAPH, path]):  # fmt: skip
        code, doc = run_json(capsys, *argv)
        # an empty file is a canonical (if invalid) spec: fmt has nothing to complain about
        expected = (0,) if argv[0] == "fmt" and not data else (1, 2)
        assert code in expected, (argv, doc)


def test_plan_validation_reports_spec_warnings(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    plan = write(tmp_path, "w.toml", 'name = "w"\n[sources.a]\nadapter = "kafak"\n'
                 '[sinks.o]\nadapter = "stdout"\ninputs = "a"\n')  # fmt: skip
    code, doc = run_json(capsys, "validate", plan)
    assert code == 0 and doc["warnings"] == 1
    [finding] = doc["findings"]  # type: ignore[misc]
    assert finding["code"] == "SP314" and finding["suggestion"] == "kafka"
    assert run(capsys, "validate", "--strict", plan)[0] == 1
