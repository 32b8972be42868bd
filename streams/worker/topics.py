"""Every topic, declared once. Import from here; never spell a topic name elsewhere.

The input topics are co-partitioned (same partition count) and keyed by ``customer_id``:
partition N of every input topic belongs to the same Redis shard ``{p<N>}`` and is always
assigned to the same worker (range assignor).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import ADJUSTMENT, CUSTOMER, PURCHASE, REDEMPTION, REFERRAL, SURVEY, TICKET
from streams.settings import Settings


@dataclass(frozen=True)
class Topics:
    purchases: str
    tickets: str
    surveys: str
    redemptions: str
    deadletter: str
    alerts: str
    points: str
    customers: str  # signups, profile updates, consent (an input, added after the others)
    adjustments: str
    audit: str
    engagement: str  # segment changes and proactive messages (processors/engagement)
    # the referral programme's records: an input that the workers themselves write (the
    # referred customer's worker to the referrer's and back; processors/referral/)
    referrals: str

    @classmethod
    def from_settings(cls, s: Settings) -> Topics:
        return cls(
            purchases=s.topic("purchases"),
            tickets=s.topic("tickets"),
            surveys=s.topic("surveys"),
            redemptions=s.topic("redemptions"),
            deadletter=s.topic("deadletter"),
            alerts=s.topic("alerts"),
            points=s.topic("points"),
            customers=s.topic("customers"),
            adjustments=s.topic("adjustments"),
            audit=s.topic("audit"),
            engagement=s.topic("engagement"),
            referrals=s.topic("referrals"),
        )

    @property
    def inputs(self) -> dict[str, str]:
        """Input topic name -> event kind it carries. The order is the engine's fixed merge
        order for records of equal event time (``Engine._take``): a new topic goes last, so
        that the existing topics' records keep the order they always had."""
        return {
            self.purchases: PURCHASE,
            self.tickets: TICKET,
            self.surveys: SURVEY,
            self.redemptions: REDEMPTION,
            self.customers: CUSTOMER,
            self.adjustments: ADJUSTMENT,
            self.referrals: REFERRAL,
        }

    def for_kind(self, kind: str) -> str:
        return {v: k for k, v in self.inputs.items()}[kind]

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.deadletter, self.alerts, self.points, self.audit, self.engagement)

    @property
    def customer_outputs(self) -> tuple[str, ...]:
        """The output topics keyed by customer with the worker's outputs about them: an
        erasure sends each a tombstone (streams/worker/erasure.py)."""
        return (self.alerts, self.points, self.engagement)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.inputs, *self.outputs)
