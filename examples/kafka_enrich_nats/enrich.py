"""The enrich stage of ``pipeline.toml``: ``op = "enrich:enrich"`` (found beside the plan).

A stage op is a plain function from one record's bytes to the bytes it emits (or ``None`` to
drop the record). This one reads an order, looks its SKU up in a price list and its customer
in a region table, and emits the order with ``unit_cents``, ``total_cents`` and ``region``
added. An order it cannot price is an error: the stage's ``on_error`` policy (by default,
stop the run) decides, so nothing is published half-enriched.
"""

from __future__ import annotations

import json

#: Price list in cents (a real stage might load it at import, from a file or a service).
PRICES = {"apple": 45, "bread": 320, "cheese": 890, "dates": 615, "eggs": 299}
#: Customers by region: customers c-0 .. c-9, region by the last digit.
REGIONS = ("north", "south", "east", "west", "central")


def enrich(record: bytes) -> bytes:
    """``{"order", "customer", "sku", "qty"}`` -> the same with price, total and region."""
    order = json.loads(record)
    unit = PRICES[order["sku"]]
    customer = order["customer"]
    order["unit_cents"] = unit
    order["total_cents"] = unit * order["qty"]
    order["region"] = REGIONS[int(customer.rsplit("-", 1)[1]) % len(REGIONS)]
    return json.dumps(order, separators=(",", ":"), sort_keys=True).encode()
