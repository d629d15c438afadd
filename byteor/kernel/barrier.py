"""``SeqBarrier``: how far a stage may read, given the cursors of the stages before it.

A cursor is a count (the next sequence its owner will publish or read). A stage that reads
after stages ``A`` and ``B`` may read every sequence below ``min(cursor(A), cursor(B))``: that
minimum is the barrier. The cursors live wherever the caller keeps them (a shared-memory word
array, a list in a test); the barrier only indexes into them, so it does no I/O itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["CursorSource", "SeqBarrier"]


class CursorSource(Protocol):
    """Anything indexable by word position that yields the current cursor value there."""

    def __getitem__(self, index: int, /) -> int: ...


class SeqBarrier:
    """The minimum of a fixed set of upstream cursors."""

    __slots__ = ("_cursors", "_words")

    def __init__(self, cursors: CursorSource, words: Sequence[int]) -> None:
        if not words:
            raise ValueError("a SeqBarrier needs at least one upstream cursor")
        self._cursors = cursors
        self._words = tuple(words)

    @property
    def words(self) -> tuple[int, ...]:
        return self._words

    def available(self) -> int:
        """Every sequence below this value has been released by all upstream cursors."""
        c = self._cursors
        return min([c[w] for w in self._words])

    def slowest_word(self) -> int:
        """The upstream cursor that currently holds the barrier back (to wait on it)."""
        c = self._cursors
        return min(self._words, key=lambda w: c[w])

    def ready(self, seq: int) -> bool:
        """Whether sequence ``seq`` may be read."""
        return self.available() > seq
