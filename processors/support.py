"""Support tickets: the open-ticket table and SLA breaches of one customer.

Theory of operation
-------------------
Only open tickets are remembered (bounded by ``support.max_open_tickets``), so a ticket is
either *tracked* (in ``state.open_tickets``) or not. Transitions, as data::

    status      tracked ticket                          untracked ticket
    opened      Rejected("invalid"): already open       open it (responded = no)
    reopened    Rejected("invalid"): already open       open it again (responded = yes)
    responded   first response: settle its SLA          nothing (closed long ago, or unseen)
    resolved    settle SLAs, forget the ticket          nothing
    closed      settle SLAs, forget the ticket          nothing

A reopened ticket's clock restarts at the reopen time and only its resolution SLA runs
again (the customer has had a first response). The SLA target is the one of the ticket's
latest priority (an escalation tightens it). A breach is settled when the event that ends
the wait arrives: a first response later than ``opened_at + first_response`` and a
resolution later than ``opened_at + resolution`` count one each. Open tickets past a
deadline are breaches "as of" a time (``pending_breaches``), which ``view`` adds. When the
table is full, opening one more drops the oldest by ``(opened_at, ticket_id)`` and settles
its breaches as of the opening event's time. Everything here depends on the ticket topic's
own order only, which keeps the customer state confluent.
"""

from __future__ import annotations

import math
from typing import Any

from processors.errors import INVALID, Rejected
from processors.rules import Rules, SupportSla
from processors.state import CustomerState, OpenTicket
from schemas.events import TICKET_PRIORITIES, TICKET_STATUSES, SupportTicket


def _order(t: OpenTicket) -> tuple[int, str]:
    return (t.opened_at, t.ticket_id)


def sla_deadlines(ticket: OpenTicket, sla: SupportSla, priority: str | None = None
                  ) -> tuple[int | None, int]:
    """The SLA deadlines of an open ticket: ``(first response, resolution)``, the first None
    once it was responded to; by the targets of ``priority`` (default: the ticket's latest).
    A wait is a breach when the event that ends it comes *after* the deadline. The one
    home of the rule: the breaches here, churn's SLA signal and the view use it."""
    target = sla.of(ticket.priority if priority is None else priority)
    opened = ticket.opened_at
    first = None if ticket.responded else opened + target.first_response_ms
    return first, opened + target.resolution_ms


def settles(ticket: OpenTicket, status: str) -> tuple[bool, bool]:
    """Which deadlines of a tracked ticket an event with ``status`` (responded, resolved,
    closed) settles: ``(first response, resolution)``. A first response is ``responded``, or
    ``resolved`` / ``closed`` with none before; ``resolved`` / ``closed`` settle the
    resolution. (The KPIs count settled deadlines with it.)"""
    return not ticket.responded, status != "responded"


def pending_breaches(ticket: OpenTicket, sla: SupportSla, as_of: int) -> int:
    """Breaches of an open ticket whose deadlines lie before ``as_of``."""
    first, resolution = sla_deadlines(ticket, sla)
    return int(first is not None and as_of > first) + int(as_of > resolution)


def ticket_changes(state: CustomerState, ev: SupportTicket, rules: Rules) -> dict[str, Any]:
    """Field changes for a ticket event (for ``processors.state.evolve``). Pure."""
    if ev.status not in TICKET_STATUSES:
        raise Rejected(INVALID, f"ticket status {ev.status!r} is not one of {TICKET_STATUSES}")
    if ev.priority not in TICKET_PRIORITIES:
        raise Rejected(
            INVALID, f"ticket priority {ev.priority!r} is not one of {TICKET_PRIORITIES}"
        )
    changes: dict[str, Any] = {}
    t = ev.occurred_at
    if ev.sentiment is not None:
        s = float(ev.sentiment)
        if not (math.isfinite(s) and -1.0 <= s <= 1.0):
            raise Rejected(INVALID, f"ticket sentiment {ev.sentiment!r} is not in [-1, 1]")
        if state.last_sentiment_at is None or t >= state.last_sentiment_at:
            changes.update(last_sentiment=s, last_sentiment_at=t)

    sla = rules.support.sla
    table = list(state.open_tickets)
    idx = next((i for i, o in enumerate(table) if o.ticket_id == ev.ticket_id), None)

    if ev.status in ("opened", "reopened"):
        if idx is not None:
            raise Rejected(INVALID, f"ticket {ev.ticket_id!r} is {ev.status} but already open")
        table.append(OpenTicket(ev.ticket_id, t, ev.priority, ev.status == "reopened"))
        table.sort(key=_order)
        if ev.status == "opened":
            changes["tickets_opened"] = state.tickets_opened + 1
        else:
            changes["tickets_reopened"] = state.tickets_reopened + 1
        if len(table) > rules.support.max_open_tickets:
            dropped = table.pop(0)
            changes["tickets_dropped"] = state.tickets_dropped + 1
            changes["sla_breaches"] = state.sla_breaches + pending_breaches(dropped, sla, t)
        changes["open_tickets"] = tuple(table)
        return changes

    if idx is None:  # untracked: nothing to settle
        return changes
    ticket = table[idx]
    first, resolution = sla_deadlines(ticket, sla, ev.priority)  # an escalation tightens
    late_response = first is not None and t > first
    if ev.status == "responded":
        table[idx] = ticket._replace(priority=ev.priority, responded=True)
        breaches = int(late_response)
    else:  # resolved / closed
        del table[idx]
        breaches = int(late_response) + int(t > resolution)
    changes["open_tickets"] = tuple(table)
    if breaches:
        changes["sla_breaches"] = state.sla_breaches + breaches
    return changes
