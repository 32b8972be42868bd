"""States for the referral tests: a customer state with just the fields given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processors.profile import Profile
from processors.referral.record import ReferralState


@dataclass(frozen=True)
class _State:  # the fields of CustomerState the programme reads
    customer_id: str
    referral: ReferralState | None = None
    profile: Profile | None = None
    first_purchase_at: int | None = None
    purchase_count: int = 0


def state(cid: str, **fields: Any) -> Any:
    return _State(cid, **fields)
