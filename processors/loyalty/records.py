"""The loyalty layer's record: a member's points account (``CustomerState.loyalty``).

Theory of operation: plain immutable records (NamedTuples, cheap to build: several are built
per event), with no logic and no imports of ours, so that ``processors/state.py`` can name
them without importing the loyalty logic (which imports the state: no import circle). How
they change: the other modules of ``processors/loyalty/`` (the package docstring); their
wire form: ``processors/loyalty/wire.py``.
"""

from __future__ import annotations

from typing import NamedTuple


class LinePoints(NamedTuple):
    key: int  # 32-bit hash of the sku
    units: int
    points: int
    refunded_units: int = 0


class OrderPoints(NamedTuple):
    key: int  # 32-bit hash of the order id
    day: int  # UTC day of the purchase
    paid: int  # reporting minor units
    points: int  # earned (after the cap)
    refunded: int = 0  # reporting minor units refunded so far
    clawed: int = 0  # points taken back so far (before clamping)
    lines: tuple[LinePoints, ...] = ()  # sorted by key; lines that earned nothing left out


class SurveyMark(NamedTuple):
    day: int
    key: int  # 32-bit hash of the survey id


class LoyaltyState(NamedTuple):
    """A member's points account (``CustomerState.loyalty``; None until the first purchase,
    survey bonus or goodwill award). An immutable record (a NamedTuple, like the core's
    DayBucket: several are built per event, and a frozen dataclass costs more to build)."""

    balance: int = 0
    lifetime_points: int = 0  # earned, minus what refunds took back
    tier: int = 0  # index into rules.loyalty.tiers
    tier_since: int = 0  # ms of the last tier change; 0: none since the account opened
    qualified_until: int | None = None  # day; None in the lowest tier
    last_activity_at: int = 0  # ms; the expiry clock
    noticed: bool = False  # the expiry notice for the current deadline was written
    orders: tuple[OrderPoints, ...] = ()  # sorted by (day, key)
    surveys: tuple[SurveyMark, ...] = ()  # sorted
    # the latest expiry, while a late activity could still undo it: (at, points expired,
    # last activity before it); () when there is none
    expired: tuple[int, ...] = ()
