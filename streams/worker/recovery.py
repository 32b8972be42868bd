"""Storage-loss and offset-range checks: never continue silently from offsets we cannot trust.

Theory of operation (README "Recovery"):

* **State loss.** A partition's fence (``<prefix>:{pN}:fence``) is written by the shard's
  first commit and moves with every commit after it, atomically with the states; the engine
  mirrors it into the consumer group's committed offsets in Kafka every commit interval.
  So the fence doubles as the store's marker: Kafka holding a committed offset beyond the
  fence (or beyond the log start when there is no fence at all) means Redis lost commits it
  had acknowledged -- it came back empty, failed over to a stale replica, was flushed, or
  was restored from an older snapshot. A partition nobody ever processed has neither. The
  same holds while running: commit generations only grow, so a fence whose ``gen`` is below
  the one this worker wrote last went backwards (checked on every fence conflict and every
  ``FENCE_CHECK_S``).
* **Offsets out of range.** A fence beyond a partition's end (the topic was recreated, the
  broker lost data) would make the worker wait for offsets that will never come, skipping
  every new record below them; a fence below the partition's start means retention deleted
  records before they were processed. The start comes from ListOffsets(earliest), the end
  from the high watermark of a fetch (Tansu's ListOffsets(latest) is wrong; a fetch's high
  watermark is right on both brokers), checked before the fetched records are used. A
  recreated topic may already hold more records than the fence by the time the worker looks,
  so the fence also keeps the Kafka timestamp of the last record it covers: on assignment
  the worker reads that record again (seeks to the fence, not after it) and a different
  timestamp there means another log. The same check runs again whenever a connection of the
  consumer to a broker was lost: a broker that restarted empty and was fed new records
  before the worker's next fetch would otherwise look like the old log's continuation.
* **Policies.** ``PULSE_ON_STATE_LOSS=halt`` (default) stops the worker (exit 4) with the
  partitions, Kafka's offsets and what to do; ``rebuild`` deletes the partition's keys
  (states, KPI counters, ledgers, outbox, due set, fence), commits the log start as the
  group's offset (so that a crash during the rebuild is not taken for another loss) and
  reprocesses the partition from its earliest retained record. ``PULSE_ON_OFFSET_RESET``:
  ``reset`` (default) consumes the topic partition again from its start, ``halt`` stops.
  Every case is an ERROR log line and a metric.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streams.worker.store import ShardMeta

if TYPE_CHECKING:
    from streams.worker.engine import Engine

log = logging.getLogger(__name__)

FENCE_CHECK_S = 5.0  # how often owned fences are compared with the gens written last
MISSES_TRUSTED = 5  # fetches that skip the fence's record before the fence is trusted


@dataclass(frozen=True)
class Loss:
    """Evidence that a partition's state was lost: Kafka's committed offset per topic
    against the fence's next offset and the log start."""

    partition: int
    committed: dict[str, int]
    fence_next: dict[str, int]
    start: dict[str, int]
    how: str

    def describe(self) -> str:
        parts = [f"{t}: Kafka committed {k}, Redis fence {self.fence_next.get(t, 'none')}"
                 for t, k in sorted(self.committed.items())]
        return f"partition {self.partition} ({self.how}; " + "; ".join(parts) + ")"


def lost_topics(committed: dict[str, int | None], fence_next: dict[str, int],
                start: dict[str, int]) -> dict[str, int]:
    """The topics whose committed offset in Kafka is beyond both the fence and the log
    start: work that was done and acknowledged, that Redis no longer has."""
    out = {}
    for topic, k in committed.items():
        if k is not None and k > max(fence_next.get(topic, 0), start.get(topic, 0)):
            out[topic] = k
    return out


def gen_value(gen: str) -> int:
    return int(gen) if gen else -1


class Recovery:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._unchecked: set[TopicPartition] = set()  # end not yet compared with the fence
        self._conns: set[int] = set()  # the consumer's broker connections at the last batch
        self._misses: Counter[TopicPartition] = Counter()  # fetches that skipped the fence
        self._last_check = time.monotonic()

    @property
    def _consumer(self) -> Any:
        assert self.engine.consumer is not None
        return self.engine.consumer

    def _tps(self, p: int) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in self.engine.topics.inputs]

    # -- on assignment ----------------------------------------------------------------------

    async def check_assigned(self, parts: list[int]) -> None:
        """After the fences of newly assigned partitions were loaded and positions set."""
        engine = self.engine
        consumer = self._consumer
        tps = [tp for p in parts for tp in self._tps(p)]
        if not tps:
            return
        starts = await consumer.beginning_offsets(tps)
        losses = []
        for p in parts:
            shard = engine._shards.get(p)
            if shard is None:
                continue
            meta = shard.meta
            committed: dict[str, int | None] = {}
            for tp in self._tps(p):
                committed[tp.topic] = await consumer.committed(tp)
            fence_next = {t: o + 1 for t, o in meta.offsets.items()}
            start = {tp.topic: starts.get(tp, 0) for tp in self._tps(p)}
            bad = lost_topics(committed, fence_next, start)
            if bad:
                losses.append(Loss(p, bad, fence_next, start,
                                   "Redis has no fence" if not meta.gen else
                                   "the Redis fence is behind Kafka's committed offsets"))
                continue
            for tp in self._tps(p):
                nxt = fence_next.get(tp.topic)
                if nxt is None:
                    continue
                if nxt < start[tp.topic]:
                    await self._out_of_range(tp, "below_start", nxt, start[tp.topic])
                    continue
                if tp.topic in meta.stamps:  # read the fence's own record again
                    consumer.seek(tp, nxt - 1)
                self._unchecked.add(tp)
        if losses:
            await self.state_lost(losses)

    # -- before a fetched batch is used -----------------------------------------------------

    async def screen(self, batch: dict[TopicPartition, list[ConsumerRecord]]
                     ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Compare each newly assigned partition's fence with its end as soon as a fetch
        told us the end; records of a partition that is reset are dropped (re-fetched)."""
        engine = self.engine
        self.halt_if_needed()
        if self._reconnected():
            self._reverify(batch)
        for tp, records in list(batch.items()):
            # the client moved our position back by itself: its answer to OffsetOutOfRange
            # (auto_offset_reset) when the broker lost the log under us while assigned
            shard = engine._shards.get(tp.partition)
            if shard is None or not records or tp.topic not in shard.meta.offsets:
                continue
            last = shard.meta.offsets[tp.topic]
            expected = shard.fetched.get(tp.topic, last + 1)
            if tp in self._unchecked:
                expected = min(expected, last)  # the fence's own record, read again
            if records[0].offset < expected:
                self._unchecked.discard(tp)
                hw = self._consumer.highwater(tp) or 0
                await self._out_of_range(tp, "replaced", last + 1, hw)
                batch.pop(tp, None)
        if not self._unchecked:
            self.halt_if_needed()
            return batch
        consumer = self._consumer
        for tp in list(self._unchecked):
            shard = engine._shards.get(tp.partition)
            if shard is None or tp.topic not in shard.meta.offsets:  # revoked since: the
                self._unchecked.discard(tp)  # client has no high watermark for it any more
                continue
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            last = shard.meta.offsets[tp.topic]
            stamp = shard.meta.stamps.get(tp.topic)
            records = batch.get(tp) or []
            if last + 1 > hw:
                self._unchecked.discard(tp)
                await self._out_of_range(tp, "beyond_end", last + 1, hw)
                batch.pop(tp, None)
            elif stamp is None:
                self._unchecked.discard(tp)
            elif records and records[0].offset > last and self._misses[tp] < MISSES_TRUSTED:
                # fetched from a position set before ours (a rebalance positions the
                # consumer at the committed offset first): not the fence's record; read
                # it again. (A record the broker no longer has, e.g. compacted away, is
                # trusted after a few tries.)
                self._misses[tp] += 1
                batch.pop(tp, None)
                consumer.seek(tp, last)
            elif records:
                self._unchecked.discard(tp)
                self._misses.pop(tp, None)
                first = records[0]
                if first.offset < last or (first.offset == last and first.timestamp != stamp):
                    await self._out_of_range(tp, "replaced", last + 1, hw)
                    batch.pop(tp, None)
        self.halt_if_needed()
        return batch

    def _reconnected(self) -> bool:
        """Did a connection to a broker close since the last batch (a broker restart)?"""
        conns = getattr(getattr(self._consumer, "_client", None), "_conns", None) or {}
        now = {id(c) for c in conns.values() if c.connected()}
        lost = bool(self._conns - now)
        self._conns = now
        return lost

    def _reverify(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Read the record at every owned fence again before using anything fetched since."""
        consumer = self._consumer
        assigned = consumer.assignment()
        for p, shard in self.engine._shards.items():
            for topic, last in shard.meta.offsets.items():
                tp = TopicPartition(topic, p)
                if tp not in assigned:
                    continue
                batch.pop(tp, None)
                # records fetched before and still buffered are skipped when fetched again
                consumer.seek(tp, last if topic in shard.meta.stamps else last + 1)
                self._unchecked.add(tp)
        log.info("a broker connection was lost: checking the records at the fences again")

    async def _out_of_range(self, tp: TopicPartition, kind: str, fence_next: int,
                            bound: int) -> None:
        engine = self.engine
        s = engine.settings
        engine.metrics.offset_out_of_range.labels(tp.topic, str(tp.partition), kind).inc()
        if kind == "below_start":
            log.error("%s/%d: the stored fence (next offset %d) is below the partition's start "
                      "%d: retention deleted %d records before they were processed; they are "
                      "lost, consuming from %d", tp.topic, tp.partition, fence_next, bound,
                      bound - fence_next, bound)
            if s.on_offset_reset == "halt":
                self._halt(f"{tp.topic}/{tp.partition}: fence {fence_next} below the partition's "
                           f"start {bound} (records deleted unprocessed)\n"
                           "set PULSE_ON_OFFSET_RESET=reset to go on from the start")
            return
        what = (f"{tp.topic}/{tp.partition}: the stored fence (next offset {fence_next}) is "
                f"beyond the partition's end {bound}: the topic was recreated or the broker "
                "lost data") if kind == "beyond_end" else (
                f"{tp.topic}/{tp.partition}: the record at the stored fence (offset "
                f"{fence_next - 1}) is not the one processed there: the topic was recreated "
                f"(it holds {bound} records now)")
        if s.on_offset_reset == "halt":
            log.error("%s; halting (PULSE_ON_OFFSET_RESET=halt)", what)
            self._halt(f"{what}\nset PULSE_ON_OFFSET_RESET=reset to consume it again from its "
                       "start")
            return
        start = (await self._consumer.beginning_offsets([tp])).get(tp, 0)
        log.error("%s; consuming it again from offset %d (PULSE_ON_OFFSET_RESET=reset)", what,
                  start)
        shard = engine._shards[tp.partition]
        shard.meta.offsets[tp.topic] = start - 1
        shard.fetched.pop(tp.topic, None)
        shard.buf.pop(tp.topic, None)
        shard.holding_since.pop(tp.topic, None)
        self._consumer.seek(tp, start)

    @staticmethod
    def stamps(items: Any) -> dict[str, int]:
        """Kafka timestamp of the last record of each topic in a shard's batch (the record
        the fence will point at)."""
        return {r.topic: r.timestamp for _, _, r, _, _ in items}

    # -- while running ----------------------------------------------------------------------

    async def rolled_back(self, partitions: list[int], ours: dict[int, str]) -> list[int]:
        """Of partitions whose commit was refused, those whose fence went backwards (Redis
        lost what we committed) rather than forwards (another worker took over)."""
        assert self.engine.store is not None
        if not partitions:
            return []
        now = await self.engine.store.fence_gens(partitions)
        return [p for p in partitions if gen_value(now[p]) < gen_value(ours.get(p, ""))]

    async def refused(self, partitions: list[int], ours: dict[int, str]) -> list[int]:
        """Redis refused a commit or an ack on ``partitions``: the fence went backwards on some
        (handled here: halt or rebuild), another worker took the others over (returned)."""
        back = await self.rolled_back(partitions, ours)
        if back:
            await self.state_lost([await self._evidence(p, "the Redis fence went backwards")
                                   for p in back])
        return [p for p in partitions if p not in back]

    async def periodic(self) -> None:
        """Every FENCE_CHECK_S: has any owned fence gone backwards (FLUSHALL, a Redis that
        restarted empty while this partition was idle)?"""
        now = time.monotonic()
        if now - self._last_check < FENCE_CHECK_S:
            return
        self._last_check = now
        engine = self.engine
        assert engine.store is not None
        ours = {p: sh.meta.gen for p, sh in engine._shards.items() if sh.meta.gen}
        if not ours:
            return
        back = await self.rolled_back(sorted(ours), ours)
        if back:
            await self.state_lost([await self._evidence(p, "the Redis fence went backwards")
                                   for p in back])

    async def _evidence(self, p: int, how: str) -> Loss:
        consumer = self._consumer
        committed = {}
        for tp in self._tps(p):
            k = await consumer.committed(tp)
            if k is not None:
                committed[tp.topic] = k
        shard = self.engine._shards.get(p)
        fence_next = {t: o + 1 for t, o in shard.meta.offsets.items()} if shard else {}
        return Loss(p, committed, fence_next, {}, how)

    # -- the policies -----------------------------------------------------------------------

    async def state_lost(self, losses: list[Loss]) -> None:
        engine = self.engine
        s = engine.settings
        action = s.on_state_loss
        for loss in losses:
            engine.metrics.state_losses.labels(str(loss.partition), action).inc()
        what = "; ".join(loss.describe() for loss in losses)
        parts = sorted(loss.partition for loss in losses)
        if action == "halt":
            log.error("STATE LOST in Redis for %s. Nothing more is processed. To rebuild these "
                      "partitions from Kafka: stop the workers and run `pulse rebuild "
                      "--partition N` (or set PULSE_ON_STATE_LOSS=rebuild); see README "
                      "'Recovery'", what)
            for p in parts:
                engine._shards.pop(p, None)
                self._consumer.pause(*self._tps(p))
            self._halt(f"state lost in Redis for partitions {parts} ({what})\n"
                       f"stop the workers and run `pulse rebuild` for partitions {parts} to "
                       "reprocess them from Kafka, or set PULSE_ON_STATE_LOSS=rebuild")
            return
        log.error("STATE LOST in Redis for %s; rebuilding partitions %s from the earliest "
                  "retained offsets (PULSE_ON_STATE_LOSS=rebuild)", what, parts)
        for p in parts:
            await self.rebuild(p)

    async def rebuild(self, p: int) -> None:
        """Forget the partition's shard and consume it again from its log start."""
        from streams.worker.engine import _Shard

        engine = self.engine
        assert engine.store is not None
        consumer = self._consumer
        deleted = await engine.store.reset_shard(p)
        tps = self._tps(p)
        starts = await consumer.beginning_offsets(tps)
        engine._shards[p] = _Shard(ShardMeta(partition=p))
        for tp in tps:
            consumer.seek(tp, starts[tp])
            self._unchecked.discard(tp)
        retention = {tp.topic: o for tp, o in starts.items() if o > 0}
        try:
            await consumer.commit({tp: OffsetAndMetadata(starts[tp], "") for tp in tps})
        except Exception as exc:  # a rebalance in progress: a crash now rebuilds again
            log.warning("partition %d: committing the rebuild's start offsets failed: %s", p,
                        exc)
        log.error("partition %d: %d keys deleted, reprocessing from offsets %s%s", p, deleted,
                  {tp.topic: starts[tp] for tp in tps},
                  "" if not retention else f"; NOT exact: retention deleted the records "
                  f"before {retention}")

    def _halt(self, why: str) -> None:
        if not self.engine.health.halted:
            self.engine.health.halted = why

    def halt_if_needed(self) -> None:
        from streams.errors import Halted

        if self.engine.health.halted:
            raise Halted(self.engine.health.halted)


async def rebuild_offline(settings: Any, partitions: list[int]) -> list[str]:
    """``pulse rebuild``: the group's committed offsets go back to each topic partition's
    start (refused by the broker while workers are in the group: nothing is touched then),
    then the partitions' Redis keys are deleted. The next worker reprocesses them."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka_client import client_kwargs
    from streams.worker.store import Store
    from streams.worker.topics import Topics

    topics = Topics.from_settings(settings)
    consumer = AIOKafkaConsumer(**client_kwargs(settings),
                                group_id=settings.group_id, enable_auto_commit=False,
                                client_id=f"{settings.app_id}-rebuild")
    try:
        await consumer.start()
    except Exception:
        await consumer.stop()
        raise
    store = Store.from_settings(settings)
    lines = []
    try:
        await store.redis.ping()
        tps = [TopicPartition(t, p) for p in partitions for t in topics.inputs]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        try:
            await consumer.commit({tp: OffsetAndMetadata(starts[tp], "") for tp in tps})
        except Exception as exc:
            from streams.errors import PulseError

            raise PulseError(f"cannot reset the offsets of consumer group {settings.group_id}: "
                             f"{exc!r}\nstop every `pulse worker` of the group first") from None
        for p in partitions:
            deleted = await store.reset_shard(p)
            at = {tp.topic: starts[tp] for tp in tps if tp.partition == p}
            late = {t: o for t, o in at.items() if o > 0}
            lines.append(f"partition {p}: {deleted} Redis keys deleted; reprocessed from "
                         f"offsets {at}" + (f" (NOT exact: records before {late} were "
                                            "deleted by retention)" if late else ""))
    finally:
        await consumer.stop()
        await store.close()
    return lines
