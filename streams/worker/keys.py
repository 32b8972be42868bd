"""Every Redis key, built in one place.

All keys of partition N carry the hash tag ``{p<N>}`` so they live in one Redis Cluster slot
and one Lua script can update them atomically. Layout (``<prefix>`` is PULSE_REDIS_PREFIX):

    <prefix>:{pN}:c:<customer_id>   customer state (processors.wire encoding)
    <prefix>:{pN}:fence             hash: gen (commit counter),
                                    o:<topic> (last offset applied from that topic partition),
                                    h:<topic> (newest event time applied from it, ms),
                                    s:<topic> (Kafka timestamp of the record at o:<topic>,
                                    to recognise a recreated topic: streams/worker/recovery.py),
                                    commit (token of the last commit: retries)
    <prefix>:{pN}:outbox            list: outputs committed but not yet acknowledged by Kafka
    <prefix>:{pN}:kpi:<bucket>      hash: KPI aggregate counters of the partition
    <prefix>:{pN}:ledger:<customer> list: the customer's latest ledger entries (newest first)
    <prefix>:{pN}:tickfail          hash: customer -> failed tries of its time-driven change
                                    (streams/worker/poison.py)
    <prefix>:{pN}:due               sorted set: customer -> event time of its next
                                    time-driven change (inactivity, expiry), live clock
    <prefix>:{pN}:due:r:<replay>    the same for customers waiting on a replay's clock
    <prefix>:{pN}:replay:<replay>   hash: what the worker did with a replay's records
    <prefix>:erasure-key            the key of the erasure receipts' keyed hash, when
                                    PULSE_ERASURE_KEY is not set (streams/worker/erasure.py)
"""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def shard(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}"

    def customer(self, partition: int, customer_id: str) -> str:
        return f"{self.prefix}:{{p{partition}}}:c:{customer_id}"

    def customer_pattern(self, partition: int | None = None) -> str:
        p = "*" if partition is None else str(partition)
        return f"{self.prefix}:{{p{p}}}:c:*"

    def customer_id_of(self, key: str | bytes) -> str:
        if isinstance(key, bytes):
            key = key.decode()
        return key.split(":c:", 1)[1]

    def fence(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}:fence"

    def outbox(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}:outbox"

    def ledger(self, partition: int, customer_id: str) -> str:
        return f"{self.prefix}:{{p{partition}}}:ledger:{customer_id}"

    def due(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}:due"

    def replay_due(self, partition: int, replay_id: str) -> str:
        return f"{self.prefix}:{{p{partition}}}:due:r:{replay_id}"

    def replay_outcome(self, partition: int, replay_id: str) -> str:
        return f"{self.prefix}:{{p{partition}}}:replay:{replay_id}"

    def tick_failures(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}:tickfail"

    def erasure_key(self) -> str:
        return f"{self.prefix}:erasure-key"

    def kpi_prefix(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}:kpi:"

    @staticmethod
    def offset_field(topic: str) -> str:
        return f"o:{topic}"

    @staticmethod
    def stamp_field(topic: str) -> str:
        return f"s:{topic}"

    @staticmethod
    def high_field(topic: str) -> str:
        return f"h:{topic}"
