"""C attaches to lanes Python created, through the generated ``include/byteor_v1.h``.

``c/reader.c`` is compiled once per session with gcc. It validates a segment's header with
the header's own helpers, then reads as consumer line 0 of an events lane (the line the
creator registers), printing ``SEQ LENGTH HEX`` per message.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from byteor import lanes
from byteor.lanes import cheader
from byteor.lanes import layout as L

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "include" / "byteor_v1.h"
READER_C = Path(__file__).parent / "c" / "reader.c"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=c11"]


# -- the header is current ------------------------------------------------------------------


def test_committed_header_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "byteor.lanes.cheader", "--check"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


def test_check_fails_on_a_stale_or_missing_header(tmp_path: Path) -> None:
    out = tmp_path / "byteor_v1.h"
    assert cheader.main(["--check", "-o", str(out)]) == 1
    assert cheader.main(["-o", str(out)]) == 0
    assert cheader.main(["--check", "-o", str(out)]) == 0
    out.write_text(out.read_text().replace("uint64_t cursor;", "uint32_t cursor;", 1))
    assert cheader.main(["--check", "-o", str(out)]) == 1


def test_header_says_it_is_generated() -> None:
    head = cheader.render().splitlines()[:4]
    assert "generated, do not edit: python -m byteor.lanes.cheader" in "\n".join(head)
    assert f"#define BYTEOR_LAYOUT_ID                0x{L.LAYOUT_ID:08x}u" in cheader.render()


# -- the C program --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to prove C readers work (apt-get install gcc)"
    exe = tmp_path_factory.mktemp("c") / "reader"
    proc = subprocess.run(
        [gcc, *CFLAGS, f"-I{HEADER.parent}", str(READER_C), "-o", str(exe)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return exe


def run(exe: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), *map(str, args)], check=False, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("capacity", "slot_bytes", "max_consumers"),
    [(2, 8, 1), (64, 64, 1), (64, 64, 4), (1024, 1032, 16), (4096, 8, 63),
     (L.MAX_CAPACITY, L.MAX_SLOT_BYTES, L.MAX_CONSUMERS)],
)  # fmt: skip
def test_c_geometry_matches_python(
    reader: Path, capacity: int, slot_bytes: int, max_consumers: int
) -> None:
    proc = run(reader, "geometry", capacity, slot_bytes, max_consumers)
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split("=") for line in proc.stdout.splitlines())
    g = L.Geometry(capacity, slot_bytes, max_consumers)
    # Every slot of Geometry is printed: a region added in Python but not in C fails here.
    want = {name: str(getattr(g, name)) for name in L.Geometry.__slots__}
    want.update({f"consumer_offset[{i}]": str(g.consumer_offset(i)) for i in range(max_consumers)})
    assert got == want


# -- header validation in C, on segments built from the layout ---------------------------------


def _segment(capacity: int = 64, slot_bytes: int = 64, max_consumers: int = 1) -> bytearray:
    g = L.Geometry(capacity, slot_bytes, max_consumers)
    h = L.SegmentHeader()
    h.magic = L.MAGIC
    h.abi_version = L.ABI_VERSION
    h.kind = L.KIND_EVENTS
    h.layout_id = L.LAYOUT_ID
    h.capacity, h.slot_bytes, h.max_consumers = capacity, slot_bytes, max_consumers
    h.total_bytes = g.total_bytes
    h.created_ns = 1_700_000_000_000_000_000
    h.name = b"c-check"
    h.header_crc = L.header_crc(bytes(h))
    buf = bytearray(g.total_bytes)
    buf[: ctypes.sizeof(h)] = bytes(h)
    return buf


def _put(buf: bytearray, field: str, value: int, *, fix_crc: bool = True) -> bytearray:
    desc = getattr(L.SegmentHeader, field)
    buf[desc.offset : desc.offset + desc.size] = value.to_bytes(desc.size, "little")
    if fix_crc:
        _put(buf, "header_crc", L.header_crc(bytes(buf)), fix_crc=False)
    return buf


MUTATIONS: dict[str, tuple[Callable[[bytearray], bytearray], str]] = {
    "intact": (lambda b: b, "ok"),
    "magic": (lambda b: _put(b, "magic", int.from_bytes(b"BYTEORLX", "little")), "bad magic"),
    "no magic": (lambda b: _put(b, "magic", 0), "bad magic"),
    "version": (lambda b: _put(b, "abi_version", 2), "bad ABI version"),
    "layout": (lambda b: _put(b, "layout_id", L.LAYOUT_ID ^ 1), "bad layout id"),
    "kind": (lambda b: _put(b, "kind", 9), "bad kind"),
    "checksum": (lambda b: _put(b, "created_ns", 5, fix_crc=False), "bad header checksum"),
    "capacity not 2^k": (lambda b: _put(b, "capacity", 48), "bad geometry"),
    "capacity huge": (lambda b: _put(b, "capacity", 1 << 40), "bad geometry"),
    "slot_bytes odd": (lambda b: _put(b, "slot_bytes", 60), "bad geometry"),
    "no consumers": (lambda b: _put(b, "max_consumers", 0), "bad geometry"),
    "total_bytes": (lambda b: _put(b, "total_bytes", len(b) + 64), "bad geometry"),
    "file too long": (lambda b: b + bytes(64), "bad geometry"),
    "file truncated": (lambda b: b[:-64], "truncated"),
    "header truncated": (lambda b: b[:100], "truncated"),
}


@pytest.mark.parametrize("case", MUTATIONS)
def test_c_header_validation(reader: Path, tmp_path: Path, case: str) -> None:
    mutate, expected = MUTATIONS[case]
    seg = tmp_path / "segment"
    seg.write_bytes(mutate(_segment()))
    proc = run(reader, "check", seg)
    assert proc.stdout.strip() == expected
    assert proc.returncode == (0 if expected == "ok" else 2)


# -- reading a lane Python created ------------------------------------------------------------


@pytest.fixture
def events_lane() -> Iterator[lanes.Lane]:
    name = f"c-reader-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    lane = lanes.create(name, kind="events", capacity=64, slot_bytes=64)
    try:
        yield lane
    finally:
        lane.close()
        lanes.unlink(name)


def _expected(messages: list[bytes], first: int = 0) -> list[str]:
    return [f"{first + i} {len(m)} {m.hex()}" for i, m in enumerate(messages)]


def _consumer_cursor(lane: lanes.Lane) -> int:
    assert lane.path is not None
    raw = Path(lane.path).read_bytes()
    h = L.SegmentHeader.from_buffer_copy(raw)
    g = L.Geometry(h.capacity, h.slot_bytes, h.max_consumers)
    return int(struct.unpack_from("<Q", raw, g.consumer_offset(0))[0])


def test_c_reads_exact_messages(reader: Path, events_lane: lanes.Lane) -> None:
    assert events_lane.path == f"/dev/shm/byteor-{events_lane.name}"
    messages = [b"hello", b"", b"\x00\xff\x00", bytes(range(64)), b"x" * 63, b"last"]
    tx = events_lane.sender()
    for m in messages:
        tx.send(m)
    proc = run(reader, "read", events_lane.path, len(messages))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [*_expected(messages), f"count={len(messages)}"]
    # The C reader released every slot through the consumer cursor Python gates on.
    assert _consumer_cursor(events_lane) == len(messages)
    # ... and a second run resumes there.
    more = [b"after", b"the C run"]
    for m in more:
        tx.send(m)
    proc = run(reader, "read", events_lane.path, len(more))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [*_expected(more, first=6), "count=2"]


def test_c_reader_gates_python_producer_across_wraparound(
    reader: Path, events_lane: lanes.Lane
) -> None:
    """Far more messages than slots: Python waits on the C consumer's cursor, C keeps up."""
    n = 5000
    messages = [i.to_bytes(4, "little") * (1 + i % 16) for i in range(n)]
    assert events_lane.path is not None
    proc = subprocess.Popen(
        [str(reader), "read", events_lane.path, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            tx = events_lane.sender()
            for m in messages:
                tx.send(m, timeout=10)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    out, err = proc.communicate(timeout=30)
    producer.join(timeout=30)
    assert not errors, errors
    assert proc.returncode == 0, err
    assert out.splitlines() == [*_expected(messages), f"count={n}"]
    assert _consumer_cursor(events_lane) == n


def test_c_reader_sees_the_lane_close(reader: Path, events_lane: lanes.Lane) -> None:
    tx = events_lane.sender()
    for m in (b"a", b"b", b"c"):
        tx.send(m)
    tx.close()
    assert events_lane.path is not None
    proc = run(reader, "read", events_lane.path, 10)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.splitlines() == _expected([b"a", b"b", b"c"])
    assert "lane closed after 3 messages" in proc.stderr
