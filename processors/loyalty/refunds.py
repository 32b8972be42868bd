"""Refunds: take back exactly what the refunded items earned.

Theory of operation: ``k`` of a line's ``n`` units with ``p`` points, ``r`` refunded before,
take back ``floor(p(r+k)/n) - floor(pr/n)`` (all units in any steps take back exactly
``p``); a refund without lines, or of an order remembered without lines, takes back
``amount / paid`` of the order's points the same cumulative way; an order no longer
remembered takes back the earning formula on the refunded amount at the current tier. The
balance is clamped at 0 unless ``allow_negative_balance``; the tier is evaluated again.
"""

from __future__ import annotations

from processors.loyalty.derived import X, _Derived, _money, _pts, _tier, key32
from processors.loyalty.earning import _formula, _prune_orders, _weigh
from processors.loyalty.ledger import REFUND, _Book
from processors.loyalty.records import LoyaltyState
from processors.loyalty.tiers import _evaluate
from processors.money import to_reporting_minor
from processors.rules import Rules
from processors.state import DayBucket
from schemas.events import Purchase


def _refund_order(ly: LoyaltyState | None, ev: Purchase, rules: Rules, d: _Derived,
                  book: _Book, days: tuple[DayBucket, ...], clock: int
                  ) -> LoyaltyState | None:
    """A refund (``kind`` refund) takes back what the refunded items earned; the tier is
    evaluated again and old orders forgotten."""
    if ly is None:
        return None  # no account: nothing was earned, nothing to take back
    ly = _refund(ly, ev, rules, d, book)
    ly = _evaluate(ly, days, clock, d, book, ev.event_id, ev.occurred_at)
    return _prune_orders(ly, clock, d.lr)


def _refund(ly: LoyaltyState, ev: Purchase, rules: Rules, d: _Derived, book: _Book
            ) -> LoyaltyState:
    key = key32(ev.order_id)
    i = next((i for i, o in enumerate(ly.orders) if o.key == key), None)
    cur = d.currency
    if i is None:
        w = _weigh(ev, rules, d)
        claw, text = _formula(w, _tier(ly, d), d)
        why = (f"refund of order {ev.order_id} (not among the orders of the last "
               f"{d.lr.refund_window_days} days, so by the earning formula): {text}")
        orders = ly.orders
    else:
        o = ly.orders[i]
        amount = to_reporting_minor(ev.amount_minor, ev.currency, rules)
        refunded = min(o.paid, o.refunded + amount)
        if ev.lines and o.lines:
            by_key = {x.key: x for x in o.lines}
            asked: dict[str, int] = {}
            for ln in ev.lines:
                asked[ln.sku] = asked.get(ln.sku, 0) + ln.quantity
            claw, parts, other = 0, [], []
            for sku, k in asked.items():
                x = by_key.get(key32(sku))
                if x is None:
                    other.append(sku)
                    continue
                k = min(k, x.units - x.refunded_units)
                r = x.refunded_units
                claw += x.points * (r + k) // x.units - x.points * r // x.units
                by_key[x.key] = x._replace(refunded_units=r + k)
                parts.append(f"{k} {X} {sku}")
            lines = tuple(by_key[k] for k in sorted(by_key))
            what = f"{', '.join(parts) or 'nothing that earned points'} returned"
            if other:
                what += f" ({', '.join(other)}: not in the order's points)"
            headline = f"refund of order {ev.order_id}: {what}"
        else:
            lines = o.lines
            claw = (o.points * refunded // o.paid - o.points * o.refunded // o.paid) if o.paid \
                else 0
            headline = (f"refund of order {ev.order_id}: {_money(amount, d)} of "
                        f"{_money(o.paid, d)} {cur} paid back")
        claw = min(claw, o.points - o.clawed)
        why = f"{headline}, which earned {claw} of the order's {_pts(o.points)}"
        orders = (*ly.orders[:i], o._replace(refunded=refunded, clawed=o.clawed + claw,
                                             lines=lines), *ly.orders[i + 1:])
    taken = claw if d.lr.allow_negative_balance else min(claw, max(ly.balance, 0))
    if taken < claw:
        why += f"; the balance had only {_pts(taken)} and does not go below 0"
    why += f": {_pts(-taken)}"
    ly = ly._replace(balance=ly.balance - taken,
                             lifetime_points=ly.lifetime_points - taken, orders=orders)
    if claw:
        book.add(ly, f"{ev.event_id}:{REFUND}", -taken, REFUND, why, ev.occurred_at,
                 ev.event_id)
    return ly
