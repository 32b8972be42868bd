"""Event-time arithmetic and formatting. Times are epoch milliseconds (UTC) ints, as in
``schemas.events``.

Theory of operation: days are UTC calendar days numbered from the epoch (day 0 is
1970-01-01), so ``day_of`` is a floor division and no time-zone database is involved.
``format_time`` writes a time as RFC 3339 text (outputs, reasons, views); it is defined in
``schemas/times.py`` because the event encoder needs it too and ``schemas/`` imports
nothing of ours; processors import it from here, not from the decoder.
"""

from __future__ import annotations

from schemas.times import format_time

__all__ = ["DAY_MS", "HOUR_MS", "SECOND_MS", "day_of", "format_time"]

SECOND_MS = 1_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def day_of(ms: int) -> int:
    """UTC day number of an epoch-ms instant (``ms // DAY_MS``)."""
    return ms // DAY_MS
