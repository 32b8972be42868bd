"""The churn score's model: the customer's purchase history and signals as log-odds over time.

Theory of operation: ``_Profile`` reads one customer state once and answers, for any event
time ``t`` after the last evaluation, the log-odds ``z(t)`` of the score (the package
docstring, "The score" and "Fitted to a history"): the purchase model's part
(``purchase_logit``), the overdue ramp, the constant signals (trends, ticket signals) and
the step signals that switch on or off at known times (SLA deadlines, expiring memories:
``steps``, ``breakpoints``). ``_add_up`` is the reference sum; ``z`` is its fast copy for
the level search (pinned equal by tests/unit/processors/test_fast_copies.py).
``signal_strengths`` and ``purchase_summary`` are what ``pulse fit churn`` fits to.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import fields, replace
from typing import Any

from processors.churn.records import HIGH, LEVELS, LOW, MEDIUM, ChurnState
from processors.rules import ChurnRules, Rules, per_rules
from processors.state import NPS_DETRACTOR_MAX, CustomerState
from processors.support import sla_deadlines
from processors.timeutil import DAY_MS

_FAR = 2**62

_VALUE_LOG_LIMIT = 3.0  # low_value's log ratio is limited to +-3 (a factor of about 20)

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
                first, resolution = sla_deadlines(o, sla)  # the next one still running
                deadline = resolution if first is None else first
                self.steps.append(("sla_breach", w.sla_breach, deadline + 1, _FAR, 1.0))
        if core.last_sentiment is not None and core.last_sentiment_at is not None \
                and w.negative_sentiment:
            lo = cr.negative_sentiment_below
            s = _clamp01((lo - core.last_sentiment) / (lo + 1.0))
            self._step("negative_sentiment", w.negative_sentiment, s, core.last_sentiment_at, svc)
        if core.nps_score is not None and core.nps_at is not None \
                and core.nps_score <= NPS_DETRACTOR_MAX and w.nps_detractor:
            s = 0.5 + 0.5 * (NPS_DETRACTOR_MAX - core.nps_score) / NPS_DETRACTOR_MAX
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
        here, and the constant signals come pre-summed (``c_const``): the same terms as
        ``total`` (``_add_up``), added in another order, so the two may differ in the last
        bits of the float (tests/unit/processors/test_fast_copies.py pins them within a few
        ulps; the level search's result is checked against ``total`` there)."""
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
