"""What the ring relies on from the CPU and the OS, checked once.

Memory ordering. Producers and consumers in different processes share cursors with plain
8-byte stores and loads through a ``memoryview`` cast to ``"Q"``; CPython performs those with
one ``memcpy`` of 8 aligned bytes, which compiles to a single ``mov``. The protocol is the
classic single-writer ring:

* the producer writes the payload, then the descriptor, then stores its cursor;
* a consumer loads the producer cursor, then reads the descriptor and payload;
* a consumer stores its own cursor only after it is done with the slot, and the producer
  loads that cursor before overwriting the slot.

This is correct when stores are not reordered with other stores and loads are not reordered
with other loads, and when aligned 8-byte accesses are single-copy atomic: all true on x86-64
(TSO). It is not true on ARM or POWER, where these plain accesses need barriers that Python
cannot issue, so the shared-memory path refuses to run there. The in-memory backing is used
by threads of one process, where the GIL's own locking orders every access, so it is safe
everywhere.

Waking. A sleeping side waits with ``futex(FUTEX_WAIT)`` on the low 32 bits of the cursor it
is waiting for and raises its "sleeping" byte first; the other side issues ``FUTEX_WAKE``
only when it sees that byte set, so the fast path never enters the kernel. A store followed
by a load of another location may be reordered on x86, so a wake can in rare cases be
missed; every sleep therefore has a short bounded timeout and re-checks, which turns a
missed wake into a delay of at most that timeout, never a hang.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
import time
from typing import Final

from byteor.lanes._errors import UnsupportedPlatform

__all__ = [
    "check_shared_memory_platform",
    "futex_wait",
    "futex_wake",
    "futex_available",
    "process_start_time",
    "pid_alive",
]

_TSO_MACHINES: Final = frozenset({"x86_64", "amd64", "AMD64", "i686", "i386"})
_SYS_FUTEX: Final[dict[str, int]] = {"x86_64": 202, "amd64": 202, "AMD64": 202}
_FUTEX_WAIT: Final = 0
_FUTEX_WAKE: Final = 1
_INT_MAX: Final = 0x7FFFFFFF


def check_shared_memory_platform() -> None:
    """Raise :class:`UnsupportedPlatform` unless cross-process rings are safe on this CPU."""
    machine = platform.machine()
    if machine not in _TSO_MACHINES or sys.byteorder != "little":
        raise UnsupportedPlatform(
            f"shared-memory lanes rely on x86-64 store ordering and this CPU is {machine!r}; "
            "use backing='memory' for threads of one process, or run on x86-64"
        )


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_syscall() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux") or platform.machine() not in _SYS_FUTEX:
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.syscall
    fn.restype = ctypes.c_long
    return fn


_syscall = _load_syscall()
_SYS_FUTEX_NR: Final = _SYS_FUTEX.get(platform.machine(), -1)


def futex_available() -> bool:
    return _syscall is not None


def futex_wait(address: int, expected: int, timeout_s: float) -> None:
    """Sleep while the u32 at ``address`` equals ``expected``, at most ``timeout_s``.

    Returns on a wake, a changed value, a signal or the timeout; the caller re-checks.
    Without futexes (not Linux x86-64) it sleeps briefly instead.
    """
    if _syscall is None:
        time.sleep(min(timeout_s, 0.001))
        return
    ts = _Timespec(int(timeout_s), int((timeout_s % 1.0) * 1e9))
    _syscall(
        _SYS_FUTEX_NR,
        ctypes.c_void_p(address),
        _FUTEX_WAIT,
        ctypes.c_uint32(expected & 0xFFFFFFFF),
        ctypes.byref(ts),
        None,
        0,
    )


def futex_wake(address: int) -> None:
    """Wake every waiter sleeping on the u32 at ``address``."""
    if _syscall is None:
        return
    _syscall(_SYS_FUTEX_NR, ctypes.c_void_p(address), _FUTEX_WAKE, _INT_MAX, None, None, 0)


def process_start_time(pid: int) -> int:
    """The start time of ``pid`` in clock ticks since boot (0 if unknown), to tell pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def pid_alive(pid: int, start_time: int) -> bool:
    """Whether the process that registered as (pid, start_time) still runs."""
    # The pid comes from a segment, which may hold anything; os.kill overflows past pid_t.
    if not 0 < pid <= _INT_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start_time:
        now = process_start_time(pid)
        return now in (0, start_time)
    return True
