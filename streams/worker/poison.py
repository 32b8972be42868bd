"""Poison ticks: a time-driven change that raises is retried a bounded number of times, then
parked.

A tick (expiry, downgrade, a silence alert) that raises would otherwise leave the customer due
and be retried at every scan, forever. Here each failure is counted per customer (in the
shard's ``tickfail`` hash, written by the same atomic commit as the batch, so a restart keeps
counting), the next try waits ``backoff_s * 2**(n-1)`` seconds, and after ``attempts``
failures the customer's time-driven work is parked: it leaves the due set, a dead-letter
record (reason ``processing_error``) names the customer, the due time and the exception, and
``pulse_tick_failures_total{outcome="parked"}`` goes up. Events for the customer are still
applied. ``HDEL <prefix>:{pN}:tickfail <customer>`` (after fixing the cause) un-parks it
with its next event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from streams.worker.outbox import OutMsg

log = logging.getLogger(__name__)

TICK_SOURCE = "time-driven"


class TickGuard:
    def __init__(self, deadletter_topic: str, metrics: Any, attempts: int = 5,
                 backoff_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadletter_topic = deadletter_topic
        self.metrics = metrics
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.clock = clock
        self._retry_at: dict[tuple[int, str], float] = {}

    def parked(self, failures: dict[str, int], cid: str) -> bool:
        return failures.get(cid, 0) >= self.attempts

    def blocked(self, partition: int, failures: dict[str, int], cid: str) -> bool:
        """Parked, or waiting for its next try."""
        if not failures or cid not in failures:
            return False
        if self.parked(failures, cid):
            return True
        return self.clock() < self._retry_at.get((partition, cid), 0.0)

    def failed(self, partition: int, failures: dict[str, int], cid: str, at: int,
               exc: BaseException, incs: dict[tuple[str, str], int], key: str
               ) -> OutMsg | None:
        """Count the failure (``incs``: the commit's HINCRBYs); the dead letter when the
        customer is parked now."""
        n = failures[cid] = failures.get(cid, 0) + 1
        incs[(key, cid)] += 1
        if n < self.attempts:
            wait = self.backoff_s * 2 ** (n - 1)
            self._retry_at[(partition, cid)] = self.clock() + wait
            self.metrics.tick_failures.labels("retried").inc()
            log.warning("time-driven change for %s due at %d failed (%d of %d), retrying in "
                        "%.1f s: %r", cid, at, n, self.attempts, wait, exc)
            return None
        self._retry_at.pop((partition, cid), None)
        self.metrics.tick_failures.labels("parked").inc()
        self.metrics.deadletters.labels(TICK_SOURCE, "processing_error").inc()
        message = (f"time-driven change for customer {cid} due at {at} failed {n} times; "
                   f"parked: {exc!r}")
        log.error("%s", message)
        body = {"customer_id": cid, "reason": "processing_error", "source": TICK_SOURCE,
                "due_at": at, "attempts": n, "exception": repr(exc)[:2000]}
        headers = (("pulse.dlq.reason", b"processing_error"),
                   ("pulse.dlq.message", message.encode()[:2000]),
                   ("pulse.dlq.topic", TICK_SOURCE.encode()),
                   ("pulse.dlq.partition", str(partition).encode()),
                   ("pulse.dlq.customer", cid.encode()))
        return OutMsg(self.deadletter_topic, cid.encode(), orjson.dumps(body), None, headers)

    def succeeded(self, partition: int, failures: dict[str, int], cid: str,
                  incs: dict[tuple[str, str], int], key: str) -> None:
        n = failures.pop(cid, 0)
        if n:
            incs[(key, cid)] -= n
            self._retry_at.pop((partition, cid), None)
