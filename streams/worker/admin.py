"""Topic administration: ``pulse topics create``.

Input topics are created with the same partition count (co-partitioning). Creating is
idempotent: a topic that exists is left alone, but one whose partition count differs from
PULSE_PARTITIONS is reported, because the engine's shard ownership depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from streams.kafka_client import client_kwargs
from streams.settings import Settings
from streams.worker.topics import Topics

log = logging.getLogger(__name__)


# the audit topic (erasure receipts, no personal data) is evidence: never deleted by age
KEPT_FOREVER = {"retention.ms": "-1"}


class TopicMismatch(RuntimeError):
    pass


async def _admin(settings: Settings, timeout: float = 20.0) -> AIOKafkaAdminClient:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(**client_kwargs(settings),
                                    client_id=f"{settings.app_id}-admin")
        try:
            await admin.start()
            return admin
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


async def create_topics(settings: Settings) -> dict[str, str]:
    """Create every topic. Returns topic -> 'created' | 'exists'."""
    topics = Topics.from_settings(settings)
    admin = await _admin(settings, timeout=settings.connect_timeout_s)
    result: dict[str, str] = {}
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name=t, num_partitions=settings.partitions,
                     replication_factor=settings.replication_factor,
                     topic_configs=KEPT_FOREVER if t == topics.audit else None)
            for t in topics.all if t not in existing
        ]
        for t in topics.all:
            result[t] = "exists" if t in existing else "created"
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(new)
        described = await admin.describe_topics(list(topics.inputs))
        for d in described:
            n = len(d.get("partitions", []))
            if n and n != settings.partitions:
                raise TopicMismatch(
                    f"topic {d['topic']} has {n} partitions but PULSE_PARTITIONS="
                    f"{settings.partitions}; input topics must all have the same count"
                )
    finally:
        await admin.close()
    return result


async def wait_for_topics(settings: Settings, timeout: float = 20.0) -> None:
    """Until the broker reports every topic with its partitions (metadata is eventual)."""
    topics = Topics.from_settings(settings)
    admin = await _admin(settings)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            described = await admin.describe_topics(list(topics.all))
            ready = {d["topic"] for d in described
                     if d.get("partitions") and not d.get("error_code")}
            if ready >= set(topics.all):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics not ready: {set(topics.all) - ready}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
