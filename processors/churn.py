"""Churn risk: an explainable score, levels with hysteresis, alerts on events and on silence.

Theory of operation
-------------------
**The score** is the probability that the customer makes no purchase within
``churn.model.horizon_days`` (90 by default) after ``as_of``, from a purchase model, nudged
by service and survey signals in log-odds::

    z     = logit(P_buy) + sum_k  w_k * s_k        score = 1 / (1 + e^-z)

``P_buy`` is the MBG/NBD model ("buy till you die", Batislam et al. 2007, with fixed
population parameters in the rules). With ``x`` = repeat purchase days (purchase days - 1),
``T`` = days from the first purchase to ``as_of``, ``t_x`` = days from the first to the last
purchase and ``(r, alpha, a, b)`` = ``churn.model``::

    odds(dropped out) = a / (b + x) * ((alpha + T) / (alpha + t_x)) ** (r + x)
    P(no purchase in H | still active) = ((alpha + T) / (alpha + T + H)) ** (r + x)
    P_buy = 1 - P(active) * (1 - P(no purchase in H | active))

So silence counts against the customer's *own* pace (``x / t_x`` purchases a day, shrunk to
the population's ``r / alpha``), one-time buyers become likelier lost the longer ago their
only purchase was, and each purchase that the customer came back for lowers the chance of
dropping out. ``s_k`` in [0, 1] are the other signals (``churn.weights`` gives ``w_k``):
overdue (silence past ``overdue_from`` times the usual gap, customers with
``overdue_min_purchase_days``), frequency and basket trends (the 90 days up to the last
purchase against the 275 before, from the day buckets: silence since is the overdue
signal's business, so a silent customer is not counted twice), unresolved urgent tickets,
reopened tickets, SLA breaches, negative ticket sentiment (within ``service_memory_days``),
NPS detractors, low rolling CSAT and high-effort CES (within ``survey_memory_days``; CES is
the 1-7 agreement scale, 7 = very easy).

**Fitted to a history** (``pulse fit churn``; off in the default rules, which leave the
score as above to the last bit): the full form is::

    z = bias + model_weight * logit(P_buy) + sum_k w_k * s_k

with two more signals: ``low_value``, ``s = ln(value_reference_minor / spend per purchase
day)`` limited to +-3 (net spend over purchase days: customers who spend more per visit
come back more often, Fader-Hardie's monetary-value intuition; negative above the
reference), and ``repeat_purchases``, ``s = -ln(1 + x)`` (each repeat purchase day lowers
the risk beyond what the purchase model says). ``model_weight`` >= 0 keeps ``z`` from
falling with silence, which the level search relies on. ``signal_strengths`` gives the unweighted
parts that the fit regresses on.

**Reasons.** Every signal that raises the risk is a ``Reason(code, text, figure, weight)``;
the purchase model's log-odds are split into "infrequent" (the risk of a customer like
this one who has just bought, above even odds) and "overdue" / "one_time" (what the silence
since the last purchase added); ``low_value`` when it adds risk. ``bias`` and
``repeat_purchases`` are no reasons. ``weight`` is the reason's share of the risk it explains:
``(score - score without any reason) * c_k / sum(c)``, with ``c_k`` its log-odds; reasons
are sorted by weight, largest first.

**Levels.** low / medium / high with hysteresis: a level is entered when the score reaches
its ``enter`` threshold and left when it falls below its ``exit`` threshold. ``ChurnState``
keeps the level, when it was entered, the last alert time per level and the next time
silence alone would change the level (``due``). The first evaluation of a customer sets its
starting level without an alert (a new customer is not "slipping away"; a one-time buyer
who stays away rises later and is alerted then).

**Alerts** (stream "alerts") go out when the level rises, at most one per level per
``cooldown_days`` (a rise inside the cooldown still raises the level, silently). A
"recovered" message closes an alerted episode when the level falls back to low
(``recovered_messages``). Ids are deterministic: blake2b of the customer, the level, the
kind and the cause: the causing ``event_id``, or ``inactivity:<YYYY-MM-DD>`` for silence,
with the day the change became due. ``occurred_at`` is the event time of the change: the
event's time, or the due time for silence, whenever the scanner got round to it.

**Silence.** Between events the score moves only with time: the purchase model and the
overdue ramp rise continuously; pending SLA deadlines step it up; memories expiring
(survey, sentiment, breach) step it down. ``next_check_at`` is the first event time after
the last evaluation at which the level would change; the shell's scanner calls ``on_tick``
once its partition clock passes it, and ``on_tick`` evaluates *at that due time*, so a
replay alerts at the same event time as live operation did, whatever the tick cadence.
``on_event`` catches up first as well (given the state before the event), so an alert that
silence made due before the customer's own next event is never skipped.

**Looking again instead of searching.** Most evaluations are followed by the customer's
next event long before silence would change anything, and the event replaces the due time.
So an evaluation at a low or medium level first probes a few times ahead (90, 30, 7 days):
if the level still holds at one of them, with no step signal switching in between (``z``
only grows there), ``due`` is that time with ``due_exact`` False, and the exact search
(``_next_change`` from the same evaluation time, with the same profile: nothing changed
since) runs only if the clock gets there first. The alerts, their times and ids are those
of the exact search done at once; only the record's ``due`` says "look again" meanwhile.

The score is a pure function of the customer state and ``as_of`` (the churn section
contributes only the times of the latest SLA breach and reopen), so ``view``'s
``churn_score`` and ``pulse evaluate churn`` agree for the same history. The level and the
alert bookkeeping depend on the order in which the customer's events arrived: unlike the
rest of the state they are a record of what was alerted, not a confluent summary.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from hashlib import blake2b
from typing import Any

from processors.churn_records import HIGH, LEVELS, LOW, MEDIUM, ChurnState
from processors.errors import WireError
from processors.layer import Reaction
from processors.rules import ChurnRules, Rules, per_rules
from processors.state import CustomerState, OpenTicket
from processors.support import pending_breaches
from processors.timeutil import DAY_MS, HOUR_MS
from schemas.codec import format_time
from schemas.events import REDEMPTION, REFERRAL, CustomerEvent, Event, SupportTicket
from schemas.frozen import constructor

_RANK = {level: i for i, level in enumerate(LEVELS)}  # LEVELS.index
INACTIVITY = "inactivity"
ALERT, RECOVERED = "alert", "recovered"

# Reason codes. The wire format stores their index here: append, never reorder.
REASON_CODES: tuple[str, ...] = (
    "no_purchase", "one_time", "overdue", "infrequent", "frequency_down", "spend_down",
    "urgent_ticket", "reopened_ticket", "sla_breach", "negative_sentiment",
    "nps_detractor", "low_csat", "high_effort", "low_value",
)
SERVICE_REASONS = frozenset({"urgent_ticket", "reopened_ticket", "sla_breach",
                             "negative_sentiment"})
SURVEY_REASONS = frozenset({"nps_detractor", "low_csat", "high_effort"})
# Suggested action: the first of these groups that the alert's reasons touch.
ACTIONS: dict[str, str] = {
    "service_recovery_call": "call the customer about their support issue and put it right",
    "feedback_follow_up": "follow up personally on their negative feedback",
    "second_purchase_offer": "send a second-purchase offer",
    "win_back_offer": "send a win-back offer",
}

_FAR = 2**62
_MAX_TICK_STEPS = 8  # transitions one on_tick may walk through (each changes the level)
_PROBE_DAYS = (90, 30, 7)  # look-again times tried after an evaluation, farthest first
_VALUE_LOG_LIMIT = 3.0  # low_value's log ratio is limited to +-3 (a factor of about 20)


# -- values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    code: str  # one of REASON_CODES
    text: str  # readable, with the figure, e.g. "overdue 3.1x the usual gap (62 days ...)"
    figure: float  # the reason's number (ratio, days, score, ...), see the text
    weight: float  # its share of the risk, in [0, 1]

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "text": self.text, "figure": self.figure,
                "weight": self.weight}


@dataclass(frozen=True, slots=True)
class ChurnScore:
    score: float  # in [0, 1], 4 decimals
    level: str  # the level the score alone gives (enter thresholds, no hysteresis)
    reasons: tuple[Reason, ...]  # weight >= churn.min_reason_weight, by weight


_churn_state = constructor(ChurnState)  # ChurnState(...) through its slots (schemas.frozen)


@dataclass(frozen=True, slots=True)
class ChurnAlert:
    """A churn-alerts record (``kind`` "alert" on a rise, "recovered" back at low)."""

    alert_id: str
    customer_id: str
    kind: str
    level: str
    previous_level: str
    score: float
    reasons: tuple[Reason, ...]
    suggested_action: str | None  # a key of ACTIONS (None for "recovered")
    cause_event_id: str  # the event that caused it, or "inactivity"
    occurred_at: int  # ms

    @property
    def stream(self) -> str:
        return "alerts"

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "kind": self.kind,
            "customer_id": self.customer_id,
            "level": self.level,
            "previous_level": self.previous_level,
            "score": self.score,
            "reasons": [r.as_dict() for r in self.reasons],
            "suggested_action": self.suggested_action,
            "suggested_action_text": ACTIONS.get(self.suggested_action or ""),
            "cause_event_id": self.cause_event_id,
            "occurred_at": format_time(self.occurred_at),
        }


# -- the score -----------------------------------------------------------------------------


_log, _log1p, _exp, _expm1 = math.log, math.log1p, math.exp, math.expm1


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + _exp(-z))
    e = _exp(z)
    return e / (1.0 + e)


def _clamp01(v: float) -> float:
    return 0.0 if v < 0.0 else 1.0 if v > 1.0 else v


def _rounds_up_from(threshold: float) -> float:
    """The least float ``s`` in [0, 1] with ``round(s, 4) >= threshold`` (inf if none).
    ``round`` is monotone (a correctly rounded decimal, read back correctly rounded), so for
    a score ``s`` in [0, 1], ``round(s, 4) >= threshold`` exactly when ``s`` is at least
    this: the level search compares unrounded scores with it instead of rounding each."""
    if round(0.0, 4) >= threshold:
        return 0.0
    if not round(1.0, 4) >= threshold:
        return math.inf

    def of(bits: int) -> float:
        return float(struct.unpack("<d", struct.pack("<q", bits))[0])

    # non-negative floats are ordered as their bit patterns: bisect those
    lo, hi = 0, struct.unpack("<q", struct.pack("<d", 1.0))[0]
    while hi - lo > 1:  # round(of(lo), 4) < threshold <= round(of(hi), 4)
        mid = (lo + hi) // 2
        if round(of(mid), 4) >= threshold:
            hi = mid
        else:
            lo = mid
    return of(hi)


class _Consts:
    """What the score and the level search need from ``ChurnRules``, worked out once per
    rules object (``_consts``)."""

    __slots__ = ("H", "alpha", "b", "cr", "flips", "horizon_ms", "la", "mw", "r", "ramp_from",
                 "ramp_len", "targets", "w_overdue")

    def __init__(self, cr: ChurnRules) -> None:
        m = cr.model
        self.cr = cr
        self.H, self.r, self.alpha = m.horizon_days, m.rate_shape, m.rate_scale_days
        self.la, self.b = math.log(m.dropout_a), m.dropout_b
        self.w_overdue = cr.weights.overdue
        self.mw = cr.model_weight
        self.ramp_from, self.ramp_len = cr.overdue_from, cr.overdue_full - cr.overdue_from
        self.horizon_ms = cr.check_horizon_days * DAY_MS
        # level -> (up, down): with s = _sigmoid(z) unrounded, the level changes
        # (level_after(level, round(s, 4), cr) != level) exactly when s >= up or s < down:
        # low rises at either enter threshold; medium rises at high's enter or falls below
        # its exit; high falls below its exit, unless the score still enters high
        m_in, m_out = cr.medium.enter, cr.medium.exit
        h_in, h_out = cr.high.enter, cr.high.exit
        self.flips: dict[str, tuple[float, float]] = {
            LOW: (_rounds_up_from(min(m_in, h_in)), -math.inf),
            MEDIUM: (_rounds_up_from(h_in), _rounds_up_from(m_out)),
            HIGH: (math.inf, _rounds_up_from(min(h_in, h_out))),
        }
        # level -> the z at which the score rounds up to the next level's enter threshold
        # (None: search by bisection)
        self.targets: dict[str, float | None] = {}
        for level in LEVELS:
            x = (m_in if level == LOW else h_in) - 0.00005
            self.targets[level] = math.log(x / (1 - x)) if 0 < x < 1 else None


_consts = per_rules(_Consts)


# A signal that is on during ``[start, end)``: (code, log-odds, start, end, strength).
_Step = tuple[str, float, int, int, float]
_NO_CHURN = ChurnState()


class _Profile:
    """What the score needs, read once from the state; ``z(t)`` is then cheap to evaluate at
    many times (``next_check_at`` searches with it). Between the times in ``breakpoints``
    ``z`` only grows with ``t``."""

    __slots__ = ("H", "alpha", "b", "bought", "c_const", "ch", "constant", "core", "cr",
                 "first", "gap", "k", "la", "last", "lod0", "mw", "offset", "r", "ramp",
                 "ramp_from", "ramp_len", "rules", "rx", "spend_per_day", "steps", "trend",
                 "tx", "w_overdue", "x")

    def __init__(self, core: CustomerState, ch: ChurnState | None, rules: Rules) -> None:
        cr = rules.churn
        self.k = k = _consts(cr)
        self.core, self.rules, self.cr = core, rules, cr
        self.H, self.r, self.alpha = k.H, k.r, k.alpha
        self.la, self.b, self.mw = k.la, k.b, k.mw
        first, last = core.first_purchase_at, core.last_purchase_at
        self.bought = first is not None and last is not None
        self.first = first = first or 0
        self.last = last = last or 0
        # one pass over the day buckets: purchase days, and the trend windows (the 90 and
        # the 365 days up to the last purchase's day): orders and spend in each
        lp_day = last // DAY_MS
        n_days = core.archived_purchase_days
        year_orders = year_spend = orders90 = spend90 = 0
        for day, orders, spend, _ in core.days:
            if orders:
                n_days += 1
                age = lp_day - day
                if 0 <= age < 365:
                    year_orders += orders
                    year_spend += spend
                    if age < 90:
                        orders90 += orders
                        spend90 += spend
        self.x = x = n_days - 1 if n_days > 1 else 0
        self.tx = tx = (last - first) / DAY_MS
        self.gap = (lp_day - first // DAY_MS) / x if x else None
        self.rx = rx = self.r + x
        self.lod0 = self.la - _log(self.b + x) - rx * _log(self.alpha + tx)
        self.ch = ch = ch or _NO_CHURN
        self.w_overdue = k.w_overdue
        self.ramp = (k.w_overdue > 0 and self.gap is not None
                     and n_days >= cr.overdue_min_purchase_days)
        self.ramp_from, self.ramp_len = k.ramp_from, k.ramp_len
        self.constant: list[tuple[str, float, float]] = []  # (code, log-odds, strength)
        self.steps: list[_Step] = []
        # (orders in the 90 days up to the last purchase, orders expected at the earlier
        # pace, average order then, average order before), when there is a trend to report
        self.trend: tuple[int, float, float, float] | None = None
        self._signals(core, ch, rules, year_orders, year_spend, orders90, spend90)
        # constant log-odds that are no reason: bias and repeat purchases (0 by default)
        self.offset = self._fitted_terms(cr, core, n_days)
        self.c_const = sum([c for _, c, _ in self.constant]) if self.constant else 0
        if self.offset:
            self.c_const += self.offset

    # purchase model ---------------------------------------------------------------------

    def purchase_logit(self, t: int, silence: bool = True) -> float:
        """logit(P_buy) as of ``t``; ``silence=False``: as if they had just bought."""
        tx = self.tx
        big_t = (t - self.first) / DAY_MS if silence and self.bought else tx
        if big_t < tx:
            big_t = tx
        return self._logit(big_t)

    def _logit(self, big_t: float) -> float:
        """logit(P_buy) with ``T`` = ``big_t`` days (see the module doc)."""
        a_t = self.alpha + big_t
        la_t = _log(a_t)
        lod = self.lod0 + self.rx * la_t  # log-odds of having dropped out
        ln_q = self.rx * (la_t - _log(a_t + self.H))
        # ln(1 - P_buy) = ln P(active) + ln(1 - q); P(active) = 1 / (1 + e^lod)
        soft = lod + _log1p(_exp(-lod)) if lod > 0 else _log1p(_exp(lod))
        ln_keep = _log(-_expm1(ln_q)) - soft
        if ln_keep > -1e-300:
            return self.mw * -40.0
        v = _log(-_expm1(ln_keep)) - ln_keep
        return self.mw * (-40.0 if v < -40.0 else 40.0 if v > 40.0 else v)

    def silence_days(self, t: int) -> float:
        return max(0.0, (t - self.last) / DAY_MS)

    def overdue_strength(self, t: int) -> float:
        if not self.ramp or not self.gap:
            return 0.0
        return _clamp01(((t - self.last) / DAY_MS / self.gap - self.ramp_from) / self.ramp_len)

    # other signals ----------------------------------------------------------------------

    def _signals(self, core: CustomerState, ch: ChurnState, rules: Rules, year_orders: int,
                 year_spend: int, orders: int, spend: int) -> None:
        cr, w = self.cr, self.cr.weights
        svc, srv = cr.service_memory_days * DAY_MS, cr.survey_memory_days * DAY_MS
        tickets = core.open_tickets
        if self.bought and orders and year_orders - orders >= cr.trend_min_orders \
                and (w.frequency_down or w.spend_down):  # (else _trends returns at once)
            self._trends(cr, year_orders, year_spend, orders, spend)
        if tickets and w.urgent_ticket \
                and any(o.priority in cr.urgent_priorities for o in tickets):
            self.constant.append(("urgent_ticket", w.urgent_ticket, 1.0))
        if ch.reopened_at and w.reopened_ticket:
            if any(o.opened_at == ch.reopened_at and o.responded for o in tickets):
                self.constant.append(("reopened_ticket", w.reopened_ticket, 1.0))
            else:
                self._step("reopened_ticket", w.reopened_ticket, 0.5, ch.reopened_at, svc)
        if w.sla_breach:
            if ch.breach_at:
                self._step("sla_breach", w.sla_breach, 1.0, ch.breach_at, svc)
            sla = rules.support.sla
            for o in tickets:
                target = sla.of(o.priority)
                deadline = o.opened_at + (target.resolution_ms if o.responded
                                          else target.first_response_ms)
                self.steps.append(("sla_breach", w.sla_breach, deadline + 1, _FAR, 1.0))
        if core.last_sentiment is not None and core.last_sentiment_at is not None \
                and w.negative_sentiment:
            lo = cr.negative_sentiment_below
            s = _clamp01((lo - core.last_sentiment) / (lo + 1.0))
            self._step("negative_sentiment", w.negative_sentiment, s, core.last_sentiment_at, svc)
        if core.nps_score is not None and core.nps_at is not None and core.nps_score <= 6 \
                and w.nps_detractor:
            s = 0.5 + 0.5 * (6 - core.nps_score) / 6
            self._step("nps_detractor", w.nps_detractor, s, core.nps_at, srv)
        if core.csat and w.low_csat:
            lo = cr.low_csat_below
            s = _clamp01((lo - _mean(core.csat)) / (lo - 1.0))
            self._step("low_csat", w.low_csat, s, core.csat[-1].at, srv)
        if core.ces and w.high_effort:
            lo = cr.high_effort_ces_below
            s = _clamp01((lo - _mean(core.ces)) / (lo - 1.0))
            self._step("high_effort", w.high_effort, s, core.ces[-1].at, srv)

    def _fitted_terms(self, cr: ChurnRules, core: CustomerState, n_days: int) -> float:
        """The signals ``pulse fit churn`` adds (off by default): ``low_value`` (a reason when
        the customer spends less per purchase day than ``value_reference_minor``) joins
        ``constant``; returns the log-odds of ``bias`` and ``repeat_purchases``, which are
        no reason (the latter only ever lowers the risk)."""
        w = cr.weights
        offset = cr.bias
        self.spend_per_day = None
        if self.bought and n_days:
            self.spend_per_day = spd = core.total_spend_minor / n_days
            if w.low_value:
                lim = _VALUE_LOG_LIMIT
                v = _log(cr.value_reference_minor / spd) if spd > 0 else lim
                v = -lim if v < -lim else lim if v > lim else v
                if v:
                    self.constant.append(("low_value", w.low_value * v, v))
            if w.repeat_purchases and self.x:
                offset -= w.repeat_purchases * _log1p(self.x)
        return offset

    def _step(self, code: str, weight: float, s: float, start: int, memory: int) -> None:
        if s > 0:
            self.steps.append((code, weight * s, start, start + memory, s))

    def _trends(self, cr: ChurnRules, year_orders: int, year_spend: int, orders: int,
                spend: int) -> None:
        """Frequency and basket of the 90 days up to the last purchase against the 275 before
        (fewer when the first purchase is more recent)."""
        w = cr.weights
        prev_days = min(365, self.last // DAY_MS - self.first // DAY_MS + 1) - 90
        prev_orders = year_orders - orders
        if prev_days < 30 or prev_orders < cr.trend_min_orders or not orders:
            return
        pace = prev_orders / prev_days * 90  # orders expected in 90 days at the earlier pace
        least = cr.trend_min_drop
        drop = _clamp01((1 - orders / pace - least) / (1 - least))
        if w.frequency_down and drop > 0:
            self.constant.append(("frequency_down", w.frequency_down, drop))
        aov, prev_aov = spend / orders, (year_spend - spend) / prev_orders
        if w.spend_down and prev_aov > 0:
            shrink = _clamp01((1 - aov / prev_aov - least) / (1 - least))
            if shrink > 0:
                self.constant.append(("spend_down", w.spend_down, shrink))
        self.trend = (orders, pace, aov, prev_aov)

    # evaluation -------------------------------------------------------------------------

    def z(self, t: int) -> float:
        """The log-odds at ``t``. The level search calls this about ten times an event, so
        ``purchase_logit(t)`` (all but ``_logit``) and ``overdue_strength(t)`` are inlined
        here: the same operations in the same order, hence the same floats."""
        tx = self.tx
        big_t = (t - self.first) / DAY_MS if self.bought else tx
        if big_t < tx:
            big_t = tx
        z = self._logit(big_t) + self.c_const
        if self.ramp:
            gap = self.gap
            if gap:
                v = ((t - self.last) / DAY_MS / gap - self.ramp_from) / self.ramp_len
                z += self.w_overdue * (0.0 if v < 0.0 else 1.0 if v > 1.0 else v)
        if self.steps:
            on = set()
            for code, c, start, end, _ in self.steps:
                if start <= t < end and code not in on:
                    on.add(code)
                    z += c
        return z

    def breakpoints(self, after: int, until: int) -> list[int]:
        """Times in ``(after, until]`` at which a step signal switches on or off."""
        out = {b for code, c, start, end, _ in self.steps for b in (start, end)
               if after < b <= until}
        return sorted(out)

    def contributions(self, t: int) -> tuple[float, list[tuple[str, float, float]]]:
        """``(z, [(code, log-odds, strength)])`` with the purchase part split into reasons."""
        parts: list[tuple[str, float, float]] = []
        z = self._add_up(t, parts)
        return z, [p for p in parts if p[1] > 0]

    def total(self, t: int) -> float:
        """``contributions(t)[0]`` without the reasons (every evaluation needs only this)."""
        return self._add_up(t, None)

    def _add_up(self, t: int, parts: list[tuple[str, float, float]] | None) -> float:
        """The score's log-odds at ``t``; with ``parts``, also what each reason adds. One
        path for both, so the score with and without reasons is the same to the last bit."""
        lz = self.purchase_logit(t)
        z = lz
        if self.offset:
            z += self.offset
        if not self.bought:
            if parts is not None and lz > 0:
                parts.append(("no_purchase", lz, 1.0))
        else:
            od = self.overdue_strength(t)
            w = self.w_overdue * od if od else 0.0
            if od:
                z += w
            if parts is not None:
                lz0 = self._logit(self.tx)  # purchase_logit(t, silence=False)
                rhythm, silence = max(lz0, 0.0), max(lz - lz0, 0.0) + w
                if self.x == 0:
                    parts.append(("one_time", rhythm + silence, 1.0))
                else:
                    parts.append(("infrequent", rhythm, 1.0))
                    parts.append(("overdue", silence, 1.0))
        for code, c, s in self.constant:
            z += c
            if parts is not None:
                parts.append((code, c, s))
        if self.steps:
            on: set[str] = set()
            for code, c, start, end, s in self.steps:
                if start <= t < end and code not in on:
                    on.add(code)
                    z += c
                    if parts is not None:
                        parts.append((code, c, s))
        return z


def _mean(answers: Iterable[Any]) -> float:
    xs = [a.score for a in answers]
    return sum(xs) / len(xs)


def _score_value(z: float) -> float:
    return round(_sigmoid(z), 4)


def score(state: CustomerState, rules: Rules, as_of: int) -> ChurnScore:
    """The churn-risk score of ``state`` as of event time ``as_of`` (see the module doc)."""
    p = _Profile(state, state.churn, rules)
    value, ranked = _ranked(p, as_of)
    return ChurnScore(value, _plain_level(value, p.cr), _reasons(p, ranked, as_of))


def purchase_summary(state: CustomerState, rules: Rules, as_of: int
                     ) -> tuple[int, float, float] | None:
    """``(x, t_x, T)`` as the purchase model sees them as of ``as_of`` (repeat purchase days,
    days from the first to the last purchase, days from the first purchase to ``as_of``), or
    ``None`` without a purchase: what ``pulse fit churn`` fits the model's parameters to."""
    p = _Profile(state, None, rules)
    if not p.bought:
        return None
    return p.x, p.tx, max((as_of - p.first) / DAY_MS, p.tx)


def _unit_weights(rules: Rules) -> Rules:
    cr = rules.churn
    ones = replace(cr.weights, **{f.name: 1.0 for f in fields(cr.weights)})
    return replace(rules, churn=replace(cr, weights=ones, model_weight=1.0, bias=0.0))


_unit_rules = per_rules(_unit_weights)


def signal_strengths(state: CustomerState, rules: Rules, as_of: int) -> dict[str, float] | None:
    """The score's parts as of ``as_of`` before they are weighted, or ``None`` without a
    purchase: ``"purchase_model"``, the purchase model's log-odds, and for every field ``k``
    of ``churn.weights`` the signal's strength ``s_k`` (0 when off), so that the score's
    log-odds are ``bias + model_weight * purchase_model + sum(w_k * s_k)``
    (``repeat_purchases``' strength is ``-ln(1 + x)``). What ``pulse fit churn`` fits the
    weights to."""
    p = _Profile(state, state.churn, _unit_rules(rules))
    if not p.bought:
        return None
    out = dict.fromkeys((f.name for f in fields(rules.churn.weights)), 0.0)
    out["purchase_model"] = p.purchase_logit(as_of)
    out["overdue"] = p.overdue_strength(as_of)
    # with every weight 1, a signal's log-odds are its strength as the score uses it (the
    # trends and tickets add their full weight once on; their strength is only a figure)
    for code, c, _ in p.constant:
        out[code] = c
    for code, c, start, end, _ in p.steps:
        if start <= as_of < end and not out[code]:
            out[code] = c
    out["repeat_purchases"] = -_log1p(p.x)
    return out


def _ranked(p: _Profile, as_of: int) -> tuple[float, list[tuple[float, str, float]]]:
    """``(score, [(weight, code, strength)])``, reasons by weight (largest first)."""
    z, parts = p.contributions(as_of)
    value = _score_value(z)
    total = sum([c for _, c, _ in parts])
    explained = max(value - _sigmoid(z - total), 0.0) if total > 0 else 0.0
    least = p.cr.min_reason_weight
    ranked = [(w, code, s) for code, c, s in parts
              if (w := round(explained * c / total, 4)) >= least]
    if len(ranked) > 1:
        ranked.sort(key=lambda r: (-r[0], r[1]))
    return value, ranked


def _reasons(p: _Profile, ranked: list[tuple[float, str, float]], as_of: int,
             limit: int | None = None) -> tuple[Reason, ...]:
    """The first ``limit`` of ``_ranked``'s reasons, described."""
    return tuple(Reason(code, *_describe(p, code, s, as_of), w)
                 for w, code, s in ranked[:limit])


def _days(ms: float) -> str:
    d = ms / DAY_MS
    if d < 1:
        h = ms / HOUR_MS
        return f"{h:.0f} h" if h >= 1 else "under 1 h"
    return f"{d:.0f} day{'' if round(d) == 1 else 's'}"


def _describe(p: _Profile, code: str, s: float, t: int) -> tuple[str, float]:
    core, cr = p.core, p.cr
    if code == "no_purchase":
        return "no purchase on record", 0.0
    if code == "one_time":
        d = p.silence_days(t)
        return f"one purchase only, {_days(t - p.last)} ago", round(d, 1)
    if code == "overdue":
        gap = p.gap or 0.0
        ratio = p.silence_days(t) / gap if gap else 0.0
        days = _days(t - p.last)
        if ratio >= 1:
            return (f"overdue {ratio:.1f}x the usual gap ({days} since the last purchase, "
                    f"usually every {gap:.0f})"), round(ratio, 1)
        return f"no purchase for {days} ({ratio:.1f}x the usual gap of {gap:.0f})", \
            round(ratio, 1)
    if code == "infrequent":
        gap = p.gap or 0.0
        return f"buys rarely: about every {gap:.0f} days", round(gap, 1)
    if code == "frequency_down":
        orders, pace, _, _ = p.trend or (0, 0.0, None, 0.0)
        return (f"buying less often: {orders} order{'s' if orders != 1 else ''} in the 90 days "
                f"up to the last purchase, {pace:.1f} at the earlier pace"), round(s, 2)
    if code == "spend_down":
        _, _, aov, prev = p.trend or (0, 0.0, 0.0, 0.0)
        cur = p.rules.reporting_currency
        scale = 10 ** p.rules.minor_units[cur]
        return (f"smaller baskets: {aov / scale:.2f} {cur} an order in the 90 days up to "
                f"the last purchase, {prev / scale:.2f} before"), round(s, 2)
    if code == "low_value":
        cur = p.rules.reporting_currency
        scale = 10 ** p.rules.minor_units[cur]
        spd = (p.spend_per_day or 0.0) / scale
        return (f"low spend: {spd:.2f} {cur} per purchase day, against "
                f"{cr.value_reference_minor / scale:.2f} typical"), round(spd, 2)
    if code == "urgent_ticket":
        urgent = [o for o in core.open_tickets if o.priority in cr.urgent_priorities]
        o = urgent[0]
        return (f"unresolved {o.priority} ticket {o.ticket_id}, open "
                f"{_days(max(0, t - o.opened_at))}"), round(max(0, t - o.opened_at) / HOUR_MS, 1)
    if code == "reopened_ticket":
        ch = p.ch
        ago = max(0, t - ch.reopened_at)
        still = [o for o in core.open_tickets if o.opened_at == ch.reopened_at]
        if still and s >= 1:
            return (f"ticket {still[0].ticket_id} reopened {_days(ago)} ago, still open",
                    round(ago / DAY_MS, 1))
        return f"a ticket was reopened {_days(ago)} ago", round(ago / DAY_MS, 1)
    if code == "sla_breach":
        return _describe_breach(p, t)
    if code == "negative_sentiment":
        ago = t - (core.last_sentiment_at or t)
        return (f"negative sentiment {core.last_sentiment:+.2f} in the latest ticket "
                f"message, {_days(max(0, ago))} ago"), round(core.last_sentiment or 0.0, 2)
    if code == "nps_detractor":
        ago = max(0, t - (core.nps_at or t))
        return f"NPS detractor: {core.nps_score}/10, {_days(ago)} ago", float(core.nps_score or 0)
    if code == "low_csat":
        m = _mean(core.csat)
        return (f"low CSAT: {m:.1f}/5 over the latest {len(core.csat)} "
                f"answer{'s' if len(core.csat) != 1 else ''}"), round(m, 2)
    m = _mean(core.ces)
    return (f"high effort: CES {m:.1f}/7 (7 = very easy) over the latest {len(core.ces)} "
            f"answer{'s' if len(core.ces) != 1 else ''}"), round(m, 2)


def _describe_breach(p: _Profile, t: int) -> tuple[str, float]:
    sla = p.rules.support.sla
    late: list[OpenTicket] = [o for o in p.core.open_tickets if pending_breaches(o, sla, t)]
    if late:
        o = late[0]
        return (f"SLA breached: {o.priority} ticket {o.ticket_id} open "
                f"{_days(t - o.opened_at)}{'' if o.responded else ' without a response'}"), \
            float(len(late))
    return f"SLA breach {_days(max(0, t - p.ch.breach_at))} ago", 1.0


# -- levels ------------------------------------------------------------------------------------


def _plain_level(s: float, cr: ChurnRules) -> str:
    return HIGH if s >= cr.high.enter else MEDIUM if s >= cr.medium.enter else LOW


def level_after(level: str, s: float, cr: ChurnRules) -> str:
    """The level after a score of ``s`` when the customer was at ``level`` (hysteresis)."""
    if s >= cr.high.enter:
        return HIGH
    if level == LOW:
        return MEDIUM if s >= cr.medium.enter else LOW
    if level == HIGH and s < cr.high.exit:
        level = MEDIUM
    if level == MEDIUM and s < cr.medium.exit:
        return LOW
    return level


def _next_change(p: _Profile, level: str, after: int) -> int:
    """First time in ``(after, after + check_horizon]`` at which silence changes the level
    (0: none). Between breakpoints ``z`` only grows, so a rise is found by a root search
    inside the first segment whose end has risen, and a fall happens only at a breakpoint."""
    k = p.k
    until = after + k.horizon_ms
    # changes(z), i.e. level_after(level, _score_value(z), cr) != level, is
    # up <= _sigmoid(z) or _sigmoid(z) < down (see _Consts.flips)
    up, down = k.flips[level]

    def changes(z: float) -> bool:
        s = _sigmoid(z)
        return s >= up or s < down

    lo = after + 1
    ends = (*p.breakpoints(after + 1, until), until + 1) if p.steps else (until + 1,)
    for b in ends:
        hi = b - 1  # the segment [lo, hi] has no breakpoint inside
        if lo <= hi and level != HIGH:
            z_hi = p.z(hi)
            if changes(z_hi):
                z_lo = p.z(lo)
                if changes(z_lo):
                    return lo
                # the score rounds up to the next level's threshold from this z on
                target = k.targets[level]
                if target is None:
                    target = (z_lo + z_hi) / 2
                return _first_true(p, up, down, lo, hi, z_lo - target, z_hi - target, target)
        if b <= until and changes(p.z(b)):
            return b
        lo = b
    return 0


def _look_again(p: _Profile, level: str, after: int) -> tuple[int, bool]:
    """``(due, exact)``: a probe time up to which the level surely holds (``exact`` False),
    or ``_next_change`` when no probe shows that. At high only falls can happen, at
    breakpoints: that search is cheap, so it is done at once."""
    if level != HIGH:
        k = p.k
        up, down = k.flips[level]
        for days in _PROBE_DAYS:
            t = after + days * DAY_MS
            if t - after > k.horizon_ms or (p.steps and p.breakpoints(after, t)):
                continue
            s = _sigmoid(p.z(t))  # z grows on (after, t]: no change at t, none before
            if down <= s < up:
                return t, False
    return _next_change(p, level, after), True


def _resolve(ch: ChurnState, core: CustomerState, rules: Rules) -> ChurnState:
    """The record with its exact due time (the search ``_evaluate`` left for later)."""
    if ch.due_exact:
        return ch
    due = _next_change(_Profile(core, ch, rules), ch.level, ch.at)
    return replace(ch, due=due, due_exact=True)


def _first_true(p: _Profile, up: float, down: float, lo: int, hi: int, f_lo: float,
                f_hi: float, target: float) -> int:
    """Smallest t in (lo, hi] with ``changes(z(t))`` (``_next_change``: the score ``s`` at t is
    ``>= up`` or ``< down``), given it is false at lo and true at hi and ``z`` grows: regula
    falsi (Illinois) on ``z - target``, ``target`` being the z where ``changes`` flips (the
    bracket is kept by ``changes`` itself, so it is exact)."""
    side = 0
    z_at, log, exp = p.z, _log, _exp
    # interpolate in u = ln(alpha + days since the first purchase), where the purchase
    # model's log-odds are nearly straight
    a0 = p.alpha * DAY_MS - p.first
    u_lo, u_hi = log(a0 + lo), log(a0 + hi)
    for _ in range(100):
        if hi - lo <= 1:
            break
        if f_hi > f_lo:
            u = u_lo + (u_hi - u_lo) * (-f_lo / (f_hi - f_lo))
            # clamped into [lo + 1, hi - 1] (not empty: hi - lo > 1)
            t = int(exp(u) - a0)
            if t <= lo:
                t = lo + 1
            elif t >= hi:
                t = hi - 1
        else:
            t = (lo + hi) // 2
        z = z_at(t)
        if z >= 0:  # s = _sigmoid(z), inlined
            s = 1.0 / (1.0 + exp(-z))
        else:
            e = exp(z)
            s = e / (1.0 + e)
        if s >= up or s < down:
            hi, f_hi, u_hi = t, z - target, log(a0 + t)
            if side == 1:
                f_lo /= 2
            side = 1
        else:
            lo, f_lo, u_lo = t, z - target, log(a0 + t)
            if side == -1:
                f_hi /= 2
            side = -1
    return hi


def next_check_at(churn_state: ChurnState | None, core_state: CustomerState,
                  rules: Rules) -> int | None:
    """Event time at which silence alone would next change the customer's level (a rise:
    alert; a fall: the level drops), or ``None``. Exact: worked out from the state when it
    holds only a look-again time (``due_exact`` False), and afresh for a state without a
    churn record. The scanner uses ``look_at``."""
    if churn_state is None:
        p = _Profile(core_state, None, rules)
        at = core_state.max_event_at or 0
        due = _next_change(p, level_after(LOW, _score_value(p.z(at)), rules.churn), at)
        return due or None
    return _resolve(churn_state, core_state, rules).due or None


def look_at(churn_state: ChurnState | None, core_state: CustomerState,
            rules: Rules) -> int | None:
    """When ``on_tick`` should next run for this customer: the level cannot change by
    silence before it (``next_check_at`` or earlier; ``None``: nothing to look at)."""
    if churn_state is None:
        return next_check_at(None, core_state, rules)
    return churn_state.due or None


# -- transitions -------------------------------------------------------------------------------


def _alert_id(customer_id: str, level: str, kind: str, cause: str) -> str:
    raw = f"{customer_id}|{level}|{kind}|{cause}".encode()
    return "churn-" + blake2b(raw, digest_size=10).hexdigest()


def _action(reasons: Iterable[Reason]) -> str:
    codes = {r.code for r in reasons}
    if codes & SERVICE_REASONS:
        return "service_recovery_call"
    if codes & SURVEY_REASONS:
        return "feedback_follow_up"
    if codes & {"one_time", "no_purchase"}:
        return "second_purchase_offer"
    return "win_back_offer"


def _cause_key(cause: str, at: int) -> str:
    return cause if cause != INACTIVITY else f"{INACTIVITY}:{format_time(at)[:10]}"


def _evaluate(ch: ChurnState, core: CustomerState, rules: Rules, at: int, cause: str,
              *, first: bool = False) -> tuple[ChurnState, list[ChurnAlert]]:
    """Score at ``at``, move the level, emit what the move calls for, find the next due."""
    cr = rules.churn
    p = _Profile(core, ch, rules)
    value = _score_value(p.total(at))  # reasons only when an alert needs them
    old = ch.level
    new = level_after(LOW if first else old, value, cr)
    since = at if first or new != old else ch.level_since
    medium_at, high_at, alert_open = ch.alerted_medium, ch.alerted_high, ch.alert_open
    out: list[ChurnAlert] = []
    cid = core.customer_id
    if not first and _RANK[new] > _RANK[old]:
        last = high_at if new == HIGH else medium_at
        if not last or at - last >= cr.cooldown_days * DAY_MS:
            top = _reasons(p, _ranked(p, at)[1], at, cr.max_reasons)
            out.append(ChurnAlert(_alert_id(cid, new, ALERT, _cause_key(cause, at)), cid,
                                  ALERT, new, old, value, top, _action(top), cause, at))
            if new == HIGH:
                high_at = at
            else:
                medium_at = at
            alert_open = True
    elif not first and new == LOW and old != LOW:
        if alert_open and cr.recovered_messages:
            top = _reasons(p, _ranked(p, at)[1], at, cr.max_reasons)
            out.append(ChurnAlert(_alert_id(cid, new, RECOVERED, _cause_key(cause, at)), cid,
                                  RECOVERED, new, old, value, top, None, cause, at))
        alert_open = False
    due, exact = _look_again(p, new, at)
    return _churn_state(value, new, at, since, medium_at, high_at, alert_open, ch.breach_at,
                        ch.reopened_at, due, exact), out


def on_tick(churn_state: ChurnState | None, core_state: CustomerState, rules: Rules,
            now: int) -> tuple[ChurnState | None, tuple[ChurnAlert, ...]]:
    """Silence up to event time ``now``: every level change that became due by ``now``,
    each evaluated at its due time (so the result does not depend on how often ticks come;
    calling again with the same ``now`` changes nothing)."""
    if churn_state is None:
        return None, ()
    ch = churn_state
    out: list[ChurnAlert] = []
    for _ in range(_MAX_TICK_STEPS):
        if not ch.due or ch.due > now:
            break
        ch = _resolve(ch, core_state, rules)  # a look-again time: find the exact one
        if not ch.due or ch.due > now:
            break
        ch, alerts = _evaluate(ch, core_state, rules, ch.due, INACTIVITY)
        out += alerts
    return ch, tuple(out)


def on_event(churn_state: ChurnState | None, core_state: CustomerState, event: Event,
             rules: Rules, now: int, *, before: CustomerState | None = None
             ) -> tuple[ChurnState, tuple[ChurnAlert, ...]]:
    """The churn record after ``event`` was applied to the core state (``core_state`` is the
    state after it, ``before`` the one before, if any). First whatever silence made due
    before the event (evaluated on ``before``), then the event's own evaluation at its event
    time (never earlier than the previous evaluation); a redemption carries no churn signal
    and only catches up. ``now`` (the partition clock) is not
    needed: an accepted event is never older than it."""
    del now
    t = event.occurred_at
    out: list[ChurnAlert] = []
    ch = churn_state
    if ch is not None and before is not None and ch.due and ch.due <= t:
        caught, alerts = on_tick(ch, before, rules, t)
        assert caught is not None
        ch, out = caught, list(alerts)
    first = ch is None
    if ch is not None and event.event_kind in (REDEMPTION, REFERRAL):  # no churn signal
        return ch, tuple(out)
    base = ch or ChurnState()
    breach_at, reopened_at = base.breach_at, base.reopened_at
    if core_state.sla_breaches > (before.sla_breaches if before is not None else 0):
        breach_at = max(breach_at, t)
    if isinstance(event, SupportTicket) and event.status == "reopened":
        reopened_at = max(reopened_at, t)
    if (breach_at, reopened_at) != (base.breach_at, base.reopened_at):
        base = replace(base, breach_at=breach_at, reopened_at=reopened_at)
    at = max(t, base.at)
    ch, alerts2 = _evaluate(base, core_state, rules, at, event.event_id, first=first)
    return ch, tuple(out + alerts2)


# -- view and wire -----------------------------------------------------------------------------


def view_fields(state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
    """``churn_score`` and ``churn_reasons`` as of ``as_of`` (the same ``score`` that ``pulse
    evaluate churn`` computes), ``churn_level``: the level that score gives from the
    customer's recorded level (hysteresis)."""
    sc = score(state, rules, as_of)
    ch = state.churn
    level = sc.level if ch is None else level_after(ch.level, sc.score, rules.churn)
    return {"churn_score": sc.score, "churn_level": level,
            "churn_reasons": [r.text for r in sc.reasons[:rules.churn.max_reasons]]}


def to_wire(ch: ChurnState, max_event_at: int | None) -> list[Any]:
    """``[score * 10^4, level + 3 * alert_open, max_event_at - at, at - level_since,
    alerted_medium, alerted_high, breach_at, reopened_at, due - at (0: none; negative: a
    look-again time, due_exact False)]``: ``at`` is nearly always the customer's newest event
    time, so it costs a 0. (States written before
    the reasons were dropped have a tenth item, reason indexes: checked and ignored.)"""
    base = max_event_at or 0
    return [round(ch.score * 10_000), _RANK[ch.level] + 3 * ch.alert_open,
            base - ch.at, ch.at - ch.level_since, ch.alerted_medium, ch.alerted_high,
            ch.breach_at, ch.reopened_at,
            (ch.due - ch.at if ch.due_exact else ch.at - ch.due) if ch.due else 0]


def from_wire(value: Any, max_event_at: int | None) -> ChurnState:
    def bad(what: str) -> WireError:
        return WireError(f"state field 'ch': {what}, got {value!r:.80}")

    if type(value) is not list or len(value) not in (9, 10):
        raise bad("expected a list of 9 items")
    ints = value[:9]
    if not all(type(v) is int for v in ints):
        raise bad("expected integers")
    sc, lv, back, since, med, high, breach, reopen, due = ints
    if not 0 <= sc <= 10_000 or not 0 <= lv < 6 or since < 0:
        raise bad("value out of range")
    if len(value) == 10:  # reason indexes, as written before they were dropped: ignored
        codes = value[9]
        if type(codes) is not list or not all(type(c) is int and 0 <= c < len(REASON_CODES)
                                              for c in codes):
            raise bad("expected reason indexes")
    at = (max_event_at or 0) - back
    return ChurnState(sc / 10_000, LEVELS[lv % 3], at, at - since, med, high, lv >= 3, breach,
                      reopen, at + abs(due) if due else 0, due >= 0)


# -- the layer (processors/layer.py) ----------------------------------------------------------


class ChurnLayer:
    """The churn record as a layer: record ``CustomerState.churn``, wire key ``ch``."""

    name: str = "churn"
    field: str | None = "churn"
    wire_key: str | None = "ch"

    def on_event(self, before: CustomerState, after: CustomerState, event: Event,
                 rules: Rules, now: int) -> Reaction:
        if before.churn is not None and isinstance(event, CustomerEvent):
            # no churn signal in a profile record: only what silence made due by its time
            # (as on_event does for a redemption), judged on the state before it
            ch, alerts = on_tick(before.churn, before, rules, event.occurred_at)
        else:
            ch, alerts = on_event(after.churn, after, event, rules, now, before=before)
        return Reaction(ch, alerts)

    def on_tick(self, before: CustomerState, after: CustomerState, rules: Rules,
                at: int) -> Reaction:
        ch, alerts = on_tick(after.churn, after, rules, at)
        return Reaction(ch, alerts)

    def next_due(self, state: CustomerState, rules: Rules) -> int | None:
        return look_at(state.churn, state, rules)

    def view_fields(self, state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
        return view_fields(state, rules, as_of)

    def to_wire(self, record: ChurnState, state: CustomerState) -> list[Any]:
        return to_wire(record, state.max_event_at)

    def from_wire(self, value: Any, base: Mapping[str, Any]) -> ChurnState:
        return from_wire(value, base.get("max_event_at"))


LAYER = ChurnLayer()
