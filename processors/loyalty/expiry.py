"""Expiry: the balance expires some months after the last activity; what is due by a time.

Theory of operation: the balance expires ``expiry_months`` calendar months after the last
activity (``expires_at``), announced ``expiry_notice_days`` before (rules ``expiry_notice``,
``expiry``). ``_due`` says which time-driven change (downgrade, notice, expiry) comes next
and ``_run_dues`` writes every one due by a time, each at the time it was due, so a tick
and an event that both see it produce the same entry once. A late activity dated before an
expiry already written undoes it (``_reverse_expiry``, rule ``expiry_reversed``).
"""

from __future__ import annotations

from processors.loyalty.derived import _date, _Derived, _pts, add_months
from processors.loyalty.ledger import EXPIRY, EXPIRY_NOTICE, EXPIRY_REVERSED, _Book
from processors.loyalty.records import LoyaltyState
from processors.loyalty.tiers import _downgrade
from processors.rules import LoyaltyRules
from processors.state import DayBucket
from processors.timeutil import DAY_MS
from schemas.events import Event, Purchase, Redemption, SupportTicket, Survey


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
