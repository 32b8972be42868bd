"""The wire's time format: epoch milliseconds -> RFC 3339 text (UTC, millisecond precision).

Theory of operation: events carry ``occurred_at`` as RFC 3339 text and everything inside
is epoch milliseconds (``schemas.events``); outputs, reasons and views write times back as
text. This is the one home of that formatting, in ``schemas/`` because the codec's encoder
needs it and ``schemas/`` imports nothing of ours (README "Layout"); the processors import
it through ``processors.timeutil``, with the rest of their time arithmetic, rather than
from the decoder. Parsing (offsets, bounds, errors) stays the codec's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


def format_time(ms: int) -> str:
    """Epoch milliseconds -> RFC 3339 in UTC with millisecond precision."""
    day, rem = divmod(ms, 86_400_000)  # the date through a cache, the time by arithmetic
    # %-formatting: measurably cheaper here than an f-string with four format specs
    return "%sT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031
        _utc_date(day), rem // 3_600_000, rem // 60_000 % 60, rem // 1000 % 60, rem % 1000)


@lru_cache(maxsize=8192)
def _utc_date(day: int) -> str:
    """Days since 1970-01-01 -> 'YYYY-MM-DD' (as strftime writes it)."""
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
