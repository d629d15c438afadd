"""PostgreSQL (127.0.0.1:5432, database ``test``): ``PostgresSource``/``PostgresSink`` against
asyncpg used by hand.

A fresh table of the adapter's shape (``table_ddl``: id, txid, payload, key, headers,
dedupe_key) per run, dropped after; cursors in one ``byteor_bench_cursors`` table, one row
per run.

Source: the table is pre-filled (one transaction per 5,000 rows). Ours: ``PostgresSource``
(LISTEN on its channel, ``(txid, id)`` order after the stored cursor, the cursor written
with the next read and at stop), ``next_batch`` + ``ack_all``. By hand: one asyncpg
connection running the same ``SELECT ... WHERE (txid, id) > cursor ORDER BY txid, id LIMIT
n`` with the snapshot's ``xmin`` (a row is taken only below it, as ours does) for
``(txid, id, payload, key, headers)`` — key and headers too, as ours delivers them: the
driver decodes both columns of every row, and a row carrying either would keep them,
headers decoded (this bench's rows carry neither) —, and after each batch the same
``UPDATE`` of its cursor row. Both write one cursor update a batch; the check reads the
cursor row back: it must be the last row's ``(txid, id)``. (Until the hand loop read key
and headers, it read ``(xmin, txid, id, payload)`` alone: ~0.64 us CPU a record, ~0.66-0.74
with them; ours ~0.97, in single-process runs of 50,000 rows.)

Sink: ours is ``PostgresSink`` (``dedupe = content``): one ``INSERT ... SELECT FROM
unnest(...) ON CONFLICT (dedupe_key) DO NOTHING`` a batch. By hand: the same statement with
asyncpg, the SHA-256 content key of each record computed in the timed loop as ours computes
it. The check reads the table back in id order: every record once, in order.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from byteor.adapters import Headers, OutRecord, Record, RecordBatch, ack_all
from byteor.adapters.postgres import (
    PostgresSink,
    PostgresSource,
    cursor_table_ddl,
    decode_headers_json,
    table_ddl,
)
from byteor.bench.adapters._harness import (
    READ_WAIT_S,
    BenchFailure,
    Case,
    Impl,
    Plan,
    SinkSide,
    SourceSide,
    Tally,
)

if TYPE_CHECKING:
    Conn = asyncpg.Connection[asyncpg.Record]

__all__ = ["PostgresCase"]

DSN = "postgresql://postgres@127.0.0.1:5432/test"
CURSORS = "byteor_bench_cursors"
PREFILL_CHUNK = 5_000
_LEN = struct.Struct(">Q")

_READ = (
    "SELECT pg_snapshot_xmin(pg_current_snapshot()), txid, id, payload, key, headers FROM {t}"
    " WHERE (txid, id) > ($1, $2) ORDER BY txid, id LIMIT $3"
)
_CURSOR = (
    f"UPDATE {CURSORS} SET txid = $3, id = $4, updated_at = now()"
    " WHERE consumer = $1 AND source_table = $2"
)
_INSERT = (
    "INSERT INTO {t} (payload, key, headers, dedupe_key) SELECT * FROM"
    " unnest($1::bytea[], $2::bytea[], $3::jsonb[], $4::bytea[])"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)


# -- the source sides ----------------------------------------------------------------------


class _OursSource(SourceSide[Sequence[Record]]):
    def __init__(self, table: str) -> None:
        self._src = PostgresSource(DSN, table, consumer=table, cursor_table=CURSORS)

    async def open(self) -> None:
        await self._src.start()

    async def read(self, max_records: int) -> tuple[Sequence[bytes], Sequence[Record]]:
        recs = await self._src.next_batch(max_records, timeout_s=READ_WAIT_S)
        if isinstance(recs, RecordBatch):  # its payload column, as the hand loop's list
            return recs.payloads, recs
        return [r.payload for r in recs], recs

    async def ack(self, token: Sequence[Record]) -> None:
        await ack_all(token)

    async def close(self) -> None:
        await self._src.stop()


class _HandSource(SourceSide[tuple[int, int] | None]):
    def __init__(self, table: str) -> None:
        self._table = table
        self._read = _READ.format(t=table)
        self._conn: Conn | None = None
        self._at = (0, 0)
        self.extras: list[tuple[int, bytes | None, Headers]] = []

    async def open(self) -> None:
        conn = self._conn = await asyncpg.connect(DSN)
        await conn.execute(
            f"INSERT INTO {CURSORS} (consumer, source_table, txid, id) VALUES ($1, $1, '0', 0)"
            " ON CONFLICT (consumer, source_table) DO NOTHING",
            self._table,
        )
        row = await conn.fetchrow(
            f"SELECT txid, id FROM {CURSORS} WHERE consumer = $1 AND source_table = $1",
            self._table,
        )
        assert row is not None
        self._at = (int(row[0]), int(row[1]))

    async def read(self, max_records: int) -> tuple[Sequence[bytes], tuple[int, int] | None]:
        assert self._conn is not None
        rows = await self._conn.fetch(self._read, self._at[0], self._at[1], max_records)
        got: list[bytes] = []
        last: tuple[int, int] | None = None
        for horizon, txid, rid, payload, key, headers in rows:
            if txid >= horizon:
                break  # a transaction still open may add rows before this one
            got.append(payload)
            if key is not None or headers is not None:  # none in this bench: kept, as ours
                self.extras.append((rid, key, decode_headers_json(headers)))
            last = (txid, rid)
        if last is not None:
            self._at = (int(last[0]), last[1])
        return got, last

    async def ack(self, token: tuple[int, int] | None) -> None:
        if token is not None:
            assert self._conn is not None
            await self._conn.execute(_CURSOR, self._table, self._table, token[0], token[1])

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


# -- the sink sides ------------------------------------------------------------------------


class _OursSink(SinkSide[list[OutRecord]]):
    def __init__(self, table: str) -> None:
        self._sink = PostgresSink(DSN, table)

    async def open(self) -> None:
        await self._sink.start()

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[OutRecord]]:
        return [[OutRecord(p) for p in items[i : i + batch]] for i in range(0, len(items), batch)]

    async def write(self, batch: list[OutRecord]) -> None:
        await self._sink.write_batch(batch)

    async def close(self) -> None:
        await self._sink.stop()


class _HandSink(SinkSide[list[bytes]]):
    def __init__(self, table: str) -> None:
        self._insert = _INSERT.format(t=table)
        self._conn: Conn | None = None

    async def open(self) -> None:
        self._conn = await asyncpg.connect(DSN)

    def prepare(self, items: Sequence[bytes], batch: int) -> list[list[bytes]]:
        return [list(items[i : i + batch]) for i in range(0, len(items), batch)]

    async def write(self, batch: list[bytes]) -> None:
        assert self._conn is not None
        pack, sha256 = _LEN.pack, hashlib.sha256
        keys = [sha256(pack(len(p)) + p + b"\x00").digest() for p in batch]
        nulls = [None] * len(batch)
        await self._conn.execute(self._insert, batch, nulls, nulls, keys)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


# -- the case ------------------------------------------------------------------------------


class PostgresCase(Case):
    name = "postgres"
    client = "asyncpg"
    address = "127.0.0.1:5432"
    records = 200_000
    ours_source = (
        "PostgresSource.next_batch + ack_all(batch) ((txid, id) after the cursor, below the"
        " snapshot's xmin; cursor UPDATE with the next read)"
    )
    hand_source = (
        "asyncpg: the same SELECT of (xmin, txid, id, payload, key, headers) after the cursor,"
        " LIMIT n, then the cursor UPDATE per batch"
    )
    ours_sink = "PostgresSink.write_batch (INSERT ... unnest ON CONFLICT, dedupe = content)"
    hand_sink = "asyncpg: the same INSERT ... unnest ON CONFLICT, SHA-256 content keys"

    def __init__(self) -> None:
        self._admin: Conn | None = None

    async def _conn(self) -> Conn:
        if self._admin is None:
            self._admin = await asyncpg.connect(DSN)
            await self._admin.execute(cursor_table_ddl(CURSORS))
        return self._admin

    async def create(self, tag: str) -> str:
        table = "byteor_bench_" + tag.replace("-", "_")
        await (await self._conn()).execute(table_ddl(table))
        return table

    async def prefill(self, target: str, items: Sequence[bytes], batch: int) -> None:
        conn = await self._conn()
        for i in range(0, len(items), PREFILL_CHUNK):
            await conn.execute(
                f"INSERT INTO {target} (payload) SELECT * FROM unnest($1::bytea[])",
                list(items[i : i + PREFILL_CHUNK]),
            )

    async def verify_source(self, target: str, plan: Plan) -> None:
        conn = await self._conn()
        last = await conn.fetchrow(
            f"SELECT txid, id FROM {target} ORDER BY txid DESC, id DESC LIMIT 1"
        )
        cursor = await conn.fetchrow(
            f"SELECT txid, id FROM {CURSORS} WHERE consumer = $1 AND source_table = $1", target
        )
        if last is None or cursor is None or tuple(cursor) != tuple(last):
            raise BenchFailure(
                f"the cursor of {target} is at {cursor and tuple(cursor)}, the last row is"
                f" {last and tuple(last)}"
            )

    async def verify_sink(self, target: str, plan: Plan) -> None:
        conn = await self._conn()
        tally = Tally(Plan(plan.records, plan.size, plan.records))
        rows = await conn.fetch(f"SELECT payload FROM {target} ORDER BY id")
        tally.take([r[0] for r in rows])
        if tally.received != plan.records:
            raise BenchFailure(f"{target} holds {tally.received} rows, {plan.records} written")

    async def drop(self, target: str) -> None:
        conn = await self._conn()
        await conn.execute(f"DROP TABLE IF EXISTS {target}")
        await conn.execute(f"DELETE FROM {CURSORS} WHERE consumer = $1", target)

    def source(self, impl: Impl, target: str, plan: Plan) -> SourceSide[Any]:
        return _OursSource(target) if impl == "ours" else _HandSource(target)

    def sink(self, impl: Impl, target: str, plan: Plan) -> SinkSide[Any]:
        return _OursSink(target) if impl == "ours" else _HandSink(target)

    async def server(self) -> str:
        version = await (await self._conn()).fetchval("SHOW server_version")
        return f"PostgreSQL {version}"

    async def close(self) -> None:
        conn, self._admin = self._admin, None
        if conn is not None:
            await conn.close()
