"""Churn alerts through the real broker and Redis.

A detractor with an unresolved urgent ticket: an occasional buyer (five purchases 40 days
apart) answers NPS 3 and opens an urgent ticket. Exactly one alert reaches churn-alerts,
at high, naming both reasons, caused by the ticket event, at its event time, with the
alert id the pure processors give for the same events (so a re-sent alert is a duplicate
downstream). A regular, happy customer in the same partitions gets nothing.

The silent customer (needs the inactivity scanner, not wired yet) -- the test to add with it:
a regular buyer (12 purchases 14 days apart) goes silent while other customers' events
keep the partition clocks moving (PULSE_CLOCK=event, e.g. one filler purchase a day for
90 days on every partition). Expected: exactly one medium alert and one high alert for
that customer, cause "inactivity", with ``occurred_at`` equal to the due times that
``processors.churn.levels.next_check_at`` gives for the stored state (the medium one from the
state after the last purchase, the high one from the state after the medium alert) and
alert ids ``churn-...`` equal to those of ``on_tick`` run on the same states; replaying the
same input into a fresh Redis gives the same records, and a worker killed between the two
alerts re-sends nothing new (outbox) and misses nothing.
"""

from __future__ import annotations

import orjson

from processors.churn.layer import ChurnAlert
from processors.customer import apply
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import CustomerState
from schemas.codec import encode, format_time, parse_time
from schemas.events import Event, Purchase, SupportTicket, Survey
from streams.worker.topics import Topics
from streams.worker.views import load_state
from tests.integration.helpers import produce, read_topic, running_engine

T = parse_time("2026-01-05T10:00:00Z")

# This regular buyer's silence is nudged first (README "Engagement"); with the default
# quiets_churn_alert the nudge answers it and no churn alert goes out. These tests are about
# the churn alert, so the service team is alerted as well.
LOUD = parse_rules({"engagement": {"replenishment": {"quiets_churn_alert": False}}})
H = 3_600_000
D = 24 * H
CID, HAPPY = "C-DETRACTOR", "C-HAPPY"


def purchases(cid: str, n: int, gap_days: int, last: int) -> list[Event]:
    return [Purchase(f"{cid}-p{i}", cid, last - (n - 1 - i) * gap_days * D, "pos", f"{cid}-o{i}",
                     "store", "purchase", 4_000 + 100 * i, "EUR") for i in range(n)]


EVENTS: list[Event] = sorted([
    *purchases(CID, 5, 40, T),
    Survey(f"{CID}-nps", CID, T + 3 * D, "survey-tool", "S-1", "nps", 3, "relationship"),
    SupportTicket(f"{CID}-t1", CID, T + 3 * D + H, "crm", "TCK-1", "opened", "urgent",
                  "phone", "delivery", -0.6),
    *purchases(HAPPY, 12, 14, T + 3 * D),
    Survey(f"{HAPPY}-nps", HAPPY, T + 3 * D + 2 * H, "survey-tool", "S-2", "nps", 10,
           "relationship"),
], key=lambda e: e.occurred_at)


def expected_alerts() -> list[dict[str, object]]:
    """What the pure processors emit for the same events, customer by customer."""
    out = []
    for cid in (CID, HAPPY):
        state: CustomerState | None = None
        for ev in (e for e in EVENTS if e.customer_id == cid):
            now = ev.occurred_at - DEFAULT_RULES.allowed_lateness_ms
            step = apply(state, ev, DEFAULT_RULES, now)
            state = step.state
            out += [o.as_dict() for o in step.outputs if isinstance(o, ChurnAlert)]
    return out


async def test_a_detractor_with_an_unresolved_urgent_ticket_is_alerted_with_both_reasons(
        settings) -> None:
    topics = Topics.from_settings(settings)
    async with running_engine(settings):
        await produce(settings, [(topics.for_kind(e.event_kind), e.customer_id.encode(),
                                  encode(e)) for e in EVENTS])
        records = await read_topic(settings, topics.alerts, expect=1, settle=2.0)
        state = await load_state(settings, CID)

    got = [orjson.loads(r.value) for r in records]
    assert len(got) == 1, got
    alert = got[0]
    assert records[0].key == CID.encode()
    assert (alert["kind"], alert["level"], alert["customer_id"]) == ("alert", "high", CID)
    codes = [r["code"] for r in alert["reasons"]]
    assert "nps_detractor" in codes and "urgent_ticket" in codes, alert["reasons"]
    texts = " | ".join(r["text"] for r in alert["reasons"])
    assert "NPS detractor: 3/10" in texts and "unresolved urgent ticket TCK-1" in texts
    assert alert["suggested_action"] == "service_recovery_call"
    assert alert["cause_event_id"] == f"{CID}-t1"
    assert alert["occurred_at"] == format_time(T + 3 * D + H)
    assert got == expected_alerts()  # same id, reasons, figures as the pure processors
    assert state is not None and state.churn is not None
    assert state.churn.level == "high" and state.churn.alerted_high == T + 3 * D + H


SILENT = "C-SILENT"


def fillers(partition: int, partitions: int, start: int, days: int) -> list[Event]:
    """One purchase a day by customers of ``partition``: they move its clock on."""
    from streams.worker.partitioning import owner

    ids = [f"F{i}" for i in range(500) if owner(f"F{i}", partitions) == partition][:5]
    return [Purchase(f"fill-{d}", ids[d % len(ids)], start + d * D + 7 * H, "pos", f"fo-{d}",
                     "store", "purchase", 2_500, "EUR") for d in range(days)]


def expected_silence(events: list[Event], end: int, rules: Rules = LOUD
                     ) -> list[dict[str, object]]:
    """The pure processors: the customer's events, then every time-driven change due up to
    ``end`` at its own due time (what the engine's scanner must reproduce)."""
    from processors.customer import next_due, tick

    state: CustomerState | None = None
    out: list[dict[str, object]] = []
    for ev in events:
        step = apply(state, ev, rules, ev.occurred_at - rules.allowed_lateness_ms)
        state = step.state
        out += [o.as_dict() for o in step.outputs if isinstance(o, ChurnAlert)]
    assert state is not None
    while (at := next_due(state, rules)) is not None and at <= end:
        step = tick(state, rules, at)
        state = step.state
        out += [o.as_dict() for o in step.outputs if isinstance(o, ChurnAlert)]
    return out


async def test_a_customer_who_goes_silent_gets_one_high_alert_at_the_right_event_time(
        settings) -> None:
    from streams.worker.partitioning import owner

    topics = Topics.from_settings(settings)
    own = purchases(SILENT, 12, 14, T)  # a regular buyer every two weeks, then silence
    filler = fillers(owner(SILENT, settings.partitions), settings.partitions, T, 150)
    end = max(e.occurred_at for e in filler)
    events = sorted([*own, *filler], key=lambda e: e.occurred_at)
    async with running_engine(settings, LOUD):
        await produce(settings, [(topics.for_kind(e.event_kind), e.customer_id.encode(),
                                  encode(e)) for e in events])
        want = expected_silence(own, end)
        records = await read_topic(settings, topics.alerts, expect=len(want), timeout=60,
                                   settle=3.0)
    got = [orjson.loads(r.value) for r in records if r.key == SILENT.encode()]
    high = [a for a in got if a.get("level") == "high" and a.get("kind") == "alert"]
    assert len(high) == 1, got
    assert high[0]["cause_event_id"] == "inactivity"
    assert parse_time(high[0]["occurred_at"]) > own[-1].occurred_at + 14 * D
    assert got == want  # same ids, levels and event times as the pure processors
    assert [a["level"] for a in want if a.get("kind") == "alert"] == ["medium", "high"]
