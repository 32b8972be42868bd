"""Guarantee 1 under fire: 50,000 events for 2,000 customers while the worker is SIGKILLed
at random moments and restarted; the final Redis state equals the pure one-pass state,
field by field, for every customer."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from pathlib import Path

import redis.asyncio as aioredis

from processors import wire
from schemas.codec import encode
from streams.devrun import start_worker
from streams.devstack import free_port
from streams.keys import Keys
from streams.partitioning import owner
from streams.topics import Topics
from tests.integration.helpers import produce, wait_until
from tests.integration.history import comparable, history, one_pass, with_duplicates

N_EVENTS = 50_000
N_CUSTOMERS = 2_000


async def stored_states(settings) -> dict[str, object]:
    client = aioredis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    out = {}
    async for key in client.scan_iter(match=keys.customer_pattern(), count=2000):
        out[keys.customer_id_of(key)] = wire.loads(await client.get(key))
    await client.aclose()
    return out


async def fences(settings, topics: Topics) -> dict[tuple[str, int], int]:
    client = aioredis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    out = {}
    for p in range(settings.partitions):
        h = await client.hgetall(keys.fence(p))
        for topic in topics.inputs:
            v = h.get(Keys.offset_field(topic).encode())
            out[(topic, p)] = int(v) if v is not None else -1
    await client.aclose()
    return out


async def test_sigkill_restarts_change_state_exactly_once(settings, tmp_path: Path):
    topics = Topics.from_settings(settings)
    events = history(N_EVENTS, N_CUSTOMERS)
    sent = with_duplicates(events, share=0.02)
    records = [(topics.for_kind(e.event_kind), e.customer_id.encode(), encode(e)) for e in sent]
    last_offset = Counter((t, owner(k.decode(), settings.partitions)) for t, k, _ in records)
    s = settings.with_(web_port=free_port(), instance_id="exactly-once-worker")
    rng = random.Random(3)

    async def producer() -> None:
        # ~20 s of traffic so the kills land in the middle of it
        chunk = 1000
        for i in range(0, len(records), chunk):
            await produce(settings, records[i:i + chunk])
            await asyncio.sleep(0.4)

    prod = asyncio.create_task(producer())
    worker = start_worker(s, tmp_path, "worker-0")
    kills = 0
    try:
        for kills in range(1, 4):
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            assert worker.alive(), worker.log_tail()
            worker.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(worker.proc.wait, 10)
            worker = start_worker(s, tmp_path, f"worker-{kills}")
        await prod

        async def caught_up() -> bool:
            f = await fences(settings, topics)
            return all(f[tp] == n - 1 for tp, n in last_offset.items())

        await wait_until(caught_up, timeout=120, interval=0.5, what="all offsets applied")
    finally:
        prod.cancel()
        worker.stop()
    assert kills == 3

    expected = one_pass(events)
    stored = await stored_states(settings)
    assert set(stored) == set(expected)
    end = max(e.occurred_at for e in events)
    mismatched = [cid for cid in expected
                  if comparable(stored[cid], as_of=end) != comparable(expected[cid], as_of=end)]
    assert not mismatched, (
        f"{len(mismatched)} customers differ, e.g. {mismatched[0]}:\n"
        f"stored   {stored[mismatched[0]]}\nexpected {expected[mismatched[0]]}")
    assert sum(st.purchase_count for st in stored.values()) == sum(
        1 for e in events if e.event_kind == "purchase")
