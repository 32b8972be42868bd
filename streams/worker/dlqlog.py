"""The worker's log line when it dead-letters a record: at most one WARNING per reason per
``interval_s`` (10 s), with the count since the previous line and one example.

The first dead letter of a reason is logged at once; later ones within the interval are
counted, and the count (with the latest example) is logged when the interval has passed:
on the next dead letter of that reason, or by a timer on the running event loop, so a
burst that stops is still reported. The ``pulse_deadletter_total{topic,reason}`` counter
counts every record; this log only says that it happens and what it looks like.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("pulse.deadletter")

INTERVAL_S = 10.0


@dataclass
class _Pending:
    last_line: float  # when the previous line of this reason was logged
    count: int = 0  # dead letters since that line
    example: str = ""  # the latest of them
    timer: asyncio.TimerHandle | None = None


class DeadLetterLog:
    def __init__(self, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.log = logger
        self._reasons: dict[str, _Pending] = {}

    def note(self, reason: str, topic: str, partition: int, offset: int, message: str) -> None:
        """One record dead-lettered (called by ``Engine._count_deadletter``)."""
        now = self.clock()
        example = f"{topic}/{partition}/{offset}: {message[:300]}"
        p = self._reasons.get(reason)
        if p is None:
            self._reasons[reason] = _Pending(now)
            self.log.warning("dead-lettered 1 record as %s, e.g. %s", reason, example)
            return
        p.count += 1
        p.example = example
        if now - p.last_line >= self.interval_s:
            self._line(reason, p, now)
        elif p.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): the next note reports it
                return
            p.timer = loop.call_later(p.last_line + self.interval_s - now, self.flush, reason)

    def flush(self, reason: str) -> None:
        """Log the count pending for ``reason`` if its interval has passed."""
        p = self._reasons.get(reason)
        if p is None:
            return
        p.timer = None
        now = self.clock()
        if p.count and now - p.last_line >= self.interval_s:
            self._line(reason, p, now)

    def _line(self, reason: str, p: _Pending, now: float) -> None:
        self.log.warning("dead-lettered %d record%s as %s in the last %.0f s, e.g. %s",
                         p.count, "" if p.count == 1 else "s", reason, now - p.last_line,
                         p.example)
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        p.last_line, p.count, p.example = now, 0, ""


note = DeadLetterLog().note  # the worker's: one per process, shared by its engines
