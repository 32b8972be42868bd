"""schemas.frozen: the hot path's constructors build what the dataclasses' own would."""

from __future__ import annotations

import dataclasses

import pytest

from processors.churn.records import ChurnState
from processors.loyalty.ledger import LedgerEntry
from schemas.events import Purchase, PurchaseLine
from schemas.frozen import constructor


def test_constructor_builds_what_init_builds() -> None:
    line = constructor(PurchaseLine)("sku-1", "shoes", 2, 4999)
    assert line == PurchaseLine("sku-1", "shoes", 2, 4999)
    args = dict(event_id="e1", customer_id="c1", occurred_at=5, source="pos", order_id="o1",
                channel="store", kind="purchase", amount_minor=9998, currency="EUR",
                lines=(line,), store_id=None)
    made = constructor(Purchase)(**args)
    assert made == Purchase(**args) and hash(made) == hash(Purchase(**args))  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.amount_minor = 1  # type: ignore[misc]  # still frozen
    ch = constructor(ChurnState)(*[getattr(ChurnState(), f.name)
                                   for f in dataclasses.fields(ChurnState)])
    assert ch == ChurnState()
    entry = constructor(LedgerEntry)("x:earn", "c1", 10, "earn", "r", 10, None, 5, "x")
    assert entry == LedgerEntry("x:earn", "c1", 10, "earn", "r", 10, None, 5, "x")
    with pytest.raises(TypeError):
        constructor(PurchaseLine)("sku-1", "shoes", 2)  # every field, no defaults


def test_constructor_refuses_post_init_classes() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            assert self.x >= 0

    with pytest.raises(TypeError, match="__post_init__"):
        constructor(Checked)
