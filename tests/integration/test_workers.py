"""Real `pulse worker` processes in one consumer group: sharing, take-over, clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis.asyncio as aioredis
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from processors import wire
from schemas.codec import encode
from schemas.events import Purchase, PurchaseLine
from streams.kafka_client import client_kwargs
from streams.tools.devrun import scrape, start_worker, total
from streams.tools.devstack import free_port
from streams.worker.keys import Keys
from streams.worker.topics import Topics
from tests.integration.helpers import produce, wait_until

T0 = 1_790_000_000_000


def purchases(start: int, n: int, customers: int = 300) -> list[Purchase]:
    return [
        Purchase(f"w-{i}", f"C{i % customers:04d}", T0 + i * 1000, "pos", f"o-{i}", "store",
                 "purchase", 500, "EUR", (PurchaseLine("sku", "grocery", 1, 500),))
        for i in range(start, start + n)
    ]


def health(port: int) -> dict:
    """The /healthz answer, healthy (200) or not (503: the body says why)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def processed(port: int) -> float:
    return total(scrape(f"http://127.0.0.1:{port}/metrics").get("pulse_events_total", {}),
                 outcome="processed")


async def fence_offsets(settings, topic: str) -> dict[int, int]:
    client = aioredis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    out = {}
    for p in range(settings.partitions):
        v = await client.hget(keys.fence(p), Keys.offset_field(topic))
        if v is not None:
            out[p] = int(v)
    await client.aclose()
    return out


async def total_purchase_count(settings) -> int:
    client = aioredis.Redis.from_url(settings.redis_url)
    n = 0
    async for key in client.scan_iter(match=f"{settings.redis_prefix}:*:c:*", count=1000):
        n += wire.loads(await client.get(key)).purchase_count
    await client.aclose()
    return n


async def test_two_workers_share_partitions_and_sigterm_commits(settings, tmp_path: Path):
    topics = Topics.from_settings(settings)
    s_a = settings.with_(web_port=free_port())
    s_b = settings.with_(web_port=free_port())
    a = start_worker(s_a, tmp_path, "worker-a")
    b = None
    try:
        await wait_until(lambda: len(health(s_a.web_port)["partitions"]) == 4, timeout=60,
                         what="worker A owns all partitions")
        first = purchases(0, 2000)
        await produce(settings, [(topics.purchases, e.customer_id.encode(), encode(e))
                                 for e in first])
        await wait_until(lambda: processed(s_a.web_port) == 2000, timeout=60,
                         what="worker A processed the first 2000")

        b = start_worker(s_b, tmp_path, "worker-b")

        def split() -> bool:
            pa, pb = health(s_a.web_port)["partitions"], health(s_b.web_port)["partitions"]
            return bool(pa) and bool(pb) and sorted(pa + pb) == [0, 1, 2, 3]

        await wait_until(split, timeout=90, what="the two workers to split the partitions")
        second = purchases(2000, 2000)
        await produce(settings, [(topics.purchases, e.customer_id.encode(), encode(e))
                                 for e in second])
        await wait_until(lambda: processed(s_a.web_port) + processed(s_b.web_port) == 4000,
                         timeout=60, what="both workers to process the second 2000")
        assert processed(s_b.web_port) > 0, "the second worker took its share"
        assert processed(s_a.web_port) > 2000, "the first worker kept its share"

        # SIGTERM: a clean stop within a few seconds, offsets committed to Kafka as well
        owned_by_a = health(s_a.web_port)["partitions"]
        started = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(a.proc.wait, 20)
        assert code == 0, a.log_tail()
        assert time.monotonic() - started < 15

        fence = await fence_offsets(settings, topics.purchases)
        admin = AIOKafkaAdminClient(**client_kwargs(settings))
        await admin.start()
        committed = await admin.list_consumer_group_offsets(
            settings.group_id,
            partitions=[TopicPartition(topics.purchases, p) for p in range(4)])
        await admin.close()
        for p in owned_by_a:
            tp = TopicPartition(topics.purchases, p)
            assert committed[tp].offset == fence[p] + 1, (p, committed, fence)

        # the survivor takes over and nothing is counted twice
        await wait_until(lambda: len(health(s_b.web_port)["partitions"]) == 4, timeout=90,
                         what="worker B to take over")
        third = purchases(4000, 1000)
        await produce(settings, [(topics.purchases, e.customer_id.encode(), encode(e))
                                 for e in third])
        await wait_until(lambda: total_purchase_count(settings), timeout=5)

        async def all_counted() -> bool:
            return await total_purchase_count(settings) == 5000

        await wait_until(all_counted, timeout=60, what="5000 purchases in state")
    finally:
        a.stop()
        if b is not None:
            b.stop()
