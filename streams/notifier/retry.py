"""When to try a delivery again, and after how long. Pure: the random draw and the clock are
arguments.

* 2xx: delivered. 429: retried, after ``Retry-After`` when the receiver gives one (seconds
  or an HTTP date), otherwise after the backoff. 5xx, a timeout, a connection error:
  retried after the backoff. Any other status (3xx, 4xx): rejected at once, no retry,
  because sending the same request again would get the same answer.
* Backoff is exponential with full jitter (the AWS architecture blog's "full jitter"): the
  n-th wait is uniform in [0, min(max, initial * 2^(n-1))), so many deliveries failing at
  once do not come back in step.
* A ``Retry-After`` longer than the endpoint's ``backoff_max_s`` is not shortened (the
  receiver asked us not to come earlier): the delivery is dead-lettered at once, to be
  redriven later.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime

DELIVERED, RETRY, REJECTED = "delivered", "retry", "rejected"
# dead-letter reasons
R_REJECTED, R_EXHAUSTED = "rejected", "retries_exhausted"
R_RETRY_AFTER, R_CIRCUIT = "retry_after_too_long", "circuit_open"


def classify(status: int | None) -> str:
    """``status`` None stands for a timeout or a connection error, 0 for a request that
    cannot be sent at all (rejected)."""
    if status is None or status == 429 or 500 <= status <= 599:
        return RETRY
    if 200 <= status <= 299:
        return DELIVERED
    return REJECTED


def backoff_ceiling(attempt: int, initial_s: float, max_s: float) -> float:
    """The longest wait after failed attempt number ``attempt`` (1-based)."""
    return min(max_s, initial_s * 2.0 ** min(attempt - 1, 60))


def backoff_delay(attempt: int, initial_s: float, max_s: float, draw: float) -> float:
    """Full jitter: ``draw`` (uniform in [0, 1)) times the ceiling."""
    return draw * backoff_ceiling(attempt, initial_s, max_s)


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date
    (RFC 9110 10.2.3); a date in the past means 0; anything else None (use the backoff)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; asctime form parses without a zone
        return None
    return max(0.0, when.timestamp() - now_s)


@dataclass(frozen=True)
class Step:
    """What to do after an attempt: ``action`` is delivered, retry (after ``delay_s``) or
    deadletter (with ``reason``)."""

    action: str
    delay_s: float = 0.0
    reason: str = ""


def next_step(status: int | None, attempt: int, max_attempts: int, retry_after_s: float | None,
              initial_s: float, max_s: float, draw: float) -> Step:
    kind = classify(status)
    if kind == DELIVERED:
        return Step(DELIVERED)
    if kind == REJECTED:
        return Step("deadletter", reason=R_REJECTED)
    if attempt >= max_attempts:
        return Step("deadletter", reason=R_EXHAUSTED)
    if status == 429 and retry_after_s is not None:
        if retry_after_s > max_s:
            return Step("deadletter", reason=R_RETRY_AFTER)
        return Step(RETRY, retry_after_s)
    return Step(RETRY, backoff_delay(attempt, initial_s, max_s, draw))
