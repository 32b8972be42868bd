"""``processors.churn``: each signal, the levels, alerts on events and on silence, the wire."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import pytest

from processors import wire
from processors.churn import wire as churn_wire
from processors.churn.explain import Reason, score
from processors.churn.layer import INACTIVITY, ChurnAlert, on_tick
from processors.churn.levels import level_after, next_check_at
from processors.churn.records import HIGH, LOW, MEDIUM, ChurnState
from processors.customer import apply
from processors.errors import WireError
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS, HOUR_MS
from schemas.events import Event, Purchase, SupportTicket, Survey
from tests import builders

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
C = "C1"
NO_TRENDS = parse_rules({"churn": {"weights": {"frequency_down": 0, "spend_down": 0},
                                    "min_reason_weight": 0}})
ALL_REASONS = parse_rules({"churn": {"min_reason_weight": 0}})  # also those of a low risk


def buy(i: int, t: int, amount: int = 5_000) -> Purchase:
    return builders.purchase(f"p{i}-{t}", t, amount, cid=C, order=f"o{i}-{t}")


def ticket(i: int, t: int, status: str, priority: str = "normal", tid: str = "T-1",
           sentiment: float | None = None) -> SupportTicket:
    return builders.ticket(f"t{i}-{t}", t, tid, status, priority, cid=C, category="delivery",
                           sentiment=sentiment)


def survey(i: int, t: int, kind: str, value: int) -> Survey:
    return builders.survey(f"s{i}-{t}", t, kind, value, cid=C, touchpoint="relationship",
                           survey_id=f"S{i}")


def rhythm(n: int, gap_days: float, last: int, amount: int = 5_000) -> list[Event]:
    """``n`` purchases ``gap_days`` apart, the last at ``last``."""
    return [buy(i, last - round((n - 1 - i) * gap_days * DAY_MS), amount) for i in range(n)]


def run(events: Iterable[Event], rules: Rules = DEFAULT_RULES
        ) -> tuple[CustomerState, list[ChurnAlert]]:
    """Apply in time order with the engine's per-event clock; collect churn alerts."""
    state: CustomerState | None = None
    alerts: list[ChurnAlert] = []
    for ev in sorted(events, key=lambda e: e.occurred_at):
        step = apply(state, ev, rules, ev.occurred_at - rules.allowed_lateness_ms)
        state = step.state
        alerts += [o for o in step.outputs if isinstance(o, ChurnAlert)]
    assert state is not None
    return state, alerts


def reasons(state: CustomerState, as_of: int, rules: Rules = DEFAULT_RULES
            ) -> dict[str, Reason]:
    return {r.code: r for r in score(state, rules, as_of).reasons}


# -- each signal -------------------------------------------------------------------------------

LAST = T0 + 400 * DAY_MS  # the base customer's last purchase
BASE = rhythm(12, 14, LAST)  # a regular: 12 purchases, every 14 days
AT = LAST + 3 * DAY_MS

SIGNALS = [
    # (name, extra events, as_of, code, figure, words in the text)
    ("urgent ticket", [ticket(1, AT - HOUR_MS, "opened", "urgent")], AT, "urgent_ticket", 1.0,
     "unresolved urgent ticket T-1, open 1 h"),
    ("reopened ticket", [ticket(1, LAST - 9 * DAY_MS, "opened"),
                         ticket(2, LAST - 9 * DAY_MS + HOUR_MS, "responded"),
                         ticket(3, LAST - 8 * DAY_MS, "resolved"),
                         ticket(4, AT - 2 * DAY_MS, "reopened")], AT, "reopened_ticket", 2.0,
     "ticket T-1 reopened 2 days ago, still open"),
    ("SLA breach, open", [ticket(1, AT - 2 * DAY_MS, "opened")], AT, "sla_breach", 1.0,
     "SLA breached: normal ticket T-1 open 2 days without a response"),
    ("SLA breach, settled", [ticket(1, LAST - 20 * DAY_MS, "opened", "urgent"),
                             ticket(2, LAST - 19 * DAY_MS, "resolved", "urgent")],
     AT, "sla_breach", 1.0, "SLA breach 22 days ago"),
    ("negative sentiment", [ticket(1, AT - DAY_MS, "opened", "low", sentiment=-0.8),
                            ticket(2, AT - DAY_MS + HOUR_MS, "resolved", "low")],
     AT, "negative_sentiment", -0.8, "negative sentiment -0.80 in the latest ticket message"),
    ("NPS detractor", [survey(1, AT - 5 * DAY_MS, "nps", 2)], AT, "nps_detractor", 2.0,
     "NPS detractor: 2/10, 5 days ago"),
    ("low CSAT", [survey(1, AT - 5 * DAY_MS, "csat", 1), survey(2, AT - DAY_MS, "csat", 2)],
     AT, "low_csat", 1.5, "low CSAT: 1.5/5 over the latest 2 answers"),
    ("high effort", [survey(1, AT - DAY_MS, "ces", 2)], AT, "high_effort", 2.0,
     "high effort: CES 2.0/7 (7 = very easy) over the latest 1 answer"),
    ("overdue", [], LAST + 42 * DAY_MS, "overdue", 3.0,
     "overdue 3.0x the usual gap (42 days since the last purchase, usually every 14)"),
]


@pytest.mark.parametrize(("name", "extra", "as_of", "code", "figure", "text"), SIGNALS,
                         ids=[s[0] for s in SIGNALS])
def test_each_signal_is_a_reason_with_its_figure(name: str, extra: list[Event], as_of: int,
                                                 code: str, figure: float, text: str) -> None:
    base, _ = run(BASE)
    state, _ = run([*BASE, *extra])
    found = reasons(state, as_of)
    assert code in found, found
    r = found[code]
    assert r.figure == figure
    assert text in r.text
    assert 0 < r.weight <= 1
    if extra:  # the signal raises the risk of the same customer at the same time
        assert score(state, DEFAULT_RULES, as_of).score > score(base, DEFAULT_RULES, as_of).score


def test_one_time_buyer_risk_grows_with_the_time_since_the_only_purchase() -> None:
    state, alerts = run([buy(0, T0)])
    values = [score(state, DEFAULT_RULES, T0 + d * DAY_MS).score for d in (0, 30, 90, 365)]
    assert values == sorted(values) and values[0] < values[-1]
    r = reasons(state, T0 + 60 * DAY_MS)["one_time"]
    assert (r.figure, r.text) == (60.0, "one purchase only, 60 days ago")
    assert alerts == []  # the first evaluation sets the starting level without an alert


def test_an_infrequent_buyer_is_riskier_than_a_regular_one_just_after_a_purchase() -> None:
    rare, _ = run(rhythm(4, 120, LAST))
    regular, _ = run(BASE)
    assert score(rare, DEFAULT_RULES, AT).score > score(regular, DEFAULT_RULES, AT).score
    r = reasons(rare, AT)["infrequent"]
    assert (r.figure, r.text) == (120.0, "buys rarely: about every 120 days")
    assert "overdue" not in reasons(regular, AT)


def test_recency_counts_against_the_customers_own_gap() -> None:
    fast, _ = run(rhythm(12, 7, LAST))
    slow, _ = run(rhythm(12, 30, LAST))
    at = LAST + 35 * DAY_MS  # 5x the fast customer's gap, about 1x the slow one's
    assert score(fast, DEFAULT_RULES, at).score > score(slow, DEFAULT_RULES, at).score
    assert reasons(fast, at)["overdue"].figure == 5.0


@pytest.mark.parametrize(("recent_gap", "recent_amount", "code"), [
    (45, 5_000, "frequency_down"),  # every 10 days, then every 45
    (10, 1_000, "spend_down"),  # the same pace, a fifth of the basket
])
def test_trends_compare_the_90_days_up_to_the_last_purchase_with_before(
        recent_gap: int, recent_amount: int, code: str) -> None:
    before = rhythm(28, 10, LAST - 100 * DAY_MS)
    recent = [buy(100 + i, LAST - i * recent_gap * DAY_MS, recent_amount)
              for i in range(90 // recent_gap)]
    state, _ = run([*before, *recent])
    steady, _ = run(rhythm(37, 10, LAST))
    r = reasons(state, AT, ALL_REASONS)[code]
    assert 0 < r.figure <= 1
    assert code not in reasons(steady, AT, ALL_REASONS)
    assert code not in reasons(state, AT, NO_TRENDS)


def test_a_customer_without_purchases_is_scored_by_the_population() -> None:
    state, _ = run([survey(1, T0, "nps", 9)])
    sc = score(state, DEFAULT_RULES, T0)
    assert [r.code for r in sc.reasons] == ["no_purchase"]


@pytest.mark.parametrize(("extra", "as_of"), [
    ([survey(1, AT - 200 * DAY_MS, "nps", 2)], AT),  # older than survey_memory_days
    ([survey(1, AT - DAY_MS, "nps", 7)], AT),  # passive
    ([survey(1, AT - DAY_MS, "csat", 3)], AT),  # not below 3
    ([survey(1, AT - DAY_MS, "ces", 5)], AT),  # easy enough
    ([ticket(1, AT - DAY_MS, "opened", "low", sentiment=-0.1)], AT),  # mild
    ([ticket(1, AT - 100 * DAY_MS, "opened", sentiment=-0.9),
      ticket(2, AT - 100 * DAY_MS + HOUR_MS, "resolved")], AT),  # older than 90 days
    ([ticket(1, AT - HOUR_MS, "opened", "high")], AT),  # not an urgent priority, SLA not due
])
def test_what_is_not_a_signal(extra: list[Event], as_of: int) -> None:
    base, _ = run(BASE)
    state, _ = run([*BASE, *extra])
    assert score(state, DEFAULT_RULES, as_of) == score(base, DEFAULT_RULES, as_of)


def test_reasons_are_sorted_by_weight_and_explain_the_risk() -> None:
    state, _ = run([*BASE, survey(1, AT - DAY_MS, "nps", 0),
                    ticket(1, AT - HOUR_MS, "opened", "urgent")])
    sc = score(state, DEFAULT_RULES, AT + 40 * DAY_MS)
    weights = [r.weight for r in sc.reasons]
    assert weights == sorted(weights, reverse=True)
    assert 0 < sum(weights) <= sc.score
    assert {r.code for r in sc.reasons} >= {"nps_detractor", "urgent_ticket", "overdue"}


# -- levels --------------------------------------------------------------------------------------

R = DEFAULT_RULES.churn  # medium 0.7 / 0.6, high 0.9 / 0.8


@pytest.mark.parametrize(("level", "s", "after"), [
    (LOW, 0.69, LOW), (LOW, 0.7, MEDIUM), (LOW, 0.9, HIGH),
    (MEDIUM, 0.65, MEDIUM), (MEDIUM, 0.6, MEDIUM), (MEDIUM, 0.5999, LOW), (MEDIUM, 0.95, HIGH),
    (HIGH, 0.85, HIGH), (HIGH, 0.8, HIGH), (HIGH, 0.79, MEDIUM), (HIGH, 0.59, LOW),
])
def test_levels_have_hysteresis(level: str, s: float, after: str) -> None:
    assert level_after(level, s, R) == after


# -- alerts on events ------------------------------------------------------------------------


def test_detractor_with_an_unresolved_urgent_ticket_alerts_naming_both() -> None:
    occasional = rhythm(5, 40, LAST)
    events = [*occasional, survey(1, AT, "nps", 3),
              ticket(1, AT + HOUR_MS, "opened", "urgent")]
    state, alerts = run(events)
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.kind, a.level, a.cause_event_id) == ("alert", HIGH, events[-1].event_id)
    assert {"nps_detractor", "urgent_ticket"} <= {r.code for r in a.reasons}
    assert a.suggested_action == "service_recovery_call"
    d = a.as_dict()
    assert d["occurred_at"] == "2025-02-07T01:00:00.000Z"
    assert d["customer_id"] == C and a.stream == "alerts"
    assert all(set(r) == {"code", "text", "figure", "weight"} for r in d["reasons"])
    assert state.churn is not None and state.churn.level == HIGH
    _, again = run(events)
    assert again[0].alert_id == a.alert_id  # deterministic


def test_the_cooldown_allows_one_alert_per_level() -> None:
    occasional = rhythm(5, 40, LAST)
    events: list[Event] = [*occasional]
    for k, day in enumerate((3, 10, 17, 50)):  # detractor, recovery (promoter + purchase), ...
        t = LAST + day * DAY_MS
        events += [survey(10 + k, t, "nps", 0), ticket(10 + k, t + 1, "opened", "urgent",
                                                       tid=f"T-{k}")]
        events += [ticket(20 + k, t + 2 * HOUR_MS, "resolved", "urgent", tid=f"T-{k}"),
                   survey(20 + k, t + 3 * HOUR_MS, "nps", 10), buy(20 + k, t + 4 * HOUR_MS)]
    _, alerts = run(events)
    highs = [a.occurred_at for a in alerts if a.kind == "alert" and a.level == HIGH]
    assert [(t - LAST) // DAY_MS for t in highs] == [3, 50]  # not days 10, 17: cooldown
    recovered = [a for a in alerts if a.kind == "recovered"]
    assert [(a.occurred_at - LAST) // DAY_MS for a in recovered] == [3, 50]
    quiet = parse_rules({"churn": {"recovered_messages": False}})
    _, alerts = run(events, quiet)
    assert all(a.kind == "alert" for a in alerts)


# -- silence -------------------------------------------------------------------------------------


def test_a_silent_customer_is_alerted_at_the_event_time_the_level_rises() -> None:
    state, alerts = run(BASE)
    ch = state.churn
    assert alerts == [] and ch is not None and ch.level == LOW
    due = next_check_at(ch, state, DEFAULT_RULES)
    assert due is not None and due > LAST
    # the level changes exactly at due: not a millisecond earlier
    before = score(state, DEFAULT_RULES, due - 1).score
    at_due = score(state, DEFAULT_RULES, due).score
    assert level_after(LOW, before, R) == LOW and level_after(LOW, at_due, R) == MEDIUM
    ch2, out = on_tick(ch, state, DEFAULT_RULES, due - 1)
    assert out == () and ch2 is not None and ch2.level == LOW  # at most a closer look:
    assert ch2 == ch or (ch2.due, ch2.due_exact) == (due, True)  # the exact due, found
    assert not ch.due_exact and LAST < ch.due <= due  # the record held a look-again time
    ch3, out = on_tick(ch, state, DEFAULT_RULES, due + 5 * DAY_MS)
    assert [(a.level, a.occurred_at, a.cause_event_id) for a in out] == [
        (MEDIUM, due, INACTIVITY)]
    assert out[0].suggested_action == "win_back_offer"
    assert "overdue" in [r.code for r in out[0].reasons]
    assert ch3 is not None and ch3.level == MEDIUM and ch3.due > due


def test_ticks_do_not_change_when_silence_alerts() -> None:
    state, _ = run(BASE)
    ch0 = state.churn
    year = LAST + 365 * DAY_MS
    once, out_once = on_tick(ch0, state, DEFAULT_RULES, year)
    ch, out_daily = ch0, ()
    for d in range(1, 366):
        ch, out = on_tick(ch, state, DEFAULT_RULES, LAST + d * DAY_MS)
        out_daily += out
    assert ch == once and out_daily == out_once
    assert [a.level for a in out_once] == [MEDIUM, HIGH]
    assert out_once[0].alert_id != out_once[1].alert_id
    assert on_tick(once, state, DEFAULT_RULES, year) == (once, ())  # idempotent


def test_an_event_after_the_due_time_first_raises_what_silence_made_due() -> None:
    state, _ = run(BASE)
    assert state.churn is not None
    due = next_check_at(state.churn, state, DEFAULT_RULES)
    assert due is not None
    _, expected = on_tick(state.churn, state, DEFAULT_RULES, due)
    back = buy(99, due + 10 * DAY_MS)
    step = apply(state, back, DEFAULT_RULES, back.occurred_at - DEFAULT_RULES.allowed_lateness_ms)
    alerts = [o for o in step.outputs if isinstance(o, ChurnAlert)]
    assert alerts[0] == expected[0]  # same alert, same id, at the due time
    assert alerts[1].kind == "recovered" and alerts[1].cause_event_id == back.event_id
    assert step.state.churn is not None and step.state.churn.level == LOW


def test_a_customer_back_at_medium_rises_again_on_silence_after_the_cooldown() -> None:
    events = [*rhythm(5, 40, LAST), survey(1, AT, "nps", 3),
              ticket(1, AT + HOUR_MS, "opened", "urgent"),
              ticket(2, AT + 2 * HOUR_MS, "resolved", "urgent")]
    state, alerts = run(events)
    ch = state.churn
    assert [(a.level, a.occurred_at) for a in alerts] == [(HIGH, AT + HOUR_MS)]
    assert ch is not None and ch.level == MEDIUM  # the ticket was resolved: 0.68
    ch2, out = on_tick(ch, state, DEFAULT_RULES, LAST + 2 * 365 * DAY_MS)
    assert [(a.level, a.cause_event_id) for a in out] == [(HIGH, INACTIVITY)]
    assert out[0].occurred_at - alerts[0].occurred_at >= R.cooldown_days * DAY_MS
    assert ch2 is not None and ch2.level == HIGH and ch2.due == 0  # nothing can change it


def test_next_check_at_for_a_state_without_a_churn_record() -> None:
    state, _ = run(BASE)
    bare = msgspec.structs.replace(state, churn=None)
    assert next_check_at(bare.churn, bare, DEFAULT_RULES) == next_check_at(
        state.churn, state, DEFAULT_RULES)


# -- wire --------------------------------------------------------------------------------------

STATES = [
    ChurnState(),
    ChurnState(0.9123, HIGH, T0, T0 - DAY_MS, T0 - 40 * DAY_MS, T0, True, T0 - 5 * DAY_MS,
               T0 - 3, T0 + 17 * DAY_MS),
    ChurnState(1.0, MEDIUM, T0 - 7, 0, 0, 0, False, 0, 0, 0),
    ChurnState(0.2, LOW, T0, 0, 0, 0, False, 0, 0, T0 + 90 * DAY_MS, False),  # look again
]


@pytest.mark.parametrize("ch", STATES)
def test_wire_round_trip(ch: ChurnState) -> None:
    for m in (None, T0, T0 + 5):
        assert churn_wire.from_wire(churn_wire.to_wire(ch, m), m) == ch
    state = CustomerState(C, max_event_at=T0, churn=ch)
    assert wire.loads(wire.dumps(state)) == state


@pytest.mark.parametrize("bad", [
    [1, 2, 3], "x", [1, 0, 0, 0, 0, 0, 0, 0, 0, [99]], [1, 9, 0, 0, 0, 0, 0, 0, 0],
    [1.5, 0, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, -1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, [], 0], [1, 0, 0, 0, 0, 0, 0, 0, 0, "x"],
])
def test_wire_refuses_malformed_records(bad: object) -> None:
    with pytest.raises(WireError, match="'ch'"):
        churn_wire.from_wire(bad, T0)


def test_records_written_with_reason_indexes_are_still_read() -> None:
    # states written before the stored reasons were dropped carry them as a tenth item
    old = [9123, 5, 0, DAY_MS, T0 - 40 * DAY_MS, T0, T0 - 5 * DAY_MS, T0 - 3, 17 * DAY_MS, [2, 10]]
    assert churn_wire.from_wire(old, T0) == STATES[1]
    assert churn_wire.to_wire(STATES[1], T0) == old[:9]


def test_the_churn_record_costs_a_typical_customer_under_80_bytes() -> None:
    """tests/unit/processors/test_wire.py holds the whole state of a typical customer to 1 KiB."""
    events: list[Event] = rhythm(10, 37, T0 + 333 * DAY_MS)
    events += [ticket(1, T0 + 50 * DAY_MS, "opened"), ticket(2, T0 + 51 * DAY_MS, "resolved"),
               survey(1, T0 + 60 * DAY_MS, "nps", 4), survey(2, T0 + 120 * DAY_MS, "csat", 2)]
    state, _ = run(events)
    assert state.churn is not None
    with_churn = len(wire.dumps(state))
    without = len(wire.dumps(msgspec.structs.replace(state, churn=None)))
    assert with_churn - without < 80
