"""Segments (processors/engagement/segments.py): one table row per rule, precedence and
tags, reasons with their figures, and when silence alone changes the segment."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from processors.churn.records import ChurnState
from processors.customer import apply
from processors.engagement.segments import classify, money, next_change
from processors.rules import DEFAULT_RULES, SEGMENTS, parse_rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS
from schemas.events import Event
from tests.builders import customer, purchase
from tests.paths import ROOT

T0 = 1_704_067_200_000  # 2024-01-01
R = DEFAULT_RULES


def state_of(*events: Event, level: str | None = None) -> CustomerState:
    state: CustomerState | None = None
    for ev in events:
        state = apply(state, ev, R, ev.occurred_at).state
    assert state is not None
    if level is not None:
        state = msgspec.structs.replace(state, churn=replace(state.churn or ChurnState(),
                                                             level=level))
    return state


def buys(days: list[int], amount: int = 1000) -> list[Event]:
    return [purchase(f"p{i}", T0 + d * DAY_MS, amount) for i, d in enumerate(days)]


# (what, events, churn level forced, as of day, segment, tags, reason)
CASES: list[tuple[str, list[Event], str | None, int, str, tuple[str, ...], str]] = [
    ("a signup without a purchase is new for new_days",
     [customer("s", T0, "signup")], None, 29, "new", (),
     "new: signed up on 2024-01-01, no purchase yet"),
    ("... then a prospect", [customer("s", T0, "signup")], None, 30, "prospect", (),
     "prospect: no purchase yet"),
    ("a first purchase is new (the purchase model's level of a first purchase is medium: a tag)",
     buys([0]), None, 10, "new", ("at_risk", "active"),
     "new: first purchase on 2024-01-01, within 30"),
    ("one purchase day past new_days: a one-time buyer (over at risk)", buys([0]), None, 30,
     "one_time", ("at_risk", "active"), "one-time buyer: a single purchase day, 2024-01-01"),
    ("two purchase days, the last within active_days: active", buys([0, 40]), None, 100,
     "active", (), "active: last purchase 60 days ago (within 90)"),
    ("no purchase for active_days: inactive", buys([0, 40]), None, 130, "inactive", (),
     "inactive: no purchase for 90 days (active within 90, lapsed from 180)"),
    ("no purchase for lapsed_days: lapsed", buys([0, 40]), None, 220, "lapsed", (),
     "lapsed: no purchase for 180 days (≥ 180)"),
    ("a one-time buyer who stays away is lapsed, not one-time", buys([0]), "high", 200,
     "lapsed", ("at_risk",), "lapsed: no purchase for 200 days"),
    ("5 purchase days over 180 days, the last recent: loyal", buys([0, 45, 90, 135, 180]),
     None, 190, "loyal", ("active",), "loyal: 5 purchase days over 180 days, the last 10"),
    ("4 purchase days are not loyal", buys([0, 60, 120, 180]), None, 190, "active", (),
     "active"),
    ("365-day net spend at the threshold: big spender (over loyal and active)",
     buys([0, 45, 90, 135, 180], 40_000), None, 190, "big_spender", ("loyal", "active"),
     "big spender: 365-day net spend 2,000.00 EUR ≥ 2,000.00"),
    ("a refund takes a big spender under the threshold",
     [*buys([0, 45], 100_000), purchase("r", T0 + 50 * DAY_MS, 1, kind="refund")], None, 60,
     "active", (), "active"),
    ("big spending falls out of the window after 365 days", buys([0, 40], 100_000), None, 365,
     "lapsed", (), "lapsed"),
    ("churn level medium: at risk (the default at_risk_level)", buys([0, 40]), "medium", 60,
     "at_risk", ("active",), "at risk: churn level medium"),
    ("at risk stays under lapsed", buys([0, 40]), "high", 250, "lapsed", ("at_risk",),
     "lapsed"),
    ("a new customer is new, whatever the churn level of a first purchase", buys([0]),
     "high", 5, "new", ("at_risk", "active"), "new"),
    ("a prospect is never at risk", [customer("s", T0, "signup")], "high", 40, "prospect",
     (), "prospect"),
]


@pytest.mark.parametrize(("events", "level", "day", "segment", "tags", "reason"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_segment_rules(events: list[Event], level: str | None, day: int, segment: str,
                       tags: tuple[str, ...], reason: str) -> None:
    s = classify(state_of(*events, level=level), R, T0 + day * DAY_MS)
    assert (s.segment, s.tags) == (segment, tags)
    assert s.reason.startswith(reason)


def test_every_segment_is_reachable_and_the_precedence_is_documented() -> None:
    reached = {c[4] for c in CASES}
    assert reached == set(SEGMENTS)
    text = (ROOT / "processors" / "default_rules.yaml").read_text()
    order = [text.index(f"#   {s} ") for s in SEGMENTS]
    assert order == sorted(order)


def test_thresholds_come_from_the_rules() -> None:
    rules = parse_rules({"engagement": {"segments": {
        "new_days": 5, "active_days": 10, "lapsed_days": 20, "big_spender_min_spend": "15",
        "loyal_min_purchase_days": 2, "loyal_min_span_days": 3, "at_risk_level": "high"}}})
    st = state_of(*buys([0, 4], 1000))
    assert classify(st, rules, T0 + 6 * DAY_MS).segment == "big_spender"
    assert classify(st, rules, T0 + 6 * DAY_MS).tags == ("loyal", "active")
    assert classify(st, rules, T0 + 14 * DAY_MS)[:2] == ("big_spender", ("inactive",))
    assert classify(st, rules, T0 + 24 * DAY_MS).segment == "lapsed"
    medium = state_of(*buys([0, 4]), level="medium")
    assert "at_risk" not in classify(medium, rules, T0 + 6 * DAY_MS).tags


def test_money_is_exact_with_thousands() -> None:
    assert money(243_000, 2) == "2,430.00"
    assert money(5, 3) == "0.005"
    assert money(1_234_567, 0) == "1,234,567"


def test_next_change_is_the_first_time_classify_can_differ() -> None:
    st = state_of(*buys([0, 40], 100_000))  # 2,000.00 in the window: big spender
    day = T0 + 41 * DAY_MS
    times = []
    at: int | None = day
    while at is not None:
        times.append(at)
        at = next_change(st, R, at)
    # new ends at day 30 (passed), active at 130, lapsed at 220, spend leaves at 365
    assert times[1:] == [T0 + 130 * DAY_MS, T0 + 220 * DAY_MS, T0 + 365 * DAY_MS]
    # between two change times, nothing changes: checked on every day
    for d in range(41, 400):
        t = T0 + d * DAY_MS
        nxt = next_change(st, R, t)
        if nxt is not None:
            assert classify(st, R, nxt - 1)[:2] == classify(st, R, t)[:2]
        else:
            assert classify(st, R, t + 1000 * DAY_MS).segment == classify(st, R, t).segment


def test_a_signup_moves_on_from_new_by_time() -> None:
    st = state_of(customer("s", T0, "signup"))
    assert next_change(st, R, T0) == T0 + 30 * DAY_MS
    assert next_change(st, R, T0 + 30 * DAY_MS) is None
