"""``op = "mask_card"``: masks a card number in each JSON record but for its last digits.

A stage op registered in the ``byteor.ops`` entry-point group is a function of one record,
or (as here) a class that the executor instantiates once per stage with the
:class:`~byteor.exec.StageContext` — its name and its ``params`` — and whose ``step(record)``
is called per record. Checking the params in ``__init__`` makes a typo fail when the run
starts (one line, exit 2), not silently on every record.

Params: ``field`` (default ``card``): the JSON field holding the number; ``keep`` (default
4): how many of its last digits stay. A record that is not JSON, or has no such field, is a
:class:`~byteor.kernel.StageError`: the stage's ``on_error`` policy decides what happens to
it (stop the run, skip it, or route it to an error lane).
"""

from __future__ import annotations

import json

from byteor.exec import StageConfigError, StageContext
from byteor.kernel import StageError

__all__ = ["MaskCard", "mask"]


def mask(number: str, keep: int) -> str:
    """Every digit but the last ``keep`` as ``*``; spaces and dashes stay where they are."""
    digits = sum(c.isdigit() for c in number)
    out: list[str] = []
    seen = 0
    for c in number:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - keep else "*")
        else:
            out.append(c)
    return "".join(out)


class MaskCard:
    """The stage: ``step(record) -> record`` with the card number masked."""

    def __init__(self, ctx: StageContext) -> None:
        ctx.check_params(("field", "keep"), "mask_card")
        self.field = ctx.param("field", "card") or "card"
        self.keep = ctx.int_param("keep", 4)
        if self.keep > 8:
            raise StageConfigError(f"stage {ctx.name!r}: param keep must be at most 8")

    def step(self, record: bytes) -> bytes | StageError:
        try:
            doc = json.loads(record)
        except ValueError as exc:
            return StageError("mask_card.not_json", f"record is not JSON: {exc}")
        number = doc.get(self.field) if isinstance(doc, dict) else None
        if not isinstance(number, str):
            return StageError("mask_card.no_field", f"record has no text field {self.field!r}")
        doc[self.field] = mask(number, self.keep)
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
