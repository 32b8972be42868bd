"""A shell loop for the engagement layer's tests: the customer transitions of
``processors.customer`` (the state and every layer of ``processors/registry.py``, the
engagement layer among them), the time-driven changes run at their due times before each
event (as the shard transaction's ``_catch_up`` does) and the state stored through its wire
form between batches. Every engagement record is checked not to come early: a tick's at
its time or before, an event's at the customer's clock or before."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from processors import customer, wire
from processors.engagement.layer import clock
from processors.errors import Rejected
from processors.outputs import KpiDelta, Output
from processors.rules import Rules
from processors.state import CustomerState
from schemas.events import Event


def store(state: CustomerState) -> bytes:
    return wire.dumps(state)


def load(stored: bytes) -> CustomerState:
    return wire.loads(stored)


@dataclass
class Run:
    state: CustomerState | None = None
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


def _early(outputs: tuple[Output, ...], clock: int) -> bool:
    return any(o.occurred_at > clock for o in outputs  # type: ignore[attr-defined]
               if o.stream == "engagement")


def tick(run: Run, rules: Rules, until: int) -> None:
    """The time-driven changes due at or before ``until``, each at its due time."""
    for _ in range(500):
        state = run.state
        if state is None:
            return
        at = customer.next_due(state, rules)
        if at is None or at > until:
            return
        step = customer.tick(state, rules, at)
        assert not _early(step.outputs, at), "an engagement output came early"
        run.state = step.state
        run.outputs += step.outputs
        run.kpi += step.kpi
    raise AssertionError("ticks do not converge")


def apply(run: Run, ev: Event, rules: Rules, now: int | None = None) -> None:
    before = run.state
    try:
        step = customer.apply(before, ev, rules, ev.occurred_at if now is None else now)
    except Rejected:
        run.rejected.append(ev.event_id)
        return
    if step.duplicate:
        return
    rec = None if before is None else before.engagement
    at = ev.occurred_at if rec is None or before is None else max(ev.occurred_at,
                                                                   clock(rec, before))
    assert not _early(step.outputs, at), "an engagement output came early"
    run.state = step.state
    run.outputs += step.outputs
    run.kpi += step.kpi


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
