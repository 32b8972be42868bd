"""The decoded customer states a worker keeps between batches (PULSE_STATE_CACHE_CUSTOMERS).

A worker owns its partitions, so the state it committed last for a customer is the state in
Redis: the customer's next event need not read and decode it again. Per partition, the cache
holds the decoded states as last committed, least recently used first. A batch reads from
Redis only the customers it does not hold; ``states_for`` joins what Redis returned
(decoded) with what the cache holds, for the shard transaction; once the batch's commit went
through, ``keep`` takes the batch's states and drops the least recently used beyond the
limit. A commit that was refused leaves the cache as it was.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from processors import wire
from processors.state import CustomerState


class StateCache(OrderedDict[str, CustomerState]):
    def states_for(self, loaded: Mapping[str, bytes | None], customers: Iterable[str]
                   ) -> dict[str, CustomerState | None]:
        """The states of ``customers``: decoded from ``loaded`` (what Redis returned for
        those the cache does not hold; ``None``: no state yet), else the cached ones,
        which count as used."""
        states: dict[str, CustomerState | None] = {}
        for cid, raw in loaded.items():
            states[cid] = wire.loads(raw) if raw is not None else None
        for cid in customers:
            if cid not in states:  # not loaded: its cached state is the committed one
                states[cid] = self[cid]
                self.move_to_end(cid)
        return states

    def keep(self, states: Mapping[str, CustomerState], limit: int) -> None:
        """``states`` are in Redis now: cache them, evicting the least recently used."""
        if limit <= 0:
            self.clear()
            return
        self.update(states)
        for _ in range(len(self) - limit):
            self.popitem(last=False)
