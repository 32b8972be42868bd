"""Loyalty points: earning, tiers, refunds, bonuses, redemptions and expiry, as a ledger.

Theory of operation
-------------------
``on_event`` runs inside ``processors.customer.apply`` after the core fields are computed;
``on_tick`` is what the inactivity scanner calls for time-driven changes. Both are pure and
return the new ``LoyaltyState`` and ``LedgerEntry`` outputs (stream "points"). Every change
of a balance is one entry, so ``balance == sum(entry.points)`` for every customer; entries
with 0 points announce tier changes, expiry notices and rejected redemptions.

Earning (rule ``earn``): an order earns ``floor(W x share x points_per_unit x tier
multiplier)``, rounded down once per order, at most ``max_points_per_event``. ``W`` = sum
of its lines (quantity x unit price, converted to the reporting currency) each times its
category multiplier; ``share`` = amount / lines total when less was paid (a discount), else
1; an order without lines earns on its amount. The points are then allocated to the lines
by weight (largest remainder) and remembered per order (hashed order id and skus, within
``refund_window_days``, at most ``max_remembered_orders``; an order with more than
``max_remembered_lines`` lines that earned points is remembered by amount only).

Refunds (rule ``refund``) take back what the refunded items earned, exactly: ``k`` of a
line's ``n`` units with ``p`` points, ``r`` refunded before, take back ``floor(p(r+k)/n) -
floor(pr/n)`` (so refunding all units in any steps takes back exactly ``p``); a refund
without lines, or of an order recorded without lines, takes back ``amount / paid`` of the
order's points the same cumulative way. Never more than the order earned. A refund of an
order no longer remembered takes back the earning formula on the refunded amount at the
current tier. The balance is clamped at 0 unless ``allow_negative_balance``.

Tiers (rule ``tier_change``, 0 points; chosen over a topic of their own so that one ledger
tells the whole story in order): the tier is reached when the net spend of the 365-day
window as of the purchase clock (``kind_max[purchase]``) reaches its ``min_spend``,
checked after every purchase or refund. ``qualified_until`` is the last day the current
tier stays qualified if nothing more is bought (computed from the day buckets), so the
downgrade is due at a fixed event time, ``(qualified_until + 1 + grace) days``, whoever
notices it first: the scanner's tick, or the customer's next event. The downgrade goes to
the tier the spend of that day qualifies for.

Expiry (rules ``expiry_notice``, ``expiry``): the balance expires ``expiry_months``
calendar months after the last activity (purchase, answered survey, goodwill award,
accepted redemption), announced ``expiry_notice_days`` before. Time-driven entries carry
the event time they were due at and an id from the customer and that time
(``"<customer>:expiry@<ms>"``), so a tick and an event that both see them due produce the
same entry once: whichever comes first changes the state, the other finds nothing due.
An activity that arrives late, dated after the last activity but before an expiry already
written (a store's upload after an outage), undoes it: rule ``expiry_reversed`` gives the
points back with the reason (``"expiry of 2026-03-01 reversed: purchase of 2026-02-27
arrived late"``), as if it had come in time; the latest expiry is remembered for that.

Redemptions: a member with enough balance gets ``redemption`` (debited); otherwise
``redemption_rejected`` with 0 points and the reason (unknown customer = no state before
the event; insufficient balance). One partition is applied serially by one worker and a
redemption is decided against the balance that includes every earlier event of the
partition, so two redemptions can never overdraw together.

Confluence (see state.py): what purchases earn, the tier and the remembered orders depend
on the purchase topic's order only (tier dues are applied by other events only once no
acceptable purchase can predate them). The balance cannot be confluent: a redemption is
decided against the balance at the moment it is applied, and expiry and clamping depend on
it too. Replaying one history in any batch split gives the same entries and balances.

Entry ids: ``"<event_id>:<rule>"`` for entries an event causes, ``"<customer>:<rule>@<ms>"``
for entries time causes. Points are integers; amounts in reasons are exact.

Modules (one concept each; this ``__init__`` imports none of them, because
``processors/state.py`` imports ``records`` and importing a submodule runs this file
first: import what you use from its module)::

    records   LoyaltyState and its parts: what the customer state holds (no logic)
    ledger    LedgerEntry, the rule names, the ledger being written (_Book)
    derived   numbers derived from the rules once, formatting, calendar arithmetic
    tiers     reaching a tier, qualified_until, the downgrade
    expiry    expiry and its notice, what is due by a time (_run_dues), reversal
    earning   points for purchases, survey bonuses, service recovery
    refunds   taking back what refunded items earned
    members   redemptions and adjustments
    wire      the record's compact form (key "ly")
    layer     on_event / tick_record, next_due, view_fields, LoyaltyLayer (LAYER)
"""
