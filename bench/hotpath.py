"""CPU cost per event of the engine's hot path, without broker or Redis.

    .venv/bin/python bench/hotpath.py [--customers 10000] [--days 365] [--profile]

Feeds simulated records, as aiokafka ConsumerRecords, through the engine's own batch code
(``_ingest`` -> ``_take`` -> the state cache -> ``ShardTransaction``: decode, event-time
alignment, state decoding, the pure processors, time-driven ticks, state encoding, outputs)
in batches of
``PULSE_BATCH_MAX_RECORDS``; Redis is a dict of the committed encoded states. What it
leaves out (the Kafka fetch, the Redis round trips, the producer) is what
``bench/pipeline.py`` measures end to end. Prints events/s and microseconds per event;
``--profile`` adds the top of a cProfile listing. Numbers, never assertions.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import pstats
import sys
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from processors import wire
from processors.customer import FULL, STATE_ONLY
from processors.rules import DEFAULT_RULES
from streams.settings import Settings
from streams.tools.simulator import SimConfig, Simulator
from streams.worker.engine import Engine, _Shard, tune_gc
from streams.worker.partitioning import owner
from streams.worker.store import ShardMeta
from streams.worker.topics import Topics
from streams.worker.transaction import Context, ShardTransaction

DAY_MS = 86_400_000
START_MS = 1_735_689_600_000  # 2025-01-01 UTC: fixed, so that --digest is repeatable


class _Consumer:
    """Alignment asks for high watermarks: the number of records of each topic partition."""

    def __init__(self, work: list[dict[TopicPartition, list[ConsumerRecord]]]) -> None:
        self.ends: dict[TopicPartition, int] = defaultdict(int)
        for batch in work:
            for tp, recs in batch.items():
                self.ends[tp] += len(recs)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]


def batches(customers: int, days: int, partitions: int, size: int, topics: Topics,
            customer_events: bool = False) -> list[dict[TopicPartition, list[ConsumerRecord]]]:
    start = START_MS
    sim = Simulator(SimConfig(customers=customers, seed=42, start_ms=start,
                              customer_events=customer_events))
    by_tp: dict[TopicPartition, list[ConsumerRecord]] = defaultdict(list)
    for r in sim.events_until(start + days * DAY_MS):
        topic = topics.for_kind(r.kind)
        tp = TopicPartition(topic, owner(r.key.decode(), partitions))
        recs = by_tp[tp]
        recs.append(ConsumerRecord(topic, tp.partition, len(recs), r.at_ms, 0, r.key, r.value,
                                   None, len(r.key), len(r.value), ()))
    # what getmany returns: up to ``size`` records, taken round-robin from the partitions
    out = []
    pos = dict.fromkeys(by_tp, 0)
    while any(pos[tp] < len(v) for tp, v in by_tp.items()):
        batch = {}
        share = max(1, size // len(by_tp))
        for tp, recs in by_tp.items():
            if pos[tp] < len(recs):
                batch[tp] = recs[pos[tp]:pos[tp] + share]
                pos[tp] += share
        out.append(batch)
    return out


class GcTime:
    """Collections and the time they took while it is entered (gc.callbacks)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            g = info["generation"]
            self.count[g] += 1
            self.seconds[g] += time.perf_counter() - self._start

    def __enter__(self) -> GcTime:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self, events: int) -> str:
        total = sum(self.seconds)
        per_gen = ", ".join(f"gen{g} {n} in {s:.2f} s" for g, (n, s)
                            in enumerate(zip(self.count, self.seconds, strict=True)))
        return f"{total:.2f} s ({total / max(1, events) * 1e6:.1f} us an event; {per_gen})"


def run(engine: Engine, work: list[dict[TopicPartition, list[ConsumerRecord]]],
        redis: dict[str, bytes], digest: Any = None) -> tuple[int, int]:
    events = outputs = 0
    ctx = Context.from_settings(engine.settings, engine.rules, engine.transitions)
    cache_limit = engine.settings.state_cache_customers // len(engine._shards)
    for batch in work:
        engine._ingest(batch)
        events += sum(len(v) for v in batch.values())
        now = time.monotonic()
        for p, shard in engine._shards.items():
            items = engine._take(p, shard, now)
            if not items:
                continue
            # ticks up to the batch's newest event time (the engine: that minus the lateness)
            newest = max((it[0] for it in items if it[1] is not None), default=0)
            txn = ShardTransaction(ctx, shard.meta, items, upto=newest,
                                   wall_ms=int(engine.wall_clock() * 1000), mono=now)
            loaded = {cid: redis.get(cid) for cid in txn.customers() if cid not in shard.cache}
            result = txn.run(shard.cache.states_for(
                loaded, (it[1].customer_id for it in items if it[1] is not None)))
            redis.update(result.commit.states)
            shard.adopt(result, "", cache_limit)
            outs = result.outputs
            outputs += len(outs)
            if digest is not None:
                # customers' outputs in a batch in any order (set order), each one's in its own
                for m in sorted(outs, key=lambda m: m.key or b""):
                    digest.update(b"%s|%s|%s|" % (m.topic.encode(), m.key or b"", m.value))
    return events, outputs


def decoded_bytes(blobs: list[bytes]) -> float:
    """Mean bytes Python allocates for one decoded state (tracemalloc)."""
    tracemalloc.start()
    states = [wire.loads(b) for b in blobs]
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return size / max(1, len(states))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--cache", type=int, default=Settings().state_cache_customers,
                    help="PULSE_STATE_CACHE_CUSTOMERS (0: decode every state every batch)")
    ap.add_argument("--scope", choices=("full", "state"), default="full",
                    help="full: state, points, churn, KPIs (processors.customer.FULL); state: "
                         "the customer state by itself (STATE_ONLY)")
    ap.add_argument("--gc-young", type=int, default=Settings().gc_young_threshold,
                    help="PULSE_GC_YOUNG_THRESHOLD (0: Python's default thresholds)")
    ap.add_argument("--customer-events", action="store_true",
                    help="the simulator's customer records too (signups, consent; off: the "
                         "traffic the digests below are known for)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--digest", action="store_true",
                    help="also print a SHA-256 of every output and final state (an "
                         "optimisation must not change it)")
    args = ap.parse_args()
    s = Settings(partitions=args.partitions, clock="event", log_level="WARNING",
                 state_cache_customers=args.cache, gc_young_threshold=args.gc_young)
    topics = Topics.from_settings(s)
    t0 = time.perf_counter()
    work = batches(args.customers, args.days, args.partitions, s.batch_max_records, topics,
                   args.customer_events)
    n = sum(len(v) for b in work for v in b.values())
    print(f"{n:,} simulated records for {args.customers:,} customers over {args.days} days, "
          f"{len(work)} batches (made in {time.perf_counter() - t0:.1f} s)")

    engine = Engine(s, DEFAULT_RULES, transitions=FULL if args.scope == "full" else STATE_ONLY)
    engine.consumer = _Consumer(work)  # type: ignore[assignment]
    engine._shards = {p: _Shard(ShardMeta(p)) for p in range(args.partitions)}
    redis: dict[str, bytes] = {}
    tune_gc(s.gc_young_threshold)  # as Engine.start does
    collector = GcTime()
    prof = cProfile.Profile() if args.profile else None
    t0, c0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    digest = hashlib.sha256() if args.digest else None
    with collector:
        events, outputs = run(engine, work, redis, digest)
    if prof:
        prof.disable()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"hot path without I/O ({args.scope}): {events / dt:,.0f} events/s "
          f"({dt / events * 1e6:.1f} us an event; CPU {cpu / events * 1e6:.1f} us), "
          f"{outputs:,} outputs, {len(redis):,} customers")
    print(f"garbage collector (thresholds {gc.get_threshold()}): {collector.summary(events)}")
    print(f"decoded state in memory (what PULSE_STATE_CACHE_CUSTOMERS holds): "
          f"{decoded_bytes(list(redis.values())):,.0f} B a customer on average")
    if digest is not None:
        print(f"digest of the outputs: {digest.copy().hexdigest()}")
        for cid in sorted(redis):
            digest.update(b"%s|%s|" % (cid.encode(), redis[cid]))
        print(f"digest of outputs and states: {digest.hexdigest()}")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
