"""``adapter = "sqlite"``: a table of an SQLite database file as a source or a sink.

A third-party adapter is a subclass of :class:`byteor.adapters.Adapter` — its name, a config
schema (what ``byteor validate`` checks a spec's ``param.<k>`` against), its capabilities,
and factories for its source and sink — registered in the ``byteor.adapters`` entry-point
group. Its sources and sinks are async and never block the event loop: every SQLite call
here runs on one worker thread of the source or sink (one connection, used by that thread
only).

The table (created when missing)::

    CREATE TABLE <table> (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,   -- order of arrival
        payload BLOB NOT NULL,
        key     BLOB,
        headers BLOB                                 -- per header: u16 name length, name,
    );                                               --   u32 value length, value
    CREATE TABLE byteor_cursors (consumer TEXT, source_table TEXT, id INTEGER,
                                 PRIMARY KEY (consumer, source_table));

**Source.** Reads rows with ``id`` above what it handed out, in id order, ``batch`` at a
time (polling every ``poll_ms`` while there is nothing new). The consumer's cursor is the
highest id with every row up to it acknowledged; it is stored in ``byteor_cursors`` (same
file) with the next read and at stop, never past an unacknowledged row. After a crash or a
stop the rows after the stored cursor are read again: at least once, in order. A nacked row
is handed out again first. One running source per ``(consumer, table)``.

**Sink.** Appends a batch in one transaction; ``write_batch`` returns after the commit.
``SQLITE_BUSY`` (another process holds the write lock past ``busy_timeout_ms``) is a
retriable error: EdgePlane retries the write.

The database is in WAL mode, so a source, a sink and other readers may share the file from
several processes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from byteor.adapters import (
    Ack,
    Adapter,
    AdapterError,
    Capabilities,
    ConfigField,
    ConfigSchema,
    ConfigValue,
    Headers,
    Health,
    OutRecord,
    Record,
    Sink,
    Source,
)
from byteor.spec import Delivery

__all__ = ["SqliteAdapter", "SqliteSource", "SqliteSink", "encode_headers", "decode_headers"]

T = TypeVar("T")
_NAME = struct.Struct(">H")
_VALUE = struct.Struct(">I")
_CURSORS = "byteor_cursors"


def encode_headers(headers: Headers) -> bytes | None:
    if not headers:
        return None
    parts: list[bytes] = []
    for name, value in headers:
        n = name.encode()
        parts += [_NAME.pack(len(n)), n, _VALUE.pack(len(value)), value]
    return b"".join(parts)


def decode_headers(blob: bytes | None) -> Headers:
    out: list[tuple[str, bytes]] = []
    at = 0
    while blob and at < len(blob):
        (n,) = _NAME.unpack_from(blob, at)
        name = blob[at + 2 : at + 2 + n].decode()
        at += 2 + n
        (v,) = _VALUE.unpack_from(blob, at)
        out.append((name, bytes(blob[at + 4 : at + 4 + v])))
        at += 4 + v
    return tuple(out)


def _quote(name: str) -> str:
    """A table name as an SQL identifier (``schema.table`` is not supported: one file)."""
    if not name or '"' in name or "\x00" in name:
        raise AdapterError(f"sqlite: bad table name {name!r}", adapter="sqlite")
    return f'"{name}"'


class _Db:
    """One SQLite connection on a thread of its own; ``await db.run(fn, ...)``."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self._busy_s = busy_timeout_ms / 1000
        self._pool: ThreadPoolExecutor | None = None
        self.conn: sqlite3.Connection | None = None

    async def open(self, table: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="byteor-sqlite")
        await self.run(self._connect, table)

    def _connect(self, table: str) -> None:
        # isolation_level=None: autocommit; transactions are explicit (BEGIN ... COMMIT).
        conn = sqlite3.connect(self.path, timeout=self._busy_s, isolation_level=None)
        self.conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_quote(table)} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "payload BLOB NOT NULL, key BLOB, headers BLOB)"
        )

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._pool is None:
            raise AdapterError("sqlite: not started", adapter="sqlite")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except sqlite3.OperationalError as exc:
            # "database is locked" (busy), "unable to open database file", a full disk:
            # another try may work.
            raise AdapterError(
                f"sqlite: {self.path}: {exc}", adapter="sqlite", address=self.path, retriable=True
            ) from None
        except sqlite3.Error as exc:
            raise AdapterError(
                f"sqlite: {self.path}: {exc}", adapter="sqlite", address=self.path
            ) from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(pool, conn.close)
        pool.shutdown(wait=True)


class _Row:
    """A row handed out and not yet acknowledged (its content, to hand it out again)."""

    __slots__ = ("id", "acked", "payload", "key", "headers")

    def __init__(self, id_: int, payload: bytes, key: bytes | None, headers: Headers) -> None:
        self.id = id_
        self.acked = False
        self.payload = payload
        self.key = key
        self.headers = headers


class _RowAck(Ack):
    """A row's acknowledgement: tells the source, which moves its cursor."""

    __slots__ = ("_source", "_row", "_epoch")

    def __init__(self, source: SqliteSource, row: _Row, epoch: int) -> None:
        super().__init__()
        self._source = source
        self._row = row
        self._epoch = epoch

    def settled(self, ok: bool) -> None:
        self._source._settle(self._row, ok, self._epoch)


class SqliteSource(Source):
    """Rows of ``table`` after the consumer's cursor, in id order (see the module docstring)."""

    def __init__(
        self, path: str, table: str, consumer: str, batch: int, poll_ms: int, busy_timeout_ms: int
    ) -> None:
        self._db = _Db(path, busy_timeout_ms)
        self._table = table
        self._consumer = consumer
        self._batch = batch
        self._poll_s = poll_ms / 1000
        self._paused = False
        self._connected = False
        self._epoch = 0
        self._cursor = 0  # every row up to this id is acknowledged
        self._stored = 0  # the cursor as stored in the file
        self._read_after = 0  # the highest id handed out
        self._out: deque[_Row] = deque()  # rows handed out, in id order, until acknowledged
        self._again: deque[_Row] = deque()  # nacked rows, to hand out before new ones

    async def start(self) -> None:
        if self._connected:
            return
        await self._db.open(self._table)
        self._cursor = self._stored = await self._db.run(self._load_cursor)
        self._read_after = self._cursor
        self._out.clear()
        self._again.clear()
        self._epoch += 1
        self._connected = True

    def _load_cursor(self) -> int:
        conn = self._db.conn
        assert conn is not None
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_CURSORS} (consumer TEXT NOT NULL, "
            "source_table TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (consumer, source_table))"
        )
        row = conn.execute(
            f"SELECT id FROM {_CURSORS} WHERE consumer = ? AND source_table = ?",
            (self._consumer, self._table),
        ).fetchone()
        return int(row[0]) if row else 0

    def _store_cursor(self, cursor: int) -> None:
        conn = self._db.conn
        assert conn is not None
        conn.execute(
            f"INSERT INTO {_CURSORS} (consumer, source_table, id) VALUES (?, ?, ?) "
            "ON CONFLICT (consumer, source_table) DO UPDATE SET id = excluded.id",
            (self._consumer, self._table, cursor),
        )

    def _read(self, cursor: int | None, after: int, limit: int) -> list[_Row]:
        """Store the cursor (when it moved), then read the rows after ``after``."""
        conn = self._db.conn
        assert conn is not None
        if cursor is not None:
            self._store_cursor(cursor)
        rows = conn.execute(
            f"SELECT id, payload, key, headers FROM {_quote(self._table)} "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [
            _Row(int(i), bytes(p), None if k is None else bytes(k), decode_headers(h))
            for i, p, k, h in rows
        ]

    async def next_batch(self, max_records: int, timeout_s: float = 0.0) -> list[Record]:
        if not self._connected or self._paused:
            return []
        if self._again:  # nacked rows first, in the order they were nacked
            again = [self._again.popleft() for _ in range(min(max_records, len(self._again)))]
            return [self._record(row) for row in again]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            cursor = self._cursor if self._cursor != self._stored else None
            limit = min(max_records, self._batch)
            rows = await self._db.run(self._read, cursor, self._read_after, limit)
            if cursor is not None:
                self._stored = cursor
            if rows or self._paused or not self._connected:
                break
            left = deadline - loop.time()
            if left <= 0:
                return []
            await asyncio.sleep(min(self._poll_s, left))
        if rows:
            self._out.extend(rows)
            self._read_after = rows[-1].id
        return [self._record(row) for row in rows]

    def _record(self, row: _Row) -> Record:
        return Record(row.payload, row.key, row.headers, row.id, _RowAck(self, row, self._epoch))

    def _settle(self, row: _Row, ok: bool, epoch: int) -> None:
        if epoch != self._epoch:
            return  # handed out before a stop: the stored cursor decides what comes again
        if not ok:
            self._again.append(row)  # it keeps its place in _out: the cursor waits for it
            return
        row.acked = True
        out = self._out
        while out and out[0].acked:
            self._cursor = out.popleft().id

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    async def stop(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self._epoch += 1
        try:
            if self._cursor != self._stored:
                await self._db.run(self._store_cursor, self._cursor)
                self._stored = self._cursor
        finally:
            await self._db.close()

    def health(self) -> Health:
        return Health(connected=self._connected, detail=f"cursor {self._cursor}")


class SqliteSink(Sink):
    """Appends each batch to ``table`` in one transaction."""

    def __init__(self, path: str, table: str, busy_timeout_ms: int) -> None:
        self._db = _Db(path, busy_timeout_ms)
        self._table = table
        self._connected = False
        self.written = 0

    async def start(self) -> None:
        if not self._connected:
            await self._db.open(self._table)
            self._connected = True

    def _insert(self, rows: list[tuple[bytes, bytes | None, bytes | None]]) -> None:
        conn = self._db.conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")  # the write lock now, or SQLITE_BUSY after the timeout
        try:
            conn.executemany(
                f"INSERT INTO {_quote(self._table)} (payload, key, headers) VALUES (?, ?, ?)",
                rows,
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def write_batch(self, records: Sequence[OutRecord]) -> None:
        rows = [(r.payload, r.key, encode_headers(r.headers)) for r in records]
        await self._db.run(self._insert, rows)
        self.written += len(rows)

    async def stop(self) -> None:
        if self._connected:
            self._connected = False
            await self._db.close()

    def health(self) -> Health:
        return Health(connected=self._connected, detail=f"{self.written} rows written")


class SqliteAdapter(Adapter):
    name = "sqlite"
    summary = "a table of an SQLite file (an example third-party adapter)"
    config = ConfigSchema(
        "sqlite",
        (
            ConfigField("path", str, doc="the database file (created when missing)"),
            ConfigField("table", str, doc="the table read or written (created when missing)"),
            ConfigField("consumer", str, "byteor", "source: the name its cursor is stored under"),
            ConfigField("batch", int, 500, "source: most rows per read"),
            ConfigField("poll_ms", int, 100, "source: how often to look for new rows when idle"),
            ConfigField("busy_timeout_ms", int, 5000, "wait this long for another writer's lock"),
        ),
    )
    capabilities = Capabilities(
        source=Delivery("at-least-once", "total", "cursor stored after every sink confirmed"),
        sink=Delivery("at-least-once", "total", "one transaction per batch"),
        max_batch=10_000,
        backpressure="pause",
    )

    def make_source(self, config: Mapping[str, ConfigValue]) -> Source:
        return SqliteSource(
            str(config["path"]),
            str(config["table"]),
            str(config["consumer"]),
            int(config["batch"]),
            int(config["poll_ms"]),
            int(config["busy_timeout_ms"]),
        )

    def make_sink(self, config: Mapping[str, ConfigValue]) -> Sink:
        return SqliteSink(str(config["path"]), str(config["table"]), int(config["busy_timeout_ms"]))
