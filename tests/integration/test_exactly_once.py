"""Guarantee 1 under fire: 50,000 events for 2,000 customers while the worker is SIGKILLed
at random moments and restarted; the final Redis state equals the pure one-pass state,
field by field, for every customer."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest

from streams.tools.devrun import start_worker
from streams.tools.devstack import free_port
from streams.worker.store import FenceMoved, ShardCommit, Store
from tests.integration.helpers import (
    as_records,
    differing,
    produce,
    stored_states,
    wait_applied,
)
from tests.integration.history import history, with_duplicates

N_EVENTS = 50_000
N_CUSTOMERS = 2_000


async def test_sigkill_restarts_change_state_exactly_once(settings, tmp_path: Path):
    events = history(N_EVENTS, N_CUSTOMERS)
    records = as_records(settings, with_duplicates(events, share=0.02))
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
        await wait_applied(settings, records, timeout=120)
    finally:
        prod.cancel()
        worker.stop()
    assert kills == 3

    assert await differing(settings, events) == []
    stored = await stored_states(settings)
    assert sum(st.purchase_count for st in stored.values()) == sum(
        1 for e in events if e.event_kind == "purchase")


async def test_a_commit_behind_the_fence_is_refused_and_named(settings):
    """A zombie's commit (an expected generation the fence has moved past) writes nothing;
    ``FenceMoved`` names the refused partition and carries the new generations of the
    partitions that committed in the same call."""
    store = Store.from_settings(settings)

    def commit(p: int, gen: str, value: bytes) -> ShardCommit:
        return ShardCommit(partition=p, expected_gen=gen, offsets={"t": 1}, high={"t": 1},
                           states={"C": value}, outbox=[])

    try:
        gens = await store.commit([commit(0, "", b"first"), commit(1, "", b"first")])
        assert set(gens) == {0, 1}
        with pytest.raises(FenceMoved) as refused:
            await store.commit([commit(0, "", b"stale"), commit(1, gens[1], b"second")])
        assert refused.value.partitions == [0]
        assert set(refused.value.gens) == {1} and refused.value.gens[1] != gens[1]
        assert "partitions [0]" in str(refused.value)
        assert await store.redis.get(store.keys.customer(0, "C")) == b"first"
        assert await store.redis.get(store.keys.customer(1, "C")) == b"second"
    finally:
        await store.close()
