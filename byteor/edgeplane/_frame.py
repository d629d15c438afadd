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

Limits: a stamp runs 0 to 2**56-1 (a larger one would spill into the flags), a record has at
most 65,535 headers, a header name at most 65,535 bytes of UTF-8 (:func:`frame` and
:func:`join` raise :class:`ValueError` saying which). Reading a frame checks what it reads
against the frame's length: a frame whose metadata runs past its end, does not add up or has
unknown flags raises :class:`FrameError` (a ``ValueError``) naming its stamp and what is
wrong, never a ``struct.error`` or a record made of the next bytes. Only a bug (or a process
writing into the lanes) makes one; the edge-out stops with it, naming its lane.
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
    "FrameError",
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
_KNOWN: Final = KEY | HEADERS


class FrameError(ValueError):
    """A frame read off a lane is not one :func:`frame` makes (see the module docstring)."""


def _stamp_word(stamp: int, flags: int) -> bytes:
    if not 0 <= stamp <= STAMP_MASK:
        raise ValueError(f"stamp {stamp} is out of range: stamps run 0 to 2**56-1")
    return STAMP.pack(stamp | flags << 56)


def _corrupt(record: bytes | memoryview, what: str) -> FrameError:
    stamp = STAMP.unpack_from(record)[0] & STAMP_MASK if len(record) >= STAMP_BYTES else None
    return FrameError(f"corrupt frame at stamp {stamp} ({len(record)} bytes): {what}")


def _meta_end(record: bytes | memoryview) -> int:
    """Where a tagged frame's metadata ends (its payload starts), checked against its length."""
    flags, n = record[FLAGS_AT], len(record)
    if flags & ~_KNOWN or n < _META_AT:
        raise _bad_start(record)
    end: int = _META_AT + _U32.unpack_from(record, STAMP_BYTES)[0]
    if end > n:
        raise _corrupt(
            record,
            f"metadata of {end - _META_AT} bytes announced, only {n - _META_AT} bytes follow",
        )
    return end


def _bad_start(record: bytes | memoryview) -> FrameError:
    flags = record[FLAGS_AT]
    if flags & ~_KNOWN:
        return _corrupt(
            record, f"unknown flags 0x{flags:02x} (known: KEY 0x01, HEADERS 0x02); not a frame?"
        )
    return _corrupt(
        record, f"{len(record)} bytes long, too short for the metadata size its flags announce"
    )


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
        return _stamp_word(stamp, 0) + payload
    return join(stamp, encode_tag(key, headers), payload)


def join(stamp: int, tag: bytes, payload: bytes | memoryview) -> bytes:
    """The frame of ``payload`` with ``stamp`` and a tag from :func:`split` (or
    :func:`encode_tag`).

    Raises:
        ValueError: ``stamp`` is not in 0 .. 2**56-1.
    """
    if not tag:
        return _stamp_word(stamp, 0) + payload
    return _stamp_word(stamp, tag[0]) + tag[1:] + payload


def stamp_of(record: bytes | memoryview) -> int:
    """The stamp of a frame."""
    word: int = STAMP.unpack_from(record)[0]
    return word & STAMP_MASK


def tag(record: bytes | memoryview) -> bytes:
    """A frame's tag: its flags byte, ``M`` and metadata; ``b""`` when it has neither key nor
    headers."""
    if not record[FLAGS_AT]:
        return b""
    return bytes(record[FLAGS_AT : _meta_end(record)])


def payload_at(record: bytes | memoryview) -> int:
    """Where a frame's payload starts."""
    if not record[FLAGS_AT]:
        return STAMP_BYTES
    return _meta_end(record)


def split(record: bytes) -> tuple[bytes, bytes]:
    """A frame's tag (``b""`` for none) and payload."""
    if not record[FLAGS_AT]:
        return b"", record[STAMP_BYTES:]
    at = _meta_end(record)
    return record[FLAGS_AT:at], record[at:]


def payload_of(record: bytes | memoryview) -> bytes | memoryview:
    """A frame's payload (a view of a view)."""
    return record[payload_at(record) :]


def _decode_meta(
    flags: int, meta: bytes | memoryview, at: int, end: int
) -> tuple[bytes | None, Headers]:
    """The key and headers in ``meta[at:end]`` (``end`` within ``meta``)."""
    key: bytes | None = None
    try:
        if flags & KEY:
            (n,) = _U32.unpack_from(meta, at)
            at += 4
            if at + n > end:
                raise _corrupt(meta, _overrun(f"a key of {n} bytes", at, end))
            key = bytes(meta[at : at + n])
            at += n
        if not flags & HEADERS:
            if at != end:
                raise _corrupt(meta, _overrun("the key", at, end))
            return key, ()
        (count,) = _U16.unpack_from(meta, at)
        at += 2
        headers: list[tuple[str, bytes]] = []
        for i in range(count):
            (n,) = _U16.unpack_from(meta, at)
            at += 2
            if at + n + 4 > end:
                raise _corrupt(meta, _overrun(f"header {i}'s name of {n} bytes", at, end))
            try:
                name = bytes(meta[at : at + n]).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _corrupt(meta, f"header {i}'s name is not UTF-8 ({exc.reason})") from None
            at += n
            (n,) = _U32.unpack_from(meta, at)
            at += 4
            if at + n > end:
                raise _corrupt(meta, _overrun(f"header {i}'s value of {n} bytes", at, end))
            headers.append((name, bytes(meta[at : at + n])))
            at += n
    except struct.error:  # a size read past the metadata (it ends with the frame)
        raise _corrupt(meta, _overrun("a size", at, end)) from None
    if at != end:
        raise _corrupt(meta, _overrun(f"{count} header(s)", at, end))
    return key, tuple(headers)


def _overrun(what: str, at: int, end: int) -> str:
    return (
        f"its metadata does not add up: {what} at byte {at} of a frame whose metadata ends "
        f"at byte {end}"
    )


def out_record(record: bytes | memoryview) -> OutRecord:
    """What a sink writes for a frame: payload, key and headers (copied out of the lane).

    Raises:
        FrameError: the frame is corrupt (see the module docstring).
    """
    flags = record[FLAGS_AT]
    if not flags:
        return OutRecord(bytes(record[STAMP_BYTES:]))
    end = _meta_end(record)
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
