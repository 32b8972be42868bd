"""Event builders shared by the tests: one place that knows every event type's fields.

Each takes the event id and time first, then what a test usually varies, positionally;
the rest by keyword with a plain default (customer ``c1``, EUR, an in-store purchase,
an e-mail billing ticket, a checkout survey, a customer record from the web).
"""

from __future__ import annotations

from schemas.events import (
    CustomerEvent,
    Purchase,
    PurchaseLine,
    Redemption,
    SupportTicket,
    Survey,
)


def purchase(eid: str, t: int, amount: int = 1000, currency: str = "EUR",
             kind: str = "purchase", *, cid: str = "c1", channel: str = "store",
             order: str | None = None, lines: tuple[PurchaseLine, ...] = (),
             source: str = "pos") -> Purchase:
    return Purchase(event_id=eid, customer_id=cid, occurred_at=t, source=source,
                    order_id=order or f"o-{eid}", channel=channel,  # type: ignore[arg-type]
                    kind=kind, amount_minor=amount, currency=currency,  # type: ignore[arg-type]
                    lines=lines)


def ticket(eid: str, t: int, tid: str, status: str, priority: str = "normal", *,
           cid: str = "c1", channel: str = "email", category: str = "billing",
           sentiment: float | None = None) -> SupportTicket:
    return SupportTicket(event_id=eid, customer_id=cid, occurred_at=t, source="crm",
                         ticket_id=tid, status=status, priority=priority,  # type: ignore[arg-type]
                         channel=channel, category=category,  # type: ignore[arg-type]
                         sentiment=sentiment)


def survey(eid: str, t: int, kind: str, score: int, *, cid: str = "c1",
           touchpoint: str = "checkout", survey_id: str | None = None) -> Survey:
    return Survey(event_id=eid, customer_id=cid, occurred_at=t, source="survey-tool",
                  survey_id=survey_id or f"s-{eid}", kind=kind,  # type: ignore[arg-type]
                  score=score,
                  touchpoint=touchpoint)


def redemption(eid: str, t: int, points: int = 100, *, cid: str = "c1",
               reward: str = "r1") -> Redemption:
    return Redemption(event_id=eid, customer_id=cid, occurred_at=t, source="app",
                      reward_id=reward, points=points)


def customer(eid: str, t: int, kind: str, *, cid: str = "c1", source: str = "web",
             referred_by: str | None = None, birth_date: str | None = None,
             time_zone: str | None = None, **channels: bool) -> CustomerEvent:
    """A record of the customers topic; ``channels`` as keywords (``email=True``)."""
    return CustomerEvent(event_id=eid, customer_id=cid, occurred_at=t, source=source,
                         kind=kind, referred_by=referred_by,  # type: ignore[arg-type]
                         birth_date=birth_date, time_zone=time_zone,
                         channels=tuple(sorted(channels.items())))
