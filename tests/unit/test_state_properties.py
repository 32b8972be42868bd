"""Property tests of the customer state: confluence, idempotence under duplicates, windows.

Histories are generated in a "true" order whose disorder stays within the allowed lateness:
event i occurs at ``base_i - jitter_i`` with ``base`` non-decreasing and ``0 <= jitter <=
lateness``. Each topic is that order's subsequence. An interleaving of the topics is drawn
by a random merge that only takes a topic's next event when it is at most ``lateness``
newer than every event still to come; the topic holding the earliest remaining event of the
true order always qualifies, so every such merge exists and nothing in it is too late.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors import wire
from processors.customer import Step, apply, apply_state, view
from processors.errors import Rejected
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import WINDOWS_DAYS, CustomerState
from processors.timeutil import DAY_MS, HOUR_MS, day_of
from schemas.events import Event, Purchase, Redemption, SupportTicket, Survey

T0 = 1_704_067_200_000
TIGHT = parse_rules({"allowed_lateness_ms": DAY_MS // 2, "dedup_window_max": 3,
                     "support": {"max_open_tickets": 2}, "surveys": {"rolling_answers": 2}})
# dedup cap above the history length: an id evicted by the cap is the documented limit of
# duplicate detection (tests/unit/test_customer.py), not something to test here
SHORT_LATENESS = parse_rules({"allowed_lateness_ms": DAY_MS // 2})
RULES = st.sampled_from([DEFAULT_RULES, TIGHT])
GAPS = [0, 1, 60_000, HOUR_MS, 13 * HOUR_MS, DAY_MS, 3 * DAY_MS, 40 * DAY_MS, 365 * DAY_MS,
        400 * DAY_MS]
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class History:
    rules: Rules
    events: tuple[Event, ...]  # the true order (also a valid processing order)

    def topics(self) -> list[list[Event]]:
        by: dict[type, list[Event]] = {}
        for ev in self.events:
            by.setdefault(type(ev), []).append(ev)
        return list(by.values())


@st.composite
def histories(draw: st.DrawFn, max_events: int = 40,
              rules_from: st.SearchStrategy[Rules] = RULES) -> History:
    rules = draw(rules_from)
    lateness = rules.allowed_lateness_ms
    n = draw(st.integers(1, max_events))
    base = T0
    events: list[Event] = []
    for i in range(n):
        base += draw(st.sampled_from(GAPS))
        t = base - draw(st.one_of(st.just(0), st.integers(0, lateness)))
        eid, c = f"e{i}", "c1"
        kind = draw(st.sampled_from(["purchase", "purchase", "ticket", "survey", "redemption"]))
        ev: Event
        if kind == "purchase":
            ev = Purchase(eid, c, t, "pos", f"o{i}", "store",
                          draw(st.sampled_from(["purchase", "purchase", "refund"])),
                          draw(st.integers(0, 5_000)),
                          draw(st.sampled_from(["EUR", "EUR", "USD", "JPY", "XXX"])))
        elif kind == "ticket":
            ev = SupportTicket(eid, c, t, "crm", draw(st.sampled_from(["T1", "T2", "T3"])),
                               draw(st.sampled_from(["opened", "responded", "resolved",
                                                     "reopened", "closed"])),
                               draw(st.sampled_from(["low", "normal", "high", "urgent"])),
                               "email", "billing",
                               draw(st.none() | st.floats(-1, 1, allow_nan=False)))
        elif kind == "survey":
            skind = draw(st.sampled_from(["nps", "csat", "ces"]))
            lo, hi = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}[skind]
            ev = Survey(eid, c, t, "survey-tool", f"s{i}", skind,  # type: ignore[arg-type]
                        draw(st.integers(lo, hi)), "checkout")
        else:
            ev = Redemption(eid, c, t, "app", "r1", 100)
        events.append(ev)
    return History(rules, tuple(events))


def interleave(h: History, rnd: random.Random) -> list[Event]:
    lateness = h.rules.allowed_lateness_ms
    queues = [list(reversed(q)) for q in h.topics()]  # pop() from the end = next event
    out: list[Event] = []
    while any(queues):
        floor = min(e.occurred_at for q in queues for e in q)
        safe = [q for q in queues if q and q[-1].occurred_at <= floor + lateness]
        out.append(rnd.choice(safe).pop())
    return out


@dataclass
class Run:
    state: CustomerState | None
    accepted: list[Event]
    rejected: dict[str, str]  # event_id -> reason


def process(events: list[Event], rules: Rules, cuts: set[int] = frozenset(),  # type: ignore[assignment]
            watermark_per_batch: bool = False,
            transition: Callable[[CustomerState | None, Event, Rules, int], Step] = apply,
            ) -> Run:
    """The shell's loop: batches cut before the given indexes, the state stored through
    ``wire`` between batches, the watermark = max event time seen - lateness (advanced per
    event like the shell, or only at batch start)."""
    run = Run(None, [], {})
    high = 0
    now = -1
    for i, ev in enumerate(events):
        if i in cuts and run.state is not None:
            run.state = wire.loads(wire.dumps(run.state))
        if not watermark_per_batch or i in cuts or i == 0:
            now = high - rules.allowed_lateness_ms
        high = max(high, ev.occurred_at)
        if not watermark_per_batch:
            now = high - rules.allowed_lateness_ms
        try:
            step = transition(run.state, ev, rules, now)
        except Rejected as exc:
            run.rejected[ev.event_id] = exc.reason
            continue
        assert not step.duplicate  # outputs (ledger entries): test_loyalty_properties.py
        run.state = step.state
        run.accepted.append(ev)
    return run


def _core(state: CustomerState | None) -> CustomerState | None:
    # churn records what was alerted when: order-dependent by design (test_churn*.py)
    return None if state is None else msgspec.structs.replace(state, loyalty=None, churn=None)


@SETTINGS
@given(h=histories(), seed=st.integers(0, 2**32), cuts=st.sets(st.integers(0, 40)),
       per_batch=st.booleans())
def test_confluence_any_interleaving_and_batch_split(
    h: History, seed: int, cuts: set[int], per_batch: bool
) -> None:
    ref = process(list(h.events), h.rules)
    assert "too_late" not in ref.rejected.values()
    other = process(interleave(h, random.Random(seed)), h.rules, cuts, per_batch)
    assert other.rejected == ref.rejected  # rejections depend on their own topic only
    # the points balance depends on the interleaving (a redemption is judged against the
    # balance when it is applied): tests/unit/test_loyalty_properties.py checks loyalty
    assert _core(other.state) == _core(ref.state)
    if ref.state is not None:
        assert wire.loads(wire.dumps(ref.state)) == ref.state


@SETTINGS
@given(h=histories(), seed=st.integers(0, 2**32), cuts=st.sets(st.integers(0, 40)))
def test_state_only_transition_keeps_the_same_customer_state(
    h: History, seed: int, cuts: set[int]
) -> None:
    """``apply_state`` (the engine's STATE_ONLY transitions, what bench/ measures as the state
    engine) is ``apply`` minus points, churn and KPIs: same rejections, same customer state."""
    events = interleave(h, random.Random(seed))
    full = process(events, h.rules, cuts)
    alone = process(events, h.rules, cuts, transition=apply_state)
    assert alone.rejected == full.rejected
    assert alone.accepted == full.accepted
    assert alone.state is None or (alone.state.loyalty is None and alone.state.churn is None)
    assert alone.state == _core(full.state)


@SETTINGS
@given(h=histories(rules_from=st.sampled_from([DEFAULT_RULES, SHORT_LATENESS])),
       data=st.data())
def test_duplicates_within_lateness_never_change_state(h: History, data: st.DataObject) -> None:
    rules = h.rules
    ref = process(list(h.events), rules)
    accepted = {ev.event_id for ev in ref.accepted}
    stream: list[Event] = list(h.events)
    for ev in h.events:
        if ev.event_id not in accepted or not data.draw(st.booleans()):
            continue
        start = stream.index(ev) + 1
        # later positions where the copy is still within lateness of every event before it
        ok, high = [], max(e.occurred_at for e in stream[:start])
        for pos in range(start, len(stream) + 1):
            if ev.occurred_at >= high - rules.allowed_lateness_ms:
                ok.append(pos)
            if pos < len(stream):
                high = max(high, stream[pos].occurred_at)
        stream.insert(data.draw(st.sampled_from(ok)), ev)
    state: CustomerState | None = None
    seen: set[str] = set()
    high = 0
    for ev in stream:
        high = max(high, ev.occurred_at)
        try:
            step = apply(state, ev, rules, high - rules.allowed_lateness_ms)
        except Rejected as exc:
            assert exc.reason != "too_late" and ev.event_id not in accepted
            continue
        if ev.event_id in seen:
            assert step.duplicate and step.state is state
        else:
            assert not step.duplicate
        seen.add(ev.event_id)
        state = step.state
    assert state == ref.state


def _brute_force(accepted: list[Event], as_of: int) -> dict[str, Any]:
    purchases = [e for e in accepted if isinstance(e, Purchase) and e.kind == "purchase"]
    out: dict[str, Any] = {"purchase_count": len(purchases),
                           "purchase_days": len({day_of(e.occurred_at) for e in purchases})}
    for n in WINDOWS_DAYS:
        in_window = [e for e in purchases if 0 <= day_of(as_of) - day_of(e.occurred_at) < n]
        out[f"orders_{n}d"] = len(in_window)
    return out


@SETTINGS
@given(h=histories(), after=st.sampled_from([0, 1, DAY_MS, 29 * DAY_MS, 200 * DAY_MS]),
       before=st.booleans())
def test_windows_are_exact_and_never_exceed_totals(h: History, after: int, before: bool) -> None:
    run = process(list(h.events), h.rules)
    if run.state is None:
        return
    s = run.state
    assert s.max_event_at is not None
    as_of = s.max_event_at - h.rules.allowed_lateness_ms if before else s.max_event_at + after
    r = view(s, h.rules, as_of)
    for key, value in _brute_force(run.accepted, as_of).items():
        assert r[key] == value, key
    for n in WINDOWS_DAYS:
        assert 0 <= r[f"orders_{n}d"] <= s.purchase_count
        assert 0 <= r[f"spend_{n}d_minor"] <= s.gross_spend_minor
        assert 0 <= r[f"refunds_{n}d_minor"] <= s.refunds_minor
    assert r["orders_30d"] <= r["orders_90d"] <= r["orders_365d"]
    assert s.total_spend_minor >= 0
    for kind in range(4):  # the dedup window is bounded per event kind
        assert sum(1 for x in s.seen if x.kind == kind) <= h.rules.dedup_window_max
    assert len(s.open_tickets) <= h.rules.support.max_open_tickets
    assert len(s.csat) <= h.rules.surveys.rolling_answers >= len(s.ces)
