"""``pulse points adjust``, ``pulse rewards redeem``, ``pulse customers erase``: member
operations from the command line.

The same requests as the worker's API (``streams/worker/operations.py`` builds and checks
them, and derives the event id from the idempotency key), produced from here: the command
needs Kafka (and Redis, to check the customer exists and, with ``--wait``, to read the
outcome), not a running worker's HTTP server. ``--wait`` waits until the partition's fence
covers the record (the worker applied it), then reads the ledger entry that answered it.
Exit codes (README "Member operations"): 0 sent (with ``--wait``: applied); 1 ``--wait``:
rejected, the ledger entry says why; 2 usage (a bad argument, an unknown customer: nothing
sent; an erasure is sent for any id); 3 Kafka or Redis unreachable (retry with the same
``--idempotency-key``); 5 ``--wait`` timed out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from schemas.codec import format_time
from streams.errors import EXIT_DEPENDENCY, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from streams.settings import Settings
from streams.worker.keys import Keys
from streams.worker.operations import (
    ERASURE,
    SOURCE_CLI,
    Operation,
    OperationError,
    OperationsProducer,
    build,
)
from streams.worker.partitioning import owner
from streams.worker.store import Store
from streams.worker.topics import Topics

EXIT_TIMEOUT = 5
POLL_S = 0.2


@dataclass
class Outcome:
    code: int
    lines: list[str]


def new_key() -> str:
    return str(uuid.uuid4())


def prepare(settings: Settings, kind: str, customer_id: str, body: dict[str, Any]
            ) -> Operation:
    """The operation, dated now; raises ``OperationError`` (a usage error)."""
    return build(kind, customer_id, body, at=int(time.time() * 1000), source=SOURCE_CLI,
                 topics=Topics.from_settings(settings))


async def send(settings: Settings, op: Operation, wait_s: float | None,
               describe: Callable[[Operation], str]) -> Outcome:
    """Check the customer exists (not for an erasure), produce, and with ``wait_s`` wait
    until the worker has applied it and say what came of it."""
    store = Store.from_settings(settings)
    producer = OperationsProducer(settings)
    try:
        partition = owner(op.customer_id, settings.partitions)
        if op.kind != ERASURE and await store.get_state(partition, op.customer_id) is None:
            return Outcome(EXIT_USAGE, [
                f"error: unknown customer {op.customer_id!r}: no state in Redis "
                f"(PULSE_REDIS_PREFIX={settings.redis_prefix}, "
                f"PULSE_PARTITIONS={settings.partitions}); nothing sent"])
        try:
            part, offset = await producer.send(op)
        except (KafkaError, TimeoutError) as exc:
            return Outcome(EXIT_DEPENDENCY, [
                f"error: Kafka at {settings.kafka_bootstrap} did not take the {op.kind} "
                f"({type(exc).__name__}); it may or may not have been sent: re-running with "
                "the same --idempotency-key applies it once"])
        finally:
            await producer.stop()
        lines = [f"{describe(op)}: event {op.event_id} sent to {op.topic}/{part} at offset "
                 f"{offset} ({format_time(op.occurred_at)})"]
        if wait_s is None:
            lines.append(f"once applied: {_where(op)}")
            return Outcome(EXIT_OK, lines)
        if not await _applied(store, op.topic, part, offset, wait_s):
            lines.append(f"not applied after {wait_s:g} s (is a worker running?); "
                         "re-running with the same --idempotency-key is safe")
            return Outcome(EXIT_TIMEOUT, lines)
        if op.kind == ERASURE:
            held = await store.get_state(partition, op.customer_id) is not None
            lines.append(f"erased: a receipt is on the audit topic; {op.customer_id} has "
                         f"{'a fresh state from a later event' if held else 'no state'}")
            return Outcome(EXIT_OK, lines)
        entry = await _entry(store, partition, op)
        if entry is None:
            lines.append("applied; its ledger entry is no longer among the customer's latest")
            return Outcome(EXIT_OK, lines)
        rejected = entry.get("rule", "").endswith("_rejected")
        lines.append(f"{'rejected' if rejected else 'applied'}: {entry.get('reason')} "
                     f"(entry {entry.get('entry_id')}, balance {entry.get('balance_after')})")
        return Outcome(EXIT_PARTIAL if rejected else EXIT_OK, lines)
    finally:
        await store.close()


def _where(op: Operation) -> str:
    if op.kind == ERASURE:
        return (f"pulse customer {op.customer_id} says unknown customer; a receipt on the "
                "audit topic")
    return f"ledger entry {' or '.join(op.entry_ids)} (pulse customer {op.customer_id})"


async def _applied(store: Store, topic: str, partition: int, offset: int, wait_s: float
                   ) -> bool:
    """Until the partition's fence covers the record (the worker applied it), or ``wait_s``."""
    deadline = time.monotonic() + wait_s
    field = Keys.offset_field(topic)
    while True:
        done = await store.redis.hget(store.keys.fence(partition), field)
        if done is not None and int(done) >= offset:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)


async def _entry(store: Store, partition: int, op: Operation) -> dict[str, Any] | None:
    wanted = set(op.entry_ids)
    for raw in await store.recent_ledger(partition, op.customer_id):
        entry = orjson.loads(raw)
        if entry.get("entry_id") in wanted:
            return dict(entry)
    return None


def run(settings: Settings, kind: str, customer_id: str, body: dict[str, Any],
        wait_s: float | None, describe: Callable[[Operation], str]) -> Outcome:
    """The whole command; a usage error is an ``Outcome`` with exit 2 (nothing sent)."""
    try:
        op = prepare(settings, kind, customer_id, body)
    except OperationError as exc:
        return Outcome(EXIT_USAGE, [f"error: {exc}; nothing sent"])
    return asyncio.run(send(settings, op, wait_s, describe))
