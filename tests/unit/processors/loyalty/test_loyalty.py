# The reasons customers read use the multiplication sign; these tests compare them verbatim.
# ruff: noqa: RUF001
"""Loyalty points, one rule at a time: every number below is worked out by hand.

Default rules unless a case says otherwise: 1 pt/EUR, beauty x2, electronics x0.5; tiers
bronze 0 (x1), silver 500 (x1.25), gold 1500 (x1.5), platinum 5000 (x2), 90-day grace;
survey bonus 25; goodwill urgent 200 / high 100 / normal 50 / low 25 per breach; orders
remembered 90 days; expiry after 12 months, notice 30 days before; cap 10000 per event.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import pytest

from processors import wire
from processors.customer import apply, view
from processors.errors import Rejected, RulesError, WireError
from processors.loyalty import layer as loyalty
from processors.loyalty import wire as loyalty_wire
from processors.loyalty.derived import add_months, key32
from processors.loyalty.expiry import expires_at
from processors.loyalty.ledger import LedgerEntry
from processors.loyalty.records import LinePoints, LoyaltyState, OrderPoints, SurveyMark
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS, HOUR_MS, day_of
from schemas.codec import parse_time
from schemas.events import (
    Adjustment,
    Event,
    Purchase,
    PurchaseLine,
    Redemption,
    SupportTicket,
    Survey,
)
from streams.worker.views import HEADER, render, state_row
from tests import builders

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NO_EXPIRY = parse_rules({"loyalty": {"expiry_months": 0}})


def buy(eid: str, t: int, amount: int, lines: tuple[PurchaseLine, ...] = (),
        order: str | None = None, currency: str = "EUR", kind: str = "purchase") -> Purchase:
    return builders.purchase(eid, t, amount, currency, kind, order=order, lines=lines)


def refund(eid: str, t: int, order: str, amount: int,
           lines: tuple[PurchaseLine, ...] = ()) -> Purchase:
    return buy(eid, t, amount, lines, order=order, kind="refund")


def line(sku: str, category: str, qty: int, price: int) -> PurchaseLine:
    return PurchaseLine(sku, category, qty, price)


def survey(eid: str, t: int, survey_id: str) -> Survey:
    return builders.survey(eid, t, "nps", 9, survey_id=survey_id)


def ticket(eid: str, t: int, status: str, priority: str = "urgent") -> SupportTicket:
    return builders.ticket(eid, t, "T1", status, priority)


def redeem(eid: str, t: int, points: int, cid: str = "c1") -> Redemption:
    return builders.redemption(eid, t, points, cid=cid, reward="RW-COFFEE")


def points(outputs: tuple[Any, ...]) -> list[LedgerEntry]:
    """The ledger entries among a step's outputs (churn alerts share the tuple)."""
    return [o for o in outputs if isinstance(o, LedgerEntry)]


def run(events: list[Event], rules: Rules = DEFAULT_RULES,
        state: CustomerState | None = None) -> tuple[CustomerState, list[LedgerEntry]]:
    """Apply in order with the shell's watermark; collect the ledger entries."""
    out: list[LedgerEntry] = []
    high = 0
    for ev in events:
        high = max(high, ev.occurred_at)
        step = apply(state, ev, rules, high - rules.allowed_lateness_ms)
        state = step.state
        out += points(step.outputs)
    assert state is not None
    return state, out


def brief(entries: list[LedgerEntry]) -> list[tuple[str, int, int, str | None]]:
    return [(e.entry_id, e.points, e.balance_after, e.tier_after) for e in entries]


# -- earning --------------------------------------------------------------------------------

EARN_CASES = [
    pytest.param(buy("p", T0, 4250), DEFAULT_RULES, 42,
                 "order o-p: 42.50 EUR × 1 pt/EUR × bronze 1 = 42 pts", id="no-lines"),
    pytest.param(buy("p", T0, 4599, (line("SKU-B", "beauty", 2, 1250),
                                      line("SKU-G", "grocery", 1, 2099))), DEFAULT_RULES, 70,
                 "order o-p: 25.00 EUR beauty × 2 + 20.99 EUR = 70.99 EUR × 1 pt/EUR × "
                 "bronze 1 = 70 pts", id="category-multiplier"),
    pytest.param(buy("p", T0, 4100, (line("SKU-B", "beauty", 2, 1250),
                                      line("SKU-G", "grocery", 1, 2099))), DEFAULT_RULES, 63,
                 # 70.99 x 41.00 / 45.99 = 63.288...
                 "order o-p: 25.00 EUR beauty × 2 + 20.99 EUR = 70.99 EUR × 41.00/45.99 paid × "
                 "1 pt/EUR × bronze 1 = 63 pts", id="discount-scales-down"),
    pytest.param(buy("p", T0, 19999, (line("SKU-E", "electronics", 1, 19999),)),
                 DEFAULT_RULES, 99,
                 "order o-p: 199.99 EUR electronics × 0.5 = 99.995 EUR × 1 pt/EUR × bronze 1 = "
                 "99 pts", id="fractional-multiplier-rounds-down-once"),
    pytest.param(buy("p", T0, 10000, currency="USD"), DEFAULT_RULES, 92,
                 "order o-p: 92.00 EUR × 1 pt/EUR × bronze 1 = 92 pts", id="converted"),
    pytest.param(buy("p", T0, 25000), parse_rules({"loyalty": {"max_points_per_event": 100}}),
                 100, "order o-p: 250.00 EUR × 1 pt/EUR × bronze 1 = 250 pts, capped at 100 pts "
                 "per event", id="cap"),
    pytest.param(buy("p", T0, 4250), parse_rules({"loyalty": {"points_per_unit": "2.5"}}), 106,
                 "order o-p: 42.50 EUR × 2.5 pt/EUR × bronze 1 = 106 pts", id="base-rate"),
]


@pytest.mark.parametrize(("event", "rules", "points", "reason"), EARN_CASES)
def test_earning(event: Purchase, rules: Rules, points: int, reason: str) -> None:
    state, entries = run([event], rules)
    [e] = entries
    assert (e.entry_id, e.rule, e.points, e.reason) == ("p:earn", "earn", points, reason)
    assert e.balance_after == points == state.loyalty.balance  # type: ignore[union-attr]


def test_a_free_order_opens_the_account_but_writes_no_entry() -> None:
    state, entries = run([buy("p", T0, 0)])
    assert entries == []
    assert state.loyalty == LoyaltyState(last_activity_at=T0)  # tier_since: no change yet


def test_reaching_a_tier_is_announced_and_the_purchase_earns_at_it() -> None:
    _, entries = run([buy("p", T0, 60000)])
    assert [(e.entry_id, e.rule, e.points, e.tier_after) for e in entries] == [
        ("p:tier_change", "tier_change", 0, "silver"), ("p:earn", "earn", 750, "silver")]
    assert entries[0].reason == ("tier up: bronze -> silver: the 12-month spend 600.00 EUR "
                                 "reached silver's 500.00 EUR")
    assert entries[1].reason == "order o-p: 600.00 EUR × 1 pt/EUR × silver 1.25 = 750 pts"


# -- tiers: downgrade after the grace period ----------------------------------------------------

D0 = day_of(T0)
DOWN_AT = (D0 + 365 + 90) * DAY_MS  # 600 EUR leaves the window on D0+365; 90 days of grace


def test_downgrade_is_due_at_a_fixed_time_and_ticks_are_idempotent() -> None:
    state, _ = run([buy("p", T0, 60000)], NO_EXPIRY)
    assert state.loyalty.qualified_until == D0 + 364  # type: ignore[union-attr]
    assert loyalty.next_due(state, NO_EXPIRY) == DOWN_AT
    assert loyalty.on_tick(state, NO_EXPIRY, DOWN_AT - 1) == (state, ())
    ticked, entries = loyalty.on_tick(state, NO_EXPIRY, DOWN_AT)
    assert brief(list(entries)) == [(f"c1:tier_change@{DOWN_AT}", 0, 750, "bronze")]
    assert entries[0].reason == (
        "tier down: silver -> bronze: the 12-month spend has been under silver's 500.00 EUR "
        "since 2024-12-31 and the 90-day grace period is over (spend now 0.00 EUR)")
    assert entries[0].occurred_at == DOWN_AT and entries[0].event_id is None
    assert ticked.loyalty.tier_since == DOWN_AT  # type: ignore[union-attr]
    assert loyalty.on_tick(ticked, NO_EXPIRY, DOWN_AT + 10 * DAY_MS) == (ticked, ())
    assert loyalty.next_due(ticked, NO_EXPIRY) is None


def test_an_event_after_the_due_time_writes_the_same_downgrade_first() -> None:
    late = buy("p2", DOWN_AT + HOUR_MS, 1000)
    state, entries = run([buy("p", T0, 60000), late], NO_EXPIRY)
    ticked, _ = loyalty.on_tick(run([buy("p", T0, 60000)], NO_EXPIRY)[0], NO_EXPIRY, DOWN_AT)
    via_tick = apply(ticked, late, NO_EXPIRY, 0)
    assert brief(entries[2:]) == [(f"c1:tier_change@{DOWN_AT}", 0, 750, "bronze"),
                                  ("p2:earn", 10, 760, "bronze")]
    assert via_tick.state == state and brief(points(via_tick.outputs)) == brief(entries[3:])


def test_a_survey_does_not_downgrade_before_no_purchase_can_predate_it() -> None:
    # the purchase clock is T0, so a purchase at T0 - lateness could still come: the tier
    # change waits for the scanner's tick or the next purchase
    state, entries = run([buy("p", T0, 60000), survey("s", DOWN_AT + DAY_MS, "S-1")], NO_EXPIRY)
    assert [e.tier_after for e in entries] == ["silver", "silver", "silver"]
    assert loyalty.next_due(state, NO_EXPIRY) == DOWN_AT


def test_a_late_purchase_that_predates_a_written_downgrade_brings_the_tier_back() -> None:
    """The live clock downgraded the member; a purchase made during the grace period comes
    in late. In order the member would have kept silver: the ledger says so right after."""
    ticked, _ = loyalty.on_tick(run([buy("p", T0, 60000)], NO_EXPIRY)[0], NO_EXPIRY, DOWN_AT)
    assert ticked.loyalty.tier == 0  # type: ignore[union-attr]
    late = buy("q", T0 + 400 * DAY_MS, 50000)
    step = apply(ticked, late, NO_EXPIRY, DOWN_AT + DAY_MS)
    entries = points(step.outputs)
    assert [(e.rule, e.tier_after) for e in entries] == [("tier_change", "silver"),
                                                        ("earn", "silver")]
    assert entries[0].reason.startswith("tier up: bronze -> silver")
    in_order, _ = run([buy("p", T0, 60000), late], NO_EXPIRY)
    assert step.state.loyalty.tier == in_order.loyalty.tier  # type: ignore[union-attr]


def test_buying_during_the_grace_period_keeps_the_tier() -> None:
    state, entries = run([buy("p", T0, 60000), buy("q", T0 + 400 * DAY_MS, 50000)], NO_EXPIRY)
    assert [e.rule for e in entries] == ["tier_change", "earn", "earn"]
    assert entries[-1].reason == "order o-q: 500.00 EUR × 1 pt/EUR × silver 1.25 = 625 pts"
    assert state.loyalty.qualified_until == D0 + 400 + 364  # type: ignore[union-attr]


def test_a_refund_that_drops_the_spend_starts_the_grace_now() -> None:
    rules = parse_rules({"loyalty": {"expiry_months": 0, "downgrade_grace_days": 0}})
    _, entries = run([buy("p", T0, 60000), refund("r", T0 + DAY_MS, "o-p", 20000)], rules)
    assert [(e.rule, e.points, e.tier_after) for e in entries] == [
        ("tier_change", 0, "silver"), ("earn", 750, "silver"), ("refund", -250, "silver"),
        ("tier_change", 0, "bronze")]
    assert entries[-1].entry_id == f"c1:tier_change@{T0 + DAY_MS}"


# -- refunds --------------------------------------------------------------------------------

BASKET = (line("SKU-B", "beauty", 3, 333), line("SKU-G", "grocery", 1, 1000))


def test_partial_refunds_take_back_exactly_what_the_lines_earned() -> None:
    # weights: SKU-B 9.99 x 2 = 19.98, SKU-G 10.00 -> 29.98 -> 29 pts, split by weight:
    # 19.33 + 9.67 -> floors 19 + 9, the remaining point to the larger remainder (SKU-G)
    one_b = (line("SKU-B", "beauty", 1, 333),)
    events: list[Event] = [buy("p", T0, 1999, BASKET)]
    events += [refund(f"r{i}", T0 + i * HOUR_MS, "o-p", 333, one_b) for i in (1, 2, 3)]
    events.append(refund("r4", T0 + 4 * HOUR_MS, "o-p", 1000, (BASKET[1],)))
    state, entries = run(events)
    # SKU-B: floor(19 x 1/3) = 6, floor(19 x 2/3) - 6 = 6, 19 - 12 = 7; then SKU-G 10
    assert [e.points for e in entries] == [29, -6, -6, -7, -10]
    assert entries[1].reason == ("refund of order o-p: 1 × SKU-B returned, which earned 6 of "
                                 "the order's 29 pts: -6 pts")
    assert state.loyalty.balance == 0 and state.loyalty.lifetime_points == 0  # type: ignore[union-attr]
    [order] = state.loyalty.orders  # type: ignore[union-attr]
    assert (order.points, order.clawed) == (29, 29)
    assert sorted(x.refunded_units for x in order.lines) == [1, 3]


def test_refunding_more_units_than_bought_takes_back_no_more() -> None:
    two_g = (line("SKU-G", "grocery", 2, 1000), line("SKU-X", "toys", 1, 500))
    _, entries = run([buy("p", T0, 1999, BASKET), refund("r", T0 + HOUR_MS, "o-p", 1000, two_g),
                      refund("r2", T0 + 2 * HOUR_MS, "o-p", 500, two_g[:1])])
    assert [e.points for e in entries] == [29, -10]  # the second refund finds nothing left
    assert entries[1].reason == ("refund of order o-p: 1 × SKU-G returned (SKU-X: not in the "
                                 "order's points), which earned 10 of the order's 29 pts: -10 pts")


def test_a_refund_without_lines_takes_back_its_share_of_the_amount() -> None:
    # 45.99 EUR -> 45 pts; 20.99 back: floor(45 x 20.99 / 45.99) = 20; the rest: 45 - 20
    _, entries = run([buy("p", T0, 4599), refund("r1", T0 + DAY_MS, "o-p", 2099),
                          refund("r2", T0 + 2 * DAY_MS, "o-p", 2500)])
    assert [e.points for e in entries] == [45, -20, -25]
    assert entries[1].reason == ("refund of order o-p: 20.99 of 45.99 EUR paid back, which "
                                 "earned 20 of the order's 45 pts: -20 pts")


def test_a_refund_of_a_forgotten_order_uses_the_earning_formula() -> None:
    state, entries = run([buy("a", T0, 4250), buy("b", T0 + 100 * DAY_MS, 1000),
                          refund("r", T0 + 101 * DAY_MS, "o-a", 4250)])
    assert [o.key for o in state.loyalty.orders] == [key32("o-b")]  # type: ignore[union-attr]
    assert brief(entries) == [("a:earn", 42, 42, "bronze"), ("b:earn", 10, 52, "bronze"),
                              ("r:refund", -42, 10, "bronze")]
    assert entries[2].reason == (
        "refund of order o-a (not among the orders of the last 90 days, so by the earning "
        "formula): 42.50 EUR × 1 pt/EUR × bronze 1 = 42 pts: -42 pts")


def test_the_balance_is_clamped_at_zero_and_the_reason_says_so() -> None:
    events: list[Event] = [buy("p", T0, 5000), redeem("x", T0 + HOUR_MS, 40),
                           refund("r", T0 + DAY_MS, "o-p", 5000)]
    state, entries = run(events)
    assert brief(entries)[-1] == ("r:refund", -10, 0, "bronze")
    assert entries[-1].reason.endswith(
        "which earned 50 of the order's 50 pts; the balance had only 10 pts and does not go "
        "below 0: -10 pts")
    assert (state.loyalty.balance, state.loyalty.lifetime_points) == (0, 40)  # type: ignore[union-attr]
    negative = parse_rules({"loyalty": {"allow_negative_balance": True}})
    state, entries = run(events, negative)
    assert brief(entries)[-1] == ("r:refund", -50, -40, "bronze")


def test_a_very_large_order_is_remembered_by_amount() -> None:
    rules = parse_rules({"loyalty": {"max_remembered_lines": 2}})
    big = tuple(line(f"SKU-{i}", "grocery", 1, 1000) for i in range(3))
    state, entries = run([buy("p", T0, 3000, big),
                          refund("r", T0 + HOUR_MS, "o-p", 1000, big[:1])], rules)
    [order] = state.loyalty.orders  # type: ignore[union-attr]
    assert (order.points, order.lines) == (30, ())
    assert entries[1].reason == ("refund of order o-p: 10.00 of 30.00 EUR paid back, which "
                                 "earned 10 of the order's 30 pts: -10 pts")


def test_the_account_is_bounded_whatever_the_history() -> None:
    """Every bounded part full at once (informational number, like test_wire's)."""
    lr = DEFAULT_RULES.loyalty
    order = OrderPoints(2**32 - 1, 99_999, 10**11, 10**9, 10**11, 10**9, tuple(
        LinePoints(2**32 - 1 - i, 10_000, 10**9, 10_000) for i in range(lr.max_remembered_lines)))
    ly = LoyaltyState(10**12, 10**12, 3, 2**42, 99_999, 2**42, True,
                      (order,) * lr.max_remembered_orders,
                      (SurveyMark(99_999, 2**32 - 1),) * lr.survey_memory_max)
    size = len(wire.dumps(CustomerState("c1", loyalty=ly)))
    print(f"\nworst-case points account with default rules: {size} bytes")
    assert size < 24 * 1024


# -- bonuses ----------------------------------------------------------------------------------


def test_survey_bonus_once_per_survey_id() -> None:
    state, entries = run([survey("s1", T0, "S-1"), survey("s2", T0 + HOUR_MS, "S-1"),
                          survey("s3", T0 + 2 * HOUR_MS, "S-2")])
    assert brief(entries) == [("s1:survey_bonus", 25, 25, "bronze"),
                              ("s3:survey_bonus", 25, 50, "bronze")]
    assert entries[0].reason == "thank you for answering survey S-1 (nps): +25 pts"
    assert len(state.loyalty.surveys) == 2  # type: ignore[union-attr]
    none = parse_rules({"loyalty": {"survey_bonus_points": 0}})
    assert run([survey("s1", T0, "S-1")], none)[0].loyalty is None


def test_service_recovery_when_a_ticket_breaches_its_sla() -> None:
    # urgent: first response within 1 h; responded after 2 h -> one breach
    _, entries = run([ticket("t1", T0, "opened"), ticket("t2", T0 + 2 * HOUR_MS, "responded"),
                          ticket("t3", T0 + 3 * HOUR_MS, "resolved")])
    assert brief(entries) == [("t2:service_recovery", 200, 200, "bronze")]
    assert entries[0].reason == ("sorry: ticket T1 (urgent) missed its service level (1 SLA "
                                 "breach × 200 pts): +200 pts goodwill")
    # low priority, resolved after 8 days: first response (72 h) and resolution (168 h) missed
    _, entries = run([ticket("t1", T0, "opened", "low"),
                      ticket("t2", T0 + 8 * DAY_MS, "closed", "low")])
    assert [(e.points, e.reason.split("(")[2]) for e in entries] == [
        (50, "2 SLA breaches × 25 pts): +50 pts goodwill")]
    assert run([ticket("t1", T0, "opened"), ticket("t2", T0 + 1, "resolved")])[0].loyalty is None


# -- expiry -----------------------------------------------------------------------------------

DEADLINE = parse_time("2025-01-01T00:00:00Z")
NOTICE = DEADLINE - 30 * DAY_MS


def test_expiry_is_announced_then_happens_and_ticks_are_idempotent() -> None:
    state, _ = run([buy("p", T0, 10000)])
    assert loyalty.next_due(state, DEFAULT_RULES) == NOTICE
    assert loyalty.on_tick(state, DEFAULT_RULES, NOTICE - 1) == (state, ())
    noticed, entries = loyalty.on_tick(state, DEFAULT_RULES, NOTICE)
    assert brief(list(entries)) == [(f"c1:expiry_notice@{DEADLINE}", 0, 100, "bronze")]
    assert entries[0].reason == ("100 pts will expire on 2025-01-01: no activity since "
                                 "2024-01-01; a purchase, a survey or a redemption before then "
                                 "keeps them")
    assert loyalty.on_tick(noticed, DEFAULT_RULES, NOTICE + DAY_MS) == (noticed, ())
    expired, entries = loyalty.on_tick(noticed, DEFAULT_RULES, DEADLINE)
    assert brief(list(entries)) == [(f"c1:expiry@{DEADLINE}", -100, 0, "bronze")]
    assert entries[0].reason == "100 pts expired: no activity for 12 months since 2024-01-01"
    assert loyalty.next_due(expired, DEFAULT_RULES) is None
    assert loyalty.on_tick(expired, DEFAULT_RULES, DEADLINE + 99 * DAY_MS) == (expired, ())


def test_without_ticks_the_next_event_writes_the_same_entries_first() -> None:
    later = buy("q", DEADLINE + 31 * DAY_MS, 1000)
    _, entries = run([buy("p", T0, 10000), later])
    assert [(e.entry_id, e.points, e.occurred_at) for e in entries[1:]] == [
        (f"c1:expiry_notice@{DEADLINE}", 0, NOTICE), (f"c1:expiry@{DEADLINE}", -100, DEADLINE),
        ("q:earn", 10, later.occurred_at)]
    ticked = loyalty.on_tick(run([buy("p", T0, 10000)])[0], DEFAULT_RULES, DEADLINE)[0]
    assert brief(points(apply(ticked, later, DEFAULT_RULES, 0).outputs)) == brief(entries[3:])


def test_activity_moves_the_deadline_and_clears_the_notice() -> None:
    state, _ = run([buy("p", T0, 10000)])
    noticed, _ = loyalty.on_tick(state, DEFAULT_RULES, NOTICE)
    answered = apply(noticed, survey("s", NOTICE + DAY_MS, "S-1"), DEFAULT_RULES, 0).state
    ly = answered.loyalty
    assert ly is not None and (ly.noticed, ly.last_activity_at) == (False, NOTICE + DAY_MS)
    assert expires_at(ly, DEFAULT_RULES.loyalty) == parse_time("2025-12-03T00:00:00Z")


LATE_ACTIVITY = [
    pytest.param(buy("late", DEADLINE - 5 * DAY_MS, 2000), 20, id="purchase"),
    pytest.param(survey("late", DEADLINE - 5 * DAY_MS, "S-9"), 25, id="survey"),
    pytest.param(redeem("late", DEADLINE - 5 * DAY_MS, 60), -60, id="redemption"),
]


@pytest.mark.parametrize(("event", "own"), LATE_ACTIVITY)
def test_a_late_activity_before_a_written_expiry_reverses_it(event: Event, own: int) -> None:
    """The points expired at the deadline; then a store's upload brings an activity of five
    days before it. In the order things happened they never expired: the ledger gives them
    back, says why, and ends where the history in order ends."""
    state, before = run([buy("p", T0, 10000)])
    state, ticked = loyalty.on_tick(state, DEFAULT_RULES, DEADLINE)  # notice and expiry
    assert [e.rule for e in ticked] == ["expiry_notice", "expiry"]
    step = apply(state, event, DEFAULT_RULES, DEADLINE + 2 * DAY_MS)
    entries = points(step.outputs)
    assert (entries[0].entry_id, entries[0].points, entries[0].rule) == (
        "late:expiry_reversed", 100, "expiry_reversed")
    assert entries[0].reason == (f"expiry of 2025-01-01 reversed: {event.event_kind} of "
                                 "2024-12-27 arrived late: +100 pts")
    in_order, _ = run([buy("p", T0, 10000), event])
    ly = step.state.loyalty
    assert ly is not None and in_order.loyalty is not None
    assert ly.balance == in_order.loyalty.balance == 100 + own
    assert ly.balance == sum(e.points for e in [*before, *ticked, *entries])
    assert expires_at(ly, DEFAULT_RULES.loyalty) == expires_at(
        in_order.loyalty, DEFAULT_RULES.loyalty)
    assert [e.rule for e in entries].count("expiry_notice") == 0  # it went out in time
    assert ly.expired == ()  # reversed once: a copy of the event changes nothing more
    assert apply(step.state, event, DEFAULT_RULES, DEADLINE + 3 * DAY_MS).duplicate


@pytest.mark.parametrize("event", [
    pytest.param(buy("old", T0 - DAY_MS, 2000), id="before-the-last-activity"),
    pytest.param(buy("after", DEADLINE + DAY_MS, 2000), id="after-the-expiry"),
    pytest.param(refund("r", DEADLINE - 5 * DAY_MS, "o-p", 1000), id="a-refund-is-no-activity"),
    pytest.param(ticket("t", DEADLINE - 5 * DAY_MS, "opened"), id="no-goodwill-no-activity"),
    pytest.param(redeem("big", DEADLINE - 5 * DAY_MS, 500), id="redemption-refused-anyway"),
])
def test_what_would_not_have_prevented_the_expiry_leaves_it(event: Event) -> None:
    state, _ = run([buy("p", T0, 10000)])
    state, _ = loyalty.on_tick(state, DEFAULT_RULES, DEADLINE)
    step = apply(state, event, DEFAULT_RULES, DEADLINE + 2 * DAY_MS)
    assert "expiry_reversed" not in [e.rule for e in points(step.outputs)]


def test_the_remembered_expiry_survives_the_wire() -> None:
    state, _ = run([buy("p", T0, 10000)])
    state, _ = loyalty.on_tick(state, DEFAULT_RULES, DEADLINE)
    ly = state.loyalty
    assert ly is not None and ly.expired == (DEADLINE, 100, T0)
    assert loyalty_wire.from_wire(loyalty_wire.to_wire(ly)) == ly
    assert len(loyalty_wire.to_wire(ly)) == 10 and len(loyalty_wire.to_wire(LoyaltyState())) == 9
    with pytest.raises(WireError, match="expired must be"):
        loyalty_wire.from_wire([*loyalty_wire.to_wire(ly)[:9], [1, 2]])


@pytest.mark.parametrize(("start", "months", "end"), [
    ("2024-01-31T10:00:00Z", 1, "2024-02-29T10:00:00Z"),
    ("2024-03-31T00:00:00Z", 12, "2025-03-31T00:00:00Z"),
    ("2024-02-29T23:59:59.999Z", 12, "2025-02-28T23:59:59.999Z"),
    ("2024-11-15T00:00:00Z", 3, "2025-02-15T00:00:00Z"),
])
def test_calendar_months(start: str, months: int, end: str) -> None:
    assert add_months(parse_time(start), months) == parse_time(end)


# -- redemptions ------------------------------------------------------------------------------


def test_redemption_accepted_and_rejected() -> None:
    _, entries = run([buy("p", T0, 15000), redeem("x", T0 + HOUR_MS, 100),
                          redeem("y", T0 + 2 * HOUR_MS, 100)])
    assert brief(entries) == [("p:earn", 150, 150, "bronze"), ("x:redemption", -100, 50, "bronze"),
                              ("y:redemption_rejected", 0, 50, "bronze")]
    assert entries[1].reason == "reward RW-COFFEE: 100 pts redeemed"
    assert entries[2].reason == ("reward RW-COFFEE not redeemed: it costs 100 pts, the balance "
                                 "is 50 pts")


def test_two_concurrent_redemptions_cannot_overdraw() -> None:
    """Both arrive in one batch, each within the balance, together not: one partition is
    applied serially, so the second sees the first's debit."""
    state, _ = run([buy("p", T0, 15000)])
    first = apply(state, redeem("x", T0 + 1, 100), DEFAULT_RULES, 0)
    second = apply(first.state, redeem("y", T0 + 1, 100), DEFAULT_RULES, 0)
    assert [e.rule for e in points(first.outputs + second.outputs)] == [
        "redemption", "redemption_rejected"]
    assert second.state.loyalty.balance == 50  # type: ignore[union-attr]


def test_unknown_customer_and_customer_without_points() -> None:
    step = apply(None, redeem("x", T0, 100, cid="nobody"), DEFAULT_RULES, 0)
    [e] = points(step.outputs)
    assert e.as_dict() == {
        "entry_id": "x:redemption_rejected", "customer_id": "nobody", "points": 0,
        "rule": "redemption_rejected",
        "reason": "reward RW-COFFEE not redeemed: unknown customer (no points account)",
        "balance_after": 0, "tier_after": None, "occurred_at": "2024-01-01T00:00:00.000Z",
        "event_id": "x"}
    assert step.state.loyalty is None
    _, entries = run([ticket("t", T0, "opened"), redeem("x", T0 + 1, 100)])
    assert entries[0].reason.endswith("it costs 100 pts, the balance is 0 pts")


def test_an_invalid_redemption_is_rejected_and_changes_nothing() -> None:
    state, _ = run([buy("p", T0, 15000)])
    with pytest.raises(Rejected) as err:
        apply(state, redeem("x", T0 + 1, 0), DEFAULT_RULES, 0)
    assert err.value.reason == "invalid" and "points 0" in err.value.message


# -- the ledger entry, the view, the export -----------------------------------------------------


def test_ledger_entry_is_json_with_every_field() -> None:
    _, entries = run([buy("p", T0 + 123, 4250)])
    d = entries[0].as_dict()
    assert list(d) == ["entry_id", "customer_id", "points", "rule", "reason", "balance_after",
                       "tier_after", "occurred_at", "event_id"]
    assert json.loads(orjson.dumps(d)) == d
    assert d["occurred_at"] == "2024-01-01T00:00:00.123Z"
    assert entries[0].stream == "points"


def test_view_shows_balance_tier_progress_and_expiry() -> None:
    state, _ = run([buy("p", T0, 60000), survey("s", T0 + DAY_MS, "S-1")])
    fields = ("points_balance", "lifetime_points", "tier", "tier_since", "next_tier",
              "spend_to_next_tier_minor", "points_expiring", "expires_at")
    got = {k: view(state, DEFAULT_RULES, T0 + DAY_MS)[k] for k in fields}
    assert got == {"points_balance": 775, "lifetime_points": 775, "tier": "silver",
                   "tier_since": T0, "next_tier": "gold", "spend_to_next_tier_minor": 90000,
                   "points_expiring": 775, "expires_at": parse_time("2025-01-02T00:00:00Z")}
    # as of after the deadline, the view already shows what the scanner will do
    after = view(state, DEFAULT_RULES, parse_time("2025-01-03T00:00:00Z"))
    assert (after["points_balance"], after["expires_at"], after["tier"]) == (0, None, "silver")
    empty = view(CustomerState("c9"), DEFAULT_RULES, T0)
    assert (empty["points_balance"], empty["tier"], empty["expires_at"]) == (0, None, None)


def test_export_row_and_render_show_the_loyalty_group() -> None:
    state, _ = run([buy("p", T0, 60000)])
    row = state_row(state, DEFAULT_RULES, T0)
    for name in ("points_balance", "tier", "next_tier", "spend_to_next_tier", "expires_at"):
        assert name in HEADER
    assert (row["points_balance"], row["tier"], row["spend_to_next_tier"], row["expires_at"]) \
        == (750, "silver", "900.00", "2025-01-01T00:00:00.000Z")
    text = render(row)
    assert "\nloyalty\n" in text and "900.00 EUR" in text


# -- wire ---------------------------------------------------------------------------------------

LOYAL = [
    LoyaltyState(),
    LoyaltyState(balance=-5, lifetime_points=2**40, tier=3, tier_since=T0, qualified_until=D0,
                 last_activity_at=T0 + 1, noticed=True,
                 orders=(OrderPoints(1, D0, 4599, 45, 2099, 20),
                         OrderPoints(2**32 - 1, D0 + 1, 10, 9, 0, 0,
                                     (LinePoints(7, 3, 6, 1), LinePoints(9, 1, 3)))),
                 surveys=(SurveyMark(D0, 0), SurveyMark(D0, 2**32 - 1))),
]


@pytest.mark.parametrize("ly", LOYAL)
def test_wire_round_trip(ly: LoyaltyState) -> None:
    state = CustomerState("c1", loyalty=ly)
    data = wire.dumps(state)
    assert wire.loads(data) == state and wire.dumps(wire.loads(data)) == data


@pytest.mark.parametrize(("ly", "message"), [
    ("[]", "list of 9 or 10 items"),
    ("[0,0,0,0,null,0,2,[],[]]", "noticed must be 0 or 1"),
    ("[0,0,-1,0,null,0,0,[],[]]", "expected integers"),
    ("[0,0,0,0,1.5,0,0,[],[]]", "qualified_until"),
    ("[0,0,0,0,null,0,0,[1,2,3],[]]", "malformed orders"),
    ("[0,0,0,0,null,0,0,[1,2,3,4,5,6,1,1,1,1],[]]", "malformed orders"),
    ("[0,0,0,0,null,0,0,[],[1]]", "pairs"),
    ("[0,0,0,0,null,0,0,[],[\"a\",1]]", "flat integer lists"),
])
def test_wire_refuses_a_malformed_account(ly: str, message: str) -> None:
    with pytest.raises(WireError, match=message):
        wire.loads(b'{"v":1,"c":"c1","ly":' + ly.encode() + b"}")


# -- rules --------------------------------------------------------------------------------------

BAD_RULES = [
    ({"tiers": []}, "loyalty.tiers: must list at least one tier"),
    ({"tiers": [{"name": "a", "min_spend": 10}]}, "loyalty.tiers[0].min_spend: must be 0"),
    ({"tiers": [{"name": "a", "min_spend": 0}, {"name": "b", "min_spend": 0}]},
     "loyalty.tiers[1].min_spend: must be greater than tiers[0].min_spend"),
    ({"tiers": [{"name": "a", "min_spend": 0}, {"name": "a", "min_spend": 5}]},
     "loyalty.tiers[1].name: 'a' is used by an earlier tier"),
    ({"tiers": [{"name": "a", "min_spend": 0, "multiplier": 0}]},
     "loyalty.tiers[0].multiplier: must be > 0"),
    ({"tiers": [{"name": " ", "min_spend": 0}]}, "loyalty.tiers[0].name: must not be empty"),
    ({"points_per_unit": "lots"}, "loyalty.points_per_unit: must be a decimal number"),
    ({"category_multipliers": {"toys": -1}}, "loyalty.category_multipliers.toys: must be >= 0"),
    ({"service_recovery_points": {"urgent": -1}},
     "loyalty.service_recovery_points.urgent: must be between 0"),
    ({"service_recovery_points": {"critical": 5}},
     "loyalty.service_recovery_points.critical: unknown field"),
    ({"expiry_months": 1, "expiry_notice_days": 28},
     "loyalty.expiry_notice_days: must be shorter than expiry_months"),
    ({"max_points_per_event": 0}, "loyalty.max_points_per_event: must be between 1"),
    ({"allow_negative_balance": "no"}, "loyalty.allow_negative_balance: must be true or false"),
]


@pytest.mark.parametrize(("section", "message"), BAD_RULES)
def test_a_bad_loyalty_field_is_named(section: dict[str, Any], message: str) -> None:
    with pytest.raises(RulesError) as err:
        parse_rules({"loyalty": section})
    assert str(err.value).startswith(message)


def test_default_loyalty_rules() -> None:
    lr = DEFAULT_RULES.loyalty
    assert [(t.name, int(t.min_spend), float(t.multiplier)) for t in lr.tiers] == [
        ("bronze", 0, 1.0), ("silver", 500, 1.25), ("gold", 1500, 1.5), ("platinum", 5000, 2.0)]
    assert (lr.points_per_unit, lr.downgrade_grace_days, lr.survey_bonus_points,
            lr.expiry_months, lr.expiry_notice_days, lr.refund_window_days,
            lr.max_points_per_event, lr.allow_negative_balance) == (
        1, 90, 25, 12, 30, 90, 10_000, False)
    assert dataclasses.asdict(lr.service_recovery_points) == {
        "urgent": 200, "high": 100, "normal": 50, "low": 25}


# -- adjustments (README "Member operations") -----------------------------------------------


def adjust(eid: str, t: int, points: int, cid: str = "c1") -> Adjustment:
    return Adjustment(eid, cid, t, "api", points, "agent-jane", "parcel arrived damaged")


ALLOW_NEGATIVE = parse_rules({"loyalty": {"allow_negative_adjustments": True}})
WHO = 'adjustment by agent-jane: "parcel arrived damaged"'


@pytest.mark.parametrize("points,rules,balance,rule,entry_points,reason", [
    (25, DEFAULT_RULES, 125, "adjustment", 25, f"{WHO}: +25 pts"),
    (1, DEFAULT_RULES, 101, "adjustment", 1, f"{WHO}: +1 pt"),
    (-60, DEFAULT_RULES, 40, "adjustment", -60, f"{WHO}: -60 pts"),
    (-100, DEFAULT_RULES, 0, "adjustment", -100, f"{WHO}: -100 pts"),
    (-500, DEFAULT_RULES, 100, "adjustment_rejected", 0,
     f"{WHO}: -500 pts not applied: the balance is 100 pts, a debit may not take it below 0"),
    (-500, ALLOW_NEGATIVE, -400, "adjustment", -500, f"{WHO}: -500 pts"),
    (10_001, DEFAULT_RULES, 100, "adjustment_rejected", 0,
     f"{WHO}: +10001 pts not applied: above the 10000 pts one entry may credit"),
])
def test_adjustments(points: int, rules: Rules, balance: int, rule: str, entry_points: int,
                     reason: str) -> None:
    state = apply(None, buy("p1", T0, 10_000), rules, T0).state  # 100 pts
    step = apply(state, adjust("a1", T0 + HOUR_MS, points), rules, T0 + HOUR_MS)
    [entry] = [o for o in step.outputs if isinstance(o, LedgerEntry)]
    assert (entry.rule, entry.points, entry.reason) == (rule, entry_points, reason)
    assert entry.entry_id == f"a1:{rule}"
    assert step.state.loyalty is not None and step.state.loyalty.balance == balance
    # a credit counts in lifetime points, a debit or a refusal does not
    lifetime = 100 + (entry_points if entry_points > 0 else 0)
    assert step.state.loyalty.lifetime_points == lifetime


def test_an_adjustment_of_an_unknown_customer_is_refused_and_zero_is_invalid() -> None:
    step = apply(None, adjust("a1", T0, 25), DEFAULT_RULES, T0)
    [entry] = [o for o in step.outputs if isinstance(o, LedgerEntry)]
    assert (entry.rule, entry.points) == ("adjustment_rejected", 0)
    assert "unknown customer" in entry.reason
    state = apply(None, buy("p1", T0, 10_000), DEFAULT_RULES, T0).state
    with pytest.raises(Rejected) as err:
        apply(state, adjust("a0", T0 + 1, 0), DEFAULT_RULES, T0 + 1)
    assert err.value.reason == "invalid" and state.loyalty is not None
    assert state.loyalty.balance == 100  # unchanged
