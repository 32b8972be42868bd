"""Property tests of the customer state: confluence, idempotence under duplicates, windows.
The histories and the shell's loop come from ``fixtures.py`` (how they are drawn is said there).
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from processors import wire
from processors.customer import apply, apply_state, view
from processors.errors import Rejected
from processors.rules import DEFAULT_RULES
from processors.state import WINDOWS_DAYS, CustomerState
from processors.timeutil import DAY_MS, day_of
from schemas.events import Event, Purchase
from tests.unit.processors.fixtures import (
    SETTINGS,
    SHORT_LATENESS,
    History,
    histories,
    interleave,
    process,
)


def _core(state: CustomerState | None) -> CustomerState | None:
    # churn, engagement and referral record what was alerted, sent or decided when:
    # order-dependent by design (test_churn*.py, engagement/test_engagement_properties.py;
    # a signup applied after a purchase dated after it does not go back to it:
    # tests/unit/processors/referral/)
    return None if state is None else msgspec.structs.replace(state, loyalty=None, churn=None,
                                                              engagement=None, referral=None)


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
    # balance when it is applied): loyalty/test_loyalty_properties.py checks loyalty
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
    assert alone.state is None or (alone.state.loyalty is None and alone.state.churn is None
                                   and alone.state.engagement is None)
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
    for kind in range(5):  # the dedup window is bounded per event kind
        assert sum(1 for x in s.seen if x.kind == kind) <= h.rules.dedup_window_max
    assert len(s.open_tickets) <= h.rules.support.max_open_tickets
    assert len(s.csat) <= h.rules.surveys.rolling_answers >= len(s.ces)
