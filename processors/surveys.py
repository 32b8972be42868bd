"""Survey answers: their effect on the base customer state.

Theory of operation: ``survey_changes(state, event, rules)`` returns the field changes of
one answer (for ``processors.state.evolve``; ``processors.customer.apply`` adds the clocks,
pruning and dedup common to every kind). The score must be an integer on its kind's scale
(NPS 0-10, CSAT 1-5, CES 1-7: ``schemas.events.SURVEY_SCALES``), else ``Rejected`` and
nothing changes. Every answer counts; an NPS answer is the latest by ``occurred_at`` (ties
to the later one); CSAT and CES keep the latest ``surveys.rolling_answers`` answers of
their kind, ordered by ``occurred_at`` (``rolling_mean`` is their rolling score). What an
answer earns is the loyalty layer's; what it says about churn risk, the churn layer's.
"""

from __future__ import annotations

import bisect
from typing import Any

from processors.errors import INVALID, Rejected
from processors.rules import Rules
from processors.state import Answer, CustomerState
from schemas.events import SURVEY_SCALES, Survey


def survey_changes(state: CustomerState, ev: Survey, rules: Rules) -> dict[str, Any]:
    scale = SURVEY_SCALES.get(ev.kind)
    if scale is None:
        raise Rejected(INVALID, f"survey kind {ev.kind!r} is not one of {tuple(SURVEY_SCALES)}")
    lo, hi = scale
    if type(ev.score) is not int or not lo <= ev.score <= hi:
        raise Rejected(INVALID, f"{ev.kind} score {ev.score!r} is not an integer in [{lo}, {hi}]")
    t = ev.occurred_at
    changes: dict[str, Any] = {"surveys_answered": state.surveys_answered + 1}
    if ev.kind == "nps":
        if state.nps_at is None or t >= state.nps_at:
            changes.update(nps_score=ev.score, nps_at=t)
        return changes
    answers = list(state.csat if ev.kind == "csat" else state.ces)
    answers.insert(bisect.bisect_right(answers, t, key=lambda a: a.at), Answer(t, ev.score))
    changes[ev.kind] = tuple(answers[-rules.surveys.rolling_answers :])
    return changes


def rolling_mean(answers: tuple[Answer, ...]) -> float | None:
    """The rolling CSAT or CES: the mean of the kept answers (None without one)."""
    return sum(a.score for a in answers) / len(answers) if answers else None
