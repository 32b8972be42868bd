"""The traffic simulator: deterministic, decodable, in event-time order, realistic enough."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from itertools import pairwise

import pytest

from schemas.codec import InvalidEvent, decode
from schemas.events import CustomerEvent, Purchase, SupportTicket, Survey
from streams.tools.simulator import (
    DAY,
    HOUR,
    MALFORMED_TYPES,
    MINUTE,
    SLA_FIRST_RESPONSE_H,
    UNKNOWN_CURRENCIES,
    SimConfig,
    SimRecord,
    Simulator,
)

START = 1_704_067_200_000  # 2024-01-01T00:00:00Z
BIG_CUSTOMERS, BIG_DAYS = 2000, 365


def cfg(**kw: object) -> SimConfig:
    base: dict[str, object] = {"customers": 300, "seed": 7, "start_ms": START}
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def wire(records: list[SimRecord]) -> list[tuple[str, bytes, bytes, bool, int]]:
    return [(r.kind, r.key, r.value, r.valid, r.at_ms) for r in records]


@pytest.fixture(scope="module")
def year() -> tuple[Simulator, list[SimRecord]]:
    """2000 customers over 365 days with 2 % malformed records, timed."""
    sim = Simulator(SimConfig(customers=BIG_CUSTOMERS, seed=1, start_ms=START,
                              malformed_rate=0.02))
    t0 = time.perf_counter()
    records = list(sim.events_until(START + BIG_DAYS * DAY))
    elapsed = time.perf_counter() - t0
    valid = Counter(r.kind for r in records if r.valid)
    per_day = {k: round(v / BIG_DAYS / (BIG_CUSTOMERS / 1000), 2) for k, v in valid.items()}
    print(
        f"\nsimulator: {BIG_CUSTOMERS} customers x {BIG_DAYS} days -> {len(records)} records "
        f"in {elapsed:.2f} s ({len(records) / elapsed:,.0f} records/s); "
        f"valid events/day per 1000 customers: {per_day}"
    )
    return sim, records


def test_same_seed_same_bytes_and_other_seed_differs() -> None:
    a = Simulator(cfg(malformed_rate=0.05)).history(120)
    b = Simulator(cfg(malformed_rate=0.05)).history(120)
    assert len(a) > 500
    assert wire(a) == wire(b)
    c = Simulator(cfg(seed=8, malformed_rate=0.05)).history(120)
    assert wire(a) != wire(c)


def test_history_is_pure_and_equals_events_until() -> None:
    sim = Simulator(cfg())
    first = wire(sim.history(60))
    assert wire(list(sim.events_until(START + 30 * DAY)))  # advancing does not change history
    assert wire(sim.history(60)) == first
    assert wire(list(Simulator(cfg()).events_until(START + 60 * DAY))) == first


def test_repeated_events_until_calls_concatenate_to_one_call() -> None:
    end = START + 90 * DAY
    whole = wire(list(Simulator(cfg(malformed_rate=0.05)).events_until(end)))
    sim = Simulator(cfg(malformed_rate=0.05))
    parts: list[SimRecord] = []
    t, step = START, 1  # uneven steps: 1 ms ... days, plus a step backwards (yields nothing)
    while t < end:
        t = min(end, t + step)
        parts.extend(sim.events_until(t))
        step = step * 7 % (3 * DAY) + 1
    assert list(sim.events_until(START + DAY)) == []
    assert wire(parts) == whole
    assert sim.until_ms == end


def test_an_abandoned_iterator_loses_nothing() -> None:
    end = START + 60 * DAY
    whole = wire(list(Simulator(cfg(malformed_rate=0.1)).events_until(end)))
    sim = Simulator(cfg(malformed_rate=0.1))
    got: list[SimRecord] = []
    it = sim.events_until(START + 30 * DAY)
    for _ in range(100):
        got.append(next(it))
    del it
    got.extend(sim.events_until(end))
    assert wire(got) == whole


def test_valid_stream_does_not_depend_on_malformed_rate() -> None:
    clean = Simulator(cfg()).history(90)
    dirty = Simulator(cfg(malformed_rate=0.2)).history(90)
    assert all(r.valid for r in clean)
    assert wire([r for r in dirty if r.valid]) == wire(clean)
    share = sum(not r.valid for r in dirty) / len(dirty)
    assert 0.15 < share < 0.25


def test_every_valid_record_decodes_to_its_event(year: tuple[Simulator, list[SimRecord]]) -> None:
    _, records = year
    ids = set()
    for r in records:
        if not r.valid:
            continue
        assert r.event is not None and r.defect is None
        assert decode(r.kind, r.value) == r.event
        assert r.kind == r.event.event_kind
        assert r.key == r.event.customer_id.encode()
        assert r.at_ms == r.event.occurred_at
        ids.add(r.event.event_id)
    assert len(ids) == sum(r.valid for r in records)  # event ids are unique


def test_every_malformed_record_is_rejected_or_has_unknown_currency(
    year: tuple[Simulator, list[SimRecord]],
) -> None:
    _, records = year
    bad = [r for r in records if not r.valid]
    assert 0.015 < len(bad) / len(records) < 0.025
    seen: Counter[str] = Counter()
    for r in bad:
        assert r.event is None and r.defect in MALFORMED_TYPES
        seen[r.defect] += 1
        try:
            ev = decode(r.kind, r.value)
        except InvalidEvent:
            assert r.defect != "unknown_currency"
            continue
        assert r.defect == "unknown_currency"
        assert isinstance(ev, Purchase) and ev.currency in UNKNOWN_CURRENCIES
    # (unknown time zones come with customer records only: test_customer_records)
    assert set(seen) == set(MALFORMED_TYPES) - {"unknown_time_zone"}, seen


def test_event_times_never_decrease(year: tuple[Simulator, list[SimRecord]]) -> None:
    _, records = year
    times = [r.at_ms for r in records]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + BIG_DAYS * DAY


def test_proportions_are_sane(year: tuple[Simulator, list[SimRecord]]) -> None:
    sim, records = year
    events = [r.event for r in records if r.valid]
    purchases = [e for e in events if isinstance(e, Purchase) and e.kind == "purchase"]
    refunds = [e for e in events if isinstance(e, Purchase) and e.kind == "refund"]
    orders_by_customer = Counter(p.customer_id for p in purchases)
    one_time = sum(1 for n in orders_by_customer.values() if n == 1) / len(orders_by_customer)
    assert 0.33 < one_time < 0.52, one_time
    assert 0.02 < len(refunds) / len(purchases) < 0.04
    assert 0.005 < sum(p.amount_minor == 0 for p in purchases) / len(purchases) < 0.03
    assert 0.005 < sum(p.currency != "EUR" for p in purchases) / len(purchases) < 0.05
    assert {p.currency for p in purchases} == {"EUR", "USD", "GBP"}
    assert all(1 <= len(p.lines) <= 5 for p in purchases)
    assert all(p.amount_minor == sum(ln.quantity * ln.unit_price_minor for ln in p.lines)
               for p in purchases)
    assert all((p.store_id is not None) == (p.channel == "store") for p in purchases)
    eur = sorted(p.amount_minor for p in purchases if p.currency == "EUR" and p.amount_minor)
    assert 3_000 < eur[len(eur) // 2] < 15_000  # median basket 30-150 EUR
    kinds = Counter(r.kind for r in records if r.valid)
    assert kinds["purchase"] > kinds["ticket"] > kinds["survey"] > kinds["redemption"] > 0
    nps = [e.score for e in events if isinstance(e, Survey) and e.kind == "nps"]
    promoters = sum(s >= 9 for s in nps) / len(nps)
    detractors = sum(s <= 6 for s in nps) / len(nps)
    assert 0.3 < promoters < 0.6 and 0.15 < detractors < 0.4
    segments = Counter(p.segment for p in sim.profiles())
    assert 0.35 < segments["one_time"] / BIG_CUSTOMERS < 0.45
    assert segments["vip"] > 0 and segments["fading"] > 0 and segments["silent"] > 0


def test_refunds_name_an_earlier_order_of_the_same_customer(
    year: tuple[Simulator, list[SimRecord]],
) -> None:
    _, records = year
    orders: dict[str, Purchase] = {}
    for r in records:
        e = r.event
        if not isinstance(e, Purchase):
            continue
        if e.kind == "purchase":
            orders[e.order_id] = e
            continue
        o = orders[e.order_id]
        assert o.customer_id == e.customer_id and o.currency == e.currency
        assert o.occurred_at + DAY <= e.occurred_at
        assert 0 < e.amount_minor <= o.amount_minor
        for ln in e.lines:
            assert any(x.sku == ln.sku and x.quantity >= ln.quantity for x in o.lines)


def test_ticket_lifecycles_are_ordered(year: tuple[Simulator, list[SimRecord]]) -> None:
    _, records = year
    steps: dict[str, list[SupportTicket]] = defaultdict(list)
    for r in records:
        if isinstance(r.event, SupportTicket):
            steps[r.event.ticket_id].append(r.event)
    allowed = {"opened": {"responded"}, "responded": {"resolved"},
               "resolved": {"reopened", "closed"}, "reopened": {"resolved"}}
    breaches = reopened = 0
    for tid, evs in steps.items():
        assert evs[0].status == "opened", tid
        for a, b in pairwise(evs):
            assert b.status in allowed[a.status], (tid, a.status, b.status)
            assert (a.priority, a.channel, a.category) == (b.priority, b.channel, b.category)
        if len(evs) > 1:
            breaches += evs[1].occurred_at - evs[0].occurred_at > (
                SLA_FIRST_RESPONSE_H[evs[0].priority] * HOUR)
        reopened += any(e.status == "reopened" for e in evs)
        assert all(e.sentiment is None or -1 <= e.sentiment <= 1 for e in evs)
    assert 0.05 < breaches / len(steps) < 0.3
    assert 0.03 < reopened / len(steps) < 0.25


def test_profiles_are_ground_truth(year: tuple[Simulator, list[SimRecord]]) -> None:
    sim, records = year
    orders: dict[str, list[int]] = defaultdict(list)
    for r in records:
        if isinstance(r.event, Purchase) and r.event.kind == "purchase":
            orders[r.event.customer_id].append(r.event.occurred_at)
    before, after = [], []
    for p in sim.profiles():
        ts = orders.get(p.customer_id, [])
        if p.first_order_at_ms < START + BIG_DAYS * DAY:
            assert ts and ts[0] == p.first_order_at_ms
        if p.segment == "one_time":
            assert p.churn_style == "one_time" and len(ts) <= 1
        if p.churn_style == "silent":
            assert p.churn_at_ms is not None and all(t < p.churn_at_ms for t in ts)
        if p.churn_style == "fade" and p.churn_at_ms is not None and p.mean_gap_days:
            gaps = [(b - a, a) for a, b in pairwise(ts)]
            before += [g / p.mean_gap_days for g, a in gaps if a < p.churn_at_ms]
            after += [g / p.mean_gap_days for g, a in gaps if a >= p.churn_at_ms]
        assert not p.churns or p.churn_at_ms is not None
        assert sim.profile(p.customer_id) is p
    assert after and sum(after) / len(after) > 1.5 * sum(before) / len(before)
    with pytest.raises(KeyError):
        sim.profile("C999999")
    with pytest.raises(KeyError):
        sim.profile("nobody")


def test_unhappy_customers_churn_more(year: tuple[Simulator, list[SimRecord]]) -> None:
    sim, records = year
    opened: dict[str, int] = {}
    breached, detractors = set(), set()
    for r in records:
        e = r.event
        if isinstance(e, SupportTicket):
            if e.status == "opened":
                opened[e.ticket_id] = e.occurred_at
            elif e.status == "responded" and e.occurred_at - opened[e.ticket_id] > (
                SLA_FIRST_RESPONSE_H[e.priority] * HOUR
            ):
                breached.add(e.customer_id)
        elif isinstance(e, Survey) and e.kind == "nps" and e.score <= 6:
            detractors.add(e.customer_id)
    repeat = [p for p in sim.profiles() if p.segment != "one_time"]

    def churn_rate(ids: set[str] | None) -> float:
        group = [p for p in repeat if ids is None or p.customer_id in ids]
        return sum(p.churns for p in group) / len(group)

    base = churn_rate(None)
    assert churn_rate(breached) > 1.5 * base
    assert churn_rate(detractors) > 1.5 * base


def test_sample_events_live_path() -> None:
    at = START + 40 * DAY
    a = Simulator(cfg(malformed_rate=0.05, live_time_scale=1440.0))
    b = Simulator(cfg(malformed_rate=0.05, live_time_scale=1440.0))
    kinds: Counter[str] = Counter()
    for i in range(200):
        now = at + i * 3000  # 10 minutes of live time, days of follow-ups at 1440x
        ra, rb = a.sample_events(50, now), b.sample_events(50, now)
        assert wire(ra) == wire(rb)
        assert len(ra) == 50
        assert [r.at_ms for r in ra] == sorted(r.at_ms for r in ra)
        assert all(now - 2 * MINUTE <= r.at_ms < now for r in ra)
        for r in ra:
            if r.valid:
                assert decode(r.kind, r.value) == r.event
                kinds[r.kind if r.kind != "ticket" else r.event.status] += 1  # type: ignore[union-attr]
            else:
                kinds["malformed"] += 1
    assert kinds["purchase"] > 5000
    for k in ("opened", "responded", "resolved", "closed", "survey", "redemption", "malformed"):
        assert kinds[k] > 0, kinds
    # The live path is independent of the timeline (and vice versa).
    assert wire(a.history(30)) == wire(Simulator(cfg(malformed_rate=0.05)).history(30))
    assert a.sample_events(0, at) == []


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="start_ms"):
        SimConfig(start_ms=-1)  # before 1970-01-01T00:00:00Z
    with pytest.raises(ValueError, match="malformed_rate"):
        SimConfig(start_ms=START, malformed_rate=1.0)
    with pytest.raises(ValueError, match="currency"):
        SimConfig(start_ms=START, currency="eur")
    with pytest.raises(ValueError, match="reserved"):
        SimConfig(start_ms=START, extra_currencies=("XXX",))
    empty = Simulator(SimConfig(start_ms=START, customers=0))
    assert empty.history(10) == [] and empty.sample_events(5, START) == []


def test_other_base_currency() -> None:
    recs = Simulator(cfg(currency="USD", extra_currencies=("EUR", "JPY"))).history(120)
    cur = Counter(r.event.currency for r in recs if isinstance(r.event, Purchase))
    assert cur.most_common(1)[0][0] == "USD" and set(cur) <= {"USD", "EUR", "JPY"}


# -- customer records (SimConfig.customer_events) ---------------------------------------------


def test_customer_events_leave_every_other_record_as_it_was() -> None:
    """The option adds the customers topic's records and changes nothing else on the
    timeline: the same bytes in the same order (the digests of bench/hotpath.py are computed
    with it off). The live path takes its customer records out of each call's count, so
    there only the option's absence keeps the stream as it was."""
    off = Simulator(cfg(malformed_rate=0.05)).history(200)
    on = Simulator(cfg(malformed_rate=0.05, customer_events=True)).history(200)
    assert not [r for r in off if r.kind == "customer"]
    assert wire([r for r in on if r.kind != "customer"]) == wire(off)
    assert sum(r.kind == "customer" for r in on) > 100
    live_off, live_on = Simulator(cfg()), Simulator(cfg(customer_events=True))
    at = START + 40 * DAY
    a = [r for i in range(20) for r in live_off.sample_events(100, at + i * MINUTE)]
    b = [r for i in range(20) for r in live_on.sample_events(100, at + i * MINUTE)]
    customer = [r for r in b if r.kind == "customer"]
    assert 10 < len(customer) < 100
    assert all(decode(r.kind, r.value) == r.event for r in customer)
    assert not [r for r in a if r.kind == "customer"]


def test_customer_records() -> None:
    sim = Simulator(cfg(customers=1000, malformed_rate=0.02, customer_events=True))
    records = sim.history(365)
    again = Simulator(cfg(customers=1000, malformed_rate=0.02, customer_events=True)).history(365)
    assert wire(records) == wire(again)  # the same seed, the same bytes
    first_order: dict[str, int] = {}
    for r in records:
        if isinstance(r.event, Purchase):
            first_order.setdefault(r.event.customer_id, r.at_ms)
    signups: dict[str, CustomerEvent] = {}
    kinds: Counter[str] = Counter()
    bad = 0
    for r in records:
        if r.kind != "customer":
            continue
        if not r.valid:  # a signup with a zone the IANA database lacks
            with pytest.raises(InvalidEvent) as caught:
                decode(r.kind, r.value)
            assert caught.value.reason == "unknown_time_zone" and r.defect == "unknown_time_zone"
            bad += 1
            continue
        ev = r.event
        assert isinstance(ev, CustomerEvent) and decode(r.kind, r.value) == ev
        kinds[ev.kind] += 1
        if ev.kind == "signup":
            assert ev.customer_id not in signups  # one signup a customer
            signups[ev.customer_id] = ev
            assert START <= ev.occurred_at <= first_order[ev.customer_id]
            assert ev.occurred_at > first_order[ev.customer_id] - 3 * DAY
            if ev.referred_by is not None:
                assert ev.referred_by != ev.customer_id
                referrer = sim.profile(ev.referred_by)
                assert referrer.established or referrer.first_order_at_ms < ev.occurred_at
        elif ev.kind == "consent":
            assert ev.channels and [c for c, _ in ev.channels] == sorted(c for c, _ in ev.channels)
            if ev.customer_id in signups:
                assert ev.occurred_at > signups[ev.customer_id].occurred_at
        else:
            assert ev.kind == "profile_update" and ev.time_zone is not None
    acquired = sum(not p.established for p in sim.profiles())
    assert 0.65 < len(signups) / acquired < 0.85
    referred = sum(e.referred_by is not None for e in signups.values())
    assert 0.12 < referred / len(signups) < 0.28
    assert 0.5 < sum(e.birth_date is not None for e in signups.values()) / len(signups) < 0.7
    assert any(e.birth_date and e.birth_date.startswith("--") for e in signups.values())
    assert 0.75 < sum(e.time_zone is not None for e in signups.values()) / len(signups) < 0.95
    assert kinds["consent"] > len(signups) and kinds["profile_update"] > 0 and bad > 0
