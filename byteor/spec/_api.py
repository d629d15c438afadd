"""The front door of the spec layer: parse, validate, canonicalize, hash."""

from __future__ import annotations

from dataclasses import dataclass

from byteor.spec._codec import decode_document, encode_spec
from byteor.spec._errors import SpecValidationError
from byteor.spec._findings import Finding, has_errors, sort_findings
from byteor.spec._kv import KvDocument, canonical_kv_text, hash_text, parse_kv
from byteor.spec._model import PipelineSpecV1
from byteor.spec._validate import check_spec

__all__ = [
    "SpecSource",
    "ParsedSpec",
    "parse_spec",
    "validate_v1",
    "decode_spec",
    "canonical",
    "canonical_hash",
]

# Findings about the input as a whole (binary, too large): nothing else is reported.
_WHOLE_INPUT = frozenset({"KV102", "KV103"})

SpecSource = str | bytes | KvDocument | PipelineSpecV1


@dataclass(frozen=True, slots=True)
class ParsedSpec:
    """The result of reading a spec text.

    Attributes:
        document: the parsed lines.
        spec: the typed spec, or ``None`` when there are error findings.
        findings: every finding, errors and warnings, in line order.
    """

    document: KvDocument
    spec: PipelineSpecV1 | None
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return self.spec is not None


def parse_spec(source: str | bytes | KvDocument) -> ParsedSpec:
    """Parse and validate a spec text. Never raises on bad input."""
    doc = source if isinstance(source, KvDocument) else parse_kv(source)
    if any(f.code in _WHOLE_INPUT for f in doc.findings):
        # Nothing was read: missing-key findings would only be noise.
        return ParsedSpec(doc, None, doc.findings)
    decoded = decode_document(doc)
    findings = decoded.findings + check_spec(
        decoded.spec, decoded.lines, decoded.skip, decoded.explicit
    )
    ordered = tuple(sort_findings(findings))
    return ParsedSpec(doc, None if has_errors(ordered) else decoded.spec, ordered)


def validate_v1(source: SpecSource) -> list[Finding]:
    """All findings about a spec (text, bytes, document or typed spec), in line order."""
    if isinstance(source, PipelineSpecV1):
        return sort_findings(check_spec(source))
    return list(parse_spec(source).findings)


def decode_spec(source: str | bytes | KvDocument) -> PipelineSpecV1:
    """The typed spec of a text.

    Raises:
        SpecValidationError: the text has error findings (all listed in ``.findings``).
    """
    parsed = parse_spec(source)
    if parsed.spec is None:
        raise SpecValidationError(parsed.findings)
    return parsed.spec


def canonical(source: SpecSource) -> str:
    """The canonical text: normalized values, defaults left out, keys sorted, LF, no comments.

    Works on text that does not validate (lines that do not parse are left out).
    """
    if isinstance(source, PipelineSpecV1):
        return encode_spec(source)
    doc = source if isinstance(source, KvDocument) else parse_kv(source)
    return canonical_kv_text(doc)


def canonical_hash(source: SpecSource) -> str:
    """``sha256:<hex>`` of the canonical bytes."""
    return hash_text(canonical(source))
