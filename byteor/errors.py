"""The one exception root of ByteOr.

Every error the package raises on purpose derives from :class:`ByteorError`, so a caller
can catch the whole family with one ``except``. Each layer adds its own branch::

    ByteorError
    ├── LaneError                      byteor.lanes   (IndexBus transport)
    │   ├── AttachError                segment failed validation on attach
    │   │   ├── SegmentNotFound
    │   │   ├── SegmentTruncated
    │   │   ├── BadMagic / BadVersion / BadKind
    │   │   ├── BadGeometry / BadChecksum / CursorOutOfRange
    │   │   └── ForeignSegment          created by another user
    │   ├── WouldBlock                 the non-blocking call could not proceed
    │   ├── LaneTimeout                a blocking call ran out of time
    │   ├── MessageTooLarge
    │   ├── ConsumerError              no free consumer line, unknown name, wrong role
    │   ├── LaneClosed
    │   └── UnsupportedPlatform        the lock-free path is unsafe on this CPU
    └── (spec, plan, exec and adapter branches are added by their packages)

Messages say what is wrong and what to do about it.
"""

from __future__ import annotations

__all__ = ["ByteorError"]


class ByteorError(Exception):
    """Root of every error ByteOr raises on purpose."""
