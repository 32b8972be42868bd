"""Customer profiles (processors/profile.py): what signup, profile_update and consent records
change, through ``processors.customer.apply`` (dedup, lateness, dead letters), the wire format
(round trip, old states), the export row, and the layers that must not trip over them."""

from __future__ import annotations

from typing import Any

import pytest

from processors import kpi, wire
from processors.churn.layer import ChurnAlert
from processors.customer import apply, apply_state, next_due, tick, view
from processors.errors import INVALID, NOT_SUPPORTED, TOO_LATE, Rejected, WireError
from processors.profile import Consent, Profile, from_wire, marketing_consent, to_wire
from processors.rules import DEFAULT_RULES
from processors.state import KIND_INDEX, CustomerState
from processors.timeutil import DAY_MS, HOUR_MS
from schemas.events import CustomerEvent, Purchase
from tests.builders import customer

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MIN_MS = 60_000
C = "C1"
R = DEFAULT_RULES
CUSTOMER_KIND = KIND_INDEX["customer"]


def signup(eid: str, t: int, **fields: Any) -> CustomerEvent:
    return customer(eid, t, "signup", cid=C, **fields)


def update(eid: str, t: int, **fields: Any) -> CustomerEvent:
    return customer(eid, t, "profile_update", cid=C, source="crm", **fields)


def consent(eid: str, t: int, **channels: bool) -> CustomerEvent:
    return customer(eid, t, "consent", cid=C, source="app", **channels)


def run(*events: CustomerEvent | Purchase, state: CustomerState | None = None
        ) -> CustomerState:
    for ev in events:
        state = apply(state, ev, R, ev.occurred_at).state
    assert state is not None
    return state


# -- what each record changes (table-driven: records in arrival order -> the profile) -------

CASES: list[tuple[str, list[CustomerEvent], Profile]] = [
    ("a signup with everything",
     [signup("s", T0, referred_by="C9", birth_date="1988-02-29", time_zone="Europe/Paris")],
     Profile(T0, "C9", "--02-29", T0, "Europe/Paris", T0)),
    ("a bare signup", [signup("s", T0)], Profile(signup_at=T0)),
    ("the year of a birth date is not kept", [signup("s", T0, birth_date="1990-05-17")],
     Profile(T0, None, "--05-17", T0)),
    ("the earliest signup is the signup (and its referrer), whatever the arrival order",
     [signup("s2", T0 + DAY_MS, referred_by="C8"), signup("s1", T0, referred_by="C9")],
     Profile(signup_at=T0, referred_by="C9")),
    ("a later signup names no new referrer",
     [signup("s1", T0), signup("s2", T0 + DAY_MS, referred_by="C9")],
     Profile(signup_at=T0)),
    ("two signups at the same time: the first record keeps it",
     [signup("s1", T0, referred_by="C8"), signup("s2", T0, referred_by="C9")],
     Profile(signup_at=T0, referred_by="C8")),
    ("a later signup's zone is a profile update",
     [signup("s1", T0, time_zone="UTC"), signup("s2", T0 + DAY_MS, time_zone="Asia/Tokyo")],
     Profile(T0, None, None, None, "Asia/Tokyo", T0 + DAY_MS)),
    ("an update without a signup", [update("u", T0, time_zone="America/New_York")],
     Profile(time_zone="America/New_York", time_zone_at=T0)),
    ("latest wins per field, by occurred_at, not by arrival",
     [update("u2", T0 + 2 * DAY_MS, time_zone="Asia/Tokyo"),
      update("u1", T0 + DAY_MS, time_zone="UTC", birth_date="--12-31")],
     Profile(None, None, "--12-31", T0 + DAY_MS, "Asia/Tokyo", T0 + 2 * DAY_MS)),
    ("the same time: the later record wins",
     [update("u1", T0, time_zone="UTC"), update("u2", T0, time_zone="Asia/Tokyo")],
     Profile(time_zone="Asia/Tokyo", time_zone_at=T0)),
    ("a field left out (or null) is no change",
     [signup("s", T0, birth_date="--03-01", time_zone="UTC"),
      update("u", T0 + DAY_MS, time_zone="Europe/Rome")],
     Profile(T0, None, "--03-01", T0, "Europe/Rome", T0 + DAY_MS)),
    ("consent: one entry a channel, sorted",
     [consent("c", T0, sms=False, email=True)],
     Profile(consent=(Consent("email", True, T0), Consent("sms", False, T0)))),
    ("consent: channels not named keep theirs; opting out takes effect at its time",
     [consent("c1", T0, email=True, push=True), consent("c2", T0 + HOUR_MS, email=False)],
     Profile(consent=(Consent("email", False, T0 + HOUR_MS), Consent("push", True, T0)))),
    ("consent: an older record that arrives late does not undo a newer one",
     [consent("c2", T0 + HOUR_MS, email=False), consent("c1", T0, email=True, sms=True)],
     Profile(consent=(Consent("email", False, T0 + HOUR_MS), Consent("sms", True, T0)))),
    ("consent at the same time: the later record wins",
     [consent("c1", T0, email=True), consent("c2", T0, email=False)],
     Profile(consent=(Consent("email", False, T0),))),
]


@pytest.mark.parametrize(("events", "expected"), [(e, p) for _, e, p in CASES],
                         ids=[name for name, _, _ in CASES])
def test_profile_changes(events: list[CustomerEvent], expected: Profile) -> None:
    state = run(*events)
    assert state.profile == expected
    assert wire.loads(wire.dumps(state)) == state
    assert state.max_event_at == max(e.occurred_at for e in events)
    assert state.kind_max[CUSTOMER_KIND] == max(e.occurred_at for e in events)
    assert state.kind_max[:CUSTOMER_KIND] == (0, 0, 0, 0)  # no other kind's clock moved


def test_a_record_that_changes_nothing_still_counts_for_dedup_and_clock() -> None:
    state = run(signup("s1", T0, time_zone="UTC"))
    later = apply(state, update("u0", T0 - HOUR_MS, time_zone="Asia/Tokyo"), R, T0).state
    assert later.profile == state.profile  # older than the zone on record
    assert len(later.seen) == 2


# -- the shell's rules: dedup, lateness, dead letters ----------------------------------------


def test_a_duplicate_record_changes_nothing() -> None:
    state = run(consent("c", T0, email=True))
    step = apply(state, consent("c", T0 + DAY_MS, email=False), R, T0 + DAY_MS)
    assert step.duplicate and step.state is state


def test_too_late_is_judged_on_the_customer_records_own_clock() -> None:
    state = run(signup("s", T0 + 30 * DAY_MS))
    with pytest.raises(Rejected) as caught:
        apply(state, update("u", T0, time_zone="UTC"), R, T0 + 30 * DAY_MS)
    assert caught.value.reason == TOO_LATE and "customer" in caught.value.message
    # a purchase of the same age is not late: its kind's clock has not moved
    old = Purchase("p", C, T0, "pos", "o", "store", "purchase", 100, "EUR")
    assert apply(state, old, R, T0 + 30 * DAY_MS).state.purchase_count == 1


def test_apply_refuses_an_erasure_the_shell_erases() -> None:
    state = run(signup("s", T0, time_zone="UTC"))
    erase = CustomerEvent("x", C, T0 + DAY_MS, "crm", "erasure_requested")
    with pytest.raises(Rejected) as caught:
        apply(state, erase, R, T0 + DAY_MS)
    assert caught.value.reason == NOT_SUPPORTED
    assert "shard transaction erases the customer" in caught.value.message
    with pytest.raises(Rejected):  # a customer never seen: no state is made either
        apply(None, erase, R, T0)


@pytest.mark.parametrize("event", [
    CustomerEvent("e", C, T0, "web", "signup", referred_by=C),
    CustomerEvent("e", C, T0, "web", "profile_update", referred_by="C9", time_zone="UTC"),
    CustomerEvent("e", C, T0, "web", "consent", channels=(("fax", True),)),
    CustomerEvent("e", C, T0, "web", "consent", channels=(("email", 1),)),  # type: ignore[arg-type]
    CustomerEvent("e", C, T0, "web", "merge"),  # type: ignore[arg-type]
], ids=["self-referral", "referrer-in-update", "unknown-channel", "not-a-bool", "unknown-kind"])
def test_impossible_records_are_rejected_and_change_nothing(event: CustomerEvent) -> None:
    """What the codec refuses is refused here too (events can be built without it)."""
    state = run(signup("s", T0 - DAY_MS))
    with pytest.raises(Rejected) as caught:
        apply(state, event, R, T0)
    assert caught.value.reason == INVALID


# -- the other layers: no points, no churn signal, a customer for the KPIs -----------------


def test_profile_records_earn_nothing_and_alert_nothing() -> None:
    buy = Purchase("p", C, T0 + DAY_MS, "pos", "o", "store", "purchase", 5_000, "EUR")
    state = run(signup("s", T0, time_zone="UTC"), buy)
    assert state.churn is not None and state.loyalty is not None
    step = apply(state, consent("c", T0 + 2 * DAY_MS, email=False), R, T0 + 2 * DAY_MS)
    assert step.outputs == ()
    assert step.state.loyalty == state.loyalty and step.state.churn == state.churn
    assert step.kpi == ()  # not a new customer, nothing to count


def test_a_signup_is_a_customer_for_the_kpis_and_nothing_else() -> None:
    """A first record of any kind makes a customer (the gauge) with a first churn evaluation
    (here: no purchase yet, so the risk level the churn model gives that) and a first
    segment (new: signed up, no purchase yet); a signup adds no activity (day buckets) and
    earns nothing."""
    step = apply(None, signup("s", T0, time_zone="UTC"), R, T0)
    counted = [(d.bucket, d.field, d.delta) for d in step.kpi]
    assert (kpi.GAUGES, "customers", 1) in counted
    assert {b for b, _, _ in counted} == {kpi.GAUGES}
    assert sorted(f for _, f, _ in counted if f != "customers") == sorted(
        [f"risk:{step.state.churn.level}", "seg:new"])
    assert [o.as_dict()["kind"] for o in step.outputs] == ["segment_change"]


def test_silence_catches_up_before_a_profile_record_as_before_any_event() -> None:
    """A profile record carries no churn signal but runs what silence made due by its time,
    exactly as the scanner's tick would have (the alerts are the inactivity ones)."""
    buys = [Purchase(f"p{i}", C, T0 + i * 7 * DAY_MS, "pos", f"o{i}", "store", "purchase",
                     3_000, "EUR") for i in range(6)]
    state = run(*buys)
    due = next_due(state, R)
    assert due is not None
    later = due + 30 * DAY_MS
    by_record = apply(state, consent("c", later, email=True), R, later)
    ticked = state
    alerts: list[Any] = []
    for _ in range(20):
        at = next_due(ticked, R)
        if at is None or at > later:
            break
        step = tick(ticked, R, at)
        ticked = step.state
        alerts += [o for o in step.outputs if isinstance(o, ChurnAlert)]
    got = [o for o in by_record.outputs if isinstance(o, ChurnAlert)]
    assert [(a.alert_id, a.level) for a in got] == [(a.alert_id, a.level) for a in alerts]
    assert by_record.state.churn == ticked.churn


def test_state_only_transition_keeps_the_profile() -> None:
    ev = signup("s", T0, birth_date="--07-04", time_zone="UTC")
    assert apply_state(None, ev, R, T0).state.profile == apply(None, ev, R, T0).state.profile


# -- view ----------------------------------------------------------------------------------------


def test_view_shows_the_profile_and_consent_per_channel() -> None:
    state = run(signup("s", T0, referred_by="C9", birth_date="1988-02-29", time_zone="UTC"),
                consent("c", T0 + HOUR_MS, email=True, sms=False))
    row = view(state, R, T0 + DAY_MS)
    assert {k: row[k] for k in ("signup_at", "referred_by", "birth_date", "time_zone")} == {
        "signup_at": T0, "referred_by": "C9", "birth_date": "--02-29", "time_zone": "UTC"}
    assert (row["consent_email"], row["consent_email_at"]) == (True, T0 + HOUR_MS)
    assert (row["consent_sms"], row["consent_sms_at"]) == (False, T0 + HOUR_MS)
    assert (row["consent_push"], row["consent_push_at"]) == (None, None)  # never asked
    assert marketing_consent(state.profile, "push") is None
    empty = view(CustomerState("x"), R, T0)
    assert empty["signup_at"] is None and empty["consent_email"] is None


# -- wire -----------------------------------------------------------------------------------------

# A state as main stored it before the customers topic existed (four clocks in "km", no
# "pf"): a purchase, a ticket, an NPS answer, a redemption and a USD purchase.
OLD_STATE = (
    b'{"v":1,"c":"C-old","m":1707523200000,"fp":1704067200000,"lp":1707523200000,'
    b'"la":1704153600000,"ns":6,"na":1704240000000,"pc":2,"gs":6089,"to":1,"sa":1,'
    b'"ls":-0.5,"km":[1707523200000,1704153600000,1704240000000,1704326400000],'
    b'"d":[19723,1,4250,0,19763,1,1839,0],"s":[1704153600000,3446093454373324072,1,'
    b'1704240000000,767118489007740985,2,1704326400000,11809979109258094952,3,1707523200000,'
    b'9016701019116302123,0],"ot":[["T1",1704153600000,"urgent",0]],"ly":[85,85,0,0,null,'
    b'1707523200000,0,[4066534829,19723,4250,42,0,0,0,1802187799,19763,1839,18,0,0,0],'
    b'[19725,2173770834]],"ch":[9800,5,0,3369600000,0,1704153600000,0,0,0]}'
)


def test_a_state_stored_before_the_customers_topic_loads_and_is_written_back_the_same() -> None:
    state = wire.loads(OLD_STATE)
    assert state.kind_max == (1707523200000, 1704153600000, 1704240000000, 1704326400000, 0, 0)
    assert state.profile is None and state.purchase_count == 2
    assert wire.dumps(state) == OLD_STATE  # no customer record: the bytes it always had
    # and it takes a customer record like any state
    record = CustomerEvent("c", "C-old", 1707523200000, "app", "consent",
                           channels=(("email", True),))
    after = apply(state, record, R, 1707523200000).state
    assert after.kind_max[CUSTOMER_KIND] == 1707523200000
    data = wire.dumps(after)
    assert b'"km":[1707523200000,1704153600000,1704240000000,1704326400000,1707523200000]' in data
    assert b'"pf":[null,null,null,null,null,null,[1707523200000,1,1]]' in data
    assert wire.loads(data) == after


def test_profile_wire_round_trip() -> None:
    p = Profile(T0, "C9", "--02-29", T0 + 1, "America/Argentina/Buenos_Aires", 0,
                (Consent("email", True, T0), Consent("sms", False, 0)))
    assert from_wire(to_wire(p)) == p
    assert from_wire(to_wire(Profile())) == Profile()


def test_consent_is_written_per_time_as_channel_masks() -> None:
    """Bits over CONSENT_CHANNELS (email 1, sms 2, push 4, post 8, phone 16): the channels a
    consent record named, and those opted in, at its time."""
    p = Profile(consent=(Consent("email", True, 7), Consent("phone", False, 7),
                         Consent("push", True, 7), Consent("sms", False, 3)))
    assert to_wire(p)[6] == [3, 2, 0, 7, 1 + 4 + 16, 1 + 4]
    assert from_wire(to_wire(p)) == p


E = [None] * 6


@pytest.mark.parametrize("value", [
    None, [], E, [*E, None, None], [*E, None], ["1", *E[1:], []], [None, 5, *E[2:], []],
    [1.5, *E[1:], []], [*E, [1, 2]], [*E, [1, 0, 0]], [*E, [1, 32, 0]], [*E, [1, 1, 2]],
    [*E, [1, 1, -1]], [*E, [1, 1, 1, 2, 1, 0]], [*E, [1, True, 1]], [*E, [1.0, 1, 1]],
    [*E, [[1, 1, 1]]],
])
def test_malformed_profile_bytes_are_refused(value: Any) -> None:
    with pytest.raises(WireError, match="'pf'"):
        from_wire(value)


def test_a_full_profile_costs_under_200_bytes_stored() -> None:
    """Signup with referrer, birthday and zone, then all five channels: what the profile adds
    to a stored state (a typical customer's year is ~950 bytes without it: test_wire)."""
    before = wire.dumps(run(Purchase("p", C, T0 - DAY_MS, "pos", "o", "store", "purchase",
                                     4_250, "EUR")))
    state = run(signup("0f8fad5b-d9cb-469f-a165-7086772895aa", T0, referred_by="cust-0004242",
                       birth_date="1988-05-17", time_zone="America/Argentina/Buenos_Aires"),
                consent("0f8fad5b-d9cb-469f-a165-7086772895ab", T0 + MIN_MS, email=True,
                        sms=False, push=True, post=False, phone=False),
                state=wire.loads(before))
    after = wire.dumps(state)
    dedup = sum(len(f"{s.at},{s.key},{s.kind},") for s in state.seen[-2:])
    assert len(after) - len(before) - dedup < 200, after.decode()
