"""Events at and just after 1970-01-01T00:00:00Z (epoch ms 0, the earliest valid time).

The customer state uses 0 as "no event of this kind yet" (``CustomerState.kind_max``); that
is safe only because 0 is also the least valid event time, so "none yet" and "the newest was
at 0" must behave the same. Checked by translation: the Gregorian calendar repeats every 28
years between 1901 and 2099, so a history that starts at exactly 1970-01-01T00:00:00Z and the
same history 28 years later must give the same state (times shifted), whatever the as-of.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from processors import wire
from processors.customer import apply_state, view
from processors.errors import Rejected
from processors.rules import DEFAULT_RULES as RULES
from processors.state import CustomerState
from processors.timeutil import DAY_MS, HOUR_MS
from schemas.codec import decode, encode
from schemas.events import Event, Purchase, SupportTicket, Survey
from streams.tools.simulator import SimConfig, Simulator

SHIFT = 10_227 * DAY_MS  # 28 years: 1970-01-01 -> 1998-01-01, the same weekdays and leap days
L = RULES.allowed_lateness_ms

# the core state's fields (points and churn have their own clocks; see the module docstring
# of processors/churn/ and processors/loyalty/: they are not part of this check)
_LAYERED = ("points_", "lifetime_points", "tier", "next_tier", "spend_to_next_tier",
            "expires_at", "churn_")


def _history() -> list[Event]:
    at_zero: list[Event] = [
        Purchase("z1", "ZERO", 0, "pos", "o1", "store", "purchase", 1000, "EUR"),
        Purchase("z1", "ZERO", 0, "pos", "o1", "store", "purchase", 1000, "EUR"),  # duplicate
        Survey("z2", "ZERO", 0, "survey-tool", "s1", "nps", 3, "checkout"),
        SupportTicket("z3", "ZERO", 0, "crm", "t1", "opened", "urgent", "email", "x", -0.5),
        Purchase("z4", "ZERO", 1, "pos", "o2", "store", "refund", 400, "EUR"),
        SupportTicket("z5", "ZERO", HOUR_MS, "crm", "t1", "resolved", "urgent", "email", "x",
                      None),
    ]
    sim = Simulator(SimConfig(start_ms=0, customers=60, seed=3))
    simulated = [r.event for r in sim.events_until(500 * DAY_MS) if r.event is not None]
    return at_zero + simulated


def _run(events: list[Event]) -> dict[str, CustomerState]:
    states: dict[str, CustomerState] = {}
    high = 0
    for ev in events:
        high = max(high, ev.occurred_at)
        try:
            step = apply_state(states.get(ev.customer_id), ev, RULES, high - L)
        except Rejected:
            continue
        states[ev.customer_id] = step.state
    return states


def _core_view(state: CustomerState, as_of: int, shift: int) -> dict[str, Any]:
    row = view(state, RULES, as_of + shift)
    out = {}
    for k, v in row.items():
        if k.startswith(_LAYERED):
            continue
        if (k == "as_of" or k.endswith("_at")) and isinstance(v, int):
            v -= shift
        out[k] = v
    return out


def test_a_history_from_the_epoch_equals_the_same_history_28_years_later() -> None:
    base = _history()
    later = [dataclasses.replace(e, occurred_at=e.occurred_at + SHIFT) for e in base]
    first, second = _run(base), _run(later)
    assert first.keys() == second.keys() and "ZERO" in first
    for cid in first:
        for as_of in (0, 1, HOUR_MS, DAY_MS, 40 * DAY_MS, 400 * DAY_MS, 900 * DAY_MS):
            assert _core_view(first[cid], as_of, 0) == _core_view(second[cid], as_of, SHIFT), \
                (cid, as_of)
        assert wire.loads(wire.dumps(first[cid])) == first[cid]
    zero = first["ZERO"]
    assert zero.max_event_at == HOUR_MS and zero.first_purchase_at == 0
    assert zero.purchase_count == 1 and zero.refund_count == 1  # the duplicate was dropped
    assert zero.kind_max == (1, HOUR_MS, 0, 0, 0, 0)  # the survey's newest time is a real 0


def test_a_repeated_event_at_the_epoch_is_a_duplicate_even_much_later() -> None:
    ev = Survey("e", "c", 0, "survey-tool", "s", "nps", 9, "checkout")
    state = apply_state(None, ev, RULES, -L).state
    assert state.kind_max[2] == 0 and state.seen  # remembered, at time 0
    assert apply_state(state, ev, RULES, -L).duplicate
    assert decode("survey", encode(ev)) == ev
