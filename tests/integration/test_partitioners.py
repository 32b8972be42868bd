"""Guarantee 4: state is right whatever partitioner the producers use. Records that land on a
partition that does not own their customer are re-routed to the owner, not processed there."""

from __future__ import annotations

import asyncio
import random

from confluent_kafka import Producer

from schemas.codec import encode
from schemas.events import Purchase
from streams.worker.partitioning import owner
from streams.worker.topics import Topics
from tests.integration.helpers import counter_value, produce, running_engine, wait_until
from tests.integration.history import comparable, history, one_pass
from tests.integration.test_exactly_once import stored_states


def produce_with_librdkafka(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    """librdkafka's default partitioner (consistent_random: CRC32 of the key), as kcat and
    confluent-kafka producers use, unlike the Java client's murmur2."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": False})
    for topic, key, value in records:
        while True:
            try:
                p.produce(topic, value=value, key=key)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(30) == 0


async def test_librdkafka_and_random_partitions_end_in_the_same_state(settings):
    topics = Topics.from_settings(settings)
    events = history(6000, 400, seed=21)
    keyed = [(topics.for_kind(e.event_kind), e.customer_id.encode(), encode(e)) for e in events]
    # A second producer scatters purchases over random partitions. Order across partitions
    # is then undefined, so the test uses order-independent purchases spanning less than the
    # allowed lateness (2 days): disorder a random partitioner creates is tolerated up to it.
    rng = random.Random(5)
    last = max(e.occurred_at for e in events)
    scattered = [e for e in history(3000, 400, seed=22, span_ms=36 * 3_600_000)
                 if isinstance(e, Purchase)]
    shift = last + 3_600_000 - scattered[0].occurred_at
    scattered = [Purchase(**{**{f: getattr(e, f) for f in e.__dataclass_fields__},
                             "occurred_at": e.occurred_at + shift}) for e in scattered]
    scattered = [Purchase(**{**{f: getattr(e, f) for f in e.__dataclass_fields__},
                             "event_id": "r" + e.event_id, "order_id": "r" + e.order_id})
                 for e in scattered]
    wrong = sum(1 for _, k, _ in keyed
                if owner(k.decode(), settings.partitions) != _crc_partition(k, settings))
    assert wrong > len(keyed) // 2, "the two partitioners really disagree"

    async with running_engine(settings) as engine:

        def applied(n: int):
            def done() -> bool:
                m = engine.metrics
                return (counter_value(m, "pulse_events_total", outcome="processed")
                        + counter_value(m, "pulse_events_total", outcome="deadletter")) >= n
            return done

        # the year of history through librdkafka's partitioner, then the later scattered
        # purchases (producers write in roughly time order)
        await asyncio.to_thread(produce_with_librdkafka, settings.kafka_bootstrap, keyed)
        await wait_until(applied(len(keyed)), timeout=90, what="the librdkafka history")
        await produce(settings, [(topics.purchases, e.customer_id.encode(), encode(e))
                                 for e in scattered],
                      partition_of=lambda _k: rng.randrange(settings.partitions))
        total = len(keyed) + len(scattered)
        await wait_until(applied(total), timeout=90, what=f"{total} events applied")
        rerouted = counter_value(engine.metrics, "pulse_events_total", outcome="rerouted")
        assert rerouted >= wrong
        assert counter_value(engine.metrics, "pulse_deadletter_total", reason="too_late") == 0

    expected = one_pass(events + scattered)
    stored = await stored_states(settings)
    assert set(stored) == set(expected)
    end = max(e.occurred_at for e in events + scattered)
    # loyalty follows the purchase topic's order, which a random partitioner leaves undefined
    scattered_customers = {e.customer_id for e in scattered}
    differ = [c for c in expected
              if comparable(stored[c], as_of=end, loyalty=c not in scattered_customers)
              != comparable(expected[c], as_of=end, loyalty=c not in scattered_customers)]
    assert not differ, (f"{len(differ)} customers differ, e.g. {differ[0]}:\n"
                        f"stored   {stored[differ[0]]}\nexpected {expected[differ[0]]}")


def _crc_partition(key: bytes, settings) -> int:
    import zlib

    return zlib.crc32(key) % settings.partitions
