"""What the adapter tests check of a source's :class:`RecordBatch`: the three records of
:data:`MIXED` (a key and headers on the middle one only), read as columns.

Imported as ``from _batches import ...`` (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Sequence

from byteor.adapters import OutRecord, Record, RecordBatch

__all__ = ["MIXED", "mixed_columns"]

#: Three records, only the middle one with a key and headers.
MIXED = [OutRecord(b"a"), OutRecord(b"b", b"k", (("h", b"v"),)), OutRecord(b"c")]


def mixed_columns(got: Sequence[Record], positions: Sequence[object]) -> RecordBatch:
    """``got``, checked to be a RecordBatch of :data:`MIXED`'s records as columns (keys and
    headers given, since one record has them) at ``positions``."""
    assert isinstance(got, RecordBatch), f"a {type(got).__name__}, not a RecordBatch"
    assert got.payloads == [b"a", b"b", b"c"] and got.keys == [None, b"k", None]
    assert got.headers == [(), (("h", b"v"),), ()] and list(got.positions) == list(positions)
    return got
