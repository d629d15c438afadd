"""The lane branch of the error tree (drawn in ``byteor.errors``)."""

from __future__ import annotations

from byteor.errors import ByteorError

__all__ = [
    "LaneError",
    "AttachError",
    "SegmentNotFound",
    "SegmentExists",
    "SegmentTruncated",
    "BadMagic",
    "BadVersion",
    "BadKind",
    "BadGeometry",
    "BadChecksum",
    "CursorOutOfRange",
    "ForeignSegment",
    "CorruptSlot",
    "WouldBlock",
    "LaneTimeout",
    "MessageTooLarge",
    "ConsumerError",
    "LaneClosed",
    "UnsupportedPlatform",
]


class LaneError(ByteorError):
    """Root of every error raised by :mod:`byteor.lanes`."""


class AttachError(LaneError):
    """A segment failed validation on attach or create; the message names the problem."""


class SegmentNotFound(AttachError):
    pass


class SegmentExists(AttachError):
    pass


class SegmentTruncated(AttachError):
    pass


class BadMagic(AttachError):
    pass


class BadVersion(AttachError):
    pass


class BadKind(AttachError):
    pass


class BadGeometry(AttachError):
    pass


class BadChecksum(AttachError):
    pass


class CursorOutOfRange(AttachError):
    pass


class ForeignSegment(AttachError):
    pass


class CorruptSlot(LaneError):
    """A slot descriptor holds an impossible length: the segment was written by something else."""


class WouldBlock(LaneError):
    """The ``*_nowait`` call could not proceed without waiting (lane full or empty)."""


class LaneTimeout(LaneError, TimeoutError):
    """A blocking call ran out of time."""


class MessageTooLarge(LaneError, ValueError):
    pass


class ConsumerError(LaneError):
    """No free consumer line, an unknown consumer name, or a role already taken."""


class LaneClosed(LaneError):
    """The producer closed the lane and every message has been received."""


class UnsupportedPlatform(LaneError):
    """The lock-free shared-memory path relies on x86-64 store ordering; this CPU is not x86-64."""
