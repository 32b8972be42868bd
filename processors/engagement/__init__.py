"""The engagement layer: segments, proactive messages and consent on the ``engagement`` topic.

Theory of operation
-------------------
One layer of the protocol in ``processors/layer.py`` (``layer.LAYER``), keeping one record
in the customer state (``record.Engagement``, wire key ``en``):

* ``segments.py``: the customer's primary segment and tags as of an event time, from the
  rules, and when silence alone would next change them;
* ``occasions.py``: birthdays and first-purchase anniversaries as instants, in the
  customer's time zone;
* ``triggers.py``: which messages are due (birthday, anniversary, replenishment nudge,
  points-expiry notice, tier upgrade), one per occasion, and the rate limit;
* ``record.py``: the record kept in the customer state and its wire form (no logic, so
  that ``processors/state.py`` can name it);
* ``outputs.py``: the two output records (segment change, message) with the customer's
  consent as of their time;
* ``layer.py``: the five questions of the protocol, wiring the above together.

Everything is pure: time comes in as an argument (event time), nothing reads the clock.
"""
