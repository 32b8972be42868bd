"""``pulse simulate``: the simulator's traffic, paced, onto the input topics.

Phase 1 produces ``history_days`` of history (event times from now - history_days up to
now) at ``rate`` events/s, as a replay (streams.worker.replays): every record carries the header
``pulse.replay`` and the phase ends with the replay's end marker, so a worker on the live
clock plays the history out on the history's own clock, exactly as ``pulse replay`` would;
phase 2 goes on live, ``rate`` events/s with current event times, until the duration ends.
Records are keyed by customer id and partitioned like the Java client (murmur2), so the
engine re-routes nothing unless a test wants it to.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable

from processors.timeutil import DAY_MS
from streams.settings import Settings
from streams.tools.replay import new_replay_id
from streams.tools.simulator import SimConfig, SimRecord, Simulator
from streams.worker.producer import BatchProducer
from streams.worker.replays import HEADER_REPLAY, send_end_marker
from streams.worker.topics import Topics

STEP_MS = 3_600_000  # history is generated an hour of event time at a time


class SimulationRun:
    def __init__(self, settings: Settings, *, customers: int, rate: float, history_days: int,
                 malformed_rate: float = 0.0, seed: int = 1,
                 now_ms: int | None = None, customer_events: bool = False) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.rate = rate
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self.start_ms = self.now_ms - history_days * DAY_MS
        self.sim = Simulator(SimConfig(customers=customers, seed=seed, start_ms=self.start_ms,
                                       malformed_rate=malformed_rate,
                                       customer_events=customer_events))
        self.sent: Counter[str] = Counter()
        self.malformed = 0
        self.stop = asyncio.Event()
        self.phase = "history"
        self.sim_time_ms = self.start_ms
        self.replay_id = new_replay_id()

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.sent.items()))
        return f"sent {sum(self.sent.values())} records ({parts}; {self.malformed} malformed)"

    async def run(self, duration: float | None = None) -> None:
        started = time.monotonic()
        deadline = None if duration is None else started + duration
        async with BatchProducer(self.settings, self.settings.partitions,
                                 client_id="pulse-simulator") as out:
            pacer = _Pacer(self.rate)
            t = self.start_ms
            history = [(HEADER_REPLAY, self.replay_id.encode())]
            while t < self.now_ms and not self._done(deadline):
                t = min(t + STEP_MS, self.now_ms)
                await self._send(out, self.sim.events_until(t), pacer, deadline, history)
                self.sim_time_ms = t
            if self._done(deadline):
                return
            await send_end_marker(out, list(self.topics.inputs), self.settings.partitions,
                                  self.replay_id, t)
            self.phase = "live"
            while not self._done(deadline) and self.rate > 0:
                now = int(time.time() * 1000)
                tick = max(1, int(self.rate / 10))
                await self._send(out, self.sim.sample_events(tick, now), pacer, deadline)
                self.sim_time_ms = now
                await out.flush()

    def _done(self, deadline: float | None) -> bool:
        return self.stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    async def _send(self, out: BatchProducer, records: Iterable[SimRecord], pacer: _Pacer,
                    deadline: float | None, headers: list[tuple[str, bytes]] | None = None
                    ) -> None:
        for rec in records:
            if self._done(deadline):
                return
            await out.send(self.topics.for_kind(rec.kind), rec.key, rec.value,
                           headers=headers or ())
            self.sent[rec.kind] += 1
            if not rec.valid:
                self.malformed += 1
            if await pacer.tick():
                await out.flush()


class _Pacer:
    """Keeps a long-run average of ``rate`` events/s, sleeping in 20 ms slices."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.count = 0

    async def tick(self) -> bool:
        self.count += 1
        if self.rate <= 0 or self.count % 50:
            return False
        ahead = self.count / self.rate - (time.monotonic() - self.start)
        if ahead > 0.02:
            await asyncio.sleep(ahead)
            return True
        return False
