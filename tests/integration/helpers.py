"""Helpers for tests that run against the real broker and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from processors import wire
from processors.rules import DEFAULT_RULES, Rules
from streams.kafka_client import client_kwargs
from streams.settings import Settings
from streams.worker.admin import create_topics
from streams.worker.engine import Engine
from streams.worker.keys import Keys
from streams.worker.metrics import Metrics
from streams.worker.producer import BatchProducer
from streams.worker.topics import Topics


async def wait_until(pred: Callable[[], Awaitable[bool] | bool], timeout: float = 30.0,
                     interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def produce(settings: Settings, records: Iterable[tuple[str, bytes, bytes]],
                  partition_of: Callable[[bytes], int] | None = None) -> int:
    """Send (topic, key, value) records; partitioned by murmur2 unless told otherwise."""
    async with BatchProducer(settings, settings.partitions) as out:
        for topic, key, value in records:
            p = partition_of(key) if partition_of else None
            await out.send(topic, key, value, partition=p)
        return out.sent


async def read_topic(settings: Settings, topic: str, expect: int, timeout: float = 30.0,
                     settle: float = 0.5) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, once ``expect`` have arrived (then a
    short settle to catch any surplus)."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings),
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
            if len(out) >= expect:
                settle_until = settle_until or time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
        return out
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def running_engine(settings: Settings, rules: Rules = DEFAULT_RULES,
                         metrics: Metrics | None = None, *, wait_assignment: bool = True,
                         **engine_options: Any) -> AsyncIterator[Engine]:
    """An engine running in this process. ``wait_assignment=False`` for a second member of
    a group: its join waits for a slow Tansu rebalance, the caller waits for the split.
    ``engine_options``: Engine keyword arguments (``transitions=``, ``wall_clock=``)."""
    await create_topics(settings)
    engine = Engine(settings, rules, metrics or Metrics.create(), **engine_options)
    await engine.start()
    task = asyncio.create_task(engine.run())
    try:
        if wait_assignment:
            await wait_until(lambda: bool(engine.owned_partitions), timeout=30,
                             what="partition assignment")
        yield engine
    finally:
        engine.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await engine.stop()
        if task.done() and not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]


def counter_value(metrics: Metrics, name: str, **labels: str) -> float:
    total = 0.0
    for fam in metrics.registry.collect():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def header(record: ConsumerRecord, name: str) -> str | None:
    for k, v in record.headers or ():
        if k == name:
            return v.decode()
    return None


def records_by(records: Iterable[ConsumerRecord], key: Callable[[ConsumerRecord], Any]
              ) -> dict[Any, list[ConsumerRecord]]:
    out: dict[Any, list[ConsumerRecord]] = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out


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


def as_records(settings: Settings, events: Iterable[Any]) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) records of events, for ``produce``."""
    from schemas.codec import encode

    topics = Topics.from_settings(settings)
    return [(topics.for_kind(e.event_kind), e.customer_id.encode(), encode(e)) for e in events]


async def wait_applied(settings: Settings, records: list[tuple[str, bytes, bytes]],
                       timeout: float = 60.0) -> None:
    """Until the Redis fences cover every one of ``records`` (all produced, in order, to
    topics that held nothing else, partitioned by murmur2)."""
    from collections import Counter

    from streams.worker.partitioning import owner

    topics = Topics.from_settings(settings)
    count = Counter((t, owner(k.decode(), settings.partitions)) for t, k, _ in records)

    async def done() -> bool:
        f = await fences(settings, topics)
        return all(f[tp] == n - 1 for tp, n in count.items())

    await wait_until(done, timeout=timeout, interval=0.3, what="all offsets applied")


async def differing(settings: Settings, events: list[Any]) -> list[str]:
    """Customers whose stored state differs from the pure one-pass state of ``events``
    (field by field; see history.comparable), plus customers missing or extra."""
    from tests.integration.history import comparable, one_pass

    expected = one_pass(events)
    stored = await stored_states(settings)
    end = max(e.occurred_at for e in events)
    diff = sorted(set(stored) ^ set(expected))
    diff += [cid for cid in expected if cid in stored and
             comparable(stored[cid], as_of=end) != comparable(expected[cid], as_of=end)]
    return diff
