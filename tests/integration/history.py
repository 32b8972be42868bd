"""A deterministic mixed history for the exactly-once and partitioner tests.

Independent of the simulator on purpose: a test's input should not move when the
simulator's model is tuned. Disorder stays within the allowed lateness, so no valid event
is too late and the final state is defined whatever the arrival order.
"""

from __future__ import annotations

import random

import msgspec

from processors.churn.explain import score as churn_score
from processors.customer import apply
from processors.errors import Rejected
from processors.rules import DEFAULT_RULES, Rules
from processors.state import CustomerState
from schemas.events import Event, Purchase, PurchaseLine, SupportTicket, Survey

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CATEGORIES = ("grocery", "apparel", "electronics", "home", "beauty")


def history(n_events: int, n_customers: int, seed: int = 7,
            span_ms: int = 300 * 86_400_000) -> list[Event]:
    rng = random.Random(seed)
    out: list[Event] = []
    open_tickets: dict[str, list[str]] = {}
    step = span_ms // n_events
    for i in range(n_events):
        cid = f"C{rng.randrange(n_customers):05d}"
        t = T0 + i * step + rng.randrange(0, 3_600_000)  # up to an hour of disorder
        r = rng.random()
        if r < 0.6:
            lines = tuple(
                PurchaseLine(f"sku-{rng.randrange(500)}", rng.choice(CATEGORIES),
                             rng.randint(1, 3), rng.randrange(0, 20_000))
                for _ in range(rng.randint(1, 3))
            )
            amount = sum(ln.quantity * ln.unit_price_minor for ln in lines)
            currency = "EUR" if rng.random() < 0.9 else "USD"
            out.append(Purchase(f"h-{i}", cid, t, "pos", f"o-{i}", rng.choice(
                ("store", "web", "app")), "purchase", amount, currency, lines,
                f"S{rng.randrange(20)}"))
        elif r < 0.8:
            tickets = open_tickets.setdefault(cid, [])
            if tickets and rng.random() < 0.6:
                tid = tickets[0]
                status = rng.choice(("responded", "resolved", "closed"))
                if status in ("resolved", "closed"):
                    tickets.pop(0)
            else:
                tid = f"tk-{i}"
                tickets.append(tid)
                status = "opened"
            out.append(SupportTicket(f"h-{i}", cid, t, "crm", tid, status,
                                     rng.choice(("low", "normal", "high", "urgent")), "email",
                                     "delivery", round(rng.uniform(-1, 1), 2)))
        else:
            kind = rng.choice(("nps", "csat", "ces"))
            lo, hi = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}[kind]
            out.append(Survey(f"h-{i}", cid, t, "survey-tool", f"sv-{i}", kind,
                              rng.randint(lo, hi), "checkout"))
    return out


def with_duplicates(events: list[Event], share: float, seed: int = 11) -> list[Event]:
    """Producer retries: some events sent again a little later (same event_id)."""
    rng = random.Random(seed)
    out = list(events)
    for i, ev in enumerate(events):
        if rng.random() < share:
            out.insert(min(len(out), i + rng.randint(1, 50) + len(out) - len(events)), ev)
    return out


def one_pass(events: list[Event], rules: Rules = DEFAULT_RULES) -> dict[str, CustomerState]:
    """The reference: the pure processors over the whole history, in one pass, in the order
    the events were produced (each topic's order is the one the engine sees)."""
    states: dict[str, CustomerState] = {}
    high: dict[str, int] = {}  # per topic, like the engine's watermarks
    for ev in events:  # in the order produced: each topic's own order is what the engine keeps
        h = high[ev.event_kind] = max(high.get(ev.event_kind, 0), ev.occurred_at)
        try:
            step = apply(states.get(ev.customer_id), ev, rules, h - rules.allowed_lateness_ms)
        except Rejected:  # the pipeline dead-letters it and leaves the state unchanged
            continue
        states[ev.customer_id] = step.state
    return states


def comparable(state: CustomerState, rules: Rules = DEFAULT_RULES, as_of: int | None = None,
               *, loyalty: bool = True) -> tuple[CustomerState, float]:
    """The state without its churn and engagement records, plus the churn score as of
    ``as_of``.

    The churn record keeps when each level was reached and alerted, which depends on the
    order the topics' events met (the engine merges them in event time; a one-pass reference
    in production order differs within the lateness). Everything else is confluent, and the
    score is a function of it, so both are compared exactly. The engagement record reads the
    churn level and keeps when each segment and message came: as order-dependent (its
    messages' ids are one per occasion whatever the order). Loyalty depends on the order
    of the purchase topic itself (the purchase that crosses a tier earns at it): leave it out
    (``loyalty=False``) where that order is undefined, as with a random partitioner."""
    at = as_of if as_of is not None else (state.max_event_at or 0)
    kept = msgspec.structs.replace(state, churn=None, engagement=None)
    if not loyalty:
        kept = msgspec.structs.replace(kept, loyalty=None)
    return kept, churn_score(state, rules, at).score
