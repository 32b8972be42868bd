"""Issue 12 point 1: a Redis that comes back empty is detected, never continued from.

On the code before this (measured with this test's load): the worker exited on the Redis
outage, and once restarted found no fence, resumed from Kafka's committed offsets and
carried on, nothing logged; the customers of the first half lost what it had done.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from streams.errors import EXIT_HALTED
from streams.settings import to_env
from streams.tools.devrun import scrape, start_worker, total
from streams.tools.devstack import free_port
from tests.faults.conftest import Service
from tests.integration.helpers import (
    as_records,
    differing,
    produce,
    stored_states,
    wait_applied,
    wait_until,
)
from tests.integration.history import history

N_EVENTS, N_CUSTOMERS = 1200, 150


async def _first_half_then_wipe(s, redis: Service, tmp_path: Path, name: str):
    events = history(N_EVENTS, N_CUSTOMERS, seed=12)
    records = as_records(s, events)
    half = len(records) // 2
    worker = start_worker(s, tmp_path, name)
    await produce(s, records[:half])
    await wait_applied(s, records[:half])
    await asyncio.sleep(1.0)  # Kafka's committed offsets mirror the fence (every 0.2 s here)
    redis.kill()
    redis.restart()  # empty: no persistence
    await produce(s, records[half:])
    return worker, events, records


async def test_redis_back_empty_halts_and_pulse_rebuild_restores(settings, volatile_redis,
                                                                 tmp_path: Path):
    s = settings.with_(redis_url=f"redis://127.0.0.1:{volatile_redis.port}/0",
                       web_port=free_port())
    worker, events, records = await _first_half_then_wipe(s, volatile_redis, tmp_path, "w0")
    try:
        code = await asyncio.to_thread(worker.proc.wait, 60)
        log = worker.log_path.read_text()
        assert code == EXIT_HALTED, worker.log_tail()
        assert "STATE LOST" in log and "pulse rebuild" in log
        assert await stored_states(s) == {}, "nothing is processed after the loss"

        # a worker started afterwards sees it from Kafka's committed offsets, and halts too
        worker = start_worker(s, tmp_path, "w1")
        code = await asyncio.to_thread(worker.proc.wait, 60)
        assert code == EXIT_HALTED, worker.log_tail()
        assert "Redis has no fence" in worker.log_path.read_text()
        assert await stored_states(s) == {}

        # pulse rebuild, then a worker: the state of a clean run, field by field
        env = {**os.environ, **to_env(s)}
        done = subprocess.run([sys.executable, "-m", "streams.tools.cli", "rebuild", "--yes"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr + done.stdout
        assert "reprocessed from offsets" in done.stdout
        worker = start_worker(s, tmp_path, "w2")
        await wait_applied(s, records)
        assert await differing(s, events) == []
    finally:
        worker.stop()


async def test_redis_back_empty_mid_load_is_rebuilt(settings, volatile_redis, tmp_path: Path):
    s = settings.with_(redis_url=f"redis://127.0.0.1:{volatile_redis.port}/0",
                       web_port=free_port(), on_state_loss="rebuild")
    worker, events, records = await _first_half_then_wipe(s, volatile_redis, tmp_path, "w0")
    try:
        await wait_applied(s, records)
        await wait_until(lambda: total(scrape(f"http://127.0.0.1:{s.web_port}/metrics")
                                       .get("pulse_state_loss_total", {}), action="rebuild") > 0,
                         timeout=10, what="the state-loss metric")
        assert worker.alive(), worker.log_tail()
        assert "STATE LOST" in worker.log_path.read_text()
        assert await differing(s, events) == []
    finally:
        worker.stop()
