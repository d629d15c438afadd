"""Local sources and sinks that need no server: files, stdin/stdout, a generator, memory.

A source is polled without blocking (``poll`` returns records, ``[]`` for "nothing now" or
``None`` at the end); one that can have nothing now gives a ``fileno`` the executor waits on.
A sink writes records and is flushed and closed at the end. Records are lines: a line's
bytes without its ``\\n`` (a last line without one is a record too); sinks write each record
followed by ``\\n``.

Spec parameters (``source.<name>.param.*`` / ``sink.<name>.param.*``):

* ``file`` source: ``path``; ``file`` sink: ``path``, ``append`` (``true``/``false``).
* ``stdin`` source and ``stdout`` sink: none.
* ``generator`` source: ``count`` (default 10), ``seed`` (default 0), ``template`` (default
  ``{i}``) with placeholders ``{i}`` (index), ``{seed}``, ``{rand}`` (a 32-bit number from a
  SplitMix64 sequence of the seed, so the same on every machine) and ``{key}`` (``rand %
  keys``, param ``keys``, default 16). Other braces are kept as they are, so JSON templates
  need no escaping.
* ``memory``: lists handed to the executor by the caller (tests and examples).
"""

from __future__ import annotations

import itertools
import os
import re
import select
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO, Final, Protocol, TextIO

from byteor.exec._errors import AdapterUnavailable, StageConfigError

__all__ = [
    "RecordSource",
    "RecordSink",
    "LineSource",
    "GeneratorSource",
    "IterableSource",
    "StreamSink",
    "ListSink",
    "LOCAL_SOURCES",
    "LOCAL_SINKS",
    "open_source",
    "open_sink",
    "splitmix64",
]

LOCAL_SOURCES: Final = ("file", "stdin", "generator", "memory")
LOCAL_SINKS: Final = ("file", "stdout", "memory")
_CHUNK: Final = 1 << 16
_MASK64: Final = (1 << 64) - 1


class RecordSource(Protocol):
    def poll(self, max_count: int) -> list[bytes] | None:
        """Up to ``max_count`` records without blocking; ``[]``: none now; ``None``: ended."""
        ...

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when ``poll`` may have more (``None``: never
        returns ``[]``)."""
        ...

    def close(self) -> None: ...


class RecordSink(Protocol):
    def write(self, records: Sequence[bytes]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


# -- sources -------------------------------------------------------------------------------------


class LineSource:
    """Records are the lines of a binary stream (a file, a pipe, a terminal)."""

    def __init__(self, stream: BinaryIO, *, close_stream: bool = True) -> None:
        self._stream = stream
        self._close_stream = close_stream
        self._buf = b""
        self._lines: list[bytes] = []
        self._eof = False
        self._fd: int | None = None
        try:
            fd = stream.fileno()
        except (OSError, AttributeError, ValueError):
            fd = -1
        # A regular file or an in-memory stream never makes us wait; a pipe or tty can.
        if fd >= 0 and not stat.S_ISREG(os.fstat(fd).st_mode):
            self._fd = fd

    def fileno(self) -> int | None:
        return self._fd

    def _fill(self) -> bool:
        """Read one chunk; False when nothing is available now."""
        if self._fd is not None:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if not ready:
                return False
            chunk = os.read(self._fd, _CHUNK)
        else:
            chunk = self._stream.read(_CHUNK)
        if not chunk:
            self._eof = True
            if self._buf:
                self._lines.append(self._buf)
                self._buf = b""
            return True
        parts = (self._buf + chunk).split(b"\n")
        self._buf = parts.pop()
        self._lines.extend(parts)
        return True

    def poll(self, max_count: int) -> list[bytes] | None:
        while len(self._lines) < max_count and not self._eof:
            if not self._fill():
                break
        if not self._lines:
            return None if self._eof else []
        out, self._lines = self._lines[:max_count], self._lines[max_count:]
        return out

    def close(self) -> None:
        if self._close_stream:
            self._stream.close()


def splitmix64(state: int) -> tuple[int, int]:
    """One SplitMix64 step: ``(next_state, output)``, both 64-bit."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


_PLACEHOLDER: Final = re.compile(r"\{(i|seed|rand|key)\}")


class GeneratorSource:
    """``count`` records from ``template``, the same for the same parameters everywhere."""

    def __init__(self, count: int, seed: int = 0, template: str = "{i}", keys: int = 16) -> None:
        if count < 0 or keys < 1:
            raise ValueError("count must be >= 0 and keys >= 1")
        self._count = count
        self._seed = seed
        self._keys = keys
        self._parts = _PLACEHOLDER.split(template)  # text, name, text, name, ..., text
        self._i = 0
        self._state = seed & _MASK64

    def fileno(self) -> int | None:
        return None

    def _record(self) -> bytes:
        self._state, rand = splitmix64(self._state)
        rand >>= 32
        values = {
            "i": str(self._i),
            "seed": str(self._seed),
            "rand": str(rand),
            "key": str(rand % self._keys),
        }
        parts = self._parts
        text = "".join(p if k % 2 == 0 else values[p] for k, p in enumerate(parts))
        self._i += 1
        return text.encode("utf-8")

    def poll(self, max_count: int) -> list[bytes] | None:
        n = min(max_count, self._count - self._i)
        if n <= 0:
            return None
        return [self._record() for _ in range(n)]

    def close(self) -> None:
        self._i = self._count


def _as_bytes(item: bytes | str | bytearray | memoryview) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else bytes(item)


class IterableSource:
    """Records from an iterable of bytes or str (the ``memory`` source)."""

    def __init__(self, records: Iterable[bytes | str]) -> None:
        self._it: Iterator[bytes | str] = iter(records)
        self._done = False

    def fileno(self) -> int | None:
        return None

    def poll(self, max_count: int) -> list[bytes] | None:
        if self._done:
            return None
        out = [
            item if type(item) is bytes else _as_bytes(item)
            for item in itertools.islice(self._it, max_count)
        ]
        if len(out) < max_count:
            self._done = True
        return out or None

    def close(self) -> None:
        self._done = True


# -- sinks --------------------------------------------------------------------------------------


class StreamSink:
    """Writes each record and ``\\n`` to a binary stream; ``fsync`` on close for files."""

    def __init__(self, stream: BinaryIO, *, close_stream: bool, sync: bool) -> None:
        self._stream = stream
        self._close_stream = close_stream
        self._sync = sync

    def write(self, records: Sequence[bytes]) -> None:
        if records:
            self._stream.write(b"\n".join(records) + b"\n")

    def flush(self) -> None:
        self._stream.flush()
        if self._sync:
            os.fsync(self._stream.fileno())

    def close(self) -> None:
        self.flush()
        if self._close_stream:
            self._stream.close()


class ListSink:
    """Appends records to a list (the ``memory`` sink)."""

    def __init__(self, into: list[bytes] | None = None) -> None:
        self.records: list[bytes] = [] if into is None else into

    def write(self, records: Sequence[bytes]) -> None:
        self.records.extend(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- from a spec ----------------------------------------------------------------------------------


def _check(params: Mapping[str, str], allowed: Sequence[str], who: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise StageConfigError(
            f"{who} does not take param {', '.join(unknown)} (it takes: "
            f"{', '.join(allowed) or 'none'})"
        )


def _int(params: Mapping[str, str], key: str, default: int, who: str) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise StageConfigError(f"{who}: param {key} = {raw!r} is not an integer") from None


def _binary(stream: TextIO | BinaryIO) -> BinaryIO:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        return buffer  # type: ignore[no-any-return]
    return stream  # type: ignore[return-value]


def _unavailable(adapter: str, role: str, names: Sequence[str]) -> AdapterUnavailable:
    return AdapterUnavailable(
        f"adapter {adapter!r} cannot be a {role} of this run: the local executor runs "
        f"{', '.join(names)} {role}s (server adapters run under EdgePlane)"
    )


def open_source(
    name: str,
    adapter: str,
    params: Mapping[str, str],
    *,
    stdin: BinaryIO | TextIO | None = None,
) -> RecordSource:
    """A local source for ``source.<name>``.

    Raises:
        AdapterUnavailable: not a local adapter (or ``memory``, which the caller supplies).
        StageConfigError: missing or unknown parameters, unreadable file.
    """
    who = f"source {name!r} ({adapter})"
    if adapter == "file":
        _check(params, ("path",), who)
        path = params.get("path")
        if path is None:
            raise StageConfigError(f"{who} needs param path")
        try:
            return LineSource(open(path, "rb"))
        except OSError as exc:
            raise StageConfigError(f"{who}: cannot read {path}: {exc.strerror or exc}") from None
    if adapter == "stdin":
        _check(params, (), who)
        return LineSource(_binary(stdin if stdin is not None else sys.stdin), close_stream=False)
    if adapter == "generator":
        _check(params, ("count", "seed", "template", "keys"), who)
        count = _int(params, "count", 10, who)
        keys = _int(params, "keys", 16, who)
        if count < 0 or keys < 1:
            raise StageConfigError(f"{who}: count must be >= 0 and keys >= 1")
        return GeneratorSource(
            count, _int(params, "seed", 0, who), params.get("template", "{i}"), keys
        )
    if adapter == "memory":
        raise AdapterUnavailable(
            f"{who}: a memory source gets its records from the caller: pass "
            f"sources={{{name!r}: [...]}} to the executor"
        )
    raise _unavailable(adapter, "source", LOCAL_SOURCES)


def open_sink(
    name: str,
    adapter: str,
    params: Mapping[str, str],
    *,
    stdout: BinaryIO | TextIO | None = None,
) -> RecordSink:
    """A local sink for ``sink.<name>`` (see :func:`open_source`)."""
    who = f"sink {name!r} ({adapter})"
    if adapter == "file":
        _check(params, ("path", "append"), who)
        path = params.get("path")
        if path is None:
            raise StageConfigError(f"{who} needs param path")
        append = params.get("append", "false") == "true"
        try:
            # Like `mkdir -p`: a fresh checkout has no out/ folder yet.
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            stream = open(path, "ab" if append else "wb")  # noqa: SIM115 - the sink closes it
        except OSError as exc:
            raise StageConfigError(f"{who}: cannot write {path}: {exc.strerror or exc}") from None
        return StreamSink(stream, close_stream=True, sync=True)
    if adapter == "stdout":
        _check(params, (), who)
        out = _binary(stdout if stdout is not None else sys.stdout)
        return StreamSink(out, close_stream=False, sync=False)
    if adapter == "memory":
        _check(params, (), who)
        return ListSink()
    raise _unavailable(adapter, "sink", LOCAL_SINKS)
