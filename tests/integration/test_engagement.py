"""Engagement records through the real broker and Redis (README "Engagement").

Each customer's records on the engagement topic are exactly what the pure processors give
for the same events with every time-driven change run at its due time (``expected``): same
ids, reasons, times and consent. Other customers' purchases on the same partition move its
clock on (PULSE_CLOCK=event: time-driven changes run up to the partition's newest event time
minus the lateness), so the birthday, the nudge and the lapse happen by silence, in event
time. Sending the same records again changes nothing (no occasion twice).
"""

from __future__ import annotations

from typing import Any

import orjson

from processors.customer import apply, next_due, tick
from processors.rules import DEFAULT_RULES, parse_rules
from processors.state import CustomerState
from schemas.codec import encode, format_time, parse_time
from schemas.events import CustomerEvent, Event, Purchase
from streams.worker.partitioning import owner
from streams.worker.topics import Topics
from tests.integration.helpers import produce, read_topic, running_engine

T = parse_time("2026-01-05T10:00:00Z")
H = 3_600_000
D = 24 * H
LATENESS = DEFAULT_RULES.allowed_lateness_ms
LOUD = parse_rules({"engagement": {"replenishment": {"quiets_churn_alert": False}}})


def fillers(cid: str, partitions: int, start: int, days: int) -> list[Event]:
    """One purchase a day by other customers of ``cid``'s partition: its clock moves on."""
    partition = owner(cid, partitions)
    ids = [f"F{i}" for i in range(500) if owner(f"F{i}", partitions) == partition][:5]
    return [Purchase(f"fill-{cid}-{d}", ids[d % len(ids)], start + d * D + 7 * H, "pos",
                     f"fo-{cid}-{d}", "store", "purchase", 2_500, "EUR") for d in range(days)]


def expected(events: list[Event], end: int) -> list[dict[str, Any]]:
    """The pure processors: the customer's events, each after what was due before it, then
    every time-driven change due up to ``end``, at its due time."""
    state: CustomerState | None = None
    out: list[dict[str, Any]] = []

    def ticks(until: int) -> None:
        nonlocal state
        while state is not None and (at := next_due(state, DEFAULT_RULES)) is not None \
                and at <= until:
            step = tick(state, DEFAULT_RULES, at)
            state = step.state
            out.extend(o.as_dict() for o in step.outputs if o.stream == "engagement")

    for ev in events:
        ticks(ev.occurred_at)
        step = apply(state, ev, DEFAULT_RULES, ev.occurred_at - LATENESS)
        state = step.state
        out.extend(o.as_dict() for o in step.outputs if o.stream == "engagement")
    ticks(end)
    return out


async def run(settings: Any, own: list[Event], days: int, again: bool = False,
              alerts: list[dict[str, Any]] | None = None
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Send the customer's events and ``days`` of filler; the customer's engagement records
    read back, and the pure processors' (up to the partition clock minus the lateness).
    ``alerts``: filled with the customer's churn alerts read back."""
    topics = Topics.from_settings(settings)
    cid = own[0].customer_id
    filler = fillers(cid, settings.partitions, T, days)
    end = max(e.occurred_at for e in filler) - LATENESS
    want = expected(own, end)
    records = [(topics.for_kind(e.event_kind), e.customer_id.encode(), encode(e))
               for e in sorted([*own, *filler], key=lambda e: e.occurred_at)]
    async with running_engine(settings):
        await produce(settings, records)
        if again:  # a producer's retry of everything: duplicates, no second record
            await produce(settings, records)
        got = await read_topic(settings, topics.engagement, expect=len(want), timeout=60,
                               settle=3.0)
        if alerts is not None:
            alerts += [orjson.loads(r.value) for r in await read_topic(
                settings, topics.alerts, expect=0, timeout=5, settle=1.0)
                if r.key == cid.encode()]
    return [orjson.loads(r.value) for r in got if r.key == cid.encode()], want


async def test_a_birthday_in_the_customer_time_zone_once(settings: Any) -> None:
    cid = "C-BDAY"
    own: list[Event] = [
        CustomerEvent("b-1", cid, T, "web", "signup", None, "1990-01-20", "Asia/Tokyo"),
        CustomerEvent("b-2", cid, T + H, "web", "consent",
                      channels=(("email", True), ("sms", False))),
        Purchase("b-3", cid, T + 2 * H, "web", "o-b3", "web", "purchase", 4_500, "EUR"),
    ]
    got, want = await run(settings, own, 30, again=True)
    assert got == want
    bdays = [m for m in got if m["kind"] == "birthday"]
    assert len(bdays) == 1
    b = bdays[0]
    assert b["occurred_at"] == "2026-01-20T00:00:00.000Z"  # 09:00 in Tokyo
    assert (b["occasion"], b["offer"], b["marketing"]) == ("2026", "birthday_gift", True)
    assert b["consent"] == {"email": True, "sms": False, "push": None, "post": None,
                            "phone": None}


async def test_a_replenishment_nudge_when_overdue_against_the_own_gap(settings: Any) -> None:
    cid = "C-NUDGE"
    own: list[Event] = [Purchase(f"n-{i}", cid, T + i * 10 * D, "pos", f"o-n{i}", "store",
                                 "purchase", 3_000, "EUR") for i in range(3)]
    alerts: list[dict[str, Any]] = []
    got, want = await run(settings, own, 150, alerts=alerts)
    assert got == want
    nudges = [m for m in got if m["kind"] == "replenishment"]
    assert len(nudges) == 1
    n = nudges[0]
    assert n["occurred_at"] == format_time(T + 35 * D)  # 15 days of silence, 1.5 x 10
    assert n["occasion"] == str(T + 20 * D)  # the silence: since the last purchase
    assert n["reason"].startswith("replenishment: 15 days since the last purchase, 1.5x")
    # the silence goes on and raises the churn level: the nudge answered it, no churn alert
    # (with quiets_churn_alert off the pure processors alert in the same window)
    assert alerts == []
    state: CustomerState | None = None
    for ev in own:
        state = apply(state, ev, LOUD, ev.occurred_at).state
    assert state is not None
    loud = []
    while (at := next_due(state, LOUD)) is not None and at <= T + 149 * D + 7 * H - LATENESS:
        step = tick(state, LOUD, at)
        state = step.state
        loud += [o for o in step.outputs if o.stream == "alerts"]
    assert loud and all(o.cause_event_id == "inactivity" for o in loud)  # type: ignore[attr-defined]


async def test_segment_changes_by_an_event_and_by_silence(settings: Any) -> None:
    cid = "C-SEG"
    own: list[Event] = [
        Purchase("s-1", cid, T, "pos", "o-s1", "store", "purchase", 120_000, "EUR"),
        Purchase("s-2", cid, T + 40 * D, "pos", "o-s2", "store", "purchase", 90_000, "EUR"),
    ]
    got, want = await run(settings, own, 240)
    assert got == want
    changes = [(c["segment"], c["cause_event_id"]) for c in got
               if c["kind"] == "segment_change"]
    # by the purchase, by time (new_days over), by the purchase, by the churn level rising
    # with silence, by time (lapsed_days of silence)
    assert changes == [("new", "s-1"), ("one_time", None), ("big_spender", "s-2"),
                       ("at_risk", None), ("lapsed", None)]
    times = {c["segment"]: c["occurred_at"] for c in got if c["kind"] == "segment_change"}
    assert times["one_time"] == format_time(T + 30 * D)
    assert times["big_spender"] == format_time(T + 40 * D)
    assert times["lapsed"] == format_time(T + 40 * D + 180 * D)
    big = next(c for c in got if c.get("segment") == "big_spender")
    assert big["reason"] == "big spender: 365-day net spend 2,100.00 EUR ≥ 2,000.00"
    assert (big["previous_segment"], big["tags"]) == ("one_time", ["active"])
