"""KPI increments (``processors.kpi.deltas``) and windows (``kpi.window``): table-driven
cases per event kind, and properties against the final customer states.

``Agg`` and ``run`` keep the counters the way the engine keeps them in Redis (one HINCRBY per
delta); the hand-worked history (tests/kpi_history.py) uses them too.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors import kpi
from processors.customer import apply
from processors.errors import Rejected, RulesError
from processors.outputs import KpiDelta
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS, HOUR_MS, day_of
from schemas.events import Event, Redemption
from streams.tools.simulator import SimConfig, Simulator
from tests.builders import purchase, survey, ticket

T0 = 1_719_705_600_000  # 2024-06-30T00:00:00Z, a day boundary
D0 = day_of(T0)


class Agg:
    """The partition's two KPI hashes, as the engine's commits leave them."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, int]] = {kpi.DAYS: defaultdict(int),
                                                   kpi.GAUGES: defaultdict(int)}

    def add(self, deltas: Iterable[KpiDelta]) -> None:
        for d in deltas:
            self.buckets[d.bucket][d.field] += d.delta

    @property
    def days(self) -> dict[str, int]:
        return {k: v for k, v in self.buckets[kpi.DAYS].items() if v}

    @property
    def gauges(self) -> dict[str, int]:
        return {k: v for k, v in self.buckets[kpi.GAUGES].items() if v}

    def counts(self, as_of: int, rules: Rules = DEFAULT_RULES) -> kpi.Counts:
        window, _ = kpi.window(self.buckets[kpi.DAYS], as_of, rules)
        return {**window, **kpi.levels(self.buckets[kpi.GAUGES])}


def run(events: Iterable[Event], rules: Rules = DEFAULT_RULES
        ) -> tuple[dict[str, CustomerState], Agg]:
    """Apply in arrival order with the shell's watermark (newest event time so far minus the
    lateness, one partition); rejected events change nothing, as in the engine."""
    states: dict[str, CustomerState] = {}
    agg = Agg()
    high = 0
    for ev in events:
        high = max(high, ev.occurred_at)
        try:
            step = apply(states.get(ev.customer_id), ev, rules, high - rules.allowed_lateness_ms)
        except Rejected:
            continue
        states[ev.customer_id] = step.state
        agg.add(step.kpi)
    return states, agg





def step_kpi(events: list[Event], rules: Rules = DEFAULT_RULES) -> tuple[KpiDelta, ...]:
    """The KPI deltas of the last event after the others."""
    state = None
    for ev in events[:-1]:
        state = apply(state, ev, rules, ev.occurred_at - rules.allowed_lateness_ms).state
    last = events[-1]
    return apply(state, last, rules, last.occurred_at - rules.allowed_lateness_ms).kpi


def without_sections(deltas: Iterable[KpiDelta]) -> set[tuple[str, str, int]]:
    """Deltas other than the loyalty, churn and engagement ones (their values belong to
    those rules; they are tested below with stand-in sections, and the segment moves in
    tests/unit/processors/engagement)."""
    return {(d.bucket, d.field, d.delta) for d in deltas
            if not d.field.startswith(("tier:", "risk:", "points", "seg:"))
            and d.field.split(":")[-1]
            not in ("pti", "ptr", "ptx")}


# -- increments, one event kind at a time ------------------------------------------------------


@pytest.mark.parametrize("kind,score,cls", [
    ("nps", 10, "promoter"), ("nps", 9, "promoter"), ("nps", 8, "passive"),
    ("nps", 7, "passive"), ("nps", 6, "detractor"), ("nps", 0, "detractor"),
    ("csat", 5, "satisfied"), ("csat", 4, "satisfied"), ("csat", 3, "neutral"),
    ("csat", 2, "dissatisfied"), ("csat", 1, "dissatisfied"),
    ("ces", 7, "low_effort"), ("ces", 5, "low_effort"), ("ces", 4, "neutral"),
    ("ces", 3, "high_effort"), ("ces", 1, "high_effort"),
])
def test_answer_classes(kind: str, score: int, cls: str) -> None:
    assert kpi.answer_class(kind, score) == cls


def test_survey_counts_one_response_and_its_score_on_its_day() -> None:
    t = T0 + 5 * HOUR_MS
    assert without_sections(step_kpi([survey("s1", t, "ces", 6, touchpoint="support")])) == {
        ("g", "customers", 1),
        ("d", f"{D0}:sv:ces:low_effort:support", 1),
        ("d", f"{D0}:ss:ces:support", 6),
    }
    second = step_kpi([survey("s1", t, "ces", 6), survey("s2", t, "nps", 3, touchpoint="kiosk")])
    assert without_sections(second) == {("d", f"{D0}:sv:nps:detractor:other", 1),
                                       ("d", f"{D0}:ss:nps:other", 3)}  # unlisted: "other"


def test_first_purchase_counts_customer_order_revenue_new_and_open_segment() -> None:
    cap = 2 * DEFAULT_RULES.kpi.window_days
    got = without_sections(step_kpi([purchase("p1", T0, amount=2550, channel="web")]))
    assert got == {("g", "customers", 1), ("d", f"{D0}:ord:web", 1),
                   ("d", f"{D0}:rev:web", 2550), ("d", f"{D0}:new", 1),
                   ("d", f"{D0}:act:{cap}", 1)}


def test_revenue_is_counted_in_the_reporting_currency() -> None:
    got = without_sections(step_kpi([purchase("p1", T0, amount=1000, currency="USD")]))
    assert ("d", f"{D0}:rev:store", 920) in got  # 10.00 USD x 0.92


def test_second_order_on_the_same_day_changes_no_segment() -> None:
    got = without_sections(step_kpi([purchase("p1", T0), purchase("p2", T0 + HOUR_MS)]))
    assert got == {("d", f"{D0}:ord:store", 1), ("d", f"{D0}:rev:store", 1000)}


def test_a_later_purchase_day_closes_the_previous_segment() -> None:
    cap = 2 * DEFAULT_RULES.kpi.window_days
    got = without_sections(step_kpi([purchase("p1", T0), purchase("p2", T0 + 7 * DAY_MS)]))
    assert got == {("d", f"{D0 + 7}:ord:store", 1), ("d", f"{D0 + 7}:rev:store", 1000),
                   ("d", f"{D0 + 7}:act:{cap}", 1),
                   ("d", f"{D0}:act:{cap}", -1), ("d", f"{D0}:act:7", 1)}


def test_a_purchase_long_after_the_last_changes_only_its_own_segment() -> None:
    cap = 2 * DEFAULT_RULES.kpi.window_days
    got = without_sections(step_kpi([purchase("p1", T0), purchase("p2", T0 + 200 * DAY_MS)]))
    assert {f for b, f, _ in got if ":act:" in f} == {f"{D0 + 200}:act:{cap}"}


def test_a_late_purchase_between_two_days_splits_a_segment() -> None:
    cap = 2 * DEFAULT_RULES.kpi.window_days
    got = without_sections(step_kpi([purchase("p1", T0), purchase("p2", T0 + 3 * DAY_MS),
                                    purchase("p3", T0 + DAY_MS)]))
    assert got == {("d", f"{D0 + 1}:ord:store", 1), ("d", f"{D0 + 1}:rev:store", 1000),
                   ("d", f"{D0}:act:3", -1), ("d", f"{D0}:act:1", 1),
                   ("d", f"{D0 + 1}:act:2", 1)}
    assert cap > 3


def test_a_late_first_purchase_moves_the_new_customer_to_its_day() -> None:
    got = without_sections(step_kpi([purchase("p1", T0 + DAY_MS), purchase("p0", T0)]))
    assert ("d", f"{D0 + 1}:new", -1) in got and ("d", f"{D0}:new", 1) in got
    assert ("d", f"{D0}:act:1", 1) in got


def test_refund_counts_the_refunded_amount_only() -> None:
    got = without_sections(step_kpi([purchase("p1", T0, amount=3000),
                                    purchase("r1", T0 + DAY_MS, amount=1200, kind="refund")]))
    assert got == {("d", f"{D0 + 1}:ref:store", 1200)}


def test_ticket_lifecycle_settles_deadlines_breaches_and_first_response() -> None:
    # urgent: first response within 1 h, resolution within 8 h
    opened = ticket("t1", T0, "k1", "opened", "urgent")
    responded = ticket("t2", T0 + 3 * HOUR_MS, "k1", "responded", "urgent")
    resolved = ticket("t3", T0 + 5 * HOUR_MS, "k1", "resolved", "urgent")
    assert without_sections(step_kpi([opened])) == {
        ("g", "customers", 1), ("d", f"{D0}:top:email", 1), ("g", "open:urgent", 1)}
    assert without_sections(step_kpi([opened, responded])) == {
        ("d", f"{D0}:frc:email", 1), ("d", f"{D0}:frw:email", 3 * HOUR_MS),
        ("d", f"{D0}:sla:email", 1), ("d", f"{D0}:slb:email", 1)}
    assert without_sections(step_kpi([opened, responded, resolved])) == {
        ("d", f"{D0}:sla:email", 1), ("g", "open:urgent", -1)}


def test_resolving_without_a_response_settles_both_deadlines() -> None:
    opened = ticket("t1", T0, "k1", "opened", "normal", channel="chat")
    closed = ticket("t2", T0 + 80 * HOUR_MS, "k1", "closed", "normal", channel="chat")
    d = D0 + 3
    assert without_sections(step_kpi([opened, closed])) == {
        ("d", f"{d}:frc:chat", 1), ("d", f"{d}:frw:chat", 80 * HOUR_MS),
        ("d", f"{d}:sla:chat", 2), ("d", f"{d}:slb:chat", 2), ("g", "open:normal", -1)}


def test_reopen_counts_and_untracked_tickets_count_nothing() -> None:
    got = step_kpi([ticket("t1", T0, "k1", "opened"), ticket("t2", T0 + HOUR_MS, "k1", "closed"),
                    ticket("t3", T0 + DAY_MS, "k1", "reopened")])
    assert without_sections(got) == {("d", f"{D0 + 1}:tre:email", 1), ("g", "open:normal", 1)}
    assert without_sections(step_kpi([ticket("t1", T0, "k1", "opened"),
                                     ticket("t2", T0 + HOUR_MS, "k9", "resolved")])) == set()


def test_duplicates_and_rejections_count_nothing() -> None:
    s = survey("s1", T0, "nps", 10)
    state = apply(None, s, DEFAULT_RULES, 0).state
    assert apply(state, s, DEFAULT_RULES, 0).kpi == ()
    with pytest.raises(Rejected):
        apply(state, survey("s2", T0, "nps", 11), DEFAULT_RULES, 0)


# -- loyalty and churn sections (stand-ins: their values belong to those issues) --------------


@dataclasses.dataclass(frozen=True)
class Account:
    balance: int = 0
    lifetime_points: int = 0
    tier: Any = 0


@dataclasses.dataclass(frozen=True)
class Risk:
    level: str | None = None


def with_sections(state: CustomerState, **sections: Any) -> Any:
    """A state carrying loyalty/churn sections (an attribute bag when the real state has no
    such field yet)."""
    if set(sections) <= set(CustomerState.__struct_fields__):
        return msgspec.structs.replace(state, **sections)

    class Bag:
        def __getattr__(self, name: str) -> Any:
            return sections[name] if name in sections else getattr(state, name)
    return Bag()


BASE = CustomerState("c1", max_event_at=T0 - DAY_MS)


@pytest.mark.parametrize("event,before,after,expected", [
    # earning 120 (e.g. on a purchase): issued 120, outstanding +120
    (None, Account(50, 50), Account(170, 170),
     {("g", "points", 120), ("d", f"{D0}:pti", 120)}),
    # a redemption of 100: redeemed 100
    (Redemption("r", "c1", T0, "app", "RW", 100), Account(170, 170), Account(70, 170),
     {("g", "points", -100), ("d", f"{D0}:ptr", 100)}),
    # a refund claws back 30 (lifetime shrinks too): forfeited 30
    (purchase("r", T0, kind="refund"), Account(170, 170), Account(140, 140),
     {("g", "points", -30), ("d", f"{D0}:ptx", 30)}),
    # expiry of the whole balance noticed on a survey: forfeited 140
    (survey("s", T0, "nps", 9), Account(140, 170), Account(0, 170),
     {("g", "points", -140), ("d", f"{D0}:ptx", 140)}),
    # a survey bonus of 10 on the same event as an expiry of 60: issued 10, forfeited 60
    (survey("s", T0, "csat", 5), Account(60, 100), Account(10, 110),
     {("g", "points", -50), ("d", f"{D0}:pti", 10), ("d", f"{D0}:ptx", 60)}),
])
def test_points_issued_redeemed_forfeited_add_up_to_the_balance_change(
        event: Event | None, before: Account, after: Account, expected: set[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kpi, "_SECTIONS", ("loyalty",))
    b = with_sections(BASE, loyalty=before)
    a = with_sections(BASE, loyalty=after)
    got = {(d.bucket, d.field, d.delta) for d in kpi.deltas(b, a, event, DEFAULT_RULES, at=T0)
           if d.field.endswith(("points", "pti", "ptr", "ptx"))}
    assert got == expected


def test_tier_and_risk_transitions_move_one_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kpi, "_SECTIONS", ("loyalty", "churn"))
    ev = survey("s", T0, "nps", 9)
    tiers = getattr(DEFAULT_RULES.loyalty, "tiers", ())
    t0, t1 = (tiers[0].name, tiers[1].name) if len(tiers) > 1 else ("0", "1")
    b = with_sections(BASE, loyalty=Account(tier=0), churn=Risk("low"))
    a = with_sections(BASE, loyalty=Account(tier=1), churn=Risk("high"))
    got = {(d.field, d.delta) for d in kpi.deltas(b, a, ev, DEFAULT_RULES) if d.bucket == "g"}
    assert got == {(f"tier:{t0}", -1), (f"tier:{t1}", 1), ("risk:low", -1), ("risk:high", 1)}
    # a new customer has nothing to move from; an absent section counts nowhere
    new = with_sections(CustomerState("c2"), loyalty=None, churn=None)
    got = {(d.field, d.delta) for d in kpi.deltas(new, a, ev, DEFAULT_RULES) if d.bucket == "g"}
    assert got == {("customers", 1), (f"tier:{t1}", 1), ("risk:high", 1)}
    gone = with_sections(BASE, loyalty=None, churn=None)
    got = {(d.field, d.delta) for d in kpi.deltas(b, gone, ev, DEFAULT_RULES) if d.bucket == "g"}
    assert got == {(f"tier:{t0}", -1), ("risk:low", -1)}


def test_a_change_without_an_event_needs_its_time() -> None:
    with pytest.raises(ValueError, match="at="):
        kpi.deltas(BASE, BASE, None, DEFAULT_RULES)
    assert kpi.deltas(BASE, BASE, None, DEFAULT_RULES, at=T0) == ()


# -- windows -----------------------------------------------------------------------------------


def test_window_sums_the_last_w_days_and_lists_what_no_window_reads() -> None:
    w = DEFAULT_RULES.kpi.window_days
    a = D0
    fields = {f"{a}:ord:web": 1, f"{a - w + 1}:ord:web": 2, f"{a - w}:ord:web": 4,
              f"{a + 1}:ord:web": 8, f"{a - 2 * w}:ord:web": 16, f"{a - 2 * w + 1}:new": 32,
              f"{a - 1}:sv:nps:promoter:support": 3}
    counts, stale = kpi.window({k.encode(): str(v).encode() for k, v in fields.items()},
                               T0 + 23 * HOUR_MS, DEFAULT_RULES)
    assert counts == {("ord", "web"): 3, ("sv", "nps", "promoter", "support"): 3,
                      ("active",): 0, ("start",): 0, ("new",): 0, ("lost",): 0}
    assert stale == [f"{a - 2 * w}:ord:web".encode()]


def test_window_counts_customer_sets_from_segments() -> None:
    w = DEFAULT_RULES.kpi.window_days
    a = D0
    s = a - w  # the window's start day
    fields = {
        f"{a - 5}:act:{2 * w}": 1,  # bought 5 days ago, nothing since: active
        f"{a - w + 1}:act:{w}": 1,  # bought on the window's first day, next purchase later
        f"{s}:act:3": 1,  # active at the start (bought on it), bought again 3 days later
        f"{s - 10}:act:{2 * w}": 1,  # active at the start, never bought again: lost
        f"{s - 10}:act:5": 1,  # its next purchase was before the start: not active there
        f"{s - w + 1}:act:{w + 5}": 1,  # active at the start, bought again on day a - w + 6
        f"{s - w}:act:{2 * w}": 1,  # bought w days before the start: not active at it
    }
    counts, _ = kpi.window(fields, T0, DEFAULT_RULES)
    assert (counts[("active",)], counts[("start",)], counts[("lost",)]) == (2, 3, 1)


def test_partitions_combine_by_adding() -> None:
    one = {("ord", "web"): 2, ("active",): 1}
    two = {("ord", "web"): 3, ("ord", "app"): 1, ("active",): 4}
    assert kpi.combine([one, two]) == {("ord", "web"): 5, ("ord", "app"): 1, ("active",): 5}


# -- properties --------------------------------------------------------------------------------

LATE = parse_rules({"allowed_lateness_ms": 30 * DAY_MS})


def reference_segments(days: Iterable[int], cap: int) -> Counter[str]:
    ds = sorted(set(days))
    return Counter(f"{d}:act:{min(n - d, cap) if n is not None else cap}"
                   for d, n in zip(ds, [*ds[1:], None], strict=True))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 240), st.integers(0, 23),
                          st.integers(0, 30 * 24 - 1)), min_size=1, max_size=25))
def test_segments_and_first_purchase_match_the_final_purchase_days(
        raw: list[tuple[int, int, int]]) -> None:
    """Whatever the arrival order (each event at most the lateness behind the newest), the
    counters equal the segments of the final purchase-day set, and `new` its first day."""
    events = [purchase(f"p{i}", T0 + d * DAY_MS + h * HOUR_MS) for i, (d, h, _) in enumerate(raw)]
    jitter = {e.event_id: j * HOUR_MS for e, (_, _, j) in zip(events, raw, strict=True)}
    arrival = sorted(events, key=lambda e: e.occurred_at + jitter[e.event_id])
    _, agg = run(arrival, LATE)
    days = {day_of(e.occurred_at) for e in events}
    cap = 2 * LATE.kpi.window_days
    assert Counter({k: v for k, v in agg.days.items() if ":act:" in k}) == \
        reference_segments(days, cap)
    assert {k: v for k, v in agg.days.items() if k.endswith(":new")} == {f"{min(days)}:new": 1}


def simulated(customers: int, days: int, seed: int) -> list[Event]:
    sim = Simulator(SimConfig(start_ms=T0, customers=customers, seed=seed,
                              acquisition_days=days))
    return [r.event for r in sim.events_until(T0 + days * DAY_MS) if r.event is not None]


def test_counters_agree_with_the_final_states_on_simulated_traffic() -> None:
    events = simulated(150, 120, seed=3)
    states, agg = run(events)
    g = agg.gauges
    assert g.get("customers") == len(states)
    opened = Counter(o.priority for s in states.values() for o in s.open_tickets)
    assert {k[5:]: v for k, v in g.items() if k.startswith("open:")} == dict(opened)
    balances = sum(s.loyalty.balance for s in states.values() if s.loyalty is not None)
    assert g.get("points", 0) == balances
    flows = sum(v * (1 if k.endswith("pti") else -1) for k, v in agg.days.items()
                if k.endswith(("pti", "ptr", "ptx")))
    assert flows == balances  # issued - redeemed - forfeited, over all days
    tiers = Counter(kpi._tier_name(s.loyalty.tier, DEFAULT_RULES) for s in states.values()
                    if s.loyalty is not None)
    assert {k[5:]: v for k, v in g.items() if k.startswith("tier:")} == dict(tiers)
    risks = Counter(s.churn.level for s in states.values() if getattr(s, "churn", None))
    assert {k[5:]: v for k, v in g.items() if k.startswith("risk:")} == dict(risks)
    firsts = Counter(f"{day_of(s.first_purchase_at)}:new" for s in states.values()
                     if s.first_purchase_at is not None)
    assert {k: v for k, v in agg.days.items() if k.endswith(":new")} == dict(firsts)
    cap = 2 * DEFAULT_RULES.kpi.window_days
    segments: Counter[str] = Counter()
    for s in states.values():
        segments += reference_segments((b.day for b in s.days if b.orders), cap)
    assert Counter({k: v for k, v in agg.days.items() if ":act:" in k}) == segments
    responses = sum(v for k, v in agg.days.items() if ":sv:" in k)
    assert responses == sum(s.surveys_answered for s in states.values())


def test_counters_do_not_depend_on_how_the_topics_interleave() -> None:
    """Each topic keeps its order; two different interleavings give the same counters
    (apart from loyalty and churn levels, whose confluence is their modules' business; the
    test above ties those counters to the final states)."""
    events = simulated(120, 90, seed=5)
    by_kind: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_kind[e.event_kind].append(e)

    def interleave(seed: int) -> list[Event]:
        rng = random.Random(seed)
        queues = {k: list(v) for k, v in by_kind.items()}
        out = []
        while queues:
            # each topic may run up to a day ahead of the others (well within the lateness)
            k = rng.choice(sorted(queues))
            lead = min(q[0].occurred_at for q in queues.values())
            if queues[k][0].occurred_at > lead + DAY_MS:
                k = min(queues, key=lambda q: queues[q][0].occurred_at)
            out.append(queues[k].pop(0))
            if not queues[k]:
                del queues[k]
        return out

    def comparable(agg: Agg) -> tuple[dict[str, int], dict[str, int]]:
        skip = ("pti", "ptr", "ptx")
        return ({k: v for k, v in agg.days.items() if not k.endswith(skip)},
                {k: v for k, v in agg.gauges.items()
                 if not k.startswith(("points", "tier:", "risk:"))})

    assert comparable(run(interleave(1))[1]) == comparable(run(interleave(2))[1])


# -- rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize("section,message", [
    ({"window_days": 0}, "kpi.window_days: must be between 1 and 180"),
    ({"window_days": 181}, "kpi.window_days: must be between 1 and 180"),
    ({"channels": ["Web"]}, "kpi.channels[0]: must be 1-40 lower-case"),
    ({"channels": ["web:eu"]}, "kpi.channels[0]: must be 1-40 lower-case"),
    ({"channels": ["web", "web"]}, "kpi.channels: must not list a name twice"),
    ({"touchpoints": ["other"]}, "kpi.touchpoints: must not list 'other'"),
    ({"lifespan_cap_days": 0}, "kpi.lifespan_cap_days: must be between 1 and 36500"),
])
def test_bad_kpi_rules_name_the_field(section: dict[str, Any], message: str) -> None:
    with pytest.raises(RulesError) as err:
        parse_rules({"kpi": section})
    assert str(err.value).startswith(message)


def test_unlisted_channels_and_touchpoints_are_other() -> None:
    k = parse_rules({"kpi": {"channels": ["web"], "touchpoints": ["support"]}}).kpi
    assert (k.channel("web"), k.channel("store"), k.touchpoint("support"),
            k.touchpoint("checkout")) == ("web", "other", "support", "other")
