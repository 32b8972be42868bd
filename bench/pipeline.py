"""Throughput, latency and state size of the pipeline, measured in one run on one broker.

    .venv/bin/python bench/pipeline.py [--customers 20000] [--days 365] [--rate 2000]

Prints:
  (a) the raw ceiling: aiokafka getmany + our decoder, nothing else
  (b) the pipeline: the engine (decode, align, load, apply, commit, send) in one process,
      twice: the state engine by itself (the customer state: purchases, windows, tickets,
      surveys; processors.customer.STATE_ONLY) and the whole product (that state plus
      points, churn and KPIs; processors.customer.FULL)
  (c) b / a, for both
  (b') with --workers N: N engine processes in one group, together
  (b'') with --processes 1,2: `pulse worker --processes N` itself (supervisor, Faust shell,
      web server, N engine processes) for each N, one after another
  (d) p50 / p99 latency from produce to state committed, at a fixed produce rate
  (e) Redis bytes per customer (MEMORY USAGE) and the encoded state size

Starts its own Tansu broker and redis-server on free ports. Numbers, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.customer import FULL, STATE_ONLY, Transitions
from processors.rules import DEFAULT_RULES
from schemas.codec import decode
from streams.kafka_client import client_kwargs
from streams.redis_client import connect as redis_connect
from streams.settings import Settings, to_env
from streams.tools.devstack import free_port, running_stack
from streams.tools.simulator import SimConfig, Simulator
from streams.worker.admin import create_topics
from streams.worker.engine import Engine
from streams.worker.keys import Keys
from streams.worker.producer import BatchProducer
from streams.worker.topics import Topics
from streams.worker.transaction import Item

DAY_MS = 86_400_000


class TimedEngine(Engine):
    """The engine, recording produce-to-commit latency of every record."""

    latencies: list[float]

    def _observe_latency(self, works: dict[int, list[Item]]) -> None:
        now_ms = time.time() * 1000
        lat = self.__dict__.setdefault("latencies", [])
        for items in works.values():
            lat.extend((now_ms - r.timestamp) / 1000 for _, _, r, _, _ in items)


def records(customers: int, days: int, start_ms: int) -> list[tuple[str, bytes, bytes]]:
    sim = Simulator(SimConfig(customers=customers, seed=42, start_ms=start_ms))
    return [(r.kind, r.key, r.value) for r in sim.events_until(start_ms + days * DAY_MS)]


async def produce_all(s: Settings, recs: list[tuple[str, bytes, bytes]]) -> float:
    topics = Topics.from_settings(s)
    t0 = time.perf_counter()
    async with BatchProducer(s, s.partitions) as out:
        for kind, key, value in recs:
            await out.send(topics.for_kind(kind), key, value)
    return time.perf_counter() - t0


async def raw_ceiling(s: Settings, n: int) -> float:
    topics = Topics.from_settings(s)
    consumer = AIOKafkaConsumer(**client_kwargs(s), enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=5000,
                                max_partition_fetch_bytes=4 * 1024 * 1024,
                                fetch_max_bytes=32 * 1024 * 1024)
    await consumer.start()
    tps = [TopicPartition(t, p) for t in topics.inputs for p in range(s.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    kinds = topics.inputs
    seen = 0
    t0 = time.perf_counter()
    while seen < n:
        batch = await consumer.getmany(timeout_ms=200, max_records=5000)
        for tp, recs in batch.items():
            kind = kinds[tp.topic]
            for r in recs:
                decode(kind, r.value)
            seen += len(recs)
    dt = time.perf_counter() - t0
    await consumer.stop()
    return seen / dt


async def applied(s: Settings, redis: aioredis.Redis) -> int:
    keys = Keys(s.redis_prefix)
    total = 0
    for p in range(s.partitions):
        for k, v in (await redis.hgetall(keys.fence(p))).items():
            if k.startswith(b"o:"):
                total += int(v) + 1
    return total


async def rate_between(s: Settings, start: float, end: float) -> float:
    """Events/s applied while the applied count went from ``start`` to ``end`` (both > 0,
    so that the group join before the first batch is not counted). The engine of (b) runs
    on this event loop: a batch holds it, on a busy machine for seconds, so the reads wait
    longer than the client's default timeout."""
    redis = redis_connect(s, socket_timeout=120)
    try:
        while (done := await applied(s, redis)) < start:
            await asyncio.sleep(0.01)
        t0, first = time.perf_counter(), done
        while (done := await applied(s, redis)) < end:
            await asyncio.sleep(0.05)
        return (done - first) / (time.perf_counter() - t0)
    finally:
        await redis.aclose()


async def full_pipeline(s: Settings, n: int, transitions: Transitions = FULL) -> float:
    engine = TimedEngine(s, DEFAULT_RULES, transitions=transitions)
    await engine.start()
    task = asyncio.create_task(engine.run())
    rate = await rate_between(s, 1, n)  # from the first batch applied to the last
    engine.request_stop()
    await task
    await engine.stop()
    return rate


def _engine_process(settings: Settings) -> None:
    """One worker process of (b'): an engine that runs until it is terminated."""

    async def run() -> None:
        engine = Engine(settings, DEFAULT_RULES)
        await engine.start()
        await engine.run()

    asyncio.run(run())


async def scaled_out(s: Settings, n: int, workers: int) -> float:
    """Events/s of ``workers`` engine processes in one consumer group, measured from 20% to
    90% of the input applied (so that the group joins are not counted). Needs an input of
    many batches per worker (10,000 customers or more): on a small one the window holds a
    few commits and the rate it gives is noise."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_engine_process, args=(s,), daemon=True)
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    try:
        return await rate_between(s, 0.2 * n, 0.9 * n)
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(10)


async def pulse_worker(s: Settings, n: int, processes: int, workdir: Path) -> float:
    """Events/s of ``pulse worker --processes N`` (the product as deployed), from 20% to 90%
    of the input applied (the start, Faust's boot and the group joins are not counted)."""
    env = {**os.environ, **to_env(s.with_(web_port=free_port()))}
    with open(workdir / f"worker-{processes}.log", "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "streams.tools.cli", "worker",
                                 "--processes", str(processes)], env=env, stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    try:
        return await asyncio.wait_for(rate_between(s, 0.2 * n, 0.9 * n), 600)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def latency(s: Settings, rate: float, seconds: float, customers: int) -> list[float]:
    topics = Topics.from_settings(s)
    sim = Simulator(SimConfig(customers=customers, seed=7, start_ms=int(time.time() * 1000)
                              - 30 * DAY_MS))
    engine = TimedEngine(s, DEFAULT_RULES)
    await engine.start()
    task = asyncio.create_task(engine.run())
    while not engine.owned_partitions:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    engine.__dict__["latencies"] = []
    tick = 0.02
    per_tick = max(1, int(rate * tick))
    async with BatchProducer(s, s.partitions) as out:
        t0 = time.perf_counter()
        k = 0
        while time.perf_counter() - t0 < seconds:
            for r in sim.sample_events(per_tick, int(time.time() * 1000)):
                await out.send(topics.for_kind(r.kind), r.key, r.value)
            await out.flush()
            k += 1
            delay = t0 + k * tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
    await asyncio.sleep(2.0)
    engine.request_stop()
    await task
    await engine.stop()
    return engine.__dict__["latencies"]


async def state_size(s: Settings) -> tuple[float, float, float, int]:
    redis = redis_connect(s)
    keys = Keys(s.redis_prefix)
    mem, enc = [], []
    async for key in redis.scan_iter(match=keys.customer_pattern(), count=2000):
        mem.append(await redis.memory_usage(key, samples=0))
        enc.append(await redis.strlen(key))
    await redis.aclose()
    return (statistics.median(mem), statistics.mean(mem), statistics.median(enc), max(enc))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_stack(
            workdir=Path(tmp), persist=args.redis_aof) as stack:
        base = Settings(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url,
                        partitions=args.partitions, clock="event", log_level="WARNING")
        s = base.with_(topic_prefix="bench-", group_id="bench-throughput")
        await create_topics(s)
        start_ms = int(time.time() * 1000) - args.days * DAY_MS
        t0 = time.perf_counter()
        recs = records(args.customers, args.days, start_ms)
        print(f"generated {len(recs):,} simulated events for {args.customers:,} customers "
              f"over {args.days} days in {time.perf_counter() - t0:.1f} s")
        dt = await produce_all(s, recs)
        print(f"produced them in {dt:.1f} s ({len(recs) / dt:,.0f} events/s)")

        a = await raw_ceiling(s, len(recs))
        print(f"(a) raw ceiling, aiokafka getmany + decode:   {a:>10,.0f} events/s")
        # the same input twice, each run into its own group and Redis prefix
        bs = await full_pipeline(s.with_(group_id="bench-state", redis_prefix="bench-state"),
                                 len(recs), STATE_ONLY)
        print(f"(b) state engine, one worker process:         {bs:>10,.0f} events/s  "
              f"(c) {bs / a:.2f}")
        b = await full_pipeline(s, len(recs))
        print(f"(b) whole product (+ points, churn, KPIs):    {b:>10,.0f} events/s  "
              f"(c) {b / a:.2f}")
        if args.workers > 1:  # the same input again, into its own Redis prefix
            sw = s.with_(group_id="bench-scaled", redis_prefix="bench-scaled")
            bw = await scaled_out(sw, len(recs), args.workers)
            print(f"(b') {args.workers} worker processes together:      {bw:>10,.0f} events/s "
                  f"({os.cpu_count()} cores, shared with the broker and Redis)")
        for n in args.processes:  # the same input again, each into its own group and prefix
            sp = s.with_(group_id=f"bench-procs-{n}", redis_prefix=f"bench-procs-{n}")
            bp = await pulse_worker(sp, len(recs), n, Path(tmp))
            print(f"(b'') pulse worker --processes {n}:          {bp:>10,.0f} events/s "
                  f"({os.cpu_count()} cores, shared with the broker and Redis)")
        med, mean, enc_med, enc_max = await state_size(s)
        print(f"(e) Redis MEMORY USAGE per customer: median {med:.0f} B, mean {mean:.0f} B; "
              f"encoded state median {enc_med:.0f} B, max {enc_max} B")

        s2 = base.with_(topic_prefix="bench-lat-", group_id="bench-latency")
        await create_topics(s2)
        lat = await latency(s2, args.rate, args.seconds, args.customers)
        print(f"(d) latency produce -> committed at {args.rate:,.0f} events/s for "
              f"{args.seconds:.0f} s ({len(lat):,} events): p50 {pct(lat, 0.5) * 1000:.1f} ms, "
              f"p99 {pct(lat, 0.99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--redis-aof", action="store_true",
                    help="Redis with an append-only file (fsync every second), as the dev stack "
                         "and the tests run it; default: no persistence, as measured before")
    # (d) at a rate one worker sustains here; above its throughput, latency is queueing
    ap.add_argument("--rate", type=float, default=2_000)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--workers", type=int, default=1,
                    help="also run (b) with this many worker processes in one group")
    ap.add_argument("--processes", type=lambda v: [int(x) for x in v.split(",")], default=[],
                    help="also run `pulse worker --processes N` for each N of this "
                         "comma-separated list (e.g. 1,2)")
    asyncio.run(main(ap.parse_args()))
