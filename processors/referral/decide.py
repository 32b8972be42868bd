"""The referral programme's decisions: ``decide(before, after, event, rules) -> Decision``.

Theory of operation
-------------------
The referrer R and the referred customer C are two customers, possibly on two partitions
and two workers, and a worker only sees its own customers. So the programme is a
conversation over the internal ``referrals`` topic (``schemas.events.Referral``, keyed by
the customer who must act), every step decided by one customer's state alone:

1. **C qualifies** (C's purchase, ``rules.referral``): C signed up ``referred_by`` R and
   this is C's first purchase of at least ``min_purchase`` (reporting currency, the order's
   amount) within ``purchase_within_days`` of the signup; C is new (no purchase before the
   signup); R is not C. C's record becomes ``claimed`` and a ``claim`` goes to R. A purchase
   too small waits for a bigger one; a guard that can never pass any more (a purchase
   before the signup, or the window over) makes C's record ``refused`` with a 0-point
   ``referral_refused`` entry saying why (once: one bonus per referred customer, ever).
   A signup applied after a purchase dated before it is refused the same way.
2. **R decides** (the claim): R must exist (a signup or a purchase on record: an erased
   customer has no state, so is unknown) and be in good standing: under
   ``max_rewarded_per_period`` referrals rewarded in the ``period_days`` before the
   purchase. Accepted: R is credited ``referrer_points`` (``referral_bonus``: "referral:
   your friend C made their first purchase") and ``confirmed`` goes back to C. Refused:
   ``refused`` with the reason goes back to C (and R, when known, gets a 0-point entry
   saying why). A claim for a C that R already has on record is a duplicate: nothing.
3. **C is credited** (``confirmed``): ``referred_points`` (``referral_bonus``: "referral:
   welcome bonus for joining through R's invitation"); or (``refused``) a 0-point
   ``referral_refused`` entry with R's reason. So both get their bonus, or neither.
4. **A refund** of the qualifying order within ``return_window_days`` of the purchase that
   leaves less than ``min_purchase`` paid claws back: C's welcome bonus is debited
   (``referral_clawback``; if the confirmation has not come back yet, nothing was credited
   and a 0-point entry says the bonus is off), C's record becomes ``clawed_back`` and a
   ``clawback`` goes to R, who debits its bonus if it was credited for C. A confirmation
   that arrives after the clawback credits nothing; a refusal that arrives after it makes
   the record ``refused`` all the same.

Interleavings: when R's answer reaches C relative to C's own later events depends on
partitions and workers. The outcome does not: every customer's balance, R's record, and
C's status and amounts are the same for any delivery moment (property-tested in
``tests/unit/processors/referral/test_programme.py``); only the 0-point notes C reads may
differ (a refund that overtakes the answer is noted as such).

Every record has a deterministic id (``referral:<C>:<order>:<kind>``) and the qualifying
purchase's time (the clawback: the refund's), so a record re-sent after a crash is a
duplicate the receiver drops (its dedup window, and the record itself: C's status, R's
``recent``), and replaying history gives the same ledger. Ledger entries are loyalty's:
``Decision.effects`` says what to write, loyalty applies it to the balance (a debit is
clamped at 0 like a refund's unless ``allow_negative_balance``) and writes the entry.

Pure: no I/O, no clock; time is the events' ``occurred_at``.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, NamedTuple, Protocol

from processors.money import to_reporting_minor
from processors.profile import Profile
from processors.referral.record import (
    CLAIMED,
    CLAWED,
    EMPTY,
    NONE,
    REFUSED,
    REWARDED,
    ReferralState,
    Rewarded,
    key32,
)
from processors.rules import Rules
from processors.timeutil import DAY_MS, format_time
from schemas.codec import wire_dict
from schemas.events import (
    CLAIM,
    CLAWBACK,
    CONFIRMED,
    SIGNUP,
    CustomerEvent,
    Event,
    Purchase,
    Referral,
)
from schemas.events import REFUSED as REFUSED_KIND


class CustomerState(Protocol):
    """What the programme reads of a customer's state (``processors.state.CustomerState``
    has it all): the decisions depend on nothing else."""

    @property
    def customer_id(self) -> str: ...
    @property
    def referral(self) -> ReferralState | None: ...
    @property
    def profile(self) -> Profile | None: ...
    @property
    def first_purchase_at(self) -> int | None: ...
    @property
    def purchase_count(self) -> int: ...

SOURCE = "pulse"
REFERRAL_BONUS, REFERRAL_REFUSED, REFERRAL_CLAWBACK = (
    "referral_bonus", "referral_refused", "referral_clawback")


class LedgerEffect(NamedTuple):
    """An entry loyalty writes: ``points`` > 0 credit, < 0 debit (clamped by loyalty), 0 a
    note. ``reason`` is the headline; loyalty appends the points it applied."""

    entry_id: str
    points: int
    rule: str
    reason: str
    at: int
    event_id: str


class ReferralOut(NamedTuple):
    """A record for the ``referrals`` topic (an ``processors.outputs.Output``)."""

    record: Referral

    @property
    def stream(self) -> str:
        return "referrals"

    @property
    def customer_id(self) -> str:
        return self.record.customer_id

    @property
    def occurred_at(self) -> int:
        return self.record.occurred_at

    def as_dict(self) -> dict[str, Any]:
        return wire_dict(self.record)


class Decision(NamedTuple):
    record: ReferralState | None  # the same object as before.referral when unchanged
    effects: tuple[LedgerEffect, ...] = ()
    outputs: tuple[ReferralOut, ...] = ()


def _money(minor: int, rules: Rules) -> str:
    e = rules.minor_units[rules.reporting_currency]
    sign = "-" if minor < 0 else ""
    q, r = divmod(abs(minor), 10**e)
    return f"{sign}{q}.{r:0{e}d} {rules.reporting_currency}" if e else \
        f"{sign}{q} {rules.reporting_currency}"


def _date(ms: int) -> str:
    return format_time(ms)[:10]


def min_purchase_minor(rules: Rules) -> int:
    e = rules.minor_units[rules.reporting_currency]
    return math.ceil(rules.referral.min_purchase * 10**e)  # whole minor units, rounded up


def _record(cid: str, order_id: str, kind: str) -> str:
    return f"referral:{cid}:{order_id}:{kind}"


def _send(kind: str, to: str, referrer: str, referred: str, order_id: str, at: int,
          reason: str | None = None) -> ReferralOut:
    return ReferralOut(Referral(_record(referred, order_id, kind), to, at, SOURCE,
                                kind, referrer, referred, order_id,  # type: ignore[arg-type]
                                reason))


def decide(before: CustomerState, after: CustomerState, event: Event, rules: Rules
           ) -> Decision:
    """What the programme does about ``event`` of the customer (``before``: the state
    before it; ``after``: with the base changes applied, e.g. the signup's profile)."""
    rec = before.referral
    if isinstance(event, Purchase):
        if rec is None and (before.profile is None or before.profile.referred_by is None):
            return Decision(rec)  # the common case: nobody referred this customer
        if event.kind == "purchase":
            return _purchase(before, event, rules)
        return _refund(before, event, rules)
    if isinstance(event, Referral):
        if event.kind == CLAIM:
            return _claim(before, event, rules)
        if event.kind == CLAWBACK:
            return _clawback_at_referrer(before, event)
        return _answer(before, event, rules)
    if isinstance(event, CustomerEvent) and event.kind == SIGNUP:
        return _signup(before, after, event, rules)
    return Decision(rec)


def _refuse_referred(before: CustomerState, why: str, event: Event, referrer: str
                     ) -> Decision:
    rec = (before.referral or EMPTY)._replace(status=REFUSED)
    eid = event.event_id
    return Decision(rec, (LedgerEffect(
        f"{eid}:{REFERRAL_REFUSED}", 0, REFERRAL_REFUSED,
        f"referral: no welcome bonus for joining through {referrer}'s invitation: {why}",
        event.occurred_at, eid),))


def _signup(before: CustomerState, after: CustomerState, ev: CustomerEvent, rules: Rules
            ) -> Decision:
    rec = before.referral
    p = after.profile
    if (rec is not None and rec.status != NONE) or p is None or p.referred_by is None \
            or p.signup_at != ev.occurred_at or not rules.referral.enabled:
        return Decision(rec)
    first = before.first_purchase_at
    if first is not None and first < p.signup_at:
        return _refuse_referred(before, f"a customer already (first purchase on "
                                f"{_date(first)}, before signing up on {_date(p.signup_at)})",
                                ev, p.referred_by)
    return Decision(rec)


def _purchase(before: CustomerState, ev: Purchase, rules: Rules) -> Decision:
    rec = before.referral
    p = before.profile
    rr = rules.referral
    if (rec is not None and rec.status != NONE) or p is None or p.referred_by is None \
            or p.signup_at is None or not rr.enabled:
        return Decision(rec)
    referrer, signup, t = p.referred_by, p.signup_at, ev.occurred_at
    cid = before.customer_id
    if referrer == cid:
        return _refuse_referred(before, "a customer cannot refer themselves", ev, referrer)
    first = before.first_purchase_at
    if t < signup or (first is not None and first < signup):
        first = t if first is None else min(first, t)
        return _refuse_referred(before, f"a customer already (first purchase on "
                                f"{_date(first)}, before signing up on {_date(signup)})",
                                ev, referrer)
    minimum = min_purchase_minor(rules)
    if t > signup + rr.purchase_within_days * DAY_MS:
        return _refuse_referred(before, f"no purchase of at least {_money(minimum, rules)} "
                                f"within {rr.purchase_within_days} days of signing up on "
                                f"{_date(signup)}", ev, referrer)
    paid = to_reporting_minor(ev.amount_minor, ev.currency, rules)
    if paid < minimum:
        return Decision(rec)  # too small: a later purchase within the window may qualify
    new = (rec or EMPTY)._replace(status=CLAIMED, order_id=ev.order_id, at=t, paid=paid)
    return Decision(new, (), (_send(CLAIM, referrer, referrer, cid, ev.order_id, t),))


def _refund(before: CustomerState, ev: Purchase, rules: Rules) -> Decision:
    rec = before.referral
    if rec is None or rec.order_id is None or ev.order_id != rec.order_id:
        return Decision(rec)
    refunded = rec.refunded + to_reporting_minor(ev.amount_minor, ev.currency, rules)
    if rec.status not in (CLAIMED, REWARDED):  # decided (refused, clawed back): only counted
        return Decision(rec._replace(refunded=refunded))
    rr = rules.referral
    within = ev.occurred_at <= rec.at + rr.return_window_days * DAY_MS
    if not within or rec.paid - refunded >= min_purchase_minor(rules):
        return Decision(rec._replace(refunded=refunded))
    referrer = before.profile.referred_by if before.profile is not None else None
    assert referrer is not None  # a claim was made for it
    cid, eid, t = before.customer_id, ev.event_id, ev.occurred_at
    why = (f"order {ev.order_id} was refunded within {rr.return_window_days} days "
           f"({_money(rec.paid - refunded, rules)} of {_money(rec.paid, rules)} left paid)")
    if rec.status == REWARDED:
        effect = LedgerEffect(f"{eid}:{REFERRAL_CLAWBACK}", -rec.credited, REFERRAL_CLAWBACK,
                              f"referral: welcome bonus taken back: {why}", t, eid)
    else:  # the confirmation is still on its way: nothing was credited, none will be
        effect = LedgerEffect(f"{eid}:{REFERRAL_CLAWBACK}", 0, REFERRAL_CLAWBACK,
                              f"referral: no welcome bonus for joining through {referrer}'s "
                              f"invitation after all: {why}", t, eid)
    new = rec._replace(status=CLAWED, refunded=refunded, credited=0)
    return Decision(new, (effect,), (_send(CLAWBACK, referrer, referrer, cid, rec.order_id or
                                           ev.order_id, t),))


def known(state: CustomerState) -> bool:
    """Whether a referrer exists: a signup or a purchase on record (an erased customer's
    state is gone, so an erased referrer is unknown)."""
    return state.purchase_count > 0 or (state.profile is not None
                                        and state.profile.signup_at is not None)


def rewarded_in_period(rec: ReferralState | None, at: int, rules: Rules) -> int:
    """Referrals rewarded in the ``period_days`` days ending at ``at`` (clawed back ones
    count too: the cap limits claims, not net points)."""
    if rec is None:
        return 0
    lo = at - rules.referral.period_days * DAY_MS
    return sum(1 for e in rec.recent if lo < e.at <= at)


def horizon(rules: Rules) -> int:
    """How far back a referrer remembers its rewarded referrals (``recent``), and so the
    lateness of referral records (``processors.customer``): the longer of the cap's period
    and the return window, plus the allowed lateness. Within it a re-sent claim is
    recognised by the record itself, whatever the dedup window did."""
    rr = rules.referral
    return max(rr.period_days, rr.return_window_days) * DAY_MS + rules.allowed_lateness_ms


def _claim(before: CustomerState, ev: Referral, rules: Rules) -> Decision:
    rec = before.referral
    key = key32(ev.referred)
    if rec is not None and any(e.key == key for e in rec.recent):
        return Decision(rec)  # on record already: one bonus per referred customer
    rr, t, me = rules.referral, ev.occurred_at, before.customer_id
    why = None
    if ev.referred == me:
        why = "a customer cannot refer themselves"
    elif not known(before):
        why = f"{me} is not a known customer (never signed up or bought, or erased)"
    elif (n := rewarded_in_period(rec, t, rules)) >= rr.max_rewarded_per_period:
        why = (f"{me} already had {n} referral{'s' if n != 1 else ''} rewarded in the "
               f"{rr.period_days} days before {_date(t)} (the most there can be)")
    if why is not None:
        out = _send(REFUSED_KIND, ev.referred, me, ev.referred, ev.order_id, t, why)
        effects = () if not known(before) else (LedgerEffect(
            f"{ev.event_id}:{REFERRAL_REFUSED}", 0, REFERRAL_REFUSED,
            f"referral: no bonus for your friend {ev.referred}'s first purchase: {why}", t,
            ev.event_id),)
        return Decision(rec, effects, (out,))
    base = rec or EMPTY
    recent = list(base.recent)
    bisect.insort(recent, Rewarded(t, key, rr.referrer_points))
    cut = recent[-1].at - horizon(rules)
    recent = [e for e in recent if e.at > cut]
    new = base._replace(rewarded=base.rewarded + 1, recent=tuple(recent))
    effect = LedgerEffect(f"{ev.event_id}:{REFERRAL_BONUS}", rr.referrer_points,
                          REFERRAL_BONUS,
                          f"referral: your friend {ev.referred} made their first purchase",
                          t, ev.event_id)
    out = _send(CONFIRMED, ev.referred, me, ev.referred, ev.order_id, t)
    return Decision(new, (effect,) if rr.referrer_points else (), (out,))


def _clawback_at_referrer(before: CustomerState, ev: Referral) -> Decision:
    rec = before.referral
    key = key32(ev.referred)
    if rec is None:
        return Decision(rec)
    for i, e in enumerate(rec.recent):
        if e.key == key and e.points:
            recent = (*rec.recent[:i], e._replace(points=0), *rec.recent[i + 1:])
            new = rec._replace(clawed=rec.clawed + 1, recent=recent)
            return Decision(new, (LedgerEffect(
                f"{ev.event_id}:{REFERRAL_CLAWBACK}", -e.points, REFERRAL_CLAWBACK,
                f"referral: bonus taken back: your friend {ev.referred}'s first purchase "
                f"(order {ev.order_id}) was refunded", ev.occurred_at, ev.event_id),))
    return Decision(rec)  # refused, or taken back already: nothing was credited


def _answer(before: CustomerState, ev: Referral, rules: Rules) -> Decision:
    """``confirmed`` / ``refused`` at the referred customer."""
    rec = before.referral
    if rec is None or rec.order_id != ev.order_id or not (
            rec.status == CLAIMED or (rec.status == CLAWED and ev.kind == REFUSED_KIND)):
        return Decision(rec)  # erased meanwhile, not this claim, or answered already
    eid, t = ev.event_id, ev.occurred_at
    if ev.kind == CONFIRMED:
        points = rules.referral.referred_points
        new = rec._replace(status=REWARDED, credited=points)
        return Decision(new, (LedgerEffect(
            f"{eid}:{REFERRAL_BONUS}", points, REFERRAL_BONUS,
            f"referral: welcome bonus for joining through {ev.referrer}'s invitation", t,
            eid),) if points else ())
    # refused, also after a refund clawed the claim back while the answer was on its way:
    # the referrer's reason is the outcome, whatever came first (nothing was credited)
    new = rec._replace(status=REFUSED)
    return Decision(new, (LedgerEffect(
        f"{eid}:{REFERRAL_REFUSED}", 0, REFERRAL_REFUSED,
        f"referral: no welcome bonus for joining through {ev.referrer}'s invitation: "
        f"{ev.reason}", t, eid),))
