"""Shared fixtures for the lane tests. Fixtures are prefixed by the area that owns them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import byteor.lanes as bl

# -- core: a lane factory with unique names, unlinked and closed in teardown -------------

CoreLaneFactory = Callable[..., bl.Lane]


@pytest.fixture
def core_make_lane() -> Iterator[CoreLaneFactory]:
    """``core_make_lane(kind, backing="memory", capacity=8, slot_bytes=64, **create_kwargs)``.

    Every lane gets a unique name; every lane (and its endpoints) is closed and its segment
    unlinked at teardown.
    """
    made: list[tuple[bl.Lane, str, str]] = []

    def make(kind: str, backing: str = "memory", **kwargs: Any) -> bl.Lane:
        kwargs.setdefault("capacity", 8)
        kwargs.setdefault("slot_bytes", 64)
        name = f"test-core-{uuid.uuid4().hex[:12]}"
        lane = bl.create(name, kind, backing=backing, **kwargs)  # type: ignore[arg-type]
        made.append((lane, name, backing))
        return lane

    yield make
    for lane, name, backing in reversed(made):
        with contextlib.suppress(Exception):
            lane.close()
        bl.unlink(name, backing=backing)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "shm"])
def core_backing(request: pytest.FixtureRequest) -> str:
    """Each backing that must behave the same."""
    return str(request.param)


# -- journal: the factory over every backing, files under tmp_path -------------------------

JOURNAL_BACKINGS = ("memory", "shm", "file")


@pytest.fixture(params=JOURNAL_BACKINGS)
def journal_backing(request: pytest.FixtureRequest) -> str:
    """Each backing a journal must behave the same on (``file`` lives under ``tmp_path``)."""
    return str(request.param)


@pytest.fixture
def journal_make_lane(tmp_path: Any) -> Iterator[Callable[..., tuple[bl.Lane, dict[str, Any]]]]:
    """``journal_make_lane(backing, kind="journal", capacity=8, slot_bytes=32, **kw)``.

    Returns ``(lane, where)``; ``bl.attach(lane.name, **where)`` attaches another handle
    (``where`` holds ``backing`` and, for files, ``path``). Closed and unlinked at teardown.
    """
    made: list[tuple[bl.Lane, str, dict[str, Any]]] = []

    def make(backing: str, kind: str = "journal", **kwargs: Any) -> tuple[bl.Lane, dict[str, Any]]:
        kwargs.setdefault("capacity", 8)
        kwargs.setdefault("slot_bytes", 32)
        name = f"test-journal-{uuid.uuid4().hex[:12]}"
        where: dict[str, Any] = {"backing": backing}
        if backing == "file":
            where["path"] = str(tmp_path / f"{name}.lane")
        lane = bl.create(name, kind, **where, **kwargs)  # type: ignore[arg-type]
        made.append((lane, name, where))
        return lane, where

    yield make
    for lane, name, where in reversed(made):
        with contextlib.suppress(Exception):
            lane.close()
        bl.unlink(name, **where)
