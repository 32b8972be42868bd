"""Per-customer state: what is remembered about one customer, bounded whatever its history.

Theory of operation
-------------------
``CustomerState`` is an immutable value; ``processors.customer.apply`` builds the next one.
Every field is chosen so that the final state is CONFLUENT: it does not depend on how a
history is split into batches, nor on how the input topics interleave, as long as each
topic keeps its own order and no event is too late. Concretely each field is one of

* a sum or count (order-independent);
* a min / max (order-independent);
* a "latest" value that only one topic writes (depends on that topic's order only;
  latest = greatest ``occurred_at``, ties to the later event of that topic);
* a bounded set pruned by a rule that depends only on its own content and on
  ``max_event_at`` (which only grows): an element is dropped once it is older than the
  horizon, and an accepted event is never older than the horizon (an event is too late
  when ``occurred_at < kind_max[its kind] - allowed_lateness``), so nothing is ever
  added to a part that was already pruned; a capped set keeps the greatest elements by a
  total order, and "top-K" commutes with inserting.

Field definitions (times are epoch ms UTC, money is minor units of the reporting currency,
days are UTC day numbers ``occurred_at // 86_400_000``; "purchase" means a purchase event
with ``kind = purchase``, "refund" one with ``kind = refund``):

* ``max_event_at``: greatest ``occurred_at`` of any accepted event of the customer.
* ``kind_max``: greatest ``occurred_at`` per event kind (purchase, ticket, survey, member
  operation = redemption or adjustment, customer record, referral record). Lateness,
  bucket pruning and dedup expiry use the clock of the event's own kind (a max: confluent
  across topic interleavings).
* ``first_purchase_at`` / ``last_purchase_at``: min / max ``occurred_at`` of purchases.
* ``purchase_count`` / ``refund_count``: number of purchases / refunds.
* ``gross_spend_minor``: sum of purchase amounts; ``refunds_minor``: sum of refund amounts;
  ``total_spend_minor`` = gross - refunds (a refund larger than it is rejected).
* ``days``: sparse day buckets ``(day, orders, spend_minor, refunds_minor)`` for days
  ``d > max_day - horizon`` with ``horizon = 365 + ceil(allowed_lateness / 1 day)`` and
  ``max_day = day(kind_max[purchase])``; ``orders``/``spend_minor`` count purchases,
  ``refunds_minor`` sums refunds that occurred that day. The extra days beyond 365 make the
  windows exact for any ``as_of >= kind_max[purchase] - allowed_lateness``.
* ``archived_purchase_days``: distinct purchase days that have left the bucket horizon;
  ``purchase_days`` = archived + buckets with ``orders > 0``.
* ``average_order_value_minor`` = round_half_even(gross / purchase_count).
* ``mean_interpurchase_gap_days`` = (day(last) - day(first)) / (purchase_days - 1), for two
  or more purchase days (depends on the set of days only, not on arrival order).
* windows N in (30, 90, 365) as of a time ``as_of``: sums over buckets with
  ``as_of_day - N < day <= as_of_day``: ``orders_Nd``, ``spend_Nd_minor`` (gross),
  ``refunds_Nd_minor``, ``net_spend_Nd_minor``.
* ``tickets_opened``: accepted ``opened`` events; ``tickets_reopened``: ``reopened`` events.
* ``open_tickets``: tickets opened or reopened and not yet resolved/closed, at most
  ``support.max_open_tickets`` (opening one more drops the oldest by
  ``(opened_at, ticket_id)``, counted in ``tickets_dropped``); each keeps ``opened_at`` (the
  reopen time for a reopened ticket), the latest ``priority`` and whether it was responded.
* ``sla_breaches``: settled breaches: a first response (``responded``, or ``resolved`` /
  ``closed`` with no response before) later than ``opened_at + first_response``, and a
  ``resolved``/``closed`` later than ``opened_at + resolution``; at most one of each kind
  per opening. ``view`` adds the breaches of still-open tickets whose deadline < ``as_of``.
* ``last_sentiment`` / ``last_sentiment_at``: latest ticket event carrying a sentiment.
* ``nps_score`` / ``nps_at``: latest NPS answer; class promoter 9-10, passive 7-8,
  detractor 0-6.
* ``csat`` / ``ces``: the latest ``surveys.rolling_answers`` answers ``(at, score)`` of that
  kind by ``occurred_at``; rolling CSAT/CES = their mean. ``surveys_answered``: all answers.
* ``seen``: dedup window ``(at, key, kind)``; ``key`` = 64-bit blake2b of
  ``"<kind>:<event_id>"``; kept while ``at >= kind_max[kind] - allowed_lateness``, at most
  ``dedup_window_max`` of each kind (the greatest by ``(at, key)``).
* ``profile``: what the ``customers`` topic said (signup time and referrer, birthday, time
  zone, marketing consent per channel): mins and per-field "latest" values written by that
  topic only (``processors/profile.py``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

# the layers' records, from modules without logic (the layers' logic imports this module)
from processors.churn.records import ChurnState
from processors.engagement.record import Engagement
from processors.loyalty.records import LoyaltyState
from processors.money import round_half_even
from processors.referral.record import ReferralState
from processors.timeutil import DAY_MS, day_of

WINDOWS_DAYS: tuple[int, ...] = (30, 90, 365)
NPS_PROMOTER_MIN = 9
NPS_DETRACTOR_MAX = 6


class DayBucket(NamedTuple):
    day: int
    orders: int
    spend_minor: int
    refunds_minor: int


class OpenTicket(NamedTuple):
    ticket_id: str
    opened_at: int
    priority: str
    responded: bool


class Answer(NamedTuple):
    at: int
    score: int


class Consent(NamedTuple):
    channel: str  # one of schemas.events.CONSENT_CHANNELS
    opted_in: bool
    at: int  # occurred_at of the consent record that set it


class Profile(NamedTuple):
    """What the customers topic said (``processors/profile.py``): a base record."""

    signup_at: int | None = None
    referred_by: str | None = None
    birth_date: str | None = None  # "--MM-DD"
    birth_date_at: int | None = None
    time_zone: str | None = None  # IANA name
    time_zone_at: int | None = None
    consent: tuple[Consent, ...] = ()  # sorted by channel, at most one a channel


class Seen(NamedTuple):
    at: int
    key: int
    kind: int = 0  # KIND_INDEX of the event's kind: each kind's entries expire on its own clock


# Event kinds in the order of ``CustomerState.kind_max``. Redemptions and adjustments are
# both member operations (a till, the API, an operator): they share one clock (lateness and
# dedup expiry) and one dedup cap; their dedup keys differ by kind. The referral
# programme's records (the referrals topic, written by the workers) have a clock of their
# own and a longer lateness (``lateness_of``): they carry the qualifying purchase's time and
# reach the referrer a round trip after it, so during a history load they arrive behind
# the referrer's own member operations by however far the load moved meanwhile.
KIND_INDEX: dict[str, int] = {"purchase": 0, "ticket": 1, "survey": 2, "redemption": 3,
                              "customer": 4, "adjustment": 3, "referral": 5}
KINDS = max(KIND_INDEX.values()) + 1  # clocks in kind_max
PURCHASE_KIND = 0
REFERRAL_KIND = 5


# A msgspec Struct rather than a frozen dataclass, for the hot path: ``evolve`` (msgspec's
# ``structs.replace``) is ~5x faster than the dataclass replacer was, and with ``gc=False``
# the cached states (~50,000 a worker) are not tracked by the cyclic GC. That is safe because
# a state never refers back to a state: its fields are ints, strs, floats, None, tuples of
# NamedTuples and the LoyaltyState / ChurnState / Profile records, none of which holds a state.
class CustomerState(msgspec.Struct, frozen=True, gc=False):
    customer_id: str
    max_event_at: int | None = None
    # newest occurred_at per event kind (KIND_INDEX order; 0: none yet). Lateness is judged
    # per kind, so a backfill of a year of purchases followed by the same year of tickets
    # (one file per kind) is not "too late" for the tickets.
    kind_max: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)
    # purchases
    first_purchase_at: int | None = None
    last_purchase_at: int | None = None
    purchase_count: int = 0
    refund_count: int = 0
    gross_spend_minor: int = 0
    refunds_minor: int = 0
    archived_purchase_days: int = 0
    days: tuple[DayBucket, ...] = ()  # sorted by day
    # support
    tickets_opened: int = 0
    tickets_reopened: int = 0
    tickets_dropped: int = 0
    sla_breaches: int = 0
    open_tickets: tuple[OpenTicket, ...] = ()  # sorted by (opened_at, ticket_id)
    last_sentiment: float | None = None
    last_sentiment_at: int | None = None
    # surveys
    nps_score: int | None = None
    nps_at: int | None = None
    csat: tuple[Answer, ...] = ()  # sorted by at, ties in arrival order
    ces: tuple[Answer, ...] = ()
    surveys_answered: int = 0
    # dedup
    seen: tuple[Seen, ...] = ()  # sorted
    # The layers' records (processors/layer.py): one field per layer that keeps one, named
    # by its ``field`` in processors/registry.py; a new one is additive on the wire (a new
    # ``wire_key``), otherwise bump processors.wire.VERSION.
    # loyalty: the points account (processors/loyalty/; None until the first points)
    loyalty: LoyaltyState | None = None
    # churn: score, level with hysteresis, alert bookkeeping (processors/churn/; None
    # until the first evaluation). Order-dependent, unlike the fields above: it records what
    # was alerted when.
    churn: ChurnState | None = None
    # profile: signup, referrer, birthday, time zone, consent (processors/profile.py; None
    # until the first record of the customers topic)
    profile: Profile | None = None
    # engagement: segment, occasions handled, the last message (processors/engagement/;
    # None until the customer's first event with the engagement layer). Order-dependent
    # like churn: it records what was sent when.
    engagement: Engagement | None = None
    # referral: the referral programme (processors/referral/; None for every customer the
    # programme never touched)
    referral: ReferralState | None = None

    @property
    def total_spend_minor(self) -> int:
        return self.gross_spend_minor - self.refunds_minor

    @property
    def purchase_days(self) -> int:
        return self.archived_purchase_days + sum(1 for b in self.days if b.orders > 0)

    @property
    def average_order_value_minor(self) -> int | None:
        if not self.purchase_count:
            return None
        return round_half_even(self.gross_spend_minor, self.purchase_count)

    @property
    def mean_interpurchase_gap_days(self) -> float | None:
        n = self.purchase_days
        if n < 2 or self.first_purchase_at is None or self.last_purchase_at is None:
            return None
        return (day_of(self.last_purchase_at) - day_of(self.first_purchase_at)) / (n - 1)

    @property
    def nps_class(self) -> str | None:
        return None if self.nps_score is None else nps_class(self.nps_score)


_replace = msgspec.structs.replace


def evolve(state: CustomerState, changes: dict[str, Any]) -> CustomerState:
    """``state`` with ``changes`` (field name -> new value) applied, as a new state;
    ``state`` is unchanged, an unknown field name raises TypeError. That is
    ``msgspec.structs.replace(state, **changes)``: ~0.5 us for a real state, where the
    frozen-dataclass replacer it replaced took ~2.8 us."""
    return _replace(state, **changes)


def nps_class(score: int) -> str:
    if score >= NPS_PROMOTER_MIN:
        return "promoter"
    if score <= NPS_DETRACTOR_MAX:
        return "detractor"
    return "passive"


def bucket_horizon_days(allowed_lateness_ms: int) -> int:
    """Buckets are kept for days ``d > max_day - horizon`` (see the module docstring)."""
    return WINDOWS_DAYS[-1] + -(-allowed_lateness_ms // DAY_MS)


class WindowSums(NamedTuple):
    orders: int
    spend_minor: int
    refunds_minor: int


def window_sums(state: CustomerState, as_of: int) -> dict[int, WindowSums]:
    """Rolling sums per window length N over days ``(as_of_day - N, as_of_day]``."""
    as_of_day = day_of(as_of)
    acc = {n: [0, 0, 0] for n in WINDOWS_DAYS}
    for b in state.days:
        age = as_of_day - b.day
        if age < 0:
            continue
        for n in WINDOWS_DAYS:
            if age < n:
                a = acc[n]
                a[0] += b.orders
                a[1] += b.spend_minor
                a[2] += b.refunds_minor
    return {n: WindowSums(*a) for n, a in acc.items()}
