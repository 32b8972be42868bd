"""Erasure (README "Member operations", GDPR Art. 17) on the real Redis and broker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from streams.settings import Settings
from streams.tools.devrun import start_worker
from streams.tools.devstack import free_port
from streams.worker.erasure import customer_hash
from streams.worker.keys import Keys
from streams.worker.openapi import document
from streams.worker.partitioning import owner
from streams.worker.store import ShardCommit, Store
from streams.worker.topics import Topics
from tests.builders import purchase, survey, ticket
from tests.integration.helpers import as_records, produce, read_topic, wait_until
from tests.integration.test_api import pulse
from tests.integration.test_members import TOKEN, call, check

DAY = 86_400_000


async def test_the_commit_erases_before_it_writes(settings: Settings, redis_client: Any
                                                  ) -> None:
    """One commit: C1 and C2 erased, C1 with a fresh state and ledger entry from later in the
    same batch; the offsets move with it. Nothing else of the shard is touched."""
    store = Store.from_settings(settings)
    keys = store.keys
    p = 1
    try:
        first = ShardCommit(partition=p, expected_gen="", offsets={"t": 1}, high={"t": 1},
                            states={"C1": b"old-1", "C2": b"old-2", "C3": b"keep-3"},
                            outbox=[], due={"C1": 100, "C2": 200, "C3": 300},
                            ledger=[("C1", b"e1"), ("C2", b"e2"), ("C3", b"e3")])
        gens = await store.commit([first])
        await redis_client.zadd(keys.replay_due(p, "r9"), {"C2": 50})
        await redis_client.hset(keys.tick_failures(p), mapping={"C1": 2, "C3": 1})
        second = ShardCommit(partition=p, expected_gen=gens[p], offsets={"t": 2},
                             high={"t": 2}, states={"C1": b"fresh-1"}, outbox=[b"x"],
                             due={"C1": 400}, ledger=[("C1", b"after")],
                             erased=["C1", "C2"], replay_dues=["r9"])
        await store.commit([second])
        assert await redis_client.get(keys.customer(p, "C1")) == b"fresh-1"
        assert await redis_client.exists(keys.customer(p, "C2")) == 0
        assert await redis_client.get(keys.customer(p, "C3")) == b"keep-3"
        assert await redis_client.lrange(keys.ledger(p, "C1"), 0, -1) == [b"after"]
        assert await redis_client.exists(keys.ledger(p, "C2")) == 0
        assert await redis_client.lrange(keys.ledger(p, "C3"), 0, -1) == [b"e3"]
        assert await redis_client.zrange(keys.due(p), 0, -1, withscores=True) == [
            (b"C3", 300.0), (b"C1", 400.0)]
        assert await redis_client.zrange(keys.replay_due(p, "r9"), 0, -1) == []
        assert await redis_client.hgetall(keys.tick_failures(p)) == {b"C3": b"1"}
        assert await redis_client.hget(keys.fence(p), "o:t") == b"2"
        names = [k async for k in redis_client.scan_iter(match="*")]
        assert not any(b"C2" in k for k in names)
    finally:
        await store.close()


async def test_erasure_end_to_end(settings: Settings, tmp_path: Path, redis_client: Any
                                  ) -> None:
    """A customer with points, a tier, tickets and surveys is erased through the API: nothing
    in Redis names them, the views and the export forget them, tombstones and a receipt go
    out, the KPI gauges drop them and the day counters keep their counts; a retry changes
    nothing more; a later event starts afresh; `pulse customers erase` does the same."""
    s = settings.with_(web_port=free_port(), api_tokens=TOKEN)
    topics = Topics.from_settings(s)
    base = f"http://127.0.0.1:{s.web_port}/customers"
    now = int(time.time() * 1000)
    who, other = "E 1", "E-2"
    events = [
        purchase("e-p1", now - 3 * DAY, 250_000, cid=who),  # gold: 2,500.00 EUR
        ticket("e-t1", now - 2 * DAY, "T1", "opened", "urgent", cid=who),
        survey("e-s1", now - 2 * DAY, "nps", 3, cid=who),
        purchase("o-p1", now - 3 * DAY, 1_000, cid=other),
    ]
    await produce(s, as_records(s, events))
    url = f"{base}/{quote(who, safe='')}"
    p = owner(who, s.partitions)
    keys = Keys(s.redis_prefix)
    worker = start_worker(s, tmp_path, "worker-e")
    try:
        await wait_until(lambda: call(url)[0] == 200 and call(f"{base}/{other}")[0] == 200,
                         timeout=60, what="both customers")
        gauges_before = await redis_client.hgetall(keys.kpi_prefix(p) + "g")
        days_before = await redis_client.hgetall(keys.kpi_prefix(p) + "d")
        row = call(url)[1]["customer"]
        assert (row["tier"], row["open_tickets"], row["points_balance"]) == ("gold", 1, 3775)

        code, first = call(f"{url}/erasure", {"idempotency_key": "gdpr-2026-001"})
        assert code == 202 and first["kind"] == "erasure" and first["entry_ids"] == []
        check(document(), "/customers/{customer_id}/erasure", "post", 202, first)
        await wait_until(lambda: call(url)[0] == 404, timeout=30, what="the erasure")
        assert call(f"{url}/export") == (404, {"error": f"no customer {who}"})
        assert call(f"{base}/{other}")[0] == 200

        async def outbox_sent() -> bool:
            return await redis_client.llen(keys.outbox(p)) == 0

        await wait_until(outbox_sent, timeout=30, what="the outbox sent and trimmed")
        names = who.encode()
        async for k in redis_client.scan_iter(match="*"):
            assert names not in k, k
            kind = await redis_client.type(k)
            if kind == b"string":
                assert names not in await redis_client.get(k), k
            elif kind == b"hash":
                assert not any(names in f or names in v
                               for f, v in (await redis_client.hgetall(k)).items()), k
            elif kind == b"zset":
                assert names not in await redis_client.zrange(k, 0, -1), k
            elif kind == b"list":
                assert not any(names in x for x in await redis_client.lrange(k, 0, -1)), k

        # the KPIs: present levels without the customer, what happened still counted
        gauges = await redis_client.hgetall(keys.kpi_prefix(p) + "g")

        def delta(field: bytes) -> int:
            return int(gauges.get(field, 0)) - int(gauges_before.get(field, 0))

        assert (delta(b"customers"), delta(b"tier:gold"), delta(b"open:urgent"),
                delta(b"points")) == (-1, -1, -1, -3775)
        days = await redis_client.hgetall(keys.kpi_prefix(p) + "d")
        forfeited = {f: v for f, v in days.items() if f.endswith(b":ptx")}
        assert [int(v) for v in forfeited.values()] == [3775]
        assert {f: v for f, v in days.items() if f not in forfeited} == days_before

        # tombstones and the receipt
        ledger = await read_topic(s, topics.points, expect=2)
        last = [r for r in ledger if r.key == names][-1]
        assert last.value is None  # the tombstone comes after the customer's entries
        assert any(r.key == names and r.value is None
                   for r in await read_topic(s, topics.alerts, expect=1))
        [receipt] = await read_topic(s, topics.audit, expect=1)
        assert names not in receipt.value
        doc = json.loads(receipt.value)
        key = await redis_client.get(keys.erasure_key())
        assert doc["customer_hash"] == customer_hash(key, who) == receipt.key.decode()
        assert doc["held"] and doc["removed"]["state"] and doc["removed"]["dedup_ids"] == 3
        assert doc["tombstones"] == [topics.alerts, topics.points, topics.engagement]

        # the same request again: answered, the same event, nothing more held
        code, again = call(f"{url}/erasure", {"idempotency_key": "gdpr-2026-001"})
        assert code == 202 and again["event_id"] == first["event_id"]
        receipts = await read_topic(s, topics.audit, expect=2)
        assert [json.loads(r.value)["held"] for r in receipts] == [True, False]
        # a later event starts a fresh state
        await produce(s, as_records(s, [purchase("e-p2", now, 1_000, cid=who)]))
        await wait_until(lambda: call(url)[0] == 200, timeout=30, what="a fresh state")
        row = call(url)[1]["customer"]
        assert (row["purchase_count"], row["points_balance"], row["tier"], row["open_tickets"],
                row["nps_score"]) == (1, 10, "bronze", 0, None)

        # from the command line, for the other customer
        rc, out, err = await pulse(s, "customers", "erase", other, "--wait")
        assert rc == 0, (out, err)
        assert "erased: a receipt is on the audit topic; E-2 has no state" in out
        assert "idempotency key" in err
        rc, out, err = await pulse(s, "customer", other)
        assert rc == 1 and "unknown customer 'E-2'" in err
        rc, out, err = await pulse(s, "customers", "export", "--as-of", "2099-01-01",
                                   "--format", "jsonl")
        assert rc == 0, err
        assert [json.loads(line)["customer_id"] for line in out.splitlines()] == [who]
    finally:
        worker.stop()
