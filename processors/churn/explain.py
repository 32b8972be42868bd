"""The churn score with its reasons: ``score`` and the readable text of every reason.

Theory of operation: ``_ranked`` splits the score into the share each signal explains
(the package docstring, "Reasons"), ``_describe`` writes the reason a person reads, with its
figure ("overdue 3.1x the usual gap ..."), and ``_action`` picks the suggested action from
the reasons an alert carries. Only views and alerts ask for reasons: the level search works
on the bare log-odds (``model``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from processors.churn.levels import _plain_level
from processors.churn.model import _mean, _Profile, _score_value, _sigmoid
from processors.rules import Rules
from processors.state import CustomerState, OpenTicket
from processors.support import pending_breaches
from processors.timeutil import DAY_MS, HOUR_MS

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


def score(state: CustomerState, rules: Rules, as_of: int) -> ChurnScore:
    """The churn-risk score of ``state`` as of event time ``as_of`` (see the module doc)."""
    p = _Profile(state, state.churn, rules)
    value, ranked = _ranked(p, as_of)
    return ChurnScore(value, _plain_level(value, p.cr), _reasons(p, ranked, as_of))


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


def _action(reasons: Iterable[Reason]) -> str:
    codes = {r.code for r in reasons}
    if codes & SERVICE_REASONS:
        return "service_recovery_call"
    if codes & SURVEY_REASONS:
        return "feedback_follow_up"
    if codes & {"one_time", "no_purchase"}:
        return "second_purchase_offer"
    return "win_back_offer"
