"""Earning: points for purchases, survey bonuses and service recovery.

Theory of operation: an order earns ``floor(W x share x points_per_unit x tier
multiplier)``, once per order, at most ``max_points_per_event`` (``_weigh``, ``_formula``);
the points are allocated to the lines by weight (largest remainder, ``_allocate``) and the
order is remembered (``_remember``, within ``refund_window_days``) so that a refund can take
back exactly what it earned. A survey answer earns its bonus once per survey; a ticket that
settled an SLA breach earns the service-recovery bonus of its priority.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import NamedTuple

from processors.loyalty.derived import SURVEY_KIND, X, _Derived, _money, _new, _pts, _tier, key32
from processors.loyalty.ledger import (
    EARN,
    SERVICE_RECOVERY,
    SURVEY_BONUS,
    _Book,
    _credit,
    _open,
    _touch,
)
from processors.loyalty.records import LinePoints, LoyaltyState, OrderPoints, SurveyMark
from processors.loyalty.tiers import _evaluate
from processors.money import to_reporting_minor
from processors.rules import LoyaltyRules, Rules
from processors.state import DayBucket
from processors.timeutil import day_of
from schemas.events import Purchase, SupportTicket, Survey


class _Weighed(NamedTuple):
    paid: int  # reporting minor
    lines: tuple[tuple[str, int, int], ...]  # (sku, units, weight = total x multiplier x den)
    weight: int  # sum of the line weights (an order without lines: paid x cat_den)
    share: tuple[int, int]  # paid / lines total when less was paid, else (1, 1)
    text: str  # how the amount was reached, e.g. "25.00 EUR beauty x 2 + 20.99 EUR"


def _weigh(ev: Purchase, rules: Rules, d: _Derived) -> _Weighed:
    paid = to_reporting_minor(ev.amount_minor, ev.currency, rules)
    cur, den, cat_num = d.currency, d.cat_den, d.cat_num
    convert = ev.currency != cur  # to_reporting_minor is the identity otherwise
    lines = []
    groups: dict[str, int] = {}
    total = weight = 0
    for ln in ev.lines:
        amount = ln.quantity * ln.unit_price_minor
        if convert:
            amount = to_reporting_minor(amount, ev.currency, rules)
        m = cat_num.get(ln.category, den)
        x = amount * m
        lines.append((ln.sku, ln.quantity, x))
        weight += x
        key = ln.category if m != den else ""
        groups[key] = groups.get(key, 0) + amount
        total += amount
    if not total:
        return _Weighed(paid, (), paid * den, (1, 1), f"{_money(paid, d)} {cur}")
    shown = d.mult_text
    terms = [f"{_money(a, d)} {cur} {c} {X} {shown[c]}" if c else f"{_money(a, d)} {cur}"
             for c, a in groups.items()]
    text = terms[0]
    if len(terms) > 1 or "" not in groups:
        mults = d.lr.category_multipliers
        result = Decimal(0)  # exact (a loop: cheaper than sum() over a generator)
        for c, a in groups.items():
            result += Decimal(a) * mults[c] if c else Decimal(a)
        text = f"{' + '.join(terms)} = {_money(result, d)} {cur}"
    share = (1, 1)
    if paid < total:
        share = (paid, total)
        text += f" {X} {_money(paid, d)}/{_money(total, d)} paid"
    return _Weighed(paid, tuple(lines), weight, share, text)


def _formula(w: _Weighed, tier: int, d: _Derived) -> tuple[int, str]:
    """Points of a weighed amount at a tier (capped), and the arithmetic as text."""
    num, den = w.share
    raw = w.weight * num * d.rate_num[tier] // (den * d.rate_den[tier])
    points = min(raw, d.lr.max_points_per_event)
    # rate_text[tier]: " x 1 pt/EUR x gold 1.5 = "
    text = f"{w.text}{d.rate_text[tier]}{_pts(raw)}"
    if points < raw:
        text += f", capped at {_pts(points)} per event"
    return points, text


def _allocate(points: int, weights: list[int]) -> list[int]:
    """Split ``points`` in proportion to ``weights``: floors, then the largest remainders."""
    total = sum(weights)
    if not points or not total:
        return [0] * len(weights)
    out = [points * w // total for w in weights]
    rest = points - sum(out)  # >= 0: a sum of floors
    if rest > 0:
        rems = [points * w % total for w in weights]
        # by remainder, greatest first, ties in line order: a reverse sort keeps stability
        for i in sorted(range(len(out)), key=rems.__getitem__, reverse=True)[:rest]:
            out[i] += 1
    return out


def _order_key(o: OrderPoints) -> tuple[int, int]:
    return o.day, o.key


def _remember(orders: tuple[OrderPoints, ...], ev: Purchase, w: _Weighed, points: int,
              d: _Derived) -> tuple[OrderPoints, ...]:
    """``orders`` with the purchase's points recorded (the same tuple if nothing is)."""
    lr = d.lr
    if not points or not lr.max_remembered_orders:
        return orders
    if len(w.lines) == 1:
        # one line takes all the points: what _allocate and the merge below give (its weight
        # is the order's, not 0, since the order earned points)
        sku, units, _ = w.lines[0]
        lines: tuple[LinePoints, ...] = (_new(LinePoints, (key32(sku), units, points, 0)),)
    else:
        merged: dict[int, tuple[int, int]] = {}
        shares = _allocate(points, [x for _, _, x in w.lines])
        for (sku, units, _), p in zip(w.lines, shares, strict=True):
            k = key32(sku)
            if k in merged:  # the same sku twice (or a key collision): one line
                u, q = merged[k]
                merged[k] = (u + units, q + p)
            else:
                merged[k] = (units, p)
        lines = tuple([_new(LinePoints, (k, u, p, 0)) for k, (u, p) in sorted(merged.items())
                       if p])
    if len(lines) > lr.max_remembered_lines:
        lines = ()  # remembered by amount only: bounded state
    key = key32(ev.order_id)
    for i, o in enumerate(orders):
        if o.key == key:  # the same order id again: one record
            both: dict[int, LinePoints] = {x.key: x for x in o.lines}
            for x in lines:
                y = both.get(x.key)
                both[x.key] = x if y is None else LinePoints(
                    x.key, x.units + y.units, x.points + y.points, y.refunded_units)
            merged_lines = tuple(both[k] for k in sorted(both)) if o.lines or not o.points \
                else ()  # an order remembered by amount stays so
            if len(merged_lines) > lr.max_remembered_lines:
                merged_lines = ()
            orders = (*orders[:i], o._replace(paid=o.paid + w.paid, points=o.points + points,
                                              lines=merged_lines), *orders[i + 1:])
            break
    else:
        orders = (*orders, _new(OrderPoints, (key, day_of(ev.occurred_at), w.paid, points, 0,
                                              0, lines)))
    if len(orders) > 1 and (orders[-2].day, orders[-2].key) > (orders[-1].day, orders[-1].key):
        orders = tuple(sorted(orders, key=_order_key))
    return orders


def _cut(orders: Sequence[OrderPoints], clock: int, lr: LoyaltyRules) -> int:
    """How many of the oldest orders to forget: those of days up to the purchase clock's day
    minus the refund window, and any beyond ``max_remembered_orders`` (the greatest by (day,
    key) are kept): confluent within the topic."""
    horizon = day_of(clock) - lr.refund_window_days
    cut = 0
    while cut < len(orders) and orders[cut].day <= horizon:
        cut += 1
    return max(cut, len(orders) - lr.max_remembered_orders)


def _prune_orders(ly: LoyaltyState, clock: int, lr: LoyaltyRules) -> LoyaltyState:
    cut = _cut(ly.orders, clock, lr)
    return ly._replace(orders=tuple(ly.orders[cut:])) if cut else ly  # none dropped: the same


def _purchase(ly: LoyaltyState | None, ev: Purchase, rules: Rules, d: _Derived, book: _Book,
              days: tuple[DayBucket, ...], clock: int) -> LoyaltyState | None:
    """A purchase (``kind`` purchase) earns; a tier it reaches first raises the rate."""
    eid, t = ev.event_id, ev.occurred_at
    ly = _evaluate(ly or _open(t), days, clock, d, book, eid, t)  # a tier reached earns
    w = _weigh(ev, rules, d)
    points, text = _formula(w, _tier(ly, d), d)
    # _credit, the order remembered, old ones dropped: built as one new record
    orders = _remember(ly.orders, ev, w, points, d)
    orders = orders[_cut(orders, clock, d.lr):]
    last, noticed = ly.last_activity_at, ly.noticed
    if t > last:  # _touch: the activity resets the expiry clock
        last, noticed = t, False
    ly = _new(LoyaltyState, (ly.balance + points, ly.lifetime_points + points, ly.tier,
                             ly.tier_since, ly.qualified_until, last, noticed, orders,
                             ly.surveys, ly.expired))
    if points:
        book.add(ly, f"{eid}:{EARN}", points, EARN, f"order {ev.order_id}: {text}", t, eid)
    return ly


def _survey(ly: LoyaltyState | None, ev: Survey, d: _Derived, book: _Book,
            kind_max: tuple[int, ...]) -> LoyaltyState | None:
    lr = d.lr
    t = ev.occurred_at
    if not lr.survey_bonus_points:
        return None if ly is None else _touch(ly, t)
    if ly is None:
        ly = _open(t)
    key = key32(ev.survey_id)
    if any(s.key == key for s in ly.surveys):
        return _touch(ly, t)  # answered before: the bonus is once per survey
    points = min(lr.survey_bonus_points, lr.max_points_per_event)
    ly = _credit(ly, points, t)
    if points:
        book.add(ly, f"{ev.event_id}:{SURVEY_BONUS}", points, SURVEY_BONUS,
                 f"thank you for answering survey {ev.survey_id} ({ev.kind}): "
                 f"+{_pts(points)}", t, ev.event_id)
    marks = sorted((*ly.surveys, SurveyMark(day_of(t), key)))
    horizon = day_of(kind_max[SURVEY_KIND]) - lr.survey_memory_days
    marks = [m for m in marks if m.day > horizon][-lr.survey_memory_max:]
    return ly._replace(surveys=tuple(marks))


def _ticket(ly: LoyaltyState | None, ev: SupportTicket, d: _Derived, book: _Book,
            breaches: int) -> LoyaltyState | None:
    per = d.lr.service_recovery_points.of(ev.priority)
    if breaches <= 0 or not per:
        return ly
    t = ev.occurred_at
    if ly is None:
        ly = _open(t)
    raw = breaches * per
    points = min(raw, d.lr.max_points_per_event)
    ly = _credit(ly, points, t)
    whose = (f"ticket {ev.ticket_id} ({ev.priority})" if ev.status not in ("opened", "reopened")
             else "an earlier ticket")
    text = (f"sorry: {whose} missed its service level ({breaches} SLA "
            f"breach{'es' if breaches > 1 else ''} {X} {_pts(per)}): +{_pts(points)} goodwill")
    if points < raw:
        text += f" (capped at {_pts(points)} per event)"
    book.add(ly, f"{ev.event_id}:{SERVICE_RECOVERY}", points, SERVICE_RECOVERY, text, t,
             ev.event_id)
    return ly
