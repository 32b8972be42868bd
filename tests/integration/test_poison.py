"""Issue 12 point 5: a time-driven change that raises is retried a bounded number of times,
then parked with a dead letter; an event whose processing raises is dead-lettered. The
rest of the partition goes on in both cases.

Before: a raising tick was only logged; the customer stayed due and was retried at every
scan (every second), forever.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from processors.customer import FULL, Step, Transitions
from schemas.codec import encode
from schemas.events import Purchase, PurchaseLine
from streams.worker.metrics import Metrics
from streams.worker.partitioning import owner
from streams.worker.poison import TickGuard
from streams.worker.topics import Topics
from tests import builders
from tests.integration.helpers import (
    counter_value,
    header,
    produce,
    read_topic,
    running_engine,
    stored_states,
    wait_until,
)

DAY = 86_400_000


class Boom(RuntimeError):
    pass


def poisoned(ticked: set[str]) -> Transitions:
    """The product's transitions, except that every customer becomes due a second after its
    newest event, the tick of POISON raises, and applying event ``bad-1`` raises."""

    def apply(state, ev, rules, watermark):
        if ev.event_id == "bad-1":
            raise Boom("cannot apply bad-1")
        return FULL.apply(state, ev, rules, watermark)

    def tick(state, rules, at):
        if state.customer_id == "POISON":
            raise Boom("tick of POISON")
        ticked.add(state.customer_id)
        return Step(state)

    def next_due(state, rules):
        if state.customer_id in ticked or state.max_event_at is None:
            return None
        return state.max_event_at + 1000

    return Transitions(apply, tick, next_due)


def purchase(eid: str, cid: str, t: int) -> Purchase:
    return builders.purchase(eid, t, 500, cid=cid,
                             lines=(PurchaseLine("sku", "grocery", 1, 500),))


async def test_poison_tick_parked_and_raising_event_deadlettered(settings):
    s = settings.with_(clock="live")  # the wall clock makes every customer due at once
    topics = Topics.from_settings(s)
    t0 = int(time.time() * 1000) - DAY
    events = [purchase("p-1", "POISON", t0), purchase("o-1", "OK", t0),
              purchase("bad-1", "OK", t0 + 1), purchase("o-2", "OK", t0 + 2)]
    metrics = Metrics.create()
    ticked: set[str] = set()
    async with running_engine(s, metrics=metrics, transitions=poisoned(ticked)) as engine:
        engine.ticks = TickGuard(topics.deadletter, metrics, attempts=3, backoff_s=0.05)
        await produce(s, [(topics.purchases, e.customer_id.encode(), encode(e))
                          for e in events])
        await wait_until(lambda: counter_value(metrics, "pulse_tick_failures_total",
                                               outcome="parked") == 1,
                         timeout=30, what="POISON parked")
        assert counter_value(metrics, "pulse_tick_failures_total", outcome="retried") == 2
        assert "OK" in ticked

        # parked: out of the due set, failures kept; its events are still applied
        p = owner("POISON", s.partitions)
        client = aioredis.Redis.from_url(s.redis_url)
        keys = engine.store.keys
        assert await client.zscore(keys.due(p), "POISON") is None
        assert await client.hget(keys.tick_failures(p), "POISON") == b"3"
        await client.aclose()
        later = purchase("p-2", "POISON", t0 + 10)
        await produce(s, [(topics.purchases, b"POISON", encode(later))])

        async def applied() -> bool:
            st = (await stored_states(s)).get("POISON")
            return st is not None and st.purchase_count == 2

        await wait_until(applied, timeout=20, what="POISON's later purchase applied")
        assert counter_value(metrics, "pulse_tick_failures_total", outcome="retried") == 2

    dead = await read_topic(s, topics.deadletter, expect=2)
    assert len(dead) == 2
    by_reason = {header(r, "pulse.dlq.topic"): r for r in dead}
    tick_dl = by_reason["time-driven"]
    assert header(tick_dl, "pulse.dlq.reason") == "processing_error"
    assert header(tick_dl, "pulse.dlq.customer") == "POISON"
    assert "tick of POISON" in header(tick_dl, "pulse.dlq.message")
    event_dl = by_reason[topics.purchases]
    assert header(event_dl, "pulse.dlq.reason") == "processing_error"
    assert "cannot apply bad-1" in header(event_dl, "pulse.dlq.message")
    assert event_dl.value == encode(events[2])  # the original bytes
    ok = (await stored_states(s))["OK"]
    assert ok.purchase_count == 2  # o-1 and o-2: the partition went on
