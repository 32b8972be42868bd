"""A shell loop for the engagement layer's tests: the customer transitions of
``processors.customer`` (state, points, churn, KPIs) with the engagement layer on top, the
time-driven changes run at their due times before each event (as the shard transaction's
``_catch_up`` does) and the state stored through its wire form between batches.

Until the layer registry puts the record in ``CustomerState``, the state here is a
subclass with an ``engagement`` field (``State``); ``to_wire`` / ``from_wire`` keep the
record's wire form next to ``processors.wire``'s bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from processors import customer, wire
from processors.engagement.layer import LAYER
from processors.engagement.record import Engagement
from processors.errors import Rejected
from processors.outputs import KpiDelta, Output
from processors.rules import Rules
from processors.state import CustomerState
from schemas.events import Event


class State(CustomerState, frozen=True, gc=False):
    engagement: Any = None


def record(state: CustomerState | None) -> Engagement | None:
    return getattr(state, "engagement", None)


def store(state: State) -> tuple[bytes, Any]:
    rec = state.engagement
    return wire.dumps(state), None if rec is None else LAYER.to_wire(rec, state)


def load(stored: tuple[bytes, Any]) -> State:
    base = wire.loads(stored[0])
    rec = None if stored[1] is None else LAYER.from_wire(stored[1], {})
    fields = {f: getattr(base, f) for f in CustomerState.__struct_fields__}
    return State(**fields, engagement=rec)


def _with(state: CustomerState, rec: Any) -> State:
    return msgspec.structs.replace(state, engagement=rec)  # type: ignore[return-value]


@dataclass
class Run:
    state: State | None = None
    outputs: list[Output] = field(default_factory=list)
    kpi: list[KpiDelta] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    @property
    def engagement(self) -> list[dict[str, Any]]:
        return [o.as_dict() for o in self.outputs if o.stream == "engagement"]

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.engagement if d["kind"] != "segment_change"
                and (kind is None or d["kind"] == kind)]

    def segments(self) -> list[str]:
        return [d["segment"] for d in self.engagement if d["kind"] == "segment_change"]


def next_due(state: CustomerState, rules: Rules) -> int | None:
    dues = [d for d in (customer.next_due(state, rules), LAYER.next_due(state, rules))
            if d is not None]
    return min(dues) if dues else None


def tick(run: Run, rules: Rules, until: int) -> None:
    """The time-driven changes due at or before ``until``, each at its due time."""
    for _ in range(500):
        state = run.state
        if state is None:
            return
        at = next_due(state, rules)
        if at is None or at > until:
            return
        step = customer.tick(state, rules, at)
        mid = step.state
        r = LAYER.on_tick(state, mid, rules, at)
        assert all(o.occurred_at <= at for o in r.outputs), "an engagement output came early"
        run.state = _with(mid, r.record)
        run.outputs += [*step.outputs, *r.outputs]
        run.kpi += [*step.kpi, *r.kpi]
    raise AssertionError("ticks do not converge")


def apply(run: Run, ev: Event, rules: Rules, now: int | None = None) -> None:
    before = run.state if run.state is not None else State(customer_id=ev.customer_id)
    try:
        step = customer.apply(before, ev, rules, ev.occurred_at if now is None else now)
    except Rejected:
        run.rejected.append(ev.event_id)
        return
    if step.duplicate:
        return
    r = LAYER.on_event(before, step.state, ev, rules, ev.occurred_at)
    clock = max(ev.occurred_at, getattr(record(before), "checked_at", 0))
    assert all(o.occurred_at <= clock for o in r.outputs), "an engagement output came early"
    run.state = _with(step.state, r.record)
    run.outputs += [*step.outputs, *r.outputs]
    run.kpi += [*step.kpi, *r.kpi]


def process(events: list[Event], rules: Rules, *, until: int | None = None,
            cuts: frozenset[int] = frozenset(), ticks: bool = True) -> Run:
    """Apply ``events`` in order (ticking before each when ``ticks``), storing the state
    through its wire form before the indexes in ``cuts``; then tick up to ``until``."""
    run = Run()
    for i, ev in enumerate(events):
        if i in cuts and run.state is not None:
            run.state = load(store(run.state))
        if ticks and run.state is not None:
            tick(run, rules, ev.occurred_at)
        apply(run, ev, rules)
    if until is not None:
        tick(run, rules, until)
    return run
