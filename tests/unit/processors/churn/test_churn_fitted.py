"""The churn score's fitted form (``pulse fit churn``): ``low_value``, ``repeat_purchases``,
``model_weight`` and ``bias``, and ``signal_strengths``, the parts the fit regresses on."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

from processors.churn import model as churn_model
from processors.churn.explain import Reason, score
from processors.churn.model import signal_strengths
from processors.customer import apply
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS
from schemas.events import Event, Purchase
from tests.builders import survey, ticket

T0 = 1_704_067_200_000  # 2024-01-01
LAST = T0 + 400 * DAY_MS  # the regular customer's last purchase


def buy(i: int, t: int, amount: int = 5_000) -> Purchase:
    return Purchase(f"p{i}-{t}", "c1", t, "pos", f"o{i}-{t}", "store", "purchase", amount, "EUR")


def rhythm(n: int, gap_days: float, last: int) -> list[Event]:
    """``n`` purchases ``gap_days`` apart, the last at ``last``."""
    return [buy(i, last - round((n - 1 - i) * gap_days * DAY_MS)) for i in range(n)]


BASE = rhythm(12, 14, LAST)  # a regular: 12 purchases, every 14 days


def run(events: list[Event], rules: Rules = DEFAULT_RULES) -> CustomerState:
    """The customer's state after ``events`` (in time order, the engine's per-event clock)."""
    state: CustomerState | None = None
    for ev in sorted(events, key=lambda e: e.occurred_at):
        state = apply(state, ev, rules, ev.occurred_at - rules.allowed_lateness_ms).state
    assert state is not None
    return state


def reasons(state: CustomerState, as_of: int, rules: Rules) -> dict[str, Reason]:
    return {r.code: r for r in score(state, rules, as_of).reasons}


REF = 5_000  # value_reference_minor in these tests: 50.00 EUR a purchase day


def fitted(**churn_fields: object) -> Rules:
    weights = {k: churn_fields.pop(k) for k in ("low_value", "repeat_purchases", "overdue")
               if k in churn_fields}
    return parse_rules({"churn": {"value_reference_minor": REF, "min_reason_weight": 0,
                                  "weights": weights, **churn_fields}})


def z_of(state: CustomerState, rules: Rules, as_of: int) -> float:
    """The score's log-odds (unrounded), through the score's own profile."""
    return churn_model._Profile(state, state.churn, rules).total(as_of)


ONE = LAST - 10 * DAY_MS  # a one-time buyer's only purchase

# (name, purchases, expected strength ln(REF / spend per purchase day), limited to +-3)
VALUES = [
    ("at the reference", [buy(1, ONE, REF)], 0.0),
    ("half of it", [buy(1, ONE, REF // 2)], math.log(2)),
    ("twice it", [buy(1, ONE, 2 * REF)], -math.log(2)),
    ("two orders on one day count as one day", [buy(1, ONE, REF), buy(2, ONE + 1, REF)],
     -math.log(2)),
    ("two days at the reference", [buy(1, ONE - DAY_MS, REF), buy(2, ONE, REF)], 0.0),
    ("a fiftieth: limited to 3", [buy(1, ONE, REF // 50)], 3.0),
    ("fifty times: limited to -3", [buy(1, ONE, 50 * REF)], -3.0),
    ("nothing spent", [buy(1, ONE, 0)], 3.0),
]


@pytest.mark.parametrize(("name", "events", "strength"), VALUES, ids=[v[0] for v in VALUES])
def test_low_value_strength(name: str, events: list[Event], strength: float) -> None:
    state = run(events)
    parts = signal_strengths(state, fitted(), LAST)
    assert parts is not None
    assert parts["low_value"] == pytest.approx(strength, abs=1e-12)


# (repeat purchase days, expected strength -ln(1 + x))
@pytest.mark.parametrize(("days", "strength"), [(1, 0.0), (2, -math.log(2)), (5, -math.log(5)),
                                                (12, -math.log(12))])
def test_repeat_purchases_strength(days: int, strength: float) -> None:
    state = run(rhythm(days, 9, LAST))
    parts = signal_strengths(state, DEFAULT_RULES, LAST + DAY_MS)
    assert parts is not None
    assert parts["repeat_purchases"] == pytest.approx(strength, abs=1e-12)


def test_no_parts_without_a_purchase() -> None:
    state = run([survey("s1", T0, "nps", 3)])
    assert signal_strengths(state, DEFAULT_RULES, T0 + DAY_MS) is None


# the score's log-odds are bias + model_weight * purchase_model + sum(w_k * s_k), whatever
# the weights: what the fit's logistic regression assumes
WEIGHTS = [
    {},
    {"model_weight": 0.5637, "bias": 0.9518, "low_value": 0.2366, "repeat_purchases": 0.7169},
    {"model_weight": 2.0, "bias": -1.5, "low_value": 1.0, "repeat_purchases": 0.1,
     "overdue": 3.0},
    {"model_weight": 0.0, "bias": 0.3},
]
# weekly for 200 days, then one small order 100 days later: fewer and smaller orders
SLOWING = [*(buy(i, LAST - (300 - 7 * i) * DAY_MS) for i in range(29)), buy(99, LAST, 1_000)]
HISTORIES = [
    ("regular, overdue", BASE, LAST + 60 * DAY_MS),
    ("slowing down: both trends", SLOWING, LAST + 5 * DAY_MS),
    ("one-time buyer", [buy(1, ONE, 900)], LAST),
    ("regular with an urgent ticket and a detractor NPS",
     [*BASE, ticket("t1", LAST + DAY_MS, "T-1", "opened", "urgent"),
      survey("s2", LAST, "nps", 1)],
     LAST + 3 * DAY_MS),
]


@pytest.mark.parametrize("weights", WEIGHTS, ids=[str(sorted(w)) for w in WEIGHTS])
@pytest.mark.parametrize(("name", "events", "as_of"), HISTORIES, ids=[h[0] for h in HISTORIES])
def test_the_log_odds_are_the_weighted_parts(weights: dict[str, float], name: str,
                                             events: list[Event], as_of: int) -> None:
    rules = fitted(**weights)
    state = run(events, rules)
    parts = signal_strengths(state, rules, as_of)
    assert parts is not None
    if name.startswith("slowing"):  # (the case is what it says)
        assert parts["frequency_down"] == parts["spend_down"] == 1.0
    cr = rules.churn
    linear = cr.bias + cr.model_weight * parts["purchase_model"] + sum(
        getattr(cr.weights, f.name) * parts[f.name] for f in fields(cr.weights))
    assert z_of(state, rules, as_of) == pytest.approx(linear, abs=1e-9)
    assert score(state, rules, as_of).score == round(1 / (1 + math.exp(-linear)), 4)


def test_the_default_rules_leave_the_score_as_it_was() -> None:
    """The new fields at their defaults add nothing, to the last bit: a rules file that spells
    them out is the default rules."""
    spelled = parse_rules({"churn": {"model_weight": 1, "bias": 0, "value_reference_minor": 5000,
                                     "weights": {"low_value": 0, "repeat_purchases": 0}}})
    assert spelled == DEFAULT_RULES
    cr = DEFAULT_RULES.churn
    assert (cr.model_weight, cr.bias, cr.weights.low_value, cr.weights.repeat_purchases) == (
        1.0, 0.0, 0.0, 0.0)
    # and a weight of 0 is off: the same floats as without the signal
    state = run(BASE)
    off = fitted(low_value=0.0, repeat_purchases=0.0)
    assert z_of(state, off, LAST + 40 * DAY_MS) == z_of(state, DEFAULT_RULES, LAST + 40 * DAY_MS)


# (name, purchases, low_value is a reason, figure: spend per purchase day in EUR)
REASONS = [
    ("spends a fifth of the reference", [buy(1, ONE, 1_000)], True, 10.0),
    ("spends the reference", [buy(1, ONE, REF)], False, None),
    ("spends more", [buy(1, ONE, 3 * REF)], False, None),
]


@pytest.mark.parametrize(("name", "events", "is_reason", "figure"), REASONS,
                         ids=[r[0] for r in REASONS])
def test_low_value_is_a_reason_only_below_the_reference(name: str, events: list[Event],
                                                        is_reason: bool,
                                                        figure: float | None) -> None:
    rules = fitted(low_value=0.5)
    state = run(events, rules)
    found = reasons(state, LAST, rules)
    assert ("low_value" in found) is is_reason
    if is_reason:
        r = found["low_value"]
        assert r.figure == figure
        assert r.text == "low spend: 10.00 EUR per purchase day, against 50.00 typical"
        assert 0 < r.weight <= 1


@pytest.mark.parametrize(("amount", "direction"), [(1_000, 1), (REF, 0), (3 * REF, -1)])
def test_low_value_moves_the_score_by_spend(amount: int, direction: int) -> None:
    state = run([buy(1, ONE, amount)])
    before = z_of(state, DEFAULT_RULES, LAST)
    after = z_of(state, fitted(low_value=0.5), LAST)
    assert (after > before) - (after < before) == direction


def test_repeat_purchases_lowers_the_risk_of_repeat_buyers_only() -> None:
    rules = fitted(repeat_purchases=0.7)
    one = run([buy(1, ONE)])
    regular = run(BASE)
    at = LAST + 20 * DAY_MS
    assert z_of(one, rules, at) == z_of(one, DEFAULT_RULES, at)
    assert z_of(regular, rules, at) == pytest.approx(
        z_of(regular, DEFAULT_RULES, at) - 0.7 * math.log(12))
    assert "repeat_purchases" not in {r.code for r in score(regular, rules, at).reasons}


def test_model_weight_scales_the_purchase_models_reasons() -> None:
    """The purchase model's reasons ("one_time", "overdue", ...) carry its scaled log-odds;
    silence still only raises the risk (the level search relies on it)."""
    state = run([buy(1, ONE)])
    half = fitted(model_weight=0.5)
    zs = [z_of(state, half, ONE + d * DAY_MS) for d in (1, 30, 90, 365)]
    assert zs == sorted(zs)
    full = [z_of(state, DEFAULT_RULES, ONE + d * DAY_MS) for d in (1, 30, 90, 365)]
    assert zs == pytest.approx([0.5 * z for z in full])
    assert "one_time" in reasons(state, ONE + 365 * DAY_MS, half)
