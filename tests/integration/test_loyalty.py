# The reasons customers read use the multiplication sign; compared verbatim here.
# ruff: noqa: RUF001
"""Loyalty through the real broker and Redis: purchases, a partial refund, a survey, an
accepted and a rejected redemption (and one of an unknown customer) -> exactly the ledger
entries worked out below on points-accruals, and the balance stored in Redis.

Default rules: 1 pt/EUR, beauty x2, bronze x1 (the spend stays far below silver's 500 EUR),
survey bonus 25. The events go in stages so that the redemptions meet a known balance.
"""

from __future__ import annotations

import orjson

from processors.rules import DEFAULT_RULES
from schemas.codec import encode, format_time, parse_time
from schemas.events import Event, Purchase, PurchaseLine, Redemption, Survey
from streams.worker.topics import Topics
from streams.worker.views import load_state, render, state_row
from tests.integration.helpers import produce, read_topic, running_engine

T = parse_time("2026-03-02T09:00:00Z")
H = 3_600_000
D = 24 * H
CID = "C-LOYAL"

LINES = (PurchaseLine("SKU-LIP", "beauty", 2, 1250), PurchaseLine("SKU-BREAD", "bakery", 1, 2099))
STAGES: list[list[Event]] = [
    [
        Purchase("e1", CID, T, "pos", "ORD-1", "store", "purchase", 4599, "EUR", LINES),
        Purchase("e2", CID, T + D, "web", "ORD-2", "web", "purchase", 10000, "USD"),
        Purchase("e3", CID, T + 2 * D, "crm", "ORD-1", "store", "refund", 1250, "EUR",
                 (PurchaseLine("SKU-LIP", "beauty", 1, 1250),)),
        Survey("e4", CID, T + 3 * D, "survey-tool", "S-1", "nps", 10, "checkout"),
    ],
    [Redemption("e5", CID, T + 4 * D, "app", "RW-COFFEE", 100)],
    [Redemption("e6", CID, T + 4 * D + H, "app", "RW-COFFEE", 100),
     Redemption("e7", "C-NOBODY", T + 4 * D + H, "app", "RW-COFFEE", 100)],
]


def entry(eid: str, points: int, rule: str, reason: str, balance: int, at: int,
          cid: str = CID, tier: str | None = "bronze") -> dict[str, object]:
    return {"entry_id": f"{eid}:{rule}", "customer_id": cid, "points": points, "rule": rule,
            "reason": reason, "balance_after": balance, "tier_after": tier,
            "occurred_at": format_time(at), "event_id": eid}


EXPECTED = [
    # weighted: 2 x 12.50 = 25.00 beauty x 2 = 50.00, + 20.99 = 70.99 -> floor = 70 pts;
    # split by weight 50.00 : 20.99 -> 49.30 + 20.70 -> 49 + 20, the spare point to BREAD
    entry("e1", 70, "earn", "order ORD-1: 25.00 EUR beauty × 2 + 20.99 EUR = 70.99 EUR × "
          "1 pt/EUR × bronze 1 = 70 pts", 70, T),
    # 100.00 USD x 0.92 = 92.00 EUR
    entry("e2", 92, "earn", "order ORD-2: 92.00 EUR × 1 pt/EUR × bronze 1 = 92 pts", 162,
          T + D),
    # one of the two lipsticks: floor(49 x 1/2) = 24
    entry("e3", -24, "refund", "refund of order ORD-1: 1 × SKU-LIP returned, which earned 24 "
          "of the order's 70 pts: -24 pts", 138, T + 2 * D),
    entry("e4", 25, "survey_bonus", "thank you for answering survey S-1 (nps): +25 pts", 163,
          T + 3 * D),
    entry("e5", -100, "redemption", "reward RW-COFFEE: 100 pts redeemed", 63, T + 4 * D),
    entry("e6", 0, "redemption_rejected", "reward RW-COFFEE not redeemed: it costs 100 pts, "
          "the balance is 63 pts", 63, T + 4 * D + H),
]
UNKNOWN = entry("e7", 0, "redemption_rejected", "reward RW-COFFEE not redeemed: unknown "
                "customer (no points account)", 0, T + 4 * D + H, cid="C-NOBODY", tier=None)


async def test_the_ledger_and_the_balance_through_broker_and_redis(settings) -> None:
    topics = Topics.from_settings(settings)
    sent = 0
    async with running_engine(settings):
        for stage in STAGES:
            await produce(settings, [(topics.for_kind(e.event_kind), e.customer_id.encode(),
                                      encode(e)) for e in stage])
            sent += len(stage)
            # the next stage only once this one's entries are out: a known balance
            await read_topic(settings, topics.points, expect=sent, settle=0.0)
        records = await read_topic(settings, topics.points, expect=7, settle=1.0)

    got = [orjson.loads(r.value) for r in records]
    assert all(r.key == orjson.loads(r.value)["customer_id"].encode() for r in records)
    assert [e for e in got if e["customer_id"] == CID] == EXPECTED  # in order, exactly
    assert [e for e in got if e["customer_id"] != CID] == [UNKNOWN]

    state = await load_state(settings, CID)
    assert state is not None and state.loyalty is not None
    assert state.loyalty.balance == 63 == sum(e["points"] for e in EXPECTED)
    assert state.loyalty.lifetime_points == 70 + 92 - 24 + 25
    row = state_row(state, DEFAULT_RULES, T + 5 * D)
    assert (row["points_balance"], row["tier"], row["next_tier"], row["spend_to_next_tier"],
            row["expires_at"]) == (63, "bronze", "silver", "374.51",  # 500 - (45.99+92-12.50)
                                   "2027-03-06T09:00:00.000Z")  # 12 months after e5 (e6 failed)
    assert "points_balance:" in render(row)

    # `pulse customer` shows the latest ledger entries, kept next to the state
    from streams.worker.views import load_ledger, render_ledger

    recent = await load_ledger(settings, CID)
    assert recent == list(reversed(EXPECTED))  # newest first, the whole story so far
    shown = render_ledger(recent)
    assert EXPECTED[0]["reason"] in shown and "balance 63" in shown
