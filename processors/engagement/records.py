"""The engagement record, the records it writes to the ``engagement`` topic, its wire form.

Theory of operation
-------------------
``Engagement`` is the layer's memory in ``CustomerState.engagement``: the current segment
(for change detection and the per-segment gauge), when the record was opened (no occasion
before it is celebrated: a customer known before the layer existed gets no backlog), the
event time it was last evaluated at (never decreases; time-driven checks start after it),
and one "done" mark per kind of occasion, so that no occasion is messaged twice however
often the customer is evaluated, replayed or restarted:

* ``birthday_year``: the latest year whose birthday was handled (sent or dropped);
* ``anniversary``: the latest first-purchase anniversary handled (1, 2, ...);
* ``nudged_for``: the ``last_purchase_at`` of the latest silence handled by the
  replenishment rule (a new purchase starts a new silence);
* ``expiry_noticed``: the expiry deadline of the latest points-expiry notice mirrored;
* ``best_tier``: the highest loyalty tier held when the record opened or congratulated since;
* ``last_message_at`` / ``last_message``: the latest message sent (the rate limit).

Output records (``stream`` "engagement"), both with the customer's marketing ``consent``
per channel *as of their event time* (``consent_at``): ``true`` opted in, ``false`` opted
out, ``null`` nothing on record then. A consent record dated after the output's time does
not count for it (the value before it is not kept), so an opt-in counts from its time on
and anything unknown reads as "not opted in".

* ``SegmentChange`` (``kind`` "segment_change", id ``change_id``): CRM information, not a
  message to the customer (``marketing`` false);
* ``Message`` (``kind`` the trigger, id ``message_id``): a proactive marketing message with
  its occasion, the suggested ``offer`` and a readable ``reason`` (``marketing`` true).

Ids are blake2b of the customer, the kind and the occasion (a segment change: the new
segment and its event time), so a re-sent or replayed record is a recognisable duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, NamedTuple

from processors.errors import WireError
from processors.profile import Profile, marketing_consent
from schemas.codec import format_time
from schemas.events import CONSENT_CHANNELS

STREAM = "engagement"
SEGMENT_CHANGE = "segment_change"


class Engagement(NamedTuple):
    """One customer's engagement record. Times are epoch ms; 0 = never / none."""

    segment: str | None = None  # rules.SEGMENTS name; None before the first evaluation
    segment_since: int = 0
    opened_at: int = 0  # no occasion before this is messaged
    checked_at: int = 0  # event time of the latest evaluation
    birthday_year: int = 0
    anniversary: int = 0
    nudged_for: int = 0
    expiry_noticed: int = 0
    best_tier: int = 0
    last_message_at: int = 0
    last_message: str | None = None  # rules.TRIGGER_KINDS name


def consent_as_of(profile: Profile | None, at: int) -> dict[str, bool | None]:
    """Per marketing channel: opted in (True), out (False) or nothing on record (None) as of
    event time ``at``."""
    out: dict[str, bool | None] = {}
    for channel in CONSENT_CHANNELS:
        c = marketing_consent(profile, channel)
        out[channel] = None if c is None or c.at > at else c.opted_in
    return out


def record_id(prefix: str, customer_id: str, kind: str, occasion: str) -> str:
    raw = f"{customer_id}\x1f{kind}\x1f{occasion}".encode()
    return f"{prefix}-{blake2b(raw, digest_size=10).hexdigest()}"


@dataclass(frozen=True, slots=True)
class SegmentChange:
    change_id: str
    customer_id: str
    segment: str
    previous_segment: str | None
    tags: tuple[str, ...]
    reason: str
    occurred_at: int  # ms
    cause_event_id: str | None  # None: time (silence, an anniversary of a threshold...)
    consent: Mapping[str, bool | None]

    @property
    def stream(self) -> str:
        return STREAM

    def as_dict(self) -> dict[str, Any]:
        return {"change_id": self.change_id, "kind": SEGMENT_CHANGE,
                "customer_id": self.customer_id, "segment": self.segment,
                "previous_segment": self.previous_segment, "tags": list(self.tags),
                "reason": self.reason, "occurred_at": format_time(self.occurred_at),
                "cause_event_id": self.cause_event_id, "marketing": False,
                "consent": dict(self.consent)}


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    customer_id: str
    kind: str  # rules.TRIGGER_KINDS
    occasion: str  # "2026" (birthday), "3" (anniversary), the silence's or deadline's time...
    offer: str
    reason: str
    occurred_at: int  # ms: the occasion's event time
    segment: str | None
    reference: str | None  # the ledger entry it mirrors (points_expiry), else None
    consent: Mapping[str, bool | None]

    @property
    def stream(self) -> str:
        return STREAM

    def as_dict(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "kind": self.kind,
                "customer_id": self.customer_id, "occasion": self.occasion,
                "offer": self.offer, "reason": self.reason,
                "occurred_at": format_time(self.occurred_at), "segment": self.segment,
                "reference": self.reference, "marketing": True,
                "consent": dict(self.consent)}


# -- wire (processors.wire key "en") ----------------------------------------------------------

# Names are stored as their index here: append, never reorder.
WIRE_SEGMENTS: tuple[str, ...] = ("lapsed", "at_risk", "new", "big_spender", "loyal",
                                  "one_time", "active", "inactive", "prospect")
WIRE_KINDS: tuple[str, ...] = ("points_expiry", "birthday", "tier_upgrade", "anniversary",
                               "replenishment")
_SEG_INDEX = {s: i for i, s in enumerate(WIRE_SEGMENTS)}
_KIND_INDEX = {k: i for i, k in enumerate(WIRE_KINDS)}


def to_wire(rec: Engagement) -> list[int]:
    """``[segment, segment_since, opened_at, checked_at, birthday_year, anniversary,
    nudged_for, expiry_noticed, best_tier, last_message_at, last_message]``: integers, a
    name as its index in ``WIRE_SEGMENTS`` / ``WIRE_KINDS`` plus one (0: none)."""
    return [0 if rec.segment is None else _SEG_INDEX[rec.segment] + 1, rec.segment_since,
            rec.opened_at, rec.checked_at, rec.birthday_year, rec.anniversary,
            rec.nudged_for, rec.expiry_noticed, rec.best_tier, rec.last_message_at,
            0 if rec.last_message is None else _KIND_INDEX[rec.last_message] + 1]


def from_wire(value: Any) -> Engagement:
    if (type(value) is not list or len(value) != 11
            or list(map(type, value)).count(int) != 11 or min(value) < 0):
        raise WireError(f"state field 'en': expected 11 integers >= 0, got {value!r:.80}")
    seg, kind = value[0], value[10]
    if seg > len(WIRE_SEGMENTS) or kind > len(WIRE_KINDS):
        raise WireError(f"state field 'en': unknown segment or message kind in {value!r:.80}")
    since, opened, checked, year, anniversary, nudged, noticed, tier, last_at = value[1:10]
    return Engagement(None if seg == 0 else WIRE_SEGMENTS[seg - 1], since, opened, checked,
                      year, anniversary, nudged, noticed, tier, last_at,
                      None if kind == 0 else WIRE_KINDS[kind - 1])
