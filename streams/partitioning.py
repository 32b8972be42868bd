"""Which partition owns a customer.

Ownership follows the Java client's (and aiokafka's) default partitioner: murmur2 of the
key bytes, positive, modulo the partition count. Producers using another partitioner
(librdkafka's CRC32-based default in kcat/confluent-kafka, or random) land events on the
"wrong" partition; the engine re-routes those to the owner instead of processing them
where they landed (DESIGN.md guarantee 4).
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def owner(customer_id: str, partitions: int) -> int:
    return (murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions
