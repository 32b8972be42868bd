"""Proactive messages: which occasions are due, one message per occasion, and the rate limit.

Theory of operation
-------------------
``due(rec, state, rules, at)`` lists the occasions whose event time is at or before ``at``
and that the record has not handled yet (record.py: one "done" mark per kind):

=============  ==========================================================================
kind           occasion (its event time)
=============  ==========================================================================
birthday       the profile's ``--MM-DD`` in the customer's time zone at ``local_hour``, per
               local year; only birthdays after the birth date was given and after the
               record opened
anniversary    the n-th anniversary of the local date of the first purchase at
               ``local_hour``; n counts from the first purchase, the ones before the record
               opened are skipped
replenishment  the silence since ``last_purchase_at`` passes ``overdue_factor`` x the mean
               gap between purchase days (customers with ``min_purchase_days``); once per
               silence (a purchase starts a new one). Not sent, and the silence handled,
               when the churn level is above ``max_churn_level`` or a churn alert went out
               since the last purchase; once sent, the churn layer withholds the alert this
               silence alone would raise (``quiets_churn_alert``): the churn alert (service
               team) and the nudge (marketing) never both answer the same silence
points_expiry  the ledger's ``expiry_notice`` entry (``processors/loyalty.py`` decides it;
               this mirrors it: the loyalty record's ``noticed`` flag and deadline, at the
               notice's time, ``reference`` = that entry's id)
tier_upgrade   the loyalty tier rose above every tier held when the record opened or
               congratulated since (at the tier change's time): a tier regained after a
               downgrade is not congratulated twice
=============  ==========================================================================

``select`` then applies the documented priority (``rules.TRIGGER_KINDS``) and
``min_days_between_messages``: the due occasions are taken in priority order; one that
falls within the interval of the latest message sent is dropped (handled, no message), except
the replenishment nudge, which waits for the interval's end (``nudge_at`` moves its due
time there) and is looked at again then. A kind switched off in the rules is handled without
a message, so switching it on later sends no backlog. An occasion before the record opened
is handled without a message too.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, NamedTuple

from processors.engagement import occasions
from processors.engagement.record import Engagement
from processors.loyalty.expiry import expires_at
from processors.loyalty.ledger import EXPIRY_NOTICE
from processors.rules import TRIGGER_KINDS, Rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS, day_of, format_time

_LEVEL_RANK = {"low": 0, "medium": 1, "high": 2}
_PRIORITY = {k: i for i, k in enumerate(TRIGGER_KINDS)}


class Due(NamedTuple):
    kind: str
    at: int  # the occasion's event time
    occasion: str
    reason: str
    mark: dict[str, Any]  # record fields that say the occasion is handled
    send: bool = True  # False: handled without a message (before the record, churn...)
    reference: str | None = None


def _date(ms: int) -> str:
    return format_time(ms)[:10]


def _tz(state: CustomerState) -> str | None:
    return state.profile.time_zone if state.profile is not None else None


def birthday_at(rec: Engagement, state: CustomerState, rules: Rules) -> tuple[int, int] | None:
    """``(instant, year)`` of the next birthday to handle, or None."""
    p = state.profile
    if p is None or p.birth_date is None or p.birth_date_at is None:
        return None
    return _birthday(p.birth_date, p.time_zone, rules.engagement.local_hour,
                     max(rec.opened_at, p.birth_date_at) - 1, rec.birthday_year)


@lru_cache(maxsize=1 << 16)
def _birthday(month_day: str, zone: str | None, hour: int, after: int, done: int
              ) -> tuple[int, int]:
    # cached: a customer is evaluated again and again with the same inputs, and the zone
    # arithmetic costs ~10 us a year tried
    while True:
        at, year = occasions.next_birthday(month_day, zone, hour, after)
        if year > done:
            return at, year
        after = at


def anniversary_at(rec: Engagement, state: CustomerState, rules: Rules
                   ) -> tuple[int, int] | None:
    """``(instant, n)`` of the next first-purchase anniversary to handle, or None."""
    first = state.first_purchase_at
    if first is None:
        return None
    return _anniversary(first, _tz(state), rules.engagement.local_hour, rec.opened_at,
                        rec.anniversary)


@lru_cache(maxsize=1 << 16)
def _anniversary(first: int, zone: str | None, hour: int, opened_at: int, done: int
                 ) -> tuple[int, int]:
    n = max(done, occasions.years_between(first, zone, hour, opened_at - 1)) + 1
    return occasions.anniversary(first, zone, hour, n), n


def nudge_at(rec: Engagement, state: CustomerState, rules: Rules) -> int | None:
    """When the replenishment rule next looks at the current silence, or None."""
    rr = rules.engagement.replenishment
    last, first = state.last_purchase_at, state.first_purchase_at
    if last is None or first is None or last == rec.nudged_for \
            or state.purchase_count < rr.min_purchase_days:  # (cheap: count >= days)
        return None
    days = state.purchase_days
    if days < rr.min_purchase_days:
        return None
    gap = (day_of(last) - day_of(first)) / (days - 1)  # state.mean_interpurchase_gap_days
    at = last + math.ceil(rr.overdue_factor * gap * DAY_MS)
    cooldown = rules.engagement.min_days_between_messages * DAY_MS
    if rec.last_message_at and cooldown and at < rec.last_message_at + cooldown:
        at = rec.last_message_at + cooldown
    return at


def due(rec: Engagement, state: CustomerState, rules: Rules, at: int) -> list[Due]:
    """The occasions due at or before ``at`` that ``rec`` has not handled (module doc)."""
    er = rules.engagement
    out: list[Due] = []
    b = birthday_at(rec, state, rules)
    if b is not None and b[0] <= at:
        p = state.profile
        assert p is not None and p.birth_date is not None
        out.append(Due("birthday", b[0], str(b[1]),
                       f"birthday: {p.birth_date[2:]} ({p.time_zone or 'UTC'})",
                       {"birthday_year": b[1]}, er.birthday.enabled and b[0] >= rec.opened_at))
    a = anniversary_at(rec, state, rules)
    if a is not None and a[0] <= at:
        first = state.first_purchase_at
        assert first is not None
        out.append(Due("anniversary", a[0], str(a[1]),
                       f"first-purchase anniversary: {a[1]} year{'s' if a[1] > 1 else ''} "
                       f"since {_date(first)}", {"anniversary": a[1]},
                       er.anniversary.enabled and a[0] >= rec.opened_at))
    n = nudge_at(rec, state, rules)
    if n is not None and n <= at:
        out.append(_nudge(rec, state, rules, n))
    ly = state.loyalty
    if ly is not None:
        lr = rules.loyalty
        deadline = expires_at(ly, lr) if ly.noticed and lr.expiry_notice_days else None
        if deadline is not None and deadline > rec.expiry_noticed:
            t = deadline - lr.expiry_notice_days * DAY_MS
            if t <= at:
                out.append(Due("points_expiry", t, str(deadline),
                               f"points expiry: {ly.balance} pts expire on {_date(deadline)}",
                               {"expiry_noticed": deadline},
                               er.points_expiry.enabled and t >= rec.opened_at,
                               f"{state.customer_id}:{EXPIRY_NOTICE}@{deadline}"))
        tier = min(ly.tier, len(lr.tiers) - 1)
        if tier > rec.best_tier and ly.tier_since <= at:
            name = lr.tiers[tier].name
            out.append(Due("tier_upgrade", ly.tier_since, name,
                           f"tier upgrade: welcome to {name}", {"best_tier": tier},
                           er.tier_upgrade.enabled and ly.tier_since >= rec.opened_at))
    return out


def _nudge(rec: Engagement, state: CustomerState, rules: Rules, at: int) -> Due:
    rr = rules.engagement.replenishment
    last, gap = state.last_purchase_at, state.mean_interpurchase_gap_days
    assert last is not None and gap is not None
    silent = (at - last) / DAY_MS
    reason = (f"replenishment: {silent:.0f} days since the last purchase, "
              f"{silent / gap:.1f}x the usual {gap:.0f}-day gap (nudge from "
              f"{rr.overdue_factor:g}x)")
    ch = state.churn
    send = rr.enabled and last >= rec.opened_at
    if ch is not None:
        if _LEVEL_RANK.get(ch.level, 0) > _LEVEL_RANK[rr.max_churn_level]:
            send = False  # the churn alert's business
        if ch.last_alert_at >= last:
            send = False  # a churn alert already answered this silence
    return Due("replenishment", at, str(last), reason, {"nudged_for": last}, send)


def select(rec: Engagement, found: list[Due], rules: Rules) -> tuple[Engagement, list[Due]]:
    """Apply the priority and the rate limit: the record with the occasions handled, and the
    messages to send (see the module docstring)."""
    cooldown = rules.engagement.min_days_between_messages * DAY_MS
    sent: list[Due] = []
    for d in sorted(found, key=lambda d: (_PRIORITY[d.kind], d.at)):
        blocked = bool(cooldown and rec.last_message_at
                       and abs(d.at - rec.last_message_at) < cooldown)
        if d.send and blocked and d.kind == "replenishment":
            continue  # waits for the interval's end (nudge_at)
        rec = rec._replace(**d.mark)
        if d.send and not blocked:
            rec = rec._replace(last_message_at=max(rec.last_message_at, d.at),
                               last_message=d.kind)
            if d.kind == "replenishment":  # the churn layer reads it (never both)
                rec = rec._replace(nudge_sent_for=d.mark["nudged_for"])
            sent.append(d)
    return rec, sent
