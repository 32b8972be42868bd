"""Customer-state transitions: ``apply(state, event, rules, now) -> Step`` and ``view``.

Theory of operation
-------------------
``apply`` is a pure function. In order it

1. starts an empty state for a customer's first event (``state is None``) and rejects an
   event of another customer (``Rejected("invalid")``: a routing bug must not corrupt state);
2. recognises a duplicate: the event's key (64-bit blake2b of ``"<kind>:<event_id>"``) is in
   the dedup window -> ``Step(state, duplicate=True)``, state unchanged. A producer retry
   or a replay of recent data is a no-op; checked before lateness so that a retry that
   arrives after the customer's clock moved is still recognised rather than dead-lettered;
3. rejects an event that is too late for this customer: more than ``allowed_lateness``
   before the customer's newest event of the same kind (``kind_max``). Past that the dedup
   window and the day buckets have moved on, so the state could not tell a duplicate or
   place the event; anything younger is applied, however far behind other customers or the
   partition it is. A customer with no event of that kind takes an event of any age.
   Referral records (written by the workers, a round trip after the purchase they carry
   the time of) have a longer lateness: the referrer's memory of rewarded friends
   (``referral.decide.horizon``, 373 days by default), within which the record itself
   recognises a re-sent claim.
   ``now`` is the clock the event is applied with (the wall clock live, the replay's or the
   partition's event time otherwise): it never rejects anything; it only tells the ledger
   that an event "arrived late" (README "Time");
4. computes the topic-specific field changes (purchases, tickets, surveys, customer records:
   ``profile.profile_changes``; redemptions change only dedup and ``max_event_at`` here:
   the loyalty layer answers them) - these raise ``Rejected`` for unknown currencies,
   invalid content and (for now) erasure requests;
5. advances ``max_event_at``, prunes day buckets and the dedup window against it, and
   remembers the event's key;
6. hands the change ``before -> after`` to the layers (``processors/registry.py``, in
   order: loyalty, churn, KPIs; the protocol is ``processors/layer.py``): each may replace
   its own record and add outputs and KPI increments. Two special cases live in the layers:
   churn answers a customer record (``CustomerEvent``) with only what silence made due
   (its ``on_tick`` on the state before it), and the KPIs see the final ``after``.
   ``apply_state`` (``STATE_ONLY``) stops before this step.

Nothing is returned before every check passed, so a ``Rejected`` (also one a layer raises,
e.g. an invalid redemption) changes nothing. ``state.py`` explains why the result is confluent.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from hashlib import blake2b
from typing import Any, NamedTuple

from processors import profile
from processors.errors import INVALID, TOO_LATE, Rejected
from processors.outputs import KpiDelta, Output
from processors.purchases import purchase_changes
from processors.referral.decide import horizon as referral_horizon
from processors.registry import LAYERS
from processors.rules import Rules
from processors.state import (
    KIND_INDEX,
    KINDS,
    PURCHASE_KIND,
    REFERRAL_KIND,
    WINDOWS_DAYS,
    CustomerState,
    DayBucket,
    Seen,
    bucket_horizon_days,
    evolve,
    window_sums,
)
from processors.support import pending_breaches, ticket_changes
from processors.surveys import rolling_mean, survey_changes
from processors.timeutil import DAY_MS, HOUR_MS, day_of, format_time
from schemas.events import (
    Adjustment,
    CustomerEvent,
    Event,
    Purchase,
    Redemption,
    Referral,
    SupportTicket,
    Survey,
)


class Step(NamedTuple):  # a tuple: built once or twice an event, ~3x cheaper than a dataclass
    state: CustomerState
    outputs: tuple[Output, ...] = ()  # ledger entries, churn alerts (processors.outputs)
    duplicate: bool = False  # event_id already seen: state unchanged, nothing emitted
    kpi: tuple[KpiDelta, ...] = ()  # increments of KPI aggregates, committed with the state


def event_key(event: Event) -> int:
    """Stable 64-bit dedup key of an event (kind-qualified so topics never collide)."""
    raw = f"{event.event_kind}:{event.event_id}".encode()
    return int.from_bytes(blake2b(raw, digest_size=8).digest(), "big")


def apply(state: CustomerState | None, event: Event, rules: Rules, now: int) -> Step:
    """The customer's state after ``event``, with the points, churn and KPI layers."""
    return _apply(state, event, rules, now, True)


def apply_state(state: CustomerState | None, event: Event, rules: Rules, now: int) -> Step:
    """``apply`` without the points, churn and KPI layers: the customer state alone (purchase
    facts, day windows, tickets, surveys, dedup, lateness), ``loyalty`` and ``churn`` left
    as they are, no outputs. What the state engine costs by itself (``bench/``)."""
    return _apply(state, event, rules, now, False)


def _apply(state: CustomerState | None, event: Event, rules: Rules, now: int,
           layers: bool) -> Step:
    if state is None:
        state = CustomerState(customer_id=event.customer_id)
    elif event.customer_id != state.customer_id:
        raise Rejected(
            INVALID,
            f"event of customer {event.customer_id!r} applied to the state of "
            f"{state.customer_id!r}",
        )
    key = event_key(event)
    for s in state.seen:
        if s.key == key:
            return Step(state, duplicate=True)

    t = event.occurred_at
    kind = KIND_INDEX[event.event_kind]
    kmax = state.kind_max[kind]
    lates = kind_lateness(rules)
    late = lates[kind]
    if kmax and t < kmax - late:
        raise Rejected(
            TOO_LATE,
            f"occurred_at {format_time(t)} is more than the allowed lateness "
            f"({late // HOUR_MS} h) before this customer's newest {event.event_kind} "
            f"event ({format_time(kmax)}): a duplicate could no longer be recognised",
        )

    if isinstance(event, Purchase):
        changes = purchase_changes(state, event, rules)
    elif isinstance(event, SupportTicket):
        changes = ticket_changes(state, event, rules)
    elif isinstance(event, Survey):
        changes = survey_changes(state, event, rules)
    elif isinstance(event, (Redemption, Adjustment, Referral)):
        changes = {}  # points: the loyalty layer answers it with a ledger entry
    elif isinstance(event, CustomerEvent):
        changes = profile.profile_changes(state, event)  # signup, profile, consent
    else:
        raise TypeError(f"not an event: {type(event).__name__}")

    max_at = t if state.max_event_at is None else max(state.max_event_at, t)
    changes["max_event_at"] = max_at
    km = state.kind_max
    if t > kmax:
        new_km = list(km)
        new_km[kind] = t
        km = (new_km[0], new_km[1], new_km[2], new_km[3], new_km[4], new_km[5])
        changes["kind_max"] = km
    days: tuple[DayBucket, ...] = changes.get("days", state.days)
    cutoff_day = day_of(km[PURCHASE_KIND]) - bucket_horizon_days(lates[PURCHASE_KIND])
    if days and days[0].day <= cutoff_day:
        keep = bisect.bisect_right(days, cutoff_day, key=lambda b: b.day)
        archived = sum(1 for b in days[:keep] if b.orders > 0)
        changes["days"] = days[keep:]
        changes["archived_purchase_days"] = state.archived_purchase_days + archived
    changes["seen"] = _remember(state.seen, Seen(t, key, kind), km, lates,
                                rules.dedup_window_max)
    if not layers:
        return Step(evolve(state, changes))
    return _react(state, evolve(state, changes), event, rules, now)


def _react(before: CustomerState, after: CustomerState, event: Event | None, rules: Rules,
           t: int) -> Step:
    """The layers' answers, in registry order, to an accepted ``event`` applied with clock
    ``t`` (``on_event``), or with ``event`` None to time passing to ``t`` (``on_tick``).
    Each layer sees ``after`` with the records of the layers before it updated; the state
    is copied only when a layer's record changed (compared by identity)."""
    outputs: tuple[Output, ...] = ()
    kpis: tuple[KpiDelta, ...] = ()
    for layer in LAYERS:
        if event is None:
            record, outs, deltas = layer.on_tick(before, after, rules, t)
        else:
            record, outs, deltas = layer.on_event(before, after, event, rules, t)
        if (field := layer.field) is not None and record is not getattr(after, field):
            after = evolve(after, {field: record})
        if outs:
            outputs += outs
        if deltas:
            kpis += deltas
    return Step(after, outputs, kpi=kpis)


def kind_lateness(rules: Rules) -> tuple[int, ...]:
    """The lateness per event kind (``KIND_INDEX`` order): ``allowed_lateness_ms``, and for
    referral records the referrer's memory of rewarded friends (``referral.decide.horizon``,
    never shorter). Lateness checks and dedup expiry both read it."""
    lates = [rules.allowed_lateness_ms] * KINDS
    lates[REFERRAL_KIND] = referral_horizon(rules)
    return tuple(lates)


def _remember(seen: tuple[Seen, ...], new: Seen, kind_max: tuple[int, ...],
              lates: tuple[int, ...], cap: int) -> tuple[Seen, ...]:
    """Insert, then per event kind: drop entries older than that kind's clock minus its
    lateness (``kind_lateness``) and keep that kind's greatest ``cap`` by (at, key). Per
    kind, because the clocks differ: a cap across kinds would not commute with the kinds'
    own expiry."""
    if not seen or seen[-1] < new:  # the common case: the newest entry
        items = [*seen, new]
    else:
        items = list(seen)
        bisect.insort(items, new)
    # nothing to drop when no kind can be over its cap and even the oldest entry is within
    # the shortest lateness of every kind's clock (the same result as the loop below, cheaper)
    if len(items) <= cap and items[0].at >= max(kind_max) - min(lates):
        return tuple(items)
    kept: list[Seen] = []
    counts = [0] * KINDS
    for s in reversed(items):  # newest first, so the cap keeps the greatest
        if s.at >= kind_max[s.kind] - lates[s.kind] and counts[s.kind] < cap:
            counts[s.kind] += 1
            kept.append(s)
    kept.reverse()
    return tuple(kept)


def view(state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
    """The customer's export row as of event time ``as_of`` (JSON-ready values only).

    Window sums count the day buckets in ``(as_of_day - N, as_of_day]``: days after
    ``as_of`` are left out, and the sums are exact for any ``as_of >= max_event_at -
    allowed_lateness`` (the time of any accepted event of the customer always is; an
    earlier ``as_of`` may reach past the bucket horizon and undercount the 365-day window).
    ``sla_breaches`` = settled breaches + breaches of open tickets whose deadline < ``as_of``.
    """
    sla = rules.support.sla
    pending = sum(pending_breaches(o, sla, as_of) for o in state.open_tickets)
    breaching = sum(1 for o in state.open_tickets if pending_breaches(o, sla, as_of))
    last = state.last_purchase_at
    row: dict[str, Any] = {
        "customer_id": state.customer_id,
        "as_of": as_of,
        "max_event_at": state.max_event_at,
        "reporting_currency": rules.reporting_currency,
        "first_purchase_at": state.first_purchase_at,
        "last_purchase_at": last,
        "days_since_last_purchase": None if last is None else (as_of - last) / DAY_MS,
        "purchase_count": state.purchase_count,
        "refund_count": state.refund_count,
        "purchase_days": state.purchase_days,
        "gross_spend_minor": state.gross_spend_minor,
        "refunds_minor": state.refunds_minor,
        "total_spend_minor": state.total_spend_minor,
        "average_order_value_minor": state.average_order_value_minor,
        "mean_interpurchase_gap_days": state.mean_interpurchase_gap_days,
    }
    sums = window_sums(state, as_of)
    for n in WINDOWS_DAYS:
        w = sums[n]
        row[f"orders_{n}d"] = w.orders
        row[f"spend_{n}d_minor"] = w.spend_minor
        row[f"refunds_{n}d_minor"] = w.refunds_minor
        row[f"net_spend_{n}d_minor"] = w.spend_minor - w.refunds_minor
    row.update(
        open_tickets=len(state.open_tickets),
        open_ticket_ids=[o.ticket_id for o in state.open_tickets],
        open_urgent_tickets=sum(1 for o in state.open_tickets if o.priority == "urgent"),
        tickets_opened=state.tickets_opened,
        tickets_reopened=state.tickets_reopened,
        tickets_dropped=state.tickets_dropped,
        sla_breaches=state.sla_breaches + pending,
        open_tickets_breaching_sla=breaching,
        last_sentiment=state.last_sentiment,
        last_sentiment_at=state.last_sentiment_at,
        nps_score=state.nps_score,
        nps_class=state.nps_class,
        nps_at=state.nps_at,
        csat_rolling=rolling_mean(state.csat),
        csat_answers=len(state.csat),
        ces_rolling=rolling_mean(state.ces),
        ces_answers=len(state.ces),
        surveys_answered=state.surveys_answered,
    )
    for layer in LAYERS:
        row.update(layer.view_fields(state, rules, as_of))
    row.update(profile.view_fields(state))
    return row


# -- time-driven transitions ----------------------------------------------------------------
# Some changes happen because time passes, not because an event arrives: a silent customer
# becomes overdue (churn), points expire after inactivity (loyalty). ``next_due`` says when
# the next such change is due, in event time; the shell calls ``tick`` at that time, before
# any later event of the customer and for customers with no events at all (an inactivity
# scanner over a sorted set), so a replay fires them at the event time they fired live.


def next_due(state: CustomerState, rules: Rules) -> int | None:
    """Event time at which ``tick`` should next run for the customer (nothing time-driven
    happens before it; at it, a change or only a closer look: see churn.levels.look_at), or None:
    the earliest of the layers' ``next_due``."""
    due = None
    for layer in LAYERS:
        d = layer.next_due(state, rules)
        if d is not None and (due is None or d < due):
            due = d
    return due


def tick(state: CustomerState, rules: Rules, at: int) -> Step:
    """The time-driven changes due at or before ``at``, layer by layer in registry order
    (loyalty downgrades, expiry notices and expiries; churn levels rising or falling with
    silence; the KPI gauges that follow). Idempotent: ticking again at the same time
    changes nothing more."""
    return _react(state, state, None, rules, at)


def _no_tick(state: CustomerState, rules: Rules, at: int) -> Step:
    return Step(state)


def _never_due(state: CustomerState, rules: Rules) -> int | None:
    return None


class Transitions(NamedTuple):
    """What the engine applies: an event, the time-driven changes, and when those are due."""

    apply: Callable[[CustomerState | None, Event, Rules, int], Step]
    tick: Callable[[CustomerState, Rules, int], Step]
    next_due: Callable[[CustomerState, Rules], int | None]
    timed: bool = True  # False: tick never changes anything, next_due is always None


FULL = Transitions(apply, tick, next_due)  # the product: state, points, churn, KPIs
STATE_ONLY = Transitions(apply_state, _no_tick, _never_due, timed=False)  # the state alone
