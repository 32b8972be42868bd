"""The referral layer (``processors/layer.py``): the record and the ``referrals`` records.

``on_event`` asks ``decide`` (``processors/referral/decide.py``) and keeps the record and
the records for the ``referrals`` topic; the ledger entries of the same decision are
loyalty's (``processors.loyalty`` asks ``decide`` too: a pure function of the same
arguments gives the same answer). Nothing is time-driven: the window and the return
window are judged on the events' own times, so ``on_tick`` and ``next_due`` have nothing
to do. The record stays ``None`` for every customer the programme never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from processors.layer import Reaction
from processors.referral.decide import CustomerState, decide, rewarded_in_period
from processors.referral.record import EMPTY, STATUS_NAMES, from_wire, to_wire

if TYPE_CHECKING:
    from processors.rules import Rules
    from schemas.events import Event


class ReferralLayer:
    name, field, wire_key = "referral", "referral", "ref"

    def on_event(self, before: CustomerState, after: CustomerState, event: Event,
                 rules: Rules, now: int) -> Reaction:
        d = decide(before, after, event, rules)  # the same record object when unchanged
        return Reaction(d.record, d.outputs)

    def on_tick(self, before: CustomerState, after: CustomerState, rules: Rules,
                at: int) -> Reaction:
        return Reaction(after.referral)

    def next_due(self, state: CustomerState, rules: Rules) -> int | None:
        return None

    def view_fields(self, state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
        """``referral_status`` (None, claimed, rewarded, refused, clawed_back: the
        customer's own referral), ``referral_order_id`` (the qualifying order),
        ``referral_bonus_points`` (the welcome bonus credited and not taken back),
        ``referrals_rewarded`` / ``referrals_clawed_back`` (as a referrer, ever) and
        ``referrals_rewarded_in_period`` (in the cap's ``period_days`` up to ``as_of``).
        ``referred_by`` is the profile's column."""
        r = state.referral or EMPTY
        return {"referral_status": STATUS_NAMES[r.status],
                "referral_order_id": r.order_id,
                "referral_bonus_points": r.credited,
                "referrals_rewarded": r.rewarded,
                "referrals_clawed_back": r.clawed,
                "referrals_rewarded_in_period": rewarded_in_period(state.referral, as_of,
                                                                   rules)}

    def to_wire(self, record: Any, state: CustomerState) -> Any:
        return to_wire(record)

    def from_wire(self, value: Any, base: Mapping[str, Any]) -> Any:
        return from_wire(value)


LAYER = ReferralLayer()
