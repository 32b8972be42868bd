"""The hot path: input topics consumed in batches, state in Redis, exactly-once effect.

Theory of operation (DESIGN.md "Hot path" and "Guarantees"):

* One aiokafka consumer in its own group reads the co-partitioned input topics with
  ``getmany``; the range assignor gives partition N of every input topic to one member, so
  a worker owns whole Redis shards ``{pN}``.
* On assignment the worker reads each shard's fence (commit generation, last applied
  offset per topic, newest event time) and outbox, re-sends what the outbox still holds
  (a crash may have hit between commit and send) and seeks every topic partition to the
  offset after the fence. Kafka's committed offsets are only a hint for lag tooling.
* Per batch: decode + validate every record (bad ones become dead letters, re-routed ones
  go to their owner partition), release what event-time alignment allows, load the touched
  and the due customers' states in one Redis round trip (or from the state cache), hand
  each partition's records and states to its shard transaction (streams/worker/
  transaction.py: the processors in event-time order, time-driven changes, replay
  schedule; no I/O), then commit each partition's result (states + offsets + outbox) in one
  Lua call each, all in one pipelined round trip, and finally send the outbox to Kafka.
* A redelivered record (offset at or below the fence) is skipped; a producer duplicate
  (same event_id) is recognised by the processors; a zombie whose shard was taken over
  fails the fence check and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from processors.customer import FULL, Transitions
from processors.rules import Rules
from schemas.codec import InvalidEvent, decode, format_time
from schemas.events import Event
from streams.kafka_client import client_kwargs
from streams.settings import Settings
from streams.worker import dlqlog
from streams.worker.health import Health
from streams.worker.metrics import Metrics
from streams.worker.outbox import OutMsg
from streams.worker.partitioning import key_partition, owner
from streams.worker.poison import TickGuard
from streams.worker.recovery import Recovery
from streams.worker.replays import BadControl, headers_of, parse_control
from streams.worker.statecache import StateCache
from streams.worker.store import RETRIABLE, FenceMoved, ShardMeta, Store
from streams.worker.topics import Topics
from streams.worker.transaction import (
    NEVER,
    Context,
    Item,
    ShardResult,
    ShardTransaction,
    dead_letter,
)

log = logging.getLogger(__name__)

FROM_FUTURE = "from_future"  # dated after the wall clock plus PULSE_MAX_FUTURE_SKEW_S
INVALID_CONTROL = "invalid_control"  # a pulse.control record we cannot read
SCAN_INTERVAL_S = 1.0  # how often every owned partition is scanned for due changes
OUT_PARTITIONS_TTL_S = 60.0  # how long an output topic's partition list is trusted
_ALWAYS = 2**62  # an event time after any other


@dataclass
class _Shard:
    """What this worker holds for one partition it owns."""

    meta: ShardMeta
    pending_trim: int = 0  # outbox entries sent and acknowledged, not yet trimmed in Redis
    buf: dict[str, deque[Item]] = field(default_factory=dict)  # fetched, not yet applied
    high_t: dict[str, int] = field(default_factory=dict)  # newest event time fetched, by topic
    fetched: dict[str, int] = field(default_factory=dict)  # next offset to fetch, by topic
    holding_since: dict[str, float] = field(default_factory=dict)
    cache: StateCache = field(default_factory=StateCache)  # decoded states as committed

    def adopt(self, result: ShardResult, gen: str, cache_limit: int) -> None:
        """The result's commit went through (new generation ``gen``): the shard is what the
        transaction made of it."""
        meta, c = self.meta, result.commit
        for cid in result.erased:  # (a fresh state from later in the batch comes back below)
            self.cache.pop(cid, None)
        self.cache.keep(result.states, cache_limit)
        meta.replays = result.replays
        meta.tick_failures = result.tick_failures
        meta.gen = gen
        meta.offsets.update(c.offsets)
        meta.stamps.update(c.stamps)
        meta.high.update(c.high)
        self.pending_trim = 0


def tune_gc(young: int) -> None:
    """Collect the youngest generation every ``young`` allocations (0: leave Python's
    thresholds). A worker holds many long-lived objects (decoded states in the cache) and
    allocates a few dozen per event; with Python's 700 the collector runs ~10 times a batch
    and promotes what the batch keeps to where full collections rescan the whole cache
    (measured: a quarter of the hot path's CPU, full passes of ~0.2 s). The older
    generations' thresholds are raised with it, so that a full pass stays rare; the
    state objects form no reference cycles, what does (asyncio, the clients) is still
    collected."""
    if young:
        gc.set_threshold(young, 20, 100)


class Engine:
    def __init__(
        self,
        settings: Settings,
        rules: Rules,
        metrics: Metrics | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        transitions: Transitions = FULL,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.transitions = transitions  # processors.customer.FULL; STATE_ONLY for bench/
        self.metrics = metrics or Metrics.create()
        self.topics = Topics.from_settings(settings)
        self.wall_clock = wall_clock
        self.erasure_key = b""  # erasure receipts' keyed hash (erasure.py), set at start
        self.store: Store | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._shards: dict[int, _Shard] = {}
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._last_kafka_commit = 0.0
        self._last_scan = 0.0
        self._out_partitions: dict[str, tuple[float, list[int]]] = {}  # topic -> (when, ids)
        self.batches = 0
        self.health = Health()
        self.health.on_redis.append(self._redis_changed)
        self.metrics.redis_up.set(1)
        self.recovery = Recovery(self)  # state loss, offsets out of range (recovery.py)
        self.ticks = TickGuard(self.topics.deadletter, self.metrics)  # poison ticks

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        tune_gc(s.gc_young_threshold)
        self.store = Store.from_settings(s, self.health)
        await self.store.retrying("ping", self.store.redis.ping)
        self.erasure_key = await self.store.erasure_key(s.erasure_key)
        self.producer = AIOKafkaProducer(
            **client_kwargs(s),
            acks="all",
            linger_ms=5,
            max_request_size=2 * 1024 * 1024,
            client_id=f"{s.app_id}-engine",
        )
        await self.producer.start()
        extra: dict[str, Any] = {}
        if s.instance_id:
            extra["group_instance_id"] = s.instance_id
        self.consumer = AIOKafkaConsumer(
            **client_kwargs(s),
            group_id=s.group_id,
            client_id=f"{s.app_id}-engine",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(max(s.session_timeout_s, 2.0) * 1000),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            max_poll_records=s.batch_max_records,
            # the broker answers a fetch at once when records are there, else after this
            # long; aiokafka's 500 ms default would be up to half a second of latency on a
            # broker that does not wake the waiting fetch when a record arrives
            fetch_max_wait_ms=s.batch_timeout_ms,
            # a topic recreated after the group rejoined (broker reset) is seen at the next
            # metadata refresh: 10 s instead of aiokafka's 5 minutes
            metadata_max_age_ms=10_000,
            **extra,
        )
        await self.consumer.start()
        self.consumer.subscribe(list(self.topics.inputs), listener=_Listener(self))
        self.health.started = True
        self.health.kafka_up = self._kafka_up
        log.info("engine started: group %s, topics %s", s.group_id, list(self.topics.inputs))

    async def run(self) -> None:
        """Consume until ``stop()``; any unexpected error propagates (crash-only)."""
        while not self._stopping.is_set():
            await self.step()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        if self.store is not None:
            self.store.retry = False  # asked to stop: do not wait for a Redis that is away
        try:
            if self.consumer is not None:
                async with self._lock:
                    try:
                        await self._flush(list(self._shards))
                    except RETRIABLE as exc:  # the outbox is re-sent at the next start
                        log.warning("stopping without the final flush, Redis unavailable: %s",
                                    exc)
                await self.consumer.stop()
        finally:
            if self.producer is not None:
                await self.producer.stop()
            if self.store is not None:
                await self.store.close()
        log.info("engine stopped after %d batches", self.batches)

    # -- one batch ---------------------------------------------------------------------------

    async def step(self) -> int:
        assert self.consumer is not None
        batch = await self.consumer.getmany(
            timeout_ms=self.settings.batch_timeout_ms, max_records=self.settings.batch_max_records
        )
        async with self._lock:  # (screened under the lock: never halfway through an assignment)
            batch = await self.recovery.screen(batch)  # halted? fences that do not fit?
            n = sum(len(v) for v in batch.values())
            if n:
                self._ingest(batch)
                self.metrics.batch_size.observe(n)
            if await self._process():
                self.batches += 1
            else:
                await self._ack_idle()
            self._flow_control()
            await self._maybe_commit_kafka()
            await self.recovery.periodic()
            self._observe_health()
        return n

    # Event-time alignment. The input topics of one partition are merged in event time, the
    # way Kafka Streams synchronises a task's partitions: a record is applied only when no
    # input topic that still has unread records could deliver an older one. Without this,
    # a backlog (a replay, a restart after an outage) would be read faster from one topic
    # than from another, and the lagging topic's events would fall behind the watermark and
    # be dead-lettered as too late. A topic that is caught up (fetch position at its high
    # watermark) never holds the others back, and none holds them longer than align_idle_s.

    def _ingest(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        inputs = self.topics.inputs
        max_bytes = self.settings.max_record_bytes
        nparts = self.settings.partitions
        m = self.metrics
        wall_ms = int(self.wall_clock() * 1000)
        future = wall_ms + int(self.settings.max_future_skew_s * 1000)
        for tp, records in batch.items():
            shard = self._shards.get(tp.partition)
            if shard is None:  # revoked while the fetch was in flight
                continue
            topic = tp.topic
            kind = inputs[topic]
            last = max(shard.meta.offsets.get(topic, -1), shard.fetched.get(topic, 0) - 1)
            buf = shard.buf.get(topic)
            if buf is None:
                buf = shard.buf[topic] = deque()
            t_prev = shard.high_t.get(topic, 0)
            high = t_prev
            redelivered = 0
            for r in records:
                if r.offset <= last:
                    redelivered += 1
                    continue
                rid = None
                if r.headers:
                    rid, control = headers_of(r.headers)
                    if rid is not None and rid not in shard.meta.replays.last_seen:
                        # known from its first record on: alignment waits for its markers
                        shard.meta.replays.last_seen[rid] = time.monotonic()
                        shard.meta.replays.clocks.setdefault(rid, NEVER)
                    if control:
                        try:
                            buf.append((t_prev, None, r, None, parse_control(r.value)))
                        except BadControl as exc:
                            buf.append((t_prev, None, r,
                                        self._deadletter(r, INVALID_CONTROL, str(exc)), rid))
                        continue
                try:
                    ev = decode(kind, r.value, max_bytes)
                except InvalidEvent as exc:
                    buf.append((t_prev, None, r, self._deadletter(r, exc.reason, exc.message),
                                rid))
                    continue
                t = ev.occurred_at
                if t > future:
                    buf.append((t_prev, None, r, self._deadletter(
                        r, FROM_FUTURE, _from_future(t, wall_ms, self.settings)), rid))
                    continue
                home = owner(ev.customer_id, nparts)
                if home != tp.partition:
                    buf.append((t_prev, None, r, self._reroute(r, ev, home), rid))
                    continue
                t_prev = t
                if t > high:
                    high = t
                buf.append((t, ev, r, None, rid))
            shard.high_t[topic] = high
            if records:
                shard.fetched[topic] = records[-1].offset + 1
            shard.holding_since.pop(topic, None)
            if redelivered:
                m.events.labels(topic, "redelivered").inc(redelivered)

    def _bound(self, p: int, shard: _Shard, now: float) -> int:
        """Newest event time that may be applied on this partition now."""
        assert self.consumer is not None
        bound = _ALWAYS
        idle = self.settings.align_idle_s
        rp = shard.meta.replays
        replaying = [rid for rid in rp.clocks if rp.last_seen.get(rid) is not None]
        for topic in self.topics.inputs:
            hw = self.consumer.highwater(TopicPartition(topic, p))
            nxt = shard.fetched.get(topic, shard.meta.offsets.get(topic, -1) + 1)
            if hw is not None and nxt >= hw and not any(
                    topic not in rp.ended.get(rid, ()) for rid in replaying):
                # caught up: what it has is in the buffer (merged by time below), and what
                # it delivers next is new traffic. (While a replay runs here and has not
                # sent its end marker on this topic, the topic may still deliver older
                # replay records: it holds the others, for align_idle_s at most.)
                continue
            if shard.buf.get(topic):
                frontier = shard.high_t[topic]
            else:
                since = shard.holding_since.setdefault(topic, now)
                if now - since >= idle:
                    continue  # waited long enough for it
                frontier = shard.high_t.get(topic, NEVER)
            if frontier < bound:
                bound = frontier
        return bound

    def _take(self, p: int, shard: _Shard, now: float) -> list[Item]:
        bound = self._bound(p, shard, now)
        runs = []
        bufs = shard.buf
        for topic in self.topics.inputs:  # a fixed order: ties in time go the same way always
            buf = bufs.get(topic)
            if not buf:
                continue
            run = []
            while buf and buf[0][0] <= bound:
                run.append(buf.popleft())
            if run:
                runs.append(run)
        if len(runs) <= 1:
            return runs[0] if runs else []
        return list(heapq.merge(*runs, key=_time))

    def _flow_control(self) -> None:
        """Pause topic partitions whose unapplied buffer is large, resume drained ones."""
        assert self.consumer is not None
        limit = self.settings.batch_max_records * 4
        pause, resume = [], []
        paused = self.consumer.paused()
        for p, shard in self._shards.items():
            for topic, buf in shard.buf.items():
                tp = TopicPartition(topic, p)
                if len(buf) > limit and tp not in paused:
                    pause.append(tp)
                elif len(buf) <= limit // 2 and tp in paused:
                    resume.append(tp)
        if pause:
            self.consumer.pause(*pause)
        if resume:
            self.consumer.resume(*resume)

    async def _process(self) -> bool:
        """Apply what alignment allows, commit, send. Returns whether anything was done."""
        assert self.store is not None
        started = time.perf_counter()
        m = self.metrics
        now = time.monotonic()
        works: dict[int, list[Item]] = {}
        for p, shard in self._shards.items():
            items = self._take(p, shard, now)
            if items:
                works[p] = items
        # Time-driven changes (inactivity, expiry, downgrades) are due up to the schedule's
        # clock (README "Time"; the transaction's ``upto`` and ``replay_upto``). Partitions
        # with events are scanned every batch, all of them every scan interval.
        scan_all = now - self._last_scan >= SCAN_INTERVAL_S
        if scan_all:
            self._last_scan = now
        wall_ms = int(self.wall_clock() * 1000)
        ctx = Context.from_settings(self.settings, self.rules, self.transitions,
                                    ticks=self.ticks, keys=self.store.keys,
                                    erasure_key=self.erasure_key)
        txns: dict[int, ShardTransaction] = {}
        upto: dict[int, int] = {}
        replay_upto: dict[int, dict[str, int]] = {}
        idle: set[int] = set()
        for p, shard in self._shards.items():
            if p in works or scan_all:
                txn = txns[p] = ShardTransaction(ctx, shard.meta, works.get(p, []),
                                                 wall_ms=wall_ms, mono=now)
                upto[p] = txn.upto
                rp = shard.meta.replays
                if rp.clocks:
                    replay_upto[p] = txn.replay_upto
                    if scan_all and rp.idle(now, self.settings.replay_idle_end_s):
                        idle.add(p)  # its transaction ends the replay
        if not works and not scan_all:
            return False

        wanted = {}
        for p in works:
            cache = self._shards[p].cache
            wanted[p] = [cid for cid in txns[p].customers() if cid not in cache]
        t0 = time.perf_counter()
        loaded, due = await self.store.load(
            wanted, upto, cached={p: self._shards[p].cache for p in upto},
            replay_upto=replay_upto)
        m.redis_rtt.labels("load").observe(time.perf_counter() - t0)
        if not works and not due and not idle:
            return False

        results: dict[int, ShardResult] = {}
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for p in set(works) | set(due) | idle:
            shard, scanned = self._shards[p], due.get(p, [])
            states = shard.cache.states_for(loaded.get(p, {}), (
                *scanned, *(it[1].customer_id for it in works.get(p, ()) if it[1] is not None)))
            res = results[p] = txns[p].run(states, scanned)
            self._report(p, res, counts)
            res.commit.trim = shard.pending_trim
            res.commit.stamps = self.recovery.stamps(works.get(p, ()))  # recreated-topic check
        commits = [res.commit for res in results.values()]

        t0 = time.perf_counter()
        try:
            gens = await self.store.commit(commits)
        except FenceMoved as exc:
            m.fence_conflicts.inc()
            gens = exc.gens
            # taken over by another worker, or Redis lost what we had committed (then halt
            # or rebuild: streams/worker/recovery.py)
            for p in await self.recovery.refused(exc.partitions,
                                                 {c.partition: c.expected_gen for c in commits}):
                log.warning("partition %d was taken over by another worker; batch dropped", p)
                self._shards.pop(p, None)
            commits = [c for c in commits if c.partition in gens]
        m.redis_rtt.labels("commit").observe(time.perf_counter() - t0)
        self.health.committed()

        to_send: list[OutMsg] = []
        cache_limit = self.settings.state_cache_customers // max(1, len(self._shards))
        for c in commits:
            self._shards[c.partition].adopt(results[c.partition], gens[c.partition], cache_limit)
            to_send.extend(results[c.partition].outputs)
        for (topic, outcome), k in counts.items():
            m.events.labels(topic, outcome).inc(k)
        self._observe_latency({c.partition: works[c.partition] for c in commits
                               if works.get(c.partition)})
        await self._send(to_send)
        for c in commits:
            self._shards[c.partition].pending_trim = len(c.outbox)
        m.batch_duration.observe(time.perf_counter() - started)
        self._update_lag()
        return True

    def _report(self, p: int, res: ShardResult, counts: dict[tuple[str, str], int]) -> None:
        """The metrics and log lines of what a shard transaction decided (it does no I/O);
        ``counts`` sums the events' outcomes, counted once the commits are done."""
        for d in res.dead:
            if d.error is not None:
                log.error("processing failed for %s offset %d", d.record.topic,
                          d.record.offset, exc_info=d.error)
            self._count_deadletter(d.record, d.reason, d.message)
        for f in res.ticks_failed:
            self.ticks.report(f)
        for e in res.ended:
            if e.idle_s is not None:
                log.warning("replay %s sent nothing for %.0f s and no end marker: "
                            "ending it", e.replay_id, e.idle_s)
        for e in res.ended:
            log.info("partition %d: replay %s ended (its clock reached %s)", p, e.replay_id,
                     format_time(e.clock))
        for key, n in res.counts.items():
            counts[key] += n

    # -- outputs -----------------------------------------------------------------------------

    def _deadletter(self, r: ConsumerRecord, reason: str, message: str) -> OutMsg:
        self._count_deadletter(r, reason, message)
        return dead_letter(self.topics.deadletter, r, reason, message)

    def _count_deadletter(self, r: ConsumerRecord, reason: str, message: str) -> None:
        self.metrics.events.labels(r.topic, "deadletter").inc()
        self.metrics.deadletters.labels(r.topic, reason).inc()
        dlqlog.note(reason, r.topic, r.partition, r.offset, message)  # rate-limited WARNING

    def _reroute(self, r: ConsumerRecord, ev: Event, home: int) -> OutMsg:
        self.metrics.events.labels(r.topic, "rerouted").inc()
        headers = (*[(k, bytes(v)) for k, v in r.headers or () if k != "pulse.rerouted_from"],
                   ("pulse.rerouted_from", f"{r.topic}/{r.partition}/{r.offset}".encode()))
        return OutMsg(r.topic, ev.customer_id.encode(), r.value, home, headers)

    async def _send(self, msgs: Iterable[OutMsg]) -> None:
        """Send in order per topic partition, in batches built here: ``producer.send`` per
        record costs ~20 us of Python here, appending to a batch ~5 us. Keyed records go
        where the default partitioner would put them (murmur2 of the key), unkeyed ones to a
        random partition."""
        producer = self.producer
        assert producer is not None
        futures = []
        per_topic: dict[str, int] = defaultdict(int)
        batches: dict[tuple[str, int], Any] = {}
        for msg in msgs:
            topic, part = msg.topic, msg.partition
            if part is None:
                part = await self._out_partition(topic, msg.key)
            batch = batches.get((topic, part))
            if batch is None:
                batch = batches[(topic, part)] = producer.create_batch()
            headers = list(msg.headers)
            value = None if msg.tombstone else msg.value
            if batch.append(timestamp=None, key=msg.key, value=value,
                            headers=headers) is None:  # full: send it, start the next
                futures.append(await producer.send_batch(batch, topic, partition=part))
                batch = batches[(topic, part)] = producer.create_batch()
                batch.append(timestamp=None, key=msg.key, value=value, headers=headers)
            per_topic[topic] += 1
        for (topic, part), batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=part))
        if futures:
            await asyncio.gather(*futures)
            for topic, k in per_topic.items():
                self.metrics.outputs.labels(topic).inc(k)

    async def _out_partition(self, topic: str, key: bytes | None) -> int:
        known = self._out_partitions.get(topic)
        if known is None or time.monotonic() - known[0] > OUT_PARTITIONS_TTL_S:
            assert self.producer is not None
            known = self._out_partitions[topic] = (
                time.monotonic(), sorted(await self.producer.partitions_for(topic)))
        parts = known[1]
        if key is None:
            return random.choice(parts)
        return parts[key_partition(key, len(parts))]

    # -- bookkeeping -------------------------------------------------------------------------

    def _observe_latency(self, works: dict[int, list[Item]]) -> None:
        """Kafka timestamp to committed, for the oldest and newest record of each batch
        (observing every record would cost more than the rest of the bookkeeping)."""
        now_ms = self.wall_clock() * 1000
        for items in works.values():
            for _, _, r, _, _ in (items[0], items[-1]):
                self.metrics.latency.labels(r.topic).observe(
                    max(0.0, (now_ms - r.timestamp) / 1000))

    def _update_lag(self) -> None:
        if self.consumer is None:
            return
        now = self.wall_clock()
        total_lag = 0
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            shard = self._shards.get(tp.partition)
            if hw is None or shard is None:
                continue
            done = shard.meta.offsets.get(tp.topic, -1) + 1
            # a fence beyond the end is never "no lag": everything there is unconsumed
            lag = hw - done if done <= hw else hw
            total_lag += lag
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        self.health.lag = total_lag
        for p, shard in self._shards.items():
            if shard.meta.high:
                self.metrics.event_time_lag.labels(str(p)).set(
                    max(0.0, now - max(shard.meta.high.values()) / 1000)
                )

    async def _ack_idle(self) -> None:
        assert self.store is not None
        for p, shard in list(self._shards.items()):
            if shard.pending_trim:
                ok = await self.store.ack(p, shard.meta.gen, shard.pending_trim)
                shard.pending_trim = 0
                if not ok and await self.recovery.refused([p], {p: shard.meta.gen}):
                    self._shards.pop(p, None)

    async def _maybe_commit_kafka(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_kafka_commit < self.settings.commit_interval_s:
            return
        self._last_kafka_commit = now
        await self._commit_kafka(list(self._shards))

    async def _commit_kafka(self, partitions: list[int]) -> None:
        """Kafka's committed offsets mirror the Redis fence (for lag tools, not for truth)."""
        assert self.consumer is not None
        offsets = {}
        assigned = self.consumer.assignment()
        for p in partitions:
            shard = self._shards.get(p)
            if shard is None:
                continue
            for topic, off in shard.meta.offsets.items():
                tp = TopicPartition(topic, p)
                if tp in assigned:
                    offsets[tp] = OffsetAndMetadata(off + 1, "")
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # a rebalance in progress; the fence is the truth
                log.info("kafka offset commit skipped: %s", exc)

    async def _flush(self, partitions: list[int]) -> None:
        """Before giving partitions up: trim what Kafka acknowledged, mirror offsets."""
        assert self.store is not None
        for p in partitions:
            shard = self._shards.get(p)
            if shard is not None and shard.pending_trim:
                await self.store.ack(p, shard.meta.gen, shard.pending_trim)
                shard.pending_trim = 0
        await self._commit_kafka(partitions)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.health.assigned = False
        parts = sorted({tp.partition for tp in revoked})
        async with self._lock:
            await self._flush(parts)
            for p in parts:
                self._shards.pop(p, None)
                # the new owner reports these now; a stale series would outlive us
                for topic in self.topics.inputs:
                    with contextlib.suppress(KeyError):
                        self.metrics.consumer_lag.remove(topic, str(p))
                with contextlib.suppress(KeyError):
                    self.metrics.event_time_lag.remove(str(p))
        self.metrics.partitions_owned.set(len(self._shards))
        log.info("partitions revoked: %s", parts)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        assert self.store is not None and self.consumer is not None
        parts = sorted({tp.partition for tp in assigned})
        async with self._lock:
            for p in parts:
                meta = await self.store.load_shard(p)
                shard = _Shard(meta)
                if meta.outbox:
                    log.info("partition %d: re-sending %d outbox entries", p, len(meta.outbox))
                    await self._send(OutMsg.unpack(x) for x in meta.outbox)
                    shard.pending_trim = len(meta.outbox)
                self._shards[p] = shard
            for tp in assigned:
                off = self._shards[tp.partition].meta.offsets.get(tp.topic)
                if off is not None:
                    self.consumer.seek(tp, off + 1)
            await self.recovery.check_assigned(parts)  # state lost? fence below the start?
        self.health.assigned, self.health.assigned_at = True, time.monotonic()
        self.metrics.partitions_owned.set(len(self._shards))
        log.info("partitions assigned: %s", parts)

    def _redis_changed(self, up: bool, down_s: float) -> None:
        self.metrics.redis_up.set(1 if up else 0)
        if up:
            self.metrics.redis_down_seconds.inc(down_s)

    def _observe_health(self) -> None:
        self.health.last_step = time.monotonic()

    def _kafka_up(self) -> bool:
        # aiokafka forgets the group coordinator when the broker connection fails
        coordinator = getattr(self.consumer, "_coordinator", None)
        return coordinator is None or getattr(coordinator, "coordinator_id", 0) is not None

    def clock(self, partition: int) -> int:
        """The partition's clock (epoch ms): what "now" means for views (``/customers``,
        windows "as of now"). Live mode: the wall clock, and nothing else: no event, whatever
        its date, moves it. Event mode: the newest event time applied on the partition.
        Lateness is judged per customer (processors.customer), never against this."""
        if self.settings.clock == "live":
            return int(self.wall_clock() * 1000)
        shard = self._shards.get(partition)
        return max(shard.meta.high.values(), default=0) if shard is not None else 0

    @property
    def owned_partitions(self) -> list[int]:
        return sorted(self._shards)


def _from_future(t: int, wall_ms: int, settings: Settings) -> str:
    ahead = (t - wall_ms) / 3_600_000
    return (f"occurred_at {format_time(t)} is {ahead:,.1f} h after the wall clock "
            f"{format_time(wall_ms)} when it was processed; at most "
            f"PULSE_MAX_FUTURE_SKEW_S={settings.max_future_skew_s:g} s ahead is accepted "
            f"(a till or server whose clock is wrong?)")


def _time(item: Item) -> int:
    return item[0]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.engine.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.engine.on_assigned(assigned)
