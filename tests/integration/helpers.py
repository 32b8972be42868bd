"""Helpers for tests that run against the real broker and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from processors.rules import DEFAULT_RULES, Rules
from streams.admin import create_topics
from streams.engine import Engine
from streams.kafka_client import client_kwargs
from streams.metrics import Metrics
from streams.producer import BatchProducer
from streams.settings import Settings


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
                         wall_clock: Callable[[], float] | None = None
                         ) -> AsyncIterator[Engine]:
    """An engine running in this process. ``wait_assignment=False`` for a second member of
    a group: its join waits for a slow Tansu rebalance, the caller waits for the split.
    ``wall_clock``: what the engine takes for the time of day (seconds), e.g. a fixed one."""
    await create_topics(settings)
    extra = {} if wall_clock is None else {"wall_clock": wall_clock}
    engine = Engine(settings, rules, metrics or Metrics.create(), **extra)  # type: ignore[arg-type]
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
