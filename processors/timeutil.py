"""Event-time arithmetic. Times are epoch milliseconds (UTC) ints, as in ``schemas.events``.

Theory of operation: days are UTC calendar days numbered from the epoch (day 0 is
1970-01-01), so ``day_of`` is a floor division and no time-zone database is involved.
"""

from __future__ import annotations

SECOND_MS = 1_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def day_of(ms: int) -> int:
    """UTC day number of an epoch-ms instant (``ms // DAY_MS``)."""
    return ms // DAY_MS
