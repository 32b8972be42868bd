"""Outputs on their way to Kafka, in a form that can wait in Redis.

Every record the engine produces (alerts, ledger entries, dead letters, re-routed events)
is first written to the partition's outbox in the same atomic commit as the state change
that caused it, then sent, then trimmed. A crash between commit and send therefore re-sends
it on restart (same deterministic id, so downstream can drop the duplicate) instead of
losing it (DESIGN.md guarantee 2).

A tombstone (``tombstone=True``: sent with a null value, so that a compacted topic forgets
the key; README "Member operations") is packed with a fifth header field, 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class OutMsg:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    tombstone: bool = False  # sent with a null value (``value`` is then b"")

    def pack(self) -> bytes:
        fields = [
            self.topic,
            self.partition,
            None if self.key is None else self.key.hex(),
            [[k, v.hex()] for k, v in self.headers],
        ]
        if self.tombstone:
            fields.append(1)
        return orjson.dumps(fields) + b"\n" + self.value

    @classmethod
    def unpack(cls, data: bytes) -> OutMsg:
        head, value = data.split(b"\n", 1)
        topic, partition, key, headers, *tombstone = orjson.loads(head)
        return cls(
            topic=topic,
            key=None if key is None else bytes.fromhex(key),
            value=value,
            partition=partition,
            headers=tuple((k, bytes.fromhex(v)) for k, v in headers),
            tombstone=bool(tombstone),
        )
