"""What is held about one customer (GDPR Art. 15, subject access): ``GET
/customers/{id}/export`` and ``pulse customer ID --json`` give the same document.

Theory of operation
-------------------
Everything the worker keeps about a customer lives in the customer's partition shard in
Redis (``streams/worker/keys.py``): the state (``c:<id>``), the latest ledger entries
(``ledger:<id>``), the next time-driven change (the ``due`` sorted sets) and failed tries of
it (``tickfail``). ``subject_access`` reads them and writes one JSON document:

* ``customer``: the export row as of the partition clock (``views.COLUMNS``: purchases,
  windows, support, surveys, points, churn score, level and reasons), readable units;
* ``ledger``: the latest ledger entries, newest first;
* ``churn``: score, level and the reasons behind them (also in the row, named here);
* ``segment``: the customer's engagement segment, the export row's ``segment`` column
  (README "Engagement");
* ``stored``: the state exactly as stored (``processors/wire.py`` names its keys), the time
  of the next time-driven change and failed tries of it.

The output topics (ledger entries, alerts, engagement records) and the input topics hold
the customer's records too, for their retention; the document says so in ``elsewhere``.
KPI counters hold no customer id and are not part of it.
"""

from __future__ import annotations

from typing import Any

import orjson

from processors.rules import Rules
from schemas.codec import format_time
from streams.settings import Settings
from streams.worker.partitioning import owner
from streams.worker.store import Store
from streams.worker.views import load_view

ELSEWHERE = ("Kafka keeps the customer's events on the input topics and the ledger entries, "
             "churn alerts and engagement records (segment changes, messages) on the output "
             "topics until their retention ends; KPI counters hold no customer id.")


async def ledger_of(store: Store, settings: Settings, customer_id: str
                    ) -> list[dict[str, Any]] | None:
    """The customer's latest ledger entries, newest first; ``None`` for an unknown customer."""
    partition = owner(customer_id, settings.partitions)
    if await store.get_state(partition, customer_id) is None:
        return None
    return [orjson.loads(x) for x in await store.recent_ledger(partition, customer_id)]


async def subject_access(store: Store, settings: Settings, rules: Rules, customer_id: str,
                         wall_ms: int, as_of: int | None = None) -> dict[str, Any] | None:
    """Everything held about the customer, as one JSON-ready document (the row as of
    ``as_of``, default the partition clock); ``None`` if nothing is (an unknown or erased
    customer). ``WireError`` if the stored state is unreadable."""
    partition = owner(customer_id, settings.partitions)
    raw = await store.get_state(partition, customer_id)
    if raw is None:
        return None
    got = await load_view(store, settings, rules, customer_id, as_of, wall_ms)
    if got is None:  # erased between the two reads
        return None
    due_at, failures = await store.time_driven(partition, customer_id)
    row = got.row
    return {
        "customer_id": customer_id,
        "generated_at": format_time(wall_ms),
        "customer": row,
        "ledger": got.ledger,
        "churn": {"score": row["churn_score"], "level": row["churn_level"],
                  "reasons": row["churn_reasons"]},
        "segment": row.get("segment"),
        "stored": {
            "state": orjson.loads(raw),
            "ledger_entries_kept": len(got.ledger),
            "next_time_driven_change_at": None if due_at is None else format_time(due_at),
            "time_driven_failures": failures,
        },
        "elsewhere": ELSEWHERE,
    }


async def load_subject_access(settings: Settings, rules: Rules, customer_id: str, wall_ms: int,
                              as_of: int | None = None) -> dict[str, Any] | None:
    store = Store.from_settings(settings)
    try:
        return await subject_access(store, settings, rules, customer_id, wall_ms, as_of)
    finally:
        await store.close()
