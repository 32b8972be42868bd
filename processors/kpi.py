"""KPI aggregates: what a state change adds to its partition's counters, and the formulas.

Theory of operation
-------------------
Every KPI is a ratio of sums that partitions can add up exactly. ``deltas(before, after,
event, rules)`` turns one accepted state change into integer increments (``KpiDelta``) that
the engine adds with HINCRBY in the same atomic commit as the new state, so each event
counts exactly once whatever the number of workers; the shell reads the partitions'
counters at scrape time and ``window`` sums them over the rolling window. Averages are never
stored: NPS, CSAT, CES, average order value, ... are formed from the summed counters, in
``report`` and in the PromQL of ``deploy/prometheus`` (which mirrors it).

Two hashes per partition (``KpiDelta.bucket``):

* ``d``: day counters, field ``<day>:<name>[:<label>...]`` (UTC day number of the event
  time). What happened on that day::

      sv:<kind>:<class>:<touchpoint>  survey responses     ss:<kind>:<touchpoint>  score sum
      ord:<ch> purchases   rev:<ch> gross revenue (minor units)   ref:<ch> refunds (minor)
      top:<ch> tickets opened   tre:<ch> reopened   sla:<ch> SLA deadlines settled
      slb:<ch> of them missed   frc:<ch> first responses   frw:<ch> their wait (ms)
      pti / ptr / ptx  points issued / redeemed / forfeited (expired, clawed back)
      new  customers whose first purchase is that day
      act:<len>  activity segments starting that day (below)

* ``g``: levels, no day: ``customers`` (every customer with an accepted event),
  ``tier:<tier>``, ``risk:<level>``, ``points`` (outstanding balance, the liability),
  ``open:<priority>`` (open tickets), ``seg:<segment>`` (the engagement layer's primary
  segment; that layer writes its own moves, processors/engagement/layer.py). A transition
  moves one count between two fields.

Customer-set KPIs come from per-customer facts counted into day buckets. With ``W =
window_days`` and ``as_of`` day ``A``: a customer is *active at day t* when they bought on
a day in ``(t - W, t]``. Each purchase day ``d`` of a customer starts an *activity segment*
of length ``len = min(next purchase day - d, 2W)`` (``2W`` when there is none yet); the
customer is active at ``t`` exactly when the segment of the latest purchase day ``d <= t``
has ``t - d < W`` and ``len > t - d``. Counting segments per (start day, len) therefore
gives, for any ``t``, the number of customers active at ``t``, by summing the days in ``(t -
W, t]`` -- and, because ``len`` is exact up to ``2W``, also how many of those made no purchase
up to ``A``. So, with ``S = A - W``:

* E (active at the end) = segments with ``d`` in ``(A - W, A]`` and ``len > A - d``;
* S (active at the start) = segments with ``d`` in ``(A - 2W, A - W]`` and ``len > S - d``;
* lost = those of S with ``len > A - d`` (no purchase in ``(A - W, A]``);
* N (new) = ``new`` in ``(A - W, A]``.

A purchase on a new purchase day changes at most two segments (its own and its
predecessor's), both within ``2W`` days of it, so the state's day buckets (365+ days) always
hold what ``deltas`` needs. Day fields older than ``2W`` days before ``as_of`` are never read
again; ``window`` lists them for the shell to delete (the Redis hash stays bounded).

Everything is a sum of per-event or per-customer contributions, and the customer facts
(purchase-day set, first purchase, tier, ...) are confluent state fields, so the counters do
not depend on batch splits or topic interleaving. A customer's contributions start at its
first accepted event (``before.max_event_at is None``): counters start empty with the
state, and a Redis prefix must not be shared with a version that did not count them.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from processors.layer import Reaction
from processors.outputs import KpiDelta
from processors.rules import Rules
from processors.state import CustomerState, DayBucket, nps_class
from processors.support import settles
from processors.timeutil import day_of
from schemas.events import Event, Purchase, Redemption, SupportTicket, Survey

DAYS = "d"
GAUGES = "g"
OTHER = "other"
ANSWER_CLASSES: dict[str, tuple[str, ...]] = {
    "nps": ("promoter", "passive", "detractor"),  # 9-10, 7-8, 0-6
    "csat": ("satisfied", "neutral", "dissatisfied"),  # 4-5, 3, 1-2
    "ces": ("low_effort", "neutral", "high_effort"),  # 5-7, 4, 1-3 ("it was easy": 7)
}
PURCHASE_FIELDS = ("ord", "rev", "ref")
TICKET_FIELDS = ("top", "tre", "sla", "slb", "frc", "frw")
POINTS_FIELDS = ("pti", "ptr", "ptx")
CUSTOMER_SETS = ("active", "start", "new", "lost")

Counts = dict[tuple[str, ...], int]


def answer_class(kind: str, score: int) -> str:
    if kind == "nps":
        return nps_class(score)
    hi, mid = (4, 3) if kind == "csat" else (5, 4)
    if score >= hi:
        return ANSWER_CLASSES[kind][0]
    return ANSWER_CLASSES[kind][1] if score == mid else ANSWER_CLASSES[kind][2]


# -- increments --------------------------------------------------------------------------


def deltas(before: CustomerState, after: CustomerState, event: Event | None, rules: Rules,
           *, at: int | None = None) -> tuple[KpiDelta, ...]:
    """The KPI increments of one accepted state change ``before -> after``.

    ``event`` caused it; a change without an event (the inactivity scanner, loyalty expiry)
    passes ``event=None`` and its event time as ``at``.
    """
    t = event.occurred_at if event is not None else at
    if t is None:
        raise ValueError("a change without an event needs its event time (at=)")
    day = day_of(t)
    out: list[KpiDelta] = []
    new = before.max_event_at is None
    if new:
        out.append(KpiDelta(GAUGES, "customers", 1))
    if isinstance(event, Survey):
        tp = rules.kpi.touchpoint(event.touchpoint)
        cls = answer_class(event.kind, event.score)
        out.append(KpiDelta(DAYS, f"{day}:sv:{event.kind}:{cls}:{tp}", 1))
        out.append(KpiDelta(DAYS, f"{day}:ss:{event.kind}:{tp}", event.score))
    elif isinstance(event, Purchase):
        ch = rules.kpi.channel(event.channel)
        if event.kind == "purchase":
            out.append(KpiDelta(DAYS, f"{day}:ord:{ch}", 1))
            out.append(KpiDelta(DAYS, f"{day}:rev:{ch}",
                                after.gross_spend_minor - before.gross_spend_minor))
            _first_purchase(before, after, out)
            _activity(before.days, after.days, day, 2 * rules.kpi.window_days, out)
        else:
            refunded = after.refunds_minor - before.refunds_minor
            out.append(KpiDelta(DAYS, f"{day}:ref:{ch}", refunded))
    elif isinstance(event, SupportTicket):
        _ticket(before, after, event, day, rules.kpi.channel(event.channel), out)
    if _SECTIONS:
        _levels(before, after, new, event, day, rules, out)
    return tuple(out)


def _first_purchase(before: CustomerState, after: CustomerState, out: list[KpiDelta]) -> None:
    old = before.first_purchase_at
    first = after.first_purchase_at
    assert first is not None
    if old is None:
        out.append(KpiDelta(DAYS, f"{day_of(first)}:new", 1))
    elif day_of(old) != day_of(first):
        out.append(KpiDelta(DAYS, f"{day_of(old)}:new", -1))
        out.append(KpiDelta(DAYS, f"{day_of(first)}:new", 1))


def _is_purchase_day(days: tuple[DayBucket, ...], day: int) -> bool:
    i = bisect.bisect_left(days, day, key=_day)
    return i < len(days) and days[i].day == day and days[i].orders > 0


def _day(b: DayBucket) -> int:
    return b.day


def _activity(before: tuple[DayBucket, ...], after: tuple[DayBucket, ...], day: int, cap: int,
              out: list[KpiDelta]) -> None:
    """Segment changes when ``day`` becomes a purchase day (see the module docstring)."""
    if before and before[-1].day >= day:
        if (before[-1].day == day and before[-1].orders) or _is_purchase_day(before, day):
            return
        i = bisect.bisect_left(after, day, key=_day)
    else:  # the common case: a purchase on a day after every bucket
        i = len(after) - 1
    j = i - 1
    while j >= 0 and after[j].orders == 0:
        j -= 1
    k = i + 1
    while k < len(after) and after[k].orders == 0:
        k += 1
    succ = after[k].day if k < len(after) else None
    out.append(KpiDelta(DAYS, f"{day}:act:{cap if succ is None else min(succ - day, cap)}", 1))
    if j >= 0:
        pred = after[j].day
        old = cap if succ is None else min(succ - pred, cap)
        now = min(day - pred, cap)
        if old != now:
            out.append(KpiDelta(DAYS, f"{pred}:act:{old}", -1))
            out.append(KpiDelta(DAYS, f"{pred}:act:{now}", 1))


def _ticket(before: CustomerState, after: CustomerState, ev: SupportTicket, day: int, ch: str,
            out: list[KpiDelta]) -> None:
    """Opened/reopened counts, SLA deadlines settled and missed, first-response times.

    A first response (``responded``, or ``resolved``/``closed`` with none before) settles the
    first-response deadline; ``resolved``/``closed`` settles the resolution deadline. A
    ticket dropped from a full table settles only the deadlines it had already missed.
    """
    status = ev.status
    breaches = after.sla_breaches - before.sla_breaches
    settled = 0
    if status in ("opened", "reopened"):
        out.append(KpiDelta(DAYS, f"{day}:{'top' if status == 'opened' else 'tre'}:{ch}", 1))
        settled = breaches
    else:
        tracked = next((o for o in before.open_tickets if o.ticket_id == ev.ticket_id), None)
        if tracked is not None:
            first, resolution = settles(tracked, status)
            settled = int(first) + int(resolution)
            if first:
                out.append(KpiDelta(DAYS, f"{day}:frc:{ch}", 1))
                out.append(KpiDelta(DAYS, f"{day}:frw:{ch}",
                                    max(0, ev.occurred_at - tracked.opened_at)))
    if settled:
        out.append(KpiDelta(DAYS, f"{day}:sla:{ch}", settled))
    if breaches:
        out.append(KpiDelta(DAYS, f"{day}:slb:{ch}", breaches))
    if before.open_tickets != after.open_tickets:
        change: dict[str, int] = defaultdict(int)
        for o in before.open_tickets:
            change[o.priority] -= 1
        for o in after.open_tickets:
            change[o.priority] += 1
        out.extend(KpiDelta(GAUGES, f"open:{p}", n) for p, n in change.items() if n)


# Loyalty and churn state live in sections of the customer state (``state.loyalty``,
# ``state.churn``; None until the customer has one) owned by their modules; read by name so
# that a section that does not exist yet simply counts as absent.
_STATE_FIELDS = frozenset(CustomerState.__struct_fields__)
_SECTIONS = tuple(s for s in ("loyalty", "churn") if s in _STATE_FIELDS)


def _tier_name(tier: Any, rules: Rules) -> str | None:
    """A tier as its name: loyalty keeps an index into ``rules.loyalty.tiers``."""
    if tier is None or isinstance(tier, str):
        return tier
    tiers = getattr(rules.loyalty, "tiers", ())
    return str(tiers[min(tier, len(tiers) - 1)].name) if tiers else str(tier)


def _move(out: list[KpiDelta], name: str, old: str | None, now: str | None) -> None:
    if old != now:
        if old is not None:
            out.append(KpiDelta(GAUGES, f"{name}:{old}", -1))
        if now is not None:
            out.append(KpiDelta(GAUGES, f"{name}:{now}", 1))


def _levels(before: CustomerState, after: CustomerState, new: bool, event: Event | None,
            day: int, rules: Rules, out: list[KpiDelta]) -> None:
    """Tier and risk-level moves; outstanding points; points issued, redeemed, forfeited.

    Points: ``issued`` = growth of lifetime points (earned minus clawed back), ``redeemed``
    = the balance drop on a redemption, ``forfeited`` = the rest of the balance drop
    (expiry, refund claw-back); issued - redeemed - forfeited = the balance change, so the
    outstanding total always equals the sum of the members' balances.
    """
    for section in _SECTIONS:
        s0 = None if new else getattr(before, section)
        s1 = getattr(after, section)
        if s0 is s1:
            continue
        if section == "churn":
            _move(out, "risk", getattr(s0, "level", None), getattr(s1, "level", None))
            continue
        t0, t1 = getattr(s0, "tier", None), getattr(s1, "tier", None)
        if t0 != t1:
            _move(out, "tier", _tier_name(t0, rules), _tier_name(t1, rules))
        change = getattr(s1, "balance", 0) - getattr(s0, "balance", 0)
        issued = max(0, getattr(s1, "lifetime_points", 0) - getattr(s0, "lifetime_points", 0))
        redeemed = -change if isinstance(event, Redemption) and change < 0 else 0
        forfeited = issued - redeemed - change
        if forfeited < 0:
            issued, forfeited = issued - forfeited, 0
        if change:
            out.append(KpiDelta(GAUGES, "points", change))
        for name, n in (("pti", issued), ("ptr", redeemed), ("ptx", forfeited)):
            if n:
                out.append(KpiDelta(DAYS, f"{day}:{name}", n))


_NOTHING = Reaction()


class KpiLayer:
    """The KPI increments as a layer: no record of its own; runs last, so it sees the
    change ``before -> after`` with every other layer's record already updated."""

    name, field, wire_key = "kpi", None, None

    def on_event(self, before: CustomerState, after: CustomerState, event: Event,
                 rules: Rules, now: int) -> Reaction:
        return Reaction(None, (), deltas(before, after, event, rules))

    def on_tick(self, before: CustomerState, after: CustomerState, rules: Rules,
                at: int) -> Reaction:
        if after is before:  # nothing changed: nothing to count
            return _NOTHING
        return Reaction(None, (), deltas(before, after, None, rules, at=at))

    def next_due(self, state: CustomerState, rules: Rules) -> int | None:
        return None

    def view_fields(self, state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
        return {}  # the gauges are aggregates (``report``), not a customer's columns

    def to_wire(self, record: Any, state: CustomerState) -> Any:
        raise TypeError("the KPI layer keeps no record")

    def from_wire(self, value: Any, base: Mapping[str, Any]) -> Any:
        raise TypeError("the KPI layer keeps no record")


LAYER = KpiLayer()


# -- reading ---------------------------------------------------------------------------------


def _field_str(f: str | bytes) -> str:
    return f.decode() if isinstance(f, bytes) else f


def window(day_fields: Mapping[Any, int | bytes | str], as_of: int, rules: Rules
           ) -> tuple[Counts, list[Any]]:
    """One partition's day counters summed over the window that ends on ``as_of``'s day.

    Returns ``(counts, stale)``: ``counts`` maps ``(name, *labels)`` to a sum (names as in
    the module docstring, plus the customer sets ``active``, ``start``, ``new``, ``lost``,
    always present), ``stale`` the fields (as given) that no window will read again.
    The shell runs the same sums inside Redis (``streams.worker.kpis.WINDOW_LUA``, tested to agree).
    """
    w = rules.kpi.window_days
    a = day_of(as_of)
    lo, lo2 = a - w, a - 2 * w
    out: Counts = defaultdict(int)
    for s in CUSTOMER_SETS:
        out[(s,)] = 0
    stale = []
    for raw, value in day_fields.items():
        f = _field_str(raw)
        d_s, _, rest = f.partition(":")
        d = int(d_s)
        if d <= lo2:
            stale.append(raw)
            continue
        if d > a:
            continue
        v = int(value)
        if rest.startswith("act:"):
            length = int(rest[4:])
            if d > lo:
                if length > a - d:
                    out[("active",)] += v
            else:
                if length > lo - d:
                    out[("start",)] += v
                if length > a - d:
                    out[("lost",)] += v
        elif d > lo:
            out[tuple(rest.split(":"))] += v
    return dict(out), stale


def levels(gauge_fields: Mapping[Any, int | bytes | str]) -> Counts:
    """One partition's level counters: ``(name, *labels) -> value``."""
    return {tuple(_field_str(f).split(":")): int(v) for f, v in gauge_fields.items()}


def combine(parts: Iterable[Counts]) -> Counts:
    """The sum of several partitions' counts (exact: every count is a sum)."""
    out: Counts = defaultdict(int)
    for c in parts:
        for k, v in c.items():
            out[k] += v
    return dict(out)


# -- the formulas ------------------------------------------------------------------------------


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def nps(promoters: int, detractors: int, responses: int) -> float | None:
    """Net Promoter Score: % promoters (9-10) - % detractors (0-6), -100..100."""
    r = ratio(promoters - detractors, responses)
    return None if r is None else 100 * r


def csat(satisfied: int, responses: int) -> float | None:
    """Customer satisfaction: share of 4-5 answers on the 1-5 scale, 0..1."""
    return ratio(satisfied, responses)


def ces(score_sum: int, responses: int) -> float | None:
    """Customer effort score: mean answer on the 1-7 scale."""
    return ratio(score_sum, responses)


def retention_rate(end: int, new: int, start: int) -> float | None:
    """(E - N) / S: customers at the end that are not new, per customer at the start."""
    return ratio(end - new, start)


def churn_rate(lost: int, start: int) -> float | None:
    """Customers lost in the window (active at its start, no purchase since) / S."""
    return ratio(lost, start)


def lifespan_days(churn: float | None, window_days: int, cap_days: int) -> float | None:
    """Average customer lifespan estimated as 1 / churn rate windows, at most the cap."""
    if churn is None:
        return None
    return float(cap_days) if churn == 0 else min(window_days / churn, float(cap_days))


def _sum(counts: Counts, name: str, **match: str) -> int:
    """Sum of ``name`` counts whose labels match (labels by position, see ``LABELS``)."""
    pos = {lbl: i + 1 for i, lbl in enumerate(LABELS[name])}
    return sum(v for k, v in counts.items()
               if k[0] == name and all(k[pos[lbl]] == want for lbl, want in match.items()))


LABELS: dict[str, tuple[str, ...]] = {
    "sv": ("kind", "class", "touchpoint"), "ss": ("kind", "touchpoint"),
    **{n: ("channel",) for n in (*PURCHASE_FIELDS, *TICKET_FIELDS)},
    **{n: () for n in (*POINTS_FIELDS, *CUSTOMER_SETS, "customers", "points")},
    "tier": ("tier",), "risk": ("level",), "open": ("priority",), "seg": ("segment",),
}


def report(counts: Counts, rules: Rules) -> dict[str, float | None]:
    """Every KPI from combined counts (``window`` + ``levels`` of all partitions). Keys are
    ``<kpi>`` for the whole, ``<kpi>:<channel or touchpoint>`` for a breakdown. Money is in
    major units of the reporting currency. The PromQL in deploy/prometheus mirrors this."""
    k = rules.kpi
    unit = 10 ** rules.minor_units[rules.reporting_currency]
    out: dict[str, float | None] = {}
    touchpoints = sorted({key[3] for key in counts if key[0] == "sv"})
    for tp in (None, *touchpoints):
        m = {} if tp is None else {"touchpoint": tp}
        sfx = "" if tp is None else f":{tp}"
        out["nps" + sfx] = nps(_sum(counts, "sv", kind="nps", **{"class": "promoter"}, **m),
                               _sum(counts, "sv", kind="nps", **{"class": "detractor"}, **m),
                               _sum(counts, "sv", kind="nps", **m))
        out["csat" + sfx] = csat(_sum(counts, "sv", kind="csat", **{"class": "satisfied"}, **m),
                                 _sum(counts, "sv", kind="csat", **m))
        out["ces" + sfx] = ces(_sum(counts, "ss", kind="ces", **m),
                               _sum(counts, "sv", kind="ces", **m))
    channels = sorted({key[1] for key in counts if key[0] in PURCHASE_FIELDS + TICKET_FIELDS})
    for ch in (None, *channels):
        m = {} if ch is None else {"channel": ch}
        sfx = "" if ch is None else f":{ch}"
        revenue = _sum(counts, "rev", **m) / unit
        out["average_order_value" + sfx] = ratio(revenue, _sum(counts, "ord", **m))
        out["sla_breach_ratio" + sfx] = ratio(_sum(counts, "slb", **m), _sum(counts, "sla", **m))
        out["first_response_seconds" + sfx] = ratio(_sum(counts, "frw", **m) / 1000,
                                                    _sum(counts, "frc", **m))
    e, n, s, lost = (_sum(counts, x) for x in ("active", "new", "start", "lost"))
    out["active_customers"] = e
    out["retention_rate"] = retention_rate(e, n, s)
    out["churn_rate"] = churn = churn_rate(lost, s)
    out["purchase_frequency"] = ratio(_sum(counts, "ord"), e)
    life = out["customer_lifespan_days"] = lifespan_days(churn, k.window_days, k.lifespan_cap_days)
    # CLTV = AOV x frequency x lifespan = revenue per active customer per window x windows
    per_customer = ratio(_sum(counts, "rev") / unit, e)
    out["cltv"] = None if per_customer is None or life is None else (
        per_customer * life / k.window_days)
    out["customers"] = _sum(counts, "customers")
    out["points_outstanding"] = _sum(counts, "points")
    out["points_issued"] = _sum(counts, "pti")
    out["points_redeemed"] = _sum(counts, "ptr")
    out["open_tickets"] = _sum(counts, "open")
    for key, v in counts.items():
        if key[0] in ("tier", "risk", "open", "seg"):
            out[f"{key[0]}:{key[1]}"] = v
    return out
