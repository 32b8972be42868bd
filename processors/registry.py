"""The registry of domain layers: which layers ride on the customer state, in run order.

Theory of operation: ``processors/customer.py`` (``apply``, ``tick``, ``next_due``,
``view``) and ``processors/wire.py`` loop over ``LAYERS`` instead of calling each layer by
hand; what a layer is: ``processors/layer.py``. The order is the run order: a layer's
``on_event`` / ``on_tick`` sees the records of the layers before it already updated
(churn sees the new points account), so the KPIs, which count the whole change, run last.
The order is also the order of the records on the wire and of the layers' view columns.
Adding a layer is adding its module and one line here.
"""

from __future__ import annotations

from processors import kpi
from processors.churn import layer as churn
from processors.engagement import layer as engagement
from processors.layer import Layer
from processors.loyalty import layer as loyalty
from processors.referral import layer as referral

LAYERS: tuple[Layer, ...] = (
    loyalty.LAYER,  # points, tiers, expiry: the ledger (stream "points")
    churn.LAYER,  # risk score, levels, alerts (stream "alerts")
    engagement.LAYER,  # segments and messages with consent (stream "engagement")
    # the referral programme's record and its records for the referrals topic (stream
    # "referrals"); its ledger entries are loyalty's (processors/referral/decide.py)
    referral.LAYER,
    kpi.LAYER,  # KPI increments of the whole change; keeps no record: last
)
