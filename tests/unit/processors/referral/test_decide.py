"""The referral programme's decisions (processors/referral/decide.py), guard by guard.

Each side's decision is a function of that customer's state and one event; the states here
are built with just the fields the programme reads."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from processors.profile import Profile
from processors.referral import decide as d
from processors.referral import record
from processors.referral.record import CLAIMED, CLAWED, EMPTY, NONE, REFUSED, REWARDED
from processors.rules import DEFAULT_RULES, ReferralRules, Rules
from processors.timeutil import DAY_MS
from schemas.events import CLAIM, CLAWBACK, CONFIRMED, TO_REFERRER, Referral
from schemas.events import REFUSED as REFUSED_KIND
from tests.builders import customer, purchase
from tests.unit.processors.referral.fixtures import state

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
C, R = "C00123", "C00045"
RULES = DEFAULT_RULES


def referred(**kw: Any) -> Any:
    """C, who signed up at T0 through R's invitation."""
    kw.setdefault("profile", Profile(signup_at=T0, referred_by=R))
    return state(C, **kw)


def rules(**kw: Any) -> Rules:
    return replace(DEFAULT_RULES, referral=replace(ReferralRules(), **kw))


def buy(t: int, amount: int = 2500, order: str = "o1", eid: str = "p1", **kw: Any) -> Any:
    return purchase(eid, t, amount, cid=C, order=order, **kw)


def refund(t: int, amount: int, order: str = "o1", eid: str = "r1") -> Any:
    return purchase(eid, t, amount, kind="refund", cid=C, order=order)


def referral(kind: str, t: int = T0 + DAY_MS, order: str = "o1", reason: str | None = None,
             referred: str = C) -> Any:
    to = R if kind in TO_REFERRER else referred
    return Referral(f"referral:{referred}:{order}:{kind}", to, t, "pulse", kind,  # type: ignore[arg-type]
                    R, referred, order, reason)


# -- the referred customer's first qualifying purchase (table-driven) -------------------------

PURCHASES: list[tuple[str, Any, Any, Rules, int | None, str | None]] = [
    # (what, state, purchase, rules, status after (None: no record), words in the entry)
    ("qualifies: enough, within the window, new", referred(), buy(T0 + DAY_MS), RULES,
     CLAIMED, None),
    ("exactly the minimum qualifies", referred(), buy(T0 + DAY_MS, 2000), RULES, CLAIMED, None),
    ("the last moment of the window qualifies", referred(), buy(T0 + 30 * DAY_MS), RULES,
     CLAIMED, None),
    ("too small: waits for a bigger one", referred(), buy(T0 + DAY_MS, 1999), RULES, None,
     None),
    ("a foreign currency is converted (20 USD = 18.40 EUR < 20)", referred(),
     buy(T0 + DAY_MS, 2000, currency="USD"), RULES, None, None),
    ("after the window: refused", referred(), buy(T0 + 30 * DAY_MS + 1), RULES, REFUSED,
     "no purchase of at least 20.00 EUR within 30 days of signing up on 2024-01-01"),
    ("a purchase before the signup: not new", referred(), buy(T0 - DAY_MS), RULES, REFUSED,
     "a customer already (first purchase on 2023-12-31, before signing up on 2024-01-01)"),
    ("bought before the signup earlier: not new",
     referred(first_purchase_at=T0 - 5 * DAY_MS, purchase_count=1), buy(T0 + DAY_MS), RULES,
     REFUSED, "first purchase on 2023-12-27"),
    ("self-referral", referred(profile=Profile(signup_at=T0, referred_by=C)), buy(T0 + DAY_MS),
     RULES, REFUSED, "a customer cannot refer themselves"),
    ("one bonus per referred customer ever: claimed already",
     referred(referral=EMPTY._replace(status=CLAIMED, order_id="o0")), buy(T0 + DAY_MS),
     RULES, CLAIMED, None),
    ("one bonus ever: refused already stays refused",
     referred(referral=EMPTY._replace(status=REFUSED)), buy(T0 + DAY_MS), RULES, REFUSED, None),
    ("not referred: nothing", state(C, profile=Profile(signup_at=T0)), buy(T0 + DAY_MS), RULES,
     None, None),
    ("no profile: nothing", state(C), buy(T0 + DAY_MS), RULES, None, None),
    ("programme off: nothing", referred(), buy(T0 + DAY_MS), rules(enabled=False), None, None),
    ("a lower minimum from the rules", referred(), buy(T0 + DAY_MS, 500),
     rules(min_purchase=Decimal("4.99")), CLAIMED, None),
]


@pytest.mark.parametrize(("what", "before", "ev", "rs", "status", "words"), PURCHASES,
                         ids=[c[0] for c in PURCHASES])
def test_first_qualifying_purchase(what: str, before: Any, ev: Any, rs: Rules,
                                   status: int | None, words: str | None) -> None:
    out = d.decide(before, before, ev, rs)
    if status is None:
        assert out == d.Decision(None)
        return
    assert out.record is not None and out.record.status == status
    if before.referral is not None and before.referral.status != NONE:
        assert out == d.Decision(before.referral)  # decided once: nothing more
        return
    if status == CLAIMED:
        assert not out.effects
        (claim,) = out.outputs
        assert claim.stream == "referrals" and claim.customer_id == R
        assert claim.record.kind == CLAIM and claim.record.referred == C
        assert claim.record.order_id == ev.order_id and claim.occurred_at == ev.occurred_at
        assert claim.record.event_id == f"referral:{C}:{ev.order_id}:claim"
        assert out.record.order_id == ev.order_id and out.record.at == ev.occurred_at
    else:
        assert not out.outputs
        (e,) = out.effects
        assert e.points == 0 and e.rule == d.REFERRAL_REFUSED
        assert e.reason.startswith("referral: no welcome bonus for joining through ")
        assert words is not None and words in e.reason
        assert e.entry_id == f"{ev.event_id}:referral_refused"


def test_a_signup_applied_after_an_earlier_purchase_is_refused() -> None:
    before = state(C, first_purchase_at=T0 - DAY_MS, purchase_count=1)
    ev = customer("s1", T0, "signup", cid=C, referred_by=R)
    after = replace_profile(before, Profile(signup_at=T0, referred_by=R))
    out = d.decide(before, after, ev, RULES)
    assert out.record is not None and out.record.status == REFUSED
    assert "first purchase on 2023-12-31" in out.effects[0].reason
    # a purchase after the signup that arrived first leaves the decision to later purchases
    before = state(C, first_purchase_at=T0 + DAY_MS, purchase_count=1)
    after = replace_profile(before, Profile(signup_at=T0, referred_by=R))
    assert d.decide(before, after, ev, RULES) == d.Decision(None)


def replace_profile(s: Any, p: Profile) -> Any:
    return state(s.customer_id, first_purchase_at=s.first_purchase_at,
                 purchase_count=s.purchase_count, profile=p, referral=s.referral)


# -- the referrer's guards (table-driven) ------------------------------------------------------

def referrer(**kw: Any) -> Any:
    kw.setdefault("profile", Profile(signup_at=T0 - 100 * DAY_MS))
    return state(R, **kw)


def rewarded(n: int, t: int) -> record.ReferralState:
    return EMPTY._replace(rewarded=n, recent=tuple(
        record.Rewarded(t - i * DAY_MS, 1000 + i, 500) for i in reversed(range(n))))


CLAIMS: list[tuple[str, Any, Rules, str | None, bool]] = [
    # (what, referrer state, rules, refusal words or None: accepted, entry for the referrer)
    ("a known referrer in good standing", referrer(), RULES, None, True),
    ("known by a purchase only", state(R, purchase_count=1), RULES, None, True),
    ("unknown (never seen, or erased: no state)", state(R), RULES,
     f"{R} is not a known customer", False),
    ("at the cap", referrer(referral=rewarded(10, T0)), RULES,
     "already had 10 referrals rewarded in the 365 days before 2024-01-02", True),
    ("under the cap: older ones left the period",
     referrer(referral=rewarded(10, T0 - 365 * DAY_MS)), RULES, None, True),
    ("a cap of 0 refuses everything", referrer(), rules(max_rewarded_per_period=0),
     "already had 0 referrals rewarded", True),
    ("a cap from the rules", referrer(referral=rewarded(2, T0)),
     rules(max_rewarded_per_period=2), "already had 2 referrals rewarded", True),
]


@pytest.mark.parametrize(("what", "before", "rs", "refused", "entry"), CLAIMS,
                         ids=[c[0] for c in CLAIMS])
def test_the_referrers_guards(what: str, before: Any, rs: Rules, refused: str | None,
                              entry: bool) -> None:
    ev = referral(CLAIM)
    out = d.decide(before, before, ev, rs)
    (answer,) = out.outputs
    assert answer.customer_id == C and answer.record.referrer == R
    assert answer.occurred_at == ev.occurred_at
    if refused is None:
        assert answer.record.kind == CONFIRMED and answer.record.reason is None
        (e,) = out.effects
        assert (e.points, e.rule) == (rs.referral.referrer_points, d.REFERRAL_BONUS)
        assert e.reason == f"referral: your friend {C} made their first purchase"
        assert out.record is not None
        assert out.record.rewarded == (before.referral or EMPTY).rewarded + 1
        assert record.Rewarded(ev.occurred_at, record.key32(C), 500) in out.record.recent
        return
    assert answer.record.kind == REFUSED_KIND and refused in (answer.record.reason or "")
    assert out.record is before.referral  # nothing recorded
    if entry:
        (e,) = out.effects
        assert e.points == 0 and e.rule == d.REFERRAL_REFUSED and refused in e.reason
    else:
        assert out.effects == ()  # no account to write to


def test_a_second_claim_for_the_same_friend_is_a_duplicate() -> None:
    ev = referral(CLAIM)
    first = d.decide(referrer(), referrer(), ev, RULES)
    again = referrer(referral=first.record)
    assert d.decide(again, again, ev, RULES) == d.Decision(first.record)
    other_order = referral(CLAIM, order="o2")
    assert d.decide(again, again, other_order, RULES) == d.Decision(first.record)


def test_the_referrers_memory_is_bounded() -> None:
    rec = None
    for i in range(40):  # one every 40 days for 4 years (cap: 10 in 365 days)
        s = referrer(referral=rec)
        ev = referral(CLAIM, t=T0 + i * 40 * DAY_MS, referred=f"F{i}", order=f"o{i}")
        rec = d.decide(s, s, ev, RULES).record
    assert rec is not None and rec.rewarded == 40
    assert len(rec.recent) == 10  # 365 days + the lateness: 373 days, one every 40 days


# -- the answer at the referred customer, and clawbacks ---------------------------------------

def claimed(**kw: Any) -> Any:
    fields = {"status": CLAIMED, "order_id": "o1", "at": T0 + DAY_MS, "paid": 2500, **kw}
    return referred(referral=EMPTY._replace(**fields))


def test_confirmed_credits_the_welcome_bonus_once() -> None:
    before = claimed()
    out = d.decide(before, before, referral(CONFIRMED), RULES)
    assert out.record is not None and (out.record.status, out.record.credited) == (REWARDED, 250)
    (e,) = out.effects
    assert (e.points, e.rule) == (250, d.REFERRAL_BONUS)
    assert e.reason == f"referral: welcome bonus for joining through {R}'s invitation"
    again = referred(referral=out.record)
    assert d.decide(again, again, referral(CONFIRMED), RULES) == d.Decision(out.record)


def test_refused_tells_the_referred_customer_why() -> None:
    before = claimed()
    ev = referral(REFUSED_KIND, reason="C00045 is not a known customer")
    out = d.decide(before, before, ev, RULES)
    assert out.record is not None and out.record.status == REFUSED
    (e,) = out.effects
    assert e.points == 0 and e.reason.endswith(": C00045 is not a known customer")


REFUNDS: list[tuple[str, Any, Any, int, int | None]] = [
    # (what, state, refund, status after, C's points in the entry (None: no entry))
    ("a full refund within the window claws back", "rewarded", refund(T0 + 5 * DAY_MS, 2500),
     CLAWED, -250),
    ("before the confirmation came back: nothing to debit", "claimed",
     refund(T0 + 5 * DAY_MS, 2500), CLAWED, 0),
    ("a partial refund leaving the minimum paid keeps the bonus", "rewarded",
     refund(T0 + 5 * DAY_MS, 500), REWARDED, None),
    ("a partial refund below the minimum claws back", "rewarded",
     refund(T0 + 5 * DAY_MS, 501), CLAWED, -250),
    ("after the return window: kept", "rewarded", refund(T0 + 31 * DAY_MS + 1, 2500),
     REWARDED, None),
    ("another order's refund: nothing", "rewarded", refund(T0 + 5 * DAY_MS, 2500, order="o9"),
     REWARDED, None),
]


@pytest.mark.parametrize(("what", "which", "ev", "status", "points"), REFUNDS,
                         ids=[c[0] for c in REFUNDS])
def test_a_refund_of_the_qualifying_order(what: str, which: str, ev: Any, status: int,
                                          points: int | None) -> None:
    before = claimed() if which == "claimed" else claimed(status=REWARDED, credited=250)
    out = d.decide(before, before, ev, RULES)
    assert out.record is not None and out.record.status == status
    if points is None:
        assert out.effects == () and out.outputs == ()
        return
    (e,) = out.effects
    assert e.points == points and e.rule == d.REFERRAL_CLAWBACK
    assert "order o1 was refunded within 30 days" in e.reason
    (back,) = out.outputs
    assert back.customer_id == R and back.record.kind == CLAWBACK
    assert back.record.event_id == f"referral:{C}:o1:clawback"
    assert out.record.credited == 0
    # later answers change nothing: the confirmation credits nothing after a clawback
    after = referred(referral=out.record)
    assert d.decide(after, after, referral(CONFIRMED), RULES) == d.Decision(out.record)


def test_the_clawback_at_the_referrer() -> None:
    s = referrer()
    rec = d.decide(s, s, referral(CLAIM), RULES).record
    s = referrer(referral=rec)
    out = d.decide(s, s, referral(CLAWBACK, t=T0 + 5 * DAY_MS), RULES)
    (e,) = out.effects
    assert (e.points, e.rule) == (-500, d.REFERRAL_CLAWBACK)
    assert e.reason == (f"referral: bonus taken back: your friend {C}'s first purchase "
                        f"(order o1) was refunded")
    assert out.record is not None and (out.record.rewarded, out.record.clawed) == (1, 1)
    s = referrer(referral=out.record)
    # a second clawback (a re-send) finds nothing left to take
    assert d.decide(s, s, referral(CLAWBACK, t=T0 + 5 * DAY_MS), RULES) == \
        d.Decision(out.record)
    # a clawback for a claim that was refused: nothing was credited
    s = referrer()
    assert d.decide(s, s, referral(CLAWBACK), RULES) == d.Decision(None)


def test_a_refusal_after_a_refund_that_overtook_it_is_the_outcome() -> None:
    before = claimed()
    clawed = d.decide(before, before, refund(T0 + 2 * DAY_MS, 2500), RULES).record
    assert clawed is not None and clawed.status == CLAWED
    s = referred(referral=clawed)
    out = d.decide(s, s, referral(REFUSED_KIND, reason="no"), RULES)
    assert out.record == clawed._replace(status=REFUSED)
    # the other order: refused first, the refund is only counted
    s = referred(referral=claimed().referral._replace(status=REFUSED))
    out = d.decide(s, s, refund(T0 + 2 * DAY_MS, 2500), RULES)
    assert out.record is not None and (out.record.status, out.record.refunded) == (REFUSED, 2500)
    assert out.effects == () and out.outputs == ()
