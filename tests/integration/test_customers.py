"""The customers topic through the real broker and Redis: signup, consent and profile
updates reach the state (and ``pulse customer``), an unknown time zone and an erasure
request are dead-lettered with their reasons, and ``pulse replay --kind customer`` loads a
CSV of them."""

from __future__ import annotations

import json
from collections import Counter

import orjson

from processors.profile import Consent, Profile
from schemas.codec import format_time, parse_time
from schemas.events import CustomerEvent, Purchase
from streams.settings import Settings
from streams.worker.metrics import Metrics
from streams.worker.topics import Topics
from tests.integration import helpers as h
from tests.integration.test_replay_export import pulse
from tests.paths import FIXTURES

FILE = FIXTURES / "replay_customers.csv"
T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z
MIN = 60_000


def _t(text: str) -> int:
    return parse_time(text if "T" in text else text + "T00:00:00Z")


async def test_signup_consent_and_profile_update_reach_the_state(settings: Settings) -> None:
    events = [
        CustomerEvent("c-1", "C-ANA", T0, "web", "signup", "C-BOB", "1992-02-29", "Europe/Paris"),
        CustomerEvent("c-2", "C-ANA", T0 + MIN, "web", "consent",
                      channels=(("email", True), ("push", False), ("sms", True))),
        Purchase("p-1", "C-ANA", T0 + 60 * MIN, "web", "o-1", "web", "purchase", 4_250, "EUR"),
        CustomerEvent("c-3", "C-ANA", T0 + 90 * MIN, "app", "profile_update",
                      time_zone="America/Chicago"),
        CustomerEvent("c-4", "C-ANA", T0 + 120 * MIN, "app", "consent",
                      channels=(("sms", False),)),
        CustomerEvent("c-5", "C-BOB", T0, "crm", "signup"),
    ]
    records = h.as_records(settings, events)
    topic = Topics.from_settings(settings).customers
    assert {t for t, _, _ in records} == {topic, Topics.from_settings(settings).purchases}
    async with h.running_engine(settings):
        await h.produce(settings, records)
        await h.wait_applied(settings, records)
        # the same records again (a producer retry): duplicates, nothing changes
        await h.produce(settings, records[:2])
        await h.wait_applied(settings, records + records[:2])
        # C-ANA's first purchase (42.50 EUR, an hour after signing up through C-BOB's
        # invitation) qualifies for the referral programme: wait for its conversation to end
        # (a claim to C-BOB, confirmed back; tests/integration/test_referral.py)
        await h.read_topic(settings, Topics.from_settings(settings).referrals, expect=2)

        async def rewarded() -> bool:
            ana = (await h.stored_states(settings)).get("C-ANA")
            return ana is not None and ana.referral is not None and ana.referral.credited > 0

        await h.wait_until(rewarded, what="the welcome bonus")
        code, text, err = await pulse(settings, "customer", "C-ANA", "--as-of",
                                      "2026-09-22")
        assert code == 0, err
        code, row, err = await pulse(settings, "customer", "C-ANA", "--json", "--as-of",
                                     "2026-09-22")
        assert code == 0, err
    states = await h.stored_states(settings)
    ana = states["C-ANA"]
    assert ana.profile == Profile(
        signup_at=T0, referred_by="C-BOB", birth_date="--02-29", birth_date_at=T0,
        time_zone="America/Chicago", time_zone_at=T0 + 90 * MIN,
        consent=(Consent("email", True, T0 + MIN), Consent("push", False, T0 + MIN),
                 Consent("sms", False, T0 + 120 * MIN)))
    assert ana.purchase_count == 1 and len(ana.seen) == 6  # 5 records, the confirmation
    assert states["C-BOB"].profile == Profile(signup_at=T0)
    assert "\nprofile\n" in text
    for line in ("  referred_by:", "C-BOB", "  birth_date:", "--02-29", "America/Chicago"):
        assert line in text
    obj = json.loads(row)["customer"]  # the export row in the subject-access document
    assert (obj["signup_at"], obj["referred_by"], obj["birth_date"], obj["time_zone"]) == (
        format_time(T0), "C-BOB", "--02-29", "America/Chicago")
    assert (obj["consent_email"], obj["consent_sms"], obj["consent_push"],
            obj["consent_post"]) == (True, False, False, None)
    assert obj["consent_sms_at"] == format_time(T0 + 120 * MIN)


async def test_unknown_time_zone_and_impossible_date_are_dead_lettered_with_their_reasons(
        settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    good = CustomerEvent("c-1", "C-ZED", T0, "web", "signup", time_zone="Asia/Kolkata")
    base = {"customer_id": "C-ZED", "occurred_at": "2026-09-21T15:00:00Z", "source": "web"}
    bad_zone = orjson.dumps({**base, "event_id": "c-2", "kind": "profile_update",
                             "time_zone": "Asia/Atlantis"})
    bad_date = orjson.dumps({**base, "event_id": "c-3", "kind": "profile_update",
                             "birth_date": "2023-02-29"})
    records = [*h.as_records(settings, [good]),
               *[(topics.customers, b"C-ZED", raw) for raw in (bad_zone, bad_date)]]
    metrics = Metrics.create()
    async with h.running_engine(settings, metrics=metrics):
        await h.produce(settings, records)
        dead = await h.read_topic(settings, topics.deadletter, expect=2)
        await h.wait_until(lambda: h.counter_value(metrics, "pulse_events_total",
                                               topic=topics.customers, outcome="processed") >= 1,
                         what="the valid signup")
    reasons = {h.header(r, "pulse.dlq.reason"): r for r in dead}
    assert Counter(h.header(r, "pulse.dlq.reason") for r in dead) == Counter(
        {"unknown_time_zone": 1, "schema_violation": 1})
    zone = reasons["unknown_time_zone"]
    assert zone.value == bad_zone and h.header(zone, "pulse.dlq.topic") == topics.customers
    assert "customer.time_zone: 'Asia/Atlantis' is not a time zone" in h.header(
        zone, "pulse.dlq.message")
    assert "customer.birth_date" in h.header(reasons["schema_violation"], "pulse.dlq.message")
    assert h.counter_value(metrics, "pulse_deadletter_total", topic=topics.customers,
                         reason="unknown_time_zone") == 1
    states = await h.stored_states(settings)
    assert states["C-ZED"].profile == Profile(signup_at=T0, time_zone="Asia/Kolkata",
                                              time_zone_at=T0)


async def test_replay_kind_customer(settings: Settings) -> None:
    topic = Topics.from_settings(settings).customers
    metrics = Metrics.create()
    async with h.running_engine(settings, metrics=metrics):
        code, out, err = await pulse(settings, "replay", str(FILE), "--kind", "customer",
                                     "--wait", "--timeout", "90")
        assert code == 1, err  # two rows rejected by replay
        assert f"9 rows read, 7 sent to {topic}, 2 rejected" in out, out
        assert "line 8: unknown_time_zone: customer.time_zone: 'Europe/Atlantis'" in out
        assert "line 9: schema_violation: customer.referred_by: must not be the customer" in out
        # C-GUS's erasure request is applied too: nothing was held (README "Member
        # operations")
        assert "worker: 7 applied, 0 duplicate, 0 dead-lettered" in out, out
        states = await h.stored_states(settings)
        # the kind is told by the columns too; the same ids again change nothing (recent
        # records are duplicates, those more than the lateness older than the customer's
        # newest record are too late: README "Backfilling history")
        code, out, err = await pulse(settings, "replay", str(FILE), "--wait")
        assert code == 1, err
        # (the erasure again: nothing held to recognise it by, applied again)
        assert "worker: 1 applied, 2 duplicate, 4 dead-lettered" in out, out
        assert "dead-lettered too_late           4" in out
        assert await h.stored_states(settings) == states
    assert set(states) == {"C-DORA", "C-ELLA"}
    assert states["C-DORA"].profile == Profile(
        signup_at=_t("2026-03-01T08:00:00Z"), referred_by="C-ELLA", birth_date="--02-28",
        birth_date_at=_t("2026-03-01T08:00:00Z"), time_zone="Asia/Tokyo",
        time_zone_at=_t("2026-03-20"),
        consent=(Consent("email", True, _t("2026-03-01T08:05:00Z")),
                 Consent("sms", False, _t("2026-03-01T08:05:00Z"))))
    ella = states["C-ELLA"].profile
    assert ella is not None and (ella.birth_date, ella.time_zone) == ("--12-24",
                                                                      "America/New_York")
    assert ella.consent == (Consent("email", False, _t("2026-03-15T12:00:00Z")),
                            Consent("push", False, _t("2026-02-01T00:10:00Z")),
                            Consent("sms", True, _t("2026-02-01T00:10:00Z")))
    assert h.counter_value(metrics, "pulse_events_total", topic=topic, outcome="processed") == 8
