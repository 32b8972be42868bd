"""Properties of the engagement layer over random histories (hypothesis), with the shell
loop of ``fixtures.py``: the same outputs and record whatever the batch split and the tick
cadence; the occasion messages whatever the topics' interleaving; every occasion once;
nothing early (``fixtures`` asserts it on every reaction)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors.engagement.layer import LAYER
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.timeutil import DAY_MS
from tests.unit.processors.engagement.fixtures import Run, apply, load, process, store, tick
from tests.unit.processors.fixtures import SETTINGS, TIGHT, History, histories, interleave

LATER = 800 * DAY_MS  # ticked after the last event: birthdays, anniversaries, silence


def _no_limit(r: Rules) -> Rules:
    return parse_rules({"allowed_lateness_ms": r.allowed_lateness_ms,
                        "dedup_window_max": r.dedup_window_max,
                        "support": {"max_open_tickets": r.support.max_open_tickets},
                        "surveys": {"rolling_answers": r.surveys.rolling_answers},
                        "engagement": {"min_days_between_messages": 0}})


NO_LIMIT = st.sampled_from([_no_limit(DEFAULT_RULES), _no_limit(TIGHT)])


def _until(h: History) -> int:
    return max(e.occurred_at for e in h.events) + LATER


def _out(run: Run) -> list[dict[str, Any]]:
    return run.engagement


@SETTINGS
@given(h=histories(), data=st.data())
def test_batch_splits_change_nothing(h: History, data: st.DataObject) -> None:
    n = len(h.events)
    cuts = frozenset(data.draw(st.sets(st.integers(0, n - 1))))
    whole = process(list(h.events), h.rules, until=_until(h))
    split = process(list(h.events), h.rules, until=_until(h), cuts=cuts)
    assert _out(split) == _out(whole)
    assert split.kpi == whole.kpi
    assert (split.state is None) == (whole.state is None)
    if whole.state is not None and split.state is not None:
        assert split.state.engagement == whole.state.engagement
        assert load(store(whole.state)) == whole.state


@SETTINGS
@given(h=histories(), data=st.data())
def test_extra_ticks_change_nothing(h: History, data: st.DataObject) -> None:
    """The scanner may come at any time: it only runs what is due, at its due time."""
    whole = process(list(h.events), h.rules, until=_until(h))
    run = Run()
    for ev in h.events:
        if run.state is not None:
            for _ in range(data.draw(st.integers(0, 2))):
                gap = data.draw(st.sampled_from([0, DAY_MS, 40 * DAY_MS, 400 * DAY_MS]))
                tick(run, h.rules, min(ev.occurred_at, (run.state.max_event_at or 0) + gap))
            tick(run, h.rules, ev.occurred_at)
        apply(run, ev, h.rules)
    tick(run, h.rules, _until(h))
    assert _out(run) == _out(whole)


@SETTINGS
@given(h=histories())
def test_every_occasion_once_and_the_gauge_adds_up(h: History) -> None:
    run = process(list(h.events), h.rules, until=_until(h))
    ids = [d.get("message_id") or d["change_id"] for d in run.engagement]
    assert len(ids) == len(set(ids))
    occasions = [(d["kind"], d["occasion"]) for d in run.messages()]
    assert len(occasions) == len(set(occasions))
    seg = {}
    for k in run.kpi:
        if k.field.startswith("seg:"):
            seg[k.field] = seg.get(k.field, 0) + k.delta
    if run.state is None:
        assert not seg
        return
    current = run.state.engagement.segment
    assert {f: v for f, v in seg.items() if v} == ({f"seg:{current}": 1} if current else {})
    # a replay of the same history sends the same records
    assert process(list(h.events), h.rules, until=_until(h)).engagement == run.engagement


@SETTINGS
@given(h=histories(rules_from=NO_LIMIT), seed=st.integers(0, 2**32 - 1))
def test_occasions_do_not_depend_on_the_interleaving(h: History, seed: int) -> None:
    """Birthdays, anniversaries and tier upgrades (without the rate limit, which depends on
    the nudge, which depends on the path of churn levels: README "Determinism") are the
    same messages in any interleaving of the topics within the lateness."""
    kinds = ("birthday", "anniversary", "tier_upgrade")

    def ids(run: Run) -> set[str]:
        return {m["message_id"] for m in run.messages() if m["kind"] in kinds}

    true = process(list(h.events), h.rules, until=_until(h))
    other = process(interleave(h, random.Random(seed)), h.rules, until=_until(h))
    assert ids(other) == ids(true)
    if true.state is not None and other.state is not None:
        final = _until(h)

        a, b = LAYER.view_fields(true.state, h.rules, final), \
            LAYER.view_fields(other.state, h.rules, final)
        if true.state.churn is not None and other.state.churn is not None \
                and true.state.churn.level == other.state.churn.level:
            assert a["segment"] == b["segment"] and a["segment_tags"] == b["segment_tags"]
