"""The plan branch of the exception tree::

ByteorError
└── PlanError                  byteor.plan (a builder misuse, e.g. an unknown input)
    └── PlanValidationError    the plan has error findings (``.findings`` lists them all)
"""

from __future__ import annotations

from collections.abc import Sequence

from byteor.errors import ByteorError
from byteor.plan._model import PlanFinding

__all__ = ["PlanError", "PlanValidationError"]


class PlanError(ByteorError):
    """Root of the errors of :mod:`byteor.plan`."""


class PlanValidationError(PlanError):
    """A plan has error findings; all of them are in :attr:`findings`."""

    def __init__(self, findings: Sequence[PlanFinding]) -> None:
        self.findings: tuple[PlanFinding, ...] = tuple(findings)
        errors = [f for f in self.findings if f.severity == "error"]
        first = str(errors[0]) if errors else "no errors"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid plan: {first}{more}")
