"""States for the referral tests: a customer state with the fields given."""

from __future__ import annotations

from typing import Any

from processors.state import CustomerState


def state(cid: str, **fields: Any) -> CustomerState:
    return CustomerState(customer_id=cid, **fields)
