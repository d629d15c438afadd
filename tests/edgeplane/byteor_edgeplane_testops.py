"""User ops for the EdgePlane tests, referred to as ``byteor_edgeplane_testops:<name>``.

(pytest puts this directory on sys.path, so the module imports by its bare name.)
"""

from __future__ import annotations

from byteor.kernel import StageError


def upper(record: bytes) -> bytes:
    return record.upper()


def twice(record: bytes) -> list[bytes]:
    return [record + b"/a", record + b"/b"]


def odd_only(record: bytes) -> bytes | None:
    """Keeps records whose number (after the last '-') is odd."""
    return record if int(record.rsplit(b"-", 1)[1]) % 2 else None


def reject_sevens(record: bytes) -> bytes | StageError:
    """Records whose number ends in 7 fail (routed to the error lane by the spec)."""
    if record.endswith(b"7"):
        return StageError("test.seven", "ends in 7")
    return record
