"""The loyalty layer: the points account's answer to an event and to time passing.

Theory of operation: ``on_event`` first writes what was due by the event's time (the tier
dues only once no acceptable purchase can predate them; a late activity may reverse an
expiry), then the event's own entries (earning, refund, bonus, member operation); an event
applied more than ``late_arrival_ms`` after it happened says so in its entries' reasons.
``tick_record`` writes the time-driven changes due by a time. ``LoyaltyLayer`` is the
record's face to the registry (``processors/layer.py``): record ``CustomerState.loyalty``,
wire key ``ly``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from processors.errors import INVALID, Rejected
from processors.layer import Reaction
from processors.loyalty.derived import _date, _derived, _tier, spend_365
from processors.loyalty.earning import _purchase, _survey, _ticket
from processors.loyalty.expiry import _due, _is_activity, _reverse_expiry, _run_dues, expires_at
from processors.loyalty.ledger import EXPIRY_REVERSED, LedgerEntry, _Book
from processors.loyalty.members import _adjustment, _redemption, _referral
from processors.loyalty.records import LoyaltyState
from processors.loyalty.refunds import _refund_order
from processors.loyalty.wire import from_wire, to_wire
from processors.referral.decide import decide
from processors.rules import Rules
from processors.state import PURCHASE_KIND, CustomerState, DayBucket, evolve
from processors.timeutil import day_of
from schemas.events import Adjustment, Event, Purchase, Redemption, Referral, SupportTicket, Survey


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
        earn_or_refund = _refund_order if event.kind == "refund" else _purchase
        ly = earn_or_refund(ly, event, rules, d, book, days, clock)
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


class LoyaltyLayer:
    """The points account as a layer: record ``CustomerState.loyalty``, wire key ``ly``."""

    name, field, wire_key = "loyalty", "loyalty", "ly"

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
