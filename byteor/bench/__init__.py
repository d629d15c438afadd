"""Benchmarks behind ``byteor bench ...``; each measures ByteOr against peers in the same run."""

from __future__ import annotations

__all__: list[str] = []
