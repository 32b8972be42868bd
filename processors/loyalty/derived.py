"""What the loyalty code derives from the rules once per ``Rules`` object, and formatting.

Theory of operation: ``_derived(rules)`` (cached per rules object) turns the loyalty rules
into the numbers every call needs (tier thresholds, multipliers as exact fractions, the
reporting currency's digits); the formatting helpers write amounts, points and dates the
way the reasons show them ("42.50 EUR x 1 pt/EUR x gold 1.5 = 63 pts"), exactly.
``spend_365`` and ``add_months`` are the calendar arithmetic tiers and expiry share.
"""

from __future__ import annotations

import bisect
import calendar
import math
import zlib
from datetime import date
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

from processors.loyalty.records import LoyaltyState
from processors.rules import LoyaltyRules, Rules, per_rules
from processors.state import KIND_INDEX, DayBucket
from processors.timeutil import DAY_MS, format_time

SURVEY_KIND = KIND_INDEX["survey"]

YEAR_DAYS = 365  # the rolling 12 months: the core state's 365-day window

X = "\N{MULTIPLICATION SIGN}"  # in reasons: "42.50 EUR x 1 pt/EUR x gold 1.5 = 63 pts"

# tuple.__new__(Cls, items) builds one of the loyalty records without the Python-level
# Cls.__new__ (cheaper on the hot paths; the callers pass every field, in order)
_new = tuple.__new__


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


_PAST = 2**63


def _after(days: tuple[DayBucket, ...], day: int) -> int:
    """Index of the first bucket of a day after ``day`` (buckets are sorted by day)."""
    return bisect.bisect_right(days, (day, _PAST))


def spend_365(days: tuple[DayBucket, ...], day: int) -> int:
    """Net spend (purchases - refunds) of the 365 days ``(day - 365, day]``."""
    lo, hi = _after(days, day - YEAR_DAYS), _after(days, day)
    s = 0
    for b in days[lo:hi]:  # a plain loop: cheaper than sum() over a generator
        s += b.spend_minor - b.refunds_minor
    return s
