"""A record as a JSON object, and its idempotency key: shared by the HTTP batch format and the
WebSocket messages, so a record reads and dedupes the same way over both.

::

    {"payload": "text"}                            # UTF-8 text ...
    {"payload_b64": "AAE=", "key": "user-1",       # ... or base64, for any bytes field
     "headers": [{"name": "trace", "value": "7"}, {"name": "bin", "value_b64": "/w=="}],
     "idempotency_key": "..."}

A bytes field is written as text when it decodes as UTF-8, else as base64 under ``<name>_b64``;
a reader takes either. Unknown fields are refused, so a typo is an error, not a lost field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

from byteor.adapters._record import OutRecord

__all__ = [
    "BadRecord",
    "record_object",
    "read_record",
    "idempotency_key",
    "payload_key",
    "RECORD_FIELDS",
    "BINARY_ONLY",
    "TEXT_ONLY",
    "HEADER_VALUE",
]

#: The fields of a record object (a protocol may allow more, e.g. the WebSocket ``id``).
RECORD_FIELDS: Final = frozenset(
    {"payload", "payload_b64", "key", "key_b64", "headers", "idempotency_key"}
)
# What h11 accepts as a header value: visible bytes (and obs-text), inner blanks only.
HEADER_VALUE: Final = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?")
# The key's hash is personalised with the name it was first given (by the HTTP adapter):
# changing it would change every key a receiver may have stored.
_PERSON: Final = b"byteor-http-v1"
#: The hash every key starts from (a copy is cheaper than a new one from its parameters).
_KEYS: Final = hashlib.blake2b(digest_size=16, person=_PERSON)


class BadRecord(ValueError):
    """A record object that cannot be read; the message says where and why."""


def _put_bytes(obj: dict[str, Any], name: str, data: bytes) -> None:
    try:
        obj[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        obj[name + "_b64"] = base64.b64encode(data).decode("ascii")


def record_object(rec: OutRecord, key: str | None = None) -> dict[str, Any]:
    """``rec`` as a JSON-ready object; ``key`` adds its ``idempotency_key``."""
    obj: dict[str, Any] = {}
    _put_bytes(obj, "payload", rec.payload)
    if rec.key is not None:
        _put_bytes(obj, "key", rec.key)
    if rec.headers:
        headers: list[dict[str, str]] = []
        for name, value in rec.headers:
            h: dict[str, Any] = {"name": name}
            _put_bytes(h, "value", value)
            headers.append(h)
        obj["headers"] = headers
    if key is not None:
        obj["idempotency_key"] = key
    return obj


_B64: Final = {"payload": "payload_b64", "key": "key_b64", "value": "value_b64"}


def _get_bytes(obj: Mapping[str, Any], name: str, where: str, *, required: bool) -> bytes | None:
    text, b64 = obj.get(name), obj.get(_B64[name])
    if text is not None and b64 is not None:
        raise BadRecord(f"{where}: give {name} or {name}_b64, not both")
    if text is not None:
        if not isinstance(text, str):
            raise BadRecord(f"{where}: {name} must be a string, got {type(text).__name__}")
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRecord(f"{where}: {name} is not valid Unicode (a lone surrogate)") from None
    if b64 is not None:
        if not isinstance(b64, str):
            raise BadRecord(f"{where}: {name}_b64 must be a string, got {type(b64).__name__}")
        try:
            return _b64decode(b64, strict_mode=True)  # base64.b64decode(validate=True)
        except (binascii.Error, ValueError):
            raise BadRecord(f"{where}: {name}_b64 is not valid base64") from None
    if required:
        raise BadRecord(f"{where}: a record needs payload (UTF-8 text) or payload_b64 (base64)")
    return None


_b64decode: Final = binascii.a2b_base64
#: Fields that take the full reading: with none of them, a record is its payload alone.
_NOT_BINARY_ONLY: Final = frozenset({"payload", "key", "key_b64", "headers"})
_NOT_TEXT_ONLY: Final = frozenset({"payload_b64", "key", "key_b64", "headers"})
#: The fields of a record that is its payload alone, in base64 / as text (an idempotency key
#: at most): an object of a ``dict`` whose fields are within one of them and whose payload
#: field is a string that decodes is ``OutRecord(payload)``, which a reader of many records may
#: take without :func:`read_record` (anything else goes through it, which says what is wrong).
BINARY_ONLY: Final = RECORD_FIELDS - _NOT_BINARY_ONLY
TEXT_ONLY: Final = RECORD_FIELDS - _NOT_TEXT_ONLY


def read_record(obj: object, where: str, fields: frozenset[str] = RECORD_FIELDS) -> OutRecord:
    """The record a JSON object describes (``where`` names it in errors; ``fields`` are the
    names allowed, the protocol's own included).

    Raises:
        BadRecord: the object is not a valid record.
    """
    if obj.__class__ is dict and fields.issuperset(obj):
        # The common shapes first (a payload, an id or idempotency key at most): what the
        # full reading below would return, without the checks that cannot fail for them
        # (a quarter of a record's time). Anything else, or a bad value, takes the full
        # reading, which says what is wrong.
        got = obj.get
        if _NOT_BINARY_ONLY.isdisjoint(obj):
            b64 = got("payload_b64")
            if b64.__class__ is str:
                try:
                    return OutRecord(_b64decode(b64, strict_mode=True))
                except (binascii.Error, ValueError):
                    pass
        elif _NOT_TEXT_ONLY.isdisjoint(obj):
            text = got("payload")
            if text.__class__ is str:
                try:
                    return OutRecord(text.encode("utf-8"))
                except UnicodeEncodeError:
                    pass
    if not isinstance(obj, dict):
        raise BadRecord(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    if not fields.issuperset(obj):
        unknown = sorted(set(obj) - fields)
        raise BadRecord(
            f"{where}: unknown field {unknown[0]!r} (a record has "
            f"{', '.join(_field_names(fields))})"
        )
    payload = _get_bytes(obj, "payload", where, required=True)
    assert payload is not None
    key = _get_bytes(obj, "key", where, required=False)
    raw_headers = obj.get("headers")
    headers: list[tuple[str, bytes]] = []
    if raw_headers is not None:
        if not isinstance(raw_headers, list):
            raise BadRecord(f"{where}: headers must be a list of {{name, value}} objects")
        for j, h in enumerate(raw_headers):
            at = f"{where}, headers[{j}]"
            if not isinstance(h, dict) or set(h) - {"name", "value", "value_b64"}:
                raise BadRecord(f"{at}: a header is {{'name': ..., 'value' or 'value_b64': ...}}")
            name = h.get("name")
            if not isinstance(name, str):
                raise BadRecord(f"{at}: name must be a string")
            value = _get_bytes(h, "value", at, required=False)
            if value is None:
                raise BadRecord(f"{at}: a header needs value or value_b64")
            headers.append((name, value))
    return OutRecord(payload, key, tuple(headers))


def _field_names(fields: frozenset[str]) -> list[str]:
    names = ["payload or payload_b64", "key or key_b64", "headers", "idempotency_key"]
    return names + sorted(fields - RECORD_FIELDS)


def idempotency_key(rec: OutRecord) -> str:
    """The record's idempotency key: the value of its ``idempotency-key`` header when it has
    one (and that value fits in an HTTP header), else 32 hex digits of a BLAKE2b hash of
    payload, key and headers. Records with equal content get equal keys: when two equal
    records are distinct events, give them distinct ``idempotency-key`` headers."""
    if not rec.headers and rec.key is None:
        return payload_key(rec.payload)
    for name, value in rec.headers:
        if name.lower() == "idempotency-key" and value and HEADER_VALUE.fullmatch(value):
            return value.decode("latin-1")
    h = _KEYS.copy()
    h.update(len(rec.payload).to_bytes(8, "big"))
    h.update(rec.payload)
    if rec.key is None:
        h.update(b"\x00")
    else:
        h.update(b"\x01" + len(rec.key).to_bytes(8, "big"))
        h.update(rec.key)
    for name, value in rec.headers:
        n = name.encode()
        h.update(len(n).to_bytes(4, "big") + n + len(value).to_bytes(8, "big"))
        h.update(value)
    return h.hexdigest()


def payload_key(payload: bytes) -> str:
    """:func:`idempotency_key` of a record that is its payload alone (no key, no headers)."""
    h = _KEYS.copy()
    h.update(len(payload).to_bytes(8, "big"))
    h.update(payload)
    h.update(b"\x00")
    return h.hexdigest()
