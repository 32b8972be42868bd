"""Alert volume on the simulator's traffic, through the pure processors with a daily scanner:
a small share of customers a day, and never two alerts at one level within the cooldown."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec

from processors.churn.layer import ChurnAlert, on_tick
from processors.customer import apply
from processors.errors import Rejected
from processors.rules import DEFAULT_RULES, Rules
from processors.state import KIND_INDEX, CustomerState
from processors.timeutil import DAY_MS
from streams.tools.simulator import SimConfig, Simulator

START = 1_672_531_200_000  # 2023-01-01


@dataclass
class Volume:
    customers: int
    days: int
    alerts: list[ChurnAlert] = field(default_factory=list)

    def per_day_share(self, kind: str = "alert") -> float:
        n = sum(1 for a in self.alerts if a.kind == kind)
        return n / self.days / self.customers

    def summary(self) -> str:
        c = Counter((a.kind, a.level, "silence" if a.cause_event_id == "inactivity"
                     else "event") for a in self.alerts)
        return (f"{self.customers} customers, {self.days} days: alerts/day = "
                f"{self.per_day_share():.4%} of customers, recovered/day = "
                f"{self.per_day_share('recovered'):.4%}; {dict(sorted(c.items()))}")


def simulate(customers: int, days: int, seed: int = 1, rules: Rules = DEFAULT_RULES,
             warmup_days: int = 0) -> Volume:
    """The simulator's timeline through ``apply`` (per-kind watermarks, like the engine),
    with every customer's ``on_tick`` at the end of each day (the scanner). Alerts of the
    first ``warmup_days`` (the simulation starting everyone at once) are not counted."""
    sim = Simulator(SimConfig(start_ms=START, customers=customers, seed=seed))
    states: dict[str, CustomerState] = {}
    high = [0] * len(KIND_INDEX)
    out = Volume(customers, days - warmup_days)
    counted = START + warmup_days * DAY_MS
    for d in range(1, days + 1):
        day_end = START + d * DAY_MS
        for rec in sim.events_until(day_end):
            ev = rec.event
            assert ev is not None
            k = KIND_INDEX[ev.event_kind]
            high[k] = max(high[k], ev.occurred_at)
            try:
                step = apply(states.get(ev.customer_id), ev, rules,
                             high[k] - rules.allowed_lateness_ms)
            except Rejected:
                continue
            states[ev.customer_id] = step.state
            out.alerts += [o for o in step.outputs if isinstance(o, ChurnAlert)]
        for cid, st in states.items():
            if st.churn is not None and st.churn.due and st.churn.due <= day_end:
                ch, alerts = on_tick(st.churn, st, rules, day_end)
                states[cid] = msgspec.structs.replace(st, churn=ch)
                out.alerts += alerts
    out.alerts = [a for a in out.alerts if a.occurred_at >= counted]
    return out


def test_alert_volume_is_small_and_the_cooldown_holds() -> None:
    v = simulate(customers=300, days=240, seed=5, warmup_days=60)
    print("\n" + v.summary())
    assert v.alerts, "a simulated population has churners"
    assert v.per_day_share() < 0.01  # well under 1 % of customers a day
    last: dict[tuple[str, str], int] = {}
    cooldown = DEFAULT_RULES.churn.cooldown_days * DAY_MS
    for a in sorted(v.alerts, key=lambda a: a.occurred_at):
        if a.kind != "alert":
            continue
        key = (a.customer_id, a.level)
        if key in last:
            assert a.occurred_at - last[key] >= cooldown, a
        last[key] = a.occurred_at
    assert len({a.alert_id for a in v.alerts}) == len(v.alerts)
    assert {a.cause_event_id == "inactivity" for a in v.alerts} == {True, False}
