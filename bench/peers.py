"""Our worker against two peers, on the same events and the same broker, in one run.

    make bench-peers      # or: .venv-peers/bin/python bench/peers.py [--customers 10000]

Starts its own Tansu broker and redis-server (loopback), produces bench/pipeline.py's
simulated events once to the four input topics, then measures one after another, each in
its own process and consumer group, reading the input topics from the start:

  (1) ours: the whole product, what `pulse worker` runs (bench/pipeline.py's (b), FULL)
  (2) Quix Streams 3.x: the four topics concatenated (or only the purchases, with
      --quix-topics purchases), one state per customer in RocksDB: events seen, net spend,
      first and last purchase; without, then (2') with, its changelog topic
  (3) Faust (faust-streaming): a no-op agent iterating the four topics (raw bytes)

Each is measured as events/s over two windows, neither of which counts the group join:
from the first record processed to the last, and from 20% to 90% of them (as
bench/pipeline.py's --workers; no ramp-up, no tail). Prints the rates and ours / Quix,
ours / Faust no-op for both. Needs quixstreams (bench/peers-requirements.txt), which the
product does not depend on. Numbers, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline  # bench/pipeline.py: the simulated events, their producer, our measurement

from schemas.events import PURCHASE
from streams.settings import Settings
from streams.tools.devstack import free_port, running_stack
from streams.worker.admin import create_topics
from streams.worker.topics import Topics


@dataclass
class Rates:
    """Counts records as they are processed and gives events/s over two windows: from the
    first record to the ``total``-th (the records after the first, over the time between
    them, as pipeline.rate_between), and from 20% to 90% of ``total`` (as pipeline's
    scaled_out: no ramp-up, no tail)."""

    total: int
    seen: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    at_20: float = 0.0
    at_90: float = 0.0

    def tick(self, now: float) -> bool:
        """Count one record processed at ``now``; true when it is the ``total``-th."""
        self.seen += 1
        if self.seen == 1:
            self.first_at = now
        if self.seen == self.n_20:
            self.at_20 = now
        if self.seen == self.n_90:
            self.at_90 = now
        self.last_at = now
        return self.seen == self.total

    @property
    def n_20(self) -> int:
        return max(1, self.total // 5)

    @property
    def n_90(self) -> int:
        return max(1, self.total * 9 // 10)

    @property
    def first_to_last(self) -> float | None:
        span = self.last_at - self.first_at
        return (self.seen - 1) / span if span > 0 else None

    @property
    def window(self) -> float | None:
        span = self.at_90 - self.at_20
        return (self.n_90 - self.n_20) / span if self.seen >= self.n_90 and span > 0 else None


@dataclass
class Result:
    name: str
    first_to_last: float | None
    window: float | None  # 20% to 90%
    note: str


# --- (1) ours ---------------------------------------------------------------------------

def _ours(s: Settings, n: int, conn: Connection) -> None:
    conn.send((asyncio.run(pipeline.full_pipeline(s, n)), None))


# --- (2) Quix Streams -------------------------------------------------------------------

def keep_customer(value: dict[str, Any], state: Any) -> None:
    """The Quix job's per-customer state: [events, net spend in minor units (refunds
    subtracted), first purchase, last purchase] (times as the RFC 3339 strings on the wire,
    all UTC ``Z`` from the simulator, so that they compare as strings)."""
    s = state.get("s") or [0, 0, None, None]
    s[0] += 1
    amount = value.get("amount_minor")
    if amount is None:  # only purchases and refunds carry it
        pass
    elif value.get("kind") == "refund":
        s[1] -= amount
    else:
        s[1] += amount
        at = value["occurred_at"]
        if s[2] is None or at < s[2]:
            s[2] = at
        if s[3] is None or at > s[3]:
            s[3] = at
    state.set("s", s)


def _quix(bootstrap: str, topics: list[str], n: int, group: str, state_dir: str,
          changelog: bool, conn: Connection) -> None:
    # a dependency of its schema-registry client warns on import, whatever the filters say
    with contextlib.redirect_stderr(io.StringIO()):
        from quixstreams import Application

    clock = Rates(n)
    app: Any = None

    def processed(topic: str, partition: int, offset: int) -> None:
        if clock.tick(time.perf_counter()):
            app.stop()

    app = Application(broker_address=bootstrap, consumer_group=group,
                      auto_offset_reset="earliest", state_dir=state_dir,
                      use_changelog_topics=changelog, loglevel="WARNING",
                      on_message_processed=processed,
                      # the join as fast as Tansu allows (it holds a JoinGroup for half the
                      # session timeout); librdkafka's default session timeout is 45 s
                      consumer_extra_config={"session.timeout.ms": 6000,
                                             "heartbeat.interval.ms": 500})
    sources = [app.topic(t, key_deserializer="str", value_deserializer="json") for t in topics]
    for source in sources:
        # Tansu's DescribeConfigs returns only the configs a topic was created with (Kafka
        # returns every effective one), and Quix reads retention.ms of the input topics to
        # derive its changelog topic's: without it, KeyError 'retention.ms'. Kafka's default.
        source.broker_config.extra_config.setdefault("retention.ms", "604800000")
    sdfs = [app.dataframe(source) for source in sources]
    sdf = sdfs[0]
    for other in sdfs[1:]:
        sdf = sdf.concat(other)
    sdf.update(keep_customer, stateful=True)
    app.run()
    conn.send((clock.first_to_last, clock.window))


# --- (3) Faust no-op --------------------------------------------------------------------

def _faust(bootstrap: str, topics: list[str], n: int, group: str, datadir: str,
           conn: Connection) -> None:
    import faust

    clock = Rates(n)
    # the settings TANSU.md found to work with Tansu's slow rebalances
    app = faust.App(group, broker=f"kafka://{bootstrap}", datadir=datadir,
                    web_enabled=False, web_port=free_port(),
                    consumer_auto_offset_reset="earliest", broker_session_timeout=6.0,
                    broker_heartbeat_interval=0.5, broker_rebalance_timeout=2.0)
    source = app.topic(*topics, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def noop(stream: Any) -> None:
        async for _ in stream:
            if clock.tick(time.perf_counter()):
                conn.send((clock.first_to_last, clock.window))

    quiet = open(os.devnull, "w")  # noqa: SIM115 - no spinner on our output; open until exit
    faust.Worker(app, loglevel="WARNING", quiet=True, stdout=quiet).execute_from_commandline()


# --- the run ----------------------------------------------------------------------------

async def measure(name: str, target: Callable[..., None], args: tuple[Any, ...],
                  timeout: float, watch: Coroutine[Any, Any, float] | None = None) -> Result:
    """Run ``target(*args, conn)`` in a fresh process until it sends its rates (first to
    last, 20% to 90%); ``watch``, run alongside in this process, gives the 20%-90% rate of
    a target that does not measure it itself."""
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, there), daemon=True)
    t0 = time.monotonic()
    proc.start()
    watcher = asyncio.create_task(watch) if watch is not None else None
    try:
        while time.monotonic() - t0 < timeout:
            if here.poll():
                first_to_last, window = here.recv()
                if watcher is not None:
                    window = await asyncio.wait_for(watcher, 5)
                note = f"{time.monotonic() - t0:.0f} s in all, group join included"
                return Result(name, first_to_last, window, note)
            if not proc.is_alive():
                return Result(name, None, None, f"exited with code {proc.exitcode} first")
            await asyncio.sleep(0.2)
        return Result(name, None, None, f"did not finish within {timeout:.0f} s")
    finally:
        if watcher is not None:
            watcher.cancel()
        proc.terminate()  # Faust and Quix stop on SIGTERM
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def show(r: Result) -> None:
    def rate(x: float | None) -> str:
        return f"{x:>8,.0f}" if x else "     n/a"

    print(f"{r.name:<40} {rate(r.first_to_last)} events/s first to last, "
          f"{rate(r.window)} from 20% to 90%  ({r.note})", flush=True)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_stack(workdir=Path(tmp)) as stack:
        s = Settings(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url,
                     partitions=args.partitions, clock="event", log_level="WARNING",
                     topic_prefix="peers-", group_id="peers-ours")
        await create_topics(s)
        inputs = list(Topics.from_settings(s).inputs)
        start_ms = int(time.time() * 1000) - args.days * pipeline.DAY_MS
        recs = pipeline.records(args.customers, args.days, start_ms)
        dt = await pipeline.produce_all(s, recs)
        n = len(recs)
        print(f"produced {n:,} simulated events ({args.customers:,} customers, {args.days} "
              f"days) to {len(inputs)} topics x {args.partitions} partitions in {dt:.1f} s")

        ours = await measure("(1) ours, whole product (pulse worker)", _ours, (s, n),
                             args.timeout, pipeline.rate_between(s, 0.2 * n, 0.9 * n))
        show(ours)
        quix_inputs, quix_n = inputs, n
        if args.quix_topics == "purchases":
            quix_inputs = [Topics.from_settings(s).purchases]
            quix_n = sum(1 for kind, _, _ in recs if kind == PURCHASE)
        quixes = []
        for changelog in (False, True):
            name = ("(2') Quix, the same + changelog topic" if changelog
                    else "(2) Quix Streams, state in RocksDB")
            group = "peers-quix-changelog" if changelog else "peers-quix"
            quixes.append(await measure(name, _quix, (stack.kafka_bootstrap, quix_inputs,
                                                      quix_n, group, f"{tmp}/{group}",
                                                      changelog), args.timeout))
            show(quixes[-1])
        faust_ = await measure("(3) Faust agent, no-op", _faust,
                               (stack.kafka_bootstrap, inputs, n, "peers-faust",
                                f"{tmp}/faust"), args.timeout)
        show(faust_)
        for label, pick in (("first to last", lambda r: r.first_to_last),
                            ("20% to 90%", lambda r: r.window)):
            print(f"{label + ':':<15} ours / Quix {ratio(pick(ours), pick(quixes[0]))} "
                  f"(with changelog {ratio(pick(ours), pick(quixes[1]))}), "
                  f"ours / Faust no-op {ratio(pick(ours), pick(faust_))}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds each of the three may take, group join included")
    ap.add_argument("--quix-topics", choices=("all", "purchases"), default="all",
                    help="Quix reads the four input topics concatenated (default) or only "
                         "the purchases (no time alignment between topics)")
    asyncio.run(main(ap.parse_args()))
