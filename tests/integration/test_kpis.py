"""KPI counters on the real broker and Redis: the hand-checked history through two engines
in one consumer group gives the hand-worked KPIs from the two collectors together (no
partition counted twice), one engine alone gives the same, and so does a fresh engine after
both stopped (the counters live in Redis)."""

from __future__ import annotations

import contextlib

import redis.asyncio as aioredis

from processors import kpi
from processors.rules import DEFAULT_RULES
from processors.timeutil import day_of
from schemas.codec import encode
from schemas.events import Event
from streams.settings import Settings
from streams.worker.engine import Engine
from streams.worker.keys import Keys
from streams.worker.kpis import WINDOW_LUA, KpiCollector, _window_reply
from streams.worker.topics import Topics
from tests.integration.helpers import counter_value, produce, running_engine, wait_until
from tests.kpi_history import EXPECTED, at, history


def second_engine(settings: Settings) -> contextlib.AbstractAsyncContextManager[Engine]:
    return running_engine(settings, wait_assignment=False)


def records(settings: Settings, events: list[Event]) -> list[tuple[str, bytes, bytes]]:
    topics = Topics.from_settings(settings)
    return [(topics.for_kind(e.event_kind), e.customer_id.encode(), encode(e)) for e in events]


async def snapshot(*engines: Engine) -> tuple[dict[str, float | None], list[set[int]]]:
    """Refresh each engine's collector; combine what they export, one value per partition
    (as the PromQL does); the KPIs and which partitions each collector exported."""
    parts: dict[int, kpi.Counts] = {}
    owned = []
    for engine in engines:
        collector = KpiCollector(engine, DEFAULT_RULES, engine.metrics)
        await collector.refresh()
        assert collector.failures == 0
        assert collector.as_of_ms == at(0, 4)
        owned.append(set(collector.parts))
        parts.update(collector.parts)
    return kpi.report(kpi.combine(parts.values()), DEFAULT_RULES), owned


def assert_hand_worked(report: dict[str, float | None]) -> None:
    for name, value in EXPECTED:
        got = report[name]
        assert got is not None and abs(got - value) <= 1e-9 * max(1.0, abs(value)), \
            (name, got, value)


async def test_two_workers_then_one_then_a_restart_give_the_hand_worked_kpis(
        settings: Settings) -> None:
    events = history()
    n_valid = len(events) - 1  # one survey is a producer retry of another
    async with running_engine(settings) as a:
        async with second_engine(settings) as b:
            await wait_until(lambda: len(a.owned_partitions) + len(b.owned_partitions) == 4
                             and bool(a.owned_partitions) and bool(b.owned_partitions),
                             timeout=90, what="both engines own partitions")
            await produce(settings, records(settings, events))

            def processed() -> float:
                return sum(counter_value(e.metrics, "pulse_events_total", outcome="processed")
                           for e in (a, b))
            await wait_until(lambda: processed() == n_valid, timeout=60,
                             what="all events applied")
            both, owned = await snapshot(a, b)
            assert owned[0] and owned[1] and not owned[0] & owned[1]
            assert owned[0] | owned[1] == set(range(settings.partitions))
            assert_hand_worked(both)
            # each collector alone sees only its partitions: neither equals the whole
            alone = [(await snapshot(e))[0] for e in (a, b)]
            assert all(r["customers"] != 18 for r in alone)
            assert sum(r["customers"] or 0 for r in alone) == 18
        # b left: a takes its partitions over and alone shows the same KPIs
        await wait_until(lambda: len(a.owned_partitions) == 4, timeout=90,
                         what="the remaining engine owns every partition")
        one, _ = await snapshot(a)
        assert one == both
    # both stopped; a fresh engine reads the same counters from Redis
    async with second_engine(settings) as c:
        await wait_until(lambda: len(c.owned_partitions) == 4, timeout=90,
                         what="the restarted engine owns every partition")
        again, _ = await snapshot(c)
    assert again == both


async def test_the_redis_window_equals_the_pure_one_and_drops_stale_days(
        settings: Settings) -> None:
    """The Lua twin of ``kpi.window`` sums the same, for the as-of day and the days after
    it, and deletes the day counters no window reads any more."""
    events = history()
    async with running_engine(settings) as engine:
        await produce(settings, records(settings, events))
        await wait_until(lambda: counter_value(engine.metrics, "pulse_events_total",
                                               outcome="processed") == len(events) - 1,
                         timeout=60, what="all events applied")
        keys = Keys(settings.redis_prefix)
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            script = client.register_script(WINDOW_LUA)
            w = DEFAULT_RULES.kpi.window_days
            for p in engine.owned_partitions:
                day_key = keys.kpi_prefix(p) + kpi.DAYS
                fields = await client.hgetall(day_key)
                for shift in (0, 1, 7, w - 1, w, 2 * w - 1):
                    as_of = at(shift, 4)
                    pure, stale = kpi.window(fields, as_of, DEFAULT_RULES)
                    copy = f"{day_key}:copy"  # the same hash slot: {pN} is in day_key
                    await client.delete(copy)
                    await client.hset(copy, mapping=fields)
                    reply = await script(keys=[copy], args=[day_of(as_of), w])
                    counts, deleted = _window_reply(reply)
                    assert deleted == len(stale), (p, shift)
                    want = {k: v for k, v in pure.items() if v or len(k) == 1}
                    assert {k: v for k, v in counts.items() if v or len(k) == 1} == want
                    assert sorted(await client.hkeys(copy)) == sorted(
                        f for f in fields if f not in set(stale))
                    await client.delete(copy)

            p = engine.owned_partitions[0]
            day_key = keys.kpi_prefix(p) + kpi.DAYS
            old_day = day_of(at(0)) - 2 * w
            await client.hset(day_key, mapping={f"{old_day}:ord:web": 5,
                                                f"{old_day + 1}:ord:web": 7})
            collector = KpiCollector(engine, DEFAULT_RULES)
            await collector.refresh()
            assert collector.deleted >= 1  # ours, and the history's own day -70 counters
            assert not await client.hexists(day_key, f"{old_day}:ord:web")
            assert await client.hget(day_key, f"{old_day + 1}:ord:web") == b"7"
            # nothing the engine wrote is older than the two windows the reader needs
            fields = [f.decode() for f in await client.hkeys(day_key)]
            assert all(int(f.split(":")[0]) > old_day for f in fields)
        finally:
            await client.aclose()
