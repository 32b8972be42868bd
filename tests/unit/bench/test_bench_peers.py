"""bench/peers.py's rate windows and the Quix job's per-customer state (pure helpers)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from tests.paths import ROOT

_spec = importlib.util.spec_from_file_location(
    "bench_peers", ROOT / "bench" / "peers.py")
assert _spec is not None and _spec.loader is not None
peers = importlib.util.module_from_spec(_spec)
sys.modules["bench_peers"] = peers  # its dataclasses look their module up
_spec.loader.exec_module(peers)


def test_rates_count_after_the_first_record_and_between_20_and_90_percent() -> None:
    rates = peers.Rates(10)
    # records 1-10 at 100 s (a late first record: the join), then 1 s apart from 101 s
    times = [100.0, *(101.0 + i for i in range(9))]
    done = [rates.tick(t) for t in times]
    assert done == [False] * 9 + [True]
    assert rates.first_to_last == 9 / 9.0  # 9 records after the first, over 109 - 100 s
    assert rates.window == (9 - 2) / (108.0 - 101.0)  # records 2 -> 9, at 101 s and 108 s


def test_rates_have_no_value_before_their_window_is_complete() -> None:
    rates = peers.Rates(10)
    for t in range(5):
        rates.tick(float(t))
    assert rates.window is None
    assert peers.Rates(10).first_to_last is None


class _State:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


def test_quix_state_counts_events_and_keeps_net_spend_and_purchase_span() -> None:
    state = _State()
    events = [
        {"kind": "purchase", "amount_minor": 500, "occurred_at": "2026-03-02T10:00:00.000Z"},
        {"status": "opened", "occurred_at": "2026-01-01T00:00:00.000Z"},  # a ticket
        {"kind": "refund", "amount_minor": 200, "occurred_at": "2026-03-05T10:00:00.000Z"},
        {"kind": "purchase", "amount_minor": 100, "occurred_at": "2026-02-01T09:00:00.000Z"},
    ]
    for event in events:
        peers.keep_customer(event, state)
    # the refund counts in the spend, not as a purchase
    assert state.values["s"] == [4, 400, "2026-02-01T09:00:00.000Z",
                                 "2026-03-02T10:00:00.000Z"]
