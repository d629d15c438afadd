"""The flat ``key = value`` text: parsing with line numbers, and the canonical form.

Theory of operation: parsing never raises. Input is cut into lines on ``\\n`` only (a
trailing ``\\r`` is dropped, so CRLF files read the same); each line is decoded on its own,
so one bad line costs one finding, not the file. Blank lines and lines whose first
non-blank character is ``#`` are comments. Everything after the first ``=`` is the value,
``#`` included (values may be URLs). A line that is not ``key = value`` is reported and
left out; so is a repeated key (the first one stays).

The canonical form is computed on this level, not on the typed spec, so that ``fmt`` works
on a spec that does not validate yet: each value is normalized for its key's type
(integers in plain decimal, lists as ``a, b``, words in lower case), keys at their default
are left out, keys are sorted bytewise, one ``key = value`` per line, LF, one trailing
newline. For a valid spec this is the same text :func:`encode_spec` renders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from byteor.spec._constants import MAX_FINDINGS, MAX_SPEC_BYTES
from byteor.spec._findings import Finding, make
from byteor.spec._schema import KEY_RE, normalize_value, rule_for

__all__ = ["KvEntry", "KvDocument", "parse_kv", "canonical_kv_text", "hash_text"]

_BOM = "\ufeff"
_LINE_BREAKS = frozenset("\x85\u2028\u2029")


@dataclass(frozen=True, slots=True)
class KvEntry:
    """One ``key = value`` line: the key, the stripped value and its 1-based line."""

    key: str
    value: str
    line: int


@dataclass(frozen=True, slots=True)
class KvDocument:
    """A parsed text: entries in input order (first of each key) and syntax findings."""

    entries: tuple[KvEntry, ...]
    findings: tuple[Finding, ...]

    def get(self, key: str) -> str | None:
        for entry in self.entries:
            if entry.key == key:
                return entry.value
        return None

    def as_dict(self) -> dict[str, str]:
        return {e.key: e.value for e in self.entries}

    def lines(self) -> dict[str, int]:
        return {e.key: e.line for e in self.entries}


class _Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.full = False

    def add(self, finding: Finding) -> None:
        if self.full:
            return
        if len(self.findings) >= MAX_FINDINGS:
            self.findings.append(
                make(
                    "KV109",
                    "",
                    finding.line,
                    f"more than {MAX_FINDINGS} findings; fix these and run again to see the rest",
                )
            )
            self.full = True
            return
        self.findings.append(finding)


def _lines_of(source: str | bytes, out: _Collector) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of every decodable line; report the others."""
    if isinstance(source, str):
        if len(source) > MAX_SPEC_BYTES or len(source.encode("utf-8", "surrogatepass")) > (
            MAX_SPEC_BYTES
        ):
            out.add(_too_large())
            return
        if "\x00" in source:
            out.add(_binary(source.count("\n", 0, source.index("\x00")) + 1))
            return
        if source.startswith(_BOM):
            source = source[1:]
        for number, text in enumerate(source.split("\n"), start=1):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
                out.add(make("KV101", "", number, _UTF8_MESSAGE))
                continue
            yield number, text
        return
    if len(source) > MAX_SPEC_BYTES:
        out.add(_too_large())
        return
    if b"\x00" in source:
        out.add(_binary(source.count(b"\n", 0, source.index(b"\x00")) + 1))
        return
    if source.startswith(b"\xef\xbb\xbf"):
        source = source[3:]
    for number, raw in enumerate(source.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.add(
                make("KV101", "", number, f"{_UTF8_MESSAGE} (bad byte at column {exc.start + 1})")
            )
            continue
        yield number, text


_UTF8_MESSAGE = "line is not valid UTF-8: save the file as UTF-8"


def _too_large() -> Finding:
    return make(
        "KV103",
        "",
        1,
        f"input is larger than {MAX_SPEC_BYTES} bytes; a spec is a short text file, "
        "check that this is the right file",
    )


def _binary(line: int) -> Finding:
    return make("KV102", "", line, "input contains a NUL byte: this is a binary file, not a spec")


def _bad_char(value: str) -> str | None:
    for c in value:
        code = ord(c)
        if (code < 32 and c != "\t") or code == 127 or c in _LINE_BREAKS:
            return f"U+{code:04X}"
    return None


def parse_kv(source: str | bytes) -> KvDocument:
    """Parse ``key = value`` text (or UTF-8 bytes). Never raises; problems become findings."""
    out = _Collector()
    entries: list[KvEntry] = []
    seen: dict[str, int] = {}
    for number, raw_line in _lines_of(source, out):
        if out.full:
            break
        text = raw_line[:-1] if raw_line.endswith("\r") else raw_line
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "=" not in stripped:
            shown = stripped if len(stripped) <= 40 else stripped[:37] + "..."
            out.add(
                make(
                    "KV104",
                    "",
                    number,
                    f"{shown!r} is not `key = value`: add ` = value`, or start the line "
                    "with # to make it a comment",
                )
            )
            continue
        key, _, value = stripped.partition("=")
        key = key.strip()
        value = value.strip()
        if KEY_RE.fullmatch(key) is None:
            shown = key if len(key) <= 40 else key[:37] + "..."
            out.add(
                make(
                    "KV105",
                    shown,
                    number,
                    f"key {shown!r} is not valid: use dot-separated words of "
                    "A-Z a-z 0-9 _ - (e.g. lane.raw.capacity)",
                )
            )
            continue
        if not value:
            out.add(make("KV107", key, number, f"{key} has no value: give one, or remove the line"))
            continue
        bad = _bad_char(value)
        if bad is not None:
            out.add(
                make(
                    "KV108",
                    key,
                    number,
                    f"value of {key} contains the control character {bad}: remove it",
                )
            )
            continue
        first = seen.get(key)
        if first is not None:
            out.add(
                make(
                    "KV106",
                    key,
                    number,
                    f"{key} is already set on line {first}: keep one of the two lines",
                )
            )
            continue
        seen[key] = number
        entries.append(KvEntry(key, value, number))
    return KvDocument(tuple(entries), tuple(out.findings))


def canonical_items(doc: KvDocument) -> list[tuple[str, str]]:
    """Normalized ``(key, value)`` pairs, defaults left out, sorted bytewise by key."""
    items: list[tuple[str, str]] = []
    for entry in doc.entries:
        rule = rule_for(entry.key)
        value = entry.value
        if rule is not None:
            value = normalize_value(rule, value)
            if rule.default is not None and value == rule.default:
                continue
        items.append((entry.key, value))
    items.sort(key=lambda kv: kv[0].encode("utf-8"))
    return items


def render_items(items: list[tuple[str, str]]) -> str:
    return "".join(f"{key} = {value}\n" for key, value in items)


def canonical_kv_text(doc: KvDocument) -> str:
    """The canonical text of a parsed document (valid or not)."""
    return render_items(canonical_items(doc))


def hash_text(text: str) -> str:
    """``sha256:`` + the hex digest of the UTF-8 bytes of ``text``."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
