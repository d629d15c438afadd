"""The PostgreSQL adapter against the real server on 127.0.0.1:5432 (database ``test``)."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from _batches import MIXED, mixed_columns

from byteor.adapters import (
    AckError,
    AdapterAuthError,
    AdapterError,
    AdapterNotFound,
    AdapterUnreachable,
    OutRecord,
    Record,
    RecordBatch,
    Sink,
    Source,
    ack_all,
    load_adapter,
    nack_all,
)
from byteor.adapters.postgres import (
    PostgresAdapter,
    PostgresSink,
    PostgresSource,
    decode_headers_bytes,
    decode_headers_json,
    encode_headers_bytes,
    encode_headers_json,
    table_ddl,
)
from byteor.testing import ConformanceTests, Harness

DSN = "postgresql://postgres@127.0.0.1:5432/test"


class PostgresHarness(Harness):
    """A fresh table and cursor table per test; the table refuses the payload ``x1`` (a
    CHECK constraint), so a sink batch holding it must be refused whole."""

    def __init__(self, conn: Any) -> None:
        tag = uuid.uuid4().hex[:12]
        self.table, self.cursors = f"byteor_t_{tag}", f"byteor_c_{tag}"
        self.conn = conn
        self.tables = [self.table, self.cursors]

    @classmethod
    async def open(cls) -> PostgresHarness:
        h = cls(await asyncpg.connect(DSN))
        await h.conn.execute(table_ddl(h.table))
        await h.conn.execute(f"ALTER TABLE {h.table} ADD CHECK (payload <> 'x1'::bytea)")
        return h

    async def new_source(self, consumer: str = "c1", **kw: Any) -> PostgresSource:
        src = PostgresSource(DSN, self.table, consumer=consumer, cursor_table=self.cursors, **kw)
        await src.start()
        return src

    async def new_sink(self, **kw: Any) -> Sink:
        sink = PostgresSink(DSN, self.table, **kw)
        await sink.start()
        return sink

    async def produce(self, records: Sequence[OutRecord], table: str = "") -> None:
        await self.conn.executemany(
            f"INSERT INTO {table or self.table} (payload, key, headers) VALUES ($1, $2, $3)",
            [(r.payload, r.key, encode_headers_json(r.headers)) for r in records],
        )

    async def written(self) -> list[OutRecord]:
        rows = await self.conn.fetch(f"SELECT payload, key, headers FROM {self.table} ORDER BY id")
        return [OutRecord(p, k, decode_headers_json(h)) for p, k, h in rows]

    async def cursor(self, consumer: str = "c1") -> int:
        pos = await self.conn.fetchval(
            f"SELECT id FROM {self.cursors} WHERE consumer = $1", consumer
        )
        assert isinstance(pos, int)
        return pos

    async def ids(self) -> list[int]:
        return [r[0] for r in await self.conn.fetch(f"SELECT id FROM {self.table} ORDER BY id")]

    async def rejecting_sink(self) -> Sink | None:
        return await self.new_sink()  # the batch x0, x1, x2 breaks the CHECK at x1

    async def close(self) -> None:
        for t in self.tables:
            await self.conn.execute(f"DROP TABLE IF EXISTS {t}")
        await self.conn.close()


@pytest.fixture
async def harness() -> AsyncIterator[PostgresHarness]:
    h = await PostgresHarness.open()
    yield h
    await h.close()


class TestPostgresConformance(ConformanceTests):
    pass  # the module-level `harness` fixture serves


async def _drain(src: Source, quiet_s: float = 0.3) -> list[Record]:
    """Everything until the source stays quiet for ``quiet_s``, acked as it arrives."""
    got: list[Record] = []
    while batch := await src.next_batch(1000, timeout_s=quiet_s):
        for r in batch:
            await r.ack.ack()
        got += batch
    return got


def test_headers_round_trip_in_both_column_encodings() -> None:
    tricky = (("a", b""), ("a", b"\x00nul"), ("\u00e9", "\u00e9t\u00e9".encode()), ("b", b"\xff"))
    assert decode_headers_json(encode_headers_json(tricky)) == tricky
    assert decode_headers_bytes(encode_headers_bytes(tricky)) == tricky
    assert encode_headers_json(()) is None
    assert decode_headers_json(None) == decode_headers_bytes(None) == ()
    assert '"b64"' in (encode_headers_json((("n", b"\xff"),)) or "")  # not UTF-8
    assert encode_headers_json((("n", b"v"),)) == '[["n","v"]]'  # readable from SQL


async def test_ten_thousand_records_round_trip(harness: PostgresHarness) -> None:
    sent = [
        OutRecord(f"payload-{i}".encode(), f"k{i % 7}".encode(), (("n", str(i).encode()),))
        for i in range(10_000)
    ]
    sink = await harness.new_sink()
    for at in range(0, len(sent), 500):
        await sink.write_batch(sent[at : at + 500])
    await sink.stop()
    src = await harness.new_source()
    got: list[OutRecord] = []
    while len(got) < len(sent):
        batch = await src.next_batch(1000, timeout_s=2.0)
        assert batch, f"stalled after {len(got)} records"
        for r in batch:
            got.append(r.out())
            await r.ack.ack()
    assert await src.next_batch(1000, timeout_s=0.2) == []
    assert src.health().lag == 0
    await src.stop()
    assert got == sent  # exact content, in order
    assert await harness.written() == sent
    assert await harness.cursor() == (await harness.ids())[-1], "the cursor reached the end"


@pytest.mark.parametrize("dedupe", ["content", "key", "header", "none"])
async def test_the_same_batch_written_twice_is_stored_once(
    harness: PostgresHarness, dedupe: str
) -> None:
    batch = [OutRecord(f"p{i}".encode(), f"k{i}".encode(), (("id", b"%d" % i),)) for i in range(20)]
    sink = await harness.new_sink(dedupe=dedupe, dedupe_header="id")
    await sink.write_batch(batch)
    await sink.write_batch(batch)  # a redelivery upstream
    new = OutRecord(b"new", b"k-new", (("id", b"new"),))
    await sink.write_batch([*batch[5:10], new])
    await sink.stop()
    written = await harness.written()
    if dedupe == "none":
        assert written == [*batch, *batch, *batch[5:10], new]
    else:
        assert written == [*batch, new]


async def test_bytea_headers_and_custom_columns(harness: PostgresHarness) -> None:
    table = harness.table + "_b"
    harness.tables.append(table)
    await harness.conn.execute(
        f"CREATE TABLE {table} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "tx xid8 NOT NULL DEFAULT pg_current_xact_id(), body bytea NOT NULL, h bytea, "
        "uid bytea UNIQUE)"
    )
    cols = {
        "id": "seq",
        "txid": "tx",
        "payload": "body",
        "key": "",
        "headers": "h",
        "dedupe": "uid",
    }
    adapter = PostgresAdapter()
    raw = {f"{k}_column": v for k, v in cols.items()}
    raw |= {"dsn": DSN, "table": table, "cursor_table": harness.cursors, "create": "false"}
    sent = [OutRecord(b"a", None, (("x", b"\x00\xff"),)), OutRecord(b"b")]
    sink = adapter.sink(raw)
    await sink.start()
    await sink.write_batch(sent)
    await sink.stop()
    assert await harness.conn.fetchval(f"SELECT h FROM {table} WHERE body = 'a'") == (
        encode_headers_bytes(sent[0].headers)
    )
    src = adapter.source(raw | {"create": "true"})  # the cursor table is still missing
    await src.start()
    got = await _drain(src)
    await src.stop()
    assert [r.out() for r in got] == sent


async def test_cursor_never_passes_an_unsettled_row(harness: PostgresHarness) -> None:
    await harness.produce([OutRecord(f"r{i}".encode()) for i in range(5)])
    ids = await harness.ids()
    src = await harness.new_source()
    got = await src.next_batch(10, timeout_s=1.0)
    assert [r.position for r in got] == ids
    for r in got[1:]:
        await r.ack.ack()
    assert await src.next_batch(10) == []  # writes the cursor: nothing settled contiguously
    assert await harness.cursor() == 0
    assert src.health().lag == 5
    await got[0].ack.ack()
    assert await src.next_batch(10) == []
    assert await harness.cursor() == ids[-1]
    assert src.health().lag == 0
    await src.stop()


async def test_batches_settle_without_handles_and_the_cursor_follows(
    harness: PostgresHarness,
) -> None:
    """ack_all / nack_all settle rows without a handle each (their read stands in); nacked
    rows come again first, in order; the cursor moves only over contiguous acked rows."""
    await harness.produce([OutRecord(f"r{i}".encode()) for i in range(6)])
    ids = await harness.ids()
    src = await harness.new_source()
    got = await src.next_batch(4, timeout_s=1.0)
    assert [r.position for r in got] == ids[:4]
    await nack_all(got[1:3])
    await ack_all([got[0], got[3]])
    with pytest.raises(AckError):
        await ack_all(got[:1])
    again = await src.next_batch(10)  # writes the cursor: only row 0 is contiguous
    assert await harness.cursor() == ids[0]
    assert [(r.payload, r.position) for r in again] == [(b"r1", ids[1]), (b"r2", ids[2])]
    await again[0].ack.ack()  # one handle made; the other as a batch
    await ack_all(again[1:])
    rest = await src.next_batch(10)
    assert await harness.cursor() == ids[3]
    assert [r.payload for r in rest] == [b"r4", b"r5"]
    await ack_all(rest)
    await src.stop()
    assert await harness.cursor() == ids[5]


async def test_a_read_is_a_batch_of_columns_settled_whole(harness: PostgresHarness) -> None:
    """A read comes as a RecordBatch: its columns straight from the rows (keys and headers
    only when a row has them), its records made only when read; nack_all of it hands the
    same rows out again, ack_all moves the cursor over it; a batch one of whose records was
    acked on its own is refused whole."""
    await harness.produce(MIXED + [OutRecord(b"plain%d" % i) for i in range(3)])
    ids = await harness.ids()
    src = await harness.new_source()
    got = mixed_columns(await src.next_batch(3, timeout_s=1.0), ids[:3])
    await nack_all(got)
    again = mixed_columns(await src.next_batch(10), ids[:3])
    assert [r.out() for r in again] == MIXED
    await ack_all(again)
    plain = await src.next_batch(10)
    assert isinstance(plain, RecordBatch) and (plain.keys, plain.headers) == (None, None)
    assert await harness.cursor() == ids[2]
    await plain[1].ack.ack()
    with pytest.raises(AckError, match="settled on its own"):
        await ack_all(plain)
    assert await src.next_batch(10) == []
    assert await harness.cursor() == ids[2], "the batch was refused: nothing more settled"
    await ack_all([plain[0], plain[2]])
    await src.stop()
    assert await harness.cursor() == ids[5]


async def test_notify_wakes_the_source_and_nothing_else_does(harness: PostgresHarness) -> None:
    loop = asyncio.get_running_loop()
    src = await harness.new_source(poll_s=3600.0)  # the fallback poll never comes in this test
    assert await src.next_batch(10) == []  # the first read: empty
    waiting = asyncio.create_task(src.next_batch(10, timeout_s=20.0))
    started = loop.time()
    await harness.produce([OutRecord(b"woken")])
    got = await asyncio.wait_for(waiting, 30)
    assert [r.payload for r in got] == [b"woken"], "only a notification could deliver it"
    assert loop.time() - started < 10.0
    await got[0].ack.ack()
    await src.stop()

    # The control: without the trigger, a row inserted is not seen (no polling) ...
    quiet = harness.table + "_q"
    harness.tables.append(quiet)
    await harness.conn.execute(table_ddl(quiet))
    src = PostgresSource(DSN, quiet, cursor_table=harness.cursors, trigger=False, poll_s=3600.0)
    await src.start()
    assert await src.next_batch(10) == []
    await harness.produce([OutRecord(b"unseen")], table=quiet)
    assert await src.next_batch(10, timeout_s=0.3) == []
    # ... until a NOTIFY on its channel arrives.
    await harness.conn.execute(f"NOTIFY {src.channel}")
    got = await src.next_batch(10, timeout_s=20.0)
    assert [r.payload for r in got] == [b"unseen"]
    await src.stop()


async def test_a_read_settled_whole_after_a_later_one_moves_the_cursor_over_both(
    harness: PostgresHarness,
) -> None:
    """A whole read settled at once leaves the front without a set; reads settled before it
    (out of order) are then passed over too, and a partly settled read holds the cursor."""
    await harness.produce([OutRecord(f"r{i}".encode()) for i in range(7)])
    ids = await harness.ids()
    src = await harness.new_source()
    first = await src.next_batch(3, timeout_s=1.0)
    second = await src.next_batch(2)
    third = await src.next_batch(2)
    assert [r.position for r in first + second + third] == ids
    await ack_all(second)
    await ack_all(third[1:])
    assert await src.next_batch(10) == []
    assert await harness.cursor() == 0
    assert src.health().lag == 7  # settled out of order: nothing behind the cursor yet
    await ack_all(first)
    assert await src.next_batch(10) == []
    assert await harness.cursor() == ids[4]
    assert src.health().lag == 2  # the third read: one row acked, above an unsettled one
    await ack_all(third[:1])
    await src.stop()
    assert await harness.cursor() == ids[6]


async def test_a_row_committed_late_below_a_read_row_is_not_skipped(
    harness: PostgresHarness,
) -> None:
    src = await harness.new_source()
    assert await src.next_batch(10) == []
    other = await asyncpg.connect(DSN)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute(f"INSERT INTO {harness.table} (payload) VALUES ('early')")
        await harness.produce([OutRecord(b"late")])  # a higher id, committed first
        assert await src.next_batch(10, timeout_s=0.3) == [], "read past an open transaction"
        await tx.commit()
    finally:
        await other.close()
    got = await src.next_batch(10, timeout_s=10.0)
    assert [r.payload for r in got] == [b"early", b"late"]
    assert [r.position for r in got] == await harness.ids()
    await src.stop()


async def test_pg_terminate_backend_mid_stream_loses_nothing(harness: PostgresHarness) -> None:
    sent = [f"r{i}".encode() for i in range(100)]
    await harness.produce([OutRecord(p) for p in sent])
    src = await harness.new_source(poll_s=3600.0)
    first = await src.next_batch(50, timeout_s=1.0)
    assert len(first) == 50
    for r in first:
        await r.ack.ack()
    unacked = await src.next_batch(10)  # writes the cursor after 50; these 10 stay unacked
    assert len(unacked) == 10
    pid = src.backend_pid
    assert await harness.conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    rest = await src.next_batch(100, timeout_s=5.0)  # reconnects, goes on where it was
    assert src.backend_pid not in (None, pid)
    assert [r.payload for r in rest] == sent[60:]
    for r in unacked + rest:
        await r.ack.ack()
    await harness.produce([OutRecord(b"after")])  # LISTEN was set up again on reconnect
    after = await src.next_batch(10, timeout_s=20.0)
    assert [r.payload for r in after] == [b"after"]
    await after[0].ack.ack()
    await src.stop()
    assert await harness.cursor() == (await harness.ids())[-1]
    again = await harness.new_source()
    assert await again.next_batch(1000, timeout_s=0.3) == []
    await again.stop()


async def test_sink_reconnects_after_its_backend_is_terminated(
    harness: PostgresHarness, caplog: pytest.LogCaptureFixture
) -> None:
    sink = PostgresSink(DSN, harness.table)
    await sink.start()
    await sink.write_batch([OutRecord(b"a")])
    assert await harness.conn.fetchval("SELECT pg_terminate_backend($1)", sink.backend_pid)
    await sink.write_batch([OutRecord(b"b")])  # idle connection lost: a new one
    # Lost in the middle of a write: the INSERT waits on a lock, its backend is terminated.
    locker = await asyncpg.connect(DSN)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute(f"LOCK TABLE {harness.table} IN EXCLUSIVE MODE")
        pid = sink.backend_pid
        writing = asyncio.create_task(sink.write_batch([OutRecord(b"c"), OutRecord(b"d")]))
        loop = asyncio.get_running_loop()
        end = loop.time() + 10.0
        while not await harness.conn.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        ):
            assert loop.time() < end, "the write never waited on the lock"
            await asyncio.sleep(0.01)
        assert await harness.conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        await tx.rollback()
    finally:
        await locker.close()
    await asyncio.wait_for(writing, 30)  # retried on a new connection
    assert sink.backend_pid != pid
    await sink.stop()
    assert [r.payload for r in await harness.written()] == [b"a", b"b", b"c", b"d"]
    retries = [m for n, lvl, m in caplog.record_tuples if n == "byteor.adapters.postgres"]
    assert retries and all(m.startswith("byteor-sink: retry 1 in ") for m in retries), retries
    assert "due to administrator command" in retries[-1]  # the write lost mid-statement


async def test_a_new_consumer_can_start_at_the_latest_row(harness: PostgresHarness) -> None:
    await harness.produce([OutRecord(b"old")])
    src = await harness.new_source(start_at="latest")
    assert await src.next_batch(10, timeout_s=0.1) == []
    await harness.produce([OutRecord(b"new")])
    assert [r.payload for r in await _drain(src)] == [b"new"]
    await src.stop()
    again = await harness.new_source(start_at="earliest")  # the cursor is stored: kept
    assert await again.next_batch(10, timeout_s=0.1) == []
    await again.stop()


VICTIM = """
import asyncio, sys
from byteor.adapters.postgres import PostgresSource

async def main() -> None:
    src = PostgresSource(sys.argv[1], sys.argv[2], consumer="victim", cursor_table=sys.argv[3])
    await src.start()
    got = []
    while len(got) < 30:
        got += await src.next_batch(30 - len(got), timeout_s=1.0)
    for r in got[:20]:
        await r.ack.ack()
    src.pause()
    assert await src.next_batch(1) == []  # paused: writes the cursor, takes nothing new
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_consumer_killed_mid_stream_loses_nothing(harness: PostgresHarness) -> None:
    sent = [f"r{i}".encode() for i in range(100)]
    await harness.produce([OutRecord(p) for p in sent])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        VICTIM,
        DSN,
        harness.table,
        harness.cursors,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line == b"ready\n"
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    ids = await harness.ids()
    assert await harness.cursor("victim") == ids[19], "the cursor holds the 20 acked"
    # Restarted under the same consumer name: the 10 unacked first, then the rest.
    src = await harness.new_source(consumer="victim")
    got = [r.payload for r in await _drain(src)]
    await src.stop()
    assert got[:10] == sent[20:30], "the unacked records come back first, in order"
    assert got == sent[20:], "nothing lost, nothing acked delivered again"
    assert await harness.cursor("victim") == ids[-1]


async def test_unreachable_server_names_adapter_and_address() -> None:
    for side in (
        PostgresSource("postgresql://postgres@127.0.0.1:1/test", "t"),
        PostgresSink("postgresql://postgres@127.0.0.1:1/test", "t"),
    ):
        with pytest.raises(AdapterUnreachable) as info:
            await side.start()
        assert info.value.retriable
        msg = str(info.value)
        assert msg.startswith("postgres: cannot reach 127.0.0.1:1"), msg
        assert "check that the server is running" in msg


async def test_unknown_role_is_an_auth_error() -> None:
    src = PostgresSource("postgresql://byteor_no_such_role@127.0.0.1:5432/test", "t")
    with pytest.raises(AdapterAuthError) as info:
        await src.start()
    assert not info.value.retriable
    assert "127.0.0.1:5432 refused the credentials" in str(info.value)
    assert "byteor_no_such_role" in str(info.value)


async def test_missing_table_database_or_column_say_what_to_create(
    harness: PostgresHarness,
) -> None:
    missing = harness.table + "_missing"
    for side in (
        PostgresSource(DSN, missing, create=False),
        PostgresSink(DSN, missing, create=False),
    ):
        with pytest.raises(AdapterNotFound) as info:
            await side.start()
        msg = str(info.value)
        assert f"table {missing!r} in database 'test' does not exist on 127.0.0.1:5432" in msg
        assert "set create = true" in msg and f'CREATE TABLE IF NOT EXISTS "{missing}"' in msg
    assert await harness.conn.fetchval("SELECT to_regclass($1)", missing) is None

    with pytest.raises(AdapterNotFound) as info:
        await PostgresSink("postgresql://postgres@127.0.0.1:5432/byteor_no_such_db", "t").start()
    assert "database 'byteor_no_such_db' does not exist" in str(info.value)

    odd = harness.table + "_odd"
    harness.tables.append(odd)
    await harness.conn.execute(f"CREATE TABLE {odd} (payload text, key bytea, headers jsonb)")
    with pytest.raises(AdapterError) as err:
        await PostgresSink(DSN, odd, dedupe="none").start()
    assert f"column 'payload' of table {odd!r} is of type text, expected bytea" in str(err.value)


def test_registry_loads_the_postgres_adapter() -> None:
    adapter = load_adapter("postgres")
    assert isinstance(adapter, PostgresAdapter)
    declared = adapter.declaration()
    assert declared.source is not None and declared.sink is not None
    findings = adapter.config.validate({"table": "t", "dedupe": "maybe"})[1]
    assert [f.code for f in findings] == ["AD504"]
    assert adapter.config.validate({})[1][0].code == "AD502"  # table is required
    src = adapter.source({"table": "t", "poll_s": "0.5", "consumer": "x"})
    assert isinstance(src, PostgresSource) and src.channel == "byteor_t"
