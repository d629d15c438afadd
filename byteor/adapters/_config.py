"""Typed config schemas that adapters declare, validated into spec-style findings.

Adapter config arrives as ``key = value`` strings: a spec node's params (the spec's
``source.<name>.param.<k>`` / ``sink.<name>.param.<k>`` keys, prefix taken off). A
:class:`ConfigSchema` turns them into typed values and reports every problem as a
:class:`byteor.spec.Finding` with an ``AD`` code, so ``byteor validate`` prints them the same
way as the spec's own (see :mod:`byteor.adapters._speccheck`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from byteor.adapters._errors import AdapterConfigError
from byteor.spec import Finding, did_you_mean

__all__ = ["ConfigField", "ConfigSchema", "ConfigValue", "ADAPTER_CODES"]

ConfigValue = str | int | float | bool

ADAPTER_CODES: Final[dict[str, str]] = {
    "AD501": "unknown adapter config key",
    "AD502": "required adapter config key is missing",
    "AD503": "adapter config value has the wrong type",
    "AD504": "adapter config value is not one of the choices",
    "AD505": "adapter cannot be loaded here (a warning: its client library is missing)",
}

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@dataclass(frozen=True, slots=True)
class ConfigField:
    """One config key: its type, default (``None``: required), choices and a short doc."""

    name: str
    type: type[ConfigValue]
    default: ConfigValue | None = None
    doc: str = ""
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is None


def _convert(field: ConfigField, raw: str) -> ConfigValue:
    if field.type is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(raw)
    if field.type is int:
        return int(raw, 10)
    if field.type is float:
        return float(raw)
    return raw


@dataclass(frozen=True, slots=True)
class ConfigSchema:
    """An adapter's config keys."""

    adapter: str
    fields: tuple[ConfigField, ...]

    def validate(
        self, raw: Mapping[str, str], *, prefix: str = ""
    ) -> tuple[dict[str, ConfigValue], list[Finding]]:
        """Typed values (defaults filled in) and every finding; never raises.

        ``prefix`` is prepended to keys in findings (e.g. ``source.in.param.``).
        """
        by_name = {f.name: f for f in self.fields}
        values: dict[str, ConfigValue] = {}
        findings: list[Finding] = []
        for key in sorted(raw):
            field = by_name.get(key)
            if field is None:
                guess = did_you_mean(key, by_name)
                findings.append(
                    Finding(
                        "AD501",
                        "error",
                        prefix + key,
                        None,
                        f"{self.adapter} has no config key {key!r}"
                        + (f" (did you mean {guess!r}?)" if guess else ""),
                        guess,
                    )
                )
                continue
            try:
                value = _convert(field, raw[key])
            except ValueError:
                findings.append(
                    Finding(
                        "AD503",
                        "error",
                        prefix + key,
                        None,
                        f"{self.adapter} config {key!r} must be {field.type.__name__}, "
                        f"got {raw[key]!r}",
                    )
                )
                continue
            if field.choices and str(value) not in field.choices:
                findings.append(
                    Finding(
                        "AD504",
                        "error",
                        prefix + key,
                        None,
                        f"{self.adapter} config {key!r} must be one of "
                        f"{', '.join(field.choices)}, got {raw[key]!r}",
                    )
                )
                continue
            values[key] = value
        for field in self.fields:
            if field.name in raw:
                continue
            if field.default is None:
                findings.append(
                    Finding(
                        "AD502",
                        "error",
                        prefix + field.name,
                        None,
                        f"{self.adapter} needs config {field.name!r}"
                        + (f": {field.doc}" if field.doc else ""),
                    )
                )
            else:
                values[field.name] = field.default
        return values, findings

    def parse(self, raw: Mapping[str, str]) -> dict[str, ConfigValue]:
        """Typed values, or :class:`AdapterConfigError` listing every error finding."""
        values, findings = self.validate(raw)
        errors = [f for f in findings if f.severity == "error"]
        if errors:
            raise AdapterConfigError(
                "; ".join(str(f) for f in errors), adapter=self.adapter, retriable=False
            )
        return values
