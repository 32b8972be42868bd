"""The churn layer: transitions of the churn record on events and on silence, and its alerts.

Theory of operation: ``on_event`` first catches up with what silence made due before the
event (``on_tick`` on the state before it), then evaluates at the event's time; ``on_tick``
walks every level change due by ``now``, each evaluated at its own due time
(``_evaluate``: score, move the level, alert on a rise outside the cooldown, "recovered"
back at low, find the next due). A rise that silence alone causes in a silence a
replenishment nudge already answered (``nudged``: the engagement record says so) raises no
alert: the customer hears from marketing or from the service team, never both.
``ChurnLayer`` is the record's face to the registry (``processors/layer.py``): record
``CustomerState.churn``, wire key ``ch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from hashlib import blake2b
from typing import Any

from processors.churn.explain import ACTIONS, Reason, _action, _ranked, _reasons, score
from processors.churn.levels import _look_again, _resolve, level_after, look_at
from processors.churn.model import _Profile, _score_value
from processors.churn.records import HIGH, LOW, RANK, ChurnState
from processors.churn.wire import from_wire, to_wire
from processors.layer import Reaction
from processors.rules import Rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS, format_time
from schemas.events import REDEMPTION, REFERRAL, CustomerEvent, Event, SupportTicket
from schemas.frozen import constructor

INACTIVITY = "inactivity"

ALERT, RECOVERED = "alert", "recovered"

_MAX_TICK_STEPS = 8  # transitions one on_tick may walk through (each changes the level)

_churn_state = constructor(ChurnState)  # ChurnState(...) through its slots (schemas.frozen)


@dataclass(frozen=True, slots=True)
class ChurnAlert:
    """A churn-alerts record (``kind`` "alert" on a rise, "recovered" back at low)."""

    alert_id: str
    customer_id: str
    kind: str
    level: str
    previous_level: str
    score: float
    reasons: tuple[Reason, ...]
    suggested_action: str | None  # a key of ACTIONS (None for "recovered")
    cause_event_id: str  # the event that caused it, or "inactivity"
    occurred_at: int  # ms

    @property
    def stream(self) -> str:
        return "alerts"

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "kind": self.kind,
            "customer_id": self.customer_id,
            "level": self.level,
            "previous_level": self.previous_level,
            "score": self.score,
            "reasons": [r.as_dict() for r in self.reasons],
            "suggested_action": self.suggested_action,
            "suggested_action_text": ACTIONS.get(self.suggested_action or ""),
            "cause_event_id": self.cause_event_id,
            "occurred_at": format_time(self.occurred_at),
        }


def _alert_id(customer_id: str, level: str, kind: str, cause: str) -> str:
    raw = f"{customer_id}|{level}|{kind}|{cause}".encode()
    return "churn-" + blake2b(raw, digest_size=10).hexdigest()


def _cause_key(cause: str, at: int) -> str:
    return cause if cause != INACTIVITY else f"{INACTIVITY}:{format_time(at)[:10]}"


def nudged(core: CustomerState, rules: Rules) -> bool:
    """A replenishment nudge went out for the customer's current silence and the rules say
    it answers that silence (``engagement.replenishment.quiets_churn_alert``)."""
    e = core.engagement
    return (e is not None and e.nudge_sent_for != 0
            and e.nudge_sent_for == core.last_purchase_at
            and rules.engagement.replenishment.quiets_churn_alert)


def _evaluate(ch: ChurnState, core: CustomerState, rules: Rules, at: int, cause: str,
              *, first: bool = False, quiet: bool = False
              ) -> tuple[ChurnState, list[ChurnAlert]]:
    """Score at ``at``, move the level, emit what the move calls for, find the next due.
    ``quiet``: a rise raises no alert (a nudge answered this silence): the level moves, and
    nothing is marked as alerted, so no "recovered" follows and the cooldown is untouched."""
    cr = rules.churn
    p = _Profile(core, ch, rules)
    value = _score_value(p.total(at))  # reasons only when an alert needs them
    old = ch.level
    new = level_after(LOW if first else old, value, cr)
    since = at if first or new != old else ch.level_since
    medium_at, high_at, alert_open = ch.alerted_medium, ch.alerted_high, ch.alert_open
    out: list[ChurnAlert] = []
    cid = core.customer_id
    if not first and RANK[new] > RANK[old] and not quiet:
        last = high_at if new == HIGH else medium_at
        if not last or at - last >= cr.cooldown_days * DAY_MS:
            top = _reasons(p, _ranked(p, at)[1], at, cr.max_reasons)
            out.append(ChurnAlert(_alert_id(cid, new, ALERT, _cause_key(cause, at)), cid,
                                  ALERT, new, old, value, top, _action(top), cause, at))
            if new == HIGH:
                high_at = at
            else:
                medium_at = at
            alert_open = True
    elif not first and new == LOW and old != LOW:
        if alert_open and cr.recovered_messages:
            top = _reasons(p, _ranked(p, at)[1], at, cr.max_reasons)
            out.append(ChurnAlert(_alert_id(cid, new, RECOVERED, _cause_key(cause, at)), cid,
                                  RECOVERED, new, old, value, top, None, cause, at))
        alert_open = False
    due, exact = _look_again(p, new, at)
    return _churn_state(value, new, at, since, medium_at, high_at, alert_open, ch.breach_at,
                        ch.reopened_at, due, exact), out


def on_tick(churn_state: ChurnState | None, core_state: CustomerState, rules: Rules,
            now: int) -> tuple[ChurnState | None, tuple[ChurnAlert, ...]]:
    """Silence up to event time ``now``: every level change that became due by ``now``,
    each evaluated at its due time (so the result does not depend on how often ticks come;
    calling again with the same ``now`` changes nothing)."""
    if churn_state is None:
        return None, ()
    ch = churn_state
    out: list[ChurnAlert] = []
    quiet = nudged(core_state, rules)
    for _ in range(_MAX_TICK_STEPS):
        if not ch.due or ch.due > now:
            break
        ch = _resolve(ch, core_state, rules)  # a look-again time: find the exact one
        if not ch.due or ch.due > now:
            break
        ch, alerts = _evaluate(ch, core_state, rules, ch.due, INACTIVITY, quiet=quiet)
        out += alerts
    return ch, tuple(out)


def on_event(churn_state: ChurnState | None, core_state: CustomerState, event: Event,
             rules: Rules, now: int, *, before: CustomerState | None = None
             ) -> tuple[ChurnState, tuple[ChurnAlert, ...]]:
    """The churn record after ``event`` was applied to the core state (``core_state`` is the
    state after it, ``before`` the one before, if any). First whatever silence made due
    before the event (evaluated on ``before``), then the event's own evaluation at its event
    time (never earlier than the previous evaluation); a redemption carries no churn signal
    and only catches up. ``now`` (the partition clock) is not
    needed: an accepted event is never older than it."""
    del now
    t = event.occurred_at
    out: list[ChurnAlert] = []
    ch = churn_state
    if ch is not None and before is not None and ch.due and ch.due <= t:
        caught, alerts = on_tick(ch, before, rules, t)
        assert caught is not None
        ch, out = caught, list(alerts)
    first = ch is None
    if ch is not None and event.event_kind in (REDEMPTION, REFERRAL):  # no churn signal
        return ch, tuple(out)
    base = ch or ChurnState()
    breach_at, reopened_at = base.breach_at, base.reopened_at
    if core_state.sla_breaches > (before.sla_breaches if before is not None else 0):
        breach_at = max(breach_at, t)
    if isinstance(event, SupportTicket) and event.status == "reopened":
        reopened_at = max(reopened_at, t)
    if (breach_at, reopened_at) != (base.breach_at, base.reopened_at):
        base = replace(base, breach_at=breach_at, reopened_at=reopened_at)
    at = max(t, base.at)
    ch, alerts2 = _evaluate(base, core_state, rules, at, event.event_id, first=first)
    return ch, tuple(out + alerts2)


def view_fields(state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
    """``churn_score`` and ``churn_reasons`` as of ``as_of`` (the same ``score`` that ``pulse
    evaluate churn`` computes), ``churn_level``: the level that score gives from the
    customer's recorded level (hysteresis)."""
    sc = score(state, rules, as_of)
    ch = state.churn
    level = sc.level if ch is None else level_after(ch.level, sc.score, rules.churn)
    return {"churn_score": sc.score, "churn_level": level,
            "churn_reasons": [r.text for r in sc.reasons[:rules.churn.max_reasons]]}


class ChurnLayer:
    """The churn record as a layer: record ``CustomerState.churn``, wire key ``ch``."""

    name, field, wire_key = "churn", "churn", "ch"

    def on_event(self, before: CustomerState, after: CustomerState, event: Event,
                 rules: Rules, now: int) -> Reaction:
        if before.churn is not None and isinstance(event, CustomerEvent):
            # no churn signal in a profile record: only what silence made due by its time
            # (as on_event does for a redemption), judged on the state before it
            ch, alerts = on_tick(before.churn, before, rules, event.occurred_at)
        else:
            ch, alerts = on_event(after.churn, after, event, rules, now, before=before)
        return Reaction(ch, alerts)

    def on_tick(self, before: CustomerState, after: CustomerState, rules: Rules,
                at: int) -> Reaction:
        ch, alerts = on_tick(after.churn, after, rules, at)
        return Reaction(ch, alerts)

    def next_due(self, state: CustomerState, rules: Rules) -> int | None:
        return look_at(state.churn, state, rules)

    def view_fields(self, state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
        return view_fields(state, rules, as_of)

    def to_wire(self, record: ChurnState, state: CustomerState) -> list[Any]:
        return to_wire(record, state.max_event_at)

    def from_wire(self, value: Any, base: Mapping[str, Any]) -> ChurnState:
        return from_wire(value, base.get("max_event_at"))


LAYER = ChurnLayer()
