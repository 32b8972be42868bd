"""Segments: one primary segment and tags per customer, as of an event time, from the rules.

Theory of operation
-------------------
``classify(state, rules, at)`` checks every segment of ``rules.SEGMENTS`` against the
customer state as of event time ``at`` (``engagement.segments`` in the rules file, whose
comments give the definitions). The first segment that holds, in that precedence order, is
the primary segment; the others that hold are its tags. The order puts what a marketer must
not miss first: a lapsed customer is lapsed before they are "at risk", a new customer is
new before anything else (the churn score of a first purchase is the population's, not the
customer's: churn.py does not alert on it either), a big spender is one before they are
loyal, and ``active`` / ``inactive`` / ``prospect`` are what is left. A one-time buyer is
one before they are at risk: the purchase model makes nearly every one-time buyer "at risk",
and the second-purchase offer is what speaks to them (churn.py's suggested action too).
Only a customer who bought is at risk (a signup's churn level is about the purchase not
made yet). Each holding segment comes with a readable reason, e.g.
``big spender: 365-day net spend 2,430.00 EUR ≥ 2,000.00``.

The inputs are the state's confluent purchase facts (first and last purchase, purchase
days, the 365-day window of the day buckets), the profile's signup time and the churn
record's level. So between events a segment changes only

* when a time threshold passes: first purchase (or signup) + ``new_days``, last purchase +
  ``active_days`` and + ``lapsed_days``, and the day a purchase day leaves the 365-day
  window and takes the net spend across ``big_spender_min_spend``: ``next_change`` gives
  the first of these after a time (exactly: the first at which ``classify`` may differ);
* when the churn level changes: that is the churn layer's time-driven path, which runs
  before this one in the same tick.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import NamedTuple

from processors.rules import SEGMENTS, Rules, per_rules
from processors.state import CustomerState, DayBucket
from processors.timeutil import DAY_MS, day_of, format_time

YEAR_DAYS = 365
_LEVEL_RANK = {"low": 0, "medium": 1, "high": 2}


class Segmentation(NamedTuple):
    segment: str
    tags: tuple[str, ...]  # the other segments that hold, in precedence order
    reason: str  # why the primary segment holds


class _Thresholds(NamedTuple):
    new_ms: int
    active_ms: int
    lapsed_ms: int
    big_minor: int  # big_spender_min_spend in reporting minor units (rounded up)
    exponent: int
    currency: str
    at_risk_rank: int


@per_rules
def _thresholds(rules: Rules) -> _Thresholds:
    sr = rules.engagement.segments
    e = rules.minor_units[rules.reporting_currency]
    return _Thresholds(sr.new_days * DAY_MS, sr.active_days * DAY_MS, sr.lapsed_days * DAY_MS,
                       math.ceil(sr.big_spender_min_spend * 10**e), e,
                       rules.reporting_currency, _LEVEL_RANK[sr.at_risk_level])


def money(minor: int, exponent: int) -> str:
    """``243000, 2`` -> ``2,430.00`` (thousands separated, exact)."""
    return f"{Decimal(minor).scaleb(-exponent):,.{exponent}f}"


def net_spend_365(days: tuple[DayBucket, ...], day: int) -> int:
    """Net spend (purchases - refunds) of the days ``(day - 365, day]``."""
    return sum(b.spend_minor - b.refunds_minor for b in days if day - YEAR_DAYS < b.day <= day)


def _days(ms: int) -> str:
    return f"{ms // DAY_MS} day{'s' if ms // DAY_MS != 1 else ''}"


def _date(ms: int) -> str:
    return format_time(ms)[:10]


def classify(state: CustomerState, rules: Rules, at: int) -> Segmentation:
    """The segment and tags as of event time ``at`` (see the module docstring)."""
    k = _thresholds(rules)
    sr = rules.engagement.segments
    first, last = state.first_purchase_at, state.last_purchase_at
    holds: dict[str, str] = {}
    if first is not None and last is not None:
        silent = at - last
        if silent >= k.lapsed_ms:
            holds["lapsed"] = (f"lapsed: no purchase for {_days(silent)} "
                               f"(≥ {sr.lapsed_days})")
    ch = state.churn
    if first is not None and ch is not None and _LEVEL_RANK.get(ch.level, 0) >= k.at_risk_rank:
        holds["at_risk"] = f"at risk: churn level {ch.level} (score {ch.score:.2f})"
    signup = state.profile.signup_at if state.profile is not None else None
    if first is not None and at - first < k.new_ms:
        holds["new"] = (f"new: first purchase on {_date(first)}, within {sr.new_days} days")
    elif first is None and signup is not None and at - signup < k.new_ms:
        holds["new"] = f"new: signed up on {_date(signup)}, no purchase yet"
    if first is not None and last is not None:
        # no window can hold more than everything ever bought: most customers stop here
        spend = 0 if state.gross_spend_minor < k.big_minor else net_spend_365(state.days,
                                                                              day_of(at))
        if spend >= k.big_minor:
            holds["big_spender"] = (
                f"big spender: 365-day net spend {money(spend, k.exponent)} {k.currency} "
                f"≥ {money(k.big_minor, k.exponent)}")
        pdays = state.purchase_days
        span = last - first
        if (pdays >= sr.loyal_min_purchase_days and span >= sr.loyal_min_span_days * DAY_MS
                and at - last < k.active_ms):
            holds["loyal"] = (f"loyal: {pdays} purchase days over {_days(span)}, the last "
                              f"{_days(at - last)} ago")
        if pdays == 1 and "new" not in holds and "lapsed" not in holds:
            holds["one_time"] = f"one-time buyer: a single purchase day, {_date(first)}"
        if at - last < k.active_ms:
            holds["active"] = (f"active: last purchase {_days(at - last)} ago (within "
                               f"{sr.active_days})")
        elif "lapsed" not in holds:
            holds["inactive"] = (f"inactive: no purchase for {_days(at - last)} (active "
                                 f"within {sr.active_days}, lapsed from {sr.lapsed_days})")
    elif "new" not in holds:
        holds["prospect"] = "prospect: no purchase yet"
    ordered = [s for s in SEGMENTS if s in holds]
    return Segmentation(ordered[0], tuple(ordered[1:]), holds[ordered[0]])


def next_change(state: CustomerState, rules: Rules, after: int) -> int | None:
    """The first event time strictly after ``after`` at which silence alone may change
    ``classify`` (a time threshold passes), or None."""
    k = _thresholds(rules)
    first, last = state.first_purchase_at, state.last_purchase_at
    times: list[int] = []
    if first is not None and last is not None:
        times += [first + k.new_ms, last + k.active_ms, last + k.lapsed_ms]
        if state.gross_spend_minor >= k.big_minor:  # else no window ever reaches it
            flip = _spend_flip(state.days, after, k.big_minor)
            if flip is not None:
                times.append(flip)
    elif state.profile is not None and state.profile.signup_at is not None:
        times.append(state.profile.signup_at + k.new_ms)
    later = [t for t in times if t > after]
    return min(later) if later else None


def _spend_flip(days: tuple[DayBucket, ...], after: int, threshold: int) -> int | None:
    """The first day start after ``after`` at which the 365-day net spend crosses
    ``threshold`` (either way) as purchase days leave the window (or, after a future-dated
    purchase, enter it), or None."""
    day = day_of(after)
    lo = day - YEAR_DAYS
    spend, refunds, ahead = 0, False, False
    for b in days:
        if b.day > day:
            ahead = True
        elif b.day > lo:
            spend += b.spend_minor - b.refunds_minor
            refunds = refunds or b.refunds_minor > 0
    above = spend >= threshold
    if not ahead and not refunds:  # the common case: the spend only falls, day by day
        if not above:
            return None
        for b in days:
            if b.day > lo:
                spend -= b.spend_minor
                if spend < threshold:
                    return (b.day + YEAR_DAYS) * DAY_MS
        return None
    moves = sorted([(b.day + YEAR_DAYS, b.refunds_minor - b.spend_minor) for b in days
                    if lo < b.day <= day]
                   + [(b.day, b.spend_minor - b.refunds_minor) for b in days if b.day > day])
    for when, delta in moves:
        spend += delta
        if (spend >= threshold) != above:
            return when * DAY_MS
    return None
