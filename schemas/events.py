"""Wire types for the events producers write, declared once.

The JSON Schema files in ``schemas/json/`` are the language-neutral contract; these frozen
dataclasses are what the decoder (``schemas.codec``) produces after validating a record
against exactly the same rules (``tests/unit/schemas/test_schemas.py`` checks both agree on
a corpus).

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
CUSTOMER = "customer"
ADJUSTMENT = "adjustment"
REFERRAL = "referral"

EventKind = Literal["purchase", "ticket", "survey", "redemption", "customer", "adjustment",
                    "referral"]
EVENT_KINDS: tuple[str, ...] = (PURCHASE, TICKET, SURVEY, REDEMPTION, CUSTOMER, ADJUSTMENT,
                                REFERRAL)

PURCHASE_KINDS = ("purchase", "refund")
TICKET_STATUSES = ("opened", "responded", "resolved", "reopened", "closed")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent")
SURVEY_KINDS = ("nps", "csat", "ces")
SURVEY_SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
SIGNUP, PROFILE_UPDATE, CONSENT, ERASURE_REQUESTED = (
    "signup", "profile_update", "consent", "erasure_requested")
CUSTOMER_KINDS = (SIGNUP, PROFILE_UPDATE, CONSENT, ERASURE_REQUESTED)
CONSENT_CHANNELS = ("email", "sms", "push", "post", "phone")  # marketing channels
# which optional fields each kind may carry (the others must be absent or null)
CUSTOMER_FIELDS: dict[str, tuple[str, ...]] = {
    SIGNUP: ("referred_by", "birth_date", "time_zone"),
    PROFILE_UPDATE: ("birth_date", "time_zone"),  # at least one of them
    CONSENT: ("channels",),  # at least one channel
    ERASURE_REQUESTED: (),
}
# the referral programme's internal records (processors/referral/): the referred customer's
# worker sends a claim (or, for a refund, a clawback) to the referrer's, which answers with
# confirmed or refused
CLAIM, CONFIRMED, REFUSED, CLAWBACK = "claim", "confirmed", "refused", "clawback"
REFERRAL_KINDS = (CLAIM, CONFIRMED, REFUSED, CLAWBACK)
TO_REFERRER = (CLAIM, CLAWBACK)  # kinds applied by the referrer (customer_id == referrer)


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


@dataclass(frozen=True, slots=True)
class CustomerEvent:
    """A record of the ``customers`` topic: who the customer is, not what they did.

    ``kind`` says which: ``signup`` (optionally ``referred_by`` another customer, never
    themselves; ``birth_date``; ``time_zone``), ``profile_update`` (``birth_date`` and/or
    ``time_zone``), ``consent`` (``channels``: marketing channel -> opted in, as of
    ``occurred_at``), ``erasure_requested`` (nothing else). No contact data: no name, email
    address or phone number is needed or kept."""

    event_id: str
    customer_id: str
    occurred_at: int
    source: str
    kind: Literal["signup", "profile_update", "consent", "erasure_requested"]
    referred_by: str | None = None  # a customer id, not customer_id
    # "--MM-DD" (month and day) or "YYYY-MM-DD", as written; a real calendar date
    # (Feb 29: in a leap year, or as a month-day)
    birth_date: str | None = None
    time_zone: str | None = None  # an IANA time zone name, e.g. "Europe/Paris"
    channels: tuple[tuple[str, bool], ...] = ()  # (channel, opted in), sorted by channel

    event_kind = CUSTOMER


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A points adjustment made by a person (README "Member operations"): goodwill after a
    phone call (points > 0) or a correction (points < 0). ``operator`` names who made it and
    ``reason`` is their text; both appear in the ledger entry's reason."""

    event_id: str
    customer_id: str
    occurred_at: int
    source: str
    points: int  # non-zero, either sign
    operator: str
    reason: str

    event_kind = ADJUSTMENT


@dataclass(frozen=True, slots=True)
class Referral:
    """A record of the internal ``referrals`` topic (README "Referral programme"): written
    by the workers, never by producers. ``customer_id`` is the customer whose worker applies
    it (the record key): the ``referrer`` for ``claim`` and ``clawback``, the ``referred``
    for ``confirmed`` and ``refused``. ``order_id`` is the referred customer's qualifying
    order; ``reason`` says why a claim was refused (only ``refused`` carries one)."""

    event_id: str
    customer_id: str
    occurred_at: int  # the qualifying purchase's time (a clawback: the refund's)
    source: str
    kind: Literal["claim", "confirmed", "refused", "clawback"]
    referrer: str
    referred: str
    order_id: str
    reason: str | None = None

    event_kind = REFERRAL


Event = Purchase | SupportTicket | Survey | Redemption | CustomerEvent | Adjustment | Referral
