"""The referral programme through the real broker and Redis (README "Referral programme").

A referrer and the friend they invited live on different partitions (2 and 3 of 4), so the
bonus needs the conversation over the referrals topic: the friend's first qualifying
purchase sends a claim, the referrer's worker credits the referrer and confirms, the
friend's worker credits the welcome bonus; a refund of that order within the return window
takes both back. A friend of an unknown referrer is refused with the reason. A producer's
retry of the purchase changes nothing.
"""

from __future__ import annotations

import orjson

from processors.rules import DEFAULT_RULES
from schemas.codec import format_time, parse_time
from schemas.events import CustomerEvent, Purchase
from streams.settings import Settings
from streams.worker.partitioning import owner
from streams.worker.topics import Topics
from streams.worker.views import state_row
from tests.integration import helpers as h

T = parse_time("2026-03-02T09:00:00Z")
H = 3_600_000
D = 24 * H
R, C, LONE, GHOST = "C-REF", "C-NEW2", "C-LATE", "C-GHOST"

SIGNUPS = [
    CustomerEvent("s-r", R, T, "web", "signup"),
    CustomerEvent("s-c", C, T + H, "web", "signup", referred_by=R),
    CustomerEvent("s-l", LONE, T + H, "web", "signup", referred_by=GHOST),
]
PURCHASES = [
    Purchase("p-c", C, T + D, "web", "o-first", "web", "purchase", 3000, "EUR"),
    Purchase("p-l", LONE, T + D, "pos", "o-lone", "store", "purchase", 2500, "EUR"),
]
REFUND = Purchase("p-c-back", C, T + 5 * D, "web", "o-first", "web", "refund", 3000, "EUR")


def facts(records: list) -> list[tuple[str, str, int, str, int]]:
    out = []
    for r in records:
        e = orjson.loads(r.value)
        out.append((e["customer_id"], e["rule"], e["points"], e["entry_id"],
                    e["balance_after"]))
    return sorted(out)


async def test_a_referral_pair_gets_both_bonuses_and_a_refund_takes_both_back(
        settings: Settings) -> None:
    assert len({owner(R, 4), owner(C, 4)}) == 2  # two partitions: the topic carries it
    topics = Topics.from_settings(settings)
    async with h.running_engine(settings):
        await h.produce(settings, h.as_records(settings, SIGNUPS))
        await h.wait_applied(settings, h.as_records(settings, SIGNUPS))
        await h.produce(settings, h.as_records(settings, PURCHASES))
        await h.produce(settings, h.as_records(settings, PURCHASES[:1]))  # a retry
        first = await h.read_topic(settings, topics.points, expect=5, settle=1.0)
        await h.produce(settings, h.as_records(settings, [REFUND]))
        ledger = await h.read_topic(settings, topics.points, expect=8, settle=1.5)
        referrals = await h.read_topic(settings, topics.referrals, expect=5, settle=0.5)
        states = await h.stored_states(settings)

    bonus = "referral_bonus"
    assert facts(first) == sorted([
        (C, "earn", 30, "p-c:earn", 30),
        (LONE, "earn", 25, "p-l:earn", 25),
        (R, bonus, 500, f"referral:{C}:o-first:claim:{bonus}", 500),
        (C, bonus, 250, f"referral:{C}:o-first:confirmed:{bonus}", 280),
        (LONE, "referral_refused", 0, f"referral:{LONE}:o-lone:refused:referral_refused", 25),
    ])
    by_id = {orjson.loads(r.value)["entry_id"]: orjson.loads(r.value) for r in ledger}
    assert by_id[f"referral:{C}:o-first:claim:{bonus}"]["reason"] == (
        f"referral: your friend {C} made their first purchase: +500 pts")
    assert by_id[f"referral:{C}:o-first:confirmed:{bonus}"]["reason"] == (
        f"referral: welcome bonus for joining through {R}'s invitation: +250 pts")
    assert by_id[f"referral:{LONE}:o-lone:refused:referral_refused"]["reason"] == (
        f"referral: no welcome bonus for joining through {GHOST}'s invitation: {GHOST} is "
        f"not a known customer (never signed up or bought, or erased)")
    # the entries the refund added: the ledger read again minus the first five (not
    # ledger[5:]: records of four partitions are read in no set order)
    seen_first = {orjson.loads(r.value)["entry_id"] for r in first}
    later = [r for r in ledger if orjson.loads(r.value)["entry_id"] not in seen_first]
    assert facts(later) == sorted([
        (C, "refund", -30, "p-c-back:refund", 250),
        (C, "referral_clawback", -250, "p-c-back:referral_clawback", 0),
        (R, "referral_clawback", -500, f"referral:{C}:o-first:clawback:referral_clawback", 0),
    ])
    assert by_id["p-c-back:referral_clawback"]["reason"] == (
        "referral: welcome bonus taken back: order o-first was refunded within 30 days "
        "(0.00 EUR of 30.00 EUR left paid): -250 pts")
    assert by_id[f"referral:{C}:o-first:clawback:referral_clawback"]["occurred_at"] == (
        format_time(T + 5 * D))

    sent = sorted((r.key.decode(), orjson.loads(r.value)["kind"],
                   orjson.loads(r.value)["event_id"]) for r in referrals)
    assert sent == sorted([
        (R, "claim", f"referral:{C}:o-first:claim"),
        (C, "confirmed", f"referral:{C}:o-first:confirmed"),
        (R, "clawback", f"referral:{C}:o-first:clawback"),
        (GHOST, "claim", f"referral:{LONE}:o-lone:claim"),
        (LONE, "refused", f"referral:{LONE}:o-lone:refused"),
    ])

    at = T + 6 * D
    rrow = state_row(states[R], DEFAULT_RULES, at)  # type: ignore[arg-type]
    crow = state_row(states[C], DEFAULT_RULES, at)  # type: ignore[arg-type]
    lrow = state_row(states[LONE], DEFAULT_RULES, at)  # type: ignore[arg-type]
    assert (rrow["points_balance"], rrow["referrals_rewarded"], rrow["referrals_clawed_back"],
            rrow["referrals_rewarded_in_period"]) == (0, 1, 1, 1)
    assert (crow["points_balance"], crow["referred_by"], crow["referral_status"],
            crow["referral_order_id"], crow["referral_bonus_points"]) == (
        0, R, "clawed_back", "o-first", 0)
    assert (lrow["referral_status"], lrow["points_balance"]) == ("refused", 25)
