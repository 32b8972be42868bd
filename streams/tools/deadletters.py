"""`pulse deadletters`: list the dead-letter topic, and re-send ("redrive") originals.

Reading: every partition of the dead-letter topic is assigned (no consumer group: nothing
is committed, any number of readers) and read from the beginning up to its end as the
fetches report it (``highwater`` after a fetch; ListOffsets' latest is wrong on Tansu, see
shared/TANSU.md; every fetch response carries it, also an empty one), or, as a fallback
for a partition no fetch has answered yet, until fetches have returned nothing for ``idle_s``.

A dead letter is the original record's bytes and key with headers set by
``streams.worker.transaction.dead_letter``: ``pulse.dlq.reason``, ``.message``, ``.topic``,
``.partition``, ``.offset``, ``.timestamp`` (the original's Kafka timestamp, ms) and, when the
value was cut, ``.truncated_from``. ``--since``/``--until`` filter on that original timestamp.

Redrive sends the original value and key, unchanged, to the source topic and partition, so
the event ids are those of the first attempt: the engine's dedup makes a second redrive (or
one of records that were applied after all) change nothing. A truncated original cannot be
re-sent and is skipped, counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from schemas.codec import format_time
from streams.kafka_client import client_kwargs
from streams.settings import Settings
from streams.worker.topics import Topics

HEAD_BYTES = 80  # how much of the original value a listing shows
REDRIVEN_FROM = "pulse.redriven_from"  # header on a re-sent record: deadletter/partition/offset
CONNECT_TIMEOUT_S = 30.0


class KafkaUnavailable(Exception):
    """The broker could not be reached (exit 3)."""


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    message: str
    topic: str  # the source record's topic, partition, offset, Kafka timestamp (ms)
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes
    truncated_from: int | None  # original size when the value was cut
    dlq_partition: int
    dlq_offset: int
    dlq_timestamp: int  # when it was dead-lettered (the dead letter's Kafka timestamp)

    @classmethod
    def from_record(cls, r: ConsumerRecord) -> DeadLetter:
        h: dict[str, str] = {}
        for k, v in r.headers or ():
            h.setdefault(k, v.decode("utf-8", "replace"))

        def number(name: str, default: int) -> int:
            try:
                return int(h[name])
            except (KeyError, ValueError):
                return default

        cut = number("pulse.dlq.truncated_from", -1)
        return cls(
            reason=h.get("pulse.dlq.reason", "unknown"),
            message=h.get("pulse.dlq.message", ""),
            topic=h.get("pulse.dlq.topic", ""),
            partition=number("pulse.dlq.partition", -1),
            offset=number("pulse.dlq.offset", -1),
            timestamp=number("pulse.dlq.timestamp", r.timestamp),
            key=r.key,
            value=r.value or b"",
            truncated_from=None if cut < 0 else cut,
            dlq_partition=r.partition,
            dlq_offset=r.offset,
            dlq_timestamp=r.timestamp,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason, "message": self.message, "topic": self.topic,
            "partition": self.partition, "offset": self.offset,
            "timestamp": self.timestamp, "time": _time(self.timestamp),
            "key": None if self.key is None else escape(self.key),
            "value_head": escape(self.value[:HEAD_BYTES]), "value_bytes": len(self.value),
            "truncated_from": self.truncated_from,
            "deadletter": {"partition": self.dlq_partition, "offset": self.dlq_offset,
                           "timestamp": self.dlq_timestamp, "time": _time(self.dlq_timestamp)},
        }

    def line(self) -> str:
        cut = f" [truncated from {self.truncated_from} bytes]" if self.truncated_from else ""
        return (f"{_time(self.timestamp)}  {self.reason:16s} "
                f"{self.topic}/{self.partition}/{self.offset}  {_printable(self.message)}\n"
                f"    {escape(self.value[:HEAD_BYTES])}"
                f"{'...' if len(self.value) > HEAD_BYTES else ''}{cut}")


def escape(raw: bytes) -> str:
    """Bytes as printable ASCII: valid UTF-8 text keeps its characters escaped like a Python
    literal (``\\xff``, ``\\n``, ``\\u00e9``), so nothing a terminal interprets gets through."""
    return repr(raw)[2:-1]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _time(ms: int) -> str:
    return format_time(ms) if ms >= 0 else "-"


@dataclass(frozen=True)
class Filter:
    reason: str | None = None
    topic: str | None = None
    since: int | None = None  # original Kafka timestamp, ms, inclusive
    until: int | None = None  # exclusive

    def __call__(self, d: DeadLetter) -> bool:
        return ((self.reason is None or d.reason == self.reason)
                and (self.topic is None or d.topic == self.topic)
                and (self.since is None or d.timestamp >= self.since)
                and (self.until is None or d.timestamp < self.until))


async def read_all(settings: Settings, keep: Filter | None = None, idle_s: float = 3.0
                   ) -> list[DeadLetter]:
    """The records of the dead-letter topic that ``keep`` accepts (default: all), from the
    beginning to the current end, oldest original first. Only those are held in memory."""
    keep = keep or Filter()
    topic = Topics.from_settings(settings).deadletter
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                client_id="pulse-deadletters")
    await _start(consumer, settings)
    try:
        if topic not in await consumer.topics():
            return []
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                         or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[DeadLetter] = []
        quiet_since = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                out.extend(d for d in map(DeadLetter.from_record, records) if keep(d))
            if any(batch.values()):
                quiet_since = time.monotonic()
            if await _at_end(consumer, tps) or time.monotonic() - quiet_since >= idle_s:
                break
        out.sort(key=lambda d: (d.timestamp, d.dlq_partition, d.dlq_offset))
        return out
    finally:
        await consumer.stop()


async def _start(client: AIOKafkaConsumer | AIOKafkaProducer, settings: Settings) -> None:
    try:
        await asyncio.wait_for(client.start(), CONNECT_TIMEOUT_S)
    except Exception as exc:
        await client.stop()
        raise KafkaUnavailable(f"{settings.kafka_bootstrap} ({type(exc).__name__})") from None


async def _at_end(consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]) -> bool:
    for tp in tps:
        hw = consumer.highwater(tp)
        if hw is None or await consumer.position(tp) < hw:
            return False
    return True


def summary(letters: list[DeadLetter]) -> str:
    by_reason = Counter(d.reason for d in letters)
    parts = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items(),
                                                               key=lambda kv: (-kv[1], kv[0])))
    return f"{len(letters)} dead letter{'' if len(letters) == 1 else 's'}" + (
        f": {parts}" if parts else "")


@dataclass
class Redrive:
    sent: Counter[str]  # source topic -> records re-sent
    truncated: int = 0  # skipped: the original was cut
    unknown_source: int = 0  # skipped: no input topic of ours to send it to


def plan(letters: Iterable[DeadLetter], inputs: Iterable[str], partitions: int
         ) -> tuple[list[DeadLetter], Redrive]:
    """What a redrive sends, and what it skips (and why)."""
    known = set(inputs)
    result = Redrive(Counter())
    todo = []
    for d in letters:
        if d.truncated_from is not None:
            result.truncated += 1
        elif d.topic not in known or not 0 <= d.partition < partitions:
            result.unknown_source += 1
        else:
            todo.append(d)
            result.sent[d.topic] += 1
    return todo, result


async def resend(settings: Settings, letters: list[DeadLetter]) -> None:
    """Send each original (value, key) to its source topic and partition."""
    dlq = Topics.from_settings(settings).deadletter
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all",
                                client_id="pulse-deadletters-redrive",
                                max_request_size=2 * 1024 * 1024)
    await _start(producer, settings)
    try:
        futures = []
        for d in letters:
            origin = f"{dlq}/{d.dlq_partition}/{d.dlq_offset}".encode()
            futures.append(await producer.send(d.topic, d.value, key=d.key,
                                               partition=d.partition,
                                               headers=[(REDRIVEN_FROM, origin)]))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
