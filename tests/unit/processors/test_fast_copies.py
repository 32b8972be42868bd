"""Every hand-inlined fast copy in ``processors/`` pinned to its reference, as
``test_wire_reference.py`` pins ``wire.dumps`` / ``loads`` (and the loyalty record's wire form)
and ``tests/unit/schemas/test_codec_fastpath.py`` pins the codec's fast decoders.

A fast copy repeats a reference's operations inline on a hot path (the comment beside it
says "inlined" or "fast path"); here each one is compared with its reference on many
inputs, exactly where the copy repeats the operations in order, so that a change to one
side without the other fails:

* churn: ``_Profile.z`` (the level search) vs ``_Profile.total`` / ``_add_up`` (the score):
  within a few ulps, not bit for bit (``c_const`` adds the constant signals in another order);
  the search's inlined sigmoid (``levels._first_true``) vs ``model._sigmoid``, through the
  exact level change it finds;
* loyalty: ``_Book.add``'s tier name vs ``derived._tier_name``; ``expiry._due``'s inlined
  ``_tier_due`` / ``expires_at`` vs a reference built from them; ``earning._purchase``'s one
  record build vs ``ledger._credit`` (and ``_touch``);
* customer: ``_remember``'s no-drop shortcut vs its loop.
"""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from processors.churn.explain import score
from processors.churn.levels import level_after, next_check_at
from processors.churn.model import _Profile
from processors.customer import _remember
from processors.loyalty.derived import _derived, _tier, _tier_name
from processors.loyalty.earning import _cut, _formula, _purchase, _weigh
from processors.loyalty.earning import _remember as _remember_order
from processors.loyalty.expiry import _due, expires_at
from processors.loyalty.ledger import _Book, _credit
from processors.loyalty.records import LoyaltyState
from processors.loyalty.tiers import _evaluate, _tier_due
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import REFERRAL_KIND, Seen
from processors.timeutil import DAY_MS
from tests.builders import purchase
from tests.unit.processors.fixtures import SETTINGS, T0, History, histories, process

LATER = st.sampled_from([0, 1, DAY_MS, 17 * DAY_MS, 90 * DAY_MS, 400 * DAY_MS, 3000 * DAY_MS])


# -- churn ----------------------------------------------------------------------------------


@SETTINGS
@given(h=histories(), later=LATER)
def test_the_level_searchs_z_is_the_scores_sum(
        h: History, later: int) -> None:
    rules = h.rules
    state = process(list(h.events), rules).state
    if state is None:
        return
    p = _Profile(state, state.churn, rules)
    start = state.max_event_at or T0
    for t in (start, start + later, start + later // 3, start + 7 * DAY_MS + 1):
        z, total = p.z(t), p.total(t)
        assert total == p.contributions(t)[0]  # one path (_add_up): to the last bit
        # z adds the same terms in another order (constants pre-summed): not always the
        # same last bit (found by this test; main behaves the same), never more than that
        assert abs(z - total) <= 8 * math.ulp(max(abs(z), abs(total), 1.0)), (z, total)


@SETTINGS
@given(h=histories())
def test_the_searchs_inlined_sigmoid_finds_the_change_the_reference_scores(
        h: History) -> None:
    """``_first_true`` decides with its own copy of ``_sigmoid``; ``score`` uses the
    reference: the level must hold just before the time found and change at it (as
    tests/unit/processors/churn/test_churn_properties.py checks on churn's own histories)."""
    rules = h.rules
    state = process(list(h.events), rules).state
    if state is None or state.churn is None:
        return
    due = next_check_at(state.churn, state, rules)
    if due is None:
        return
    level = state.churn.level
    assert level_after(level, score(state, rules, due - 1).score, rules.churn) == level
    assert level_after(level, score(state, rules, due).score, rules.churn) != level


# -- loyalty --------------------------------------------------------------------------------

OTHER = parse_rules({"loyalty": {"expiry_notice_days": 0, "expiry_months": 1,
                                 "downgrade_grace_days": 0}})


def test_the_ledgers_tier_name_is_tier_name() -> None:
    for rules in (DEFAULT_RULES, OTHER):
        d = _derived(rules)
        for tier in range(len(rules.loyalty.tiers) + 3):  # past the top: rules lost tiers
            ly = LoyaltyState(balance=5, tier=tier)
            book = _Book("c1", d)
            book.add(ly, "e", 1, "earn", "r", T0, "e")
            assert book.out[0].tier_after == _tier_name(ly, d)
        book = _Book("c1", d)
        book.add(None, "e", 0, "earn", "r", T0, "e")
        assert book.out[0].tier_after is None and _tier_name(None, d) is None


def _due_reference(ly: LoyaltyState, rules: Rules, tier_bound: int, expiry_bound: int
                   ) -> tuple[int, int] | None:
    """``_due`` from ``_tier_due`` and ``expires_at``: the least ``(at, what)`` in bounds."""
    d = _derived(rules)
    found = []
    if (t := _tier_due(ly, d)) is not None and t <= tier_bound:
        found.append((t, 0))
    if (x := expires_at(ly, rules.loyalty)) is not None:
        notice = rules.loyalty.expiry_notice_days * DAY_MS
        if not ly.noticed and notice and x - notice <= expiry_bound:
            found.append((x - notice, 1))
        if x <= expiry_bound:
            found.append((x, 2))
    return min(found) if found else None


def test_due_is_its_reference() -> None:
    rnd = random.Random(13)
    for rules in (DEFAULT_RULES, OTHER):
        for _ in range(3000):
            last = T0 + rnd.randrange(-400, 400) * DAY_MS + rnd.randrange(DAY_MS)
            ly = LoyaltyState(
                balance=rnd.choice([-5, 0, 1, 900]), tier=rnd.randrange(4),
                qualified_until=rnd.choice([None, (T0 // DAY_MS) + rnd.randrange(-60, 400)]),
                last_activity_at=last, noticed=rnd.random() < 0.3)
            tb = T0 + rnd.randrange(-500, 900) * DAY_MS
            eb = rnd.choice([tb, T0 + rnd.randrange(-500, 900) * DAY_MS, 2**62])
            assert _due(ly, _derived(rules), tb, eb) == _due_reference(ly, rules, tb, eb)


def test_purchases_one_record_build_is_credit_remember_and_cut() -> None:
    rnd = random.Random(5)
    for rules in (DEFAULT_RULES, OTHER):
        d = _derived(rules)
        ly: LoyaltyState | None = None
        t = T0
        for i in range(300):
            t += rnd.choice([0, 1, DAY_MS, 9 * DAY_MS, 70 * DAY_MS])
            ev = purchase(f"p{i}", t, rnd.randrange(0, 90_000))
            clock = t
            days = ()  # no spend history: the tier evaluation is the same on both sides
            got = _purchase(ly, ev, rules, d, _Book("c1", d), days, clock)
            base = _evaluate(ly or LoyaltyState(last_activity_at=t), days, clock, d,
                             _Book("c1", d), ev.event_id, t)
            w = _weigh(ev, rules, d)
            points, _ = _formula(w, _tier(base, d), d)
            orders = _remember_order(base.orders, ev, w, points, d)
            want = _credit(base, points, t)._replace(orders=orders[_cut(orders, clock, d.lr):])
            assert got == want
            ly = got


# -- customer -------------------------------------------------------------------------------


def _remember_reference(seen: tuple[Seen, ...], new: Seen, kind_max: tuple[int, ...],
                        lateness: int, cap: int, referral_lateness: int) -> tuple[Seen, ...]:
    """``_remember`` without its shortcut: insert, then per kind expire and cap."""
    items = sorted([*seen, new])
    kept: list[Seen] = []
    counts = [0] * 6
    for s in reversed(items):
        late = referral_lateness if s.kind == REFERRAL_KIND else lateness
        if s.at >= kind_max[s.kind] - late and counts[s.kind] < cap:
            counts[s.kind] += 1
            kept.append(s)
    return tuple(reversed(kept))


def test_remembers_shortcut_is_its_loop() -> None:
    rnd = random.Random(7)
    for _ in range(3000):
        lateness, cap = rnd.choice([DAY_MS, 7 * DAY_MS]), rnd.choice([1, 3, 50])
        ref_late = lateness + rnd.choice([0, DAY_MS, 30 * DAY_MS])
        seen: tuple[Seen, ...] = ()
        km = [0, 0, 0, 0, 0, 0]
        for key in range(rnd.randrange(9)):
            s = Seen(T0 + rnd.randrange(0, 10 * DAY_MS), key, rnd.randrange(6))
            late = ref_late if s.kind == REFERRAL_KIND else lateness
            if km[s.kind] and s.at < km[s.kind] - late:
                continue  # too late: apply never remembers it
            km[s.kind] = max(km[s.kind], s.at)
            clocks = (km[0], km[1], km[2], km[3], km[4], km[5])
            lates = (lateness,) * 5 + (ref_late,)
            assert _remember(seen, s, clocks, lates, cap) == _remember_reference(
                seen, s, clocks, lateness, cap, ref_late)
            seen = _remember_reference(seen, s, clocks, lateness, cap, ref_late)
