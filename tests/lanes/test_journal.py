"""Journal lanes: append-only, the last ``capacity`` entries retained; named readers are durable
(gate the writer, resume by name after close, reattach and kill -9), unnamed ones tail and are
told exactly what they lost; start positions; a file-backed journal survives every process."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

import byteor.lanes as bl

MakeJournal = Callable[..., tuple[bl.Lane, dict[str, Any]]]


def jmsg(i: int) -> bytes:
    """Entry ``i``: its sequence and a tail whose length and bytes depend on it."""
    return i.to_bytes(8, "little") + bytes([i & 0xFF]) * (i % 7)


def jseq(view: memoryview | bytes) -> int:
    data = bytes(view)
    i = int.from_bytes(data[:8], "little")
    assert data == jmsg(i), f"entry {i} corrupted: {data!r}"
    return i


def drain(rx: bl.Consumer) -> list[int]:
    out: list[int] = []
    while True:
        try:
            out.append(jseq(rx.receive_nowait()))
        except (bl.WouldBlock, bl.LaneClosed):
            return out


# -- append-only, retention, start positions ---------------------------------------------


def test_retains_the_last_capacity_entries(journal_make_lane: MakeJournal, journal_backing: str):
    cap = 8
    lane, _ = journal_make_lane(journal_backing, capacity=cap, consumers=["keeper"])
    tx = lane.sender()
    keeper = lane.receiver("keeper")
    written = 0
    # Three laps; the durable keeper lets the writer fill the ring exactly before each read.
    for _lap in range(3):
        for _ in range(cap):
            tx.send_nowait(jmsg(written))
            written += 1
        with pytest.raises(bl.WouldBlock):
            tx.send_nowait(jmsg(written))
        # Every retained entry, read from every start a reader may choose, is what was written.
        for first in range(written - cap, written + 1):
            rx = lane.receiver(start=first)
            assert rx.position == first
            assert drain(rx) == list(range(first, written))
            assert rx.lost == 0
            rx.close()
        late = lane.receiver("late", start="earliest")
        assert late.position == written - cap
        assert drain(late) == list(range(written - cap, written))
        late.unsubscribe()
        assert drain(keeper) == list(range(written - cap, written))
    assert lane.statistics().published == written == 3 * cap


def test_start_positions(journal_make_lane: MakeJournal, journal_backing: str) -> None:
    cap = 8
    lane, _ = journal_make_lane(journal_backing, capacity=cap, consumers=["keeper"])
    tx = lane.sender()
    keeper = lane.receiver("keeper")
    for i in range(cap + 5):
        if i == cap:
            assert drain(keeper)[-1] == cap - 1
            keeper.release()
        tx.send_nowait(jmsg(i))
    published = cap + 5
    # The keeper released everything before 8, so the writer may write up to 15, and it has
    # announced (``claimed``) its next window of 2: up to 14. The slot of entry 5 may be being
    # overwritten now, as far as a reader on another core can tell: 6 is the earliest offered.
    earliest = published - cap + 1
    # Durable readers start at the earliest retained entry, tailing ones at the latest.
    durable = lane.receiver("d")
    tailing = lane.receiver()
    assert (durable.position, tailing.position) == (earliest, published)
    assert drain(tailing) == []
    assert drain(durable) == list(range(earliest, published))
    durable.close()
    tailing.close()
    assert lane.receiver("d2", start="latest").position == published
    assert lane.receiver(start="earliest").position == earliest
    assert lane.receiver("d3", start=earliest).position == earliest
    assert lane.receiver(start=published).position == published
    d4 = lane.receiver("d4", start=earliest + 3)
    assert drain(d4) == list(range(earliest + 3, published))
    names = lane.consumer_names()
    for bad in (earliest - 1, published + 1, -1, 0, 10**6):
        with pytest.raises(bl.ConsumerError, match=rf"start={bad} is outside"):
            lane.receiver("bad", start=bad)
        with pytest.raises(bl.ConsumerError, match=rf"start={bad} is outside"):
            lane.receiver(start=bad)
    for bad_start in ("first", True, 1.5):
        with pytest.raises(bl.ConsumerError):
            lane.receiver("bad", start=bad_start)  # type: ignore[arg-type]
    assert lane.consumer_names() == names  # a refused start leaves no line behind
    with pytest.raises(bl.ConsumerError):
        lane.receiver("d", policy="critical")  # journals have no policy


def test_an_idle_writer_with_room_still_offers_capacity_entries(
    journal_make_lane: MakeJournal,
) -> None:
    cap = 8
    lane, _ = journal_make_lane("memory", capacity=cap)
    tx = lane.sender()
    for i in range(3 * cap + 2):  # no durable reader: the writer never waits
        tx.send(jmsg(i))
    tx.close()
    rx = lane.receiver(start="earliest")
    assert drain(rx) == list(range(2 * cap + 2, 3 * cap + 2))
    assert rx.lost == 0


def test_start_on_an_empty_journal(journal_make_lane: MakeJournal, journal_backing: str) -> None:
    lane, _ = journal_make_lane(journal_backing)
    assert lane.receiver("d", start=0).position == 0
    assert lane.receiver(start="earliest").position == 0
    with pytest.raises(bl.ConsumerError):
        lane.receiver(start=1)


# -- durable readers ---------------------------------------------------------------------


def test_durable_reader_gates_the_writer(journal_make_lane: MakeJournal, journal_backing: str):
    cap = 4
    lane, _ = journal_make_lane(journal_backing, capacity=cap, consumers=["d"])
    tx = lane.sender()
    d = lane.receiver("d")
    for i in range(cap):
        tx.send_nowait(jmsg(i))
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(jmsg(cap))
    with pytest.raises(bl.LaneTimeout):
        tx.send(jmsg(cap), timeout=0)
    assert jseq(d.receive_nowait()) == 0
    # Entry 0 is held (its view is valid) until the next receive releases it.
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(jmsg(cap))
    assert jseq(d.receive_nowait()) == 1
    tx.send_nowait(jmsg(cap))  # exactly one slot came free
    with pytest.raises(bl.WouldBlock):
        tx.send_nowait(jmsg(cap + 1))
    s = lane.statistics()
    assert s.drops == 3  # the send_nowait calls refused; send(timeout=0) is not a drop
    assert [(c.name, c.policy, c.position, c.lag) for c in s.consumers] == [
        ("d", "critical", 1, cap)
    ]


def test_durable_reader_resumes_after_close_and_reattach(
    journal_make_lane: MakeJournal, journal_backing: str
) -> None:
    lane, where = journal_make_lane(journal_backing, capacity=8, consumers=["d"])
    tx = lane.sender()
    for i in range(6):
        tx.send(jmsg(i))
    d = lane.receiver("d")
    assert [jseq(d.receive_nowait()) for _ in range(3)] == [0, 1, 2]
    d.close()  # received 0..2: the next one is 3
    d = lane.receiver("d")
    assert d.position == 3
    assert jseq(d.receive_nowait()) == 3
    d.close()
    # Through another handle on the segment, after this one's reader is gone.
    other = bl.attach(lane.name, kind="journal", **where)
    try:
        d2 = other.receiver("d", start="earliest")  # a durable name ignores start: it resumes
        assert d2.position == 4
        assert drain(d2) == [4, 5]
        tx.send(jmsg(6))
        assert drain(d2) == [6]
        d2.close()
    finally:
        other.close()
    assert [(c.name, c.position) for c in lane.statistics().consumers] == [("d", 7)]
    d = lane.receiver("d")
    d.unsubscribe()  # gone for good: a new reader of that name starts afresh
    assert lane.consumer_names() == []
    assert lane.receiver("d", start="latest").position == 7


def test_second_durable_reader_of_one_name_is_refused(
    journal_make_lane: MakeJournal, journal_backing: str
) -> None:
    lane, _ = journal_make_lane(journal_backing, consumers=["d"])
    d = lane.receiver("d")
    with pytest.raises(bl.ConsumerError):
        lane.receiver("d")
    d.close()
    lane.receiver("d").close()


def _read_then_die(name: str, where: dict[str, Any], count: int, conn: Any) -> None:
    """Child: read ``count`` entries as durable reader "d", report them, then SIGKILL itself
    while still holding the last one unreleased."""
    lane = bl.attach(name, kind="journal", **where)
    d = lane.receiver("d")  # publish_every=1: the default of durable journal readers
    got = [jseq(d.receive(timeout=10)) for _ in range(count)]
    conn.send(got)
    conn.close()
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
@pytest.mark.parametrize("backing", ["shm", "file"])
def test_durable_reader_resumes_after_kill9(journal_make_lane: MakeJournal, backing: str):
    lane, where = journal_make_lane(backing, capacity=16, consumers=["d"])
    tx = lane.sender()
    for i in range(12):
        tx.send(jmsg(i))
    ctx = multiprocessing.get_context("fork")
    delivered: list[int] = []
    for count in (5, 4):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_read_then_die, args=(lane.name, where, count, child))
        p.start()
        child.close()
        delivered += parent.recv()
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        (c,) = lane.statistics().consumers
        # The line stays, its owner is gone, its position is the entry held unreleased.
        assert (c.name, c.attached, c.position) == ("d", False, delivered[-1])
    # 0..4, then 4 (held when killed) again with 5..7, then 7 again.
    assert delivered == [0, 1, 2, 3, 4, 4, 5, 6, 7]
    d = lane.receiver("d")
    assert drain(d) == list(range(7, 12))
    assert lane.statistics().consumers[0].attached


# -- tailing readers ---------------------------------------------------------------------


def test_tailing_reader_is_told_exactly_what_it_lost(
    journal_make_lane: MakeJournal, journal_backing: str
) -> None:
    cap = 8
    lane, _ = journal_make_lane(journal_backing, capacity=cap)
    tx = lane.sender()
    for i in range(5):  # before the reader exists: not its loss
        tx.send(jmsg(i))
    rx = lane.receiver()
    start = rx.position
    assert start == 5
    written = 5
    delivered: list[int] = []
    # Bursts from well within the ring to many laps past the reader; reads in between.
    for burst, reads in [(3, 2), (cap, 1), (3 * cap + 3, 4), (1, 9), (cap - 1, 3), (5 * cap, 50)]:
        for _ in range(burst):
            tx.send_nowait(jmsg(written))  # a tailing reader never holds the writer back
            written += 1
        before = len(delivered)
        for _ in range(reads):
            try:
                delivered.append(jseq(rx.receive_nowait()))
            except bl.WouldBlock:
                break
        # Whatever it got is in order, and every gap is loss it was told about.
        assert delivered == sorted(set(delivered))
        gaps = sum(b - a - 1 for a, b in zip([start - 1, *delivered], delivered, strict=False))
        assert rx.lost == gaps
        assert len(delivered) > before
    delivered += drain(rx)
    assert delivered[-1] == written - 1
    gaps = sum(b - a - 1 for a, b in zip([start - 1, *delivered], delivered, strict=False))
    assert rx.lost == gaps > 0
    assert len(delivered) + rx.lost == written - start
    s = lane.statistics()
    assert [(c.policy, c.position, c.lost) for c in s.consumers] == [
        ("best_effort", written, rx.lost)
    ]
    assert (s.overruns, s.full_waits, s.drops) == (rx.lost, 0, 0)
    rx.close()
    assert lane.consumer_names() == []  # a tailing reader's line goes with it


def test_tailing_reader_beside_a_durable_one(journal_make_lane: MakeJournal, journal_backing: str):
    cap = 8
    lane, _ = journal_make_lane(journal_backing, capacity=cap, consumers=["d"])
    tx = lane.sender()
    d = lane.receiver("d")
    tail = lane.receiver(start="earliest")
    written = 0
    tail_got: list[int] = []
    for _ in range(6):
        while True:  # fill until the durable reader holds the writer back
            try:
                tx.send_nowait(jmsg(written))
            except bl.WouldBlock:
                break
            written += 1
        assert drain(d)[-1] == written - 1
        d.release()
        tail_got += [jseq(tail.receive_nowait()) for _ in range(2)]  # falls behind
    tail_got += drain(tail)
    assert written == 6 * cap
    assert tail_got[-1] == written - 1
    assert len(tail_got) + tail.lost == written
    assert tail.lost == sum(b - a - 1 for a, b in zip([-1, *tail_got], tail_got, strict=False))
    assert tail.lost > 0
    assert lane.statistics().consumers[0].lost == 0  # durable readers never lose


def test_closed_journal_reads_to_the_end(journal_make_lane: MakeJournal, journal_backing: str):
    lane, _ = journal_make_lane(journal_backing, consumers=["d"])
    tx = lane.sender()
    tail = lane.receiver(start="earliest")
    for i in range(5):
        tx.send(jmsg(i))
    tx.close()
    d = lane.receiver("d")
    for rx in (d, tail):
        assert [jseq(rx.receive(timeout=0)) for _ in range(5)] == list(range(5))
        with pytest.raises(bl.LaneClosed):
            rx.receive(timeout=0)
    d.close()
    tx2 = lane.sender()  # a new writer reopens and continues the sequence
    assert tx2.position == 5
    tx2.send(jmsg(5))
    d = lane.receiver("d")
    assert drain(d) == [5]


# -- a file-backed journal survives every process -----------------------------------------


def _file_step(step: str, name: str, path: str, conn: Any) -> None:
    """Child: one life of the journal's users; the test process never maps the file."""
    try:
        if step == "create":
            lane = bl.create(name, "journal", 16, 32, backing="file", path=path, consumers=["d"])
            tx = lane.sender()
            for i in range(10):
                tx.send(jmsg(i))
            d = lane.receiver("d")
            got = [jseq(d.receive(timeout=5)) for _ in range(4)]
            lane.flush()
            lane.close()  # a clean close: 0..3 received, 4 next
            conn.send(("ok", got, tx.position))
        elif step == "resume":
            lane = bl.attach(name, kind="journal", backing="file", path=path)
            tx = lane.sender()
            first = tx.position
            d = lane.receiver("d")
            resumed_at = d.position
            for i in range(first, first + 6):
                tx.send(jmsg(i))
            got = [jseq(d.receive(timeout=5)) for _ in range(12)]  # 15 stays held
            tail = lane.receiver(start="earliest")
            earliest = tail.position
            conn.send(("ok", [first, resumed_at, earliest], got))
            conn.close()
            os.kill(os.getpid(), signal.SIGKILL)  # this time nobody closes anything
        else:
            lane = bl.attach(name, kind="journal", backing="file", path=path)
            # Nobody writes: a new durable reader is offered every retained entry.
            late = lane.receiver("late", start="earliest")
            replay = (late.position, [jseq(late.receive(timeout=5)) for _ in range(16)])
            late.unsubscribe()
            d = lane.receiver("d")
            at = d.position
            tx = lane.sender()
            tx.send(jmsg(tx.position))
            tx.close()
            got = []
            try:
                while True:
                    got.append(jseq(d.receive(timeout=5)))
            except bl.LaneClosed:
                pass
            conn.send(("ok", (at, replay), got))
            lane.close()
    except BaseException as exc:
        conn.send(("error", repr(exc), None))
    conn.close()


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_file_backed_journal_survives_every_process(tmp_path: Any) -> None:
    name = f"test-journal-{os.getpid()}-restart"
    path = str(tmp_path / "journal.lane")
    ctx = multiprocessing.get_context("fork")

    def life(step: str) -> tuple[Any, Any, Any]:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_file_step, args=(step, name, path, child))
        p.start()
        child.close()
        answer = parent.recv()
        p.join(30)
        assert answer[0] == "ok", answer
        return answer, p.exitcode

    (_, got, position), code = life("create")
    assert (got, position, code) == ([0, 1, 2, 3], 10, 0)
    assert not os.path.exists(f"/dev/shm/byteor-{name}")
    (_, (first, resumed_at, earliest), got), code = life("resume")
    # The writer continues at 10, the durable reader at 4. 16 entries fit; at 16 the live
    # writer has announced it may write up to 18 (its window of 4 for a 16-slot ring), so the
    # slots of entries 0 and 1 are in doubt: 2 is the earliest a tailing reader is offered.
    assert (first, resumed_at, earliest, code) == (10, 4, 2, -signal.SIGKILL)
    assert got == list(range(4, 16))
    # Killed holding 15: the last life gets 15 again, then the one entry written in it.
    (_, (at, replay), got), code = life("last")
    assert (at, got, code) == (15, [15, 16], 0)
    # The writer died with room to write 16..19, but a dead writer writes nothing: all 16
    # retained entries are offered, in place.
    assert replay == (0, list(range(16)))
    lane = bl.attach(name, kind="journal", backing="file", path=path)
    try:
        s = lane.statistics()
        assert (s.published, s.closed, s.producer_attached) == (17, True, False)
        # The tailing reader killed with its process keeps its line until one is needed.
        assert [(c.name, c.policy, c.position, c.attached) for c in s.consumers] == [
            ("d", "critical", 17, False),
            ("", "best_effort", 2, False),  # where the "resume" life's tail started
        ]
    finally:
        lane.close()
        bl.unlink(name, backing="file", path=path)


class _ReadWhileWriting(list[bytes]):
    """A batch whose second walk (the producer copying payloads) runs ``hook`` before item
    ``at``: the reader looks at the ring while the writer is halfway through a batch."""

    def __init__(self, items: list[bytes], at: int, hook: Callable[[], None]) -> None:
        super().__init__(items)
        self._at = at
        self._hook = hook
        self._walks = 0

    def __getitem__(self, index: Any) -> Any:
        got = super().__getitem__(index)
        if isinstance(index, slice):
            return _ReadWhileWriting(got, self._at, self._hook)
        return got

    def __iter__(self) -> Any:
        self._walks += 1  # the first walk measures lengths, the second copies
        for k, item in enumerate(list.__iter__(self)):
            if self._walks == 2 and k == self._at:
                self._hook()
            yield item


@pytest.mark.parametrize("backing", ["memory", "shm"])
def test_tailing_reader_during_a_batch_write(journal_make_lane: MakeJournal, backing: str):
    cap = 8
    lane, _ = journal_make_lane(backing, capacity=cap, consumers=["d"])
    tx = lane.sender()
    d = lane.receiver("d")
    tail = lane.receiver(start="earliest")
    for i in range(cap):
        tx.send(jmsg(i))
    assert drain(d) == list(range(cap))
    d.release()
    got: list[tuple[int, bytes]] = []  # (the entry it says it read, the bytes it got)

    def read_now() -> None:
        for _ in range(3):
            data = bytes(tail.receive_nowait())
            got.append((tail.position - 1, data))

    # Entries 8, 9 are in slots 0, 1 but not yet published when the tailing reader looks.
    batch = [jmsg(i) for i in range(cap, cap + 4)]  # lengths differ: copied one by one
    tx.send_batch(_ReadWhileWriting(batch, 2, read_now))
    # Each entry it gets is the one its position says it is (or it is counted lost). Today
    # it reads slot 1 while entry 9 is being written over entry 1: 9's bytes cut at 1's length.
    assert [data for _, data in got] == [jmsg(seq) for seq, _ in got]
    assert got[-1][0] + 1 == len(got) + tail.lost
