"""The hypothesis history harness of the processors' property tests.

Histories are generated in a "true" order whose disorder stays within the allowed lateness:
event i occurs at ``base_i - jitter_i`` with ``base`` non-decreasing and ``0 <= jitter <=
lateness``. Each topic is that order's subsequence. An interleaving of the topics is drawn
by a random merge that only takes a topic's next event when it is at most ``lateness``
newer than every event still to come; the topic holding the earliest remaining event of the
true order always qualifies, so every such merge exists and nothing in it is too late.
``process`` is the shell's loop (batches, the state stored through ``wire`` between them).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from processors import wire
from processors.customer import Step, apply
from processors.errors import Rejected
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS, HOUR_MS
from schemas import events as schema
from schemas.events import CustomerEvent, Event, Purchase, Redemption, SupportTicket, Survey

T0 = 1_704_067_200_000
TIGHT = parse_rules({"allowed_lateness_ms": DAY_MS // 2, "dedup_window_max": 3,
                     "support": {"max_open_tickets": 2}, "surveys": {"rolling_answers": 2}})
# dedup cap above the history length: an id evicted by the cap is the documented limit of
# duplicate detection (tests/unit/processors/test_customer.py), not something to test here
SHORT_LATENESS = parse_rules({"allowed_lateness_ms": DAY_MS // 2})
RULES = st.sampled_from([DEFAULT_RULES, TIGHT])
GAPS = [0, 1, 60_000, HOUR_MS, 13 * HOUR_MS, DAY_MS, 3 * DAY_MS, 40 * DAY_MS, 365 * DAY_MS,
        400 * DAY_MS]
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class History:
    rules: Rules
    events: tuple[Event, ...]  # the true order (also a valid processing order)

    def topics(self) -> list[list[Event]]:
        by: dict[type, list[Event]] = {}
        for ev in self.events:
            by.setdefault(type(ev), []).append(ev)
        return list(by.values())


@st.composite
def histories(draw: st.DrawFn, max_events: int = 40,
              rules_from: st.SearchStrategy[Rules] = RULES) -> History:
    rules = draw(rules_from)
    lateness = rules.allowed_lateness_ms
    n = draw(st.integers(1, max_events))
    base = T0
    events: list[Event] = []
    for i in range(n):
        base += draw(st.sampled_from(GAPS))
        t = base - draw(st.one_of(st.just(0), st.integers(0, lateness)))
        eid, c = f"e{i}", "c1"
        kind = draw(st.sampled_from(["purchase", "purchase", "ticket", "survey", "redemption",
                                     "customer"]))
        ev: Event
        if kind == "purchase":
            ev = Purchase(eid, c, t, "pos", f"o{i}", "store",
                          draw(st.sampled_from(["purchase", "purchase", "refund"])),
                          draw(st.integers(0, 5_000)),
                          draw(st.sampled_from(["EUR", "EUR", "USD", "JPY", "XXX"])))
        elif kind == "ticket":
            ev = SupportTicket(eid, c, t, "crm", draw(st.sampled_from(["T1", "T2", "T3"])),
                               draw(st.sampled_from(["opened", "responded", "resolved",
                                                     "reopened", "closed"])),
                               draw(st.sampled_from(["low", "normal", "high", "urgent"])),
                               "email", "billing",
                               draw(st.none() | st.floats(-1, 1, allow_nan=False)))
        elif kind == "survey":
            skind = draw(st.sampled_from(["nps", "csat", "ces"]))
            lo, hi = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}[skind]
            ev = Survey(eid, c, t, "survey-tool", f"s{i}", skind,  # type: ignore[arg-type]
                        draw(st.integers(lo, hi)), "checkout")
        elif kind == "redemption":
            ev = Redemption(eid, c, t, "app", "r1", 100)
        else:
            ev = draw(customer_records(eid, c, t))
        events.append(ev)
    return History(rules, tuple(events))


@st.composite
def customer_records(draw: st.DrawFn, eid: str, c: str, t: int) -> CustomerEvent:
    """A record of the customers topic: few values, so that "latest wins" and its ties
    (the same time, the same channel) are exercised; now and then an erasure request (a
    dead letter) or a self-referral (refused)."""
    kinds = schema.CUSTOMER_KINDS
    kind = draw(st.sampled_from([*kinds[:3], *kinds[:3], kinds[3]]))
    bd = st.none() | st.sampled_from(["--02-29", "1990-05-17", "--12-31"])
    tz = st.none() | st.sampled_from(["UTC", "Europe/Paris", "Asia/Tokyo"])
    if kind == "signup":
        return CustomerEvent(eid, c, t, "web", kind,
                             draw(st.none() | st.sampled_from(["r1", "r2", c])), draw(bd),
                             draw(tz))
    if kind == "profile_update":
        return CustomerEvent(eid, c, t, "crm", kind, None, draw(bd), draw(tz))
    if kind == "consent":
        chosen = draw(st.dictionaries(st.sampled_from(schema.CONSENT_CHANNELS[:3]), st.booleans(),
                                      min_size=1))
        return CustomerEvent(eid, c, t, "app", kind, channels=tuple(sorted(chosen.items())))
    return CustomerEvent(eid, c, t, "crm", kind)  # type: ignore[arg-type]


def interleave(h: History, rnd: random.Random) -> list[Event]:
    lateness = h.rules.allowed_lateness_ms
    queues = [list(reversed(q)) for q in h.topics()]  # pop() from the end = next event
    out: list[Event] = []
    while any(queues):
        floor = min(e.occurred_at for q in queues for e in q)
        safe = [q for q in queues if q and q[-1].occurred_at <= floor + lateness]
        out.append(rnd.choice(safe).pop())
    return out


@dataclass
class Run:
    state: CustomerState | None
    accepted: list[Event]
    rejected: dict[str, str]  # event_id -> reason


def process(events: list[Event], rules: Rules, cuts: set[int] = frozenset(),  # type: ignore[assignment]
            watermark_per_batch: bool = False,
            transition: Callable[[CustomerState | None, Event, Rules, int], Step] = apply,
            ) -> Run:
    """The shell's loop: batches cut before the given indexes, the state stored through
    ``wire`` between batches, the watermark = max event time seen - lateness (advanced per
    event like the shell, or only at batch start)."""
    run = Run(None, [], {})
    high = 0
    now = -1
    for i, ev in enumerate(events):
        if i in cuts and run.state is not None:
            run.state = wire.loads(wire.dumps(run.state))
        if not watermark_per_batch or i in cuts or i == 0:
            now = high - rules.allowed_lateness_ms
        high = max(high, ev.occurred_at)
        if not watermark_per_batch:
            now = high - rules.allowed_lateness_ms
        try:
            step = transition(run.state, ev, rules, now)
        except Rejected as exc:
            run.rejected[ev.event_id] = exc.reason
            continue
        assert not step.duplicate  # outputs (ledger entries): test_loyalty_properties.py
        run.state = step.state
        run.accepted.append(ev)
    return run
