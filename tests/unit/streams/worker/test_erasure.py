"""Erasure, the pure parts (streams/worker/erasure.py): the receipt names the customer by a
keyed hash only, and the KPI gauges of present levels lose the customer while the day
counters keep their counts."""

from __future__ import annotations

import hashlib
from collections import Counter

import orjson

from processors.customer import apply, tick
from processors.kpi import DAYS, GAUGES
from processors.rules import DEFAULT_RULES
from processors.state import CustomerState
from schemas.codec import format_time
from schemas.events import Redemption
from streams.worker.erasure import customer_hash, level_deltas, receipt
from tests.builders import purchase, survey, ticket

T0 = 1_790_000_000_000
DAY = 86_400_000
KEY = b"k" * 32


def history(cid: str) -> tuple[CustomerState, Counter[tuple[str, str]]]:
    """A customer with points, a tier, open tickets and a churn level; the KPI counters its
    history added up to."""
    events = [
        purchase("p1", T0, 250_000, cid=cid),  # a tier above the first, points
        ticket("t1", T0 + DAY, "T1", "opened", "urgent", cid=cid),
        ticket("t2", T0 + DAY, "T2", "opened", "low", cid=cid),
        survey("s1", T0 + 2 * DAY, "nps", 2, cid=cid),
        Redemption("r1", cid, T0 + 3 * DAY, "app", "mug", 10),
    ]
    state = None
    counters: Counter[tuple[str, str]] = Counter()
    for ev in events:
        step = apply(state, ev, DEFAULT_RULES, ev.occurred_at)
        state = step.state
        for d in step.kpi:
            counters[(d.bucket, d.field)] += d.delta
    assert state is not None
    step = tick(state, DEFAULT_RULES, T0 + 200 * DAY)  # silence: the churn level rises
    for d in step.kpi:
        counters[(d.bucket, d.field)] += d.delta
    return step.state, counters


def test_the_gauges_lose_the_customer_and_the_day_counters_keep_their_counts() -> None:
    state, counters = history("C1")
    assert state.loyalty is not None and state.loyalty.balance > 0 and state.loyalty.tier > 0
    assert state.churn is not None and state.open_tickets
    gauges = {f: n for (b, f), n in counters.items() if b == GAUGES and n}
    assert {"customers", "points", "open:urgent", "open:low"} <= set(gauges)
    assert any(f.startswith("tier:") for f in gauges) and any(f.startswith("risk:")
                                                              for f in gauges)
    days_before = {k: n for k, n in counters.items() if k[0] == DAYS}
    at = T0 + 201 * DAY
    for d in level_deltas(state, DEFAULT_RULES, at):
        counters[(d.bucket, d.field)] += d.delta
    assert {f: n for (b, f), n in counters.items() if b == GAUGES and n} == {}
    days_after = {k: n for k, n in counters.items() if k[0] == DAYS}
    forfeited = (DAYS, f"{at // DAY}:ptx")
    assert days_after.pop(forfeited) - days_before.pop(forfeited, 0) == state.loyalty.balance
    assert days_after == days_before  # what happened stays counted


def test_the_receipt_names_the_customer_by_a_keyed_hash_only() -> None:
    state, _ = history("C000042")
    ev = Redemption("erase-C000042", "C000042", T0 + 300 * DAY, "api", "-", 1)
    doc = receipt(KEY, ev, state, T0 + 301 * DAY, ("t-churn-alerts", "t-points-accruals"))
    text = orjson.dumps(doc).decode()
    assert "C000042" not in text  # not the id, not the event id that contains it
    assert doc["customer_hash"] == customer_hash(KEY, "C000042") != customer_hash(b"x", "C000042")
    assert doc["customer_hash"] != hashlib.sha256(b"C000042").hexdigest()
    assert (doc["requested_at"], doc["erased_at"]) == (
        format_time(T0 + 300 * DAY), format_time(T0 + 301 * DAY))
    assert doc["held"] and doc["removed"]["state"] and doc["removed"]["dedup_ids"] == len(
        state.seen) > 0
    assert doc["tombstones"] == ["t-churn-alerts", "t-points-accruals"]
    again = receipt(KEY, ev, state, T0 + 301 * DAY, ("t-churn-alerts", "t-points-accruals"))
    assert again == doc  # a re-sent receipt is the same record
    nothing = receipt(KEY, ev, None, T0 + 301 * DAY, ())
    assert not nothing["held"] and not any(nothing["removed"].values())
