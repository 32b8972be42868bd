"""`pulse deadletters` and `pulse deadletters redrive` against the real broker and Redis.

Bad records go through a worker (the engine in-process) into the dead-letter topic; the
command (a real subprocess) lists them with filters and as JSON; after a fix (a rules file
that knows the currency) a redrive re-sends the `unknown_currency` originals, which are
then applied, and a second redrive changes nothing (same event ids: duplicates).
"""

from __future__ import annotations

import json

import orjson
import redis.asyncio as aioredis

from processors import wire
from processors.rules import parse_rules
from streams.settings import Settings
from streams.worker.keys import Keys
from streams.worker.metrics import Metrics
from streams.worker.partitioning import owner
from streams.worker.producer import BatchProducer
from streams.worker.topics import Topics
from tests.integration.helpers import counter_value, running_engine, wait_until
from tests.integration.test_deadletter import GOOD, _bad
from tests.integration.test_replay_export import pulse

OLD = 1_767_225_600_000  # 2026-01-01T00:00:00Z: the Kafka timestamp of the two HUF records


def _survey(score: int) -> bytes:
    return orjson.dumps({"event_id": "sv-bad", "customer_id": "C1",
                         "occurred_at": "2026-09-21T10:00:00Z", "source": "app",
                         "survey_id": "s", "kind": "nps", "score": score,
                         "touchpoint": "checkout"})


def handled(metrics: Metrics) -> float:
    return sum(counter_value(metrics, "pulse_events_total", outcome=o)
               for o in ("processed", "duplicate", "deadletter"))


async def purchase_count(settings: Settings, cid: str) -> int:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        raw = await client.get(Keys(settings.redis_prefix).customer(
            owner(cid, settings.partitions), cid))
    finally:
        await client.aclose()
    return 0 if raw is None else wire.loads(raw).purchase_count


async def test_list_filter_and_redrive_after_a_fix_is_idempotent(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    pt, st = topics.purchases, topics.surveys
    huf = [_bad(event_id=f"huf-{i}", customer_id=f"C{i + 2}", currency="HUF",
                amount_minor=40_000) for i in range(2)]
    first = Metrics.create()
    async with running_engine(settings, metrics=first):
        async with BatchProducer(settings.kafka_bootstrap, settings.partitions) as out:
            await out.send(pt, b"C1", orjson.dumps(GOOD))
            for i, raw in enumerate(huf):
                await out.send(pt, f"C{i + 2}".encode(), raw, timestamp_ms=OLD)
            await out.send(pt, b"C1", _bad(event_id="b1", amount_minor="100"))
            await out.send(pt, b"C1", _bad(event_id="b2")[:-7])  # malformed JSON
            await out.send(pt, b"C1", _bad(event_id="b3", padding="x" * 1_000_000))
            await out.send(st, b"C1", _survey(11))
        await wait_until(lambda: handled(first) >= 7, what="7 records handled")
    assert counter_value(first, "pulse_events_total", outcome="deadletter") == 6

    # -- listing ----------------------------------------------------------------------------
    code, out_text, err = await pulse(settings, "deadletters")
    assert code == 0, err
    assert out_text.splitlines()[-1] == ("6 dead letters: schema_violation 2, unknown_currency "
                                         "2, malformed_json 1, too_large 1")
    assert f"unknown_currency {pt}/" in out_text and "[truncated from 1" in out_text

    code, out_text, err = await pulse(settings, "deadletters", "--reason", "unknown_currency",
                                      "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out_text.splitlines()]
    assert err.strip().splitlines()[-1] == "2 dead letters: unknown_currency 2"
    assert sorted(r["key"] for r in rows) == ["C2", "C3"]
    for r in rows:
        assert r["topic"] == pt and r["partition"] >= 0 and r["offset"] >= 0
        assert "HUF" in r["message"] and r["value_head"].startswith('{"event_id":"huf-')
        assert (r["timestamp"], r["time"]) == (OLD, "2026-01-01T00:00:00.000Z")
        assert r["truncated_from"] is None

    async def listed(*args: str) -> str:
        code, text, err = await pulse(settings, "deadletters", *args)
        assert code == 0, err
        return text.splitlines()[-1]

    assert await listed("--topic", st) == "1 dead letter: schema_violation 1"
    assert await listed("--until", "2026-06-01") == "2 dead letters: unknown_currency 2"
    assert (await listed("--since", "2026-06-01")).startswith("4 dead letters: ")
    assert await listed("--reason", "too_late") == "0 dead letters"
    code, text, _ = await pulse(settings, "deadletters", "--limit", "1")
    assert text.splitlines()[-1].endswith("(1 listed)") and len(text.splitlines()) == 3

    # -- redrive after the fix: a rules file that knows HUF ---------------------------------
    fixed = parse_rules({"fx": {"EUR": 1, "HUF": "0.0025"}})
    second = Metrics.create()
    async with running_engine(settings, rules=fixed, metrics=second):
        code, text, err = await pulse(settings, "deadletters", "redrive",
                                      "--reason", "unknown_currency", "--dry-run")
        assert (code, text.splitlines()[0]) == (0, f"2 would send to {pt}"), err
        code, text, err = await pulse(settings, "deadletters", "redrive",
                                      "--reason", "unknown_currency")
        assert (code, text.splitlines()[0]) == (0, f"2 sent to {pt}"), err
        await wait_until(lambda: handled(second) >= 2, what="the redriven records")
        assert counter_value(second, "pulse_events_total", outcome="processed") == 2
        assert [await purchase_count(settings, c) for c in ("C2", "C3")] == [1, 1]

        # again: the same event ids, so nothing changes
        code, text, err = await pulse(settings, "deadletters", "redrive",
                                      "--reason", "unknown_currency")
        assert (code, text.splitlines()[0]) == (0, f"2 sent to {pt}"), err
        await wait_until(lambda: handled(second) >= 4, what="the second redrive")
        assert counter_value(second, "pulse_events_total", outcome="duplicate") == 2
        assert counter_value(second, "pulse_events_total", outcome="processed") == 2
        assert [await purchase_count(settings, c) for c in ("C2", "C3")] == [1, 1]

        # a truncated original cannot be re-sent: skipped and counted, exit 1
        code, text, err = await pulse(settings, "deadletters", "redrive", "--reason", "too_large")
        assert code == 1, err
        assert "1 matched, 0 sent, 1 skipped (1 original truncated" in text
    assert counter_value(second, "pulse_events_total", outcome="deadletter") == 0
