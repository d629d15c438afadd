"""Attach is untrusted input: every way a segment file can be wrong gives a typed error.

Each test builds a real segment on /dev/shm, damages one thing in the file, and asserts the
exact exception class and that the message names the problem. A hypothesis property then
mutates valid segments at random and checks that attach, and every receive after a
successful attach, either works or raises a lane error: never anything else, never a hang.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import byteor.lanes as bl
from byteor.lanes import layout as L
from byteor.lanes._segment import shm_path

HEADER = ctypes.sizeof(L.SegmentHeader)
PRODUCER = HEADER  # the producer block follows the header
CONSUMERS = HEADER + ctypes.sizeof(L.ProducerBlock)
CONSUMER_BYTES = ctypes.sizeof(L.ConsumerBlock)


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def attach_names() -> Iterator[Callable[[], str]]:
    """Unique shm lane names; every segment (or whatever sits at its path) goes at teardown."""
    made: list[str] = []

    def make() -> str:
        name = f"test-attach-{uuid.uuid4().hex[:12]}"
        made.append(name)
        return name

    yield make
    for name in made:
        path = shm_path(name)
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


@pytest.fixture
def attach_segment_file(attach_names: Callable[[], str]) -> Callable[..., tuple[str, str]]:
    """Create a closed shm lane and return (name, path) so a test can damage its file."""

    def make(kind: str = "fanout", **kwargs: Any) -> tuple[str, str]:
        kwargs.setdefault("capacity", 8)
        kwargs.setdefault("slot_bytes", 32)
        name = attach_names()
        lane = bl.create(name, kind, **kwargs)  # type: ignore[arg-type]
        lane.close()
        return name, shm_path(name)

    return make


def read_header(path: str) -> L.SegmentHeader:
    with open(path, "rb") as f:
        return L.SegmentHeader.from_buffer_copy(f.read(HEADER))


def write_header(path: str, header: L.SegmentHeader, *, fix_crc: bool = True) -> None:
    """Write ``header`` back, with a checksum that matches it unless ``fix_crc`` is False."""
    raw = bytearray(bytes(header))
    if fix_crc:
        header.header_crc = L.header_crc(bytes(raw))
        raw = bytearray(bytes(header))
    with open(path, "r+b") as f:
        f.write(raw)


def set_header(path: str, *, fix_crc: bool = True, **fields: Any) -> None:
    header = read_header(path)
    for key, value in fields.items():
        setattr(header, key, value)
    write_header(path, header, fix_crc=fix_crc)


def poke_u64(path: str, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(value.to_bytes(8, "little"))


def poke_u32(path: str, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(value.to_bytes(4, "little"))


def consumer_field(index: int, field: str) -> int:
    return CONSUMERS + index * CONSUMER_BYTES + getattr(L.ConsumerBlock, field).offset


def producer_field(field: str) -> int:
    return PRODUCER + getattr(L.ProducerBlock, field).offset


def attach_error(name: str, **kwargs: Any) -> bl.AttachError:
    """Attach and return the AttachError raised (failing the test if none was)."""
    with pytest.raises(bl.AttachError) as info:
        bl.attach(name, **kwargs).close()
    return info.value


def expect(name: str, cls: type[bl.AttachError], *words: str, **kwargs: Any) -> str:
    """Attach must raise exactly ``cls``, and its message must contain each of ``words``."""
    exc = attach_error(name, **kwargs)
    assert type(exc) is cls, f"{type(exc).__name__}: {exc}"
    message = str(exc)
    for word in words:
        assert word in message, message
    return message


# -- a valid segment attaches ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["events", "journal", "slots", "fanout"])
def test_valid_segment_attaches(attach_segment_file, kind: str) -> None:
    name, _ = attach_segment_file(kind)
    with bl.attach(name) as lane:
        assert (lane.kind, lane.capacity, lane.slot_bytes) == (kind, 8, 32)
    with bl.attach(name, kind=kind) as lane:  # type: ignore[arg-type]
        assert lane.kind == kind


def test_damage_in_reserved_bytes_is_harmless(attach_segment_file) -> None:
    """The reserved header lines are outside the checksum and mean nothing (yet)."""
    name, path = attach_segment_file("events")
    with open(path, "r+b") as f:
        f.seek(L.SegmentHeader._reserved.offset)
        f.write(b"\xff" * 128)
    with bl.attach(name) as lane:
        tx, rx = lane.sender(), lane.receiver()
        tx.send_nowait(b"still works")
        assert bytes(rx.receive_nowait()) == b"still works"


# -- size -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "words"),
    [
        (0, ["is 0 bytes", "header", "truncated"]),
        (HEADER // 2, [f"is {HEADER // 2} bytes", "header", "truncated"]),
        (HEADER, [f"is {HEADER} bytes", "geometry needs", "truncated"]),
        (-1, ["geometry needs", "truncated"]),
    ],
    ids=["empty", "half-header", "header-only", "one-byte-short"],
)
def test_truncated(attach_segment_file, size: int, words: list[str]) -> None:
    name, path = attach_segment_file()
    total = os.stat(path).st_size
    if size < 0:
        size = total + size
    os.truncate(path, size)
    message = expect(name, bl.SegmentTruncated, path, *words)
    if size >= HEADER:
        assert f"needs {total}" in message


def test_file_larger_than_geometry(attach_segment_file) -> None:
    name, path = attach_segment_file()
    total = os.stat(path).st_size
    os.truncate(path, total + 64)
    expect(name, bl.BadGeometry, path, f"is {total + 64} bytes", f"more than the {total}")


# -- identity: magic, version, layout, kind, checksum ----------------------------------------


def test_wrong_magic(attach_segment_file) -> None:
    name, path = attach_segment_file()
    set_header(path, magic=b"NOTALANE")
    expect(name, bl.BadMagic, path, "not a ByteOr lane segment", "NOTALANE")


def test_zero_magic_means_being_created(attach_segment_file) -> None:
    name, path = attach_segment_file()
    with open(path, "r+b") as f:
        f.write(b"\0" * 8)
    expect(name, bl.BadMagic, path, "no magic", "still being created", "byteor doctor")


def test_wrong_abi_version(attach_segment_file) -> None:
    name, path = attach_segment_file()
    set_header(path, abi_version=L.ABI_VERSION + 1)
    expect(name, bl.BadVersion, path, f"ABI version {L.ABI_VERSION + 1}", f"{L.ABI_VERSION}")


def test_wrong_layout_id(attach_segment_file) -> None:
    name, path = attach_segment_file()
    set_header(path, layout_id=L.LAYOUT_ID ^ 0xFFFF)
    expect(
        name, bl.BadVersion, path, f"layout id {L.LAYOUT_ID ^ 0xFFFF:#010x}", f"{L.LAYOUT_ID:#010x}"
    )


def test_unknown_kind(attach_segment_file) -> None:
    name, path = attach_segment_file()
    set_header(path, kind=9)
    expect(name, bl.BadKind, path, "unknown lane kind 9")


@pytest.mark.parametrize(
    "field", ["capacity", "slot_bytes", "flags", "created_ns", "creator_pid", "total_bytes"]
)
def test_bad_header_checksum(attach_segment_file, field: str) -> None:
    """Any change to the first header line without a matching checksum is caught."""
    name, path = attach_segment_file()
    before = read_header(path)
    set_header(path, fix_crc=False, **{field: getattr(before, field) ^ 1})
    expect(name, bl.BadChecksum, path, "checksum", f"{before.header_crc:#010x}")


def test_bad_checksum_field_itself(attach_segment_file) -> None:
    name, path = attach_segment_file()
    set_header(path, fix_crc=False, header_crc=read_header(path).header_crc ^ 0x80)
    expect(name, bl.BadChecksum, path, "checksum", "modified or corrupted")


# -- impossible geometry behind a valid checksum ------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"capacity": 12}, ["capacity 12 is not a power of two", "use 8 or 16"]),
        ({"capacity": 0}, ["capacity 0 is out of range"]),
        ({"capacity": 1}, ["capacity 1 is out of range"]),
        ({"capacity": 2**25}, [f"capacity {2**25} is out of range"]),
        ({"capacity": 2**63}, [f"capacity {2**63} is out of range"]),
        ({"slot_bytes": 36}, ["slot_bytes 36 is invalid", "multiple of 8"]),
        ({"slot_bytes": 0}, ["slot_bytes 0 is invalid"]),
        ({"slot_bytes": 2**21}, [f"slot_bytes {2**21} is invalid"]),
        ({"max_consumers": 0}, ["max_consumers 0 is out of range"]),
        ({"max_consumers": 65}, ["max_consumers 65 is out of range"]),
    ],
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else "",
)
def test_impossible_geometry(attach_segment_file, fields: dict[str, int], words: list[str]):
    name, path = attach_segment_file()
    set_header(path, **fields)
    expect(name, bl.BadGeometry, path, *words)


def test_total_bytes_inconsistent(attach_segment_file) -> None:
    name, path = attach_segment_file()
    total = read_header(path).total_bytes
    set_header(path, total_bytes=total + 64)
    expect(name, bl.BadGeometry, path, f"claims {total + 64} bytes", f"needs {total}")


def test_geometry_larger_than_file(attach_segment_file) -> None:
    """A valid geometry whose ring does not fit in the file is a truncated segment."""
    name, path = attach_segment_file(capacity=8)
    needed = L.Geometry(16, 32, 16).total_bytes
    set_header(path, capacity=16, total_bytes=needed)
    expect(name, bl.SegmentTruncated, path, f"needs {needed}", "truncated")


# -- cursors and consumer lines -------------------------------------------------------------------


def test_consumer_beyond_producer(attach_segment_file) -> None:
    name, path = attach_segment_file("fanout", consumers=["a", "b"])
    poke_u64(path, producer_field("cursor"), 5)
    poke_u64(path, consumer_field(1, "cursor"), 6)
    expect(name, bl.CursorOutOfRange, path, "consumer line 1 is at 6", "producer cursor 5")


def test_impossible_producer_cursor(attach_segment_file) -> None:
    name, path = attach_segment_file("fanout")
    poke_u64(path, producer_field("cursor"), 2**64 - 1)
    expect(name, bl.CursorOutOfRange, path, f"producer cursor {2**64 - 1} is impossible")


def test_gating_consumer_more_than_capacity_behind(attach_segment_file) -> None:
    name, path = attach_segment_file("fanout", capacity=8, consumers=["a"])
    poke_u64(path, producer_field("cursor"), 109)
    poke_u64(path, consumer_field(0, "cursor"), 100)
    expect(name, bl.CursorOutOfRange, path, "consumer line 0 is 9 behind", "ring's 8 slots")


def test_gating_consumer_exactly_capacity_behind_is_fine(attach_segment_file) -> None:
    """A full ring: the control for the test above."""
    name, path = attach_segment_file("fanout", capacity=8, consumers=["a"])
    poke_u64(path, producer_field("cursor"), 108)
    poke_u64(path, consumer_field(0, "cursor"), 100)
    with bl.attach(name) as lane:
        assert lane.statistics().consumers[0].lag == 8


def test_overrun_consumer_far_behind_is_fine(attach_segment_file) -> None:
    """An overrun (best-effort) consumer may be any distance behind: it counts its loss."""
    name, path = attach_segment_file("fanout", capacity=8, consumers=["a"])
    poke_u32(path, consumer_field(0, "state"), L.STATE_OVERRUN)
    poke_u64(path, producer_field("cursor"), 1000)
    with bl.attach(name) as lane:
        assert lane.statistics().consumers[0].lag == 1000


@pytest.mark.parametrize("state", [3, 7, 2**32 - 1])
def test_unknown_consumer_state(attach_segment_file, state: int) -> None:
    name, path = attach_segment_file("fanout", consumers=["a", "b", "c"])
    poke_u32(path, consumer_field(2, "state"), state)
    expect(name, bl.CursorOutOfRange, path, f"consumer line 2 has state {state}")


@pytest.mark.parametrize(
    ("mask", "line"),
    [(1 << 4, 1), (1 << 63, 1), (1 << 1, 1)],
    ids=["just-past-max", "bit-63", "itself"],
)
def test_after_mask_outside(attach_segment_file, mask: int, line: int) -> None:
    name, path = attach_segment_file("slots", max_consumers=4, consumers=["s1", ("s2", ["s1"])])
    poke_u64(path, consumer_field(line, "after_mask"), mask)
    expect(name, bl.CursorOutOfRange, path, f"consumer line {line} waits on lines outside")


def test_after_mask_of_free_line_is_not_checked(attach_segment_file) -> None:
    """A free line's garbage is ignored: only registered lines are validated."""
    name, path = attach_segment_file("slots", max_consumers=4, consumers=["s1"])
    poke_u64(path, consumer_field(3, "after_mask"), 2**64 - 1)
    poke_u64(path, consumer_field(3, "cursor"), 2**64 - 1)
    with bl.attach(name) as lane:
        assert lane.consumer_names() == ["s1"]


@pytest.mark.parametrize("pid", [2**31, 2**32 - 1])
def test_impossible_pids_read_as_gone(attach_segment_file, pid: int) -> None:
    """pids come from the segment: one past pid_t used to overflow os.kill (OverflowError)."""
    name, path = attach_segment_file("fanout", consumers=["a"])
    poke_u32(path, consumer_field(0, "pid"), pid)
    poke_u32(path, producer_field("pid"), pid)
    with bl.attach(name) as lane:
        stats = lane.statistics()
        assert (stats.producer_pid, stats.producer_attached) == (pid, False)
        assert [(c.name, c.pid, c.attached) for c in stats.consumers] == [("a", pid, False)]
        rx = lane.receiver("a")  # the line's owner is gone, so it may be claimed
        tx = lane.sender()
        tx.send_nowait(b"m")
        assert bytes(rx.receive_nowait()) == b"m"


# -- the file itself: owner, mode, type, existence, kind ------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_segment_of_another_user(attach_segment_file) -> None:
    name, path = attach_segment_file()
    os.chown(path, 65534, 65534)
    expect(name, bl.ForeignSegment, path, "belongs to uid 65534", f"uid {os.geteuid()}")


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_segment_writable_by_others(attach_segment_file, mode: int) -> None:
    name, path = attach_segment_file()
    os.chmod(path, mode)
    expect(name, bl.ForeignSegment, path, f"mode {mode:o}", "writable by other users")


def test_directory_at_the_path(attach_names) -> None:
    name = attach_names()
    os.mkdir(shm_path(name))
    expect(name, bl.AttachError, shm_path(name), "Is a directory")


def test_fifo_at_the_path(attach_names) -> None:
    name = attach_names()
    os.mkfifo(shm_path(name), 0o600)
    expect(name, bl.AttachError, shm_path(name), "not a regular file")


def test_symlink_to_a_directory(attach_names, tmp_path: Path) -> None:
    name = attach_names()
    os.symlink(tmp_path, shm_path(name))
    expect(name, bl.AttachError, shm_path(name), "Is a directory")


def test_missing_segment(attach_names) -> None:
    name = attach_names()
    expect(name, bl.SegmentNotFound, shm_path(name), "does not exist")


def test_missing_in_memory_segment(attach_names) -> None:
    name = attach_names()
    expect(name, bl.SegmentNotFound, name, "no in-memory lane", backing="memory")


@pytest.mark.parametrize("backing", ["memory", "shm"])
def test_kind_mismatch(attach_names, backing: str) -> None:
    name = attach_names()
    lane = bl.create(name, "fanout", capacity=8, slot_bytes=32, backing=backing)  # type: ignore[arg-type]
    try:
        expect(
            name, bl.BadKind, name, "is a fanout lane, not events", kind="events", backing=backing
        )
        with bl.attach(name, kind="fanout", backing=backing) as again:  # type: ignore[arg-type]
            assert again.kind == "fanout"
    finally:
        lane.close()
        bl.unlink(name, backing=backing)  # type: ignore[arg-type]


def test_failed_attaches_leak_no_descriptor(attach_segment_file) -> None:
    """Each failure path closes what it opened, exactly once."""
    name, path = attach_segment_file("fanout", consumers=["a"])
    poke_u64(path, consumer_field(0, "cursor"), 3)  # beyond the producer: fails after mmap
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        attach_error(name)
        attach_error(name, kind="events")
    assert len(os.listdir("/proc/self/fd")) == before
    poke_u64(path, consumer_field(0, "cursor"), 0)
    for _ in range(20):
        attach_error(name, kind="events")  # fails after a complete attach
    assert len(os.listdir("/proc/self/fd")) == before


def test_failed_attach_does_not_close_a_foreign_descriptor(attach_segment_file) -> None:
    """A failed attach used to close its descriptor twice; the second close hit whatever
    descriptor had been given that number meanwhile (here: the next open)."""
    name, path = attach_segment_file("fanout", consumers=["a"])
    poke_u64(path, consumer_field(0, "cursor"), 3)
    exc = attach_error(name)
    assert type(exc) is bl.CursorOutOfRange
    fd = os.open(path, os.O_RDONLY)  # takes the lowest free number
    try:
        attach_error(name)
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


# -- create --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backing", ["shm", "file"])
def test_created_mode_is_0600(attach_names, tmp_path: Path, backing: str) -> None:
    name = attach_names()
    path = shm_path(name) if backing == "shm" else str(tmp_path / name)
    old = os.umask(0)  # a permissive umask must not widen the mode
    try:
        lane = bl.create(
            name,
            "journal",
            capacity=8,
            slot_bytes=32,
            backing=backing,  # type: ignore[arg-type]
            path=None if backing == "shm" else path,
        )
    finally:
        os.umask(old)
    lane.close()
    st_ = os.stat(path)
    assert stat.S_IMODE(st_.st_mode) == 0o600
    assert stat.S_ISREG(st_.st_mode)
    assert st_.st_uid == os.geteuid()


def test_create_existing_raises_with_hint(attach_segment_file) -> None:
    name, path = attach_segment_file("events")
    with pytest.raises(bl.SegmentExists) as info:
        bl.create(name, "events", capacity=8, slot_bytes=32)
    message = str(info.value)
    assert type(info.value) is bl.SegmentExists
    for word in (path, "already exists", "replace=True", "byteor doctor --remove"):
        assert word in message


def test_create_existing_memory_raises(attach_names) -> None:
    name = attach_names()
    lane = bl.create(name, "events", capacity=8, slot_bytes=32, backing="memory")
    try:
        with pytest.raises(bl.SegmentExists, match="already exists in this process"):
            bl.create(name, "events", capacity=8, slot_bytes=32, backing="memory")
    finally:
        lane.close()
        bl.unlink(name, backing="memory")


def test_create_replace(attach_names) -> None:
    name = attach_names()
    with bl.create(name, "events", capacity=8, slot_bytes=32) as lane:
        lane.sender().send_nowait(b"old")
    with bl.create(name, "fanout", capacity=16, slot_bytes=64, replace=True) as lane:
        stats = lane.statistics()
        assert (stats.kind, stats.capacity, stats.slot_bytes, stats.published) == (
            "fanout",
            16,
            64,
            0,
        )
    with bl.attach(name) as lane:
        assert (lane.kind, lane.capacity) == ("fanout", 16)


def test_create_replace_replaces_garbage(attach_names) -> None:
    name = attach_names()
    Path(shm_path(name)).write_bytes(b"garbage")
    with bl.create(name, "events", capacity=8, slot_bytes=32, replace=True) as lane:
        assert lane.capacity == 8
    assert stat.S_IMODE(os.stat(shm_path(name)).st_mode) == 0o600


@pytest.mark.parametrize("name", ["", "a/b", "../etc", "x" * 201, "sp ace", "tab\t", "ü"])
def test_create_invalid_name(name: str) -> None:
    with pytest.raises(ValueError, match=r"lane name .* is invalid: use 1-200 characters"):
        bl.create(name, "events", capacity=8, slot_bytes=32, backing="memory")


def test_attach_invalid_name() -> None:
    with pytest.raises(ValueError, match="is invalid"):
        bl.attach("../../etc/passwd")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"capacity": 3}, "capacity 3 is not a power of two: use 2 or 4"),
        ({"capacity": 1000}, "capacity 1000 is not a power of two: use 512 or 1024"),
        ({"capacity": 1}, "capacity 1 is out of range"),
        ({"capacity": 0}, "capacity 0 is out of range"),
        ({"capacity": 2**25}, f"capacity {2**25} is out of range"),
        ({"capacity": 8.0}, "capacity 8.0 is out of range"),
        ({"slot_bytes": 12}, "slot_bytes 12 is invalid: use a multiple of 8"),
        ({"slot_bytes": 0}, "slot_bytes 0 is invalid"),
        ({"slot_bytes": 2**21}, f"slot_bytes {2**21} is invalid"),
        ({"max_consumers": 0}, "max_consumers 0 is out of range: use 1 to 64"),
        ({"max_consumers": 65}, "max_consumers 65 is out of range: use 1 to 64"),
    ],
)
def test_create_invalid_geometry(attach_names, kwargs: dict[str, Any], words: str) -> None:
    name = attach_names()
    args: dict[str, Any] = {"capacity": 8, "slot_bytes": 32, **kwargs}
    with pytest.raises(bl.BadGeometry) as info:
        bl.create(name, "fanout", **args)
    assert words in str(info.value)
    assert not os.path.exists(shm_path(name))  # nothing left behind


def test_create_invalid_kind() -> None:
    with pytest.raises(ValueError, match="unknown lane kind 'queue'"):
        bl.create("x", "queue", backing="memory")  # type: ignore[arg-type]


# -- property: random damage never escapes as anything but a lane error ----------------------------

_KINDS = ("events", "journal", "slots", "fanout")
_CONSUMERS: dict[str, list[Any]] = {
    "events": [],
    "journal": ["j1", "j2"],
    "slots": ["s1", ("s2", ["s1"])],
    "fanout": ["f1", "f2"],
}
_base_cache: dict[str, bytes] = {}


def _base_segment(kind: str) -> bytes:
    """The bytes of a lived-in segment: messages sent, consumers at several positions, a live
    producer and live consumers (this process), the ring wrapped once."""
    if kind in _base_cache:
        return _base_cache[kind]
    name = f"test-attach-base-{uuid.uuid4().hex[:12]}"
    lane = bl.create(
        name,
        kind,
        capacity=8,
        slot_bytes=32,  # type: ignore[arg-type]
        max_consumers=None if kind == "events" else 4,
        consumers=_CONSUMERS[kind],
    )
    try:
        tx = lane.sender()
        rxs = (
            [lane.receiver()]
            if kind == "events"
            else [lane.receiver(n if isinstance(n, str) else n[0]) for n in _CONSUMERS[kind]]
        )
        if kind == "fanout":
            rxs.append(lane.receiver(policy="best_effort"))
        for i in range(11):
            tx.send_nowait(bytes([i]) * (i * 3 % 33))
            for k, rx in enumerate(rxs):
                if (i + k) % 2 == 0:
                    rx.receive_nowait()
                    rx.release()
        with open(shm_path(name), "rb") as f:
            data = f.read()
    finally:
        lane.close()
        bl.unlink(name)
    _base_cache[kind] = data
    return data


_INTERESTING = [0, 1, 2, 7, 8, 9, 31, 32, 33, 2**31, 2**32 - 1, 2**32, 2**62, 2**63, 2**64 - 1]


@st.composite
def _mutations(draw: st.DrawFn) -> tuple[str, list[tuple[str, int, int]], bool, int | None]:
    kind = draw(st.sampled_from(_KINDS))
    size = len(_base_segment(kind))
    geometry = L.Geometry(8, 32, 1 if kind == "events" else 4)
    # Mostly the header, producer and consumer blocks; sometimes descriptors or payloads.
    end = draw(
        st.sampled_from([geometry.descriptors_offset] * 3 + [geometry.payloads_offset, size])
    )
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["flip", "byte", "word"]),
                st.integers(0, end - 1),
                st.one_of(st.sampled_from(_INTERESTING), st.integers(0, 2**64 - 1)),
            ),
            min_size=1,
            max_size=6,
        )
    )
    fix_crc = draw(st.booleans())  # a valid checksum lets the damage reach deeper checks
    cut = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, size + 128)))
    return kind, ops, fix_crc, cut


def _apply(data: bytes, ops: list[tuple[str, int, int]], fix_crc: bool, cut: int | None) -> bytes:
    buf = bytearray(data)
    for op, pos, value in ops:
        if op == "flip":
            buf[pos] ^= 1 << (value % 8)
        elif op == "byte":
            buf[pos] = value & 0xFF
        else:
            pos -= pos % 8
            buf[pos : pos + 8] = value.to_bytes(8, "little")
    if fix_crc:
        crc_at = L.SegmentHeader.header_crc.offset
        buf[crc_at : crc_at + 4] = L.header_crc(bytes(buf)).to_bytes(4, "little")
    if cut is not None:
        buf = buf[:cut] if cut <= len(buf) else buf + b"\0" * (cut - len(buf))
    return bytes(buf)


def _exercise(lane: bl.Lane) -> None:
    """Everything a process does right after attaching: each call returns or raises a
    LaneError (WouldBlock, CorruptSlot, LaneClosed, ConsumerError, ...)."""
    lane.statistics()
    names: list[str | None] = [None, *lane.consumer_names()]
    for cname in names:
        try:
            rx = lane.receiver(None if lane.kind == "events" else cname)
        except bl.LaneError:
            continue
        for _ in range(lane.capacity + 2):
            try:
                rx.receive_nowait()
            except bl.WouldBlock:
                break
            except bl.LaneError:
                break
        with contextlib.suppress(bl.LaneError):
            rx.receive_batch(4, timeout=0)
        with contextlib.suppress(bl.LaneError):
            rx.receive_array("u1", 4, timeout=0)
        with contextlib.suppress(bl.LaneError):
            rx.close()
        if lane.kind == "events":
            break
    with contextlib.suppress(bl.LaneError):
        lane.sender().send_nowait(b"after")
    lane.statistics()


@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
# A consumer's wait counter at the top of the u64 range: counting one more wait must wrap,
# not raise ValueError from the memoryview (found by this test).
@example(("journal", [("word", 536, 2**64 - 1)], False, None))
def test_mutated_segments_fail_typed_or_work(
    case: tuple[str, list[tuple[str, int, int]], bool, int | None],
) -> None:
    kind, ops, fix_crc, cut = case
    data = _apply(_base_segment(kind), ops, fix_crc, cut)
    name = f"test-attach-fuzz-{uuid.uuid4().hex[:12]}"
    path = shm_path(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        try:
            lane = bl.attach(name)
        except bl.AttachError as exc:
            assert str(exc)  # every error says something
            return
        try:
            _exercise(lane)
        finally:
            lane.close()
    finally:
        os.unlink(path)


@pytest.mark.parametrize("kind", _KINDS)
def test_undamaged_base_segments_attach_and_deliver(kind: str) -> None:
    """The control for the property: the base segments themselves are valid and readable."""
    name = f"test-attach-base-{uuid.uuid4().hex[:12]}"
    Path(shm_path(name)).write_bytes(_base_segment(kind))
    os.chmod(shm_path(name), 0o600)
    try:
        with bl.attach(name, kind=kind) as lane:  # type: ignore[arg-type]
            stats = lane.statistics()
            assert stats.published == 11
            rx = lane.receiver()
            got = []
            with contextlib.suppress(bl.WouldBlock):
                while True:
                    got.append(bytes(rx.receive_nowait()))
            if kind == "events":
                # consumed 6 of 11 (i = 0, 2, ..., 10), so 5 remain
                assert got == [bytes([i]) * (i * 3 % 33) for i in range(6, 11)]
    finally:
        os.unlink(shm_path(name))
