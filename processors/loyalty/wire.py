"""The points account's wire form (``processors/wire.py``, key ``ly``).

Theory of operation: one flat list of integers per account (see ``to_wire``), decoded
without per-item Python constructors; a malformed value raises ``WireError``.
"""

from __future__ import annotations

from itertools import chain, repeat
from typing import Any

from processors.errors import WireError
from processors.loyalty.derived import _new
from processors.loyalty.records import LinePoints, LoyaltyState, OrderPoints, SurveyMark


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
