"""The lowering branch of the exception tree::

ByteorError
└── LowerError      byteor.lower: the plan cannot be lowered (``.findings`` says why)
"""

from __future__ import annotations

from collections.abc import Sequence

from byteor.errors import ByteorError
from byteor.spec import Finding

__all__ = ["LowerError"]


class LowerError(ByteorError):
    """The plan is invalid, or cannot be lowered to the requested target."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings: tuple[Finding, ...] = tuple(findings)
        errors = [f for f in self.findings if f.severity == "error"]
        first = str(errors[0]) if errors else "no errors"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"cannot lower the plan: {first}{more}")
