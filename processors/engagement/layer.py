"""The engagement layer object: the protocol of ``processors/layer.py`` for segments and
proactive messages.

Theory of operation
-------------------
``evaluate(rec, state, rules, at, cause)`` is the one step: the segment as of event time
``at`` (a ``SegmentChange`` when it differs from the record's, with a +1/-1 move of the
per-segment gauge ``g`` / ``seg:<segment>``), then the occasions due by ``at``
(``triggers.due`` and ``triggers.select``: ``Message`` records). The layer's clock is
``clock(rec, state)`` = the later of the record's ``checked_at`` and the customer's newest
event time: every event is evaluated at or after it, so only a tick past the newest event
writes ``checked_at``, and an event that changes neither the segment nor an occasion leaves
the record as it was (the same object).

* ``on_event``: the record opens at the customer's first event (``_open``; for a customer
  known before the layer existed, ``opened_at``: no occasion before it is messaged, and
  the tier held then is not congratulated). Otherwise what silence made due before the
  event runs first, at each due time, on the state *before* the event (as the shell's tick
  would have: this only matters when no tick ran); then one evaluation of the state after
  the event, at the event's time or the layer's clock if that is later (a late event is
  judged as of the customer's clock, never back in time). The cause of a segment change is
  the event.
* ``on_tick``: the due steps up to ``at`` (``next_due`` made the engine come), then one
  evaluation at ``at`` with the state the earlier layers left, so a churn level or a loyalty
  change made by this tick (at-risk, an expiry notice) is seen at once. A customer with no
  record (state from before the layer existed) gets one opened at ``at``.
* ``next_due``: the first of: the next time silence changes the segment
  (``segments.next_change``), the next birthday and anniversary, the nudge time; only times
  after the layer's clock.

The record is the same object when nothing changed (the protocol compares by identity).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.engagement import segments, triggers
from processors.engagement.outputs import Message, SegmentChange, consent_as_of, record_id
from processors.engagement.record import Engagement, from_wire, to_wire
from processors.layer import Reaction
from processors.outputs import KpiDelta, Output
from processors.rules import Rules
from processors.state import CustomerState
from schemas.events import Event

GAUGES = "g"  # processors.kpi.GAUGES: the level hash of the partition
_MAX_STEPS = 16  # due steps one reaction may walk through (each moves checked_at on)


def _segment_delta(old: str | None, new: str | None) -> tuple[KpiDelta, ...]:
    out = []
    if old is not None:
        out.append(KpiDelta(GAUGES, f"seg:{old}", -1))
    if new is not None:
        out.append(KpiDelta(GAUGES, f"seg:{new}", 1))
    return tuple(out)


def evaluate(rec: Engagement, state: CustomerState, rules: Rules, at: int,
             cause: str | None, outs: list[Output], kpi: list[KpiDelta],
             due: bool = False) -> Engagement:
    """One evaluation as of event time ``at`` (module docstring); appends to ``outs`` and
    ``kpi``. ``checked_at`` moves to ``at`` (when past the layer's clock) if something
    changed, or always for a ``due`` step (so that the next due time is a later one)."""
    cid = state.customer_id
    old, written = rec, len(outs)
    seg = segments.classify(state, rules, at)
    if seg.segment != rec.segment:
        if rules.engagement.segment_changes:
            outs.append(SegmentChange(
                record_id("seg", cid, seg.segment, str(at)), cid, seg.segment, rec.segment,
                seg.tags, seg.reason, at, cause, consent_as_of(state.profile, at)))
        kpi.extend(_segment_delta(rec.segment, seg.segment))
        rec = rec._replace(segment=seg.segment, segment_since=at)
    found = triggers.due(rec, state, rules, at)
    if found:
        rec, sent = triggers.select(rec, found, rules)
        er = rules.engagement
        for d in sent:
            outs.append(Message(
                record_id("msg", cid, d.kind, d.occasion), cid, d.kind, d.occasion,
                er.trigger(d.kind).offer, d.reason, d.at, rec.segment, d.reference,
                consent_as_of(state.profile, d.at)))
    if (due or rec is not old or len(outs) > written) and at > clock(rec, state):
        rec = rec._replace(checked_at=at)
    return rec


def clock(rec: Engagement, state: CustomerState) -> int:
    """The event time the record has been evaluated up to (module docstring)."""
    newest = state.max_event_at
    return rec.checked_at if newest is None or rec.checked_at > newest else newest


# ``_due``'s answers by state object: the shell asks ``next_due`` of a state (or has its own
# answer cached from the previous batch) and, for the customer's next event, ``on_event``
# starts from that same state object. By identity, holding the objects (so that their ids
# cannot be reused while cached); emptied when it holds ``_CACHED`` states.
_answers: dict[int, tuple[CustomerState, Rules, Engagement, int | None]] = {}
_CACHED = 1 << 14


def _due(rec: Engagement, state: CustomerState, rules: Rules) -> int | None:
    hit = _answers.get(id(state))
    if hit is not None and hit[0] is state and hit[1] is rules and hit[2] is rec:
        return hit[3]
    due = _due_of(rec, state, rules)
    if len(_answers) >= _CACHED:
        _answers.clear()
    _answers[id(state)] = (state, rules, rec, due)
    return due


def _due_of(rec: Engagement, state: CustomerState, rules: Rules) -> int | None:
    after = clock(rec, state)
    times = [segments.next_change(state, rules, after)]
    b = triggers.birthday_at(rec, state, rules)
    a = triggers.anniversary_at(rec, state, rules)
    times += [None if b is None else b[0], None if a is None else a[0],
              triggers.nudge_at(rec, state, rules)]
    later = [t for t in times if t is not None and t > after]
    return min(later) if later else None


def _advance(rec: Engagement, state: CustomerState, rules: Rules, until: int,
             outs: list[Output], kpi: list[KpiDelta]) -> Engagement:
    for _ in range(_MAX_STEPS):
        at = _due(rec, state, rules)
        if at is None or at > until:
            break
        rec = evaluate(rec, state, rules, at, None, outs, kpi, due=True)
    return rec


def _open(state: CustomerState, at: int) -> Engagement:
    """A new record for ``state`` (the state before the event, or the ticked one). A new
    customer's record opens with no limit (``opened_at`` 0: which topic's event came first
    must not matter); a customer known before the layer existed gets ``opened_at = at``."""
    ly = state.loyalty
    known = state.max_event_at is not None
    return Engagement(opened_at=at if known else 0, checked_at=at if known else 0,
                      best_tier=0 if ly is None else ly.tier)


class EngagementLayer:
    """Segments and proactive messages (``processors/engagement``)."""

    name, field, wire_key = "engagement", "engagement", "en"

    def on_event(self, before: CustomerState, after: CustomerState, event: Event,
                 rules: Rules, now: int) -> Reaction:
        old = before.engagement
        t = event.occurred_at
        outs: list[Output] = []
        kpi: list[KpiDelta] = []
        rec = _open(before, t) if old is None else _advance(old, before, rules, t, outs, kpi)
        rec = evaluate(rec, after, rules, max(t, clock(rec, before)), event.event_id, outs,
                       kpi)
        return Reaction(old if rec == old else rec, tuple(outs), tuple(kpi))

    def on_tick(self, before: CustomerState, after: CustomerState, rules: Rules,
                at: int) -> Reaction:
        old: Engagement | None = getattr(after, "engagement", None)
        outs: list[Output] = []
        kpi: list[KpiDelta] = []
        rec = _open(after, at) if old is None else _advance(old, after, rules, at, outs, kpi)
        if rec is old and after is before:
            return Reaction(old)  # nothing of ours was due, no earlier layer changed anything
        if at >= clock(rec, after):
            rec = evaluate(rec, after, rules, at, None, outs, kpi)
        return Reaction(old if rec == old else rec, tuple(outs), tuple(kpi))

    def next_due(self, state: CustomerState, rules: Rules) -> int | None:
        rec: Engagement | None = getattr(state, "engagement", None)
        return None if rec is None else _due(rec, state, rules)

    def view_fields(self, state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
        """``segment`` and ``segment_tags`` as of ``as_of`` (evaluated then, like the churn
        score), ``segment_since`` (the record's, when it agrees), ``last_message`` and
        ``last_message_at``."""
        rec: Engagement | None = getattr(state, "engagement", None)
        if rec is None and state.max_event_at is None:
            return {"segment": None, "segment_tags": [], "segment_since": None,
                    "last_message": None, "last_message_at": None}
        seg = segments.classify(state, rules, as_of)
        since = rec.segment_since if rec is not None and rec.segment == seg.segment else None
        return {"segment": seg.segment, "segment_tags": list(seg.tags),
                "segment_since": since or None,
                "last_message": None if rec is None else rec.last_message,
                "last_message_at": None if rec is None else rec.last_message_at or None}

    def to_wire(self, record: Engagement, state: CustomerState) -> list[int]:
        return to_wire(record)

    def from_wire(self, value: Any, base: Mapping[str, Any]) -> Engagement:
        return from_wire(value)


LAYER = EngagementLayer()
