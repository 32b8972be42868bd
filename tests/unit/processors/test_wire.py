"""``processors.wire``: exact round trip, refusal of bad bytes, and the size budget."""

from __future__ import annotations

import pytest

from processors import wire
from processors.customer import apply
from processors.errors import WireError
from processors.rules import DEFAULT_RULES, Rules, parse_rules
from processors.state import Answer, CustomerState, DayBucket, OpenTicket, Seen
from processors.timeutil import DAY_MS, HOUR_MS
from schemas.events import Event, Purchase, SupportTicket, Survey

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z

STATES = [
    CustomerState("c1"),
    CustomerState("kund-ä", max_event_at=0, nps_score=0, nps_at=0, last_sentiment=0.0,
                  last_sentiment_at=0),  # zeros of optional fields are values, not defaults
    CustomerState(
        "c2", max_event_at=T0, first_purchase_at=T0 - DAY_MS, last_purchase_at=T0,
        purchase_count=3, refund_count=1, gross_spend_minor=2**40, refunds_minor=5,
        archived_purchase_days=7, days=(DayBucket(19_700, 1, 100, 0), DayBucket(19_723, 2, 9, 5)),
        tickets_opened=4, tickets_reopened=1, tickets_dropped=2, sla_breaches=3,
        open_tickets=(OpenTicket("T-1", T0, "urgent", True), OpenTicket("T-2", T0, "low", False)),
        last_sentiment=-0.3333333333333333, last_sentiment_at=T0, nps_score=10, nps_at=T0,
        csat=(Answer(T0, 5), Answer(T0, 1)), ces=(Answer(T0 - 1, 7),), surveys_answered=9,
        seen=(Seen(T0, 0), Seen(T0, 2**64 - 1)),
    ),
    CustomerState("c3", last_sentiment=-0.0, last_sentiment_at=T0),
]


@pytest.mark.parametrize("state", STATES)
def test_round_trip_is_exact(state: CustomerState) -> None:
    data = wire.dumps(state)
    back = wire.loads(data)
    assert back == state
    assert repr(back) == repr(state)  # same types too (e.g. -0.0 stays a float -0.0)
    assert wire.dumps(back) == data


BAD = [
    (b"not json", "not valid JSON"),
    (b"[1]", "must be a JSON object"),
    (b'{"c":"x"}', "version None is not supported"),
    (b'{"v":99,"c":"x"}', "version 99 is not supported"),
    (b'{"v":1}', "'c' (customer_id) must be a string"),
    (b'{"v":1,"c":"x","zz":1}', "unknown fields"),
    (b'{"v":1,"c":"x","pc":"3"}', "'pc': expected an integer"),
    (b'{"v":1,"c":"x","pc":true}', "'pc': expected an integer"),
    (b'{"v":1,"c":"x","d":[1,2,3]}', "flat list of 4-tuples"),
    (b'{"v":1,"c":"x","s":[1,2,2.5]}', "'s': expected integers"),
    (b'{"v":1,"c":"x","ls":1}', "'ls': expected a float"),
    (b'{"v":1,"c":"x","ot":[["T",1,"low",2]]}', "malformed open ticket"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_bytes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message.replace("(", r"\(").replace(")", r"\)")):
        wire.loads(data)


def _typical_year(rules: Rules) -> CustomerState:
    """A typical customer: 10 purchases over a year (one refund), two support tickets with a
    bit of back-and-forth, an NPS, two CSAT and a CES answer; ids as producers make them."""
    events: list[Event] = []
    for i in range(10):
        t = T0 + i * 37 * DAY_MS + (i % 5) * 3 * HOUR_MS + 123_456
        events.append(Purchase(f"0f8fad5b-d9cb-469f-a165-70867728950{i}", "cust-0004711", t,
                               "pos", f"ORD-2024-{100_000 + i}", "store", "purchase",
                               4_999 + 1_234 * i, "EUR" if i % 3 else "USD"))
    events.append(Purchase("0f8fad5b-d9cb-469f-a165-708677289599", "cust-0004711",
                           T0 + 40 * DAY_MS, "web", "ORD-2024-100001", "web", "refund", 1_500,
                           "EUR"))
    for k, (day, prio) in enumerate([(50, "normal"), (300, "high")]):
        base = T0 + day * DAY_MS
        for j, (status, dt) in enumerate([("opened", 0), ("responded", 2 * HOUR_MS),
                                          ("resolved", 20 * HOUR_MS)]):
            events.append(SupportTicket(f"7c9e6679-7425-40de-944b-e07fc1f90a{k}{j}",
                                        "cust-0004711", base + dt, "crm", f"TCK-{88_000 + k}",
                                        status, prio, "email", "delivery",  # type: ignore[arg-type]
                                        -0.4 + 0.3 * j))
    for k, (day, kind, score) in enumerate([(60, "nps", 8), (120, "csat", 4), (310, "csat", 5),
                                            (312, "ces", 2)]):
        events.append(Survey(f"3d6f4e2a-11b1-4c4e-9f0c-5a2b8f6e1d0{k}", "cust-0004711",
                             T0 + day * DAY_MS + 5 * HOUR_MS, "survey-tool", f"SRV-{k}", kind,  # type: ignore[arg-type]
                             score, "checkout"))
    events.sort(key=lambda e: e.occurred_at)
    state: CustomerState | None = None
    for ev in events:
        state = apply(state, ev, rules, ev.occurred_at - rules.allowed_lateness_ms).state
    assert state is not None
    return state


def test_typical_customer_is_under_one_kib() -> None:
    state = _typical_year(DEFAULT_RULES)
    data = wire.dumps(state)
    print(f"\ntypical customer: {len(data)} bytes serialized\n{data.decode()}")
    assert wire.loads(data) == state
    # the dedup window holds the ids within the lateness of each kind's newest event
    assert (state.purchase_count, len(state.days), len(state.seen)) == (10, 11, 6)
    assert len(data) < 1024


def test_worst_case_is_bounded() -> None:
    """Every bounded part full at once: the state cannot grow past this whatever the
    history (informational number; the typical case is what has the 1 KiB budget)."""
    rules = parse_rules({})
    long_id = "T" * 128
    state = CustomerState(
        "c" * 128, max_event_at=T0, first_purchase_at=T0, last_purchase_at=T0,
        purchase_count=10**9, gross_spend_minor=10**15,
        days=tuple(DayBucket(19_000 + d, 99, 10**9, 10**9) for d in range(367)),
        open_tickets=tuple(OpenTicket(f"{long_id[:-3]}{i:03d}", T0, "urgent", False)
                           for i in range(rules.support.max_open_tickets)),
        csat=(Answer(T0, 5),) * rules.surveys.rolling_answers,
        ces=(Answer(T0, 7),) * rules.surveys.rolling_answers,
        seen=tuple(Seen(T0, 2**64 - 1 - i) for i in range(rules.dedup_window_max)),
    )
    size = len(wire.dumps(state))
    print(f"\nworst case with default rules: {size} bytes")
    assert size < 32 * 1024



@pytest.mark.parametrize("a", STATES)
@pytest.mark.parametrize("b", STATES)
def test_evolve_is_building_the_state_with_the_changes(a: CustomerState,
                                                     b: CustomerState) -> None:
    from processors.state import evolve

    names = CustomerState.__struct_fields__
    for start in range(3):  # every field changed in one of the three
        changes = {n: getattr(b, n) for n in names[start::3]}
        new = evolve(a, changes)
        assert new == CustomerState(**{**{n: getattr(a, n) for n in names}, **changes})
        assert new is not a
    assert evolve(a, {}) == a
    with pytest.raises(TypeError, match="has no field 'purchase_cuont'"):
        evolve(a, {"purchase_cuont": 1})
