"""The engagement record kept in ``CustomerState.engagement``, and its wire form.

Theory of operation
-------------------
``Engagement`` is the layer's memory (a module without logic, so that ``processors/state.py``
can name the type): the current segment (for change detection and the per-segment gauge),
when the record was opened (no occasion before it is celebrated: a customer known before
the layer existed gets no backlog; 0 for a customer whose first event opened it), the event
time a tick last evaluated it at when that is past the customer's newest event (with it,
``layer.clock``: never decreases; time-driven checks start after it), and one
"done" mark per kind of occasion, so that no occasion is messaged twice however often the
customer is evaluated, replayed or restarted:

* ``birthday_year``: the latest year whose birthday was handled (sent or dropped);
* ``anniversary``: the latest first-purchase anniversary handled (1, 2, ...);
* ``nudged_for``: the ``last_purchase_at`` of the latest silence handled by the
  replenishment rule (a new purchase starts a new silence);
* ``expiry_noticed``: the expiry deadline of the latest points-expiry notice mirrored;
* ``best_tier``: the highest loyalty tier held when the record opened or congratulated since;
* ``last_message_at`` / ``last_message``: the latest message sent (the rate limit);
* ``nudge_sent_for``: the ``last_purchase_at`` of the latest silence a replenishment nudge
  was *sent* for (``nudged_for`` also marks silences handled without a message): the churn
  layer withholds the alert that this silence alone would raise (never both).

On the wire (``processors/wire.py`` key ``en``) it is a list of 11 integers (12 once a
nudge was sent: the twelfth came later, so records without one keep their bytes), names as
their index in ``WIRE_SEGMENTS`` / ``WIRE_KINDS`` plus one (0: none): under 100 bytes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from processors.errors import WireError


class Engagement(NamedTuple):
    """One customer's engagement record. Times are epoch ms; 0 = never / none."""

    segment: str | None = None  # rules.SEGMENTS name; None before the first evaluation
    segment_since: int = 0
    opened_at: int = 0  # no occasion before this is messaged
    checked_at: int = 0  # event time of the latest tick past the newest event (layer.clock)
    birthday_year: int = 0
    anniversary: int = 0
    nudged_for: int = 0
    expiry_noticed: int = 0
    best_tier: int = 0
    last_message_at: int = 0
    last_message: str | None = None  # rules.TRIGGER_KINDS name
    nudge_sent_for: int = 0  # last_purchase_at of the latest silence a nudge was sent for


# Names are stored as their index here: append, never reorder.
WIRE_SEGMENTS: tuple[str, ...] = ("lapsed", "at_risk", "new", "big_spender", "loyal",
                                  "one_time", "active", "inactive", "prospect")
WIRE_KINDS: tuple[str, ...] = ("points_expiry", "birthday", "tier_upgrade", "anniversary",
                               "replenishment")
_SEG_INDEX = {s: i for i, s in enumerate(WIRE_SEGMENTS)}
_KIND_INDEX = {k: i for i, k in enumerate(WIRE_KINDS)}


def to_wire(rec: Engagement) -> list[int]:
    """``[segment, segment_since, opened_at, checked_at, birthday_year, anniversary,
    nudged_for, expiry_noticed, best_tier, last_message_at, last_message(,
    nudge_sent_for)]``: integers, a name as its index in ``WIRE_SEGMENTS`` / ``WIRE_KINDS``
    plus one (0: none); the twelfth only when it is not 0."""
    out = [0 if rec.segment is None else _SEG_INDEX[rec.segment] + 1, rec.segment_since,
           rec.opened_at, rec.checked_at, rec.birthday_year, rec.anniversary,
           rec.nudged_for, rec.expiry_noticed, rec.best_tier, rec.last_message_at,
           0 if rec.last_message is None else _KIND_INDEX[rec.last_message] + 1]
    if rec.nudge_sent_for:
        out.append(rec.nudge_sent_for)
    return out


def from_wire(value: Any) -> Engagement:
    if (type(value) is not list or len(value) not in (11, 12)
            or list(map(type, value)).count(int) != len(value) or min(value) < 0):
        raise WireError(f"state field 'en': expected 11 or 12 integers >= 0, got "
                        f"{value!r:.80}")
    seg, kind = value[0], value[10]
    if seg > len(WIRE_SEGMENTS) or kind > len(WIRE_KINDS):
        raise WireError(f"state field 'en': unknown segment or message kind in {value!r:.80}")
    since, opened, checked, year, anniversary, nudged, noticed, tier, last_at = value[1:10]
    return Engagement(None if seg == 0 else WIRE_SEGMENTS[seg - 1], since, opened, checked,
                      year, anniversary, nudged, noticed, tier, last_at,
                      None if kind == 0 else WIRE_KINDS[kind - 1],
                      value[11] if len(value) == 12 else 0)
