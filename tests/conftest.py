"""Session fixtures: a real Tansu broker and a real redis-server on free loopback ports.

They start once per test session and stop at the end. Between tests, Redis is flushed and
every test gets its own topic names (a fresh prefix), because Tansu cannot delete records.
A missing binary is a setup error that says how to install it; nothing is skipped.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from streams.settings import Settings
from streams.tools.devstack import Stack, running_stack

_counter = itertools.count()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="pulse-test-") as tmp, \
            running_stack(workdir=Path(tmp)) as s:
        yield s


@pytest.fixture
def settings(stack: Stack) -> Iterator[Settings]:
    """Settings for one test: its own topics, its own consumer group, a clean Redis."""
    n = next(_counter)
    client = redis.Redis.from_url(stack.redis_url)
    client.flushall()
    client.close()
    yield Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        partitions=4,
        topic_prefix=f"t{n}-",
        group_id=f"pulse-test-{n}",
        app_id=f"pulse-test-app-{n}",
        session_timeout_s=6.0,
        heartbeat_interval_s=0.5,
        batch_timeout_ms=50,
        commit_interval_s=0.2,
        clock="event",
        # the tests' events are dated 2024-2026: by age their outputs would all be marked
        # backfill; tests/integration/test_time.py checks the marker with the default
        backfill_after_s=3650 * 86_400.0,
    )


@pytest.fixture
async def redis_client(stack: Stack) -> AsyncIterator[object]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(stack.redis_url)
    yield client
    await client.aclose()
