"""A small event history whose KPI values are worked out by hand, one case per formula.

Days are written relative to the as-of day A (2024-06-30): the window (30 days) is
(A - 30, A], i.e. days -29..0; the window's start is day -30, and "active at a day t" means
a purchase on a day in (t - 30, t]. Amounts are EUR cents. The expected numbers below come
from this table, not from the code under test.

Purchases (store unless noted)                  active at -30?  active at 0?  new in window?
  c1  -50 (10.00), -40 (10.00), -10 (30.00)     yes (-40)       yes (-10)     no
      refund of 5.00 on day -9
  c2  -45 (10.00)                               yes             no  -> lost   no
  c3  -5 (12.00)                                no              yes           yes
  c4  -70 (10.00), -20 (40.00)                  no (-70 too old) yes          no (reactivated)
  c5  -35 (10.00), -34 (10.00)                  yes (-34)       no  -> lost   no
  c6  web: -25 (10.00), -25 (20.00), -3 (15.00) no              yes           yes
  c7  -31 (10.00), -1 (20.00)                   yes (-31)       yes           no

  S (start) = c1 c2 c5 c7 = 4     E (end, active) = c1 c3 c4 c6 c7 = 5
  N (new) = c3 c6 = 2             lost = c2 c5 = 2
  retention = (E - N) / S = 3/4 = 0.75          churn = lost / S = 2/4 = 0.5
  orders in the window: c1 1, c3 1, c4 1, c6 3, c7 1 = 7
  revenue in the window: 30 + 12 + 40 + (10 + 20 + 15) + 20 = 147.00
  average order value = 147 / 7 = 21.00 (store 102 / 4 = 25.50, web 45 / 3 = 15.00)
  purchase frequency = 7 orders / 5 active = 1.4 per customer per window
  lifespan = 30 days / churn 0.5 = 60 days
  CLTV = AOV x frequency x lifespan in windows = 21.00 x 1.4 x (60 / 30) = 58.80

Surveys                                   NPS: promoter 9-10, passive 7-8, detractor 0-6
  NPS checkout: 10, 9, 8, 2   -> P 2, D 1, n 4 -> 100 x (2 - 1) / 4 = 25.0
  NPS support:  10, 6, 9, 9   -> P 3, D 1, n 4 -> 100 x (3 - 1) / 4 = 50.0
  NPS all:                       P 5, D 2, n 8 -> 100 x 3 / 8      = 37.5
  (+ an NPS 0 on day -40: outside the window; + a re-sent duplicate: not counted)
  CSAT support: 5, 4, 3, 1, 4 -> 4-5 answers: 3 of 5 = 0.6
  CES checkout: 7, 6, 2, 5    -> (7 + 6 + 2 + 5) / 4 = 5.0

Tickets (SLA: urgent 1 h / 8 h, high 4 h / 24 h, normal 24 h / 72 h, low 72 h / 168 h)
  k1 email normal: opened -10 00:00, responded 02:00, resolved -9 00:00 -> 2 deadlines, 0 missed
  k2 email urgent: opened -5 00:00, responded 03:00 (late), resolved 10:00 (late) -> 2, 2 missed
  k3 chat high:    opened -2 00:00, still open (no deadline settled yet)
  k4 chat low:     opened -1 00:00, responded 01:00, still open -> 1 deadline, 0 missed
  SLA-breach ratio = 2 / 5 = 0.4 (email 2 / 4 = 0.5, chat 0 / 1 = 0.0)
  first response = (2 h + 3 h + 1 h) / 3 = 2 h = 7200 s (email 2.5 h = 9000 s, chat 3600 s)
  open tickets = 2 (high 1, low 1)

Customers with an accepted event: c1-c9, s1-s5, e1-e4 = 18.
"""

from __future__ import annotations

from datetime import UTC, datetime

from processors.timeutil import DAY_MS, HOUR_MS
from schemas.events import Event
from tests.builders import purchase, survey, ticket

A = int(datetime(2024, 6, 30, tzinfo=UTC).timestamp() * 1000)


def at(day: int, hours: float = 0) -> int:
    return A + day * DAY_MS + round(hours * HOUR_MS)


def history() -> list[Event]:
    evs: list[Event] = []
    n = iter(range(1000))

    def buy(cid: str, day: int, eur: float, channel: str = "store", hours: float = 12) -> None:
        evs.append(purchase(f"p{next(n)}", at(day, hours), round(eur * 100), cid=cid,
                            channel=channel))

    buy("c1", -50, 10), buy("c1", -40, 10), buy("c1", -10, 30)
    evs.append(purchase("r1", at(-9), 500, kind="refund", cid="c1"))
    buy("c2", -45, 10)
    buy("c3", -5, 12)
    buy("c4", -70, 10), buy("c4", -20, 40)
    buy("c5", -35, 10), buy("c5", -34, 10)
    buy("c6", -25, 10, "web"), buy("c6", -25, 20, "web", hours=13), buy("c6", -3, 15, "web")
    buy("c7", -31, 10), buy("c7", -1, 20)

    for cid, score in (("c1", 10), ("c2", 9), ("c3", 8), ("c4", 2)):
        evs.append(survey(f"n-{cid}", at(-2, 6), "nps", score, cid=cid, touchpoint="checkout"))
    for cid, score in (("c5", 10), ("c6", 6), ("c7", 9), ("c8", 9)):
        evs.append(survey(f"n-{cid}", at(-1, 6), "nps", score, cid=cid, touchpoint="support"))
    evs.append(survey("n-old", at(-40), "nps", 0, cid="c9", touchpoint="support"))
    # a producer retry
    evs.append(survey("n-c1", at(-2, 6), "nps", 10, cid="c1", touchpoint="checkout"))
    for i, score in enumerate((5, 4, 3, 1, 4)):
        evs.append(survey(f"cs{i}", at(-1, 8), "csat", score, cid=f"s{i + 1}",
                          touchpoint="support"))
    for i, score in enumerate((7, 6, 2, 5)):
        evs.append(survey(f"ce{i}", at(0, 1 + i), "ces", score, cid=f"e{i + 1}",
                          touchpoint="checkout"))

    def tk(eid: str, t: int, tid: str, status: str, prio: str, cid: str, ch: str) -> None:
        evs.append(ticket(eid, t, tid, status, prio, cid=cid, channel=ch))

    tk("k1a", at(-10), "k1", "opened", "normal", "c1", "email")
    tk("k1b", at(-10, 2), "k1", "responded", "normal", "c1", "email")
    tk("k1c", at(-9), "k1", "resolved", "normal", "c1", "email")
    tk("k2a", at(-5), "k2", "opened", "urgent", "c3", "email")
    tk("k2b", at(-5, 3), "k2", "responded", "urgent", "c3", "email")
    tk("k2c", at(-5, 10), "k2", "resolved", "urgent", "c3", "email")
    tk("k3a", at(-2), "k3", "opened", "high", "c4", "chat")
    tk("k4a", at(-1), "k4", "opened", "low", "c7", "chat")
    tk("k4b", at(-1, 1), "k4", "responded", "low", "c7", "chat")
    return sorted(evs, key=lambda e: e.occurred_at)  # stable: the retry stays after the original


EXPECTED: list[tuple[str, float]] = [
    ("nps", 37.5), ("nps:checkout", 25.0), ("nps:support", 50.0),
    ("csat", 0.6), ("csat:support", 0.6),
    ("ces", 5.0), ("ces:checkout", 5.0),
    ("active_customers", 5),
    ("retention_rate", 0.75),
    ("churn_rate", 0.5),
    ("average_order_value", 21.0), ("average_order_value:store", 25.5),
    ("average_order_value:web", 15.0),
    ("purchase_frequency", 1.4),
    ("customer_lifespan_days", 60.0),
    ("cltv", 58.8),
    ("sla_breach_ratio", 0.4), ("sla_breach_ratio:email", 0.5), ("sla_breach_ratio:chat", 0.0),
    ("first_response_seconds", 7200.0), ("first_response_seconds:email", 9000.0),
    ("first_response_seconds:chat", 3600.0),
    ("open_tickets", 2), ("open:high", 1), ("open:low", 1),
    ("customers", 18),
]
