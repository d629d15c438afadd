"""The spec branch of the exception tree::

ByteorError
└── SpecError                  byteor.spec
    └── SpecValidationError    the input has error findings (``.findings`` lists them all)
"""

from __future__ import annotations

from collections.abc import Sequence

from byteor.errors import ByteorError
from byteor.spec._findings import Finding

__all__ = ["SpecError", "SpecValidationError"]


class SpecError(ByteorError):
    """Root of the errors of :mod:`byteor.spec`."""


class SpecValidationError(SpecError):
    """A spec has error findings; all of them are in :attr:`findings`."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings: tuple[Finding, ...] = tuple(findings)
        errors = [f for f in self.findings if f.severity == "error"]
        first = str(errors[0]) if errors else "no errors"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid spec: {first}{more}")
