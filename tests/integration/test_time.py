"""Time through the real broker and Redis (README "Time"): a mis-clocked till harms no one,
a store's late upload is applied in full, and history loaded into a running system plays out
exactly as it does in an empty one.

Each run has its own topics, consumer group and Redis prefix, and the engine a fixed wall
clock, so that two runs of the same input can be compared record for record.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from processors.rules import DEFAULT_RULES
from schemas.codec import format_time, parse_time
from schemas.events import Event, Purchase, SupportTicket, Survey
from streams.settings import Settings
from streams.worker.keys import Keys
from streams.worker.metrics import Metrics
from streams.worker.topics import Topics
from streams.worker.views import load_rows
from tests.integration.helpers import (
    as_records,
    counter_value,
    header,
    produce,
    read_topic,
    running_engine,
    stored_states,
    wait_until,
)
from tests.integration.history import T0, comparable, history, one_pass
from tests.integration.test_replay_export import pulse

H = 3_600_000
D = 24 * H
WALL = T0 + 61 * D  # the engines' fixed wall clock: 2026-03-03T00:00Z
_runs = itertools.count()


def run_settings(settings: Settings, **changes: Any) -> Settings:
    """A separate system on the same broker and Redis: own topics, group and key prefix."""
    n = next(_runs)
    return settings.with_(topic_prefix=f"{settings.topic_prefix}r{n}-",
                          group_id=f"{settings.group_id}-r{n}", redis_prefix=f"t{n}",
                          clock="live", backfill_after_s=Settings.backfill_after_s, **changes)


def handled(metrics: Metrics) -> float:
    return sum(counter_value(metrics, "pulse_events_total", outcome=o)
               for o in ("processed", "duplicate", "deadletter"))


async def nothing_due(settings: Settings) -> bool:
    """Every time-driven change due by the wall clock has run (the scanner caught up)."""
    client = aioredis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    try:
        counts = [await client.zcount(keys.due(p), "-inf", WALL)
                  for p in range(settings.partitions)]
    finally:
        await client.aclose()
    return not any(counts)


async def outputs(settings: Settings, topic: str) -> list[Any]:
    return await read_topic(settings, topic, expect=0, settle=1.5)


def by_customer(recs: Iterable[Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        doc = orjson.loads(r.value)
        out.setdefault(doc["customer_id"], []).append(doc)
    return out


# What an output says whatever order the input topics met in (README "Time", determinism):
# the balance after a ledger entry depends on it (a survey bonus before or after a purchase
# of the same hour), and so does the path of churn levels, so alerts are left out too.
def ledger_facts(recs: Iterable[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {c: sorted((e["entry_id"], e["points"], e["rule"], e["reason"], e["occurred_at"],
                       e.get("backfill", False)) for e in v)
            for c, v in by_customer(recs).items()}


async def run_live(settings: Settings, events: list[Event]) -> Metrics:
    metrics = Metrics.create()
    async with running_engine(settings, metrics=metrics, wall_clock=lambda: WALL / 1000):
        await produce(settings, as_records(settings, events))
        await wait_until(lambda: handled(metrics) >= len(events), timeout=90,
                         what="every event handled")
        await wait_until(lambda: nothing_due(settings), timeout=30, what="the scanner")
    return metrics


async def test_a_till_clock_in_2099_or_a_month_ahead_harms_no_one(settings) -> None:
    events = history(2000, 150, span_ms=60 * D)
    assert max(e.occurred_at for e in events) < WALL
    ids = sorted({e.customer_id for e in events})
    x, y, z = ids[:3]
    rogue: list[Event] = [
        Purchase("rogue-2099", x, parse_time("2099-01-01T00:00:00Z"), "pos", "o-2099", "store",
                 "purchase", 99_999, "EUR"),
        Survey("rogue-30d", y, WALL + 30 * D, "survey-tool", "sv-30d", "nps", 0, "checkout"),
    ]
    skewed = Purchase("skewed-6h", z, WALL + 6 * H, "pos", "o-6h", "store", "purchase", 5000,
                      "EUR")  # within the skew: its customer takes it, nobody else notices
    n = len(events)
    # (the skewed one comes last: a customer's own mis-dated event does move its own clock)
    poisoned = [*events[: n // 3], rogue[0], *events[n // 3: 2 * n // 3], rogue[1],
                *events[2 * n // 3:], skewed]
    clean_s, bad_s = run_settings(settings), run_settings(settings)
    await run_live(clean_s, events)
    bad_m = await run_live(bad_s, poisoned)

    assert counter_value(bad_m, "pulse_deadletter_total", reason="from_future") == 2
    dead = await read_topic(bad_s, Topics.from_settings(bad_s).deadletter, expect=2)
    assert sorted(header(r, "pulse.dlq.reason") or "" for r in dead) == ["from_future"] * 2
    msgs = " ".join(header(r, "pulse.dlq.message") or "" for r in dead)
    assert "2099-01-01T00:00:00.000Z" in msgs and format_time(WALL) in msgs
    assert "PULSE_MAX_FUTURE_SKEW_S" in msgs

    clean, bad = await stored_states(clean_s), await stored_states(bad_s)
    assert set(clean) == set(bad)
    others = [c for c in clean if c != z]
    differ = [c for c in others
              if comparable(clean[c], as_of=WALL) != comparable(bad[c], as_of=WALL)]
    assert not differ, f"{len(differ)} customers harmed, e.g. {differ[0]}"
    assert bad[z].purchase_count == clean[z].purchase_count + 1
    want = ledger_facts(await outputs(clean_s, Topics.from_settings(clean_s).points))
    got = ledger_facts(await outputs(bad_s, Topics.from_settings(bad_s).points))
    want.pop(z, None)
    got.pop(z, None)
    assert got == want
    assert sum(len(v) for v in want.values()) > 1000


async def test_a_store_upload_a_week_late_is_applied_in_full(settings) -> None:
    # a member who last bought a year and four days ago: the live clock expires the points
    # three days ago; the store's upload holds a purchase of five days ago
    dormant = Purchase("dormant-1", "C-DORMANT", WALL - 369 * D, "web", "o-d1", "web",
                       "purchase", 12_300, "EUR")
    live = [dormant, *history(2000, 150, span_ms=60 * D)]  # until WALL - 1 day
    customers = sorted({e.customer_id for e in live})[:60]
    upload = [Purchase(f"late-{i}", cid, WALL - 7 * D + i * 90 * 60_000, "pos", f"o-late-{i}",
                       "store", "purchase", 2_000 + 37 * i, "EUR", (), "S-OFFLINE")
              for i, cid in enumerate(customers)]
    assert max(e.occurred_at for e in upload) < WALL - 2 * D
    assert "C-DORMANT" in customers
    s = run_settings(settings)
    metrics = Metrics.create()
    async with running_engine(s, metrics=metrics, wall_clock=lambda: WALL / 1000):
        await produce(s, as_records(s, live))
        await wait_until(lambda: handled(metrics) >= len(live), timeout=90, what="live traffic")
        await wait_until(lambda: nothing_due(s), timeout=30, what="the scanner")
        await produce(s, as_records(s, upload))  # the store comes back online
        await wait_until(lambda: handled(metrics) >= len(live) + len(upload), timeout=60,
                         what="the upload")
        ledger = by_customer(await outputs(s, Topics.from_settings(s).points))
    assert counter_value(metrics, "pulse_deadletter_total", reason="too_late") == 0
    stored = await stored_states(s)
    expected = one_pass(sorted([*live, *upload], key=lambda e: e.occurred_at))
    for cid in customers:  # counts, spend and the day windows as if it had come in time
        assert comparable(stored[cid], as_of=WALL, loyalty=False) == comparable(
            expected[cid], as_of=WALL, loyalty=False), cid
    for ev in upload:
        (earn,) = [e for e in ledger[ev.customer_id] if e["entry_id"] == f"{ev.event_id}:earn"]
        assert "arrived late: purchase of" in earn["reason"], earn
        assert earn["backfill"] is True  # days old: a notifier skips it by default
    for cid, entries in ledger.items():  # balance = sum of entries, whatever arrived when
        assert stored[cid].loyalty.balance == sum(e["points"] for e in entries), cid
    # the expiry the live clock wrote is undone by the purchase that predates it
    rules = [e["rule"] for e in ledger["C-DORMANT"]]
    assert rules == ["earn", "expiry_notice", "expiry", "expiry_reversed", "earn"], rules
    reversal = ledger["C-DORMANT"][3]
    assert reversal["points"] == 123 and reversal["reason"].startswith("expiry of ")
    assert "reversed: purchase of " in reversal["reason"]
    assert stored["C-DORMANT"].loyalty.balance == 123 + ledger["C-DORMANT"][4]["points"]


def first_difference(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> str:
    for c in sorted(set(got) | set(want)):
        g, w = got.get(c, []), want.get(c, [])
        extra, missing = sorted(set(g) - set(w)), sorted(set(w) - set(g))
        if extra or missing:
            return f"{c}: {len(extra)} only here, e.g. {extra[:2]}; {len(missing)} missing, " \
                   f"e.g. {missing[:2]}"
    return "same"


def write_csvs(tmp: Path, events: list[Event]) -> list[Path]:
    files = {"purchase": tmp / "purchases.csv", "ticket": tmp / "tickets.csv",
             "survey": tmp / "surveys.csv"}
    cols = {"purchase": ["event_id", "customer_id", "occurred_at", "amount", "currency",
                         "order_id", "channel", "store_id"],
            "ticket": ["event_id", "customer_id", "occurred_at", "ticket_id", "status",
                       "priority", "channel", "category", "sentiment"],
            "survey": ["event_id", "customer_id", "occurred_at", "kind", "score", "survey_id",
                       "touchpoint"]}
    writers = {}
    handles = []
    for kind, path in files.items():
        h = path.open("w", newline="")
        handles.append(h)
        writers[kind] = csv.writer(h)
        writers[kind].writerow(cols[kind])
    for e in events:
        at = format_time(e.occurred_at)
        if isinstance(e, Purchase):
            amount = f"{e.amount_minor // 100}.{e.amount_minor % 100:02d}"
            writers["purchase"].writerow([e.event_id, e.customer_id, at, amount, e.currency,
                                          e.order_id, e.channel, e.store_id or ""])
        elif isinstance(e, SupportTicket):
            writers["ticket"].writerow([e.event_id, e.customer_id, at, e.ticket_id, e.status,
                                        e.priority, e.channel, e.category, e.sentiment])
        elif isinstance(e, Survey):
            writers["survey"].writerow([e.event_id, e.customer_id, at, e.kind, e.score,
                                        e.survey_id, e.touchpoint])
    for h in handles:
        h.close()
    return list(files.values())


def renamed(events: list[Event], prefix: str) -> list[Event]:
    return [dataclasses.replace(e, customer_id=prefix + e.customer_id,
                                event_id=prefix + e.event_id) for e in events]


async def test_history_loaded_into_a_running_system_plays_out_as_in_an_empty_one(
        settings, tmp_path: Path) -> None:
    """Customers the system has not seen: their history, replayed while live traffic runs,
    gives the ledger, alerts and export of the same replay into an empty system (with
    another batch size): points, expiries and silence alerts at their event times, not at
    today's date, the same entry and alert ids, and all of it marked backfill."""
    # two years of history that ended more than a year before the wall clock: every member
    # with points sees them expire, the silent ones are alerted on the way
    shift = WALL - 800 * D - T0
    backfill = [dataclasses.replace(e, occurred_at=e.occurred_at + shift)
                for e in renamed(history(1500, 40, span_ms=400 * D), "B")]
    assert max(e.occurred_at for e in backfill) < WALL - 390 * D
    files = [str(f) for f in write_csvs(tmp_path, backfill)]
    live = history(1500, 100, span_ms=60 * D)
    backfilled = {e.customer_id for e in backfill}

    async def system(with_live: bool, batch: int) -> tuple[Settings, str]:
        # a topic with unread records may hold the others for up to 30 s, not 2: on a loaded
        # machine one topic's fetch can lag more than 2 s behind the replay's others, and
        # the two systems would then apply a purchase at different clocks ("arrived late"
        # notes). The bound itself is tested in test_engine_parts; here the replays are.
        s = run_settings(settings, batch_max_records=batch, align_idle_s=30.0)
        metrics = Metrics.create()
        async with running_engine(s, metrics=metrics, wall_clock=lambda: WALL / 1000):
            if with_live:
                await produce(s, as_records(s, live))
                await wait_until(lambda: handled(metrics) >= len(live), timeout=90,
                                 what="live traffic")
            code, out, err = await pulse(s, "replay", *files, "--wait", "--timeout", "90")
            assert code in (0, 1), err
            await wait_until(lambda: nothing_due(s), timeout=30, what="the scanner")
        return s, out

    running, out_running = await system(with_live=True, batch=1000)
    empty, out_empty = await system(with_live=False, batch=37)
    assert "events sent merged in event time from 3 files" in out_running
    applied = [line for line in out_running.splitlines() if line.startswith("worker:")]
    assert applied and applied[0] == next(
        line for line in out_empty.splitlines() if line.startswith("worker:")), out_running
    # --wait reports what the workers did, record by record: it adds up to what was sent,
    # and its dead letters are the ones on the dead-letter topic
    counts = re.search(r"worker: (\d+) applied, (\d+) duplicate, (\d+) dead-lettered",
                       applied[0])
    assert counts, applied
    a, dup, dead = map(int, counts.groups())
    assert f"{a + dup + dead} events sent merged in event time from 3 files" in out_running
    assert a + dup + dead == len(backfill) and a > 0.9 * len(backfill)
    dlq = await outputs(running, Topics.from_settings(running).deadletter)
    assert len(dlq) == dead

    topics_r, topics_e = Topics.from_settings(running), Topics.from_settings(empty)
    got = await outputs(running, topics_r.points)
    want = await outputs(empty, topics_e.points)
    got_f = {c: v for c, v in ledger_facts(got).items() if c in backfilled}
    want_f = ledger_facts(want)
    assert got_f == want_f, first_difference(got_f, want_f)
    for r in want:
        assert header(r, "pulse.backfill") == "1" and orjson.loads(r.value)["backfill"]
    alerts = [r for r in await outputs(running, topics_r.alerts)
              if orjson.loads(r.value)["customer_id"] in backfilled]
    assert alerts and all(header(r, "pulse.backfill") == "1" for r in alerts)
    alone = await outputs(empty, topics_e.alerts)
    assert sorted(orjson.loads(r.value)["alert_id"] for r in alerts) == sorted(
        orjson.loads(r.value)["alert_id"] for r in alone)
    ledger = by_customer(await outputs(empty, topics_e.points))
    expiries = [e for v in ledger.values() for e in v if e["rule"] == "expiry"]
    assert expiries, "no member's points expired"
    assert all(parse_time(e["occurred_at"]) < WALL - 20 * D for e in expiries)  # when due
    rows_r = {r["customer_id"]: r for r in (await load_rows(running, DEFAULT_RULES, WALL)).rows}
    rows_e = {r["customer_id"]: r for r in (await load_rows(empty, DEFAULT_RULES, WALL)).rows}
    assert {c: rows_r[c] for c in backfilled} == rows_e
