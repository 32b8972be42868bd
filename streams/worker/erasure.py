"""Erasure (GDPR Art. 17): what the worker does with an ``erasure_requested`` record of the
``customers`` topic (README "Member operations").

Theory of operation
-------------------
Erasing is a storage operation, not a domain transition: the customer stops existing for
the worker, so the shard transaction handles it where it handles the partition's keys.
When the record is applied (in event-time order with the partition's other records):

* the customer's state (its dedup ids with it), latest ledger entries, entries in the due
  sets (live and replay schedules) and failed-tick count are deleted in the partition's
  commit, the same atomic Lua call that moves the offsets (``ShardCommit.erased``): after
  it no Redis key and no value of the shard names the customer. An event of the customer
  later in the batch, or later at all, starts a fresh state, like a first event;
* the same commit's outbox gets a tombstone (key = customer id, null value) for each output
  topic keyed by customer (``Topics.customer_outputs``), so that a compacted copy forgets
  them, and a receipt on the audit topic (``receipt``);
* the KPI gauges of present levels (customers, tiers, risk levels, points outstanding, open
  tickets) drop the customer's contribution (``level_deltas``), since an erased customer is
  no longer one of them; the day counters of what happened (orders, revenue, survey
  answers, points issued...) keep their counts: they hold no customer id.

The receipt names the customer by a keyed hash, ``HMAC-SHA256(key, customer_id)``. Not a
plain hash: customer ids are short and guessable (``C000042``), so hashing every candidate
would find the one a plain hash came from, and the receipt would still identify the person.
With a secret key only who holds it can answer "was C000042 erased, and when?" by computing
the hash (``customer_hash``); to anyone else the audit topic says only that someone was.
The key is ``PULSE_ERASURE_KEY`` or, unset, one generated at a worker's first start and kept
in Redis (``<prefix>:erasure-key``; every worker of the deployment reads the same one).
``key_id`` (the key's own hash, shortened) says which key made a receipt, across a rotation.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from processors import kpi
from processors.outputs import KpiDelta
from processors.rules import Rules
from processors.state import CustomerState
from schemas.codec import format_time
from schemas.events import ERASURE_REQUESTED, CustomerEvent, Event

HASH = "hmac-sha256"
REMOVED_KEYS = ("state", "dedup_ids", "ledger_cache", "due_entries", "tick_failures")


def is_erasure(event: Event) -> bool:
    return isinstance(event, CustomerEvent) and event.kind == ERASURE_REQUESTED


def customer_hash(key: bytes, customer_id: str) -> str:
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"pulse-erasure-key\0" + key).hexdigest()[:12]


def receipt(key: bytes, event: Event, state: CustomerState | None, erased_at: int,
            tombstones: tuple[str, ...]) -> dict[str, Any]:
    """The audit record of one erasure: who (keyed hash), when it was asked and done, what
    was removed. Deterministic for a record applied at a time (its id is the event's, keyed)."""
    rid = hmac.new(key, b"receipt\0" + event.event_id.encode(), hashlib.sha256).hexdigest()
    return {
        "receipt_id": f"erasure-{rid[:32]}",
        "customer_hash": customer_hash(key, event.customer_id),
        "hash": HASH,
        "key_id": key_id(key),
        "requested_at": format_time(event.occurred_at),
        "erased_at": format_time(erased_at),
        "source": event.source,
        "held": state is not None,  # False: nothing was held (unknown, or erased before)
        "removed": {
            "state": state is not None,
            "dedup_ids": 0 if state is None else len(state.seen),
            "ledger_cache": state is not None,
            "due_entries": state is not None,
            "tick_failures": state is not None,
        },
        "tombstones": list(tombstones),
        "kept": "KPI day counters (no customer id in them); the input topics' records until "
                "their retention",
    }


def receipt_bytes(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def level_deltas(state: CustomerState, rules: Rules, at: int) -> tuple[KpiDelta, ...]:
    """The KPI increments that take the customer out of the gauges of present levels: the
    change from its state to no state, as ``kpi.deltas`` computes it for a customer whose
    sections all become empty (tiers, risk levels, points outstanding with the balance
    counted as forfeited that day, open tickets, the engagement segment), and one customer
    less."""
    blank = CustomerState(customer_id=state.customer_id, max_event_at=state.max_event_at)
    tickets = [KpiDelta(kpi.GAUGES, f"open:{o.priority}", -1) for o in state.open_tickets]
    engagement = getattr(state, "engagement", None)
    segment = () if engagement is None or engagement.segment is None else (
        KpiDelta(kpi.GAUGES, f"seg:{engagement.segment}", -1),)
    return (*kpi.deltas(state, blank, None, rules, at=at), *tickets, *segment,
            KpiDelta(kpi.GAUGES, "customers", -1))
