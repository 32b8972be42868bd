"""Pieces of the shell that need no broker: ownership, the outbox format, the clock."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from processors.rules import DEFAULT_RULES
from processors.state import CustomerState
from schemas.codec import encode
from schemas.events import Purchase
from streams.settings import Settings
from streams.worker.engine import Engine, _Shard
from streams.worker.outbox import OutMsg
from streams.worker.partitioning import key_partition, owner
from streams.worker.statecache import StateCache
from streams.worker.store import ShardMeta


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_owner_is_the_java_clients_partition(customer_id: str, partitions: int) -> None:
    expected = DefaultPartitioner()(customer_id.encode(), list(range(partitions)), [])
    assert owner(customer_id, partitions) == expected


@given(st.binary(min_size=1, max_size=40) | st.text(min_size=1).map(str.encode),
       st.integers(min_value=1, max_value=64))
def test_outputs_go_where_the_default_partitioner_puts_them(key: bytes, partitions: int) -> None:
    expected = DefaultPartitioner()(key, list(range(partitions)), [])
    assert key_partition(key, partitions) == expected


@given(st.text(max_size=30), st.one_of(st.none(), st.binary(max_size=40)), st.binary(),
       st.one_of(st.none(), st.integers(0, 100)),
       st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=20)), max_size=4),
       st.booleans())
def test_outbox_entries_round_trip(topic: str, key: bytes | None, value: bytes,
                                   partition: int | None,
                                   headers: list[tuple[str, bytes]], tombstone: bool) -> None:
    msg = OutMsg(topic, key, b"" if tombstone else value, partition, tuple(headers), tombstone)
    assert OutMsg.unpack(msg.pack()) == msg


def _engine(clock: str, wall_s: float) -> Engine:
    e = Engine(Settings(clock=clock), DEFAULT_RULES, wall_clock=lambda: wall_s)
    e._shards[0] = _Shard(ShardMeta(0, high={"purchases": 5_000_000, "surveys": 7_000_000}))
    e._shards[1] = _Shard(ShardMeta(1))
    return e


def test_event_clock_is_the_newest_event_time_applied() -> None:
    e = _engine("event", wall_s=1_000_000.0)
    assert e.clock(0) == 7_000_000
    assert e.clock(1) == 0  # nothing applied yet: the clock has not started


def test_live_clock_is_the_wall_clock_whatever_the_events_say() -> None:
    e = _engine("live", wall_s=9_000.0)
    assert e.clock(0) == 9_000_000  # a quiet partition still moves on
    assert e.clock(1) == 9_000_000
    e = _engine("live", wall_s=1.0)
    assert e.clock(0) == 1_000  # events dated after the wall clock do not move it


def test_the_state_cache_drops_the_least_recently_used() -> None:
    cache = StateCache()
    cache.keep({c: CustomerState(c) for c in ("a", "b", "c")}, 2)
    assert list(cache) == ["b", "c"]
    states = cache.states_for({"x": None}, ["b", "x"])  # a batch that uses b (and x, new)
    assert states == {"x": None, "b": CustomerState("b")}
    cache.keep({"d": CustomerState("d")}, 2)
    assert list(cache) == ["b", "d"]
    cache.keep({"e": CustomerState("e")}, 0)
    assert not cache


class _Highwater:
    def __init__(self, ends: dict[str, int]) -> None:
        self.ends = ends

    def highwater(self, tp: Any) -> int | None:
        return self.ends.get(tp.topic)


def _aligned(ends: dict[str, int], fetched: dict[str, list[int]], idle: float = 2.0,
             now: float = 100.0) -> tuple[Engine, _Shard]:
    """A shard whose topics hold records with the given event times (offsets 0, 1, ...)."""
    e = Engine(Settings(align_idle_s=idle), DEFAULT_RULES)
    # the topics not named are empty and read to their end
    e.consumer = _Highwater({**dict.fromkeys(e.topics.inputs, 0), **ends})  # type: ignore[assignment]
    shard = e._shards[0] = _Shard(ShardMeta(0))
    for topic, times in fetched.items():
        shard.buf[topic] = deque((t, None, None, None, None) for t in times)  # type: ignore[misc]
        shard.high_t[topic] = max(times, default=0)
        shard.fetched[topic] = len(times)
    return e, shard


def test_a_topic_that_may_still_deliver_older_records_holds_the_others_back() -> None:
    # a backlog: surveys are read behind purchases and have more to come
    e, shard = _aligned({"purchases": 3, "surveys": 10},
                        {"purchases": [10, 20, 30], "surveys": [5, 15]})
    taken = [it[0] for it in e._take(0, shard, 100.0)]
    assert taken == [5, 10, 15]  # merged in event time, up to what surveys have reached
    assert [it[0] for it in shard.buf["purchases"]] == [20, 30]


def test_caught_up_topics_hold_nothing_back() -> None:
    # live traffic: every topic read to its end; event times out of order across topics
    e, shard = _aligned({"purchases": 3, "surveys": 2},
                        {"purchases": [10, 20, 30], "surveys": [25, 5]})
    taken = [it[0] for it in e._take(0, shard, 100.0)]
    assert sorted(taken) == [5, 10, 20, 25, 30] and not any(shard.buf.values())
    assert [t for t in taken if t in (25, 5)] == [25, 5]  # each topic keeps its own order


def test_an_idle_topic_with_more_to_come_holds_the_others_for_align_idle_s() -> None:
    e, shard = _aligned({"purchases": 3, "surveys": 4},
                        {"purchases": [10, 20, 30], "surveys": [5]})
    shard.buf["surveys"].clear()  # its one record was applied; three more are unread
    assert [it[0] for it in e._take(0, shard, 100.0)] == []  # held at 5
    assert [it[0] for it in e._take(0, shard, 101.0)] == []
    assert [it[0] for it in e._take(0, shard, 102.0)] == [10, 20, 30]  # waited 2 s


@pytest.mark.parametrize("clock", ["live", "event"])
def test_an_event_dated_after_the_wall_clock_plus_the_skew_is_dead_lettered(clock: str) -> None:
    """In both modes: no real event happens in the future of the wall clock. Within the
    skew an event is taken (its own customer's clock moves, nobody else's)."""
    wall_ms = 1_750_000_000_000
    e = Engine(Settings(clock=clock, max_future_skew_s=3600, partitions=2), DEFAULT_RULES,
               wall_clock=lambda: wall_ms / 1000)
    e._shards[0] = _Shard(ShardMeta(0))
    e._shards[1] = _Shard(ShardMeta(1))
    recs = []
    for i, ahead in enumerate((3_600_000, 3_600_001, 4_070_908_800_000 - wall_ms)):  # 2099
        cid = ("ann", "bob", "cy")[i]
        ev = Purchase(f"f{i}", cid, wall_ms + ahead, "pos", f"o{i}", "store", "purchase", 100,
                      "EUR")
        recs.append(ConsumerRecord("purchases", owner(cid, 2), i, 0, 0, cid.encode(),
                                   encode(ev), None, 0, 0, ()))
    for r in recs:
        e._ingest({TopicPartition("purchases", r.partition): [r]})
    items = [it for shard in e._shards.values() for it in shard.buf.get("purchases", ())]
    taken = [it[1].event_id for it in items if it[1] is not None]
    dead = {it[2].offset: dict(it[3].headers) for it in items if it[3] is not None}
    assert taken == ["f0"]
    assert sorted(dead) == [1, 2]
    assert {h["pulse.dlq.reason"] for h in dead.values()} == {b"from_future"}
    assert b"2099-01-01T00:00:00.000Z" in dead[2]["pulse.dlq.message"]  # both times
    assert b"after the wall clock 2025-06-15T15:06:40.000Z" in dead[2]["pulse.dlq.message"]
    # the partition's event time did not move (event mode's clock, the live one anyway)
    assert max(s.high_t.get("purchases", 0) for s in e._shards.values()) == wall_ms + 3_600_000


def test_a_replayed_record_is_buffered_with_its_replay_which_the_shard_now_knows() -> None:
    """Ingest reads the ``pulse.replay`` header: the item carries the replay id (what the
    shard transaction applies on the replay's clock, tests/unit/test_transaction.py) and
    the shard knows the replay from its first record on (alignment waits for its markers)."""
    e = Engine(Settings(partitions=1), DEFAULT_RULES)
    shard = e._shards[0] = _Shard(ShardMeta(0))
    ev = Purchase("r1", "ann", 1_700_000_000_000, "pos", "o1", "store", "purchase", 100, "EUR")
    rec = ConsumerRecord("purchases", 0, 0, 0, 0, b"ann", encode(ev), None, 0, 0,
                         (("pulse.replay", b"R1"),))
    e._ingest({TopicPartition("purchases", 0): [rec]})
    [(t, got, r, out, rid)] = list(shard.buf["purchases"])
    assert (t, got, r, out, rid) == (ev.occurred_at, ev, rec, None, "R1")
    assert "R1" in shard.meta.replays.last_seen and "R1" in shard.meta.replays.clocks
