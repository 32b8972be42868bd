"""Churn levels with hysteresis, and when silence alone would next change the level.

Theory of operation: ``level_after`` moves a level by the enter / exit thresholds (the
package docstring, "Levels"). Between events the score moves only with time, so the next
change is found by search: ``_look_again`` probes a few times ahead and, when the level
still holds there, records only a time to look again (``due_exact`` False); ``_resolve``
turns that into the exact time when the clock reaches it, by ``_next_change`` (a bisection
between the step signals' breakpoints, ``_first_true``). ``next_check_at`` is the exact
time, ``look_at`` what the scanner uses.
"""

from __future__ import annotations

from dataclasses import replace

from processors.churn.model import _exp, _log, _Profile, _score_value, _sigmoid
from processors.churn.records import HIGH, LOW, MEDIUM, ChurnState
from processors.rules import ChurnRules, Rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS

_PROBE_DAYS = (90, 30, 7)  # look-again times tried after an evaluation, farthest first


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
