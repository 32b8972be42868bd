"""Issue 12 point 3: a broker that comes back without its topics (Tansu restarted with memory
storage, topics recreated) is detected; the new records are all processed.

Before: the fences in Redis were past the new topics' end; the worker skipped every new
record at or below them as "redelivered", said nothing, and reported a lag of 0 (measured in
the issue: 850 of 2,000 new events never processed).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schemas.codec import encode
from schemas.events import Purchase, PurchaseLine
from streams.errors import EXIT_HALTED
from streams.tools.devrun import scrape, start_worker, total
from streams.tools.devstack import free_port
from streams.worker.admin import create_topics
from streams.worker.topics import Topics
from tests.integration.helpers import produce, running_engine, stored_states, wait_until

T0 = 1_790_000_000_000


def purchases(start: int, n: int, customers: int = 100) -> list[Purchase]:
    return [Purchase(f"b-{i}", f"C{i % customers:03d}", T0 + i * 1000, "pos", f"o-{i}", "store",
                     "purchase", 500, "EUR", (PurchaseLine("sku", "grocery", 1, 500),))
            for i in range(start, start + n)]


async def purchase_count(settings) -> int:
    return sum(st.purchase_count for st in (await stored_states(settings)).values())


@pytest.mark.parametrize("policy", ["reset", "halt"])
async def test_broker_reset_topics_recreated(settings, own_broker, tmp_path: Path, policy):
    s = settings.with_(kafka_bootstrap=f"127.0.0.1:{own_broker.port}", web_port=free_port(),
                       session_timeout_s=3.0, on_offset_reset=policy)
    topic = Topics.from_settings(s).purchases

    def records(evs: list[Purchase]) -> list[tuple[str, bytes, bytes]]:
        return [(topic, e.customer_id.encode(), encode(e)) for e in evs]

    worker = start_worker(s, tmp_path, "w0")
    try:
        await produce(s, records(purchases(0, 1000)))

        async def counted(n: int) -> bool:
            return await purchase_count(s) == n

        await wait_until(lambda: counted(1000), timeout=60, what="the first 1000 purchases")
        own_broker.kill()
        own_broker.restart()  # no topics, no group offsets
        # at once, before the worker noticed: the new records pass the old fences
        await create_topics(s)
        await produce(s, records(purchases(1000, 2000)))
        if policy == "halt":
            code = await asyncio.to_thread(worker.proc.wait, 60)
            assert code == EXIT_HALTED, worker.log_tail()
            assert "halting (PULSE_ON_OFFSET_RESET=halt)" in worker.log_path.read_text()
            assert await purchase_count(s) == 1000, worker.log_tail()  # none of the new ones
            return
        await wait_until(lambda: counted(3000), timeout=45, interval=0.5,
                         what="all 2000 purchases after the reset")
        log = worker.log_path.read_text()
        assert "the topic was recreated" in log, worker.log_tail()
        assert "consuming it again from offset 0" in log
        m = scrape(f"http://127.0.0.1:{s.web_port}/metrics")
        # beyond_end when the worker looks before the new records pass the fence, else
        # replaced: the record at the fence is another one
        assert total(m["pulse_offset_out_of_range_total"]) >= 1
        assert worker.alive()
    finally:
        worker.stop()


async def test_healthz_says_when_the_broker_is_down(settings, own_broker):
    s = settings.with_(kafka_bootstrap=f"127.0.0.1:{own_broker.port}", session_timeout_s=3.0)
    async with running_engine(s) as engine:
        await wait_until(lambda: engine.health.verdict()[0], timeout=20, what="healthy")
        own_broker.kill()
        await wait_until(lambda: "Kafka broker unreachable" in engine.health.verdict()[1],
                         timeout=20, what="/healthz to say the broker is down")
        own_broker.restart()
