"""What the worker knows about its own health, for ``/healthz``, ``/readyz`` and metrics.

Theory of operation: the engine and the Redis adapter report facts as they happen (Redis
went away or came back, a batch was committed, the worker halted, the group assignment is
done); ``verdict`` turns the facts into an answer at request time. Healthy means the worker
does its job: it is consuming and committing, or it is idle with nothing to do (no lag).
Ready means it has started, joined its group and loaded its partitions' fences, so a load
balancer may route ``/customers/{id}`` to it; a worker that is ready can still be unhealthy
(Redis down) and the other way round (a rebalance in progress).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STALL_AFTER_S = 30.0  # with lag and no commit for this long, the worker is not working


@dataclass
class Health:
    clock: Callable[[], float] = time.monotonic
    started: bool = False  # connected to Kafka and Redis, consumer subscribed
    assigned: bool = False  # the group gave us our partitions and their fences are loaded
    assigned_at: float = 0.0
    halted: str = ""  # why the worker stopped on purpose (state loss, offset reset)
    redis_up: bool = True
    redis_down_since: float | None = None
    redis_down_seconds: float = 0.0  # summed over every outage so far
    redis_error: str = ""
    kafka_up: Callable[[], bool] = lambda: True  # asked at request time: the loop may hang
    last_commit: float = 0.0
    last_step: float = 0.0
    lag: int = 0  # records behind the high watermarks of the owned partitions
    notes: dict[str, str] = field(default_factory=dict)
    on_redis: list[Callable[[bool, float], Any]] = field(default_factory=list)

    # -- facts ------------------------------------------------------------------------------

    def redis_failed(self, exc: BaseException) -> None:
        self.redis_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.redis_up:
            self.redis_up = False
            self.redis_down_since = self.clock()
            for cb in self.on_redis:
                cb(False, 0.0)

    def redis_ok(self) -> None:
        if not self.redis_up:
            down = self.clock() - (self.redis_down_since or self.clock())
            self.redis_down_seconds += down
            self.redis_up = True
            self.redis_down_since = None
            for cb in self.on_redis:
                cb(True, down)

    def committed(self) -> None:
        self.last_commit = self.clock()

    # -- answers ----------------------------------------------------------------------------

    def verdict(self) -> tuple[bool, str]:
        """(healthy, reason)."""
        now = self.clock()
        if self.halted:
            return False, f"halted: {self.halted}"
        if not self.started:
            return False, "starting"
        if not self.redis_up:
            since = now - (self.redis_down_since or now)
            return False, f"Redis down for {since:.0f} s ({self.redis_error})"
        if not self.kafka_up():
            return False, "Kafka broker unreachable (group coordinator unknown)"
        if self.last_step and now - self.last_step > STALL_AFTER_S:
            return False, f"consumer loop stalled for {now - self.last_step:.0f} s"
        if self.lag > 0 and now - max(self.last_commit, self.assigned_at) > STALL_AFTER_S:
            return False, (f"not committing: {self.lag} records behind, last commit "
                           f"{now - self.last_commit:.0f} s ago")
        if self.lag > 0:
            return True, f"consuming ({self.lag} records behind)"
        return True, "idle, no lag" if now - self.last_commit > 5 else "consuming"

    def readiness(self) -> tuple[bool, str]:
        if self.halted:
            return False, f"halted: {self.halted}"
        if not self.started:
            return False, "starting"
        if not self.assigned:
            return False, "waiting for the consumer group's assignment"
        return True, "ready"
