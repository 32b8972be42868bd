"""Member operations: redemptions and adjustments, decided against the current balance;
the referral programme's ledger entries (``processors/referral/decide.py`` decides).

Theory of operation: a member with enough balance gets ``redemption`` (debited); otherwise
``redemption_rejected`` with 0 points and the reason (unknown customer = no state before the
event; insufficient balance). An adjustment credits or debits an operator's amount with its
reason (``adjustment``), or is refused (``adjustment_rejected``) when a debit would overdraw
and ``allow_negative_adjustments`` is off. One partition is applied serially, so two
redemptions can never overdraw together.
"""

from __future__ import annotations

from processors.loyalty.derived import _Derived, _pts
from processors.loyalty.ledger import (
    ADJUSTMENT,
    ADJUSTMENT_REJECTED,
    REDEMPTION,
    REDEMPTION_REJECTED,
    _Book,
    _credit,
    _open,
    _touch,
)
from processors.loyalty.records import LoyaltyState
from processors.referral.decide import LedgerEffect
from processors.rules import Rules
from schemas.events import Adjustment, Redemption


def _redemption(ly: LoyaltyState | None, ev: Redemption, known: bool, book: _Book
                ) -> LoyaltyState | None:
    eid, t = ev.event_id, ev.occurred_at
    balance = 0 if ly is None else ly.balance
    if not known:
        why = f"reward {ev.reward_id} not redeemed: unknown customer (no points account)"
    elif ev.points > balance:
        why = (f"reward {ev.reward_id} not redeemed: it costs {_pts(ev.points)}, the balance "
               f"is {_pts(balance)}")
    else:
        assert ly is not None
        ly = _touch(ly._replace(balance=balance - ev.points), t)
        book.add(ly, f"{eid}:{REDEMPTION}", -ev.points, REDEMPTION,
                 f"reward {ev.reward_id}: {_pts(ev.points)} redeemed", t, eid)
        return ly
    book.add(ly, f"{eid}:{REDEMPTION_REJECTED}", 0, REDEMPTION_REJECTED, why, t, eid)
    return ly


def _adjustment(ly: LoyaltyState | None, ev: Adjustment, known: bool, rules: Rules,
                book: _Book) -> LoyaltyState | None:
    """A person's adjustment (README "Member operations"): a credit is goodwill (balance,
    lifetime points, activity; opens an account), a debit takes from the balance only.
    Refused with a 0-point entry saying why: an unknown customer, a credit above
    ``max_points_per_event``, a debit larger than the balance unless
    ``allow_negative_adjustments``."""
    eid, t, n = ev.event_id, ev.occurred_at, ev.points
    lr = rules.loyalty
    balance = 0 if ly is None else ly.balance
    who = f'adjustment by {ev.operator}: "{ev.reason}"'
    if not known:
        why = f"{who}: {_pts(n)} not applied: unknown customer (no state)"
    elif n > lr.max_points_per_event:
        why = (f"{who}: {n:+d} pts not applied: above the {_pts(lr.max_points_per_event)} "
               f"one entry may credit")
    elif n < 0 and -n > balance and not lr.allow_negative_adjustments:
        why = (f"{who}: {_pts(n)} not applied: the balance is {_pts(balance)}, a debit may "
               f"not take it below 0")
    else:
        if n > 0:
            ly = _credit(ly if ly is not None else _open(t), n, t)
        else:
            assert ly is not None or n == 0 or lr.allow_negative_adjustments
            ly = (ly if ly is not None else _open(t))._replace(balance=balance + n)
        book.add(ly, f"{eid}:{ADJUSTMENT}", n, ADJUSTMENT, f"{who}: {n:+d} pts"
                 if abs(n) != 1 else f"{who}: {n:+d} pt", t, eid)
        return ly
    book.add(ly, f"{eid}:{ADJUSTMENT_REJECTED}", 0, ADJUSTMENT_REJECTED, why, t, eid)
    return ly


def _referral(ly: LoyaltyState | None, e: LedgerEffect, d: _Derived, book: _Book
              ) -> LoyaltyState | None:
    """A referral programme entry (``processors/referral/decide.py`` decides, this applies):
    a bonus is credited like goodwill (balance, lifetime points, activity; opens an
    account); a clawback takes back what it credited, never below a balance of 0 unless
    ``allow_negative_balance`` (as a refund does); 0 points: a note (a refusal)."""
    n, t = e.points, e.at
    if n > 0:
        ly = _credit(ly if ly is not None else _open(t), n, t)
        book.add(ly, e.entry_id, n, e.rule, f"{e.reason}: +{_pts(n)}", t, e.event_id)
    elif n < 0:
        have = 0 if ly is None else ly.balance
        taken = 0 if ly is None else (-n if d.lr.allow_negative_balance
                                      else min(-n, max(have, 0)))
        why = e.reason
        if taken < -n:
            why += f"; the balance had only {_pts(taken)} and does not go below 0"
        if ly is not None:
            ly = ly._replace(balance=ly.balance - taken,
                             lifetime_points=ly.lifetime_points - taken)
        book.add(ly, e.entry_id, -taken, e.rule, f"{why}: {_pts(-taken)}", t, e.event_id)
    else:
        book.add(ly, e.entry_id, 0, e.rule, e.reason, t, e.event_id)
    return ly
