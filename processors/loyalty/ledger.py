"""The ledger being written: entries (stream "points"), their rules, and the record updates
that go with them.

Theory of operation: every change of a balance is one ``LedgerEntry`` (``balance ==
sum(entry.points)``); entries with 0 points announce tier changes, expiry notices and
rejected member operations. ``_Book`` collects the entries of one call with the balance
and tier after each; ``_credit``, ``_touch`` and ``_open`` are the small record updates
that earning, bonuses and member operations share. Entry ids: ``"<event_id>:<rule>"`` for
entries an event causes, ``"<customer>:<rule>@<ms>"`` for entries time causes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processors.loyalty.derived import _Derived
from processors.loyalty.records import LoyaltyState
from processors.timeutil import format_time
from schemas.frozen import constructor

EARN, REFUND, SURVEY_BONUS, SERVICE_RECOVERY = "earn", "refund", "survey_bonus", "service_recovery"

REDEMPTION, REDEMPTION_REJECTED = "redemption", "redemption_rejected"

ADJUSTMENT, ADJUSTMENT_REJECTED = "adjustment", "adjustment_rejected"

TIER_CHANGE, EXPIRY_NOTICE, EXPIRY = "tier_change", "expiry_notice", "expiry"

EXPIRY_REVERSED = "expiry_reversed"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: str
    customer_id: str
    points: int
    rule: str
    reason: str
    balance_after: int
    tier_after: str | None
    occurred_at: int  # ms
    event_id: str | None  # the causing event; None for time-driven entries

    @property
    def stream(self) -> str:
        return "points"

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "customer_id": self.customer_id,
            "points": self.points,
            "rule": self.rule,
            "reason": self.reason,
            "balance_after": self.balance_after,
            "tier_after": self.tier_after,
            "occurred_at": format_time(self.occurred_at),
            "event_id": self.event_id,
        }


_entry = constructor(LedgerEntry)  # LedgerEntry(...) through its slots (schemas.frozen)


class _Book:
    """Collects the entries of one step; each entry records the balance and tier after it."""

    def __init__(self, customer_id: str, d: _Derived) -> None:
        self.cid = customer_id
        self.d = d
        self.out: list[LedgerEntry] = []

    def add(self, ly: LoyaltyState | None, entry_id: str, points: int, rule: str, reason: str,
            at: int, event_id: str | None) -> None:
        if ly is None:
            balance, name = 0, None
        else:
            tier, top = ly.tier, self.d.top  # _tier_name inlined
            balance, name = ly.balance, self.d.tier_names[tier if tier < top else top]
        self.out.append(_entry(entry_id, self.cid, points, rule, reason, balance, name, at,
                               event_id))


def _credit(ly: LoyaltyState, points: int, at: int) -> LoyaltyState:
    """Add earned points and count the activity (resets the expiry clock)."""
    return _touch(ly._replace(balance=ly.balance + points,
                              lifetime_points=ly.lifetime_points + points), at)


def _touch(ly: LoyaltyState, at: int) -> LoyaltyState:
    if at <= ly.last_activity_at:
        return ly
    return ly._replace(last_activity_at=at, noticed=False)


def _open(at: int) -> LoyaltyState:
    # tier_since stays 0 until a tier change: which topic's event opened the account may
    # depend on the interleaving, a tier change does not
    return LoyaltyState(last_activity_at=at)
