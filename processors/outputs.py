"""What the processors emit besides the new state.

Theory of operation: an ``Output`` is a record for an output topic (a ledger entry, a churn
alert). The shell writes ``as_dict()`` as JSON, keyed by ``customer_id``, to the topic named
by ``stream`` ("points" -> points-accruals, "alerts" -> churn-alerts). Every output carries
a deterministic id derived from its cause, so a re-sent output is a recognisable duplicate.

A ``KpiDelta`` is an increment of a KPI aggregate: ``bucket`` names a hash (relative to the
partition's key space, e.g. "nps:d20410"), ``field`` a counter in it. The shell adds them
in the same atomic commit as the state change that caused them, so aggregates count every
event exactly once and are right whatever the number of workers.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol


class Output(Protocol):
    @property
    def stream(self) -> str: ...

    @property
    def customer_id(self) -> str: ...

    def as_dict(self) -> dict[str, Any]: ...


class KpiDelta(NamedTuple):
    bucket: str
    field: str
    delta: int
