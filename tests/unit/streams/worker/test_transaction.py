"""The shard transaction (streams/worker/transaction.py) through its public API: records and
states in, the commit and the outputs out, no broker, no Redis, no clock."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from processors import wire
from processors.customer import FULL, Step, Transitions
from processors.rules import DEFAULT_RULES
from processors.state import CustomerState
from schemas.codec import encode
from schemas.events import Event
from streams.settings import Settings
from streams.worker.poison import TickGuard
from streams.worker.statecache import StateCache
from streams.worker.store import ShardMeta
from streams.worker.transaction import (
    Context,
    Item,
    ShardResult,
    ShardTransaction,
    dead_letter,
)
from tests import builders

T0 = 1_750_000_000_000
HOUR = 3_600_000
LATENESS = DEFAULT_RULES.allowed_lateness_ms


def _ctx(transitions: Transitions = FULL, ticks: TickGuard | None = None,
         **settings: Any) -> Context:
    return Context.from_settings(Settings(redis_prefix="t", **settings), DEFAULT_RULES,
                                 transitions, ticks=ticks)


def _purchase(i: int, cid: str) -> Event:
    return builders.purchase(f"e{i}", T0 + i * HOUR, 1000 + i, cid=cid)


def _item(ev: Event, offset: int, replay: str | None = None) -> Item:
    headers = () if replay is None else (("pulse.replay", replay.encode()),)
    rec = ConsumerRecord("purchases", 0, offset, 0, 0, ev.customer_id.encode(), encode(ev),
                         None, 0, 0, headers)
    return (ev.occurred_at, ev, rec, None, replay)


def _items(n0: int, n: int, customers: list[str]) -> list[Item]:
    return [_item(_purchase(i, customers[i % len(customers)]), i) for i in range(n0, n0 + n)]


def _adopt(meta: ShardMeta, result: ShardResult) -> None:
    """What the engine does with a result once its commit went through."""
    meta.replays, meta.tick_failures = result.replays, result.tick_failures
    meta.offsets.update(result.commit.offsets)
    meta.high.update(result.commit.high)


def _run(ctx: Context, meta: ShardMeta, items: list[Item], states: dict[str, Any],
         due: list[str] = (), mono: float = 100.0, **kw: Any) -> ShardResult:  # type: ignore[assignment]
    return ShardTransaction(ctx, meta, items, wall_ms=T0 + 400 * 24 * HOUR, mono=mono,
                            **kw).run(states, due)


def test_a_batch_gives_the_commit_and_the_outputs() -> None:
    items = _items(0, 6, ["ann", "bob"])
    txn = ShardTransaction(_ctx(), ShardMeta(0), items, wall_ms=T0, mono=0.0)
    assert txn.customers() == {"ann", "bob"}
    res = txn.run({"ann": None, "bob": None})
    c = res.commit
    assert c.partition == 0 and c.offsets == {"purchases": 5}
    assert c.high == {"purchases": T0 + 5 * HOUR}
    assert {cid: wire.loads(b).purchase_count for cid, b in c.states.items()} == \
        {"ann": 3, "bob": 3}
    assert res.counts == {("purchases", "processed"): 6}
    # every output is in the outbox in order, ledger entries also in the customer's ledger
    assert c.outbox == [m.pack() for m in res.outputs] and res.outputs
    points = [m for m in res.outputs if m.topic == "points-accruals"]
    assert [(cid, v) for cid, v in c.ledger] == [(m.key.decode(), m.value) for m in points]
    assert c.increments and all(k.startswith("t:{p0}:kpi:") for k, _, _ in c.increments)
    assert set(c.due) == {"ann", "bob"} and not c.due_on  # next due times, live schedule
    assert set(res.states) == {"ann", "bob"}


def test_a_cached_state_gives_what_loading_it_from_redis_gives() -> None:
    customers = ["ann", "bob", "cy"]
    ctx = _ctx()
    cached, loading = StateCache(), StateCache()
    metas = ShardMeta(0), ShardMeta(0)
    redis: dict[str, bytes] = {}
    for n0 in (0, 7, 14):
        items = _items(n0, 7, customers)
        # the cached side gets from "Redis" only what it does not hold (nothing after the
        # first batch)
        s1 = cached.states_for({c: redis.get(c) for c in customers if c not in cached},
                               customers)
        r1 = _run(ctx, metas[0], items, s1)
        cached.keep(r1.states, 100)
        s2 = loading.states_for({c: redis.get(c) for c in customers}, customers)
        r2 = _run(ctx, metas[1], items, s2)
        loading.keep(r2.states, 0)
        assert r1.commit.states == r2.commit.states
        assert [m.value for m in r1.outputs] == [m.value for m in r2.outputs]
        for meta, res in zip(metas, (r1, r2), strict=True):
            _adopt(meta, res)
        redis.update(r2.commit.states)
    assert sorted(cached) == customers  # used, not reloaded
    assert not loading
    assert wire.loads(redis["ann"]).purchase_count == 7


def _due_after_newest(state: CustomerState, rules: Any) -> int | None:
    return None if state.max_event_at is None else state.max_event_at + 1


def test_the_inputs_are_left_as_they_were_and_it_runs_once() -> None:
    """No I/O, no change to what it was given: a refused commit leaves the shard as it was."""
    ctx = _ctx(Transitions(FULL.apply, lambda st, r, at: Step(st), _due_after_newest))
    meta = ShardMeta(0, high={"purchases": T0}, offsets={"purchases": 3},
                     tick_failures={"bob": 1})
    meta.replays.clocks["R0"] = T0
    meta.replays.scheduled["cy"] = "R0"
    before = copy.deepcopy(meta)
    states: dict[str, CustomerState | None] = {"ann": None, "bob": CustomerState("bob")}
    items = [_item(_purchase(4, "ann"), 4, replay="R0"), _item(_purchase(5, "bob"), 5)]
    txn = ShardTransaction(ctx, meta, items, wall_ms=T0, mono=0.0, upto=T0 + 10 * HOUR)
    res = txn.run(states)
    # the result has the changes: bob's tick went through, R0's clock moved, ann waits on it
    assert res.tick_failures == {} and ("t:{p0}:tickfail", "bob", -1) in res.commit.increments
    assert res.replays.clocks["R0"] == T0 + 4 * HOUR
    assert res.replays.scheduled == {"cy": "R0", "ann": "R0"}
    assert meta == before  # the shard's metadata does not
    assert states == {"ann": None, "bob": CustomerState("bob")}
    with pytest.raises(RuntimeError, match="once"):
        txn.run(states)


def test_the_live_schedule_horizon() -> None:
    meta = ShardMeta(0, high={"purchases": T0, "surveys": T0 + 2 * HOUR})
    items = _items(1, 1, ["ann"])  # at T0 + 1 h
    event = ShardTransaction(_ctx(clock="event"), meta, items, wall_ms=5, mono=0.0)
    assert event.upto == T0 + 2 * HOUR - LATENESS  # the partition's newest event time
    later = _items(3, 1, ["ann"])
    assert ShardTransaction(_ctx(clock="event"), meta, later, wall_ms=5, mono=0.0).upto == \
        T0 + 3 * HOUR - LATENESS
    assert ShardTransaction(_ctx(clock="live"), meta, items, wall_ms=5, mono=0.0).upto == 5
    assert ShardTransaction(_ctx(), meta, items, wall_ms=5, mono=0.0, upto=7).upto == 7


def test_a_rejected_or_failing_event_is_dead_lettered_and_the_rest_goes_on() -> None:
    def apply(state: Any, ev: Any, rules: Any, now: int) -> Step:
        if ev.event_id == "e2":
            raise ZeroDivisionError("bug")
        return FULL.apply(state, ev, rules, now)

    ctx = _ctx(Transitions(apply, FULL.tick, FULL.next_due))
    refund = builders.purchase("e1", T0, 5000, kind="refund", cid="ann")
    items = [_item(refund, 1), _item(_purchase(2, "ann"), 2), _item(_purchase(3, "ann"), 3)]
    res = _run(ctx, ShardMeta(0), items, {"ann": None})
    assert [(d.record.offset, d.reason) for d in res.dead] == \
        [(1, "invalid"), (2, "processing_error")]
    assert isinstance(res.dead[1].error, ZeroDivisionError)
    dl = [m for m in res.outputs if m.topic == "deadletter"]
    assert dl == [dead_letter("deadletter", items[0][2], "invalid", res.dead[0].message),
                  dead_letter("deadletter", items[1][2], "processing_error",
                              "ZeroDivisionError('bug')")]
    assert dl[0].value == encode(refund)  # the original bytes
    assert res.counts == {("purchases", "processed"): 1}
    assert res.commit.offsets == {"purchases": 3}
    assert wire.loads(res.commit.states["ann"]).purchase_count == 1


def test_a_raising_tick_is_retried_then_parked_with_a_dead_letter() -> None:
    def tick(state: CustomerState, rules: Any, at: int) -> Step:
        raise RuntimeError("tick")

    def next_due(state: CustomerState, rules: Any) -> int | None:
        return None if state.max_event_at is None else state.max_event_at + 1

    guard = TickGuard("deadletter", attempts=2, backoff_s=10.0)
    ctx = _ctx(Transitions(FULL.apply, tick, next_due), ticks=guard)
    meta = ShardMeta(0)
    res = _run(ctx, meta, _items(0, 1, ["ann"]), {"ann": None}, upto=T0 + HOUR)
    [first] = res.ticks_failed
    assert (first.customer, first.attempt, first.retry_in, first.dead) == ("ann", 1, 10.0, None)
    assert ("t:{p0}:tickfail", "ann", 1) in res.commit.increments
    assert res.commit.due == {"ann": T0 + 1}  # still due
    _adopt(meta, res)
    state = res.states["ann"]
    # within the backoff: not tried
    assert not _run(ctx, meta, [], {"ann": state}, ["ann"], mono=105.0, upto=T0 + HOUR
                    ).ticks_failed
    res = _run(ctx, meta, [], {"ann": state}, ["ann"], mono=111.0, upto=T0 + HOUR)
    [second] = res.ticks_failed
    assert second.retry_in is None and second.dead is not None  # parked
    assert res.outputs == [second.dead]
    assert orjson.loads(second.dead.value)["customer_id"] == "ann"
    assert res.commit.due == {"ann": None}  # out of the due set
    assert res.tick_failures == {"ann": 2}


def test_a_replay_without_its_end_marker_ends_after_replay_idle_end_s() -> None:
    """A ``pulse replay`` killed before its marker must not hold its customers for ever:
    once it has sent nothing for PULSE_REPLAY_IDLE_END_S its schedule joins the live one."""
    ctx = _ctx(clock="live", replay_idle_end_s=5)
    meta = ShardMeta(0)
    ev = builders.purchase("r1", 1_700_000_000_000, 100, cid="ann")
    res = _run(ctx, meta, [_item(ev, 0, replay="R1")], {"ann": None}, mono=100.0)
    assert res.commit.due_on == {"ann": "R1"} and not res.commit.released  # replay's clock
    assert res.commit.fence["r:R1"] == ev.occurred_at
    assert ShardTransaction(ctx, meta, [], wall_ms=0, mono=0.0).replay_upto == {}
    _adopt(meta, res)
    assert ShardTransaction(ctx, meta, [], wall_ms=0, mono=0.0).replay_upto == \
        {"R1": ev.occurred_at - LATENESS}
    res = _run(ctx, meta, [], {}, mono=104.0)  # nothing for 4 s: still on
    assert not res.commit.released and not res.ended
    _adopt(meta, res)
    res = _run(ctx, meta, [], {}, mono=106.0)  # 6 s
    assert res.commit.released == ["R1"] and "r:R1" in res.commit.fence_del
    assert ("t:{p0}:replay:R1", "ended") in {(k, f) for k, f, _ in res.commit.increments}
    assert [(e.replay_id, e.clock, e.idle_s) for e in res.ended] == \
        [("R1", ev.occurred_at, 6.0)]
    assert not res.replays.clocks


def test_an_erasure_drops_the_customer_and_a_later_event_starts_afresh() -> None:
    """In one batch: ann buys, is erased, buys again; bob buys. The commit erases ann before
    it writes her fresh state; only the fresh state's ledger entry goes to Redis; the outbox
    holds her first entry, then the tombstones and the receipt, then the fresh entry."""
    ctx = dataclasses.replace(_ctx(clock="event"), erasure_key=b"k" * 32)
    erase = builders.customer("x1", T0 + 2 * HOUR, "erasure_requested", cid="ann")
    items = [_item(_purchase(0, "ann"), 0), _item(_purchase(1, "bob"), 1),
             _item(erase, 2), _item(_purchase(3, "ann"), 3)]
    res = _run(ctx, ShardMeta(0), items, {"ann": None, "bob": None})
    c = res.commit
    assert c.erased == ["ann"] and c.replay_dues == []
    assert wire.loads(c.states["ann"]).purchase_count == 1  # the fresh state
    assert wire.loads(c.states["bob"]).purchase_count == 1
    assert [(cid, orjson.loads(e)["event_id"]) for cid, e in c.ledger] == [
        ("bob", "e1"), ("ann", "e3")]
    outs = [(m.topic, m.key, m.tombstone) for m in res.outputs]
    tombs = [i for i, m in enumerate(res.outputs) if m.tombstone]
    assert [outs[i] for i in tombs] == [(ctx.topics.alerts, b"ann", True),
                                        (ctx.topics.points, b"ann", True),
                                        (ctx.topics.engagement, b"ann", True)]
    receipt = res.outputs[tombs[-1] + 1]
    assert receipt.topic == ctx.topics.audit and b"ann" not in receipt.value
    doc = orjson.loads(receipt.value)
    assert doc["held"] and doc["removed"]["dedup_ids"] == 1
    firsts = [i for i, m in enumerate(res.outputs)
              if m.topic == ctx.topics.points and not m.tombstone and m.key == b"ann"]
    assert firsts[0] < tombs[0] and firsts[-1] > tombs[-1]  # before and after the erasure
    assert res.erased == ["ann"] and set(res.states) == {"ann", "bob"}
    gauges = {(k.rsplit(":", 1)[-1], f): d for k, f, d in c.increments if k.endswith(":g")}
    assert gauges[("g", "customers")] == 2  # ann twice (+1 -1 +1), bob once


def test_erasing_a_customer_never_seen_writes_a_receipt_and_nothing_else() -> None:
    ctx = dataclasses.replace(_ctx(), erasure_key=b"k" * 32)
    erase = builders.customer("x1", T0, "erasure_requested", cid="zoe")
    res = _run(ctx, ShardMeta(0), [_item(erase, 0)], {"zoe": None})
    assert res.commit.erased == ["zoe"] and res.commit.states == {} and res.states == {}
    assert [m.tombstone for m in res.outputs] == [True, True, True, False]
    assert orjson.loads(res.outputs[-1].value)["held"] is False
    assert res.counts == {("purchases", "processed"): 1}
