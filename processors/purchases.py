"""Purchases and refunds: their effect on the base customer state.

Theory of operation: ``purchase_changes(state, event, rules)`` returns the field changes of
one purchase event (for ``processors.state.evolve``; ``processors.customer.apply`` adds the
clocks, pruning and dedup common to every kind). A purchase (``kind`` purchase) moves the
first / last purchase times (min / max), counts the order and adds its amount, in the
reporting currency, to the gross spend and to its UTC day's bucket; a refund counts and
adds to the refunds and the day's refund sum, and is rejected when larger than the
customer's net spend. An amount must be an integer >= 0 and its currency known
(``Rejected``: nothing changes). Every field is a sum, a count or a min / max, so the
result does not depend on batch splits or interleavings (``state.py``). The points an order
earns are the loyalty layer's (``processors/loyalty/earning.py``).
"""

from __future__ import annotations

import bisect
from typing import Any

from processors.errors import INVALID, Rejected
from processors.money import to_reporting_minor
from processors.rules import Rules
from processors.state import CustomerState, DayBucket
from processors.timeutil import day_of
from schemas.events import Purchase


def _add_to_day(
    days: tuple[DayBucket, ...], day: int, orders: int, spend: int, refunds: int
) -> tuple[DayBucket, ...]:
    if not days or day > days[-1].day:  # the common case: a new newest day
        return (*days, DayBucket(day, orders, spend, refunds))
    i = bisect.bisect_left(days, day, key=lambda b: b.day)
    if i < len(days) and days[i].day == day:
        b = days[i]
        new = DayBucket(day, b.orders + orders, b.spend_minor + spend, b.refunds_minor + refunds)
        return (*days[:i], new, *days[i + 1 :])
    return (*days[:i], DayBucket(day, orders, spend, refunds), *days[i:])


def purchase_changes(state: CustomerState, ev: Purchase, rules: Rules) -> dict[str, Any]:
    if type(ev.amount_minor) is not int or ev.amount_minor < 0:
        raise Rejected(INVALID, f"amount_minor {ev.amount_minor!r} must be an integer >= 0")
    amount = to_reporting_minor(ev.amount_minor, ev.currency, rules)
    t = ev.occurred_at
    day = day_of(t)
    if ev.kind == "purchase":
        return {
            "first_purchase_at": t if state.first_purchase_at is None
            else min(state.first_purchase_at, t),
            "last_purchase_at": t if state.last_purchase_at is None
            else max(state.last_purchase_at, t),
            "purchase_count": state.purchase_count + 1,
            "gross_spend_minor": state.gross_spend_minor + amount,
            "days": _add_to_day(state.days, day, 1, amount, 0),
        }
    if ev.kind == "refund":
        if amount > state.total_spend_minor:
            raise Rejected(
                INVALID,
                f"refund of {amount} {rules.reporting_currency} minor units for order "
                f"{ev.order_id!r} exceeds the customer's net spend {state.total_spend_minor}",
            )
        return {
            "refund_count": state.refund_count + 1,
            "refunds_minor": state.refunds_minor + amount,
            "days": _add_to_day(state.days, day, 0, 0, amount),
        }
    raise Rejected(INVALID, f"purchase kind {ev.kind!r} is not purchase or refund")
