"""Generate ``include/byteor_v1.h``, the C view of a lane segment, from :mod:`.layout`.

The header is derived, never written by hand: structures come from walking each ctypes
structure's ``_fields_``, constants from the integer and byte constants that ``layout``
exports, and every field gets a ``_Static_assert`` on its offset (plus one on each structure's
size), so a C compiler refuses the header if the C view and the Python view ever disagree.
The geometry helpers are the only hand-written C; ``tests/lanes/test_c_reader.py`` compiles
them and compares them with :class:`~byteor.lanes.layout.Geometry` over many shapes.

Usage::

    python -m byteor.lanes.cheader            # (re)write include/byteor_v1.h
    python -m byteor.lanes.cheader --check    # exit 1 if the committed header is stale
    python -m byteor.lanes.cheader -o PATH    # write (or check) another path
"""

from __future__ import annotations

import argparse
import ctypes
import re
import sys
from pathlib import Path
from typing import Final

from byteor.lanes import layout as L

__all__ = ["COMMAND", "STRUCTS", "default_path", "render", "main"]

COMMAND: Final = "python -m byteor.lanes.cheader"

# The structures of a lane segment, in the order they appear in it, then a counters segment's.
STRUCTS: Final[tuple[type[ctypes.Structure], ...]] = (
    L.SegmentHeader,
    L.ProducerBlock,
    L.ConsumerBlock,
    L.SlotDescriptor,
    L.CountersHeader,
    L.NodeRow,
)

# ctypes simple-type codes: lowercase signed, uppercase unsigned (width from sizeof).
_UNSIGNED_CODES: Final = frozenset("BHILQ")
_SIGNED_CODES: Final = frozenset("bhilq")

# One comment above the first constant of each group, keyed by name prefixes.
_GROUPS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("KIND_",), "lane kinds (byteor_segment_header.kind)"),
    (("FLAG_",), "byteor_segment_header.flags bits"),
    (("STATE_",), "consumer line states (byteor_consumer_block.state)"),
    (("MIN_", "MAX_"), "limits (capacity: a power of two; slot_bytes: a multiple of 8)"),
    (("LAYOUT_ID",), "CRC of every field name, offset and size below"),
    (("HEADER_CRC_SPAN",), "header_crc covers segment bytes [0, BYTEOR_HEADER_CRC_SPAN)"),
    (("COUNTERS_",), "counters segments (byteor_counters_header, then rows x byteor_node_row)"),
    (("ROLE_",), "what a row counts (byteor_node_row.role)"),
    (("PHASE_",), "what a row's owner does now (byteor_node_row.phase)"),
)


def default_path() -> Path:
    """``include/byteor_v1.h`` at the root of the checkout this package lives in."""
    return Path(__file__).resolve().parents[2] / "include" / "byteor_v1.h"


def c_name(struct: type[ctypes.Structure]) -> str:
    """``SegmentHeader`` -> ``byteor_segment_header``."""
    return "byteor_" + re.sub(r"(?<!^)(?=[A-Z])", "_", struct.__name__).lower()


def _scalar(ctype: type) -> tuple[str, int]:
    """The C spelling and alignment of a ctypes scalar type."""
    code = getattr(ctype, "_type_", None)
    size = ctypes.sizeof(ctype)
    if code == "c":
        return "char", 1
    if isinstance(code, str) and code in _UNSIGNED_CODES | _SIGNED_CODES and size in (1, 2, 4, 8):
        prefix = "uint" if code in _UNSIGNED_CODES else "int"
        return f"{prefix}{size * 8}_t", size
    raise TypeError(f"no C spelling for ctypes type {ctype!r} in the lane layout")


def _declaration(name: str, ctype: type) -> tuple[str, int]:
    """``uint64_t cursor`` / ``char name[48]``, and the field's C alignment."""
    dims = ""
    while issubclass(ctype, ctypes.Array):
        length: int = getattr(ctype, "_length_")  # noqa: B009 - typeshed types the class loosely
        dims += f"[{length}]"
        ctype = getattr(ctype, "_type_")  # noqa: B009
    spelled, alignment = _scalar(ctype)
    return f"{spelled} {name}{dims}", alignment


def _render_struct(struct: type[ctypes.Structure]) -> list[str]:
    cname = c_name(struct)
    doc = (struct.__doc__ or "").strip().splitlines()[0]
    lines = [f"/* {struct.__name__}: {doc} */", f"typedef struct {cname} {{"]
    asserts: list[str] = []
    for entry in struct._fields_:
        if len(entry) != 2:
            raise TypeError(f"{struct.__name__}.{entry[0]}: bit fields have no portable C layout")
        field_name, ctype = entry[0], entry[1]
        desc = getattr(struct, field_name)
        decl, alignment = _declaration(field_name, ctype)
        if desc.offset % alignment:
            # Without this the C compiler would insert padding and the asserts below would fail;
            # say it here, where the fix (move the field) is obvious.
            raise ValueError(
                f"{struct.__name__}.{field_name} at offset {desc.offset} is not aligned to "
                f"{alignment}: C lays it out elsewhere; move it"
            )
        lines.append(f"    {decl + ';':<40}/* {desc.offset:4d} .. {desc.offset + desc.size:4d} */")
        asserts.append(
            f"_Static_assert(offsetof({cname}, {field_name}) == {desc.offset}, "
            f'"{struct.__name__}.{field_name} offset");'
        )
    size = ctypes.sizeof(struct)
    lines.append(f"}} {cname};")
    lines.extend(asserts)
    lines.append(f'_Static_assert(sizeof({cname}) == {size}, "sizeof {struct.__name__}");')
    lines.append("")
    return lines


def _c_int(value: int, hexadecimal: bool = False) -> str:
    suffix = "u" if value <= 0xFFFFFFFF else "ull"
    return (f"0x{value:08x}" if hexadecimal else str(value)) + suffix


def _render_constants() -> list[str]:
    """Every integer and byte-string constant ``layout`` exports, as ``BYTEOR_<NAME>``."""
    names = {f"KIND_{v.upper()}": v for v in L.KIND_NAMES.values()}
    names.update({f"STATE_{v.upper()}": v for v in L.STATE_NAMES.values()})
    names.update({f"ROLE_{v.upper()}": v for v in L.ROLE_NAMES.values()})
    names.update({f"PHASE_{v.upper()}": v for v in L.PHASE_NAMES.values()})
    lines: list[str] = []
    seen: set[str] = set()
    for export in L.__all__:
        value = getattr(L, export)
        if isinstance(value, bool) or not isinstance(value, int | bytes):
            continue
        for prefixes, comment in _GROUPS:
            if export.startswith(prefixes) and comment not in seen:
                seen.add(comment)
                lines.extend(["", f"/* {comment} */"])
        macro = f"#define BYTEOR_{export}"
        if isinstance(value, bytes):
            lines.append(f'{macro:<40}"{value.decode("ascii")}"')
            lines.append(f"{macro + '_LEN':<40}{len(value)}u")
        else:
            literal = _c_int(value, hexadecimal=export.endswith("LAYOUT_ID"))
            note = f'  /* "{names[export]}" */' if export in names else ""
            lines.append(f"{macro:<40}{literal}{note}")
    return lines


_PREAMBLE: Final = """\
#ifndef BYTEOR_V1_H
#define BYTEOR_V1_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "byteor lane segments are little-endian and need GCC/Clang __atomic builtins"
#endif
"""

# Hand-written C: the geometry (mirrors layout.Geometry), header validation, and the reading
# protocol. Everything it needs from the layout comes from the generated part above it.
_HELPERS: Final = """\
/* ---- geometry (mirrors byteor.lanes.layout.Geometry) -------------------------------- */

static inline uint64_t byteor_align(uint64_t n, uint64_t to) {
    return (n + to - 1) / to * to;
}

typedef struct byteor_geometry {
    uint64_t capacity;
    uint64_t slot_bytes;
    uint64_t max_consumers;
    uint64_t producer_offset;    /* the byteor_producer_block */
    uint64_t consumers_offset;   /* consumer block 0; block i at + i * sizeof */
    uint64_t descriptors_offset; /* capacity x byteor_slot_descriptor, 64-byte aligned */
    uint64_t payloads_offset;    /* capacity x slot_bytes, 64-byte aligned */
    uint64_t total_bytes;        /* the segment's size, 64-byte aligned */
} byteor_geometry;

static inline byteor_geometry byteor_geometry_of(uint64_t capacity, uint64_t slot_bytes,
                                                 uint64_t max_consumers) {
    byteor_geometry g;
    g.capacity = capacity;
    g.slot_bytes = slot_bytes;
    g.max_consumers = max_consumers;
    g.producer_offset = sizeof(byteor_segment_header);
    g.consumers_offset = g.producer_offset + sizeof(byteor_producer_block);
    g.descriptors_offset = byteor_align(
        g.consumers_offset + max_consumers * sizeof(byteor_consumer_block), BYTEOR_CACHE_LINE);
    g.payloads_offset = byteor_align(
        g.descriptors_offset + capacity * sizeof(byteor_slot_descriptor), BYTEOR_CACHE_LINE);
    g.total_bytes = byteor_align(g.payloads_offset + capacity * slot_bytes, BYTEOR_CACHE_LINE);
    return g;
}

static inline uint64_t byteor_consumer_offset(const byteor_geometry *g, uint64_t index) {
    return g->consumers_offset + index * sizeof(byteor_consumer_block);
}

/* Sequence seq lives in slot seq & (capacity - 1). */
static inline uint64_t byteor_descriptor_offset(const byteor_geometry *g, uint64_t seq) {
    return g->descriptors_offset + (seq & (g->capacity - 1)) * sizeof(byteor_slot_descriptor);
}

static inline uint64_t byteor_payload_offset(const byteor_geometry *g, uint64_t seq) {
    return g->payloads_offset + (seq & (g->capacity - 1)) * g->slot_bytes;
}

/* ---- header checksum ------------------------------------------------------------------
 * header_crc is the CRC-32 of bytes [0, BYTEOR_HEADER_CRC_SPAN) (line 0: identity and
 * geometry), the zlib/PNG CRC: reflected polynomial 0xEDB88320, initial value and final xor
 * 0xFFFFFFFF. In Python: zlib.crc32(segment[:64]). Bitwise here: it runs once per attach. */

static inline uint32_t byteor_crc32(const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return crc ^ 0xFFFFFFFFu;
}

/* ---- attach validation ------------------------------------------------------------------
 * A segment is untrusted input. Map the whole file, then call byteor_check_header with the
 * file's size before touching anything past the header. */

enum byteor_check {
    BYTEOR_OK = 0,
    BYTEOR_E_TRUNCATED = 1, /* smaller than its header or than its geometry */
    BYTEOR_E_MAGIC = 2,     /* not a lane, or still being created (magic is written last) */
    BYTEOR_E_VERSION = 3,   /* abi_version differs */
    BYTEOR_E_LAYOUT = 4,    /* layout_id differs: built from another layout */
    BYTEOR_E_KIND = 5,      /* unknown lane kind */
    BYTEOR_E_CHECKSUM = 6,  /* header_crc does not match line 0 */
    BYTEOR_E_GEOMETRY = 7   /* impossible capacity/slot_bytes/max_consumers/total_bytes */
};

static inline const char *byteor_check_name(int code) {
    switch (code) {
    case BYTEOR_OK: return "ok";
    case BYTEOR_E_TRUNCATED: return "truncated";
    case BYTEOR_E_MAGIC: return "bad magic";
    case BYTEOR_E_VERSION: return "bad ABI version";
    case BYTEOR_E_LAYOUT: return "bad layout id";
    case BYTEOR_E_KIND: return "bad kind";
    case BYTEOR_E_CHECKSUM: return "bad header checksum";
    case BYTEOR_E_GEOMETRY: return "bad geometry";
    default: return "unknown";
    }
}

static inline int byteor_check_header(const void *base, uint64_t file_bytes,
                                      byteor_geometry *out) {
    const byteor_segment_header *h = (const byteor_segment_header *)base;
    if (file_bytes < sizeof(byteor_segment_header)) return BYTEOR_E_TRUNCATED;
    if (memcmp(h->magic, BYTEOR_MAGIC, BYTEOR_MAGIC_LEN) != 0) return BYTEOR_E_MAGIC;
    if (h->abi_version != BYTEOR_ABI_VERSION) return BYTEOR_E_VERSION;
    if (h->layout_id != BYTEOR_LAYOUT_ID) return BYTEOR_E_LAYOUT;
    if (h->kind < BYTEOR_KIND_EVENTS || h->kind > BYTEOR_KIND_FANOUT) return BYTEOR_E_KIND;
    if (byteor_crc32(base, BYTEOR_HEADER_CRC_SPAN) != h->header_crc) return BYTEOR_E_CHECKSUM;
    if (h->capacity < BYTEOR_MIN_CAPACITY || h->capacity > BYTEOR_MAX_CAPACITY
        || (h->capacity & (h->capacity - 1)) != 0
        || h->slot_bytes < BYTEOR_MIN_SLOT_BYTES || h->slot_bytes > BYTEOR_MAX_SLOT_BYTES
        || h->slot_bytes % 8 != 0
        || h->max_consumers < 1 || h->max_consumers > BYTEOR_MAX_CONSUMERS)
        return BYTEOR_E_GEOMETRY;
    byteor_geometry g = byteor_geometry_of(h->capacity, h->slot_bytes, h->max_consumers);
    if (h->total_bytes != g.total_bytes) return BYTEOR_E_GEOMETRY;
    if (file_bytes < g.total_bytes) return BYTEOR_E_TRUNCATED;
    if (file_bytes != g.total_bytes) return BYTEOR_E_GEOMETRY;
    if (out) *out = g;
    return BYTEOR_OK;
}

/* ---- reading protocol -------------------------------------------------------------------
 * One producer, cursors are counts (the producer's: messages published; a consumer's:
 * messages it has released, i.e. the next sequence it reads). For a consumer on line c:
 *
 *   1. avail = acquire-load producer->cursor     (__atomic_load_n(.., __ATOMIC_ACQUIRE))
 *      The producer wrote payload and descriptor before its release of the cursor, so
 *      every slot below avail is complete once this load returns.
 *   2. for seq in [consumer->cursor, avail):
 *        i = seq & (capacity - 1)
 *        d = descriptor[i]                          at descriptors_offset + i * 16
 *        check d.seq == seq and d.length <= slot_bytes (untrusted: never read past the slot)
 *        payload = d.length bytes                   at payloads_offset + i * slot_bytes
 *   3. release-store consumer->cursor = seq + 1   (__atomic_store_n(.., __ATOMIC_RELEASE))
 *      only when done with the slot: from then on the producer may overwrite it.
 *   4. if the producer is asleep waiting for room (producer->sleeping != 0), wake it with
 *      futex(FUTEX_WAKE) on the low 32 bits of consumer->cursor. Optional: the producer's
 *      sleeps are bounded and re-check, so a missed wake costs a short delay, never a hang.
 *   5. producer->closed != 0 and consumer->cursor == producer->cursor: end of stream.
 *
 * This is the protocol of a gating consumer (state BYTEOR_STATE_GATING), e.g. consumer line
 * 0 of an events lane, which the creator registers: the producer never rewrites a slot such
 * a consumer has not released. An overrun consumer (BYTEOR_STATE_OVERRUN) holds nobody
 * back, so its slot may be rewritten while it reads: it copies the payload (at most
 * slot_bytes), then calls byteor_overrun_intact; a false answer means the copy may be torn,
 * and it skips ahead to producer->claimed - capacity, adding what it skipped to
 * consumer->lost. (The producer announces in claimed how far it may write before writing.)
 */

static inline uint64_t byteor_load_acquire(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void byteor_store_release(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline byteor_producer_block *byteor_producer(void *base, const byteor_geometry *g) {
    return (byteor_producer_block *)((uint8_t *)base + g->producer_offset);
}

static inline byteor_consumer_block *byteor_consumer(void *base, const byteor_geometry *g,
                                                     uint64_t index) {
    return (byteor_consumer_block *)((uint8_t *)base + byteor_consumer_offset(g, index));
}

static inline const byteor_slot_descriptor *byteor_descriptor(const void *base,
                                                              const byteor_geometry *g,
                                                              uint64_t seq) {
    return (const byteor_slot_descriptor *)((const uint8_t *)base
                                            + byteor_descriptor_offset(g, seq));
}

static inline const uint8_t *byteor_payload(const void *base, const byteor_geometry *g,
                                            uint64_t seq) {
    return (const uint8_t *)base + byteor_payload_offset(g, seq);
}

/* After copying sequence seq: whether the producer cannot have started rewriting its slot.
 * It writes only below the claimed it announced first, so the slot is intact while
 * claimed <= seq + capacity. The fence keeps the copy's loads before this load (free on
 * x86-64). */
static inline int byteor_overrun_intact(const byteor_producer_block *producer, uint64_t seq,
                                        uint64_t capacity) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&producer->claimed, __ATOMIC_RELAXED) <= seq + capacity;
}

/* A gating consumer on one line, following the protocol above. */
typedef struct byteor_reader {
    void *base;
    byteor_geometry geom;
    byteor_producer_block *producer;
    byteor_consumer_block *consumer;
    uint64_t next;  /* the next sequence to read; consumer->cursor once released */
    uint64_t avail; /* the producer cursor as last loaded */
} byteor_reader;

static inline void byteor_reader_init(byteor_reader *r, void *base, const byteor_geometry *g,
                                      uint64_t consumer_index) {
    r->base = base;
    r->geom = *g;
    r->producer = byteor_producer(base, g);
    r->consumer = byteor_consumer(base, g, consumer_index);
    r->next = __atomic_load_n(&r->consumer->cursor, __ATOMIC_RELAXED);
    r->avail = byteor_load_acquire(&r->producer->cursor);
}

enum byteor_poll {
    BYTEOR_POLL_MESSAGE = 1, /* payload and length hold the message at r->next */
    BYTEOR_POLL_EMPTY = 0,   /* nothing published yet: spin, yield or sleep, then retry */
    BYTEOR_POLL_CLOSED = -1, /* the producer closed the lane and everything was read */
    BYTEOR_POLL_CORRUPT = -2 /* the descriptor is impossible: stop reading this segment */
};

/* Look at the next message without releasing it; valid until byteor_reader_release. */
static inline int byteor_reader_poll(byteor_reader *r, const uint8_t **payload,
                                     uint32_t *length) {
    if (r->next >= r->avail) {
        r->avail = byteor_load_acquire(&r->producer->cursor);
        if (r->next > r->avail) return BYTEOR_POLL_CORRUPT; /* a cursor beyond the producer */
        if (r->next == r->avail) {
            if (__atomic_load_n(&r->producer->closed, __ATOMIC_ACQUIRE) != 0) {
                r->avail = byteor_load_acquire(&r->producer->cursor);
                if (r->next >= r->avail) return BYTEOR_POLL_CLOSED;
            } else {
                return BYTEOR_POLL_EMPTY;
            }
        }
    }
    if (r->avail - r->next > r->geom.capacity) return BYTEOR_POLL_CORRUPT;
    const byteor_slot_descriptor *d = byteor_descriptor(r->base, &r->geom, r->next);
    if (d->seq != r->next || d->length > r->geom.slot_bytes) return BYTEOR_POLL_CORRUPT;
    *payload = byteor_payload(r->base, &r->geom, r->next);
    *length = d->length;
    return BYTEOR_POLL_MESSAGE;
}

/* Hand the slot back. Returns nonzero if the producer sleeps and wants a futex wake on
 * (uint32_t *)&r->consumer->cursor. */
static inline int byteor_reader_release(byteor_reader *r) {
    r->next += 1;
    byteor_store_release(&r->consumer->cursor, r->next);
    return __atomic_load_n(&r->producer->sleeping, __ATOMIC_ACQUIRE) != 0;
}

#endif /* BYTEOR_V1_H */
"""


def _layout_comment() -> list[str]:
    doc = (L.__doc__ or "").replace("*/", "* /").replace("``", "").rstrip()
    return [" * " + line if line else " *" for line in doc.splitlines()]


def render() -> str:
    """The full text of ``byteor_v1.h`` for the layout this build defines."""
    lines = [
        "/* byteor_v1.h: the IndexBus lane segment layout, C11 view (GCC or Clang).",
        " *",
        f" * generated, do not edit: {COMMAND}",
        " * source: byteor/lanes/layout.py; `python -m byteor.lanes.cheader --check` tells",
        " * whether this file is current.",
        " *",
        *_layout_comment(),
        " */",
        _PREAMBLE,
        "/* ---- constants ------------------------------------------------------------------- */",
        *_render_constants(),
        "",
        "/* ---- structures (no packing: every field is naturally aligned) -------------------- */",
        "",
    ]
    for struct in STRUCTS:
        lines.extend(_render_struct(struct))
    lines.append(_HELPERS)
    text = "\n".join(lines)
    return text.rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Generate include/byteor_v1.h from byteor.lanes.layout."
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="header path (default: include/byteor_v1.h in this checkout)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the header differs from what would be made"
    )
    args = parser.parse_args(argv)
    path: Path = args.output or default_path()
    text = render()
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{path} is stale: regenerate it with `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{path} is current")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
