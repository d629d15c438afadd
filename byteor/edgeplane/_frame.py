"""How a record travels on an EdgePlane lane: its stamp, its key and headers, its payload.

Theory of operation
-------------------
Every frame starts with one 8-byte little-endian word. Its low 56 bits are the record's *low
stamp* (:mod:`byteor.edgeplane._edge`: an ingress sequence; 2**56 records is more than any
run admits), its top byte says what follows:

====================  =========================================================================
top byte              the frame
====================  =========================================================================
``0``                 ``word | payload``: the record has no key and no headers
``KEY``/``HEADERS``   ``word | u32 M | M bytes of metadata | payload``
====================  =========================================================================

The metadata holds, in this order, the key when ``KEY`` is set (``u32 length | key``; an
empty key is a key) and the headers when ``HEADERS`` is set (``u16 count``, then per header
``u16 name length | name (UTF-8) | u32 value length | value``), all little-endian.

Why this shape:

* A record with neither key nor headers costs nothing: its frame is the stamp and the
  payload, as before keys travelled, and whoever looks at it reads one byte (``frame[7]``)
  to know.
* ``M`` up front makes splitting a frame one unpack, however many headers it has: a stage
  carries a record's metadata to its outputs as the *tag* (``frame[7 : 12 + M]``: the top
  byte, ``M`` and the metadata) without decoding it, and only an edge-out turns it back
  into a key and headers for the sink's :class:`~byteor.adapters.OutRecord`.
* Key and headers take room in the lane's slot along with the payload (the lane's
  ``slot_bytes`` bounds payload + metadata; a record that does not fit is refused where it
  enters the lane, with its size).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from operator import itemgetter
from typing import Final

from byteor.adapters import Headers, OutRecord

__all__ = [
    "STAMP",
    "STAMP_BYTES",
    "STAMP_MASK",
    "KEY",
    "HEADERS",
    "FLAGS_AT",
    "flags_of",
    "frame",
    "tag",
    "encode_tag",
    "stamp_of",
    "split",
    "join",
    "payload_of",
    "payload_at",
    "out_record",
    "with_key",
    "any_tagged",
]

#: The frame's first word (stamp and flags), little-endian.
STAMP: Final = struct.Struct("<Q")
STAMP_BYTES: Final = STAMP.size
STAMP_MASK: Final = (1 << 56) - 1
#: Bits of the word's top byte (``frame[FLAGS_AT]``).
KEY: Final = 0x01
HEADERS: Final = 0x02
FLAGS_AT: Final = 7
#: ``flags_of(frame)``: the top byte of a frame's word (0: no key, no headers).
flags_of: Final = itemgetter(FLAGS_AT)

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_META_AT: Final = STAMP_BYTES + _U32.size  # where the metadata starts (when there is some)
_MAX_U16: Final = 0xFFFF


def encode_tag(key: bytes | None, headers: Headers) -> bytes:
    """The tag of a record with ``key`` and ``headers``: flags byte, ``u32 M``, metadata;
    ``b""`` when it has neither.

    Raises:
        ValueError: more than 65,535 headers, or a header name longer than 65,535 bytes.
    """
    flags = 0
    parts: list[bytes] = []
    if key is not None:
        flags = KEY
        parts += (_U32.pack(len(key)), key)
    if headers:
        flags |= HEADERS
        if len(headers) > _MAX_U16:
            raise ValueError(f"a record has {len(headers)} headers; lanes carry at most 65,535")
        parts.append(_U16.pack(len(headers)))
        for name, value in headers:
            raw = name.encode("utf-8")
            if len(raw) > _MAX_U16:
                raise ValueError(
                    f"a header name is {len(raw)} bytes long; lanes carry at most 65,535"
                )
            parts += (_U16.pack(len(raw)), raw, _U32.pack(len(value)), value)
    if not flags:
        return b""
    meta = b"".join(parts)
    return bytes((flags,)) + _U32.pack(len(meta)) + meta


def frame(stamp: int, payload: bytes, key: bytes | None = None, headers: Headers = ()) -> bytes:
    """A record's frame (see the module docstring)."""
    if key is None and not headers:
        return STAMP.pack(stamp) + payload
    return join(stamp, encode_tag(key, headers), payload)


def join(stamp: int, tag: bytes, payload: bytes | memoryview) -> bytes:
    """The frame of ``payload`` with ``stamp`` and a tag from :func:`split` (or
    :func:`encode_tag`)."""
    if not tag:
        return STAMP.pack(stamp) + payload
    return STAMP.pack(stamp | tag[0] << 56) + tag[1:] + payload


def stamp_of(record: bytes | memoryview) -> int:
    """The stamp of a frame."""
    word: int = STAMP.unpack_from(record)[0]
    return word & STAMP_MASK


def tag(record: bytes | memoryview) -> bytes:
    """A frame's tag: its flags byte, ``M`` and metadata; ``b""`` when it has neither key nor
    headers."""
    if not record[FLAGS_AT]:
        return b""
    (size,) = _U32.unpack_from(record, STAMP_BYTES)
    return bytes(record[FLAGS_AT : _META_AT + size])


def payload_at(record: bytes | memoryview) -> int:
    """Where a frame's payload starts."""
    if not record[FLAGS_AT]:
        return STAMP_BYTES
    (size,) = _U32.unpack_from(record, STAMP_BYTES)
    return _META_AT + int(size)


def split(record: bytes) -> tuple[bytes, bytes]:
    """A frame's tag (``b""`` for none) and payload."""
    if not record[FLAGS_AT]:
        return b"", record[STAMP_BYTES:]
    (size,) = _U32.unpack_from(record, STAMP_BYTES)
    at = _META_AT + size
    return record[FLAGS_AT:at], record[at:]


def payload_of(record: bytes | memoryview) -> bytes | memoryview:
    """A frame's payload (a view of a view)."""
    return record[payload_at(record) :]


def _decode_meta(
    flags: int, meta: bytes | memoryview, at: int, end: int
) -> tuple[bytes | None, Headers]:
    key: bytes | None = None
    if flags & KEY:
        (n,) = _U32.unpack_from(meta, at)
        at += 4
        key = bytes(meta[at : at + n])
        at += n
    if not flags & HEADERS:
        return key, ()
    (count,) = _U16.unpack_from(meta, at)
    at += 2
    headers: list[tuple[str, bytes]] = []
    for _ in range(count):
        (n,) = _U16.unpack_from(meta, at)
        at += 2
        name = bytes(meta[at : at + n]).decode("utf-8")
        at += n
        (n,) = _U32.unpack_from(meta, at)
        at += 4
        headers.append((name, bytes(meta[at : at + n])))
        at += n
    if at != end:
        raise ValueError("a frame's metadata does not add up")
    return key, tuple(headers)


def out_record(record: bytes | memoryview) -> OutRecord:
    """What a sink writes for a frame: payload, key and headers (copied out of the lane)."""
    flags = record[FLAGS_AT]
    if not flags:
        return OutRecord(bytes(record[STAMP_BYTES:]))
    (size,) = _U32.unpack_from(record, STAMP_BYTES)
    end = _META_AT + size
    key, headers = _decode_meta(flags, record, _META_AT, end)
    return OutRecord(bytes(record[end:]), key, headers)


def with_key(old: bytes, key: bytes) -> bytes:
    """A tag with ``key`` as its key and ``old``'s headers (``old`` from :func:`split`)."""
    headers = b""
    flags = KEY
    if old:
        flags |= old[0] & HEADERS
        at = 1 + _U32.size
        if old[0] & KEY:
            (n,) = _U32.unpack_from(old, at)
            at += 4 + n
        headers = old[at:]
    meta = _U32.pack(len(key)) + key + headers
    return bytes((flags,)) + _U32.pack(len(meta)) + meta


def any_tagged(records: Sequence[bytes | memoryview]) -> bool:
    """Whether any frame of ``records`` has a key or headers (one C-level pass)."""
    return any(map(flags_of, records))
