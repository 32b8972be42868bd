"""Wire types for the events producers write, declared once.

The JSON Schema files in ``schemas/json/`` are the language-neutral contract; these frozen
dataclasses are what the decoder (``schemas.codec``) produces after validating a record
against exactly the same rules (``tests/unit/schemas/test_schemas.py`` checks both agree on a corpus).

Times on the wire are RFC 3339 strings with an offset; here they are integer milliseconds
since the Unix epoch (UTC), which is what the pure processors compute with.
Money is integer minor units plus an ISO-4217 currency code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PURCHASE = "purchase"
TICKET = "ticket"
SURVEY = "survey"
REDEMPTION = "redemption"

EventKind = Literal["purchase", "ticket", "survey", "redemption"]
EVENT_KINDS: tuple[str, ...] = (PURCHASE, TICKET, SURVEY, REDEMPTION)

PURCHASE_KINDS = ("purchase", "refund")
TICKET_STATUSES = ("opened", "responded", "resolved", "reopened", "closed")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent")
SURVEY_KINDS = ("nps", "csat", "ces")
SURVEY_SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}


@dataclass(frozen=True, slots=True)
class PurchaseLine:
    sku: str
    category: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True, slots=True)
class Purchase:
    event_id: str
    customer_id: str
    occurred_at: int  # epoch milliseconds, UTC
    source: str
    order_id: str
    channel: str
    kind: Literal["purchase", "refund"]
    amount_minor: int  # what was paid (or refunded), in minor units of `currency`
    currency: str
    lines: tuple[PurchaseLine, ...] = ()
    store_id: str | None = None

    event_kind = PURCHASE


@dataclass(frozen=True, slots=True)
class SupportTicket:
    event_id: str
    customer_id: str
    occurred_at: int
    source: str
    ticket_id: str
    status: Literal["opened", "responded", "resolved", "reopened", "closed"]
    priority: Literal["low", "normal", "high", "urgent"]
    channel: str
    category: str
    sentiment: float | None = None

    event_kind = TICKET


@dataclass(frozen=True, slots=True)
class Survey:
    event_id: str
    customer_id: str
    occurred_at: int
    source: str
    survey_id: str
    kind: Literal["nps", "csat", "ces"]
    score: int
    touchpoint: str
    comment: str | None = None

    event_kind = SURVEY


@dataclass(frozen=True, slots=True)
class Redemption:
    event_id: str
    customer_id: str
    occurred_at: int
    source: str
    reward_id: str
    points: int

    event_kind = REDEMPTION


Event = Purchase | SupportTicket | Survey | Redemption
