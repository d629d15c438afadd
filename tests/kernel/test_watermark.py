"""Ack watermark arithmetic: exact cases, then a brute-force model under hypothesis."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byteor.kernel import (
    AckPath,
    UpstreamTracker,
    done_watermark,
    path_done,
)

# -- exact cases ---------------------------------------------------------------------------


def test_nothing_in_flight_means_everything_published_is_done() -> None:
    assert path_done(AckPath((None, None), None), published=0) == 0
    assert path_done(AckPath((None, None), None), published=7) == 7


def test_oldest_unfinished_record_anywhere_holds_the_watermark() -> None:
    assert path_done(AckPath((5, None), None), published=9) == 5
    assert path_done(AckPath((None, 6), 2), published=9) == 2
    assert path_done(AckPath((), confirmed=3), published=4) == 3
    # A terminal stage (no outputs) ends its path: no sink.
    assert path_done(AckPath((8,)), published=9) == 8


def test_minimum_over_paths() -> None:
    fast = AckPath((None,), None)
    slow = AckPath((None,), 3)
    assert done_watermark([fast, slow], published=9) == 3
    assert done_watermark([fast], published=9) == 9
    with pytest.raises(ValueError, match="at least one path"):
        done_watermark([], published=9)


def test_inconsistent_cursors_are_refused() -> None:
    with pytest.raises(ValueError, match=r"hop 1 has stamp 9 unfinished but only 9"):
        path_done(AckPath((None, 9), None), published=9)
    with pytest.raises(ValueError, match=r"the sink has stamp 12"):
        path_done(AckPath((), 12), published=9)
    with pytest.raises(ValueError, match="negative"):
        AckPath((-1,), None)
    with pytest.raises(ValueError, match="negative"):
        path_done(AckPath(()), published=-1)


def test_upstream_tracker_releases_in_order_per_partition() -> None:
    t: UpstreamTracker[int] = UpstreamTracker()
    admitted = [("p0", 100), ("p1", 7), ("p0", 101), ("p1", 8), ("p0", 102)]
    assert [t.admit(p, pos) for p, pos in admitted] == [0, 1, 2, 3, 4]
    assert t.pending == 5 and t.next_sequence == 5
    first = t.release(3)
    assert [(c.sequence, c.partition, c.position) for c in first] == [
        (0, "p0", 100),
        (1, "p1", 7),
        (2, "p0", 101),
    ]
    assert UpstreamTracker.latest(first) == [("p0", 101), ("p1", 7)]
    assert t.release(3) == []  # released once
    rest = t.release(5)
    assert [(c.sequence, c.position) for c in rest] == [(3, 8), (4, 102)]
    assert t.pending == 0
    with pytest.raises(ValueError, match="beyond the 5 sequences admitted"):
        t.release(6)


def test_upstream_tracker_resumes_at_a_sequence() -> None:
    t: UpstreamTracker[str] = UpstreamTracker(start=40)
    assert t.admit(0, "1700-0") == 40
    assert [c.position for c in t.release(41)] == ["1700-0"]
    with pytest.raises(ValueError):
        UpstreamTracker(start=-1)


# -- a model of one path, checked against brute force ------------------------------------------


@dataclass
class Rec:
    stamp: int
    origins: frozenset[int]


@dataclass
class ModelStage:
    kind: str  # "pass", "drop", "batch", "dup"
    arg: int
    inbox: deque[Rec] = field(default_factory=deque)
    held: list[Rec] = field(default_factory=list)

    def handle(self, rec: Rec, out: deque[Rec]) -> None:
        if self.kind == "pass":
            out.append(rec)
        elif self.kind == "dup":
            out.extend([rec, Rec(rec.stamp, rec.origins)])
        elif self.kind == "drop":
            if rec.stamp % self.arg != 0:
                out.append(rec)
        else:
            self.held.append(rec)
            if len(self.held) == self.arg:
                self.flush(out)

    def flush(self, out: deque[Rec]) -> None:
        if self.held:
            first = self.held[0].stamp
            origins = frozenset().union(*(r.origins for r in self.held))
            self.held.clear()
            out.append(Rec(first, origins))

    def unfinished(self) -> int | None:
        oldest = self.held[:1] or list(self.inbox)[:1]
        return oldest[0].stamp if oldest else None


class PathModel:
    """Ingress -> stages -> sink; records carry their low stamp and every origin."""

    def __init__(self, kinds: list[tuple[str, int]]) -> None:
        self.stages = [ModelStage(k, a) for k, a in kinds]
        self.sink_inbox: deque[Rec] = deque()
        self.received: list[Rec] = []
        self.published = 0

    def lane_after(self, i: int) -> deque[Rec]:
        return self.stages[i + 1].inbox if i + 1 < len(self.stages) else self.sink_inbox

    def publish(self) -> None:
        rec = Rec(self.published, frozenset({self.published}))
        self.published += 1
        (self.stages[0].inbox if self.stages else self.sink_inbox).append(rec)

    def act(self, action: int) -> None:
        n = len(self.stages)
        choice = action % (n + 3)
        if choice == 0:
            self.publish()
        elif choice <= n:
            stage = self.stages[choice - 1]
            if stage.inbox:
                stage.handle(stage.inbox.popleft(), self.lane_after(choice - 1))
        elif choice == n + 1:
            if self.sink_inbox:
                self.received.append(self.sink_inbox.popleft())
        else:
            # The external system confirms a prefix of what the sink handed it.
            del self.received[: (action // 7) % (len(self.received) + 1)]

    def drain(self) -> None:
        for i, stage in enumerate(self.stages):
            while stage.inbox:
                stage.handle(stage.inbox.popleft(), self.lane_after(i))
            stage.flush(self.lane_after(i))
        self.sink_inbox.clear()
        self.received.clear()

    def path(self) -> AckPath:
        oldest = self.received[:1] or list(self.sink_inbox)[:1]
        return AckPath(
            tuple(s.unfinished() for s in self.stages), oldest[0].stamp if oldest else None
        )

    def true_done_prefix(self) -> int:
        live: set[int] = set()
        for stage in self.stages:
            for rec in [*stage.inbox, *stage.held]:
                live |= rec.origins
        for rec in [*self.sink_inbox, *self.received]:
            live |= rec.origins
        s = 0
        while s < self.published and s not in live:
            s += 1
        return s


stage_kinds = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["pass", "dup"]), st.just(1)),
        st.tuples(st.just("drop"), st.integers(2, 4)),
        st.tuples(st.just("batch"), st.integers(2, 5)),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(kinds=stage_kinds, actions=st.lists(st.integers(0, 1000), max_size=200))
def test_watermark_is_exactly_the_done_prefix(
    kinds: list[tuple[str, int]], actions: list[int]
) -> None:
    model = PathModel(kinds)
    last = 0
    for action in actions:
        model.act(action)
        wm = path_done(model.path(), model.published)
        assert wm == model.true_done_prefix()
        assert wm >= last  # exact, so it never goes back
        last = wm
    model.drain()
    assert path_done(model.path(), model.published) == model.published


@settings(max_examples=200, deadline=None)
@given(
    kinds_a=stage_kinds,
    kinds_b=stage_kinds,
    actions=st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), max_size=200),
)
def test_two_paths_from_one_ingress_take_the_minimum(
    kinds_a: list[tuple[str, int]],
    kinds_b: list[tuple[str, int]],
    actions: list[tuple[bool, int]],
) -> None:
    # A fanout ingress: both paths see every record.
    a, b = PathModel(kinds_a), PathModel(kinds_b)
    for which, action in actions:
        if action % 7 == 0:
            a.publish()
            b.publish()
        else:
            model = a if which else b
            if action % (len(model.stages) + 3) != 0:
                model.act(action)
        truth = min(a.true_done_prefix(), b.true_done_prefix())
        assert done_watermark([a.path(), b.path()], a.published) == truth
    a.drain()
    b.drain()
    assert done_watermark([a.path(), b.path()], a.published) == a.published


@settings(max_examples=200, deadline=None)
@given(
    partitions=st.lists(st.sampled_from(["a", "b", "c"]), max_size=60),
    marks=st.lists(st.integers(0, 60), max_size=10),
)
def test_upstream_release_is_every_admitted_record_once_in_order(
    partitions: list[str], marks: list[int]
) -> None:
    t: UpstreamTracker[int] = UpstreamTracker()
    offsets: dict[str, int] = {}
    for p in partitions:
        offsets[p] = offsets.get(p, -1) + 1
        t.admit(p, offsets[p])
    released = []
    done = 0
    for m in [*sorted(min(m, len(partitions)) for m in marks), len(partitions)]:
        got = t.release(m)
        assert all(c.sequence < m for c in got)
        assert all(c.sequence >= done for c in got)
        done = max(done, m)
        released += got
    assert [c.sequence for c in released] == list(range(len(partitions)))
    for p in set(partitions):
        positions = [c.position for c in released if c.partition == p]
        assert positions == list(range(len(positions)))
