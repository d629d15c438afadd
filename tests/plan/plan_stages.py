"""Module-level stage functions for the builder tests (executors import ops by module:name)."""

from __future__ import annotations


def upper(record: bytes) -> bytes:
    return record.upper()


def tag(record: bytes) -> bytes:
    return b"tag:" + record
