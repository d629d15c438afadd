"""Set up, feed and read back the custom stage and adapter example (SQLite, no server).

    python examples/custom_stage_and_adapter/demo.py seed 1000   # 1000 payments
    python examples/custom_stage_and_adapter/demo.py show        # the masked table
    python examples/custom_stage_and_adapter/demo.py cursor      # the source's cursor

It reads the same variables as ``pipeline.toml`` (``PAYMENTS_DB``, ``PAYMENTS_TABLE``,
``MASKED_TABLE``) with the same defaults, and its functions are what the example's test
uses to drive the pipeline. The tables are the ``sqlite`` adapter's shape (its module
docstring); this script writes and reads them with the standard library's ``sqlite3``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from collections.abc import Mapping


def settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The example's paths and names: the variables of ``pipeline.toml``, or defaults."""

    def get(name: str, default: str) -> str:
        return env.get(name) or default

    return {
        "db": get("PAYMENTS_DB", "payments.db"),
        "table": get("PAYMENTS_TABLE", "payments"),
        "masked": get("MASKED_TABLE", "payments_masked"),
        "consumer": "masker",  # the plan's source.payments.param.consumer
    }


def payment(i: int) -> bytes:
    """The ``i``-th sample payment: an account, an amount and a card number."""
    digits = f"{4000_0000_0000_0000 + i * 7919:016d}"
    card = " ".join(digits[j : j + 4] for j in range(0, 16, 4))
    doc = {"payment": i, "account": f"acct-{i % 12}", "cents": 100 + i * 37 % 9000, "card": card}
    return json.dumps(doc, separators=(",", ":")).encode()


def _connect(s: Mapping[str, str]) -> sqlite3.Connection:
    conn = sqlite3.connect(s["db"], timeout=5, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def seed(s: Mapping[str, str], count: int) -> list[bytes]:
    """Append ``count`` payments to the source table (created when missing); returns them."""
    payloads = [payment(i) for i in range(count)]
    conn = _connect(s)
    try:
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{s["table"]}" (id INTEGER PRIMARY KEY AUTOINCREMENT, '
            "payload BLOB NOT NULL, key BLOB, headers BLOB)"
        )
        conn.execute("BEGIN")
        conn.executemany(
            f'INSERT INTO "{s["table"]}" (payload, key) VALUES (?, ?)',
            [(p, json.loads(p)["account"].encode()) for p in payloads],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return payloads


def _select(s: Mapping[str, str], sql: str, table: str) -> list[tuple[object, ...]]:
    conn = _connect(s)
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return conn.execute(sql).fetchall() if exists else []
    finally:
        conn.close()


def masked(s: Mapping[str, str]) -> list[bytes]:
    """The sink table's payloads in insertion order."""
    rows = _select(s, f'SELECT payload FROM "{s["masked"]}" ORDER BY id', s["masked"])
    return [bytes(r[0]) for r in rows]  # type: ignore[call-overload]


def masked_count(s: Mapping[str, str]) -> int:
    rows = _select(s, f'SELECT count(*) FROM "{s["masked"]}"', s["masked"])
    return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]


def cursor(s: Mapping[str, str]) -> tuple[int | None, int]:
    """The source's stored cursor (``None``: none yet) and the source table's last id."""
    stored = _select(
        s,
        "SELECT id FROM byteor_cursors WHERE consumer = "
        f"'{s['consumer']}' AND source_table = '{s['table']}'",
        "byteor_cursors",
    )
    last = _select(s, f'SELECT max(id) FROM "{s["table"]}"', s["table"])
    return (
        int(stored[0][0]) if stored else None,  # type: ignore[call-overload]
        int(last[0][0] or 0) if last else 0,  # type: ignore[call-overload]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("seed", help="append payments").add_argument(
        "count", type=int, nargs="?", default=1000
    )
    sub.add_parser("show", help="print the masked table")
    sub.add_parser("cursor", help="the source's stored cursor")
    args = parser.parse_args()
    s = settings()
    if args.command == "seed":
        seed(s, args.count)
        print(f"appended {args.count} payments to {s['db']}:{s['table']}")
    elif args.command == "show":
        got = masked(s)
        for payload in got[:3]:
            print(payload.decode())
        print(f"... {len(got)} rows in {s['db']}:{s['masked']}")
    else:
        stored, last = cursor(s)
        print(f"consumer {s['consumer']}: cursor {stored}, last row {last}")


if __name__ == "__main__":
    main()
