"""Pieces of the shell that need no broker: ownership, the outbox format, the clock."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from processors.rules import DEFAULT_RULES
from streams.engine import Engine, _Shard
from streams.outbox import OutMsg
from streams.partitioning import owner
from streams.settings import Settings
from streams.store import ShardMeta


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_owner_is_the_java_clients_partition(customer_id: str, partitions: int) -> None:
    expected = DefaultPartitioner()(customer_id.encode(), list(range(partitions)), [])
    assert owner(customer_id, partitions) == expected


@given(st.text(max_size=30), st.one_of(st.none(), st.binary(max_size=40)), st.binary(),
       st.one_of(st.none(), st.integers(0, 100)),
       st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=20)), max_size=4))
def test_outbox_entries_round_trip(topic: str, key: bytes | None, value: bytes,
                                   partition: int | None,
                                   headers: list[tuple[str, bytes]]) -> None:
    msg = OutMsg(topic, key, value, partition, tuple(headers))
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


def test_live_clock_also_follows_the_wall_clock() -> None:
    e = _engine("live", wall_s=9_000.0)
    assert e.clock(0) == 9_000_000  # a quiet partition still moves on
    assert e.clock(1) == 9_000_000
    e = _engine("live", wall_s=1.0)
    assert e.clock(0) == 7_000_000  # but never goes back behind the events
