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

The guard decides inside the shard transaction (streams/worker/transaction.py), which does no
I/O: ``failed`` returns a ``TickFailure`` and the engine hands it to ``report`` (the metrics
and the log line) once the transaction has run. The guard's own memory is the time of each
customer's next try (in memory only: a restarted worker tries again at once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from streams.worker.outbox import OutMsg

log = logging.getLogger(__name__)

TICK_SOURCE = "time-driven"


@dataclass(frozen=True)
class TickFailure:
    """One failed try of a customer's time-driven change."""

    partition: int
    customer: str
    at: int  # the due time it was run at (event time, ms)
    attempt: int  # failures so far, this one included
    attempts: int  # the guard's limit
    error: BaseException
    retry_in: float | None  # seconds until the next try; None: parked
    dead: OutMsg | None = None  # the dead letter naming a parked customer


class TickGuard:
    def __init__(self, deadletter_topic: str, metrics: Any = None, attempts: int = 5,
                 backoff_s: float = 1.0) -> None:
        self.deadletter_topic = deadletter_topic
        self.metrics = metrics  # streams.worker.metrics.Metrics: what ``report`` counts in
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._retry_at: dict[tuple[int, str], float] = {}  # monotonic time of the next try

    def parked(self, failures: dict[str, int], cid: str) -> bool:
        return failures.get(cid, 0) >= self.attempts

    def blocked(self, partition: int, failures: dict[str, int], cid: str, now: float) -> bool:
        """Parked, or waiting for its next try (``now``: monotonic seconds)."""
        if not failures or cid not in failures:
            return False
        if self.parked(failures, cid):
            return True
        return now < self._retry_at.get((partition, cid), 0.0)

    def failed(self, partition: int, failures: dict[str, int], cid: str, at: int,
               exc: BaseException, incs: dict[tuple[str, str], int], key: str, now: float
               ) -> TickFailure:
        """Count the failure in ``failures`` and in ``incs`` (the commit's HINCRBYs, on hash
        ``key``); the returned failure carries the dead letter when the customer is parked
        now."""
        n = failures[cid] = failures.get(cid, 0) + 1
        incs[(key, cid)] += 1
        if n < self.attempts:
            wait = self.backoff_s * 2 ** (n - 1)
            self._retry_at[(partition, cid)] = now + wait
            return TickFailure(partition, cid, at, n, self.attempts, exc, wait)
        self._retry_at.pop((partition, cid), None)
        body = {"customer_id": cid, "reason": "processing_error", "source": TICK_SOURCE,
                "due_at": at, "attempts": n, "exception": repr(exc)[:2000]}
        headers = (("pulse.dlq.reason", b"processing_error"),
                   ("pulse.dlq.message", _parked(cid, at, n, exc).encode()[:2000]),
                   ("pulse.dlq.topic", TICK_SOURCE.encode()),
                   ("pulse.dlq.partition", str(partition).encode()),
                   ("pulse.dlq.customer", cid.encode()))
        dead = OutMsg(self.deadletter_topic, cid.encode(), orjson.dumps(body), None, headers)
        return TickFailure(partition, cid, at, n, self.attempts, exc, None, dead)

    def succeeded(self, partition: int, failures: dict[str, int], cid: str,
                  incs: dict[tuple[str, str], int], key: str) -> None:
        n = failures.pop(cid, 0)
        if n:
            incs[(key, cid)] -= n
            self._retry_at.pop((partition, cid), None)

    def report(self, f: TickFailure) -> None:
        """The metrics and the log line of a failure (the engine, after the transaction)."""
        m = self.metrics
        if f.retry_in is not None:
            if m is not None:
                m.tick_failures.labels("retried").inc()
            log.warning("time-driven change for %s due at %d failed (%d of %d), retrying in "
                        "%.1f s: %r", f.customer, f.at, f.attempt, f.attempts, f.retry_in,
                        f.error)
            return
        if m is not None:
            m.tick_failures.labels("parked").inc()
            m.deadletters.labels(TICK_SOURCE, "processing_error").inc()
        log.error("%s", _parked(f.customer, f.at, f.attempt, f.error))


def _parked(cid: str, at: int, n: int, exc: BaseException) -> str:
    return (f"time-driven change for customer {cid} due at {at} failed {n} times; "
            f"parked: {exc!r}")
