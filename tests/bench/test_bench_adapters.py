"""``byteor bench adapters`` checks what it times: a broken case fails instead of looking fast.

The check is fed in one process first; then tiny runs go through the real servers (Redis, and
every other case whose adapter has landed; HTTP, WebSocket and gRPC with their peer process),
plus cases broken on purpose: each kind of check (the sequence in the timed loop, the server's
state after, the peer's report, the receiver's) fails the run it should.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import re
import struct
from collections.abc import Sequence
from typing import Any

import pytest

from byteor.adapters import OutRecord
from byteor.bench import adapters as bench
from byteor.bench.adapters import _runner
from byteor.bench.adapters._harness import Case, Kind, Plan, SourceSide, Tally, payloads
from byteor.bench.adapters._peer import Peer
from byteor.bench.adapters.redis import RedisCase, _HandSource
from byteor.bench.lanes import BenchFailure
from byteor.cli import main
from byteor.cli.common import CliError

PLAN = Plan(records=1_000, size=64, batch=100)
BATCHES = PLAN.records // PLAN.batch


def _args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "only": None,
        "records": PLAN.records,
        "size": PLAN.size,
        "batch": PLAN.batch,
        "repeat": 1,
        "quick": False,
        "json": True,
        "save": None,
        "timeout": 30.0,
        "list": False,
    }
    return argparse.Namespace(**{**base, **kw})


# --- the check, in one process ----------------------------------------------------------------


def test_tally_accepts_the_stream_in_order_and_times_after_the_first_batch() -> None:
    items = payloads(PLAN)
    assert len(items) == 1_000 and all(len(p) == 64 for p in items)
    assert [struct.unpack_from("<Q", p)[0] for p in items[:3]] == [0, 1, 2]
    tally = Tally(PLAN)
    for i in range(0, 1_000, 300):  # batches of any length, the last one short
        tally.take(items[i : i + 300])
    tally.stop()
    assert tally.done and (tally.received, tally.first) == (1_000, 300)
    assert tally.rate > 0


@pytest.mark.parametrize(
    ("order", "match"),
    [
        ([0, 1, 3], r"#2 carries sequence 3, expected 2"),  # lost
        ([0, 1, 1, 2], r"#2 carries sequence 1, expected 2"),  # duplicated
        ([1, 0], r"#0 carries sequence 1, expected 0"),  # reordered
    ],
)
def test_tally_fails_on_a_wrong_stream(order: list[int], match: str) -> None:
    items = payloads(PLAN)
    with pytest.raises(BenchFailure, match=match):
        Tally(PLAN).take([items[i] for i in order])


def test_tally_fails_on_extra_records_and_wrong_sizes() -> None:
    items = payloads(Plan(3, 64, 10))
    tally = Tally(Plan(2, 64, 10))
    with pytest.raises(BenchFailure, match="received 3 records, only 2 sent"):
        tally.take(items)
    with pytest.raises(BenchFailure, match=r"records of \[64, 65\] bytes arrived, expected 64"):
        Tally(PLAN).take([items[0], items[1] + b"!"])


def test_only_selects_known_adapters() -> None:
    assert _runner.select(None) == list(bench.CASES)
    assert _runner.select(["redis", "redis"]) == ["redis"]
    with pytest.raises(CliError, match="no adapter case kafak"):
        _runner.select(["redis,kafak"])
    with pytest.raises(CliError, match="at least twice --batch"):
        _runner.run_cli(_args(records=100, batch=100))


# --- against the real servers -----------------------------------------------------------------


def test_every_landed_case_runs_checked_with_a_ratio(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save = tmp_path / "adapters.json"
    assert _runner.run_cli(_args(save=str(save))) == 0
    doc = json.loads(capsys.readouterr().out)
    assert json.loads(save.read_text()) == doc
    assert doc["benchmark"] == "byteor bench adapters"
    assert doc["settings"]["records"] == 1_000 and doc["settings"]["target"] == 0.9
    assert doc["failures"] == []
    by = {(r["adapter"], r["kind"]): r for r in doc["results"]}
    assert set(by) == {(name, kind) for name in bench.CASES for kind in ("source", "sink")}
    assert by[("redis", "source")]["status"] == "ok"  # Redis is always there
    for r in doc["results"]:
        if r["status"] == "skipped":
            assert "\n" not in r["detail"] and r["detail"]
            continue
        assert r["status"] == "ok", r["detail"]
        for impl in ("hand", "ours"):
            (run,) = r["runs"][impl]
            assert run["records"] == 1_000 and run["rate"] > 0
        assert r["ratio"] == pytest.approx(r["ours_median"] / r["hand_median"])
        assert r["target_met"] == (r["ratio"] >= 0.9)
    assert doc["servers"]["redis"].startswith("Redis ")
    # The server adapters: the peer's report and the receiver's are kept per run.
    for name in ("http", "websocket", "grpc"):
        if by[(name, "source")]["status"] == "skipped":
            continue
        for impl in ("hand", "ours"):
            (run,) = by[(name, "source")]["runs"][impl]
            assert run["details"]["records"] == run["details"]["acked"] == 1_000
            assert run["details"]["server"]["admitted"] == 1_000
            (run,) = by[(name, "sink")]["runs"][impl]
            assert run["details"] == {"received": 1_000, "error": None}
    http = by[("http", "source")]
    if http["status"] == "ok":  # the bare 202 server: one more line, same load
        bound = http["bound"]
        (run,) = bound["runs"]
        assert run["records"] == 1_000 and run["details"]["requests"] == BATCHES
        assert bound["median"] == run["rate"] > 0
        assert bound["ours_share"] == pytest.approx(http["ours_median"] / run["rate"])
        assert "bound" not in by[("http", "sink")]


class _LosesOne(_HandSource):
    """Reads like the hand loop, but drops the 10th record of the stream."""

    seen = 0

    async def read(self, max_records: int) -> tuple[Sequence[bytes], list[bytes]]:
        got, ids = await super().read(max_records)
        out = [p for i, p in enumerate(got) if self.seen + i != 9]
        self.seen += len(got)
        return out, ids


class _ForgetsTheLastAck(_HandSource):
    """Checks every record but never XACKs the last batch."""

    last = b""

    async def ack(self, token: list[bytes]) -> None:
        if struct.unpack_from("<Q", self.last)[0] != PLAN.records - 1:
            await super().ack(token)

    async def read(self, max_records: int) -> tuple[Sequence[bytes], list[bytes]]:
        got, ids = await super().read(max_records)
        if got:
            self.last = got[-1]
        return got, ids


@pytest.mark.parametrize(
    ("broken", "match"),
    [
        (_LosesOne, r"record #9 carries sequence 10, expected 9"),
        (_ForgetsTheLastAck, r"100 entries of .* still pending \(not XACKed\)"),
    ],
)
def test_a_broken_source_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, broken: type[SourceSide[Any]], match: str
) -> None:
    def source(self: RedisCase, impl: str, target: str, plan: Plan) -> SourceSide[Any]:
        return broken(target) if impl == "ours" else _HandSource(target)

    monkeypatch.setattr(RedisCase, "source", source)
    rows, _ = _runner.run_benchmark(
        ["redis"],
        records=PLAN.records,
        size=PLAN.size,
        batch=PLAN.batch,
        repeat=1,
        progress=lambda s: None,
    )
    source_row = next(r for r in rows if r.kind == "source")
    assert source_row.status == "failed"
    assert source_row.detail.startswith("ours: ")
    assert re.search(match, source_row.detail), source_row.detail
    assert next(r for r in rows if r.kind == "sink").status == "ok"


def test_an_unreachable_server_or_missing_adapter_is_skipped_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(RedisCase, "address", "127.0.0.1:1")
    monkeypatch.setitem(bench.CASES, "nosuch", "byteor.bench.adapters.nosuch:Case")
    code = main(
        ["bench", "adapters", "--only", "redis,nosuch", "--records", "200", "--batch", "100"]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert re.search(r"\nredis +source +SKIPPED: redis: no server at 127\.0\.0\.1:1", out)
    assert re.search(r"\nnosuch +sink +SKIPPED: no adapter called 'nosuch'", out)
    assert "Traceback" not in out + err


# --- the server adapters' checks, each broken on purpose --------------------------------------


def test_the_hand_loops_send_what_ours_sends() -> None:
    """The hand-written HTTP and WebSocket sinks build the very bytes the adapters' encoders
    build (so the receiver and the wire are the same for both sides)."""
    from byteor.adapters.http import _batch_key, encode_batch, idempotency_key
    from byteor.adapters.websocket import encode_message
    from byteor.bench.adapters.http import hand_body
    from byteor.bench.adapters.websocket import hand_message

    items = [*payloads(Plan(20, 64, 20)), b"text", "caf\u00e9".encode()]
    recs = [OutRecord(p) for p in items]
    keys = [idempotency_key(r) for r in recs]
    assert hand_body(items) == (encode_batch(recs, "ndjson", keys), _batch_key(keys))
    ids = [str(i) for i in range(len(items))]
    assert json.loads(hand_message(items, ids)) == json.loads(encode_message(recs, ids))


async def _one_run(case: Case, kind: Kind, impl: str = "hand") -> dict[str, Any]:
    try:
        return await _runner._run_once(case, kind, impl, PLAN, payloads(PLAN), 0, 30.0)  # type: ignore[arg-type]
    finally:
        await case.close()


def _case(name: str) -> Case:
    loaded = _runner._load_case(name)
    if isinstance(loaded, str):
        pytest.skip(loaded)
    return loaded


def test_a_source_that_leaves_records_unacknowledged_fails_on_the_servers_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from byteor.bench.adapters import http

    class KeepsTheLast(http._HandSource):
        acks = 0

        async def ack(self, token: int) -> None:
            self.acks += 1
            if self.acks < BATCHES:
                await super().ack(token)

    monkeypatch.setattr(http, "_HandSource", KeepsTheLast)
    with pytest.raises(BenchFailure, match=r"admitted 1000 of 1000 records, 100 not acknowledged"):
        asyncio.run(_one_run(_case("http"), "source"))


def test_a_source_acknowledging_twice_fails_in_the_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    from byteor.bench.adapters import websocket

    class AcksOneTwice(websocket._HandSource):
        async def ack(self, token: list[tuple[Any, str]]) -> None:
            last = token[-1][1] == str(PLAN.records - 1)
            await super().ack(token + token[:1] if last else token)

    monkeypatch.setattr(websocket, "_HandSource", AcksOneTwice)
    with pytest.raises(BenchFailure, match=r"peer: load: BenchFailure: id 900 acknowledged twice"):
        asyncio.run(_one_run(_case("websocket"), "source"))


def test_a_sink_losing_a_record_fails_on_the_receivers_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from byteor.bench.adapters import grpc

    class LosesOne(grpc._HandSink):
        async def write(self, batch: list[bytes]) -> None:
            await super().write([p for p in batch if struct.unpack_from("<Q", p)[0] != 9])

    monkeypatch.setattr(grpc, "_HandSink", LosesOne)
    with pytest.raises(BenchFailure, match=r"the receiver: record #9 carries sequence 10"):
        asyncio.run(_one_run(_case("grpc"), "sink"))


def test_sources_that_skip_their_last_checkpoint_or_cursor_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from byteor.bench.adapters import postgres, s3

    class NoLastCheckpoint(s3._HandSource):
        acks = 0

        async def ack(self, token: list[tuple[Any, int]]) -> None:
            self.acks += 1
            if self.acks < BATCHES:
                await super().ack(token)

    class NoLastCursor(postgres._HandSource):
        acks = 0

        async def ack(self, token: tuple[int, int] | None) -> None:
            self.acks += 1
            if self.acks < BATCHES:
                await super().ack(token)

    monkeypatch.setattr(s3, "_HandSource", NoLastCheckpoint)
    monkeypatch.setattr(postgres, "_HandSource", NoLastCursor)
    with pytest.raises(
        BenchFailure, match=r"checkpoint is at '.*0899\.bor', the last key is '.*0999\.bor'"
    ):
        asyncio.run(_one_run(_case("s3"), "source"))
    with pytest.raises(BenchFailure, match=r"the cursor of .* is at \(\d+, \d+\), the last row"):
        asyncio.run(_one_run(_case("postgres"), "source"))


def test_a_peer_that_cannot_start_fails_in_one_line() -> None:
    async def main() -> None:
        peer = Peer("byteor.bench.adapters.nosuch:Peer")
        try:
            await peer.ask("prepare", target="t")
        finally:
            await peer.close()

    with pytest.raises(BenchFailure, match=r"peer process .*nosuch:Peer exited \(1\): .*No"):
        asyncio.run(main())
