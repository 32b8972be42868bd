"""Customer profiles: what the ``customers`` topic says about a customer.

Theory of operation
-------------------
The ``customers`` topic (``schemas.events.CustomerEvent``) says who a customer is rather
than what they did. ``profile_changes(state, event)`` answers one such record with the
state's new ``profile`` (a ``Profile`` record, ``None`` until the first one). Only this
topic writes the profile, and every field is a min or a "latest" by ``occurred_at``, so the
result does not depend on batch splits or on how the topics interleave (``state.py``), only
on the topic's own order, which Kafka keeps:

============  ===================================================================================
record        changes
============  ===================================================================================
signup        ``signup_at`` = the earliest signup's time; ``referred_by`` = what that signup
              named (or ``None``): the first signup wins, ties to the earlier record. A later
              signup (a second system, a re-send under a new id) changes neither, but its
              ``birth_date`` / ``time_zone`` count as a profile update
profile_update ``birth_date`` and ``time_zone``, each on its own: the value of the latest record
              carrying that field, by ``occurred_at``, ties to the later record; the time it
              was set is kept beside it (``birth_date_at``, ``time_zone_at``)
consent       per channel named, ``(opted_in, at)`` of the latest consent record naming it, ties
              to the later record; channels it does not name keep theirs. A channel never
              named has no consent on record (``marketing_consent`` says ``None``): a consumer
              treats that as "not opted in"
erasure_      not a profile change: the worker's shard transaction erases the customer
requested     (streams/worker/erasure.py, README "Member operations") before ``apply`` would
              see it. ``apply`` itself refuses one (``Rejected("not_supported")``, nothing
              changes): erasing is not a state transition
============  ===================================================================================

Only the month and day of a birth date are kept (``"--MM-DD"``): the birthday is what the
engagement layer needs, the year would only be personal data. ``time_zone`` is the IANA name
as written; the codec has checked that the zone exists (``schemas.codec.known_time_zones``),
nothing here reads the zone database.

The dedup window, lateness (per-kind clock ``kind_max[customer]``) and dead-lettering are
``processors.customer.apply``'s, as for every topic.
"""

from __future__ import annotations

import sys
from typing import Any

from processors.errors import INVALID, NOT_SUPPORTED, Rejected, WireError
from processors.state import Consent, CustomerState, Profile
from schemas.events import (
    CONSENT,
    CONSENT_CHANNELS,
    ERASURE_REQUESTED,
    PROFILE_UPDATE,
    SIGNUP,
    CustomerEvent,
)

EMPTY = Profile()


def month_day(birth_date: str) -> str:
    """``"1988-05-17"`` or ``"--05-17"`` -> ``"--05-17"`` (the codec has checked the date)."""
    return "--" + birth_date[-5:]


def _latest(old_at: int | None, t: int) -> bool:
    """Whether a record at ``t`` replaces a value set at ``old_at`` (ties: the later record)."""
    return old_at is None or t >= old_at


def profile_changes(state: CustomerState, ev: CustomerEvent) -> dict[str, Any]:
    """Field changes for a customer record (for ``processors.state.evolve``). Pure; raises
    ``Rejected`` (and changes nothing) for an erasure request or an impossible record."""
    kind = ev.kind
    if kind == ERASURE_REQUESTED:
        raise Rejected(NOT_SUPPORTED, "erasure_requested is not a state change: the worker's "
                       "shard transaction erases the customer (streams/worker/erasure.py)")
    if kind not in (SIGNUP, PROFILE_UPDATE, CONSENT):
        raise Rejected(INVALID, f"customer record kind {kind!r} is not one of "
                       f"{(SIGNUP, PROFILE_UPDATE, CONSENT, ERASURE_REQUESTED)}")
    if ev.referred_by is not None and (kind != SIGNUP or ev.referred_by == ev.customer_id):
        raise Rejected(INVALID, f"{kind} of {ev.customer_id!r} names referred_by "
                       f"{ev.referred_by!r}: only a signup may, and never the customer itself")
    old = state.profile or EMPTY
    new = old
    t = ev.occurred_at
    if kind == SIGNUP and (old.signup_at is None or t < old.signup_at):
        new = new._replace(signup_at=t, referred_by=ev.referred_by)
    if kind in (SIGNUP, PROFILE_UPDATE):
        if ev.birth_date is not None and _latest(old.birth_date_at, t):
            new = new._replace(birth_date=month_day(ev.birth_date), birth_date_at=t)
        if ev.time_zone is not None and _latest(old.time_zone_at, t):
            new = new._replace(time_zone=ev.time_zone, time_zone_at=t)
    elif kind == CONSENT:
        new = new._replace(consent=_consent(old.consent, ev.channels, t))
    return {} if new == old else {"profile": new}


def _consent(known: tuple[Consent, ...], channels: tuple[tuple[str, bool], ...],
             t: int) -> tuple[Consent, ...]:
    by_channel = {c.channel: c for c in known}
    for channel, opted_in in channels:
        if channel not in CONSENT_CHANNELS:
            raise Rejected(INVALID, f"consent channel {channel!r} is not one of "
                           f"{CONSENT_CHANNELS}")
        if type(opted_in) is not bool:
            raise Rejected(INVALID, f"consent for {channel} must be true or false, got "
                           f"{opted_in!r}")
        was = by_channel.get(channel)
        if was is None or _latest(was.at, t):
            by_channel[channel] = Consent(channel, opted_in, t)
    return tuple(by_channel[c] for c in sorted(by_channel))


def marketing_consent(profile: Profile | None, channel: str) -> Consent | None:
    """The channel's consent on record (latest by its time), or ``None``: never asked."""
    if profile is not None:
        for c in profile.consent:
            if c.channel == channel:
                return c
    return None


# -- view and wire -------------------------------------------------------------------------------


def view_fields(state: CustomerState) -> dict[str, Any]:
    """``signup_at``, ``referred_by``, ``birth_date`` (``--MM-DD``), ``time_zone`` and per
    channel ``consent_<channel>`` (true / false / None: none on record) with
    ``consent_<channel>_at``."""
    p = state.profile or EMPTY
    row: dict[str, Any] = {"signup_at": p.signup_at, "referred_by": p.referred_by,
                           "birth_date": p.birth_date, "time_zone": p.time_zone}
    for channel in CONSENT_CHANNELS:
        c = marketing_consent(p, channel)
        row[f"consent_{channel}"] = None if c is None else c.opted_in
        row[f"consent_{channel}_at"] = None if c is None else c.at
    return row


def to_wire(p: Profile) -> list[Any]:
    """``[signup_at, referred_by, birth_date, birth_date_at, time_zone, time_zone_at,
    consent]`` (``null`` for an absent value). ``consent`` is flat triples ``at, named,
    opted_in`` a consent time, oldest first: ``named`` and ``opted_in`` are bit masks over
    ``CONSENT_CHANNELS`` (bit 0 email ... bit 4 phone), so the five channels one consent
    record sets cost three numbers, not five lists."""
    groups: dict[int, list[int]] = {}
    for c in p.consent:
        bit = 1 << _BIT[c.channel]
        g = groups.setdefault(c.at, [0, 0])
        g[0] |= bit
        if c.opted_in:
            g[1] |= bit
    return [p.signup_at, p.referred_by, p.birth_date, p.birth_date_at, p.time_zone,
            p.time_zone_at, [x for at in sorted(groups) for x in (at, *groups[at])]]


_BIT = {c: i for i, c in enumerate(CONSENT_CHANNELS)}
_ALL = (1 << len(CONSENT_CHANNELS)) - 1
_intern = sys.intern  # zone names and month-days: a few hundred values, kept once


def _opt(value: Any, typ: type, what: str) -> Any:
    if value is not None and type(value) is not typ:
        raise WireError(f"state field 'pf': {what} must be {typ.__name__} or null, "
                        f"got {value!r:.60}")
    return value


def _consent_from_wire(flat: Any) -> tuple[Consent, ...]:
    if (type(flat) is not list or len(flat) % 3
            or list(map(type, flat)).count(int) != len(flat)):
        raise WireError(f"state field 'pf': consent must be a flat list of integer triples, "
                        f"got {flat!r:.60}")
    records = []
    seen = 0
    for i in range(0, len(flat), 3):
        at, named, opted_in = flat[i:i + 3]
        if not 0 < named <= _ALL or opted_in & ~named or opted_in < 0 or named & seen:
            raise WireError(f"state field 'pf': malformed consent {flat[i:i + 3]!r}")
        seen |= named
        records += [Consent(c, bool(opted_in >> b & 1), at)
                    for c, b in _BIT.items() if named >> b & 1]
    return tuple(sorted(records))


def from_wire(value: Any) -> Profile:
    if type(value) is not list or len(value) != 7:
        raise WireError(f"state field 'pf': expected a list of 7 items, got {value!r:.80}")
    su, rb, bd, ba, tz, ta, consent = value
    bd, tz = _opt(bd, str, "birth_date"), _opt(tz, str, "time_zone")
    return Profile(_opt(su, int, "signup_at"), _opt(rb, str, "referred_by"),
                   None if bd is None else _intern(bd), _opt(ba, int, "birth_date_at"),
                   None if tz is None else _intern(tz), _opt(ta, int, "time_zone_at"),
                   _consent_from_wire(consent))
