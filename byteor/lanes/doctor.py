"""``byteor doctor``: find lane segments nobody uses any more, and remove them on request.

A segment file outlives its processes: a producer killed with ``kill -9`` leaves
``/dev/shm/byteor-<name>`` behind. The doctor looks at every ``byteor-*`` file of a
directory, validates it exactly as :func:`byteor.lanes.attach` does (attaching writes
nothing, and registers nobody), and gives each a verdict:

* ``live``    - its creator, its producer or one of its consumers still runs;
* ``stale``   - the creator and every registered process are gone;
* ``invalid`` - it fails validation (the error says why);
* ``foreign`` - it belongs to another user: not ours to judge, never removed.

A pipeline run's *counters segment* (``byteor-<run>.-counters``, per-node counters) is
judged the same way: live while its creator or a process that owns one of its rows runs.

A process is identified by its pid *and* its start time, so a reused pid reads as gone.
``remove`` unlinks stale and invalid segments only, after looking at each one again (a stale
segment under its registration lock), so a segment that came back to life in between stays.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal

from byteor.lanes import layout as L
from byteor.lanes._counters import attach_counters, is_counters_file
from byteor.lanes._errors import AttachError, BadMagic, LaneError
from byteor.lanes._lane import read_statistics
from byteor.lanes._platform import pid_alive
from byteor.lanes._segment import SHM_DIR, SHM_PREFIX, Segment, attach_segment

__all__ = [
    "Verdict",
    "ConsumerReport",
    "SegmentReport",
    "DoctorReport",
    "inspect_segment",
    "scan",
    "remove",
    "run_cli",
    "EXIT_OK",
    "EXIT_FOUND",
    "EXIT_USAGE",
]

Verdict = Literal["live", "stale", "invalid", "foreign"]

EXIT_OK: Final = 0
EXIT_FOUND: Final = 1
EXIT_USAGE: Final = 2

# A file without magic this young may be a segment its creator is still initializing
# (create writes the magic last); it is reported but not removed.
CREATING_GRACE_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class ConsumerReport:
    """One registered consumer line."""

    index: int
    name: str
    policy: str
    position: int
    lag: int
    pid: int
    alive: bool


@dataclass(frozen=True, slots=True)
class SegmentReport:
    """What the doctor found in one ``byteor-*`` file."""

    name: str
    path: str
    verdict: Verdict
    size: int
    error: str | None = None
    error_type: str | None = None
    kind: str | None = None
    capacity: int | None = None
    slot_bytes: int | None = None
    creator_pid: int | None = None
    creator_alive: bool | None = None
    producer_pid: int | None = None
    producer_alive: bool | None = None
    published: int | None = None
    closed: bool | None = None
    consumers: tuple[ConsumerReport, ...] = ()
    removable: bool = False
    note: str | None = None
    removed: bool = False
    remove_error: str | None = None


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every segment of one directory, in name order."""

    directory: str
    segments: tuple[SegmentReport, ...] = field(default_factory=tuple)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for s in self.segments if s.verdict == verdict)

    @property
    def remaining_problems(self) -> int:
        """Stale or invalid segments still in place."""
        return sum(1 for s in self.segments if s.verdict in ("stale", "invalid") and not s.removed)

    @property
    def exit_code(self) -> int:
        return EXIT_FOUND if self.remaining_problems else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": self.directory,
            "segments": [asdict(s) for s in self.segments],
            "summary": {
                "live": self.count("live"),
                "stale": self.count("stale"),
                "invalid": self.count("invalid"),
                "foreign": self.count("foreign"),
                "removed": sum(1 for s in self.segments if s.removed),
            },
            "removed": [s.path for s in self.segments if s.removed],
            "exit_code": self.exit_code,
        }


# -- inspecting ---------------------------------------------------------------------------


def inspect_segment(path: str, *, now: float | None = None) -> SegmentReport:
    """Validate and describe the segment file at ``path`` (named ``byteor-<name>``)."""
    base = os.path.basename(path)
    name = base[len(SHM_PREFIX) :] if base.startswith(SHM_PREFIX) else base
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return SegmentReport(name, path, "invalid", 0, "it disappeared while looking", "gone")
    if stat.S_ISREG(st.st_mode) and st.st_uid != os.geteuid():
        return SegmentReport(
            name,
            path,
            "foreign",
            st.st_size,
            note=f"belongs to uid {st.st_uid}; run the doctor as that user",
        )
    if is_counters_file(path):
        return _inspect_counters(name, path, st, now)
    try:
        seg = attach_segment(name, backing="file", path=path)
    except (AttachError, ValueError) as exc:
        return _invalid(name, path, st, exc, time.time() if now is None else now)
    try:
        return _describe(name, path, st.st_size, seg)
    finally:
        seg.close()


def _inspect_counters(name: str, path: str, st: os.stat_result, now: float | None) -> SegmentReport:
    try:
        counters = attach_counters(name, path=path)
    except (AttachError, ValueError) as exc:
        return _invalid(name, path, st, exc, time.time() if now is None else now)
    try:
        header = counters.header()
        rows = counters.read_all()
    finally:
        counters.close()
    creator_alive = pid_alive(header.creator_pid, header.creator_start)
    anyone = creator_alive or any(r.alive for r in rows)
    return SegmentReport(
        name,
        path,
        "live" if anyone else "stale",
        st.st_size,
        kind="counters",
        capacity=len(rows),
        creator_pid=header.creator_pid,
        creator_alive=creator_alive,
        closed=bool(header.finished),
        removable=not anyone,
    )


def _invalid(name: str, path: str, st: os.stat_result, exc: Exception, now: float) -> SegmentReport:
    removable = True
    note = None
    young = now - st.st_mtime < CREATING_GRACE_S
    if isinstance(exc, BadMagic) and young and _magic_is_zero(path):
        removable = False
        note = f"no magic yet and younger than {CREATING_GRACE_S:g} s: it may be being created"
    return SegmentReport(
        name,
        path,
        "invalid",
        st.st_size,
        error=str(exc),
        error_type=type(exc).__name__,
        removable=removable,
        note=note,
    )


def _magic_is_zero(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\0" * 8
    except OSError:
        return False


def _describe(name: str, path: str, size: int, seg: Segment) -> SegmentReport:
    header = seg.header()
    stats = read_statistics(seg)
    creator_alive = pid_alive(header.creator_pid, header.creator_start)
    consumers = tuple(
        ConsumerReport(c.index, c.name, c.policy, c.position, c.lag, c.pid, c.attached)
        for c in stats.consumers
    )
    anyone = creator_alive or stats.producer_attached or any(c.alive for c in consumers)
    return SegmentReport(
        name,
        path,
        "live" if anyone else "stale",
        size,
        kind=L.KIND_NAMES[header.kind],
        capacity=stats.capacity,
        slot_bytes=stats.slot_bytes,
        creator_pid=header.creator_pid,
        creator_alive=creator_alive,
        producer_pid=stats.producer_pid,
        producer_alive=stats.producer_attached,
        published=stats.published,
        closed=stats.closed,
        consumers=consumers,
        removable=not anyone,
    )


def scan(directory: str = SHM_DIR, *, now: float | None = None) -> DoctorReport:
    """Inspect every ``byteor-*`` entry of ``directory`` (``NotADirectoryError`` and
    ``FileNotFoundError`` propagate)."""
    names = sorted(n for n in os.listdir(directory) if n.startswith(SHM_PREFIX))
    return DoctorReport(
        directory, tuple(inspect_segment(os.path.join(directory, n), now=now) for n in names)
    )


# -- removing -----------------------------------------------------------------------------


def remove(report: DoctorReport, *, now: float | None = None) -> DoctorReport:
    """Unlink the removable stale and invalid segments of ``report``; return the new report."""
    out: list[SegmentReport] = []
    for found in report.segments:
        if found.verdict in ("stale", "invalid") and found.removable:
            out.append(_remove_one(found, now))
        else:
            out.append(found)
    return replace(report, segments=tuple(out))


def _remove_one(found: SegmentReport, now: float | None) -> SegmentReport:
    path = found.path
    try:
        if found.verdict == "stale" and found.kind == "counters":
            # Rows have no registration lock: look again, then unlink.
            again = inspect_segment(path, now=now)
            if again.verdict != "stale":
                return replace(again, note="came back to life since it was inspected")
            os.unlink(path)
            return replace(again, removed=True)
        if found.verdict == "stale":
            return _remove_stale(found)
        again = inspect_segment(path, now=now)
        if again.verdict != "invalid" or not again.removable:
            return replace(again, note="changed since it was inspected; left in place")
        os.unlink(path)
    except FileNotFoundError:
        return replace(found, removed=True, note="already gone")
    except OSError as exc:
        return replace(found, remove_error=f"cannot remove {path}: {exc.strerror}")
    return replace(found, removed=True)


def _remove_stale(found: SegmentReport) -> SegmentReport:
    path = found.path
    try:
        seg = attach_segment(found.name, backing="file", path=path)
    except (AttachError, ValueError) as exc:
        return replace(found, note=f"changed since it was inspected ({exc}); left in place")
    try:
        # Under the registration lock nobody can join between the last look and the unlink.
        with seg.registration_lock():
            again = _describe(found.name, path, found.size, seg)
            if again.verdict != "stale":
                return replace(again, note="came back to life since it was inspected")
            os.unlink(path)
    finally:
        seg.close()
    return replace(again, removed=True)


# -- the command --------------------------------------------------------------------------


def _alive(pid: int | None, alive: bool | None) -> str:
    if not pid:
        return "none"
    return f"pid {pid} {'alive' if alive else 'gone'}"


def format_text(report: DoctorReport, *, removing: bool) -> str:
    """The human listing: one block per segment, then a summary line."""
    lines: list[str] = []
    width = max((len(s.name) for s in report.segments), default=0)
    for s in report.segments:
        head = f"{s.verdict:<8} {s.name:<{width}}"
        if s.kind == "counters":
            lines.append(
                f"{head}  counters {s.capacity} row(s), {s.size} bytes"
                + (", run finished" if s.closed else "")
            )
            lines.append(f"         creator {_alive(s.creator_pid, s.creator_alive)}")
        elif s.kind is not None:
            lines.append(
                f"{head}  {s.kind} capacity {s.capacity} x {s.slot_bytes} B, {s.size} bytes, "
                f"published {s.published}{', closed' if s.closed else ''}"
            )
            lines.append(
                f"         creator {_alive(s.creator_pid, s.creator_alive)}; "
                f"producer {_alive(s.producer_pid, s.producer_alive)}"
            )
            for c in s.consumers:
                label = repr(c.name) if c.name else "(anonymous)"
                lines.append(
                    f"         consumer {c.index} {label} {c.policy} position {c.position} "
                    f"lag {c.lag} owner {_alive(c.pid, c.alive)}"
                )
        else:
            lines.append(f"{head}  {s.size} bytes: {s.error or ''}".rstrip(": "))
        if s.note:
            lines.append(f"         note: {s.note}")
        if s.removed:
            lines.append(f"         removed {s.path}")
        if s.remove_error:
            lines.append(f"         NOT removed: {s.remove_error}")
    summary = (
        f"{report.directory}: {len(report.segments)} lane segment(s): "
        f"{report.count('live')} live, {report.count('stale')} stale, "
        f"{report.count('invalid')} invalid"
    )
    if report.count("foreign"):
        summary += f", {report.count('foreign')} of other users"
    removed = sum(1 for s in report.segments if s.removed)
    if removing:
        summary += f"; removed {removed}"
    if report.remaining_problems:
        summary += f"; {report.remaining_problems} stale or invalid left" + (
            "" if removing else ": `byteor doctor --remove` removes them"
        )
    lines.append(summary)
    return "\n".join(lines) + "\n"


def _usage_error(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "json", False):
        json.dump({"error": message, "exit_code": EXIT_USAGE}, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    sys.stderr.write(f"byteor: error: {message}\n")
    return EXIT_USAGE


def run_cli(args: argparse.Namespace) -> int:
    """``byteor doctor [--dir DIR] [--remove] [--json]``; exit 0 clean, 1 stale or invalid
    segments left, 2 usage error."""
    directory = os.fspath(getattr(args, "dir", None) or SHM_DIR)
    removing = bool(getattr(args, "remove", False))
    try:
        report = scan(directory)
    except (FileNotFoundError, NotADirectoryError):
        return _usage_error(args, f"--dir {directory}: no such directory")
    except PermissionError:
        return _usage_error(args, f"--dir {directory}: permission denied")
    except LaneError as exc:  # UnsupportedPlatform: nothing can be attached here
        return _usage_error(args, str(exc))
    if removing:
        report = remove(report)
    if getattr(args, "json", False):
        json.dump(report.to_json(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(report, removing=removing))
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    return report.exit_code
