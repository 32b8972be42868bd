"""Tiers: reached on the 365-day net spend, kept until a fixed downgrade time.

Theory of operation: the tier is reached when the net spend of the 365-day window as of
the purchase clock reaches its ``min_spend`` (``_evaluate``, after every purchase or
refund; rule ``tier_change``, 0 points). ``qualified_until`` is the last day the tier stays
qualified if nothing more is bought (``first_day_below`` over the day buckets), so the
downgrade is due at a fixed event time, ``(qualified_until + 1 + grace) days``
(``_tier_due``), whoever notices it first; ``_downgrade`` goes to the tier the spend of
that day qualifies for.
"""

from __future__ import annotations

from processors.loyalty.derived import YEAR_DAYS, _after, _date, _Derived, _money, _tier, spend_365
from processors.loyalty.ledger import TIER_CHANGE, _Book
from processors.loyalty.records import LoyaltyState
from processors.state import DayBucket
from processors.timeutil import DAY_MS, day_of


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


def _tier_due(ly: LoyaltyState, d: _Derived) -> int | None:
    if _tier(ly, d) == 0 or ly.qualified_until is None:
        return None
    return (ly.qualified_until + 1 + d.lr.downgrade_grace_days) * DAY_MS


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
