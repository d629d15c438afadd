"""Frames on EdgePlane lanes (``byteor.edgeplane._frame``): every way of building and reading
one agrees, for any payload, key and headers (hypothesis); the limits and corrupt frames fail
with messages that say what is wrong."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byteor.adapters import OutRecord
from byteor.edgeplane._frame import (
    HEADERS,
    KEY,
    STAMP,
    STAMP_MASK,
    FrameError,
    any_tagged,
    encode_tag,
    flags_of,
    frame,
    join,
    out_record,
    payload_at,
    payload_of,
    split,
    stamp_of,
    tag,
    with_key,
)

_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

stamps = st.one_of(st.integers(0, STAMP_MASK), st.sampled_from([0, 1, STAMP_MASK]))
payloads = st.binary(max_size=64)
keys = st.one_of(st.none(), st.just(b""), st.binary(max_size=32))
header_names = st.text(max_size=12)  # any unicode, the empty name included
headers = st.lists(st.tuples(header_names, st.binary(max_size=16)), max_size=6).map(tuple)


def _flags(key: bytes | None, hdrs: tuple[tuple[str, bytes], ...]) -> int:
    return (KEY if key is not None else 0) | (HEADERS if hdrs else 0)


@_SETTINGS
@given(stamps, payloads, keys, headers)
def test_every_reading_of_a_frame_gives_back_what_built_it(
    stamp: int, payload: bytes, key: bytes | None, hdrs: tuple[tuple[str, bytes], ...]
) -> None:
    f = frame(stamp, payload, key, hdrs)
    t, p = split(f)
    assert p == payload and t == tag(f) == encode_tag(key, hdrs)
    assert join(stamp, t, payload) == f
    assert stamp_of(f) == stamp_of(memoryview(f)) == stamp
    assert flags_of(f) == _flags(key, hdrs)
    assert bytes(payload_of(f)) == bytes(payload_of(memoryview(f))) == payload
    assert payload_at(f) == len(f) - len(payload)
    want = OutRecord(payload, key, hdrs)
    assert out_record(f) == out_record(memoryview(f)) == want
    assert any_tagged([frame(0, b"x"), f]) == bool(_flags(key, hdrs))


@_SETTINGS
@given(stamps, payloads)
def test_a_frame_without_key_or_headers_is_the_stamp_and_the_payload(
    stamp: int, payload: bytes
) -> None:
    f = frame(stamp, payload)
    assert f == STAMP.pack(stamp) + payload == frame(stamp, payload, None, ())
    assert split(f) == (b"", payload) and tag(f) == b"" and encode_tag(None, ()) == b""
    assert join(stamp, b"", payload) == f and flags_of(f) == 0
    assert out_record(f) == OutRecord(payload)


@_SETTINGS
@given(stamps, stamps, payloads, keys, headers, st.binary(max_size=32))
def test_with_key_replaces_the_key_and_keeps_the_headers(
    s1: int,
    s2: int,
    payload: bytes,
    key: bytes | None,
    hdrs: tuple[tuple[str, bytes], ...],
    new: bytes,
) -> None:
    old, _ = split(frame(s1, payload, key, hdrs))
    t = with_key(old, new)
    assert t == encode_tag(new, hdrs)
    f = join(s2, t, payload)
    assert out_record(f) == OutRecord(payload, new, hdrs) and stamp_of(f) == s2


def test_a_frame_reads_the_same_from_a_larger_buffer() -> None:
    """The lanes hand out views of their slots: a frame's end is its view's end."""
    f = frame(9, b"body", b"k", (("h", b"v"),))
    buf = memoryview(b"junk" + f + b"more")[4 : 4 + len(f)]
    assert out_record(buf) == OutRecord(b"body", b"k", (("h", b"v"),))
    assert bytes(payload_of(buf)) == b"body" and stamp_of(buf) == 9


def test_empty_keys_names_and_values_are_kept_apart_from_none() -> None:
    f = frame(3, b"", b"", (("", b""), ("é€😀", b"")))
    assert out_record(f) == OutRecord(b"", b"", (("", b""), ("é€😀", b"")))
    assert flags_of(f) == KEY | HEADERS
    assert out_record(frame(3, b"", None, (("", b""),))).key is None


def test_the_limits_raise_value_error_saying_what_and_how_much() -> None:
    with pytest.raises(ValueError, match=r"65536 headers; lanes carry at most 65,535"):
        frame(0, b"", None, (("h", b""),) * 65_536)
    assert len(out_record(frame(0, b"", None, (("h", b""),) * 65_535)).headers) == 65_535
    with pytest.raises(ValueError, match=r"header name is 65536 bytes long.*at most 65,535"):
        frame(0, b"", None, (("n" * 65_536, b""),))
    long_name = "é" * (65_535 // 2)  # 65,534 bytes of UTF-8: fits
    assert out_record(frame(0, b"", None, ((long_name, b"v"),))).headers == ((long_name, b"v"),)
    with pytest.raises(ValueError, match=r"header name is 65536 bytes long"):
        frame(0, b"", None, (("é" * 32_768, b""),))  # 32,768 characters, twice as many bytes
    for stamp in (STAMP_MASK + 1, 1 << 63, -1):
        with pytest.raises(ValueError, match=rf"stamp {stamp} .* 0 to 2\*\*56-1"):
            frame(stamp, b"p", b"k")
        with pytest.raises(ValueError, match=rf"stamp {stamp} "):
            frame(stamp, b"p")
        with pytest.raises(ValueError, match=rf"stamp {stamp} "):
            join(stamp, encode_tag(b"k", ()), b"p")


def _tagged_frame() -> bytes:
    return frame(77, b"payload", b"key", (("name", b"value"),))


def _with_meta_size(f: bytes, size: int) -> bytes:
    return f[:8] + struct.pack("<I", size) + f[12:]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        pytest.param(
            lambda f: _with_meta_size(f, len(f)), r"metadata of \d+ bytes.* only \d+", id="M-beyond"
        ),
        pytest.param(
            lambda f: _with_meta_size(f, 0xFFFFFFFF), r"metadata of 4294967295 bytes", id="M-huge"
        ),
        pytest.param(lambda f: f[:10], r"10 bytes long", id="cut-in-M"),
        pytest.param(lambda f: f[:20], r"metadata of \d+ bytes", id="cut-in-meta"),
        pytest.param(
            lambda f: _with_meta_size(f, 6), r"metadata does not add up", id="M-too-small"
        ),
        pytest.param(
            lambda f: _with_meta_size(f, 60), r"metadata does not add up|only", id="M-too-large"
        ),
        pytest.param(
            lambda f: f[:7] + bytes([0x04]) + f[8:], r"unknown flags 0x04", id="unknown-flag"
        ),
        pytest.param(
            lambda f: f[:12] + struct.pack("<I", 1000) + f[16:], r"does not add up", id="key-len"
        ),
        pytest.param(
            lambda f: f.replace(b"name", b"n\xffme"), r"header 0.s name is not UTF-8", id="bad-utf8"
        ),
    ],
)
def test_a_corrupt_frame_raises_frame_error_instead_of_garbage(
    corrupt: object, message: str
) -> None:
    bad = corrupt(_tagged_frame())  # type: ignore[operator]
    with pytest.raises(FrameError, match=message) as caught:
        out_record(bad)
    assert isinstance(caught.value, ValueError)
    assert "frame" in str(caught.value) and "stamp 77" in str(caught.value)


def test_payload_and_split_refuse_a_frame_whose_metadata_runs_past_its_end() -> None:
    bad = _with_meta_size(_tagged_frame(), 1000)
    for read in (payload_of, payload_at, split, tag):
        with pytest.raises(FrameError, match=r"metadata of 1000 bytes"):
            read(bad)  # type: ignore[operator]


@_SETTINGS
@given(stamps, payloads, keys, headers, st.data())
def test_any_cut_or_flipped_byte_reads_back_right_or_raises_frame_error(
    stamp: int,
    payload: bytes,
    key: bytes | None,
    hdrs: tuple[tuple[str, bytes], ...],
    data: st.DataObject,
) -> None:
    """A damaged frame never raises anything but FrameError (no struct.error, IndexError,
    UnicodeDecodeError) from out_record."""
    f = bytearray(frame(stamp, payload, key, hdrs))
    if data.draw(st.booleans()):
        f = f[: data.draw(st.integers(8, len(f)))]
    else:
        i = data.draw(st.integers(7, len(f) - 1)) if len(f) > 7 else 7
        if i < len(f):
            f[i] = data.draw(st.integers(0, 255))
    try:
        got = out_record(bytes(f))
    except FrameError:
        return
    assert isinstance(got, OutRecord)
