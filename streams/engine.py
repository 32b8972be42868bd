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
  go to their owner partition), load the touched customers' states in one Redis round
  trip, apply the pure processors in event-time order per shard (each topic keeps its own
  order), then commit states + offsets + outbox per shard in one Lua call each, all in one
  pipelined round trip, and finally send the outbox to Kafka.
* A redelivered record (offset at or below the fence) is skipped; a producer duplicate
  (same event_id) is recognised by the processors; a zombie whose shard was taken over
  fails the fence check and writes nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from processors import wire
from processors.customer import apply
from processors.errors import Rejected
from processors.rules import Rules
from schemas.codec import InvalidEvent, decode
from schemas.events import Event
from streams.metrics import Metrics
from streams.outbox import OutMsg
from streams.partitioning import owner
from streams.settings import Settings
from streams.store import FenceMoved, ShardCommit, ShardMeta, Store
from streams.topics import Topics

log = logging.getLogger(__name__)

DEADLETTER_KEEP_BYTES = 900 * 1024  # larger originals are truncated to stay under Kafka's 1 MB
PROCESSING_ERROR = "processing_error"


@dataclass
class _Shard:
    meta: ShardMeta
    pending_trim: int = 0  # outbox entries sent and acknowledged, not yet trimmed in Redis


@dataclass
class _Work:
    """One shard's part of a batch."""

    partition: int
    offsets: dict[str, int] = field(default_factory=dict)
    events: dict[str, list[tuple[int, Event, ConsumerRecord]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    out: list[OutMsg] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)


class Engine:
    def __init__(
        self,
        settings: Settings,
        rules: Rules,
        metrics: Metrics | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = metrics or Metrics.create()
        self.topics = Topics.from_settings(settings)
        self.wall_clock = wall_clock
        self.store: Store | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._shards: dict[int, _Shard] = {}
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._last_kafka_commit = 0.0
        self.batches = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.store = Store.from_url(s.redis_url, s.redis_prefix)
        await self.store.redis.ping()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
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
            bootstrap_servers=s.kafka_bootstrap,
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
            **extra,
        )
        await self.consumer.start()
        self.consumer.subscribe(list(self.topics.inputs), listener=_Listener(self))
        log.info("engine started: group %s, topics %s", s.group_id, list(self.topics.inputs))

    async def run(self) -> None:
        """Consume until ``stop()``; any unexpected error propagates (crash-only)."""
        while not self._stopping.is_set():
            await self.step()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        try:
            if self.consumer is not None:
                async with self._lock:
                    await self._flush(list(self._shards))
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
        n = sum(len(v) for v in batch.values())
        async with self._lock:
            if n:
                await self._process(batch)
                self.batches += 1
            else:
                await self._ack_idle()
            await self._maybe_commit_kafka()
        return n

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self.store is not None
        started = time.perf_counter()
        m = self.metrics
        inputs = self.topics.inputs
        max_bytes = self.settings.max_record_bytes
        nparts = self.settings.partitions
        works: dict[int, _Work] = {}
        total = 0
        for tp, records in batch.items():
            shard = self._shards.get(tp.partition)
            if shard is None:  # revoked while the fetch was in flight
                continue
            total += len(records)
            kind = inputs[tp.topic]
            last = shard.meta.offsets.get(tp.topic, -1)
            work = works.get(tp.partition)
            if work is None:
                work = works[tp.partition] = _Work(tp.partition)
            queue = work.events[tp.topic]
            redelivered = 0
            for r in records:
                if r.offset <= last:
                    redelivered += 1
                    continue
                work.offsets[tp.topic] = r.offset
                try:
                    ev = decode(kind, r.value, max_bytes)
                except InvalidEvent as exc:
                    work.out.append(self._deadletter(r, exc.reason, exc.message))
                    continue
                home = owner(ev.customer_id, nparts)
                if home != tp.partition:
                    work.out.append(self._reroute(r, ev, home))
                    continue
                queue.append((ev.occurred_at, ev, r))
                work.customers.add(ev.customer_id)
            if redelivered:
                m.events.labels(tp.topic, "redelivered").inc(redelivered)
        if not works:
            return
        m.batch_size.observe(total)

        t0 = time.perf_counter()
        loaded = await self.store.load_states(
            {p: list(w.customers) for p, w in works.items()}
        )
        m.redis_rtt.labels("load").observe(time.perf_counter() - t0)

        commits = []
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for p, work in works.items():
            shard = self._shards[p]
            commits.append(self._apply_shard(shard, work, loaded.get(p, {}), counts))

        t0 = time.perf_counter()
        try:
            gens = await self.store.commit(commits)
        except FenceMoved as exc:
            m.fence_conflicts.inc()
            gens = exc.gens  # type: ignore[attr-defined]
            for p in exc.partitions:  # type: ignore[attr-defined]
                log.warning("partition %d was taken over by another worker; batch dropped", p)
                self._shards.pop(p, None)
            commits = [c for c in commits if c.partition in gens]
        m.redis_rtt.labels("commit").observe(time.perf_counter() - t0)

        to_send: list[OutMsg] = []
        for c in commits:
            shard = self._shards[c.partition]
            shard.meta.gen = gens[c.partition]
            shard.meta.offsets.update(c.offsets)
            shard.meta.high = c.high
            shard.pending_trim = 0
            to_send.extend(works[c.partition].out)
        for (topic, outcome), k in counts.items():
            m.events.labels(topic, outcome).inc(k)
        self._observe_latency(batch, gens)
        await self._send(to_send)
        for c in commits:
            self._shards[c.partition].pending_trim = len(c.outbox)
        m.batch_duration.observe(time.perf_counter() - started)
        self._update_lag()

    def _apply_shard(
        self,
        shard: _Shard,
        work: _Work,
        loaded: dict[str, bytes | None],
        counts: dict[tuple[str, str], int],
    ) -> ShardCommit:
        rules = self.rules
        lateness = rules.allowed_lateness_ms
        states: dict[str, Any] = {}
        for cid, raw in loaded.items():
            states[cid] = wire.loads(raw) if raw is not None else None
        changed: set[str] = set()
        high = shard.meta.high
        queues = list(work.events.values())
        merged = iter(queues[0]) if len(queues) == 1 else heapq.merge(*queues, key=_time)
        for _, ev, r in merged:
            cid = ev.customer_id
            t = ev.occurred_at
            if t > high:
                high = t
            try:
                step = apply(states[cid], ev, rules, high - lateness)
            except Rejected as exc:
                work.out.append(self._deadletter(r, exc.reason, exc.message))
                continue
            except Exception as exc:  # a bug must not stop the pipeline: dead-letter the event
                log.exception("processing failed for %s offset %d", r.topic, r.offset)
                work.out.append(self._deadletter(r, PROCESSING_ERROR, repr(exc)))
                continue
            if step.duplicate:
                counts[(r.topic, "duplicate")] += 1
                continue
            counts[(r.topic, "processed")] += 1
            states[cid] = step.state
            changed.add(cid)
            for output in step.outputs:
                work.out.append(self._output(output))
        return ShardCommit(
            partition=work.partition,
            expected_gen=shard.meta.gen,
            offsets=work.offsets,
            high=high,
            states={cid: wire.dumps(states[cid]) for cid in changed},
            outbox=[msg.pack() for msg in work.out],
            trim=shard.pending_trim,
        )

    # -- outputs -----------------------------------------------------------------------------

    def _deadletter(self, r: ConsumerRecord, reason: str, message: str) -> OutMsg:
        self.metrics.events.labels(r.topic, "deadletter").inc()
        self.metrics.deadletters.labels(r.topic, reason).inc()
        value = r.value if r.value is not None else b""
        headers = [
            ("pulse.dlq.reason", reason.encode()),
            ("pulse.dlq.message", message.encode()[:2000]),
            ("pulse.dlq.topic", r.topic.encode()),
            ("pulse.dlq.partition", str(r.partition).encode()),
            ("pulse.dlq.offset", str(r.offset).encode()),
            ("pulse.dlq.timestamp", str(r.timestamp).encode()),
        ]
        if len(value) > DEADLETTER_KEEP_BYTES:
            headers.append(("pulse.dlq.truncated_from", str(len(value)).encode()))
            value = value[:DEADLETTER_KEEP_BYTES]
        return OutMsg(self.topics.deadletter, r.key, value, None, tuple(headers))

    def _reroute(self, r: ConsumerRecord, ev: Event, home: int) -> OutMsg:
        self.metrics.events.labels(r.topic, "rerouted").inc()
        headers = (("pulse.rerouted_from", f"{r.topic}/{r.partition}/{r.offset}".encode()),)
        return OutMsg(r.topic, ev.customer_id.encode(), r.value, home, headers)

    def _output(self, output: Any) -> OutMsg:
        """A processor output (ledger entry, alert, ...) -> the record that carries it."""
        topic = getattr(self.topics, output.stream)
        return OutMsg(topic, output.customer_id.encode(), orjson.dumps(output.as_dict()))

    async def _send(self, msgs: Iterable[OutMsg]) -> None:
        assert self.producer is not None
        futures = []
        per_topic: dict[str, int] = defaultdict(int)
        for msg in msgs:
            futures.append(
                await self.producer.send(
                    msg.topic,
                    value=msg.value,
                    key=msg.key,
                    partition=msg.partition,
                    headers=list(msg.headers),
                )
            )
            per_topic[msg.topic] += 1
        if futures:
            await asyncio.gather(*futures)
            for topic, k in per_topic.items():
                self.metrics.outputs.labels(topic).inc(k)

    # -- bookkeeping -------------------------------------------------------------------------

    def _observe_latency(
        self, batch: dict[TopicPartition, list[ConsumerRecord]], gens: dict[int, str]
    ) -> None:
        now_ms = self.wall_clock() * 1000
        for tp, records in batch.items():
            if tp.partition not in gens or not records:
                continue
            hist = self.metrics.latency.labels(tp.topic)
            # Oldest and newest record bound the batch; observing every record costs more
            # than the rest of the bookkeeping together at full speed.
            for r in (records[0], records[-1]):
                hist.observe(max(0.0, (now_ms - r.timestamp) / 1000))

    def _update_lag(self) -> None:
        if self.consumer is None:
            return
        now = self.wall_clock()
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            shard = self._shards.get(tp.partition)
            if hw is None or shard is None:
                continue
            done = shard.meta.offsets.get(tp.topic, -1) + 1
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - done))
        for p, shard in self._shards.items():
            if shard.meta.high:
                self.metrics.event_time_lag.labels(str(p)).set(
                    max(0.0, now - shard.meta.high / 1000)
                )

    async def _ack_idle(self) -> None:
        assert self.store is not None
        for p, shard in list(self._shards.items()):
            if shard.pending_trim:
                ok = await self.store.ack(p, shard.meta.gen, shard.pending_trim)
                shard.pending_trim = 0
                if not ok:
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
        parts = sorted({tp.partition for tp in revoked})
        async with self._lock:
            await self._flush(parts)
            for p in parts:
                self._shards.pop(p, None)
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
        self.metrics.partitions_owned.set(len(self._shards))
        log.info("partitions assigned: %s", parts)

    @property
    def owned_partitions(self) -> list[int]:
        return sorted(self._shards)


def _time(item: tuple[int, Event, ConsumerRecord]) -> int:
    return item[0]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.engine.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.engine.on_assigned(assigned)
