"""Parameters are text in a spec; plans accept TOML and Python values and flatten them."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

__all__ = ["ParamError", "flatten_params", "param_text"]


class ParamError(ValueError):
    """A parameter value that has no text form (``.key`` says which)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def param_text(key: str, value: object) -> str:
    """Text of one scalar or list value: ``true``/``false``, decimal numbers, lists ``a, b``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ParamError(key, f"parameter {key!r} is empty: give it a value or leave it out")
        if any(ord(c) < 32 and c != "\t" for c in text):
            raise ParamError(key, f"parameter {key!r} contains a line break or control character")
        return text
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ", ".join(param_text(key, v) for v in value)
    raise ParamError(
        key, f"parameter {key!r} has a {type(value).__name__} value: use text, numbers or lists"
    )


def flatten_params(params: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """Nested tables become dotted keys: ``{"sasl": {"user": "u"}}`` -> ``{"sasl.user": "u"}``."""
    out: dict[str, str] = {}
    for key, value in params.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, full + "."))
        else:
            out[full] = param_text(full, value)
    return out
