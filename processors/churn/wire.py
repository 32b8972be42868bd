"""The churn record's wire form (``processors/wire.py``, key ``ch``).

Theory of operation: nine integers, times relative to the customer's newest event time so
that the common case costs zeros; see ``to_wire``. A malformed value raises ``WireError``.
"""

from __future__ import annotations

from typing import Any

from processors.churn.explain import REASON_CODES
from processors.churn.records import LEVELS, RANK, ChurnState
from processors.errors import WireError


def to_wire(ch: ChurnState, max_event_at: int | None) -> list[Any]:
    """``[score * 10^4, level + 3 * alert_open, max_event_at - at, at - level_since,
    alerted_medium, alerted_high, breach_at, reopened_at, due - at (0: none; negative: a
    look-again time, due_exact False)]``: ``at`` is nearly always the customer's newest event
    time, so it costs a 0. (States written before
    the reasons were dropped have a tenth item, reason indexes: checked and ignored.)"""
    base = max_event_at or 0
    return [round(ch.score * 10_000), RANK[ch.level] + 3 * ch.alert_open,
            base - ch.at, ch.at - ch.level_since, ch.alerted_medium, ch.alerted_high,
            ch.breach_at, ch.reopened_at,
            (ch.due - ch.at if ch.due_exact else ch.at - ch.due) if ch.due else 0]


def from_wire(value: Any, max_event_at: int | None) -> ChurnState:
    def bad(what: str) -> WireError:
        return WireError(f"state field 'ch': {what}, got {value!r:.80}")

    if type(value) is not list or len(value) not in (9, 10):
        raise bad("expected a list of 9 items")
    ints = value[:9]
    if not all(type(v) is int for v in ints):
        raise bad("expected integers")
    sc, lv, back, since, med, high, breach, reopen, due = ints
    if not 0 <= sc <= 10_000 or not 0 <= lv < 6 or since < 0:
        raise bad("value out of range")
    if len(value) == 10:  # reason indexes, as written before they were dropped: ignored
        codes = value[9]
        if type(codes) is not list or not all(type(c) is int and 0 <= c < len(REASON_CODES)
                                              for c in codes):
            raise bad("expected reason indexes")
    at = (max_event_at or 0) - back
    return ChurnState(sc / 10_000, LEVELS[lv % 3], at, at - since, med, high, lv >= 3, breach,
                      reopen, at + abs(due) if due else 0, due >= 0)
