"""Guarantee 3: bad input goes to the dead-letter topic with the original bytes and a
reason, a counter goes up, and every valid record around it is still processed."""

from __future__ import annotations

from collections import Counter

import orjson

from processors import wire
from processors.customer import view
from processors.rules import DEFAULT_RULES
from schemas.codec import encode
from schemas.events import Purchase, PurchaseLine, SupportTicket, Survey
from streams.worker.keys import Keys
from streams.worker.partitioning import owner
from streams.worker.topics import Topics
from tests.integration.helpers import (
    counter_value,
    header,
    produce,
    read_topic,
    running_engine,
    wait_until,
)

T0 = 1_790_000_000_000  # 2026-09-21
GOOD = {
    "event_id": "bad-x", "customer_id": "C1", "occurred_at": "2026-09-21T10:00:00Z",
    "source": "pos", "order_id": "o", "channel": "store", "kind": "purchase",
    "amount_minor": 100, "currency": "EUR",
    "lines": [{"sku": "s", "category": "grocery", "quantity": 1, "unit_price_minor": 100}],
}


def _bad(**changes: object) -> bytes:
    d = dict(GOOD)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return orjson.dumps(d)


def malformed() -> list[tuple[str, str, bytes]]:
    """(topic kind, expected reason, bytes): 10 kinds x 10 = 100 bad records."""
    out = []
    for i in range(10):
        eid = f"bad-{i}"
        out += [
            ("purchase", "malformed_json", _bad(event_id=eid)[:-7]),
            ("purchase", "invalid_utf8", b'{"event_id": "\xff\xfe' + eid.encode() + b'"}'),
            ("purchase", "schema_violation", _bad(event_id=eid, amount_minor="100")),
            ("purchase", "schema_violation", _bad(event_id=eid, customer_id=None)),
            ("purchase", "schema_violation", _bad(event_id=eid, customer_id="  ")),
            ("survey", "schema_violation", orjson.dumps({
                "event_id": eid, "customer_id": "C1", "occurred_at": "2026-09-21T10:00:00Z",
                "source": "app", "survey_id": "s", "kind": "nps", "score": 11,
                "touchpoint": "checkout"})),
            ("purchase", "schema_violation", _bad(event_id=eid, lines=[
                {"sku": "s", "category": "grocery", "quantity": -2, "unit_price_minor": 100}])),
            ("purchase", "unknown_currency", _bad(event_id=eid, currency="XYZ")),
            ("purchase", "too_large", _bad(event_id=eid, padding="x" * 1_000_000)),
            ("purchase", "not_an_object", orjson.dumps([GOOD, GOOD])),
        ]
    return out


def valid(n: int = 1000) -> list[Purchase | SupportTicket | Survey]:
    events: list[Purchase | SupportTicket | Survey] = []
    for i in range(n):
        cid = f"C{i % 200:04d}"
        t = T0 + i * 60_000
        if i % 5 == 3:
            events.append(SupportTicket(f"t-{i}", cid, t, "crm", f"tk-{i}", "opened", "high",
                                        "email", "delivery", -0.4))
        elif i % 5 == 4:
            events.append(Survey(f"s-{i}", cid, t, "survey-tool", f"sv-{i}", "nps", i % 11,
                                 "checkout"))
        else:
            amount = 0 if i % 50 == 0 else 1000 + i  # zero-amount (free item) orders are valid
            events.append(Purchase(f"p-{i}", cid, t, "pos", f"o-{i}", "store", "purchase",
                                   amount, "EUR",
                                   (PurchaseLine("sku-1", "grocery", 1, amount),)))
    return events


async def test_bad_records_are_dead_lettered_and_valid_ones_processed(settings):
    topics = Topics.from_settings(settings)
    good = valid()
    bad = malformed()
    records = [(topics.for_kind(e.event_kind), e.customer_id.encode(), encode(e)) for e in good]
    # interleave: a bad record after every tenth good one
    mixed = []
    for i, rec in enumerate(records):
        mixed.append(rec)
        if i % 10 == 9:
            kind, _, raw = bad[i // 10]
            mixed.append((topics.for_kind(kind), b"C0001", raw))
    assert len(mixed) == 1100

    async with running_engine(settings) as engine:
        await produce(settings, mixed)
        await wait_until(
            lambda: counter_value(engine.metrics, "pulse_events_total", outcome="processed")
            + counter_value(engine.metrics, "pulse_events_total", outcome="deadletter") >= 1100,
            timeout=60, what="1100 records handled")
        dead = await read_topic(settings, topics.deadletter, expect=100)

    assert len(dead) == 100
    assert counter_value(engine.metrics, "pulse_events_total", outcome="processed") == 1000
    assert counter_value(engine.metrics, "pulse_deadletter_total") == 100

    want = Counter(reason for _, reason, _ in bad)
    got = Counter(header(r, "pulse.dlq.reason") for r in dead)
    assert got == want
    originals = {raw for _, _, raw in bad}
    for r in dead:
        assert header(r, "pulse.dlq.message"), "every dead letter says why"
        assert header(r, "pulse.dlq.topic") in topics.inputs
        assert int(header(r, "pulse.dlq.offset")) >= 0
        if header(r, "pulse.dlq.truncated_from") is None:
            assert r.value in originals, "the original bytes are kept"
        else:
            assert int(header(r, "pulse.dlq.truncated_from")) > 1_000_000
    for r in dead:
        if header(r, "pulse.dlq.reason") == "schema_violation":
            msg = header(r, "pulse.dlq.message")
            assert any(f in msg for f in ("amount_minor", "customer_id", "score", "quantity"))

    # every valid purchase reached its customer's state
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    per_customer = Counter(e.customer_id for e in good if isinstance(e, Purchase))
    for cid, n in per_customer.items():
        raw = await client.get(keys.customer(owner(cid, settings.partitions), cid))
        assert raw is not None, cid
        row = view(wire.loads(raw), DEFAULT_RULES, T0 + 2_000 * 60_000)
        assert row["purchase_count"] == n, cid
    await client.aclose()
