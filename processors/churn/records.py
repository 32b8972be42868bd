"""The churn layer's record: one customer's churn state (``CustomerState.churn``).

Theory of operation: a plain immutable record with no logic and no imports of ours, so that
``processors/state.py`` can name it without importing the churn logic (which imports the
state: no import circle). How the fields change: ``processors/churn/layer.py`` and
``levels.py``; the wire form: ``processors/churn/wire.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

LOW, MEDIUM, HIGH = "low", "medium", "high"
LEVELS: tuple[str, ...] = (LOW, MEDIUM, HIGH)
RANK = {level: i for i, level in enumerate(LEVELS)}  # LEVELS.index


@dataclass(frozen=True, slots=True)
class ChurnState:
    """One customer's churn record (``CustomerState.churn``). Times are epoch ms, 0 = never."""

    score: float = 0.0  # as of ``at``; the reasons are worked out when asked (view, alerts)
    level: str = LOW
    at: int = 0  # event time of the latest evaluation (never decreases)
    level_since: int = 0
    alerted_medium: int = 0  # last alert at medium (for the cooldown)
    alerted_high: int = 0  # last alert at high
    alert_open: bool = False  # alerted since the level was last low ("recovered" closes it)
    breach_at: int = 0  # latest event that settled an SLA breach
    reopened_at: int = 0  # latest ticket reopen
    due: int = 0  # when silence alone would change the level (0: never); see due_exact
    # False: ``due`` is only a time to look again (the level holds until then); the exact
    # time is worked out when the clock reaches it (``_resolve``), if no event came first
    due_exact: bool = True

    @property
    def last_alert_at(self) -> int:
        return max(self.alerted_medium, self.alerted_high)

    @property
    def last_alert_level(self) -> str | None:
        if not self.last_alert_at:
            return None
        return HIGH if self.alerted_high >= self.alerted_medium else MEDIUM
