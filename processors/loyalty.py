"""Loyalty points: earning, tiers, refunds, bonuses, redemptions and expiry, as a ledger.

Theory of operation
-------------------
``on_event`` runs inside ``processors.customer.apply`` after the core fields are computed;
``on_tick`` is what the inactivity scanner calls for time-driven changes. Both are pure and
return the new ``LoyaltyState`` and ``LedgerEntry`` outputs (stream "points"). Every change
of a balance is one entry, so ``balance == sum(entry.points)`` for every customer; entries
with 0 points announce tier changes, expiry notices and rejected redemptions.

Earning (rule ``earn``): an order earns ``floor(W x share x points_per_unit x tier
multiplier)``, rounded down once per order, at most ``max_points_per_event``. ``W`` = sum
of its lines (quantity x unit price, converted to the reporting currency) each times its
category multiplier; ``share`` = amount / lines total when less was paid (a discount), else
1; an order without lines earns on its amount. The points are then allocated to the lines
by weight (largest remainder) and remembered per order (hashed order id and skus, within
``refund_window_days``, at most ``max_remembered_orders``; an order with more than
``max_remembered_lines`` lines that earned points is remembered by amount only).

Refunds (rule ``refund``) take back what the refunded items earned, exactly: ``k`` of a
line's ``n`` units with ``p`` points, ``r`` refunded before, take back ``floor(p(r+k)/n) -
floor(pr/n)`` (so refunding all units in any steps takes back exactly ``p``); a refund
without lines, or of an order recorded without lines, takes back ``amount / paid`` of the
order's points the same cumulative way. Never more than the order earned. A refund of an
order no longer remembered takes back the earning formula on the refunded amount at the
current tier. The balance is clamped at 0 unless ``allow_negative_balance``.

Tiers (rule ``tier_change``, 0 points; chosen over a topic of their own so that one ledger
tells the whole story in order): the tier is reached when the net spend of the 365-day
window as of the purchase clock (``kind_max[purchase]``) reaches its ``min_spend``,
checked after every purchase or refund. ``qualified_until`` is the last day the current
tier stays qualified if nothing more is bought (computed from the day buckets), so the
downgrade is due at a fixed event time, ``(qualified_until + 1 + grace) days``, whoever
notices it first: the scanner's tick, or the customer's next event. The downgrade goes to
the tier the spend of that day qualifies for.

Expiry (rules ``expiry_notice``, ``expiry``): the balance expires ``expiry_months``
calendar months after the last activity (purchase, answered survey, goodwill award,
accepted redemption), announced ``expiry_notice_days`` before. Time-driven entries carry
the event time they were due at and an id from the customer and that time
(``"<customer>:expiry@<ms>"``), so a tick and an event that both see them due produce the
same entry once: whichever comes first changes the state, the other finds nothing due.
An activity that arrives late, dated after the last activity but before an expiry already
written (a store's upload after an outage), undoes it: rule ``expiry_reversed`` gives the
points back with the reason (``"expiry of 2026-03-01 reversed: purchase of 2026-02-27
arrived late"``), as if it had come in time; the latest expiry is remembered for that.

Redemptions: a member with enough balance gets ``redemption`` (debited); otherwise
``redemption_rejected`` with 0 points and the reason (unknown customer = no state before
the event; insufficient balance). One partition is applied serially by one worker and a
redemption is decided against the balance that includes every earlier event of the
partition, so two redemptions can never overdraw together.

Confluence (see state.py): what purchases earn, the tier and the remembered orders depend
on the purchase topic's order only (tier dues are applied by other events only once no
acceptable purchase can predate them). The balance cannot be confluent: a redemption is
decided against the balance at the moment it is applied, and expiry and clamping depend on
it too. Replaying one history in any batch split gives the same entries and balances.

Entry ids: ``"<event_id>:<rule>"`` for entries an event causes, ``"<customer>:<rule>@<ms>"``
for entries time causes. Points are integers; amounts in reasons are exact.
"""

from __future__ import annotations

import bisect
import calendar
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from itertools import chain, repeat
from typing import Any, NamedTuple

from processors.errors import INVALID, Rejected, WireError
from processors.layer import Reaction
from processors.loyalty_records import LinePoints, LoyaltyState, OrderPoints, SurveyMark
from processors.money import to_reporting_minor
from processors.referral.decide import LedgerEffect, decide
from processors.rules import LoyaltyRules, Rules, per_rules
from processors.state import KIND_INDEX, PURCHASE_KIND, CustomerState, DayBucket, evolve
from processors.timeutil import DAY_MS, day_of
from schemas.codec import format_time
from schemas.events import Adjustment, Event, Purchase, Redemption, Referral, SupportTicket, Survey
from schemas.frozen import constructor

SURVEY_KIND = KIND_INDEX["survey"]
YEAR_DAYS = 365  # the rolling 12 months: the core state's 365-day window
X = "\N{MULTIPLICATION SIGN}"  # in reasons: "42.50 EUR x 1 pt/EUR x gold 1.5 = 63 pts"

EARN, REFUND, SURVEY_BONUS, SERVICE_RECOVERY = "earn", "refund", "survey_bonus", "service_recovery"
REDEMPTION, REDEMPTION_REJECTED = "redemption", "redemption_rejected"
ADJUSTMENT, ADJUSTMENT_REJECTED = "adjustment", "adjustment_rejected"
TIER_CHANGE, EXPIRY_NOTICE, EXPIRY = "tier_change", "expiry_notice", "expiry"
EXPIRY_REVERSED = "expiry_reversed"


# -- state (the records: processors/loyalty_records.py) --------------------------------------


# tuple.__new__(Cls, items) builds one of the loyalty records without the Python-level
# Cls.__new__ (cheaper on the hot paths; the callers pass every field, in order)
_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: str
    customer_id: str
    points: int
    rule: str
    reason: str
    balance_after: int
    tier_after: str | None
    occurred_at: int  # ms
    event_id: str | None  # the causing event; None for time-driven entries

    @property
    def stream(self) -> str:
        return "points"

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "customer_id": self.customer_id,
            "points": self.points,
            "rule": self.rule,
            "reason": self.reason,
            "balance_after": self.balance_after,
            "tier_after": self.tier_after,
            "occurred_at": format_time(self.occurred_at),
            "event_id": self.event_id,
        }


_entry = constructor(LedgerEntry)  # LedgerEntry(...) through its slots (schemas.frozen)


# -- derived rules (cached per Rules object) --------------------------------------------------


class _Derived(NamedTuple):
    lr: LoyaltyRules
    currency: str
    exponent: int
    scale: int  # 10 ** exponent
    thresholds: tuple[int, ...]  # min_spend per tier in reporting minor units (rounded up)
    # exact integer arithmetic: a weight is amount x category multiplier x cat_den; points =
    # weight x rate_num[tier] // rate_den[tier] (rate = points_per_unit x tier multiplier /
    # (10 ** exponent x cat_den))
    cat_den: int
    cat_num: dict[str, int]
    rate_num: tuple[int, ...]
    rate_den: tuple[int, ...]
    # constants of the hot path, computed once per Rules object
    top: int  # the highest tier index
    tier_names: tuple[str, ...]
    mult_text: dict[str, str]  # category -> its multiplier as shown in reasons
    rate_text: tuple[str, ...]  # per tier: "x 1 pt/EUR x gold 1.5 = "
    grace_days: int  # downgrade_grace_days
    expiry_months: int
    notice_ms: int  # expiry_notice_days in ms
    soonest_ms: int  # the least a deadline can be after the last activity, minus the notice


@per_rules
def _derived(rules: Rules) -> _Derived:
    lr = rules.loyalty
    e = rules.minor_units[rules.reporting_currency]
    cats = {k: Fraction(v) for k, v in lr.category_multipliers.items()}
    cat_den = math.lcm(1, *(f.denominator for f in cats.values()))
    rates = [Fraction(lr.points_per_unit) * Fraction(t.multiplier) / (10**e * cat_den)
             for t in lr.tiers]
    cur = rules.reporting_currency
    d = _Derived(
        lr, cur, e, 10**e,
        tuple(math.ceil(Fraction(t.min_spend) * 10**e) for t in lr.tiers),
        cat_den, {k: int(f * cat_den) for k, f in cats.items()},
        tuple(r.numerator for r in rates), tuple(r.denominator for r in rates),
        len(lr.tiers) - 1, tuple(t.name for t in lr.tiers),
        {k: _num(v) for k, v in lr.category_multipliers.items()},
        tuple(f" {X} {_num(lr.points_per_unit)} pt/{cur} {X} {t.name} {_num(t.multiplier)} = "
              for t in lr.tiers),
        lr.downgrade_grace_days, lr.expiry_months, lr.expiry_notice_days * DAY_MS,
        (lr.expiry_months * 28 - lr.expiry_notice_days) * DAY_MS,
    )
    return d


def _tier(ly: LoyaltyState, d: _Derived) -> int:
    tier, top = ly.tier, d.top
    return tier if tier < top else top  # the rules may have lost tiers since


def _tier_name(ly: LoyaltyState | None, d: _Derived) -> str | None:
    return None if ly is None else d.lr.tiers[_tier(ly, d)].name


# -- small pure helpers -----------------------------------------------------------------------


def key32(text: str) -> int:
    """A 32-bit key for an order id, sku or survey id (CRC-32: stable across processes and
    versions; a collision among one customer's few remembered ids is negligible)."""
    return zlib.crc32(text.encode())


def _money(minor: int | Decimal, d: _Derived) -> str:
    e = d.exponent
    if type(minor) is int and e:
        # "%d.%0*d": the cheapest spelling of f"{q}.{r:0{e}d}"
        if minor >= 0:
            q, r = divmod(minor, d.scale)
            return "%d.%0*d" % (q, e, r)  # noqa: UP031
        q, r = divmod(-minor, d.scale)
        return "-%d.%0*d" % (q, e, r)  # noqa: UP031
    return f"{Decimal(minor).scaleb(-e):f}"


def _num(x: Decimal) -> str:
    return f"{x.normalize():f}"


def _pts(n: int) -> str:
    return f"{n} pt" if abs(n) == 1 else f"{n} pts"


def _date(ms: int) -> str:
    return format_time(ms)[:10]


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@lru_cache(maxsize=8192)
def add_months(ms: int, months: int) -> int:
    """``ms`` plus calendar months (UTC), the day clamped to the month's length."""
    # on day numbers: the time of day is kept, so only the date moves
    ordinal = _EPOCH_ORDINAL + ms // DAY_MS
    t = date.fromordinal(ordinal)
    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    last = 29 if month == 2 and calendar.isleap(year) else _MONTH_DAYS[month]
    return ms + (date(year, month, min(t.day, last)).toordinal() - ordinal) * DAY_MS


def spend_365(days: tuple[DayBucket, ...], day: int) -> int:
    """Net spend (purchases - refunds) of the 365 days ``(day - 365, day]``."""
    lo, hi = _after(days, day - YEAR_DAYS), _after(days, day)
    s = 0
    for b in days[lo:hi]:  # a plain loop: cheaper than sum() over a generator
        s += b.spend_minor - b.refunds_minor
    return s


_PAST = 2**63


def _after(days: tuple[DayBucket, ...], day: int) -> int:
    """Index of the first bucket of a day after ``day`` (buckets are sorted by day)."""
    return bisect.bisect_right(days, (day, _PAST))


def _qualify(spend: int, d: _Derived) -> int:
    tier = 0
    for i, threshold in enumerate(d.thresholds):
        if spend >= threshold:
            tier = i
    return tier


def first_day_below(days: tuple[DayBucket, ...], start: int, threshold: int,
                    spend: int | None = None) -> int:
    """First day ``>= start`` whose 365-day net spend is under ``threshold`` (> 0), if
    nothing more is bought: buckets enter the window on their day, leave 365 days later.
    ``spend``: the spend as of ``start`` when the caller has it."""
    s = spend_365(days, start) if spend is None else spend
    if s < threshold:
        return start
    # two sorted streams of changes: days after start enter, days in the window leave
    enter, leave = _after(days, start), _after(days, start - YEAR_DAYS)
    n = len(days)
    while leave < n:
        day = days[leave].day + YEAR_DAYS
        if enter < n and days[enter].day < day:
            day = days[enter].day
        while enter < n and days[enter].day == day:
            s += days[enter].spend_minor - days[enter].refunds_minor
            enter += 1
        while leave < n and days[leave].day + YEAR_DAYS == day:
            s -= days[leave].spend_minor - days[leave].refunds_minor
            leave += 1
        if s < threshold:
            return day
    raise AssertionError("the window empties eventually")  # pragma: no cover


# -- the ledger being written -----------------------------------------------------------------


class _Book:
    """Collects the entries of one step; each entry records the balance and tier after it."""

    def __init__(self, customer_id: str, d: _Derived) -> None:
        self.cid = customer_id
        self.d = d
        self.out: list[LedgerEntry] = []

    def add(self, ly: LoyaltyState | None, entry_id: str, points: int, rule: str, reason: str,
            at: int, event_id: str | None) -> None:
        if ly is None:
            balance, name = 0, None
        else:
            tier, top = ly.tier, self.d.top  # _tier_name inlined
            balance, name = ly.balance, self.d.tier_names[tier if tier < top else top]
        self.out.append(_entry(entry_id, self.cid, points, rule, reason, balance, name, at,
                               event_id))


def _credit(ly: LoyaltyState, points: int, at: int) -> LoyaltyState:
    """Add earned points and count the activity (resets the expiry clock)."""
    return _touch(ly._replace(balance=ly.balance + points,
                              lifetime_points=ly.lifetime_points + points), at)


def _touch(ly: LoyaltyState, at: int) -> LoyaltyState:
    if at <= ly.last_activity_at:
        return ly
    return ly._replace(last_activity_at=at, noticed=False)


def _open(at: int) -> LoyaltyState:
    # tier_since stays 0 until a tier change: which topic's event opened the account may
    # depend on the interleaving, a tier change does not
    return LoyaltyState(last_activity_at=at)


# -- time-driven changes ----------------------------------------------------------------------


def _tier_due(ly: LoyaltyState, d: _Derived) -> int | None:
    if _tier(ly, d) == 0 or ly.qualified_until is None:
        return None
    return (ly.qualified_until + 1 + d.lr.downgrade_grace_days) * DAY_MS


def expires_at(ly: LoyaltyState, lr: LoyaltyRules) -> int | None:
    if not lr.expiry_months or ly.balance <= 0:
        return None
    return add_months(ly.last_activity_at, lr.expiry_months)


def _due(ly: LoyaltyState, d: _Derived, tier_bound: int, expiry_bound: int
         ) -> tuple[int, int] | None:
    """The earliest change due: ``(at, 0 tier | 1 notice | 2 expiry)``, or None (the least
    ``(at, what)``: a later candidate replaces an earlier one only if strictly sooner)."""
    # called before and after every event and by the scanner: _tier_due and expires_at
    # inlined
    found = None
    qu, tier = ly.qualified_until, ly.tier
    if qu is not None and (tier if tier < d.top else d.top) != 0:
        t = (qu + 1 + d.grace_days) * DAY_MS
        if t <= tier_bound:
            found = (t, 0)
    # a deadline is at least 28 days a month away: most events need no calendar
    last = ly.last_activity_at
    if last + d.soonest_ms <= expiry_bound and d.expiry_months and ly.balance > 0:
        x = add_months(last, d.expiry_months)
        n = x - d.notice_ms
        if (not ly.noticed and d.notice_ms and n <= expiry_bound
                and (found is None or n < found[0])):
            found = (n, 1)
        if x <= expiry_bound and (found is None or x < found[0]):
            found = (x, 2)
    return found


def _run_dues(ly: LoyaltyState, days: tuple[DayBucket, ...], d: _Derived, book: _Book,
              tier_bound: int, expiry_bound: int) -> LoyaltyState:
    while (due := _due(ly, d, tier_bound, expiry_bound)) is not None:
        at, what = due
        if what == 0:
            ly = _downgrade(ly, days, d, book, at)
        elif what == 1:
            deadline = expires_at(ly, d.lr)
            assert deadline is not None
            ly = ly._replace(noticed=True)
            book.add(ly, f"{book.cid}:{EXPIRY_NOTICE}@{deadline}", 0, EXPIRY_NOTICE,
                     f"{_pts(ly.balance)} will expire on {_date(deadline)}: no activity since "
                     f"{_date(ly.last_activity_at)}; a purchase, a survey or a redemption "
                     f"before then keeps them", at, None)
        else:
            gone = ly.balance
            ly = ly._replace(balance=0, noticed=True, expired=(at, gone, ly.last_activity_at))
            book.add(ly, f"{book.cid}:{EXPIRY}@{at}", -gone, EXPIRY,
                     f"{_pts(gone)} expired: no activity for {d.lr.expiry_months} months "
                     f"since {_date(ly.last_activity_at)}", at, None)
    return ly


def _downgrade(ly: LoyaltyState, days: tuple[DayBucket, ...], d: _Derived, book: _Book,
               at: int) -> LoyaltyState:
    cur = _tier(ly, d)
    day = day_of(at)
    spend = spend_365(days, day)
    q = _qualify(spend, d)
    if q >= cur:  # qualified again (a refund left the window): the grace starts over
        return ly._replace(
            qualified_until=first_day_below(days, day, d.thresholds[cur], spend) - 1)
    below_since = (ly.qualified_until or 0) + 1
    new = ly._replace(
        tier=q, tier_since=at,
        qualified_until=first_day_below(days, day, d.thresholds[q], spend) - 1 if q else None)
    tiers = d.lr.tiers
    book.add(new, f"{book.cid}:{TIER_CHANGE}@{at}", 0, TIER_CHANGE,
             f"tier down: {tiers[cur].name} -> {tiers[q].name}: the 12-month spend has been "
             f"under {tiers[cur].name}'s {_money(d.thresholds[cur], d)} {d.currency} since "
             f"{_date(below_since * DAY_MS)} and the {d.lr.downgrade_grace_days}-day grace "
             f"period is over (spend now {_money(spend, d)} {d.currency})", at, None)
    return new


def _evaluate(ly: LoyaltyState, days: tuple[DayBucket, ...], clock: int, d: _Derived,
              book: _Book, event_id: str, at: int) -> LoyaltyState:
    """Re-check the tier after a purchase or refund, as of the purchase clock."""
    cur = _tier(ly, d)
    day = day_of(clock)
    spend = spend_365(days, day)
    q = _qualify(spend, d)
    if q > cur:
        ly = ly._replace(tier=q, tier_since=clock, qualified_until=first_day_below(
            days, day, d.thresholds[q], spend) - 1)
        tiers = d.lr.tiers
        book.add(ly, f"{event_id}:{TIER_CHANGE}", 0, TIER_CHANGE,
                 f"tier up: {tiers[cur].name} -> {tiers[q].name}: the 12-month spend "
                 f"{_money(spend, d)} {d.currency} reached {tiers[q].name}'s "
                 f"{_money(d.thresholds[q], d)} {d.currency}", at, event_id)
    elif cur:
        if spend >= d.thresholds[cur]:
            qu = first_day_below(days, day, d.thresholds[cur], spend) - 1
        else:
            qu = min(day - 1 if ly.qualified_until is None else ly.qualified_until, day - 1)
        if qu != ly.qualified_until:
            ly = ly._replace(qualified_until=qu)
    return ly


# -- earning ----------------------------------------------------------------------------------


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
    eid, t = ev.event_id, ev.occurred_at
    if ev.kind == "refund":
        if ly is None:
            return None  # no account: nothing was earned, nothing to take back
        ly = _refund(ly, ev, rules, d, book)
        ly = _evaluate(ly, days, clock, d, book, eid, t)
        return _prune_orders(ly, clock, d.lr)
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


# -- the other events -------------------------------------------------------------------------


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


def _redemption(ly: LoyaltyState | None, ev: Redemption, known: bool, book: _Book
                ) -> LoyaltyState | None:
    eid, t = ev.event_id, ev.occurred_at
    balance = 0 if ly is None else ly.balance
    if not known:
        why = f"reward {ev.reward_id} not redeemed: unknown customer (no points account)"
    elif ev.points > balance:
        why = (f"reward {ev.reward_id} not redeemed: it costs {_pts(ev.points)}, the balance "
               f"is {_pts(balance)}")
    else:
        assert ly is not None
        ly = _touch(ly._replace(balance=balance - ev.points), t)
        book.add(ly, f"{eid}:{REDEMPTION}", -ev.points, REDEMPTION,
                 f"reward {ev.reward_id}: {_pts(ev.points)} redeemed", t, eid)
        return ly
    book.add(ly, f"{eid}:{REDEMPTION_REJECTED}", 0, REDEMPTION_REJECTED, why, t, eid)
    return ly


def _adjustment(ly: LoyaltyState | None, ev: Adjustment, known: bool, rules: Rules,
                book: _Book) -> LoyaltyState | None:
    """A person's adjustment (README "Member operations"): a credit is goodwill (balance,
    lifetime points, activity; opens an account), a debit takes from the balance only.
    Refused with a 0-point entry saying why: an unknown customer, a credit above
    ``max_points_per_event``, a debit larger than the balance unless
    ``allow_negative_adjustments``."""
    eid, t, n = ev.event_id, ev.occurred_at, ev.points
    lr = rules.loyalty
    balance = 0 if ly is None else ly.balance
    who = f'adjustment by {ev.operator}: "{ev.reason}"'
    if not known:
        why = f"{who}: {_pts(n)} not applied: unknown customer (no state)"
    elif n > lr.max_points_per_event:
        why = (f"{who}: {n:+d} pts not applied: above the {_pts(lr.max_points_per_event)} "
               f"one entry may credit")
    elif n < 0 and -n > balance and not lr.allow_negative_adjustments:
        why = (f"{who}: {_pts(n)} not applied: the balance is {_pts(balance)}, a debit may "
               f"not take it below 0")
    else:
        if n > 0:
            ly = _credit(ly if ly is not None else _open(t), n, t)
        else:
            assert ly is not None or n == 0 or lr.allow_negative_adjustments
            ly = (ly if ly is not None else _open(t))._replace(balance=balance + n)
        book.add(ly, f"{eid}:{ADJUSTMENT}", n, ADJUSTMENT, f"{who}: {n:+d} pts"
                 if abs(n) != 1 else f"{who}: {n:+d} pt", t, eid)
        return ly
    book.add(ly, f"{eid}:{ADJUSTMENT_REJECTED}", 0, ADJUSTMENT_REJECTED, why, t, eid)
    return ly


def _referral(ly: LoyaltyState | None, e: LedgerEffect, d: _Derived, book: _Book
              ) -> LoyaltyState | None:
    """A referral programme entry (``processors/referral/decide.py`` decides, this applies):
    a bonus is credited like goodwill (balance, lifetime points, activity; opens an
    account); a clawback takes back what it credited, never below a balance of 0 unless
    ``allow_negative_balance`` (as a refund does); 0 points: a note (a refusal)."""
    n, t = e.points, e.at
    if n > 0:
        ly = _credit(ly if ly is not None else _open(t), n, t)
        book.add(ly, e.entry_id, n, e.rule, f"{e.reason}: +{_pts(n)}", t, e.event_id)
    elif n < 0:
        have = 0 if ly is None else ly.balance
        taken = 0 if ly is None else (-n if d.lr.allow_negative_balance
                                      else min(-n, max(have, 0)))
        why = e.reason
        if taken < -n:
            why += f"; the balance had only {_pts(taken)} and does not go below 0"
        if ly is not None:
            ly = ly._replace(balance=ly.balance - taken,
                             lifetime_points=ly.lifetime_points - taken)
        book.add(ly, e.entry_id, -taken, e.rule, f"{why}: {_pts(-taken)}", t, e.event_id)
    else:
        book.add(ly, e.entry_id, 0, e.rule, e.reason, t, e.event_id)
    return ly


# -- entry points -----------------------------------------------------------------------------


def on_event(before: CustomerState, event: Event, rules: Rules, *,
             days: tuple[DayBucket, ...], kind_max: tuple[int, ...], sla_breaches: int,
             applied_at: int | None = None, after: CustomerState | None = None
             ) -> tuple[LoyaltyState | None, tuple[LedgerEntry, ...]]:
    """The loyalty part of ``customer.apply``: ``before`` is the state before the event,
    ``days``/``kind_max``/``sla_breaches`` the core fields after it. First the changes due
    by the event's time (the tier ones only once no acceptable purchase can predate them),
    then the event's own entries. Raises ``Rejected`` for an invalid redemption. ``applied_at``:
    the clock the event is applied with; an event more than ``late_arrival_ms`` older says so
    in the reasons of the entries it causes. ``after``: the state with the base changes
    (the referral programme's decisions read the signup's profile from it)."""
    if isinstance(event, Redemption) and (type(event.points) is not int or event.points < 1):
        raise Rejected(INVALID, f"redemption points {event.points!r} must be an integer >= 1")
    if isinstance(event, Adjustment) and (type(event.points) is not int or event.points == 0):
        raise Rejected(INVALID, f"adjustment points {event.points!r} must be a non-zero integer")
    d = _derived(rules)
    book = _Book(before.customer_id, d)
    ly = before.loyalty
    t = event.occurred_at
    if ly is not None and ly.expired and ly.expired[2] < t < ly.expired[0] and _is_activity(
            ly, event, d, sla_breaches - before.sla_breaches):
        ly = _reverse_expiry(ly, event, book)
    if ly is not None:
        if isinstance(event, Purchase):
            tier_bound = t
        else:
            tier_bound = min(t, before.kind_max[PURCHASE_KIND] - rules.allowed_lateness_ms)
        ly = _run_dues(ly, before.days, d, book, tier_bound, t)
    if isinstance(event, Purchase):
        clock = kind_max[PURCHASE_KIND]
        ly = _purchase(ly, event, rules, d, book, days, clock)
        if ly is not None:
            ly = _run_dues(ly, days, d, book, clock, t)
    elif isinstance(event, Survey):
        ly = _survey(ly, event, d, book, kind_max)
    elif isinstance(event, SupportTicket):
        ly = _ticket(ly, event, d, book, sla_breaches - before.sla_breaches)
    elif isinstance(event, Redemption):
        ly = _redemption(ly, event, before.max_event_at is not None, book)
    elif isinstance(event, Adjustment):
        ly = _adjustment(ly, event, before.max_event_at is not None, rules, book)
    if after is not None and (before.referral is not None or before.profile is not None
                              or isinstance(event, Referral)):
        for effect in decide(before, after, event, rules).effects:  # the referral programme
            ly = _referral(ly, effect, d, book)
    if applied_at is not None and applied_at - t > rules.late_arrival_ms and book.out:
        return ly, _noted_late(book.out, event, applied_at)
    return ly, tuple(book.out)


def _is_activity(ly: LoyaltyState, event: Event, d: _Derived, new_breaches: int) -> bool:
    """Whether ``event`` resets the expiry clock (with the expired points back, for a
    redemption)."""
    if isinstance(event, Purchase):
        return event.kind == "purchase"
    if isinstance(event, Survey):
        return True
    if isinstance(event, SupportTicket):
        return new_breaches > 0 and d.lr.service_recovery_points.of(event.priority) > 0
    if isinstance(event, Redemption):
        return event.points <= ly.balance + ly.expired[1]
    return False


def _reverse_expiry(ly: LoyaltyState, event: Event, book: _Book) -> LoyaltyState:
    """A late activity dated between the last activity and an expiry already written: in
    the order things happened the points would not have expired. Give them back, in one
    entry that says why; the event then resets the expiry clock as usual."""
    at, points, _ = ly.expired
    # (the notice stays sent, as it was in the order things happened: the event's own
    # activity clears it)
    ly = ly._replace(balance=ly.balance + points, expired=())
    book.add(ly, f"{event.event_id}:{EXPIRY_REVERSED}", points, EXPIRY_REVERSED,
             f"expiry of {_date(at)} reversed: {event.event_kind} of "
             f"{_date(event.occurred_at)} arrived late: +{_pts(points)}", event.occurred_at,
             event.event_id)
    return ly


def _noted_late(entries: list[LedgerEntry], event: Event, applied_at: int
                ) -> tuple[LedgerEntry, ...]:
    """The event's own entries say that it arrived late (what was due before it keeps its
    reason: it happened when it was due)."""
    note = (f" (arrived late: {event.event_kind} of {_date(event.occurred_at)}, applied "
            f"{_date(applied_at)})")
    return tuple(replace(e, reason=e.reason + note)
                 if e.event_id == event.event_id and e.rule != EXPIRY_REVERSED else e
                 for e in entries)


def tick_record(state: CustomerState, rules: Rules, now: int
                ) -> tuple[LoyaltyState | None, tuple[LedgerEntry, ...]]:
    """Time-driven changes due at or before event time ``now``: tier downgrades after the
    grace period, expiry notices, expiries. Deterministic and idempotent (a second call with
    the same or an earlier ``now`` finds nothing due); an event of the customer later
    produces none of them again. When a tick runs ahead of events that are still accepted
    (the live clock), a late activity reverses an expiry (``expiry_reversed``) and a late
    purchase brings a tier back with a new tier change (README "Time"). Returns the record
    (``state.loyalty`` itself when nothing was due) and the entries."""
    ly = state.loyalty
    if ly is None:
        return None, ()
    d = _derived(rules)
    book = _Book(state.customer_id, d)
    new = _run_dues(ly, state.days, d, book, now, now)
    if new is ly:
        return ly, ()
    return new, tuple(book.out)


def on_tick(state: CustomerState, rules: Rules, now: int
            ) -> tuple[CustomerState, tuple[LedgerEntry, ...]]:
    """``tick_record`` as a state transition: the state with the new record (``state``
    itself when nothing was due) and the entries."""
    ly, entries = tick_record(state, rules, now)
    if ly is state.loyalty:
        return state, ()
    return evolve(state, {"loyalty": ly}), entries


def next_due(state: CustomerState, rules: Rules) -> int | None:
    """Event time of the next time-driven loyalty change (for the scanner), or None."""
    ly = state.loyalty
    if ly is None:
        return None
    due = _due(ly, _derived(rules), 2**62, 2**62)
    return None if due is None else due[0]


def view_fields(state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
    """The loyalty columns of ``customer.view`` as of event time ``as_of`` (changes due by
    then, e.g. an expiry the scanner has not run yet, already applied)."""
    ly = state.loyalty
    if ly is None:
        return {"points_balance": 0, "lifetime_points": 0, "tier": None, "tier_since": None,
                "next_tier": None, "spend_to_next_tier_minor": None, "points_expiring": 0,
                "expires_at": None}
    d = _derived(rules)
    ly = _run_dues(ly, state.days, d, _Book(state.customer_id, d), as_of, as_of)
    cur = _tier(ly, d)
    nxt = cur + 1 if cur + 1 < len(d.thresholds) else None
    deadline = expires_at(ly, d.lr)
    return {
        "points_balance": ly.balance,
        "lifetime_points": ly.lifetime_points,
        "tier": d.lr.tiers[cur].name,
        "tier_since": ly.tier_since or None,  # None: since the account opened
        "next_tier": None if nxt is None else d.lr.tiers[nxt].name,
        "spend_to_next_tier_minor": None if nxt is None
        else max(0, d.thresholds[nxt] - spend_365(state.days, day_of(as_of))),
        "points_expiring": ly.balance if deadline is not None else 0,
        "expires_at": deadline,
    }


# -- wire (processors.wire key "ly") ----------------------------------------------------------


def to_wire(ly: LoyaltyState) -> list[Any]:
    """``[balance, lifetime, tier, tier_since, qualified_until, last_activity, noticed,
    orders, surveys(, expired)]``; orders flat: ``key, day, paid, points, refunded, clawed,
    n`` then n lines ``key, units, points, refunded_units``; surveys flat: ``day, key``;
    ``expired`` ``[at, points, last activity]`` only while there is one."""
    bal, life, tier, since, qu, last, noticed, ords, marks, expired = ly
    orders: list[Any] = []
    for o in ords:
        orders += o  # key, day, paid, points, refunded, clawed, lines
        lines = o[6]
        orders[-1] = len(lines)  # (cheaper than slicing the order's first six off)
        for x in lines:
            orders += x
    out = [bal, life, tier, since, qu, last, 1 if noticed else 0, orders,
           list(chain(*marks)) if marks else []]
    if expired:
        out.append(list(expired))
    return out


def _bad(value: Any, what: str) -> WireError:
    return WireError(f"state field 'ly': {what}, got {value!r:.80}")


def _all_int(xs: list[Any]) -> bool:
    """Every item's type is exactly int (not bool): in bulk, in C (the cheapest way found)."""
    return list(map(type, xs)).count(int) == len(xs)


def from_wire(value: Any) -> LoyaltyState:
    if type(value) is not list or len(value) not in (9, 10):
        raise _bad(value, "expected a list of 9 or 10 items")
    bal, life, tier, since, qu, last, noticed, flat, marks = value[:9]
    expired: tuple[int, ...] = ()
    if len(value) == 10:
        if type(value[9]) is not list or len(value[9]) != 3 or not _all_int(value[9]):
            raise _bad(value, "expired must be [at, points, last activity]")
        expired = tuple(value[9])
    if not (type(bal) is int and type(life) is int and type(tier) is int
            and type(since) is int and type(last) is int) or tier < 0:
        raise _bad(value, "expected integers")
    if qu is not None and type(qu) is not int:
        raise _bad(value, "qualified_until must be an integer or null")
    if type(noticed) is not int or noticed not in (0, 1):
        raise _bad(value, "noticed must be 0 or 1")
    if type(flat) is not list or not _all_int(flat) or type(marks) is not list \
            or not _all_int(marks):
        raise _bad(value, "expected flat integer lists")
    if len(marks) % 2:
        raise _bad(value, "surveys must be (day, key) pairs")
    orders = []
    i, end = 0, len(flat)
    while i < end:
        j = i + 7  # the first line
        if j > end or (n := flat[i + 6]) < 0 or j + 4 * n > end:
            raise _bad(value, "malformed orders")
        k = j + 4 * n  # the next order
        if n == 1:  # the most common case, and the cheapest
            lines: tuple[LinePoints, ...] = (_new(LinePoints, flat[j:k]),)
        elif n:  # consecutive groups of 4 (the length is checked above)
            it = iter(flat[j:k])
            lines = tuple(map(_new, repeat(LinePoints, n), zip(it, it, it, it, strict=False)))
        else:
            lines = ()
        orders.append(_new(OrderPoints, (*flat[i:i + 6], lines)))
        i = k
    surveys: tuple[SurveyMark, ...] = ()
    if marks:  # consecutive pairs (the length is checked above)
        it = iter(marks)
        surveys = tuple(map(_new, repeat(SurveyMark), zip(it, it, strict=False)))
    return _new(LoyaltyState, (bal, life, tier, since, qu, last, noticed == 1, tuple(orders),
                               surveys, expired))


# -- the layer (processors/layer.py) ----------------------------------------------------------


class LoyaltyLayer:
    """The points account as a layer: record ``CustomerState.loyalty``, wire key ``ly``."""

    name: str = "loyalty"
    field: str | None = "loyalty"
    wire_key: str | None = "ly"

    def on_event(self, before: CustomerState, after: CustomerState, event: Event,
                 rules: Rules, now: int) -> Reaction:
        ly, entries = on_event(before, event, rules, days=after.days, kind_max=after.kind_max,
                               sla_breaches=after.sla_breaches, applied_at=now, after=after)
        return Reaction(ly, entries)

    def on_tick(self, before: CustomerState, after: CustomerState, rules: Rules,
                at: int) -> Reaction:
        ly, entries = tick_record(after, rules, at)
        return Reaction(ly, entries)

    def next_due(self, state: CustomerState, rules: Rules) -> int | None:
        return next_due(state, rules)

    def view_fields(self, state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
        return view_fields(state, rules, as_of)

    def to_wire(self, record: LoyaltyState, state: CustomerState) -> list[Any]:
        return to_wire(record)

    def from_wire(self, value: Any, base: Mapping[str, Any]) -> LoyaltyState:
        return from_wire(value)


LAYER = LoyaltyLayer()
