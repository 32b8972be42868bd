"""The Redis adapter: customer states, partition fences, outboxes.

One round trip to load a batch's states (a pipeline of one MGET per partition) and one to
commit it (a pipeline of one Lua call per partition; each call is atomic and touches only
the keys of its partition's hash slot, so the same code runs on Redis Cluster).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rx

from streams.settings import Settings, redact_url
from streams.worker.health import Health
from streams.worker.keys import Keys
from streams.worker.replays import OUTCOME_TTL_S, ShardReplays

log = logging.getLogger(__name__)
T = TypeVar("T")

# A Redis that restarts, fails over or drops the connection: retried, with backoff, for as
# long as it takes (the worker reports itself unhealthy meanwhile). BusyLoadingError (a
# restarted Redis still reading its append-only file) is a ConnectionError.
RETRIABLE = (rx.ConnectionError, rx.TimeoutError, ConnectionError, OSError)
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.1, 2.0


class FenceMoved(RuntimeError):
    """Another worker committed to these partitions since we read their fences (or Redis
    lost what we had committed: streams/worker/recovery.py tells which). The commits of the
    other partitions of the same call went through."""

    retriable = True
    partitions: list[int]  # whose commit was refused: nothing of it was written
    gens: dict[int, str]  # partition -> its new commit generation, for the ones that committed

    def __init__(self, partitions: list[int], gens: dict[int, str]) -> None:
        super().__init__(f"fence moved on partitions {partitions}")
        self.partitions = partitions
        self.gens = gens


def _lua(name: str) -> str:
    return resources.files("streams.worker").joinpath("lua", name).read_text()


@dataclass
class ShardMeta:
    """What a worker knows about a partition it owns."""

    partition: int
    gen: str = ""
    # newest event time applied per input topic (ms): each topic's watermark is this minus
    # the allowed lateness, so one topic read far ahead of another (a replay of purchases
    # before tickets) does not make the other's events late
    high: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)  # topic -> last applied offset
    outbox: list[bytes] = field(default_factory=list)
    replays: ShardReplays = field(default_factory=ShardReplays)  # replays under way here
    tick_failures: dict[str, int] = field(default_factory=dict)  # streams/worker/poison.py
    stamps: dict[str, int] = field(default_factory=dict)  # Kafka timestamp at offsets[topic]


@dataclass
class ShardCommit:
    partition: int
    expected_gen: str
    offsets: dict[str, int]
    high: dict[str, int]
    states: dict[str, bytes]  # customer_id -> encoded state
    outbox: list[bytes]
    trim: int = 0  # outbox entries acknowledged by Kafka since the last commit
    increments: list[tuple[str, str, int]] = field(default_factory=list)  # (key, field, delta)
    # customer -> next due time, in the live schedule (replay None) or a replay's
    due: dict[str, int | None] = field(default_factory=dict)
    ledger: list[tuple[str, bytes]] = field(default_factory=list)  # (customer, entry JSON)
    due_on: dict[str, str] = field(default_factory=dict)  # customer -> replay it waits on
    # (schedule, customer): the customer left that schedule (None: the live one)
    unscheduled: list[tuple[str | None, str]] = field(default_factory=list)
    fence: dict[str, str | int] = field(default_factory=dict)  # more fence fields to set
    fence_del: list[str] = field(default_factory=list)  # fence fields to delete
    released: list[str] = field(default_factory=list)  # replays that ended on this partition
    stamps: dict[str, int] = field(default_factory=dict)  # Kafka timestamp at offsets[topic]
    # customers erased by this batch: their state, ledger, due entries and tick failures are
    # deleted before ``states`` and ``ledger`` are written (a later event of the batch starts
    # a fresh state); ``replay_dues``: the replays whose due sets may hold them
    erased: list[str] = field(default_factory=list)
    replay_dues: list[str] = field(default_factory=list)


LEDGER_KEEP = 10  # recent ledger entries kept per customer for `pulse customer`


class Store:
    def __init__(self, client: aioredis.Redis, keys: Keys, health: Health | None = None,
                 url: str = "") -> None:
        self.redis = client
        self.keys = keys
        self.health = health
        self.url = redact_url(url)
        self.retry = True  # False once the worker is asked to stop: it does not wait for Redis
        self._commit = client.register_script(_lua("commit_batch.lua"))
        self._ack = client.register_script(_lua("ack_outbox.lua"))

    @classmethod
    def from_settings(cls, settings: Settings, health: Health | None = None) -> Store:
        """The store with the settings' Redis password and TLS (streams.redis_client); a
        worker passes its ``health`` and then retries while Redis is away."""
        from streams.redis_client import connect

        client = connect(settings, decode_responses=False, health_check_interval=30,
                         socket_connect_timeout=5)
        return cls(client, Keys(settings.redis_prefix), health, settings.redis_url)

    async def retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """``op()`` until it succeeds, with backoff, while Redis is unreachable. Only a worker
        (a ``Store`` with ``health``) retries; a command fails at once and says so."""
        if self.health is None or not self.retry:
            return await op()
        delay = BACKOFF_FIRST_S
        failures = 0
        while True:
            try:
                result = await op()
            except RETRIABLE as exc:
                if not self.retry:
                    raise
                failures += 1
                self.health.redis_failed(exc)
                if failures == 1 or failures % 30 == 0:
                    log.warning("Redis at %s unavailable during %s (%s); retrying",
                                self.url, what, exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(BACKOFF_MAX_S, delay * 2)
                continue
            if failures:
                log.warning("Redis at %s is back after %d failed attempts (%s)",
                            self.url, failures, what)
            self.health.redis_ok()
            return result

    async def close(self) -> None:
        await self.redis.aclose()

    async def load_shard(self, partition: int) -> ShardMeta:
        return await self.retrying("load_shard", lambda: self._load_shard(partition))

    async def _load_shard(self, partition: int) -> ShardMeta:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.fence(partition))
            pipe.lrange(self.keys.outbox(partition), 0, -1)
            pipe.hgetall(self.keys.tick_failures(partition))
            fence, outbox, failures = await pipe.execute()
        meta = ShardMeta(partition=partition, outbox=list(outbox),
                         tick_failures={k.decode(): int(v) for k, v in failures.items()
                                        if int(v) > 0})
        for k, v in fence.items():
            name = k.decode()
            if name == "gen":
                meta.gen = v.decode()
            elif name.startswith("h:"):
                meta.high[name[2:]] = int(v)
            elif name.startswith("o:"):
                meta.offsets[name[2:]] = int(v)
            elif name.startswith("s:"):
                meta.stamps[name[2:]] = int(v)
            else:
                meta.replays.read_fence(name, v)
        rids = list(meta.replays.clocks)
        if rids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for rid in rids:
                    pipe.zrange(self.keys.replay_due(partition, rid), 0, -1)
                members = await pipe.execute()
            for rid, ids in zip(rids, members, strict=True):
                for cid in ids:
                    meta.replays.scheduled[cid.decode()] = rid
        return meta

    async def load(
        self, wanted: dict[int, list[str]], due_upto: dict[int, int], limit: int = 2000,
        cached: Mapping[int, Container[str]] | None = None,
        replay_upto: Mapping[int, Mapping[str, int]] | None = None,
    ) -> tuple[dict[int, dict[str, bytes | None]], dict[int, list[str]]]:
        """States of the wanted customers, plus the customers of ``due_upto``'s partitions
        whose time-driven change is due by then on the live schedule, or by
        ``replay_upto[p][replay]`` on a replay's (with their states, unless ``cached`` has
        them: the caller holds those already). One round trip, two when due customers
        outside ``wanted`` must be fetched."""
        return await self.retrying(
            "load", lambda: self._load(wanted, due_upto, limit, cached, replay_upto))

    async def _load(
        self, wanted: dict[int, list[str]], due_upto: dict[int, int], limit: int = 2000,
        cached: Mapping[int, Container[str]] | None = None,
        replay_upto: Mapping[int, Mapping[str, int]] | None = None,
    ) -> tuple[dict[int, dict[str, bytes | None]], dict[int, list[str]]]:
        parts = [p for p, ids in wanted.items() if ids]
        scan = [(p, self.keys.due(p), upto) for p, upto in due_upto.items()]
        for p, per in (replay_upto or {}).items():
            scan += [(p, self.keys.replay_due(p, rid), upto) for rid, upto in per.items()]
        if not parts and not scan:
            return {}, {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in parts:
                pipe.mget([self.keys.customer(p, cid) for cid in wanted[p]])
            for _, key, upto in scan:
                pipe.zrangebyscore(key, "-inf", upto, start=0, num=limit)
            results = await pipe.execute()
        states = {p: dict(zip(wanted[p], vals, strict=True))
                  for p, vals in zip(parts, results[: len(parts)], strict=True)}
        due: dict[int, list[str]] = {}
        extra: dict[int, list[str]] = {}
        found: dict[int, list[str]] = {}
        for (p, _, _), members in zip(scan, results[len(parts):], strict=True):
            if members:
                found.setdefault(p, []).extend(m.decode() for m in members)
        for p, members in found.items():
            due[p] = list(dict.fromkeys(members))
            have = states.setdefault(p, {})
            known = cached.get(p, ()) if cached else ()
            missing = [cid for cid in due[p] if cid not in have and cid not in known]
            if missing:
                extra[p] = missing
        if extra:
            async with self.redis.pipeline(transaction=False) as pipe:
                for p, ids in extra.items():
                    pipe.mget([self.keys.customer(p, cid) for cid in ids])
                more = await pipe.execute()
            for (p, ids), vals in zip(extra.items(), more, strict=True):
                states[p].update(zip(ids, vals, strict=True))
        return states, due

    async def commit(self, commits: Iterable[ShardCommit]) -> dict[int, str]:
        """Apply each partition's commit atomically. Returns partition -> new gen.

        Raises ``FenceMoved`` naming the partitions whose fence moved; the others committed.
        """
        commits = list(commits)
        if not commits:
            return {}
        # one token a commit: a retry of a commit whose reply was lost is recognised
        prepared = [self._commit_args(c) for c in commits]
        for _, args in prepared:
            args.append(os.urandom(12).hex())

        async def send() -> list[int]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys, args in prepared:
                    await self._commit(keys=keys, args=args, client=pipe)
                return [int(r) for r in await pipe.execute()]

        results = await self.retrying("commit", send)
        gens: dict[int, str] = {}
        moved = []
        for c, r in zip(commits, results, strict=True):
            if int(r) < 0:
                moved.append(c.partition)
            else:
                gens[c.partition] = str(int(r))
        if moved:
            raise FenceMoved(moved, gens)
        return gens

    def _commit_args(self, c: ShardCommit) -> tuple[list[str], list[bytes | str | int]]:
        p = c.partition
        keys = [self.keys.fence(p), self.keys.outbox(p), self.keys.due(p)]
        args: list[bytes | str | int] = [c.expected_gen, c.trim]
        fence_fields: list[bytes | str | int] = []
        for topic, t in c.high.items():
            fence_fields += [Keys.high_field(topic), t]
        for topic, off in c.offsets.items():
            fence_fields += [Keys.offset_field(topic), off]
        for name, fv in c.fence.items():
            fence_fields += [name, fv]
        for topic, ts in c.stamps.items():
            fence_fields += [Keys.stamp_field(topic), ts]
        args += [len(fence_fields) // 2, *fence_fields]
        args += [len(c.outbox), *c.outbox]
        states = [(self.keys.customer(p, cid), value) for cid, value in c.states.items()]
        keys += [key for key, _ in states]  # KEYS[4..3+S]
        extra: dict[str, int] = {}

        def index(key: str) -> int:  # KEYS index of a key named by the arguments below
            if key not in extra:
                keys.append(key)
                extra[key] = len(keys)
            return extra[key]

        args.append(len(c.erased))
        if c.erased:
            args += [index(self.keys.tick_failures(p)), len(c.replay_dues),
                     *(index(self.keys.replay_due(p, rid)) for rid in c.replay_dues)]
            for cid in c.erased:
                args += [index(self.keys.customer(p, cid)), index(self.keys.ledger(p, cid)), cid]
        args += [len(states), *(value for _, value in states)]

        incs: list[bytes | str | int] = []
        for key, fld, delta in c.increments:
            incs += [index(key), fld, delta]
        args += [len(c.increments), *incs]
        zops: list[bytes | str | int] = []
        for rid, cid in c.unscheduled:
            zops += [3 if rid is None else index(self.keys.replay_due(p, rid)), cid, ""]
        for cid, at in c.due.items():
            rid = c.due_on.get(cid)
            zops += [3 if rid is None else index(self.keys.replay_due(p, rid)), cid,
                     "" if at is None else at]
        args += [len(zops) // 3, *zops]
        args += [len(c.ledger), LEDGER_KEEP]
        for cid, entry in c.ledger:
            args += [index(self.keys.ledger(p, cid)), entry]
        args += [len(c.fence_del), *c.fence_del]
        args.append(len(c.released))
        for rid in c.released:
            args += [index(self.keys.replay_due(p, rid)),
                     index(self.keys.replay_outcome(p, rid)), OUTCOME_TTL_S]
        return keys, args

    async def ack(self, partition: int, gen: str, count: int) -> bool:
        if count <= 0:
            return True
        # retried as is: the outbox holds exactly the entries of the last commit, so a
        # second trim of a trim whose reply was lost finds nothing more to drop
        r = await self.retrying("ack", lambda: self._ack(
            keys=[self.keys.fence(partition), self.keys.outbox(partition)], args=[gen, count]))
        return int(r) > 0

    async def fence_gens(self, partitions: Iterable[int]) -> dict[int, str]:
        """The current commit generation of each partition's fence ('' when there is none)."""
        parts = list(partitions)

        async def read() -> list[object]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in parts:
                    pipe.hget(self.keys.fence(p), "gen")
                return list(await pipe.execute())

        vals = await self.retrying("fence check", read)
        return {p: (v.decode() if isinstance(v, bytes) else "") for p, v in zip(parts, vals,
                                                                                 strict=True)}

    async def reset_shard(self, partition: int) -> int:
        """Delete every key of the partition's shard (states, fence, outbox, KPI counters,
        ledgers, due set): the start of a rebuild. Returns how many keys went."""
        async def wipe() -> int:
            keys = [k async for k in self.redis.scan_iter(
                match=self.keys.shard(partition) + ":*", count=1000)]
            n = 0
            for i in range(0, len(keys), 500):
                n += int(await self.redis.unlink(*keys[i:i + 500]))
            return n

        return await self.retrying("reset shard", wipe)

    async def recent_ledger(self, partition: int, customer_id: str) -> list[bytes]:
        """The customer's latest ledger entries, newest first."""
        raw = await self.redis.lrange(self.keys.ledger(partition, customer_id), 0, -1)
        return [x for x in raw if isinstance(x, bytes)]

    async def erasure_key(self, configured: str) -> bytes:
        """The key of the erasure receipts' keyed hash: ``configured`` (PULSE_ERASURE_KEY),
        or the deployment's own, generated by the first worker that needs one and kept
        (``<prefix>:erasure-key``, outside every shard: a rebuild keeps it)."""
        if configured:
            return configured.encode()
        key = self.keys.erasure_key()

        async def get_or_make() -> bytes:
            await self.redis.set(key, os.urandom(32).hex(), nx=True)
            value = await self.redis.get(key)
            assert isinstance(value, bytes)
            return value

        return await self.retrying("erasure key", get_or_make)

    async def time_driven(self, partition: int, customer_id: str) -> tuple[int | None, int]:
        """The event time of the customer's next time-driven change (on the live schedule or
        a replay's), and its failed tries (streams/worker/poison.py)."""
        keys = [self.keys.due(partition)]
        fence = await self.redis.hgetall(self.keys.fence(partition))
        meta = ShardMeta(partition)
        for k, v in fence.items():
            if isinstance(k, bytes) and isinstance(v, bytes):
                meta.replays.read_fence(k.decode(), v)
        keys += [self.keys.replay_due(partition, rid) for rid in meta.replays.clocks]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zscore(key, customer_id)
            pipe.hget(self.keys.tick_failures(partition), customer_id)
            *scores, failures = await pipe.execute()
        due = [int(x) for x in scores if x is not None]
        return (min(due) if due else None), int(failures or 0)

    async def get_state(self, partition: int, customer_id: str) -> bytes | None:
        value = await self.redis.get(self.keys.customer(partition, customer_id))
        return value if isinstance(value, bytes) else None

    async def scan_states(
        self, partition: int | None = None, count: int = 1000
    ) -> AsyncIterator[list[tuple[str, bytes]]]:
        """Every stored customer state, in chunks (SCAN + MGET; never blocks Redis)."""
        pattern = self.keys.customer_pattern(partition)
        cursor = 0
        while True:
            cursor, batch = await self.redis.scan(cursor=cursor, match=pattern, count=count)
            if batch:
                values = await self.redis.mget(batch)
                yield [
                    (self.keys.customer_id_of(k), v)
                    for k, v in zip(batch, values, strict=True)
                    if isinstance(v, bytes)
                ]
            if cursor == 0:
                break
