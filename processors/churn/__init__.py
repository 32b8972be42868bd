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

Modules (one concept each; this ``__init__`` imports none of them, because
``processors/state.py`` imports ``records`` and importing a submodule runs this file
first: import what you use from its module)::

    records   ChurnState and the levels: what the customer state holds (no logic)
    model     the log-odds over time (_Profile), signal_strengths, purchase_summary
    explain   score with its reasons, the reason texts, the suggested action
    levels    hysteresis (level_after), the next level change (next_check_at, look_at)
    layer     on_event / on_tick, the alerts (ChurnAlert), view_fields, ChurnLayer (LAYER)
    wire      the record's compact form (key "ch")
"""
