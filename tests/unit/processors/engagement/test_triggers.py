"""Proactive messages (processors/engagement/triggers.py, layer.py): one table row per rule
and guard, through the customer transitions with the engagement layer on top
(``fixtures.process``: ticks at their due times, as the shell runs them)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from processors.churn.layer import ChurnAlert
from processors.engagement.layer import LAYER
from processors.engagement.outputs import consent_as_of
from processors.engagement.record import Engagement, from_wire, to_wire
from processors.errors import WireError
from processors.loyalty.ledger import LedgerEntry
from processors.rules import DEFAULT_RULES, TRIGGER_KINDS, Rules, parse_rules
from processors.timeutil import DAY_MS, HOUR_MS
from schemas.codec import format_time, parse_time
from schemas.events import Event
from tests.builders import customer, purchase, survey
from tests.paths import ROOT
from tests.unit.processors.engagement.fixtures import process

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
R = DEFAULT_RULES
NO_LIMIT = parse_rules({"engagement": {"min_days_between_messages": 0}})


def at(text: str) -> int:
    return parse_time(text)


def day(n: float) -> int:
    return T0 + int(n * DAY_MS)


def rules(**engagement: Any) -> Rules:
    return parse_rules({"engagement": engagement})


def buys(days: list[float], amount: int = 1000) -> list[Event]:
    return [purchase(f"p{i}", day(d), amount) for i, d in enumerate(days)]


def sent(events: list[Event], until: int, r: Rules = NO_LIMIT, kind: str | None = None
         ) -> list[tuple[str, str]]:
    """(kind, occurred_at) of the messages, in order."""
    run = process(sorted(events, key=lambda e: e.occurred_at), r, until=until)
    return [(m["kind"], m["occurred_at"]) for m in run.messages(kind)]


# -- birthdays ---------------------------------------------------------------------------------

BIRTHDAYS: list[tuple[str, list[Event], int, list[str]]] = [
    ("at local_hour in the customer's zone (09:00 in Tokyo is 00:00 UTC)",
     [customer("s", T0, "signup", birth_date="1990-03-10", time_zone="Asia/Tokyo")],
     at("2025-06-01T00:00:00Z"), ["2024-03-10T00:00:00.000Z", "2025-03-10T00:00:00.000Z"]),
    ("UTC without a time zone",
     [customer("s", T0, "signup", birth_date="--03-10")], at("2024-12-31T00:00:00Z"),
     ["2024-03-10T09:00:00.000Z"]),
    ("daylight saving time: 09:00 in Paris in June is 07:00 UTC",
     [customer("s", T0, "signup", birth_date="--06-15", time_zone="Europe/Paris")],
     at("2024-12-31T00:00:00Z"), ["2024-06-15T07:00:00.000Z"]),
    ("29 February on 28 February in 2025, on 29 February in 2028",
     [customer("s", T0, "signup", birth_date="2000-02-29")], at("2028-03-01T00:00:00Z"),
     ["2024-02-29T09:00:00.000Z", "2025-02-28T09:00:00.000Z", "2026-02-28T09:00:00.000Z",
      "2027-02-28T09:00:00.000Z", "2028-02-29T09:00:00.000Z"]),
    ("a birth date given after this year's birthday: next year's",
     [customer("s", at("2024-03-11T00:00:00Z"), "signup", birth_date="--03-10")],
     at("2025-12-31T00:00:00Z"), ["2025-03-10T09:00:00.000Z"]),
    ("a birth date given on the day, before local_hour: that day",
     [customer("s", at("2024-03-10T08:00:00Z"), "signup", birth_date="--03-10")],
     at("2024-12-31T00:00:00Z"), ["2024-03-10T09:00:00.000Z"]),
    ("a corrected birth date after this year's birthday: none again this year",
     [customer("s", T0, "signup", birth_date="--03-10"),
      customer("u", at("2024-03-20T00:00:00Z"), "profile_update", birth_date="--05-01")],
     at("2025-12-31T00:00:00Z"), ["2024-03-10T09:00:00.000Z", "2025-05-01T09:00:00.000Z"]),
]


@pytest.mark.parametrize(("events", "until", "expected"), [c[1:] for c in BIRTHDAYS],
                         ids=[c[0] for c in BIRTHDAYS])
def test_birthdays(events: list[Event], until: int, expected: list[str]) -> None:
    assert sent(events, until, kind="birthday") == [("birthday", t) for t in expected]


def test_a_birthday_is_never_early_and_once_whatever_the_ticks() -> None:
    events: list[Event] = [customer("s", T0, "signup", birth_date="--03-10")]
    b = at("2024-03-10T09:00:00Z")
    assert sent(events, b - 1, kind="birthday") == []
    assert sent(events, b, kind="birthday") == [("birthday", "2024-03-10T09:00:00.000Z")]
    # events after it (a tick before each, the catch-up in on_event) send it once
    later = [*events, *[purchase(f"p{i}", b - HOUR_MS + i * HOUR_MS) for i in range(5)]]
    assert sent(later, b + DAY_MS, kind="birthday") == [("birthday", "2024-03-10T09:00:00.000Z")]


def test_a_replay_sends_the_same_ids() -> None:
    events = [customer("s", T0, "signup", birth_date="--03-10"), *buys([1, 20, 40, 100])]
    one = process(events, R, until=day(800))
    two = process(events, R, until=day(800))
    assert [m["message_id"] for m in one.messages()] == [m["message_id"] for m in two.messages()]
    ids = [m.get("message_id") or m["change_id"] for m in one.engagement]
    assert len(ids) == len(set(ids))


# -- anniversaries -----------------------------------------------------------------------------


def test_first_purchase_anniversaries_in_the_customer_zone() -> None:
    events = [customer("s", T0, "signup", time_zone="America/New_York"),
              purchase("p", at("2024-01-05T03:00:00Z"))]  # 4 Jan 22:00 in New York
    assert sent(events, at("2026-06-01T00:00:00Z"), kind="anniversary") == [
        ("anniversary", "2025-01-04T14:00:00.000Z"), ("anniversary", "2026-01-04T14:00:00.000Z")]


def test_an_anniversary_counts_from_the_earliest_purchase_even_if_it_arrives_late() -> None:
    events = [purchase("p2", day(5)), purchase("p1", day(0))]  # p1 late, within the lateness
    run = process(events, NO_LIMIT, until=day(400))
    (m,) = run.messages("anniversary")
    assert (m["occasion"], m["occurred_at"]) == ("1", "2025-01-01T09:00:00.000Z")


# -- replenishment -----------------------------------------------------------------------------

QUIET_CHURN = {"churn": {"medium": {"enter": 0.999, "exit": 0.99},
                         "high": {"enter": 0.9999, "exit": 0.999}}}


def nudge_rules(**replenishment: Any) -> Rules:
    return parse_rules({**QUIET_CHURN, "engagement": {"min_days_between_messages": 0,
                                                      "replenishment": replenishment}})


REPLENISHMENT: list[tuple[str, list[float], Rules, list[str]]] = [
    ("silence past 1.5x the usual gap of 10 days: day 35", [0, 10, 20], nudge_rules(),
     ["2024-02-05T00:00:00.000Z"]),
    ("the factor comes from the rules", [0, 10, 20], nudge_rules(overdue_factor=3),
     ["2024-02-20T00:00:00.000Z"]),
    ("fewer purchase days than min_purchase_days: none", [0, 10], nudge_rules(), []),
    ("once per silence; a purchase starts a new silence", [0, 10, 20, 60],
     nudge_rules(), ["2024-02-05T00:00:00.000Z", "2024-03-31T00:00:00.000Z"]),
    ("a purchase before the nudge time: none for that silence", [0, 10, 20, 30],
     nudge_rules(), ["2024-02-15T00:00:00.000Z"]),
    ("switched off: none", [0, 10, 20], nudge_rules(enabled=False), []),
    ("not at a churn level above max_churn_level (low)", [0, 10, 20],
     parse_rules({"churn": {"medium": {"enter": 0.3, "exit": 0.2}},
                  "engagement": {"min_days_between_messages": 0}}), []),
    ("... which the rules may raise to medium", [0, 10, 20],
     parse_rules({"churn": {"medium": {"enter": 0.3, "exit": 0.2}},
                  "engagement": {"min_days_between_messages": 0,
                                 "replenishment": {"max_churn_level": "medium"}}}),
     ["2024-02-05T00:00:00.000Z"]),
]


@pytest.mark.parametrize(("days", "r", "expected"), [c[1:] for c in REPLENISHMENT],
                         ids=[c[0] for c in REPLENISHMENT])
def test_replenishment(days: list[float], r: Rules, expected: list[str]) -> None:
    assert sent(buys(days), day(200), r, "replenishment") == [
        ("replenishment", t) for t in expected]


def test_never_a_nudge_for_a_silence_a_churn_alert_answered() -> None:
    # the churn alert comes first at these thresholds; the nudge would come later
    r = parse_rules({"churn": {"medium": {"enter": 0.5, "exit": 0.4},
                               "high": {"enter": 0.9, "exit": 0.8}},
                     "engagement": {"min_days_between_messages": 0,
                                    "replenishment": {"overdue_factor": 8,
                                                      "max_churn_level": "medium"}}})
    run = process(buys([0, 10, 20, 30, 40, 50]), r, until=day(300))
    alerts = [o for o in run.outputs if isinstance(o, ChurnAlert) and o.kind == "alert"]
    assert alerts and alerts[0].occurred_at < day(50 + 80)  # the nudge's time
    assert run.messages("replenishment") == []


NUDGE_FIRST = {"churn": {"medium": {"enter": 0.5, "exit": 0.4},
                         "high": {"enter": 0.9, "exit": 0.8}},
               "engagement": {"min_days_between_messages": 0,
                              "replenishment": {"overdue_factor": 1.5,
                                                "max_churn_level": "medium"}}}


def _alerts(run: Any) -> list[Any]:
    return [o for o in run.outputs if isinstance(o, ChurnAlert) and o.kind == "alert"]


def test_never_a_churn_alert_for_a_silence_a_nudge_answered() -> None:
    # the nudge comes first (day 65); silence alone would raise the churn level later
    r = parse_rules(NUDGE_FIRST)
    run = process(buys([0, 10, 20, 30, 40, 50]), r, until=day(400))
    (nudge,) = run.messages("replenishment")
    assert nudge["occurred_at"] == "2024-03-06T00:00:00.000Z"  # day 65: 50 + 1.5 x 10
    assert _alerts(run) == []
    assert run.state is not None and run.state.churn is not None
    assert run.state.churn.level == "high"  # the level still rises: export, gauge, segment
    assert run.state.churn.alert_open is False  # so no "recovered" follows an unsent alert
    # the same history with quiets_churn_alert off: the service team is alerted as well
    loud = parse_rules({**NUDGE_FIRST, "engagement": {
        **NUDGE_FIRST["engagement"], "replenishment": {
            **NUDGE_FIRST["engagement"]["replenishment"], "quiets_churn_alert": False}}})
    both = process(buys([0, 10, 20, 30, 40, 50]), loud, until=day(400))
    assert len(both.messages("replenishment")) == 1
    assert [a.level for a in _alerts(both)] == ["medium", "high"]


def test_a_new_purchase_starts_a_silence_the_churn_alert_may_answer() -> None:
    # nudged in the first silence; a purchase on day 100 starts a new one, which the nudge
    # did not answer (and which is overdue before the next nudge is due after it)
    r = parse_rules(NUDGE_FIRST)
    run = process(buys([0, 10, 20, 30, 40, 50, 100]), r, until=day(500))
    nudged = {m["occasion"] for m in run.messages("replenishment")}
    assert str(day(50)) in nudged
    for a in _alerts(run):  # every alert answers a silence no nudge was sent for
        assert a.occurred_at > day(100) and str(day(100)) not in nudged


def test_an_alert_an_event_causes_still_goes_out_after_a_nudge() -> None:
    # a detractor survey after the nudge is the customer speaking, not the silence
    r = parse_rules(NUDGE_FIRST)
    events = [*buys([0, 10, 20, 30, 40, 50]), survey("s1", day(70), "nps", 0, cid="c1")]
    run = process(events, r, until=day(71))
    assert len(run.messages("replenishment")) == 1
    assert [a.cause_event_id for a in _alerts(run)] == ["s1"]


def test_the_nudge_reason_has_the_figures() -> None:
    run = process(buys([0, 10, 20]), nudge_rules(), until=day(100))
    (m,) = run.messages("replenishment")
    assert m["reason"] == ("replenishment: 15 days since the last purchase, 1.5x the usual "
                           "10-day gap (nudge from 1.5x)")
    assert m["offer"] == "replenishment_reminder" and m["occasion"] == str(day(20))


# -- points expiry and tier upgrades mirror the ledger -----------------------------------------


def test_points_expiry_mirrors_the_ledger_notice() -> None:
    run = process(buys([0], 50_000), NO_LIMIT, until=day(400))
    (notice,) = [o for o in run.outputs
                 if isinstance(o, LedgerEntry) and o.rule == "expiry_notice"]
    (m,) = run.messages("points_expiry")
    assert m["reference"] == notice.entry_id
    assert m["occurred_at"] == format_time(notice.occurred_at)
    assert m["reason"] == "points expiry: 625 pts expire on 2025-01-01"


def test_a_tier_upgrade_is_congratulated_once_per_tier() -> None:
    # silver at 500.00, gold at 1,500.00; gold lost after a year and 90 days, regained
    events = [*buys([0, 1, 2], 50_000), purchase("q", day(600), 150_000)]
    run = process(events, NO_LIMIT, until=day(700))
    tiers = [(m["occasion"], m["occurred_at"][:10]) for m in run.messages("tier_upgrade")]
    assert tiers == [("silver", "2024-01-01"), ("gold", "2024-01-03")]
    ups = [o for o in run.outputs if isinstance(o, LedgerEntry) and o.rule == "tier_change"]
    assert len(ups) >= 4  # up, up, down (after the grace), up again


# -- priority and the rate limit ---------------------------------------------------------------


def test_one_message_per_interval_by_priority() -> None:
    # first purchase on 10 March 2024: the birthday and each anniversary fall on one time
    events = [customer("s", T0, "signup", birth_date="--03-10"),
              purchase("p", at("2024-03-10T10:00:00Z"))]
    run = process(events, rules(points_expiry={"enabled": False}),
                  until=at("2026-03-11T00:00:00Z"))
    kinds = [(m["kind"], m["occurred_at"][:10]) for m in run.messages()]
    assert kinds == [("birthday", "2024-03-10"), ("birthday", "2025-03-10"),
                     ("birthday", "2026-03-10")]
    assert run.state is not None and run.state.engagement.anniversary == 2  # handled, dropped


def test_a_message_inside_the_interval_is_dropped_a_nudge_waits() -> None:
    r = parse_rules({**QUIET_CHURN, "engagement": {"min_days_between_messages": 7}})
    # nudge due on 5 February; birthday on 3 February: the nudge waits until 10 February
    events = [customer("s", T0, "signup", birth_date="--02-03"), *buys([0, 10, 20])]
    run = process(events, r, until=day(100))
    kinds = [(m["kind"], m["occurred_at"][:16]) for m in run.messages()]
    assert kinds == [("birthday", "2024-02-03T09:00"), ("replenishment", "2024-02-10T09:00")]
    # birthday two days after a nudge: dropped (its occasion is over)
    events = [customer("s", T0, "signup", birth_date="--02-07"), *buys([0, 10, 20])]
    run = process(events, r, until=day(100))
    assert [m["kind"] for m in run.messages()] == ["replenishment"]


def test_switching_a_kind_on_later_sends_no_backlog() -> None:
    events = [customer("s", T0, "signup", birth_date="--03-10")]
    off = rules(birthday={"enabled": False})
    run = process(events, off, until=at("2025-06-01T00:00:00Z"))
    assert run.messages() == [] and run.state is not None
    assert run.state.engagement.birthday_year == 2025  # handled without a message
    later = process([customer("x", at("2025-06-02T00:00:00Z"), "profile_update")], R)
    assert later.messages() == []


def test_priority_order_is_the_documented_one() -> None:
    text = (ROOT / "processors" / "default_rules.yaml").read_text()
    assert "Kinds in priority order: points_expiry, birthday,\n  # tier_upgrade, anniversary, " \
           "replenishment." in text
    assert TRIGGER_KINDS == ("points_expiry", "birthday", "tier_upgrade", "anniversary",
                             "replenishment")


# -- consent -----------------------------------------------------------------------------------


def test_each_record_carries_the_consent_as_of_its_time() -> None:
    b25 = at("2025-03-10T09:00:00Z")
    events = [customer("s", T0, "signup", birth_date="--03-10"),
              customer("c1", day(1), "consent", email=True, sms=False),
              customer("c2", b25 - 1, "consent", email=False)]
    run = process(events, R, until=at("2025-12-31T00:00:00Z"))
    consents = [(m["occurred_at"][:4], m["consent"]) for m in run.messages()]
    assert consents == [
        ("2024", {"email": True, "sms": False, "push": None, "post": None, "phone": None}),
        ("2025", {"email": False, "sms": False, "push": None, "post": None, "phone": None})]
    first = run.engagement[0]
    assert first["kind"] == "segment_change" and first["consent"]["email"] is None


def test_a_consent_dated_after_the_output_does_not_count_for_it() -> None:
    from processors.profile import Consent, Profile
    p = Profile(consent=(Consent("email", True, 100),))
    assert consent_as_of(p, 99)["email"] is None
    assert consent_as_of(p, 100)["email"] is True


# -- records, ids, wire ------------------------------------------------------------------------


def test_record_shapes() -> None:
    events = [customer("s", T0, "signup", birth_date="--03-10"), *buys([1])]
    run = process(events, R, until=at("2024-03-11T00:00:00Z"))
    change, bday = run.engagement[0], run.messages("birthday")[0]
    assert set(change) == {"change_id", "kind", "customer_id", "segment", "previous_segment",
                           "tags", "reason", "occurred_at", "cause_event_id", "marketing",
                           "consent"}
    assert change["marketing"] is False and change["cause_event_id"] == "s"
    assert set(bday) == {"message_id", "kind", "customer_id", "occasion", "offer", "reason",
                         "occurred_at", "segment", "reference", "marketing", "consent"}
    assert bday["marketing"] is True and bday["offer"] == "birthday_gift"
    assert bday["occasion"] == "2024" and bday["message_id"].startswith("msg-")


def test_wire_round_trip_and_refusals() -> None:
    rec = Engagement("big_spender", 5, 0, 9, 2025, 2, 7, 8, 3, 9, "birthday")
    assert from_wire(to_wire(rec)) == rec and len(to_wire(rec)) == 11  # the bytes it had
    nudged = rec._replace(nudge_sent_for=7)
    assert from_wire(to_wire(nudged)) == nudged and len(to_wire(nudged)) == 12
    assert from_wire(to_wire(Engagement())) == Engagement()
    for bad in ([1] * 10, [1] * 13, [1] * 11 + [-1], [1] * 10 + ["x"], [99] + [0] * 10,
                [0] * 10 + [99], [-1] + [0] * 10, {"a": 1}, [True] + [0] * 10):
        with pytest.raises(WireError):
            from_wire(bad)


def test_a_customer_from_before_the_layer_gets_no_backlog() -> None:
    run = process([customer("s", T0, "signup", birth_date="--03-10"), *buys([1, 2, 3])], R)
    assert run.state is not None
    old = msgspec.structs.replace(run.state, engagement=None)
    r = LAYER.on_tick(old, old, R, at("2027-01-01T00:00:00Z"))
    assert [o.as_dict()["kind"] for o in r.outputs] == ["segment_change"]
    assert r.record.opened_at == at("2027-01-01T00:00:00Z")
    assert LAYER.next_due(old, R) is None  # no record: the next event or tick opens one
