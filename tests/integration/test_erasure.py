"""Erasure (README "Member operations", GDPR Art. 17) on the real Redis and broker."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings
from streams.worker.store import ShardCommit, Store


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
