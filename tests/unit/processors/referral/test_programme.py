"""The referral programme end to end on the pure processors: customers' histories through
``processors.customer.apply``, the records for the referrals topic delivered to the
customer they name, at any later moment (the topic keeps their order, the moment they are
applied relative to the receiver's own events varies with partitions and workers).

Properties: whatever the interleaving, every customer ends with the same balance and the
same referral record as when each record is applied at once; a referrer is credited for a
friend exactly when the friend is (both or neither, net of clawbacks); the ledger entries of
one run, replayed, are the same (determinism)."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.customer import apply
from processors.errors import TOO_LATE, Rejected
from processors.referral.decide import REFERRAL_BONUS, REFERRAL_CLAWBACK, horizon
from processors.referral.record import REWARDED
from processors.rules import DEFAULT_RULES, Rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS, HOUR_MS
from schemas.events import Adjustment, CustomerEvent, Event, Purchase, Referral

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
REFERRERS = ("R1", "R2")


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Two referrers (R2 never signs up: unknown) and up to six friends, each with a signup
    and a few purchases (before, within and after the window) and refunds."""
    out: list[Event] = [CustomerEvent("s-R1", "R1", T0, "web", "signup")]
    for i in range(draw(st.integers(1, 6))):
        cid = f"F{i}"
        signup = T0 + draw(st.integers(0, 20)) * DAY_MS
        out.append(CustomerEvent(f"s-{cid}", cid, signup, "web", "signup",
                                 referred_by=draw(st.sampled_from(REFERRERS))))
        for j in range(draw(st.integers(0, 4))):
            t = signup + draw(st.integers(-2, 40)) * DAY_MS + j * HOUR_MS + 1
            amount = draw(st.sampled_from((500, 1999, 2000, 4500)))
            out.append(Purchase(f"p-{cid}-{j}", cid, t, "pos", f"o-{cid}-{j}", "store",
                                "purchase", amount, "EUR"))
            if draw(st.booleans()):
                back = t + draw(st.integers(1, 40)) * DAY_MS
                out.append(Purchase(f"r-{cid}-{j}", cid, back, "pos", f"o-{cid}-{j}",
                                    "store", "refund", draw(st.sampled_from((500, amount))),
                                    "EUR"))
    return sorted(out, key=lambda e: e.occurred_at)


def run(events: list[Event], delays: list[bool], rules: Rules = DEFAULT_RULES
        ) -> tuple[dict[str, CustomerState], list[Any]]:
    """Apply ``events`` in order; a record for the referrals topic waits in the topic (in
    order) and is applied when ``delays`` says so (False: deliver the next record now, before
    the next event), and at the end."""
    states: dict[str, CustomerState] = {}
    ledger: list[Any] = []
    topic: deque[Event] = deque()
    todo = deque(events)
    choices = iter(delays)

    def one(ev: Event) -> None:
        step = apply(states.get(ev.customer_id), ev, rules, ev.occurred_at)
        states[ev.customer_id] = step.state
        for out in step.outputs:
            if out.stream == "referrals":
                topic.append(out.record)
            elif out.stream == "points":
                ledger.append(out)

    while todo or topic:
        if topic and (not todo or not next(choices, True)):
            one(topic.popleft())
        else:
            one(todo.popleft())
    return states, ledger


def _summary(states: dict[str, CustomerState]) -> dict[str, tuple[int, Any]]:
    return {cid: (s.loyalty.balance if s.loyalty else 0, s.referral)
            for cid, s in states.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.lists(st.booleans(), max_size=60))
def test_any_interleaving_gives_the_same_balances_and_records(events: list[Event],
                                                               delays: list[bool]) -> None:
    at_once, _ = run(events, [False] * 1000)
    later, ledger = run(events, delays)
    assert _summary(later) == _summary(at_once)
    _, ledger_again = run(events, delays)
    assert ledger_again == ledger  # deterministic: the same entries, ids and reasons

    # both or neither: per friend, the referrer's net bonus and the friend's go together
    net: dict[tuple[str, str], int] = {}
    for e in ledger:
        if e.rule in (REFERRAL_BONUS, REFERRAL_CLAWBACK) and e.points:
            friend = e.entry_id.split(":")[1] if e.entry_id.startswith("referral:") else \
                e.customer_id
            side = "referrer" if e.customer_id != friend else "friend"
            net[(friend, side)] = net.get((friend, side), 0) + (1 if e.points > 0 else -1)
    for cid, s in later.items():
        if cid.startswith("F"):
            rewarded = s.referral is not None and s.referral.status == REWARDED
            assert net.get((cid, "friend"), 0) == int(rewarded)
            assert net.get((cid, "referrer"), 0) == int(rewarded)
    ids = [e.entry_id for e in ledger]
    assert len(ids) == len(set(ids))  # every entry once


def test_a_friend_of_a_known_referrer_is_rewarded_once() -> None:
    events: list[Event] = [
        CustomerEvent("s-R1", "R1", T0, "web", "signup"),
        CustomerEvent("s-F", "F", T0 + HOUR_MS, "web", "signup", referred_by="R1"),
        Purchase("p1", "F", T0 + DAY_MS, "pos", "o1", "store", "purchase", 1000, "EUR"),
        Purchase("p2", "F", T0 + 2 * DAY_MS, "pos", "o2", "store", "purchase", 2500, "EUR"),
        Purchase("p3", "F", T0 + 3 * DAY_MS, "pos", "o3", "store", "purchase", 9000, "EUR"),
    ]
    states, ledger = run(events, [])
    bonus = [(e.customer_id, e.points) for e in ledger if e.rule == REFERRAL_BONUS]
    assert bonus == [("R1", 500), ("F", 250)]
    assert states["F"].referral is not None and states["F"].referral.order_id == "o2"
    assert states["R1"].loyalty is not None and states["R1"].loyalty.balance == 500


# -- referral records have their own clock -----------------------------------------------------

def _claim(friend: str, t: int) -> Event:
    return Referral(f"referral:{friend}:o-{friend}:claim", "R1", t, "pulse", "claim", "R1",
                    friend, f"o-{friend}")


def _points(step: Any) -> list[int]:
    return [o.points for o in step.outputs if o.stream == "points" and o.rule == REFERRAL_BONUS]


def test_a_claim_behind_the_referrers_own_member_operations_is_taken() -> None:
    """During a history load the claim for a friend's purchase reaches the referrer a round
    trip later, when the load has moved the referrer's own redemptions and adjustments on by
    weeks: the claim is judged on the referral records' clock, not theirs (it was
    dead-lettered ``too_late`` and both bonuses were lost)."""
    rules = DEFAULT_RULES
    s = apply(None, CustomerEvent("s-R1", "R1", T0, "web", "signup"), rules, T0).state
    s = apply(s, Purchase("p-R1", "R1", T0 + HOUR_MS, "pos", "o-R1", "store", "purchase",
                          5000, "EUR"), rules, T0).state
    later = T0 + 60 * DAY_MS
    s = apply(s, Adjustment("a-R1", "R1", later, "crm", 50, "ops", "goodwill"), rules,
              later).state
    step = apply(s, _claim("F1", T0 + 5 * DAY_MS), rules, later)
    assert _points(step) == [rules.referral.referrer_points]
    assert step.state.referral is not None and step.state.referral.rewarded == 1
    again = apply(step.state, _claim("F1", T0 + 5 * DAY_MS), rules, later)
    assert again.duplicate and again.state is step.state


def test_a_claim_older_than_the_programmes_memory_is_too_late() -> None:
    """The referral clock's lateness is the referrer's memory of rewarded friends (cap
    period or return window, plus the lateness): within it a re-sent claim is recognised;
    past it the claim is dead-lettered with the reason, never credited twice."""
    rules = DEFAULT_RULES
    s = apply(None, CustomerEvent("s-R1", "R1", T0, "web", "signup"), rules, T0).state
    t1 = T0 + 400 * DAY_MS
    s = apply(s, _claim("F1", t1), rules, t1).state
    memory = horizon(rules)
    ok = apply(s, _claim("F2", t1 - memory), rules, t1)  # at the edge: still taken
    assert _points(ok) == [rules.referral.referrer_points]
    with pytest.raises(Rejected) as exc:
        apply(s, _claim("F3", t1 - memory - 1), rules, t1)
    assert exc.value.reason == TOO_LATE
    assert f"({memory // HOUR_MS} h)" in str(exc.value)
