"""Member operations through Kafka: points adjustments, redemptions and erasure requests
(README "Member operations"), from the worker's API (``streams/worker/api.py``) and
``pulse`` commands.

Theory of operation
-------------------
Neither the API nor a command changes a customer: each validates the request, turns it into
an event of an input topic (``adjustments``, ``redemptions``; ``customers`` for an
``erasure_requested`` record) and produces it, keyed by the customer, to the customer's
partition. The worker applies it like any other event, serially per partition, so the
balance a debit or a redemption is checked against includes every earlier event; the answer
is a ledger entry with a deterministic id, ``<event_id>:<rule>`` (``Operation.entry_ids``),
on ``points-accruals`` and in the customer's latest entries (``GET /customers/{id}/ledger``);
an erasure's is a receipt on the audit topic (streams/worker/erasure.py).

Exactly once, whatever is retried:

* the event id is a hash of the kind, the customer and the request's idempotency key
  (``event_id_for``): a retry after a timeout, a client crash or a worker killed between
  two tries produces the same event id, and the worker's dedup (``processors.customer``)
  makes the second one a no-op, for as long as the customer's dedup window holds it
  (README "Member operations");
* the record is built and then checked by the decoder the worker uses
  (``schemas.codec.decode``): a request accepted here is never dead-lettered as malformed;
* ``OperationsProducer`` sends with ``acks=all`` and, where the broker grants it, an
  idempotent producer (no duplicate records from its own retries). A broker that refuses
  the producer id (Tansu, the development broker; a Kafka ACL without IdempotentWrite)
  gets ``acks=all`` alone, with one WARNING: the event ids make such duplicates no-ops too.

Request bodies are strict (an unknown field is an error: a typo must not be ignored), while
the events they become follow the additive event contract.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from schemas.codec import MAX_ID_LEN, InvalidEvent, decode, format_time
from schemas.events import ADJUSTMENT, CUSTOMER, ERASURE_REQUESTED, REDEMPTION
from streams.kafka_client import client_kwargs
from streams.settings import Settings
from streams.worker.partitioning import owner
from streams.worker.topics import Topics

log = logging.getLogger(__name__)

SOURCE_API, SOURCE_CLI = "api", "cli"
IDEMPOTENCY_KEY = "idempotency_key"
ERASURE = "erasure"  # the operation; its event is a customer record, erasure_requested
# operation -> the kind of the event it becomes
EVENT_KIND = {ADJUSTMENT: ADJUSTMENT, REDEMPTION: REDEMPTION, ERASURE: CUSTOMER}
# the ledger rules that answer each kind of operation (processors/loyalty: entry ids are
# "<event_id>:<rule>")
OUTCOMES: dict[str, tuple[str, ...]] = {
    ADJUSTMENT: ("adjustment", "adjustment_rejected"),
    REDEMPTION: ("redemption", "redemption_rejected"),
}
_PREFIX = {ADJUSTMENT: "adj", REDEMPTION: "rdm", ERASURE: "era"}
# request body fields besides the idempotency key, per operation
_FIELDS: dict[str, tuple[str, ...]] = {
    ADJUSTMENT: ("points", "operator", "reason"),
    REDEMPTION: ("reward_id", "points"),
    ERASURE: (),
}
_FIXED: dict[str, dict[str, str]] = {ERASURE: {"kind": ERASURE_REQUESTED}}  # set, not asked
SEND_TIMEOUT_S = 15.0


class OperationError(ValueError):
    """A request that cannot become an event; the message says which field and why."""


@dataclass(frozen=True)
class Operation:
    """One validated operation, ready to produce."""

    kind: str  # the operation: adjustment, redemption, erasure
    customer_id: str
    event_id: str
    topic: str
    value: bytes  # the event's JSON, as the worker will decode it
    occurred_at: int  # ms

    @property
    def entry_ids(self) -> tuple[str, ...]:
        """The ids of the ledger entries that can answer it (accepted, rejected)."""
        return tuple(f"{self.event_id}:{rule}" for rule in OUTCOMES.get(self.kind, ()))


def event_id_for(kind: str, customer_id: str, idempotency_key: str) -> str:
    """The event id of an operation: the same operation, customer and key give the same
    id."""
    raw = orjson.dumps([kind, customer_id, idempotency_key])  # unambiguous, whatever they hold
    return f"{_PREFIX[kind]}-{hashlib.sha256(raw).hexdigest()[:32]}"


def _key(body: Mapping[str, Any]) -> str:
    key = body.get(IDEMPOTENCY_KEY)
    if key is None:
        raise OperationError(f"{IDEMPOTENCY_KEY}: required (any unique string, e.g. a UUID; "
                             "send the same one again to retry safely)")
    if type(key) is not str or not key.strip() or len(key) > MAX_ID_LEN:
        raise OperationError(f"{IDEMPOTENCY_KEY}: must be a string of 1-{MAX_ID_LEN} "
                             "characters, not all whitespace")
    return key


def build(kind: str, customer_id: str, body: Any, *, at: int, source: str,
          topics: Topics) -> Operation:
    """The operation a request body asks for (``kind``: adjustment, redemption, erasure),
    dated ``at`` (epoch ms). Raises ``OperationError``."""
    if not isinstance(body, Mapping):
        raise OperationError("the body must be a JSON object")
    fields = _FIELDS[kind]
    unknown = sorted(set(body) - {*fields, IDEMPOTENCY_KEY})
    if unknown:
        raise OperationError(f"unknown field {unknown[0]!r} (expected: "
                             f"{', '.join((*fields, IDEMPOTENCY_KEY))})")
    for name in fields:
        if name not in body:
            raise OperationError(f"{name}: required")
    event_id = event_id_for(kind, customer_id, _key(body))
    record = {"event_id": event_id, "customer_id": customer_id,
              "occurred_at": format_time(at), "source": source,
              **_FIXED.get(kind, {}), **{name: body[name] for name in fields}}
    try:
        value = orjson.dumps(record)
        event_kind = EVENT_KIND[kind]
        decode(event_kind, value)
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise OperationError(f"a field cannot be used: {exc}") from None
    except InvalidEvent as exc:  # "adjustment.points: must not be 0, got 0" -> "points: ..."
        raise OperationError(exc.message.removeprefix(f"{event_kind}.")) from None
    return Operation(kind, customer_id, event_id, topics.for_kind(event_kind), value, at)


class OperationsProducer:
    """Produces operations to their topics, to the customer's own partition."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self.idempotent = False
        self._lock = asyncio.Lock()

    def _new(self, idempotent: bool) -> AIOKafkaProducer:
        return AIOKafkaProducer(**client_kwargs(self.settings), acks="all",
                                enable_idempotence=idempotent, linger_ms=0,
                                request_timeout_ms=int(SEND_TIMEOUT_S * 1000),
                                client_id=f"{self.settings.app_id}-operations")

    async def start(self) -> None:
        async with self._lock:
            if self.producer is not None:
                return
            producer = self._new(True)
            try:
                await producer.start()  # asks the broker for a producer id
                self.idempotent = True
            except (kafka_errors.UnknownError, kafka_errors.UnsupportedVersionError,
                    kafka_errors.ClusterAuthorizationFailedError) as exc:
                await producer.stop()
                log.warning("the broker refused an idempotent producer (%s): member "
                            "operations are produced with acks=all alone; their event ids "
                            "keep a duplicate record harmless", type(exc).__name__)
                producer = self._new(False)
                await producer.start()
            self.producer = producer

    async def stop(self) -> None:
        async with self._lock:
            if self.producer is not None:
                await self.producer.stop()
                self.producer = None

    async def send(self, op: Operation) -> tuple[int, int]:
        """Produce and wait for the brokers' acknowledgement: (partition, offset)."""
        await self.start()
        assert self.producer is not None
        partition = owner(op.customer_id, self.settings.partitions)
        meta = await asyncio.wait_for(
            self.producer.send_and_wait(op.topic, op.value, key=op.customer_id.encode(),
                                        partition=partition), SEND_TIMEOUT_S)
        return meta.partition, meta.offset
