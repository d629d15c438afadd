"""The segment layout: alignment, sizes, the layout fingerprint and region geometry."""

from __future__ import annotations

import ctypes
import itertools
import zlib
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byteor.lanes import layout as L

STRUCTS = (L.SegmentHeader, L.ProducerBlock, L.ConsumerBlock, L.SlotDescriptor)
ALL_FIELDS = [(s, name) for s in STRUCTS for name, _ in s._fields_]


def _scalar_size(ctype: type) -> int:
    while issubclass(ctype, ctypes.Array):
        ctype = ctype._type_
    return ctypes.sizeof(ctype)


# -- structures -----------------------------------------------------------------------------


def test_structure_sizes() -> None:
    assert ctypes.sizeof(L.SegmentHeader) == 4 * L.CACHE_LINE
    assert ctypes.sizeof(L.ProducerBlock) == 2 * L.CACHE_LINE
    assert ctypes.sizeof(L.ConsumerBlock) == 2 * L.CACHE_LINE
    assert ctypes.sizeof(L.SlotDescriptor) == 16


@pytest.mark.parametrize("struct", STRUCTS, ids=lambda s: s.__name__)
def test_fields_tile_the_structure(struct: type[ctypes.Structure]) -> None:
    """No hole, no overlap: each field starts where the previous one ends."""
    end = 0
    for name, _ in struct._fields_:
        desc = getattr(struct, name)
        assert desc.offset == end, f"{struct.__name__}.{name}"
        end += desc.size
    assert end == ctypes.sizeof(struct)


@pytest.mark.parametrize(("struct", "name"), ALL_FIELDS, ids=lambda x: getattr(x, "__name__", x))
def test_fields_are_naturally_aligned(struct: type[ctypes.Structure], name: str) -> None:
    """What lets the C header use plain structs (no packing) and 8-byte atomic cursors."""
    ctype = dict(struct._fields_)[name]
    assert getattr(struct, name).offset % _scalar_size(ctype) == 0


def test_cursors_start_their_cache_line() -> None:
    assert L.ProducerBlock.cursor.offset == 0
    assert L.ConsumerBlock.cursor.offset == 0
    assert L.ProducerBlock.consumer_sleeping.offset == L.CACHE_LINE
    # Consumers write nothing on the producer's cursor line; registration lives on line 1.
    assert L.ConsumerBlock.name.offset == L.CACHE_LINE
    g = L.Geometry(64, 64, L.MAX_CONSUMERS)
    cursors = [g.producer_offset + L.ProducerBlock.cursor.offset]
    cursors += [g.consumer_offset(i) + L.ConsumerBlock.cursor.offset for i in range(64)]
    assert all(c % L.CACHE_LINE == 0 for c in cursors)


def test_header_identity_line() -> None:
    assert L.SegmentHeader.magic.offset == 0
    assert len(L.MAGIC) == L.SegmentHeader.magic.size
    assert L.HEADER_CRC_SPAN == L.CACHE_LINE == L.SegmentHeader.header_crc.offset
    # Everything that decides geometry is inside the checksummed line.
    for name in (
        "abi_version",
        "kind",
        "layout_id",
        "capacity",
        "slot_bytes",
        "max_consumers",
        "total_bytes",
    ):
        field = getattr(L.SegmentHeader, name)
        assert field.offset + field.size <= L.HEADER_CRC_SPAN, name


def test_header_crc_is_zlib_crc32_of_line_zero() -> None:
    raw = bytes(range(256)) * 2
    assert L.header_crc(raw) == zlib.crc32(raw[:64])
    assert L.header_crc(raw) == L.header_crc(raw[:64] + b"\xff" * 64)


# -- layout fingerprint ---------------------------------------------------------------------


def _with_field(
    struct: type[ctypes.Structure], old: str, new: str, ctype: type | None = None
) -> type[ctypes.Structure]:
    fields = [
        (new if n == old else n, ctype if (n == old and ctype) else t) for n, t in struct._fields_
    ]
    return type(struct.__name__, (ctypes.LittleEndianStructure,), {"_pack_": 1, "_fields_": fields})


def test_fingerprint_is_stable() -> None:
    assert L._layout_fingerprint() == L.LAYOUT_ID
    assert 0 <= L.LAYOUT_ID <= 0xFFFFFFFF


def test_fingerprint_of_an_identical_copy_is_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    for struct in STRUCTS:  # rebuilt field by field, nothing changed
        monkeypatch.setattr(L, struct.__name__, _with_field(struct, "", ""))
    assert L._layout_fingerprint() == L.LAYOUT_ID


@pytest.mark.parametrize(("struct", "name"), ALL_FIELDS, ids=lambda x: getattr(x, "__name__", x))
def test_renaming_any_field_changes_layout_id(
    monkeypatch: pytest.MonkeyPatch, struct: type[ctypes.Structure], name: str
) -> None:
    monkeypatch.setattr(L, struct.__name__, _with_field(struct, name, name + "_renamed"))
    assert L._layout_fingerprint() != L.LAYOUT_ID


def test_resizing_a_field_changes_layout_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        L, "SlotDescriptor", _with_field(L.SlotDescriptor, "length", "length", ctypes.c_uint16)
    )
    assert L._layout_fingerprint() != L.LAYOUT_ID


def _load_copy(source: str) -> ModuleType:
    module = ModuleType("byteor_layout_copy")
    exec(compile(source, "layout_copy.py", "exec"), module.__dict__)
    return module


def test_modified_copy_of_layout_module_gets_another_id() -> None:
    source = Path(L.__file__).read_text(encoding="utf-8")
    assert _load_copy(source).LAYOUT_ID == L.LAYOUT_ID
    renamed = source.replace('("lost", ctypes.c_uint64)', '("lost_count", ctypes.c_uint64)')
    assert renamed != source, "the field this test renames moved; pick another"
    assert _load_copy(renamed).LAYOUT_ID != L.LAYOUT_ID


# -- geometry -------------------------------------------------------------------------------


def _regions(g: L.Geometry) -> list[tuple[str, int, int]]:
    return [
        ("header", 0, ctypes.sizeof(L.SegmentHeader)),
        ("producer", g.producer_offset, g.producer_offset + ctypes.sizeof(L.ProducerBlock)),
        (
            "consumers",
            g.consumers_offset,
            g.consumers_offset + g.max_consumers * ctypes.sizeof(L.ConsumerBlock),
        ),
        (
            "descriptors",
            g.descriptors_offset,
            g.descriptors_offset + g.capacity * ctypes.sizeof(L.SlotDescriptor),
        ),
        ("payloads", g.payloads_offset, g.payloads_offset + g.capacity * g.slot_bytes),
    ]


def _check_geometry(capacity: int, slot_bytes: int, max_consumers: int) -> None:
    g = L.Geometry(capacity, slot_bytes, max_consumers)
    regions = _regions(g)
    for name, start, _ in regions:
        assert start % L.CACHE_LINE == 0, name
    for (a, _, a_end), (b, b_start, _) in itertools.pairwise(regions):
        assert a_end <= b_start, f"{a} overlaps {b}"
    payload_end = regions[-1][2]
    assert g.total_bytes % L.CACHE_LINE == 0
    assert payload_end <= g.total_bytes < payload_end + L.CACHE_LINE
    for i in range(max_consumers):
        off = g.consumer_offset(i)
        assert off % L.CACHE_LINE == 0
        assert regions[2][1] <= off and off + ctypes.sizeof(L.ConsumerBlock) <= regions[2][2]


@pytest.mark.parametrize(
    ("capacity", "slot_bytes", "max_consumers"),
    [(2, 8, 1), (64, 64, 4), (1024, 1024, 64), (L.MAX_CAPACITY, L.MAX_SLOT_BYTES, 64)],
)
def test_geometry_examples(capacity: int, slot_bytes: int, max_consumers: int) -> None:
    _check_geometry(capacity, slot_bytes, max_consumers)


def test_geometry_pinned() -> None:
    """The offsets the layout diagram draws."""
    g = L.Geometry(64, 64, 4)
    assert (g.producer_offset, g.consumers_offset) == (256, 384)
    assert (g.descriptors_offset, g.payloads_offset, g.total_bytes) == (896, 1920, 6016)


@given(
    capacity=st.integers(1, 24).map(lambda k: 1 << k),
    slot_bytes=st.integers(1, L.MAX_SLOT_BYTES // 8).map(lambda n: n * 8),
    max_consumers=st.integers(1, L.MAX_CONSUMERS),
)
def test_regions_never_overlap(capacity: int, slot_bytes: int, max_consumers: int) -> None:
    _check_geometry(capacity, slot_bytes, max_consumers)
