"""Engagement volume on the simulator's default traffic: messages per customer per month.

    .venv/bin/python bench/engagement_volume.py [--customers 2000] [--days 365] [--seed 42]
                                                [--no-customer-events] [--rules FILE]

Simulates ``--days`` of traffic (``pulse dev``'s default: with the customers topic, so
birthdays, time zones and consent exist) and runs each customer's events in event time
through the processors (every layer of ``processors/registry.py``), the time-driven changes
at their due times before each event and up to the end of the period (the loop of
``tests/unit/processors/engagement/fixtures.py``; tests/integration/test_engagement.py
checks that the worker writes the same records). Prints, per kind, the messages and
segment changes per customer per month (customers = those with at least one event; a
month = 30.44 days), the share of messages
that had an e-mail opt-in at their time, how often a churn alert and a nudge answered the
same silence (alerts for the silence itself; alerts an event in it caused are counted
apart), and whether any customer got one trigger twice for one occasion. Numbers,
never assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from processors.churn.layer import INACTIVITY, ChurnAlert
from processors.rules import DEFAULT_RULES, TRIGGER_KINDS, parse_rules
from processors.timeutil import DAY_MS
from schemas.events import Event
from streams.tools.simulator import SimConfig, Simulator
from tests.unit.processors.engagement.fixtures import Run, apply, tick

START_MS = 1_735_689_600_000  # 2025-01-01 UTC, as bench/hotpath.py
MONTH_DAYS = 30.44


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-customer-events", action="store_true",
                    help="without the customers topic (no birthdays, no consent)")
    ap.add_argument("--rules", type=Path, help="a rules file (default: the defaults)")
    args = ap.parse_args()
    rules = DEFAULT_RULES if args.rules is None else parse_rules(
        yaml.safe_load(args.rules.read_text()))
    end = START_MS + args.days * DAY_MS
    sim = Simulator(SimConfig(customers=args.customers, seed=args.seed, start_ms=START_MS,
                              customer_events=not args.no_customer_events))
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for r in sim.history(args.days):
        if r.event is not None:
            by_customer[r.event.customer_id].append(r.event)
    started = time.perf_counter()
    kinds: Counter[str] = Counter()
    opted_in: Counter[str] = Counter()
    twice = both = by_event = nudged_silences = alerts_sent = 0
    events = 0
    for evs in by_customer.values():
        run = Run()
        for ev in evs:
            if run.state is not None:
                tick(run, rules, ev.occurred_at)
            apply(run, ev, rules)
        events += len(evs)
        tick(run, rules, end)
        records = run.engagement
        kinds.update(d["kind"] for d in records)
        for d in records:
            if d["kind"] != "segment_change" and d["consent"]["email"] is True:
                opted_in[d["kind"]] += 1
        occasions = [(d["kind"], d["occasion"]) for d in run.messages()]
        twice += len(occasions) - len(set(occasions))
        sent = sorted((o.occurred_at, o.cause_event_id) for o in run.outputs
                      if isinstance(o, ChurnAlert) and o.kind == "alert")
        alerts_sent += len(sent)
        alerts = [a for a, cause in sent if cause == INACTIVITY]  # silence's alerts
        caused = [a for a, cause in sent if cause != INACTIVITY]  # an event's (a survey...)
        for m in run.messages("replenishment"):
            nudged_silences += 1
            silence_from = int(m["occasion"])
            if any(a > silence_from for a, _ in sent):  # alerted later in the same silence?
                last = run.state.last_purchase_at if run.state is not None else None
                nxt = [e.occurred_at for e in evs if getattr(e, "kind", None) == "purchase"
                       and e.occurred_at > silence_from]
                until = min(nxt) if nxt else (last or 0) + 10**15
                both += any(silence_from < a < until for a in alerts)
                by_event += any(silence_from < a < until for a in caused)
    took = time.perf_counter() - started
    customers = len(by_customer)
    months = args.days / MONTH_DAYS
    print(f"{args.customers} simulated customers ({customers} with events), {args.days} days, "
          f"seed {args.seed}, customer records {'off' if args.no_customer_events else 'on'}: "
          f"{events} events in {took:.1f} s")
    print(f"{'kind':<16}{'records':>9}{'per customer per month':>25}{'with e-mail opt-in':>21}")
    total = 0
    for kind in ("segment_change", *TRIGGER_KINDS):
        n = kinds[kind]
        share = f"{opted_in[kind] / n:.0%}" if n and kind != "segment_change" else "-"
        print(f"{kind:<16}{n:>9}{n / customers / months:>25.3f}{share:>21}")
        total += n if kind != "segment_change" else 0
    print(f"{'messages':<16}{total:>9}{total / customers / months:>25.3f}")
    print(f"one trigger twice for one occasion: {twice}; nudged silences later churn-alerted "
          f"for the silence too: {both} of {nudged_silences} (alerted for an event in them, "
          f"e.g. a detractor survey: {by_event}); churn alerts sent: {alerts_sent}")


if __name__ == "__main__":
    main()
