"""One endpoint's deliveries: a bounded queue, ``concurrency`` tasks, a rate limit, retries,
a circuit breaker, and the dead-letter hand-off.

Signing is the ``standardwebhooks`` library's (``Webhook.sign``: v1, HMAC-SHA256 over
``webhook-id.webhook-timestamp.body``); each attempt is signed afresh with its own
timestamp, so a retry an hour later still passes the receiver's 5-minute tolerance.

The circuit breaker is what keeps a dead endpoint from holding up the others for long:
after ``circuit_failures`` dead letters in a row, new deliveries to that endpoint are
dead-lettered at once (reason ``circuit_open``) for ``circuit_open_s``; then the next ones
are tried again. Its queue therefore drains at Kafka speed instead of one retry budget per
``concurrency`` records, and the commit frontier moves on; the price is that those records
wait in the dead-letter topic for ``pulse notifier redrive``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks.webhooks import Webhook

from schemas.codec import format_time
from streams.notifier.config import Endpoint
from streams.notifier.messages import DeadLetter
from streams.notifier.offsets import PartitionTrack
from streams.notifier.retry import DELIVERED, R_CIRCUIT, RETRY, next_step, parse_retry_after
from streams.worker.metrics import NotifierMetrics

log = logging.getLogger(__name__)
USER_AGENT = "customer-pulse-notifier/1"


@dataclass
class Job:
    """One record for one endpoint."""

    stream: str
    topic: str
    partition: int
    offset: int
    record: dict[str, Any]
    webhook_id: str
    body: bytes
    timestamp_ms: int  # the output's Kafka timestamp (for the latency histogram)
    track: PartitionTrack | None = None  # finished here when delivered or dead-lettered
    attempts_before: int = 0  # attempts made before a redrive

    def finish(self) -> None:
        if self.track is not None and not self.track.revoked:
            self.track.done(self.offset)


class RateLimiter:
    """Token bucket: ``rate`` per second, bursts of up to max(1, rate)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rate = rate
        self.sleep = sleep
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self.last = clock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        while True:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await self.sleep((1.0 - self.tokens) / self.rate)


class EndpointWorker:
    def __init__(self, endpoint: Endpoint, metrics: NotifierMetrics,
                 dead_letter: Callable[[DeadLetter], Awaitable[None]],
                 draw: Callable[[], float] = random.random) -> None:
        self.endpoint = endpoint
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.draw = draw
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=endpoint.queue_depth)
        self.limiter = RateLimiter(endpoint.rate_limit_per_s)
        self.webhook = Webhook(endpoint.secret)
        self.in_flight = 0
        self.delivered = 0
        self.deadlettered = 0
        self.failures_in_row = 0
        self.open_until = 0.0  # monotonic time the circuit closes again
        self.last_error = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._depth = metrics.queue_depth.labels(endpoint.name)
        self._circuit = metrics.circuit_open.labels(endpoint.name)

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.endpoint.timeout_s),
            connector=aiohttp.TCPConnector(limit=self.endpoint.concurrency),
            headers={"user-agent": USER_AGENT})
        self._tasks = [asyncio.create_task(self._run(), name=f"webhook-{self.name}-{i}")
                       for i in range(self.endpoint.concurrency)]

    async def put(self, job: Job) -> None:
        """Queue a delivery; waits while the queue is full (backpressure on the reader)."""
        await self.queue.put(job)
        self._depth.set(self.queue.qsize())

    def idle(self) -> bool:
        return self.queue.empty() and self.in_flight == 0

    def status(self) -> dict[str, Any]:
        return {"queued": self.queue.qsize(), "in_flight": self.in_flight,
                "circuit": "open" if self._is_open() else "closed"}

    async def stop(self) -> None:
        """Cancel what is in flight (not finished, so not committed: re-read next start)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # run() reports it
                await t
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _is_open(self) -> bool:
        return time.monotonic() < self.open_until

    async def _run(self) -> None:
        while True:
            job = await self.queue.get()
            self._depth.set(self.queue.qsize())
            self.in_flight += 1
            try:
                if job.track is None or not job.track.revoked:
                    try:
                        await self.deliver(job)
                    except Exception as exc:  # a bug: keep the record, stop loudly
                        log.exception("endpoint %s: delivery of %s failed", self.name,
                                      job.webhook_id)
                        await self._give_up(job, job.attempts_before, "error", repr(exc)[:200])
                job.finish()
            finally:
                self.in_flight -= 1
                self.queue.task_done()

    async def deliver(self, job: Job) -> bool:
        """Try until delivered or dead-lettered; True when delivered."""
        ep = self.endpoint
        if self._is_open():
            await self._give_up(job, job.attempts_before, R_CIRCUIT,
                                f"circuit open after {self.failures_in_row} dead letters in a "
                                f"row; last error: {self.last_error}")
            return False
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire()
            status, retry_after, error = await self._attempt(job)
            step = next_step(status, attempt, ep.max_attempts, retry_after,
                             ep.backoff_initial_s, ep.backoff_max_s, self.draw())
            if step.action == DELIVERED:
                self.failures_in_row = 0
                self.delivered += 1
                self._circuit.set(0)
                self.metrics.deliveries.labels(ep.name, "delivered").inc()
                self.metrics.delivery_latency.labels(ep.name).observe(
                    max(0.0, time.time() - job.timestamp_ms / 1000))
                return True
            if step.action == RETRY:
                cause = ("timeout" if error.startswith("timeout") else "connection") \
                    if status is None else ("429" if status == 429 else "5xx")
                self.metrics.retries.labels(ep.name, cause).inc()
                log.debug("endpoint %s: %s for %s, retry %d in %.2f s", ep.name, error,
                          job.webhook_id, attempt, step.delay_s)
                await asyncio.sleep(step.delay_s)
                continue
            await self._give_up(job, job.attempts_before + attempt, step.reason, error)
            return False

    async def _attempt(self, job: Job) -> tuple[int | None, float | None, str]:
        """One signed POST: (status or None, Retry-After seconds, error text)."""
        assert self._session is not None
        now = time.time()
        stamp = datetime.fromtimestamp(int(now), tz=UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": job.webhook_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": self.webhook.sign(job.webhook_id, stamp, job.body.decode()),
        }
        started = time.monotonic()
        try:
            async with self._session.post(self.endpoint.url, data=job.body, headers=headers,
                                          allow_redirects=False) as resp:
                text = (await resp.content.read(200)).decode(errors="replace")
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
                detail = " ".join(text.split())[:200]
                return resp.status, retry_after, f"HTTP {resp.status}" + (
                    f": {detail}" if detail else "")
        except TimeoutError:
            return None, None, f"timeout after {self.endpoint.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return None, None, f"connection error: {type(exc).__name__}: {str(exc)[:200]}"
        except OSError as exc:
            return None, None, f"connection error: {exc.strerror or type(exc).__name__}"
        except ValueError as exc:  # e.g. a control character in the id: no retry helps
            return 0, None, f"cannot send: {str(exc)[:200]}"
        finally:
            self.metrics.attempt_duration.labels(self.endpoint.name).observe(
                time.monotonic() - started)

    async def _give_up(self, job: Job, attempts: int, reason: str, error: str) -> None:
        ep = self.endpoint
        if reason != R_CIRCUIT:
            self.last_error = error
            self.failures_in_row += 1
            if ep.circuit_failures and self.failures_in_row >= ep.circuit_failures:
                if not self._is_open():
                    log.warning("endpoint %s: %d dead letters in a row, circuit open for "
                                "%g s (last error: %s)", ep.name, self.failures_in_row,
                                ep.circuit_open_s, error)
                self.open_until = time.monotonic() + ep.circuit_open_s
                self._circuit.set(1)
        log.log(logging.DEBUG if reason == R_CIRCUIT else logging.INFO,
                "endpoint %s: %s dead-lettered after %d attempts (%s: %s)", ep.name,
                job.webhook_id, attempts, reason, error)
        await self.dead_letter(DeadLetter(
            endpoint=ep.name, webhook_id=job.webhook_id, stream=job.stream, topic=job.topic,
            partition=job.partition, offset=job.offset, record=job.record, attempts=attempts,
            reason=reason, last_error=error, failed_at=format_time(int(time.time() * 1000))))
        self.deadlettered += 1
        self.metrics.deliveries.labels(ep.name, "deadletter").inc()
        self.metrics.deadletters.labels(ep.name, reason).inc()
