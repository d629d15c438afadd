"""IO-free hot-loop primitives: no asyncio, sockets, mmap, threads, logging or clock reads."""

from __future__ import annotations

from byteor.kernel.barrier import CursorSource, SeqBarrier

__all__ = ["CursorSource", "SeqBarrier"]
