"""The records the engagement layer writes to the ``engagement`` topic.

Theory of operation
-------------------
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
from typing import Any

from processors.profile import Profile, marketing_consent
from processors.timeutil import format_time
from schemas.events import CONSENT_CHANNELS

STREAM = "engagement"
SEGMENT_CHANGE = "segment_change"


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
