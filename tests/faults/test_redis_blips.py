"""Issue 12 point 2: Redis restarts (with its data) and dropped connections are survived.

Before: the worker died at the first Redis error (its exception stopped the Faust worker).
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import redis.asyncio as aioredis

from streams.tools.devrun import scrape, start_worker, total
from streams.tools.devstack import free_port
from streams.worker.store import ShardCommit, Store
from tests.integration.helpers import (
    as_records,
    differing,
    produce,
    wait_applied,
    wait_until,
)
from tests.integration.history import history


def health(port: int, path: str = "/healthz") -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_two_redis_restarts_during_a_load(settings, durable_redis, tmp_path: Path):
    s = settings.with_(redis_url=f"redis://127.0.0.1:{durable_redis.port}/0",
                       web_port=free_port())
    events = history(2000, 200, seed=21)
    records = as_records(s, events)
    worker = start_worker(s, tmp_path, "w0")
    try:
        await wait_until(lambda: health(s.web_port, "/readyz")[0] == 200, timeout=30,
                         what="the worker to be ready")
        chunk = len(records) // 10
        for i in range(10):
            await produce(s, records[i * chunk:(i + 1) * chunk])
            await asyncio.sleep(0.3)
            if i in (3, 7):
                durable_redis.kill()
                await wait_until(lambda: health(s.web_port)[0] == 503, timeout=15,
                                 what="/healthz to report Redis down")
                assert "Redis down" in health(s.web_port)[1]["reason"]
                await asyncio.sleep(1.0)
                durable_redis.restart()  # with its append-only file
        await wait_applied(s, records)
        assert worker.alive(), worker.log_tail()
        assert await differing(s, events) == []
        m = scrape(f"http://127.0.0.1:{s.web_port}/metrics")
        assert total(m["pulse_redis_up"]) == 1
        assert total(m["pulse_redis_down_seconds_total"]) >= 2.0
        await wait_until(lambda: health(s.web_port)[0] == 200, timeout=10,
                         what="/healthz healthy again")
    finally:
        worker.stop()


async def test_a_commit_retried_after_a_lost_reply_is_applied_once(settings):
    """The worker re-sends a commit whose reply it did not get; if Redis had applied it,
    the fence's commit token says so: the same gen comes back and nothing is applied twice
    (here: a KPI counter incremented by the commit)."""
    store = Store.from_settings(settings)
    commit = ShardCommit(partition=0, expected_gen="", offsets={"t": 5}, high={"t": 1},
                         states={"C1": b"state"}, outbox=[],
                         increments=[(store.keys.kpi_prefix(0) + "x", "n", 1)])
    keys, args = store._commit_args(commit)
    args.append("token-1")
    try:
        first = await store._commit(keys=keys, args=args)
        again = await store._commit(keys=keys, args=args)  # the retry
        assert first == again == 1
        assert await store.redis.hget(store.keys.kpi_prefix(0) + "x", "n") == b"1"
        other = [*args[:-1], "token-2"]  # a zombie's stale commit: refused
        assert await store._commit(keys=keys, args=other) == -1
    finally:
        client = aioredis.Redis.from_url(settings.redis_url)
        await client.flushall()
        await client.aclose()
        await store.close()


async def test_sigterm_while_redis_is_down_stops_the_worker(settings, durable_redis,
                                                            tmp_path: Path):
    """A worker retrying Redis still stops when asked (the outbox is re-sent next time)."""
    s = settings.with_(redis_url=f"redis://127.0.0.1:{durable_redis.port}/0",
                       web_port=free_port())
    worker = start_worker(s, tmp_path, "w0")
    try:
        await wait_until(lambda: health(s.web_port, "/readyz")[0] == 200, timeout=30,
                         what="the worker to be ready")
        await produce(s, as_records(s, history(200, 20, seed=5)))
        durable_redis.kill()
        await wait_until(lambda: health(s.web_port)[0] == 503, timeout=15,
                         what="/healthz to report Redis down")
        worker.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.proc.wait, 30)
        assert code == 0, worker.log_tail()
        assert "Traceback" not in worker.log_path.read_text()
    finally:
        worker.stop()
