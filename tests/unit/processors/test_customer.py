"""Table-driven tests of ``processors.customer.apply`` / ``view``, one transition at a time."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import orjson
import pytest

from processors.customer import Step, apply, view
from processors.errors import Rejected
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS, HOUR_MS
from schemas.events import Event
from tests.builders import purchase, redemption, survey, ticket

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a day boundary
L = DEFAULT_RULES.allowed_lateness_ms
MIN = 60_000






def run(events: list[Event], rules: Rules = DEFAULT_RULES) -> CustomerState:
    """Apply in order with the shell's watermark (max event time so far - lateness)."""
    state: CustomerState | None = None
    high = 0
    for ev in events:
        high = max(high, ev.occurred_at)
        state = apply(state, ev, rules, high - rules.allowed_lateness_ms).state
    assert state is not None
    return state


def row(events: list[Event], as_of: int, rules: Rules = DEFAULT_RULES) -> dict[str, Any]:
    return view(run(events, rules), rules, as_of)


def pick(d: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in keys}


# -- purchases ---------------------------------------------------------------------------------

PURCHASE_CASES = [
    pytest.param(
        [purchase("a", T0, 1000)],
        dict(purchase_count=1, gross_spend_minor=1000, total_spend_minor=1000, purchase_days=1,
             average_order_value_minor=1000, mean_interpurchase_gap_days=None,
             first_purchase_at=T0, last_purchase_at=T0),
        id="first-purchase",
    ),
    pytest.param(
        [purchase("a", T0, 1000), purchase("b", T0 + HOUR_MS, 2001),
         purchase("c", T0 + 10 * DAY_MS, 500)],
        dict(purchase_count=3, gross_spend_minor=3501, purchase_days=2,
             average_order_value_minor=1167, mean_interpurchase_gap_days=10.0,
             first_purchase_at=T0, last_purchase_at=T0 + 10 * DAY_MS),
        id="same-day-counts-one-day",
    ),
    pytest.param(
        [purchase("a", T0 + DAY_MS), purchase("b", T0), purchase("c", T0 + 4 * DAY_MS),
         purchase("d", T0 + 3 * DAY_MS)],
        dict(purchase_count=4, purchase_days=4, mean_interpurchase_gap_days=4 / 3,
             first_purchase_at=T0, last_purchase_at=T0 + 4 * DAY_MS),
        id="late-within-lateness-is-min-max",
    ),
    pytest.param(
        [purchase("a", T0, 1000), purchase("r", T0 + DAY_MS, 400, kind="refund")],
        dict(purchase_count=1, refund_count=1, gross_spend_minor=1000, refunds_minor=400,
             total_spend_minor=600, purchase_days=1, average_order_value_minor=1000),
        id="refund-is-kept-apart",
    ),
    pytest.param(
        [purchase("a", T0, 1000, "USD"), purchase("b", T0, 1000, "JPY")],
        dict(gross_spend_minor=920 + 610),  # 10.00 USD * 0.92; 1000 JPY * 0.0061 = 6.10 EUR
        id="converted",
    ),
    pytest.param(
        [purchase("a", T0, 1), purchase("b", T0, 2)],
        dict(average_order_value_minor=2),  # 1.5 rounds half to even
        id="aov-half-even",
    ),
]


@pytest.mark.parametrize(("events", "expected"), PURCHASE_CASES)
def test_purchase_transitions(events: list[Event], expected: dict[str, Any]) -> None:
    assert pick(row(events, T0 + 30 * DAY_MS), expected) == expected


WINDOW_CASES = [  # purchase day offsets (1000 each), as_of day offset -> orders 30/90/365
    ([0], 0, (1, 1, 1)),
    ([0], 29, (1, 1, 1)),
    ([0], 30, (0, 1, 1)),  # window (as_of_day - 30, as_of_day]: day 0 has left
    ([0], 89, (0, 1, 1)),
    ([0], 90, (0, 0, 1)),
    ([0], 364, (0, 0, 1)),
    ([0], 365, (0, 0, 0)),
    ([0, 100, 300, 330], 330, (1, 2, 4)),
    ([0, 100, 300, 330], 300, (1, 1, 3)),  # as_of before a purchase: later days not counted
]


@pytest.mark.parametrize(("offsets", "as_of_day", "orders"), WINDOW_CASES)
def test_windows(offsets: list[int], as_of_day: int, orders: tuple[int, int, int]) -> None:
    events: list[Event] = [purchase(f"p{d}", T0 + d * DAY_MS + 5 * HOUR_MS) for d in offsets]
    r = row(events, T0 + as_of_day * DAY_MS + 23 * HOUR_MS)
    assert (r["orders_30d"], r["orders_90d"], r["orders_365d"]) == orders
    assert r["spend_365d_minor"] == 1000 * orders[2]


def test_windows_net_of_refunds_on_the_refund_day() -> None:
    r = row([purchase("a", T0, 5000), purchase("r", T0 + 40 * DAY_MS, 2000, kind="refund")],
            T0 + 45 * DAY_MS)
    assert (r["spend_30d_minor"], r["refunds_30d_minor"], r["net_spend_30d_minor"]) == (0, 2000,
                                                                                         -2000)
    assert (r["spend_90d_minor"], r["net_spend_90d_minor"]) == (5000, 3000)


def test_old_buckets_are_archived_but_still_count_as_purchase_days() -> None:
    events: list[Event] = [purchase("a", T0), purchase("b", T0 + DAY_MS),
                           purchase("c", T0 + 800 * DAY_MS)]
    state = run(events)
    assert [b.day for b in state.days] == [(T0 + 800 * DAY_MS) // DAY_MS]
    assert state.archived_purchase_days == 2
    assert state.purchase_days == 3
    assert state.mean_interpurchase_gap_days == 400.0


def test_buckets_cover_365_days_plus_lateness() -> None:
    # with 8 days of lateness the horizon is 373 days: day 0 stays at max_day 372
    assert L == 8 * DAY_MS
    assert len(run([purchase("a", T0), purchase("b", T0 + 372 * DAY_MS)]).days) == 2
    assert len(run([purchase("a", T0), purchase("b", T0 + 373 * DAY_MS)]).days) == 1


# -- rejections: reason, and nothing changes ---------------------------------------------------

BASE: list[Event] = [purchase("a", T0 + 10 * DAY_MS, 1000),
                     ticket("t", T0 + 10 * DAY_MS, "T1", "opened")]

REJECT_CASES = [
    pytest.param(purchase("x", T0 + 10 * DAY_MS, 100, "XXX"), 0, "unknown_currency", id="ccy"),
    pytest.param(purchase("x", T0 + 10 * DAY_MS, 1001, kind="refund"), 0, "invalid",
                 id="refund-over-net-spend"),
    pytest.param(purchase("x", T0 + 10 * DAY_MS - L - 1), 0, "too_late", id="before-own-max"),
    pytest.param(ticket("x", T0 + 10 * DAY_MS, "T1", "opened"), 0, "invalid",
                 id="ticket-opened-twice"),
    pytest.param(ticket("x", T0 + 10 * DAY_MS, "T1", "reopened"), 0, "invalid",
                 id="ticket-reopened-while-open"),
    pytest.param(ticket("x", T0 + 10 * DAY_MS, "T9", "opened", sentiment=1.5), 0, "invalid",
                 id="sentiment-out-of-range"),
    pytest.param(survey("x", T0 + 10 * DAY_MS, "csat", 6), 0, "invalid", id="csat-scale"),
    pytest.param(dataclasses.replace(purchase("x", T0 + 10 * DAY_MS), customer_id="c2"), 0,
                 "invalid", id="other-customer"),
]


@pytest.mark.parametrize(("event", "now", "reason"), REJECT_CASES)
def test_rejected_changes_nothing(event: Event, now: int, reason: str) -> None:
    state = run(BASE)
    snapshot = msgspec.structs.replace(state)
    with pytest.raises(Rejected) as exc:
        apply(state, event, DEFAULT_RULES, now)
    assert exc.value.reason == reason
    assert exc.value.message
    assert state == snapshot
    # the same id is not remembered: once valid, the event is applied (not a duplicate)
    assert not apply(state, purchase("x", T0 + 10 * DAY_MS), DEFAULT_RULES, 0).duplicate


def test_lateness_boundary_is_inclusive() -> None:
    state = run([purchase("a", T0 + 10 * DAY_MS)])
    assert apply(state, purchase("b", T0 + 10 * DAY_MS - L), DEFAULT_RULES, 0).state
    with pytest.raises(Rejected, match="before this customer's newest purchase"):
        apply(state, purchase("b", T0 + 10 * DAY_MS - L - 1), DEFAULT_RULES, 0)


def test_the_clock_never_makes_an_event_late() -> None:
    """Lateness is the customer's own: an event far behind the clock it is applied with
    (a store's upload a week after the fact, another customer's newer events) is taken
    whenever this customer's state can take it."""
    state = run([purchase("a", T0 + 10 * DAY_MS, 1000)])
    week_late = purchase("b", T0 + 3 * DAY_MS, 500)
    step = apply(state, week_late, DEFAULT_RULES, T0 + 400 * DAY_MS)
    assert step.state.purchase_count == 2 and step.state.gross_spend_minor == 1500
    # nothing is too late for a customer with no state, or with no event of that kind
    old = purchase("c", T0 - 3000 * DAY_MS)
    assert apply(None, old, DEFAULT_RULES, T0 + 400 * DAY_MS).state.purchase_count == 1
    assert apply(state, survey("s", T0 - 900 * DAY_MS, "nps", 9), DEFAULT_RULES,
                 T0 + 400 * DAY_MS).state.nps_score == 9


def test_a_late_event_says_so_in_its_ledger_reasons() -> None:
    state = run([purchase("a", T0 + 10 * DAY_MS, 1000)])
    late = apply(state, purchase("b", T0 + 3 * DAY_MS, 5000), DEFAULT_RULES,
                 T0 + 3 * DAY_MS + DEFAULT_RULES.late_arrival_ms + 1)
    (earn,) = [o for o in late.outputs if getattr(o, "rule", None) == "earn"]
    assert earn.reason.endswith(" (arrived late: purchase of 2024-01-04, applied 2024-01-05)")
    on_time = apply(state, purchase("b", T0 + 3 * DAY_MS, 5000), DEFAULT_RULES,
                    T0 + 3 * DAY_MS + DEFAULT_RULES.late_arrival_ms)
    (earn,) = [o for o in on_time.outputs if getattr(o, "rule", None) == "earn"]
    assert "arrived late" not in earn.reason


# -- dedup -------------------------------------------------------------------------------------


def test_duplicate_is_a_no_op() -> None:
    first = purchase("a", T0)
    state = run([first, survey("s", T0 + HOUR_MS, "nps", 9)])
    step = apply(state, first, DEFAULT_RULES, T0 + HOUR_MS - L)
    assert step == Step(state, duplicate=True)
    assert step.state is state


def test_duplicate_after_watermark_moved_is_still_recognised() -> None:
    first = purchase("a", T0)
    state = run([first, purchase("b", T0 + L)])
    assert apply(state, first, DEFAULT_RULES, T0 + DAY_MS).duplicate  # before lateness check


def test_duplicate_older_than_lateness_is_too_late_not_reapplied() -> None:
    first = purchase("a", T0)
    state = run([first, purchase("b", T0 + L + 1)])
    assert len(state.seen) == 1  # "a" left the window with the lateness
    with pytest.raises(Rejected, match="too_late"):
        apply(state, first, DEFAULT_RULES, 0)


def test_event_ids_are_per_kind() -> None:
    state = run([purchase("same", T0)])
    assert not apply(state, survey("same", T0, "nps", 3), DEFAULT_RULES, 0).duplicate


def test_dedup_window_is_capped_at_the_greatest_times() -> None:
    rules = parse_rules({"dedup_window_max": 3})
    events: list[Event] = [purchase(f"e{i}", T0 + i * MIN) for i in range(5)]
    state = run(events, rules)
    assert [s.at for s in state.seen] == [T0 + 2 * MIN, T0 + 3 * MIN, T0 + 4 * MIN]
    assert apply(state, events[4], rules, 0).duplicate
    # the cap is the limit of the guarantee: an evicted id is applied again
    assert not apply(state, events[0], rules, 0).duplicate


# -- tickets -----------------------------------------------------------------------------------

H = HOUR_MS
TICKET_CASES = [  # events, as_of, expected view fields
    pytest.param(
        [ticket("1", T0, "T1", "opened", "urgent"), ticket("2", T0 + 30 * MIN, "T1", "responded"),
         ticket("3", T0 + 2 * H, "T1", "resolved")],
        T0 + 100 * H, dict(open_tickets=0, sla_breaches=0, tickets_opened=1),
        id="urgent-within-sla",
    ),
    pytest.param(
        [ticket("1", T0, "T1", "opened", "urgent"), ticket("2", T0 + 2 * H, "T1", "responded",
                                                           "urgent")],
        T0 + 3 * H, dict(open_tickets=1, open_urgent_tickets=1, sla_breaches=1,
                         open_tickets_breaching_sla=0),
        id="late-first-response",
    ),
    pytest.param(
        [ticket("1", T0, "T1", "opened", "urgent")],
        T0 + 9 * H, dict(open_tickets=1, sla_breaches=2, open_tickets_breaching_sla=1),
        id="open-urgent-past-both-deadlines-as-of",
    ),
    pytest.param(
        [ticket("1", T0, "T1", "opened", "urgent")],
        T0 + H, dict(sla_breaches=0, open_tickets_breaching_sla=0),
        id="deadline-itself-is-not-a-breach",
    ),
    pytest.param(
        [ticket("1", T0, "T1", "opened", "urgent"), ticket("2", T0 + 9 * H, "T1", "closed",
                                                           "urgent")],
        T0 + 9 * H, dict(open_tickets=0, sla_breaches=2),
        id="closed-late-without-response",
    ),
    pytest.param(
        [ticket("1", T0, "T1", "opened", "low"), ticket("2", T0 + 5 * H, "T1", "responded",
                                                        "urgent")],
        T0 + 5 * H, dict(sla_breaches=1),
        id="escalated-priority-sets-the-target",
    ),
    pytest.param(
        [ticket("1", T0, "T1", "opened"), ticket("2", T0 + H, "T1", "resolved"),
         ticket("3", T0 + 2 * H, "T1", "reopened"), ticket("4", T0 + 80 * H, "T1", "resolved")],
        T0 + 80 * H, dict(open_tickets=0, tickets_opened=1, tickets_reopened=1, sla_breaches=1),
        id="reopened-restarts-resolution-clock",
    ),
    pytest.param(
        [ticket("1", T0, "T1", "opened"), ticket("2", T0 + H, "T1", "resolved"),
         ticket("3", T0 + 2 * H, "T1", "closed"), ticket("4", T0 + 3 * H, "T8", "responded")],
        T0 + 3 * H, dict(open_tickets=0, sla_breaches=0),
        id="untracked-ticket-events-are-accepted-no-ops",
    ),
    pytest.param(
        [ticket("1", T0, "T1", "opened", sentiment=-0.5),
         ticket("2", T0 + H, "T1", "responded", sentiment=0.25),
         ticket("3", T0 + H - 1, "T1", "responded", sentiment=-1.0)],
        T0 + H, dict(last_sentiment=0.25, last_sentiment_at=T0 + H),
        id="latest-sentiment-by-event-time",
    ),
]


@pytest.mark.parametrize(("events", "as_of", "expected"), TICKET_CASES)
def test_ticket_transitions(events: list[Event], as_of: int, expected: dict[str, Any]) -> None:
    assert pick(row(events, as_of), expected) == expected


def test_full_ticket_table_drops_the_oldest_and_settles_its_breaches() -> None:
    rules = parse_rules({"support": {"max_open_tickets": 2}})
    events: list[Event] = [ticket("1", T0, "A", "opened", "urgent"),
                           ticket("2", T0 + H, "B", "opened"),
                           ticket("3", T0 + 10 * H, "C", "opened")]
    state = run(events, rules)
    assert [o.ticket_id for o in state.open_tickets] == ["B", "C"]
    assert (state.tickets_dropped, state.sla_breaches, state.tickets_opened) == (1, 2, 3)


# -- surveys and redemptions -------------------------------------------------------------------

SURVEY_CASES = [
    pytest.param([survey("1", T0, "nps", 10)], dict(nps_score=10, nps_class="promoter"),
                 id="promoter"),
    pytest.param([survey("1", T0, "nps", 7)], dict(nps_class="passive"), id="passive"),
    pytest.param([survey("1", T0, "nps", 0)], dict(nps_score=0, nps_class="detractor"),
                 id="detractor-zero"),
    pytest.param([survey("1", T0 + H, "nps", 3), survey("2", T0, "nps", 9)],
                 dict(nps_score=3, nps_at=T0 + H, surveys_answered=2), id="older-nps-ignored"),
    pytest.param([survey(str(i), T0 + i * H, "csat", s) for i, s in enumerate([1, 5, 5, 4, 3, 3])],
                 dict(csat_rolling=4.0, csat_answers=5, ces_rolling=None), id="csat-last-5"),
    pytest.param([survey("1", T0 + H, "ces", 2), survey("2", T0, "ces", 7)],
                 dict(ces_rolling=4.5, ces_answers=2), id="ces-mean"),
]


@pytest.mark.parametrize(("events", "expected"), SURVEY_CASES)
def test_survey_transitions(events: list[Event], expected: dict[str, Any]) -> None:
    assert pick(row(events, T0 + DAY_MS), expected) == expected


def test_rolling_answers_keep_the_latest_by_event_time() -> None:
    rules = parse_rules({"surveys": {"rolling_answers": 2}})
    state = run([survey("1", T0 + 2 * H, "csat", 1), survey("2", T0 + 3 * H, "csat", 2),
                 survey("3", T0 + H, "csat", 5)], rules)
    assert [a.score for a in state.csat] == [1, 2]


def test_redemption_only_counts_for_dedup_and_event_time() -> None:
    state = run([purchase("a", T0)])
    nxt = apply(state, redemption("r", T0 + H), DEFAULT_RULES, 0).state
    assert msgspec.structs.replace(
        nxt, seen=state.seen, max_event_at=state.max_event_at, kind_max=state.kind_max
    ) == state
    assert nxt.kind_max[3] == T0 + H
    assert nxt.max_event_at == T0 + H
    assert apply(nxt, redemption("r", T0 + H), DEFAULT_RULES, 0).duplicate


# -- view --------------------------------------------------------------------------------------


def test_view_is_json_ready_and_pure() -> None:
    events: list[Event] = [purchase("a", T0), ticket("t", T0, "T1", "opened", sentiment=0.5),
                           survey("s", T0, "nps", 6)]
    state = run(events)
    r = view(state, DEFAULT_RULES, T0 + DAY_MS)
    assert orjson.loads(orjson.dumps(r)) == r
    assert r == view(state, DEFAULT_RULES, T0 + DAY_MS)
    assert r["days_since_last_purchase"] == 1.0
    assert r["open_ticket_ids"] == ["T1"]
    empty = view(CustomerState("c9"), DEFAULT_RULES, T0)
    assert empty["purchase_count"] == 0 and empty["average_order_value_minor"] is None


def test_lateness_is_judged_per_event_kind() -> None:
    """A backfill of a year of purchases, then the same year of tickets and surveys (one file
    per kind), loses nothing: each kind's lateness runs on its own clock."""
    year = [purchase(f"p{i}", T0 + i * 7 * DAY_MS) for i in range(52)]
    state = run(year)
    late_ticket = ticket("t1", T0 + DAY_MS, "tk-1", "opened")
    state = apply(state, late_ticket, DEFAULT_RULES, 0).state
    state = apply(state, survey("s1", T0 + 2 * DAY_MS, "nps", 3), DEFAULT_RULES, 0).state
    assert (state.tickets_opened, state.nps_score, state.purchase_count) == (1, 3, 52)
    # ...but within one kind, a purchase older than its own clock minus the lateness is late
    with pytest.raises(Rejected) as err:
        apply(state, purchase("p-old", T0 + DAY_MS), DEFAULT_RULES, 0)
    assert err.value.reason == "too_late"
