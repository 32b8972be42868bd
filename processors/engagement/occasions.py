"""Birthdays and first-purchase anniversaries as event-time instants.

Theory of operation
-------------------
An occasion is a calendar date in the customer's time zone (the profile's IANA
``time_zone``; UTC without one) at ``engagement.local_hour`` o'clock there; ``instant``
turns it into epoch ms. A 29 February falls on 28 February in a year without one. A local
time that a daylight-saving change skips is taken after the change (``fold=0``, what
``zoneinfo`` gives), one that happens twice the first time.

The zone rules come from the IANA database through ``zoneinfo`` (the host's files or the
``tzdata`` package, the ones the codec checked the name against). A zone is loaded once and
kept (``_zone``): read-only data, like the rules, not I/O of the layer's; the same database
gives the same instants, so a replay gives the same occasions.

* ``next_birthday(month_day, zone, hour, after)``: the first birthday instant strictly
  after ``after``, with its local year;
* ``anniversary(first_purchase_at, zone, hour, n)``: the ``n``-th anniversary of the local
  date of the first purchase.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=512)
def _zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or "UTC")


def _day(year: int, month: int, day: int) -> int:
    """The day, or the month's last day when the year lacks it (29 February)."""
    return min(day, calendar.monthrange(year, month)[1])


def instant(year: int, month: int, day: int, hour: int, zone: str | None) -> int:
    """Epoch ms of ``hour``:00 local time on that date (29 Feb -> 28 Feb when needed)."""
    dt = datetime(year, month, _day(year, month, day), hour, tzinfo=_zone(zone))
    return int(dt.timestamp()) * 1000


def local_date(ms: int, zone: str | None) -> tuple[int, int, int]:
    dt = datetime.fromtimestamp(ms / 1000, UTC).astimezone(_zone(zone))
    return dt.year, dt.month, dt.day


def next_birthday(month_day: str, zone: str | None, hour: int, after: int
                  ) -> tuple[int, int]:
    """``(instant, local year)`` of the first birthday (``--MM-DD``) strictly after
    ``after``."""
    month, day = int(month_day[2:4]), int(month_day[5:7])
    year = local_date(after, zone)[0] - 1  # a zone ahead of UTC: the local year may be next
    while True:
        at = instant(year, month, day, hour, zone)
        if at > after:
            return at, year
        year += 1


def anniversary(first_purchase_at: int, zone: str | None, hour: int, n: int) -> int:
    """The ``n``-th anniversary (n >= 1) of the first purchase's local date."""
    y, m, d = local_date(first_purchase_at, zone)
    return instant(y + n, m, d, hour, zone)


def years_between(first_purchase_at: int, zone: str | None, hour: int, until: int) -> int:
    """The number of anniversaries at or before ``until`` (0 before the first)."""
    y0 = local_date(first_purchase_at, zone)[0]
    n = max(0, local_date(until, zone)[0] - y0 - 1)
    while anniversary(first_purchase_at, zone, hour, n + 1) <= until:
        n += 1
    return n
