"""``pulse points adjust``, ``pulse rewards redeem``: member operations from the command line.

The same requests as the worker's API (``streams/worker/operations.py`` builds and checks
them, and derives the event id from the idempotency key), produced from here: the command
needs Kafka (and Redis, to check the customer exists and, with ``--wait``, to read the
outcome), not a running worker's HTTP server. Exit codes (README "Member operations"):
0 sent (with ``--wait``: applied); 1 ``--wait``: rejected, the ledger entry says why;
2 usage (a bad argument, an unknown customer: nothing sent); 3 Kafka or Redis unreachable
(retry with the same ``--idempotency-key``); 5 ``--wait`` timed out.
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
from streams.worker.operations import (
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
    """Check the customer exists, produce, and with ``wait_s`` wait for the outcome."""
    store = Store.from_settings(settings)
    producer = OperationsProducer(settings)
    try:
        partition = owner(op.customer_id, settings.partitions)
        if await store.get_state(partition, op.customer_id) is None:
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
            lines.append(f"its ledger entry will be {' or '.join(op.entry_ids)} "
                         f"(pulse customer {op.customer_id})")
            return Outcome(EXIT_OK, lines)
        entry = await _wait_entry(store, partition, op, wait_s)
        if entry is None:
            lines.append(f"no outcome after {wait_s:g} s (is a worker running?); "
                         "re-running with the same --idempotency-key is safe")
            return Outcome(EXIT_TIMEOUT, lines)
        rejected = entry.get("rule", "").endswith("_rejected")
        lines.append(f"{'rejected' if rejected else 'applied'}: {entry.get('reason')} "
                     f"(entry {entry.get('entry_id')}, balance {entry.get('balance_after')})")
        return Outcome(EXIT_PARTIAL if rejected else EXIT_OK, lines)
    finally:
        await store.close()


async def _wait_entry(store: Store, partition: int, op: Operation, wait_s: float
                      ) -> dict[str, Any] | None:
    deadline = time.monotonic() + wait_s
    wanted = set(op.entry_ids)
    while True:
        for raw in await store.recent_ledger(partition, op.customer_id):
            entry = orjson.loads(raw)
            if entry.get("entry_id") in wanted:
                return dict(entry)
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(POLL_S)


def run(settings: Settings, kind: str, customer_id: str, body: dict[str, Any],
        wait_s: float | None, describe: Callable[[Operation], str]) -> Outcome:
    """The whole command; a usage error is an ``Outcome`` with exit 2 (nothing sent)."""
    try:
        op = prepare(settings, kind, customer_id, body)
    except OperationError as exc:
        return Outcome(EXIT_USAGE, [f"error: {exc}; nothing sent"])
    return asyncio.run(send(settings, op, wait_s, describe))
