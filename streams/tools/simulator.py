"""Deterministic generator of realistic retail traffic (``pulse simulate``, ``pulse dev``, tests).

Everything is a function of ``SimConfig``: one seeded ``random.Random`` per stream of
decisions (never the global ``random``), no clock reads (``start_ms`` is an argument), ids
derived from the seed and a counter. Same config -> same bytes.

Two paths share one customer model (segments, rhythms, baskets, tickets, surveys):

* ``Simulator.events_until(t)`` — the *timeline*: every customer lives their own rhythm from
  ``start_ms`` on; follow-ups (ticket lifecycle steps, refunds, surveys, redemptions) are
  scheduled on a heap, so records come out in event-time order and consecutive calls
  concatenate to exactly what one call would give.
* ``Simulator.sample_events(n, at_ms)`` — the *live sampler* for a fixed-rate load
  generator: customers drawn by their activity weight, "now"-ish event times, follow-ups
  scheduled on the sampler's own heap (optionally time-compressed by ``live_time_scale``).

Ground truth for churn evaluation: ``Simulator.profile(customer_id)``. Profiles are fixed at
construction, so they also say what will happen after the generated horizon.

Customer model (shares of customers):

=============  =====  =================================================================
segment        share  rhythm
=============  =====  =================================================================
one_time       40 %   a single order (churn_style "one_time", churn_at = that order)
regular        25 %   own mean gap, lognormal median 20 d clipped to 7-60 d, jitter sigma .35
occasional     17 %   own mean gap, median 90 d clipped to 45-200 d, jitter sigma .6
fading          8 %   regular rhythm, then from churn_at every gap grows x1.4-2.0, stops
silent          7 %   regular rhythm, then nothing at all from churn_at (abrupt)
vip             3 %   gap median 8 d (3-21 d), bigger baskets; 15 % of them fade/go silent
=============  =====  =================================================================

65 % of the repeat customers are *established* (already active at ``start_ms``, first order
within one gap); the others and all one-time buyers are acquired uniformly over
``acquisition_days``. Churners are unhappier before they leave: with probability .5 a slow,
SLA-breaching ticket 3-30 days before ``churn_at``, with probability .35 a detractor NPS
answer, and any NPS/CSAT/CES they give in the 45 days before ``churn_at`` leans negative.
So "slow ticket" and "detractor" predict churn, as they should.

Customer records (the ``customers`` topic), with ``SimConfig(customer_events=True)`` only:
three in four acquired customers sign up 0-3 days before their first order (one in five of
them ``referred_by`` a customer already acquired by then; 60 % with a birth date, a third of
those as a month-day only; 85 % with a time zone), then give their marketing consent a few
minutes later (every channel named); established customers (signed up before ``start_ms``)
now and then visit the preference centre. Later on: consent changes (12 %) and moves to
another time zone (5 %); with ``malformed_rate``, signups with a zone the IANA database lacks
ride along (dead letters ``unknown_time_zone``). These decisions use their own random streams
and ids (``sim-<seed>-p<n>``), so the other records are the same bytes with the option off
or on (only interleaved with the customer records): the benchmark digests are computed with
it off.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from itertools import accumulate
from typing import Any, Literal

import orjson

from schemas.codec import MAX_TIME_MS, MIN_TIME_MS, encode
from schemas.events import (
    CONSENT_CHANNELS,
    CUSTOMER,
    PURCHASE,
    REDEMPTION,
    SURVEY,
    TICKET,
    CustomerEvent,
    Event,
    Purchase,
    PurchaseLine,
    Redemption,
    SupportTicket,
    Survey,
)

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# ---------------------------------------------------------------------------------------------
# Static model tables
# ---------------------------------------------------------------------------------------------

SEGMENTS = ("one_time", "regular", "occasional", "fading", "silent", "vip")
SEGMENT_SHARES = (0.40, 0.25, 0.17, 0.08, 0.07, 0.03)
ESTABLISHED_SHARE = 0.65  # repeat customers already active at start_ms; the rest are acquired

CHANNELS = ("store", "web", "app")
CHANNEL_SHARES = (0.55, 0.30, 0.15)
CHANNEL_SOURCE = {"store": "pos", "web": "web", "app": "app"}
HOME_CHANNEL_LOYALTY = 0.8  # share of a customer's orders through their home channel

STORES = tuple(f"S{i:03d}" for i in range(1, 13))
STORE_WEIGHTS = (9, 8, 7, 6, 5, 5, 4, 4, 3, 3, 2, 2)  # flagship stores are busier

# Hour-of-day weights (UTC stands in for local time).
_HOURS_STORE = (0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 5, 7, 8, 7, 5, 5, 6, 8, 8, 6, 3, 1, 0, 0)
_HOURS_WEB = (2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 6, 5, 5, 5, 6, 7, 9, 10, 9, 6, 4)
_HOURS_APP = (2, 1, 1, 0, 0, 1, 3, 6, 7, 5, 4, 5, 7, 6, 4, 4, 5, 6, 7, 8, 9, 8, 6, 3)
_HOUR_CUM = {
    "store": list(accumulate(_HOURS_STORE)),
    "web": list(accumulate(_HOURS_WEB)),
    "app": list(accumulate(_HOURS_APP)),
}

# Gap multiplier by month (holiday season is busy, January is quiet).
_SEASON = (1.2, 1.1, 1.0, 1.0, 1.0, 1.0, 1.05, 1.05, 1.0, 1.0, 0.85, 0.75)

CATEGORIES = ("grocery", "apparel", "electronics", "home", "beauty", "toys")
_CATEGORY_BASE = (0.30, 0.18, 0.08, 0.16, 0.16, 0.12)
# Unit price range per category, EUR minor units.
_PRICE_RANGE = {
    "grocery": (89, 1499),
    "apparel": (799, 9999),
    "electronics": (999, 49999),
    "home": (399, 19999),
    "beauty": (399, 6999),
    "toys": (799, 14999),
}
_QTY = {"grocery": ((1, 2, 3, 4, 6), (50, 25, 12, 8, 5)), "electronics": ((1, 2), (95, 5))}
_QTY_DEFAULT = ((1, 2, 3), (85, 12, 3))
_QTY_CUM = {c: (_QTY.get(c, _QTY_DEFAULT)[0], list(accumulate(_QTY.get(c, _QTY_DEFAULT)[1])))
            for c in ("grocery", "apparel", "electronics", "home", "beauty", "toys")}
_SKUS_PER_CATEGORY = 12
LINE_COUNT_WEIGHTS = (0.38, 0.27, 0.17, 0.11, 0.07)  # 1..5 lines per order


def _charm(minor: float) -> int:
    """12.37 -> 11.99 / 12.99 style price (minor units)."""
    if minor < 200:
        return max(1, round(minor))
    return max(99, round(minor / 100) * 100 - 1)


def _build_catalogue() -> dict[str, tuple[tuple[str, int], ...]]:
    rng = random.Random("customer-pulse/catalogue/v1")  # fixed: same catalogue for every seed
    cat: dict[str, tuple[tuple[str, int], ...]] = {}
    for c in CATEGORIES:
        lo, hi = _PRICE_RANGE[c]
        items = []
        for i in range(_SKUS_PER_CATEGORY):
            price = _charm(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            items.append((f"{c[:3].upper()}-{i + 1:03d}", price))
        cat[c] = tuple(items)
    return cat


CATALOGUE = _build_catalogue()
_SKU_POPULARITY_CUM = list(accumulate(1.0 / (i + 1) for i in range(_SKUS_PER_CATEGORY)))

# Units of each currency per EUR, and minor-unit exponent (ISO 4217). Used only to give
# foreign-currency orders plausible amounts; the pipeline has its own rate table.
FX_PER_EUR = {
    "EUR": 1.0, "USD": 1.08, "GBP": 0.85, "CHF": 0.96, "SEK": 11.5, "NOK": 11.6,
    "DKK": 7.46, "PLN": 4.3, "CZK": 25.0, "CAD": 1.47, "AUD": 1.65, "JPY": 165.0,
}
_MINOR_EXP = {"JPY": 0}
UNKNOWN_CURRENCIES = ("XXX", "ZZZ")  # used by the malformed mix: dead letters downstream
FOREIGN_ORDER_RATE = {"store": 0.01, "web": 0.04, "app": 0.02}

FREE_ORDER_RATE = 0.015
REFUND_RATE = 0.03
FULL_REFUND_SHARE = 0.55

# Support tickets.
TICKET_CHANNELS = ("email", "phone", "chat", "store")
_TICKET_CHANNEL_W = {"store": (25, 35, 10, 30), "web": (40, 20, 38, 2), "app": (30, 15, 53, 2)}
TICKET_CATEGORIES = ("delivery", "product_defect", "return", "billing", "account", "other")
_TICKET_CATEGORY_W = {"store": (2, 30, 30, 15, 8, 15), "web": (35, 20, 20, 12, 8, 5),
                      "app": (30, 18, 18, 12, 15, 7)}
PRIORITIES = ("low", "normal", "high", "urgent")
PRIORITY_WEIGHTS = (0.25, 0.50, 0.18, 0.07)
# Service levels the simulator aims at (hours): first response, resolution. A "slow" ticket
# takes 1.5-4x the first-response target, so it breaches any SLA at least this strict.
SLA_FIRST_RESPONSE_H = {"low": 48.0, "normal": 24.0, "high": 8.0, "urgent": 2.0}
_RESPONSE_MEDIAN_H = {"low": 20.0, "normal": 6.0, "high": 1.5, "urgent": 0.4}
_RESOLVE_MEDIAN_H = {"low": 72.0, "normal": 30.0, "high": 10.0, "urgent": 3.0}
TICKET_BASE_RATE = 0.03  # per order, + electronics / online bumps, x personal propensity
SLOW_TICKET_RATE = 0.08
REOPEN_RATE = {False: 0.06, True: 0.40}  # by "went badly"

# Surveys.
NPS_AFTER_ORDER_RATE = 0.05
CES_AFTER_ONLINE_ORDER_RATE = 0.03
CSAT_AFTER_TICKET_RATE = 0.40
CES_AFTER_TICKET_RATE = 0.20
COMMENT_RATE = 0.2
# (promoter, passive, detractor) by mood.
_NPS_CLASS_W = {"happy": (0.62, 0.27, 0.11), "neutral": (0.42, 0.33, 0.25),
                "unhappy": (0.08, 0.22, 0.70)}
_NPS_SCORES = {"promoter": ((9, 10), (45, 55)), "passive": ((7, 8), (50, 50)),
               "detractor": ((0, 1, 2, 3, 4, 5, 6), (4, 3, 5, 8, 12, 28, 40))}
_CSAT_W = {"good": (3, 5, 12, 35, 45), "bad": (35, 30, 20, 10, 5)}  # scores 1..5
_CES_W = {"good": (2, 3, 5, 10, 20, 30, 30), "bad": (30, 25, 20, 12, 7, 4, 2)}  # 7 = very easy
_COMMENTS = {
    "good": ("Great service, thank you!", "Staff were really helpful.", "Fast delivery.",
             "Easy to use app.", "Problem solved quickly."),
    "neutral": ("Fine, nothing special.", "OK, but the app is a bit slow.",
                "Delivery took a while.", "Prices could be better."),
    "bad": ("Nobody answered my emails for days.", "The product broke after a week.",
            "I had to explain my problem three times.", "Delivery never arrived on time.",
            "Prices went up again, I'll shop elsewhere."),
}

# Loyalty redemptions.
REWARDS = (("RW-COFFEE", 100), ("RW-5OFF", 250), ("RW-FREESHIP", 300), ("RW-10OFF", 500),
           ("RW-20OFF", 1000), ("RW-GIFTBOX", 1500), ("RW-VOUCHER50", 2000))
REDEEM_RATE = {"vip": 0.10}
REDEEM_RATE_DEFAULT = 0.04
REDEEM_MIN_ORDERS = 4
POINTS_PER_EUR_ESTIMATE = 1  # the simulator's own conservative balance estimate

MALFORMED_TYPES = (
    "truncated_json", "invalid_utf8", "json_array", "missing_customer_id", "wrong_types",
    "survey_score_out_of_range", "negative_quantity", "unknown_currency", "unknown_time_zone",
)

# Customer records (SimConfig.customer_events).
SIGNUP_RATE = 0.75  # of acquired customers; the others buy as guests
REFERRED_RATE = 0.20
BIRTH_DATE_RATE = 0.60
MONTH_DAY_ONLY_SHARE = 0.35
TIME_ZONE_RATE = 0.85
TIME_ZONES = ("Europe/Paris", "Europe/Berlin", "Europe/London", "Europe/Madrid", "Europe/Rome",
              "Europe/Amsterdam", "Europe/Brussels", "America/New_York", "America/Chicago",
              "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney", "UTC")
_TIME_ZONE_W = (22, 15, 14, 9, 8, 6, 5, 6, 3, 3, 3, 2, 4)
CONSENT_IN_RATE = {"email": 0.60, "sms": 0.25, "push": 0.35, "post": 0.15, "phone": 0.05}
PREFERENCE_VISIT_RATE = 0.30  # established customers, within the first 60 days
CONSENT_CHANGE_RATE = 0.12
MOVE_RATE = 0.05
UNKNOWN_TIME_ZONES = ("Europe/Atlantis", "Mars/Olympus_Mons", "Paris")  # malformed mix
LIVE_CUSTOMER_RECORD_RATE = 0.02  # sample_events: share of customer records
_MALFORMED_BY_KIND = {
    PURCHASE: ("truncated_json", "invalid_utf8", "json_array", "missing_customer_id",
               "wrong_types", "negative_quantity", "unknown_currency", "unknown_currency"),
    TICKET: ("truncated_json", "invalid_utf8", "json_array", "missing_customer_id",
             "wrong_types"),
    SURVEY: ("truncated_json", "invalid_utf8", "json_array", "missing_customer_id",
             "wrong_types", "survey_score_out_of_range", "survey_score_out_of_range"),
    REDEMPTION: ("truncated_json", "invalid_utf8", "json_array", "missing_customer_id",
                 "wrong_types"),
}

_SEG_CUM = list(accumulate(SEGMENT_SHARES))
_CHANNEL_CUM = list(accumulate(CHANNEL_SHARES))
_STORE_CUM = list(accumulate(STORE_WEIGHTS))
_LINES_CUM = list(accumulate(LINE_COUNT_WEIGHTS))
_PRIORITY_CUM = list(accumulate(PRIORITY_WEIGHTS))


# ---------------------------------------------------------------------------------------------
# Public types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    start_ms: int  # event time of the beginning of the simulation (epoch ms, UTC)
    customers: int = 1000
    seed: int = 1
    malformed_rate: float = 0.0  # share of all records that are malformed, in [0, 1)
    currency: str = "EUR"
    extra_currencies: tuple[str, ...] = ("USD", "GBP")  # occasional foreign-currency orders
    acquisition_days: int = 365  # new customers' first orders are spread over this period
    live_time_scale: float = 1.0  # sample_events: follow-up delays are divided by this
    # records of the customers topic too (signups, consent, profile updates): off by default,
    # which keeps the other records' stream (and the benchmark digests) as it always was
    customer_events: bool = False

    def __post_init__(self) -> None:
        if type(self.start_ms) is not int or not MIN_TIME_MS <= self.start_ms < MAX_TIME_MS:
            raise ValueError(f"start_ms must be epoch ms from 1970 to 2099: {self.start_ms!r}")
        if not 0 <= self.customers <= 10_000_000:
            raise ValueError(f"customers must be between 0 and 10,000,000: {self.customers}")
        if not 0.0 <= self.malformed_rate < 1.0:
            raise ValueError(f"malformed_rate must be in [0, 1): {self.malformed_rate}")
        for cur in (self.currency, *self.extra_currencies):
            if not (len(cur) == 3 and cur.isascii() and cur.isupper() and cur.isalpha()):
                raise ValueError(f"currency must be a three-letter ISO-4217 code: {cur!r}")
            if cur in UNKNOWN_CURRENCIES:
                raise ValueError(f"{cur} is reserved for malformed records")
        if self.acquisition_days < 1:
            raise ValueError("acquisition_days must be at least 1")
        if not self.live_time_scale > 0:
            raise ValueError("live_time_scale must be positive")


@dataclass(frozen=True)
class SimRecord:
    kind: str  # "purchase" | "ticket" | "survey" | "redemption" | "customer"
    key: bytes  # customer_id, UTF-8
    value: bytes  # wire JSON, or deliberately malformed bytes
    valid: bool
    event: Event | None  # None when not valid
    at_ms: int  # event time (for a malformed record: that of the event it was derived from)
    defect: str | None = None  # one of MALFORMED_TYPES when not valid


@dataclass(frozen=True)
class CustomerProfile:
    customer_id: str
    segment: str  # one of SEGMENTS
    home_channel: str
    home_store: str  # used when they shop in a store
    mean_gap_days: float | None  # their usual inter-purchase gap (None: one-time buyer)
    established: bool  # already a customer at start_ms (else acquired later)
    first_order_at_ms: int
    churns: bool
    churn_style: str | None  # "one_time" | "fade" | "silent" | None
    # one_time: the single order; fade: gaps start growing; silent: last possible moment
    # of activity (no order at or after it). None when they do not churn.
    churn_at_ms: int | None


# ---------------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------------


class _Cust:
    """Static per-customer model: the profile plus what generation needs at hand."""

    __slots__ = ("cat_cum", "churn_at", "cid", "gap", "growth", "home", "idx", "key",
                 "profile", "segment", "sigma", "store", "style", "ticket_mult", "weight")

    def __init__(self, idx: int, rng: random.Random, cfg: SimConfig) -> None:
        self.idx = idx
        self.cid = f"C{idx + 1:06d}"
        self.key = self.cid.encode()
        seg = SEGMENTS[bisect_choice(rng, _SEG_CUM)]
        self.segment = seg
        self.home = CHANNELS[bisect_choice(rng, _CHANNEL_CUM)]
        self.store = STORES[bisect_choice(rng, _STORE_CUM)]
        if seg == "occasional":
            gap, self.sigma = _clip(rng.lognormvariate(math.log(90), 0.5), 45, 200), 0.6
        elif seg == "vip":
            gap, self.sigma = _clip(rng.lognormvariate(math.log(8), 0.4), 3, 21), 0.3
        else:  # regular, fading, silent (one_time: unused)
            gap, self.sigma = _clip(rng.lognormvariate(math.log(20), 0.5), 7, 60), 0.35
        self.gap = gap
        self.growth = rng.uniform(1.4, 2.0)
        rand = rng.random
        prefs = [b * (0.1 + 2.0 * rand() ** 2) for b in _CATEGORY_BASE]  # skewed tastes
        prefs[rng.randrange(len(prefs))] *= 3  # a favourite category
        if seg == "vip":
            prefs[CATEGORIES.index("electronics")] *= 3
            prefs[CATEGORIES.index("apparel")] *= 2
        self.cat_cum = list(accumulate(prefs))
        self.ticket_mult = rng.lognormvariate(0, 0.5)

        start, acq = cfg.start_ms, cfg.acquisition_days * DAY
        established = seg != "one_time" and rng.random() < ESTABLISHED_SHARE
        base = start + int(rng.random() * (gap * DAY if established else acq))
        first = _time_of_day(rng, base // DAY, self.home)
        if first < start:
            first += DAY
        style: str | None = None
        churn_at: int | None = None
        if seg == "one_time":
            style, churn_at = "one_time", first
        elif seg in ("fading", "silent") or (seg == "vip" and rng.random() < 0.15):
            style = "fade" if seg == "fading" or (seg == "vip" and rng.random() < 0.5) else "silent"
            tenure_days = rng.uniform(20, 330) if established else rng.uniform(60, 360)
            churn_at = first + int(max(tenure_days, 2.5 * gap) * DAY)
        self.style = style
        self.churn_at = churn_at
        self.weight = 1.0 / gap  # orders per day, for the live sampler
        self.profile = CustomerProfile(
            customer_id=self.cid, segment=seg, home_channel=self.home, home_store=self.store,
            mean_gap_days=None if seg == "one_time" else round(gap, 2),
            established=established, first_order_at_ms=first, churns=style is not None,
            churn_style=style, churn_at_ms=churn_at,
        )


class _Dyn:
    """Per-customer mutable state of one generation path."""

    __slots__ = ("fade_k", "orders", "redeemed", "spend_eur", "unhappy_until")

    def __init__(self) -> None:
        self.orders = 0
        self.spend_eur = 0.0
        self.redeemed = 0
        self.unhappy_until = 0
        self.fade_k = 0


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _time_of_day(rng: random.Random, day: int, channel: str) -> int:
    hour = bisect_choice(rng, _HOUR_CUM[channel])
    return day * DAY + hour * HOUR + rng.randrange(HOUR)


@lru_cache(maxsize=4096)
def _month_index(day: int) -> int:
    return datetime.fromtimestamp(day * 86_400, UTC).month - 1


def _weekday(day: int) -> int:  # Monday = 0; 1970-01-01 was a Thursday
    return (day + 3) % 7


@lru_cache(maxsize=64)
def _fx_rate(currency: str) -> float:
    """Minor units of ``currency`` per EUR minor unit."""
    return FX_PER_EUR.get(currency, 1.0) * 10 ** (_MINOR_EXP.get(currency, 2) - 2)


def _sentiment(rng: random.Random, mean: float, sd: float = 0.25) -> float:
    return round(_clip(rng.gauss(mean, sd), -1.0, 1.0), 2)


# Heap operations.
_OP_PURCHASE = 0  # timeline only: the customer's next order in their rhythm
_OP_EMIT = 1  # payload: (event class, fields without event_id)
_OP_TICKET = 2  # payload: (went_badly, category or None)
_OP_SURVEY = 3  # payload: (kind, touchpoint, forced NPS class or None, ticket went badly)
_OP_PROFILE = 4  # payload: the CustomerEvent fields without event_id and occurred_at


class _Profiles:
    """The customer records of one generation path: their own RNGs and ids, so that the
    other records do not depend on whether they are on (module docstring)."""

    def __init__(self, tag: str, cfg: SimConfig, id_base: str) -> None:
        self.rng = random.Random(f"customer-pulse/{tag}/profiles/{cfg.seed}")
        self.bad_rng = random.Random(f"customer-pulse/{tag}/profiles/malformed/{cfg.seed}")
        self.id_base = id_base
        self.n = self.n_bad = 0
        self.rate = cfg.malformed_rate

    def record(self, t: int, c: _Cust, fields: dict[str, Any]) -> list[SimRecord]:
        """The record (and any malformed companion) for a scheduled customer record."""
        self.n += 1
        ev = CustomerEvent(event_id=f"sim-{self.id_base}p{self.n}", customer_id=c.cid,
                           occurred_at=t, **fields)
        out = [SimRecord(CUSTOMER, c.key, encode(ev), True, ev, t)]
        if self.rate > 0 and ev.kind == "signup":
            while self.bad_rng.random() < self.rate:
                self.n_bad += 1
                obj = orjson.loads(out[0].value)
                obj["event_id"] = f"sim-{self.id_base}pbad-{self.n_bad}"
                obj["time_zone"] = self.bad_rng.choice(UNKNOWN_TIME_ZONES)
                out.append(SimRecord(CUSTOMER, c.key, orjson.dumps(obj), False, None, t,
                                     "unknown_time_zone"))
        return out

    def time_zone(self) -> str:
        return self.rng.choices(TIME_ZONES, weights=_TIME_ZONE_W)[0]

    def birth_date(self) -> str:
        rng = self.rng
        day = rng.randrange(-20 * 365, 36 * 365)  # 1950-03 .. 2005-12
        text = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
        return "--" + text[5:] if rng.random() < MONTH_DAY_ONLY_SHARE else text

    def consent(self, c: _Cust, every: bool) -> dict[str, Any]:
        """Every channel named (at signup), or one channel flipped towards opting out."""
        rng = self.rng
        if every:
            rates = dict(CONSENT_IN_RATE)
            if c.home == "app":
                rates["push"] = 0.7
            return {"source": CHANNEL_SOURCE[c.home], "kind": "consent",
                    "channels": tuple(sorted((ch, rng.random() < rates[ch])
                                             for ch in CONSENT_CHANNELS))}
        channel = rng.choice(CONSENT_CHANNELS[:3])
        return {"source": "web", "kind": "consent",
                "channels": ((channel, rng.random() < 0.3),)}

    def schedule(self, custs: list[_Cust], cfg: SimConfig,
                 push: Any) -> None:
        """Every customer's records over the simulation, onto the timeline's heap."""
        rng = self.rng
        start = cfg.start_ms
        for c in custs:
            p = c.profile
            if p.established:
                if rng.random() < PREFERENCE_VISIT_RATE:
                    at = start + int(rng.random() * 60 * DAY)
                    push(at, c.idx, self.consent(c, every=True))
                    if rng.random() < 0.3:
                        push(at + MINUTE, c.idx, {"source": "web", "kind": "profile_update",
                                                  "time_zone": self.time_zone()})
                continue
            if rng.random() >= SIGNUP_RATE:
                continue
            signup = max(start, p.first_order_at_ms - int(rng.random() * 3 * DAY))
            fields: dict[str, Any] = {"source": CHANNEL_SOURCE[c.home], "kind": "signup"}
            if rng.random() < REFERRED_RATE:
                for _ in range(5):  # someone acquired by then (or established), not themselves
                    other = custs[rng.randrange(len(custs))]
                    if other is not c and (other.profile.established
                                           or other.profile.first_order_at_ms < signup):
                        fields["referred_by"] = other.cid
                        break
            if rng.random() < BIRTH_DATE_RATE:
                fields["birth_date"] = self.birth_date()
            if rng.random() < TIME_ZONE_RATE:
                fields["time_zone"] = self.time_zone()
            push(signup, c.idx, fields)
            push(signup + int(rng.uniform(1, 10) * MINUTE), c.idx, self.consent(c, every=True))
            if rng.random() < CONSENT_CHANGE_RATE:
                push(signup + int(rng.uniform(10, 300) * DAY), c.idx, self.consent(c, False))
            if rng.random() < MOVE_RATE:
                push(signup + int(rng.uniform(30, 330) * DAY), c.idx,
                     {"source": "app", "kind": "profile_update", "time_zone": self.time_zone()})


class _DecisionStream:
    """One stream of decisions: its own RNGs, ids, heap and per-customer dynamic state."""

    def __init__(self, sim: Simulator, tag: str, delay_scale: float) -> None:
        cfg = sim.cfg
        self.cfg = cfg
        self.custs = sim._custs
        self.rng = random.Random(f"customer-pulse/{tag}/{cfg.seed}")
        self.bad_rng = random.Random(f"customer-pulse/{tag}/malformed/{cfg.seed}")
        self.heap: list[tuple[int, int, int, int, Any]] = []
        self.seq = 0
        self.scale = delay_scale
        base = f"{cfg.seed}-{tag[0].upper()}" if tag != "timeline" else f"{cfg.seed}-"
        self.id_base = base
        self.n_event = self.n_order = self.n_ticket = self.n_survey = self.n_bad = 0
        self.dyn: dict[int, _Dyn] = {}
        self.currencies = tuple(c for c in cfg.extra_currencies if c != cfg.currency)

    # ids -------------------------------------------------------------------------------------
    def _order_id(self) -> str:
        self.n_order += 1
        return f"ord-{self.id_base}{self.n_order}"

    def _ticket_id(self) -> str:
        self.n_ticket += 1
        return f"tkt-{self.id_base}{self.n_ticket}"

    def _survey_id(self) -> str:
        self.n_survey += 1
        return f"srv-{self.id_base}{self.n_survey}"

    def _d(self, idx: int) -> _Dyn:
        d = self.dyn.get(idx)
        if d is None:
            d = self.dyn[idx] = _Dyn()
        return d

    def push(self, t: int, op: int, idx: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, op, idx, payload))

    def later(self, t: int, delay_ms: float) -> int:
        """A follow-up ``delay_ms`` after ``t`` (compressed by the live time scale)."""
        return t + max(1, int(delay_ms / self.scale))

    def has_room(self) -> bool:
        return True

    # the customer model ------------------------------------------------------------------
    def mood(self, c: _Cust, d: _Dyn, t: int) -> str:
        if t < d.unhappy_until:
            return "unhappy"
        if c.style in ("fade", "silent") and c.churn_at is not None and t >= c.churn_at - 45 * DAY:
            return "unhappy"
        return "happy" if c.segment in ("regular", "vip") else "neutral"

    def order_channel(self, c: _Cust) -> str:
        rng = self.rng
        if rng.random() < HOME_CHANNEL_LOYALTY:
            return c.home
        return rng.choice([ch for ch in CHANNELS if ch != c.home])

    def purchase(self, eid: str, c: _Cust, t: int, channel: str) -> Purchase:
        """Build one order and schedule its follow-ups (refund, ticket, surveys, redemption)."""
        rng = self.rng
        rand = rng.random
        d = self._d(c.idx)
        vip = c.segment == "vip"
        free = rand() < FREE_ORDER_RATE
        if free:
            n_lines = 1
        elif c.style == "fade" and c.churn_at is not None and t >= c.churn_at:
            n_lines = 1 + (rand() < 0.3)  # fading: smaller baskets too
        else:
            n_lines = bisect_choice(rng, _LINES_CUM) + 1
            if vip and n_lines < 5:
                n_lines += 1
        currency = self.cfg.currency
        if self.currencies and rand() < FOREIGN_ORDER_RATE[channel]:
            currency = rng.choice(self.currencies)
        rate = _fx_rate(currency)
        merged: dict[str, list[Any]] = {}
        eur_total = 0
        electronics = False
        for _ in range(n_lines):
            cat = CATEGORIES[bisect_choice(rng, c.cat_cum)]
            sku, eur_price = CATALOGUE[cat][bisect_choice(rng, _SKU_POPULARITY_CUM)]
            vals, cum = _QTY_CUM[cat]
            qty = vals[bisect_choice(rng, cum)]
            if vip and rand() < 0.2:
                qty += 1
            if free:
                eur_price, qty = 0, 1
            electronics = electronics or cat == "electronics"
            eur_total += eur_price * qty
            if sku in merged:
                merged[sku][2] += qty
            else:
                price = eur_price if rate == 1.0 else (
                    max(1, round(eur_price * rate)) if eur_price else 0)
                merged[sku] = [sku, cat, qty, price]
        lines = tuple(PurchaseLine(s, ct, q, p) for s, ct, q, p in merged.values())
        amount = 0
        for ln in lines:
            amount += ln.quantity * ln.unit_price_minor
        store_id = None
        if channel == "store":
            store_id = c.store if rand() < 0.9 else STORES[bisect_choice(rng, _STORE_CUM)]
        order = Purchase(
            event_id=eid, customer_id=c.cid, occurred_at=t, source=CHANNEL_SOURCE[channel],
            order_id=self._order_id(), channel=channel, kind="purchase", amount_minor=amount,
            currency=currency, lines=lines, store_id=store_id,
        )
        d.orders += 1
        d.spend_eur += eur_total / 100
        if not self.has_room():
            return order
        # follow-ups
        if amount > 0 and rng.random() < REFUND_RATE:
            delay = DAY * (1 + min(59.0, rng.lognormvariate(math.log(6), 0.7)))
            self.push(self.later(t, delay), _OP_EMIT, c.idx, (Purchase, self._refund(order)))
        p_ticket = TICKET_BASE_RATE
        if electronics:
            p_ticket += 0.04
        if channel != "store":
            p_ticket += 0.015
        if rng.random() < p_ticket * c.ticket_mult:
            delay = min(20 * DAY, rng.lognormvariate(math.log(2 * DAY), 1.0))
            self.push(self.later(t, delay), _OP_TICKET, c.idx,
                      (rng.random() < SLOW_TICKET_RATE, None))
        if rng.random() < NPS_AFTER_ORDER_RATE:
            touch = {"store": "store_visit", "web": "web_checkout", "app": "app_checkout"}[channel]
            self.push(self.later(t, rng.uniform(1, 3) * DAY), _OP_SURVEY, c.idx,
                      ("nps", touch, None, None))
        if channel != "store" and rng.random() < CES_AFTER_ONLINE_ORDER_RATE:
            self.push(self.later(t, rng.uniform(10 * MINUTE, 2 * HOUR)), _OP_SURVEY, c.idx,
                      ("ces", "checkout", None, None))
        if d.orders >= REDEEM_MIN_ORDERS and (
            rng.random() < REDEEM_RATE.get(c.segment, REDEEM_RATE_DEFAULT)
        ):
            available = int(d.spend_eur * POINTS_PER_EUR_ESTIMATE) - d.redeemed
            affordable = [r for r in REWARDS if r[1] <= available]
            if affordable:
                reward, points = rng.choice(affordable)
                d.redeemed += points
                src = "pos" if channel == "store" else channel
                self.push(self.later(t, rng.uniform(5 * SECOND, MINUTE)), _OP_EMIT, c.idx,
                          (Redemption, {"customer_id": c.cid, "source": src,
                                        "reward_id": reward, "points": points}))
        return order

    def _refund(self, order: Purchase) -> dict[str, Any]:
        rng = self.rng
        lines = list(order.lines)
        if rng.random() >= FULL_REFUND_SHARE:
            if len(lines) > 1:
                k = rng.randint(1, len(lines) - 1)
                lines = sorted(rng.sample(lines, k), key=order.lines.index)
            elif lines[0].quantity > 1:
                ln = lines[0]
                lines = [PurchaseLine(ln.sku, ln.category, rng.randint(1, ln.quantity - 1),
                                      ln.unit_price_minor)]
        lines = [ln for ln in lines if ln.unit_price_minor > 0] or lines
        return {
            "customer_id": order.customer_id, "source": order.source, "order_id": order.order_id,
            "channel": order.channel, "kind": "refund",
            "amount_minor": sum(ln.quantity * ln.unit_price_minor for ln in lines),
            "currency": order.currency, "lines": tuple(lines), "store_id": order.store_id,
        }

    def ticket(self, eid: str, c: _Cust, t: int, bad: bool, category: str | None
               ) -> SupportTicket:
        """Open a ticket now and schedule the rest of its lifecycle and any survey after it."""
        rng = self.rng
        d = self._d(c.idx)
        tid = self._ticket_id()
        priority = PRIORITIES[bisect_choice(rng, _PRIORITY_CUM)]
        channel = rng.choices(TICKET_CHANNELS, weights=_TICKET_CHANNEL_W[c.home])[0]
        if category is None:
            category = rng.choices(TICKET_CATEGORIES, weights=_TICKET_CATEGORY_W[c.home])[0]
        common: dict[str, Any] = {"customer_id": c.cid, "source": "crm", "ticket_id": tid,
                  "priority": priority, "channel": channel, "category": category}
        opened = SupportTicket(event_id=eid, occurred_at=t, status="opened",
                               sentiment=_sentiment(rng, -0.5 if bad else -0.2), **common)
        if bad:
            d.unhappy_until = max(d.unhappy_until, t + 75 * DAY)
        if not self.has_room():
            return opened

        def step(at: int, status: str, sentiment: float | None) -> None:
            self.push(at, _OP_EMIT, c.idx,
                      (SupportTicket, {**common, "status": status, "sentiment": sentiment}))

        resp_h = _RESPONSE_MEDIAN_H[priority] * rng.lognormvariate(0, 0.5)
        resolve_h = _RESOLVE_MEDIAN_H[priority] * rng.lognormvariate(0, 0.5)
        if bad:
            resp_h = SLA_FIRST_RESPONSE_H[priority] * rng.uniform(1.5, 4.0)
            resolve_h *= rng.uniform(3.0, 6.0)
        at = self.later(t, resp_h * HOUR)
        step(at, "responded", _sentiment(rng, -0.45 if bad else 0.0))
        at = self.later(at, resolve_h * HOUR)
        step(at, "resolved", _sentiment(rng, -0.2 if bad else 0.45, 0.3))
        p_reopen = REOPEN_RATE[bad]
        while rng.random() < p_reopen:
            at = self.later(at, rng.uniform(0.2, 2.5) * DAY)
            step(at, "reopened", _sentiment(rng, -0.6, 0.2))
            at = self.later(at, resolve_h * rng.uniform(0.3, 0.8) * HOUR)
            step(at, "resolved", _sentiment(rng, -0.3 if bad else 0.3, 0.3))
            p_reopen /= 3
        resolved_at = at
        step(self.later(at, rng.uniform(2, 7) * DAY), "closed", None)
        if rng.random() < CSAT_AFTER_TICKET_RATE:
            self.push(self.later(resolved_at, rng.uniform(1, 24) * HOUR), _OP_SURVEY, c.idx,
                      ("csat", "support", None, bad))
        if rng.random() < CES_AFTER_TICKET_RATE:
            self.push(self.later(resolved_at, rng.uniform(1, 24) * HOUR), _OP_SURVEY, c.idx,
                      ("ces", "support", None, bad))
        return opened

    def survey(self, eid: str, c: _Cust, t: int, kind: Literal["nps", "csat", "ces"],
               touchpoint: str,
               forced: str | None, ticket_bad: bool | None) -> Survey:
        rng = self.rng
        mood = self.mood(c, self._d(c.idx), t)
        if kind == "nps":
            cls = forced or rng.choices(("promoter", "passive", "detractor"),
                                        weights=_NPS_CLASS_W[mood])[0]
            vals, w = _NPS_SCORES[cls]
            score = rng.choices(vals, weights=w)[0]
            tone = {"promoter": "good", "passive": "neutral", "detractor": "bad"}[cls]
        else:
            went = ("bad" if ticket_bad else "good") if ticket_bad is not None else (
                "bad" if mood == "unhappy" and rng.random() < 0.6 else "good")
            w = _CSAT_W[went] if kind == "csat" else _CES_W[went]
            score = rng.choices(range(1, len(w) + 1), weights=w)[0]
            top = len(w)
            tone = "good" if score >= top - 1 else "bad" if score <= top // 2 else "neutral"
        comment = rng.choice(_COMMENTS[tone]) if rng.random() < COMMENT_RATE else None
        return Survey(event_id=eid, customer_id=c.cid, occurred_at=t, source="survey-tool",
                      survey_id=self._survey_id(), kind=kind, score=score,
                      touchpoint=touchpoint, comment=comment)

    def process(self, t: int, op: int, idx: int, payload: Any) -> Event:
        """Run one heap entry (or live initiator): the event it emits, with the next id."""
        c = self.custs[idx]
        self.n_event += 1
        eid = f"sim-{self.id_base}{self.n_event}"
        if op == _OP_EMIT:
            cls, fields = payload
            return cls(event_id=eid, occurred_at=t, **fields)
        if op == _OP_PURCHASE:
            return self.purchase(eid, c, t, payload)
        if op == _OP_TICKET:
            return self.ticket(eid, c, t, *payload)
        return self.survey(eid, c, t, *payload)

    def malformed(self, template: Event, t: int, key: bytes) -> SimRecord:
        rng = self.bad_rng
        kind = template.event_kind
        defect = rng.choice(_MALFORMED_BY_KIND[kind])
        self.n_bad += 1
        obj = orjson.loads(encode(template))
        obj["event_id"] = f"sim-{self.id_base}bad-{self.n_bad}"  # never a duplicate of a valid id
        value: bytes
        if defect == "truncated_json":
            raw = orjson.dumps(obj)
            value = raw[: rng.randrange(1, len(raw) - 1)]
        elif defect == "invalid_utf8":
            raw = orjson.dumps(obj)
            value = raw.replace(b'"customer_id":"', b'"customer_id":"\xff\xfe', 1)
        elif defect == "json_array":
            value = orjson.dumps([obj])
        elif defect == "missing_customer_id":
            del obj["customer_id"]
            value = orjson.dumps(obj)
        elif defect == "wrong_types":
            field = rng.choice({
                PURCHASE: ("occurred_at", "amount_minor", "lines"),
                TICKET: ("occurred_at", "sentiment", "status"),
                SURVEY: ("occurred_at", "score"),
                REDEMPTION: ("occurred_at", "points"),
            }[kind])
            wrong: dict[str, Any] = {
                "occurred_at": t, "amount_minor": f"{obj.get('amount_minor', 0) / 100:.2f}",
                "lines": "see attachment", "sentiment": "angry", "status": 3,
                "score": str(obj.get("score")), "points": f"{obj.get('points')} pts",
            }
            obj[field] = wrong[field]
            value = orjson.dumps(obj)
        elif defect == "survey_score_out_of_range":
            lo, hi = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}[obj["kind"]]
            obj["score"] = rng.choice((lo - 1, hi + 1, hi + rng.randint(2, 90)))
            value = orjson.dumps(obj)
        elif defect == "negative_quantity":
            obj["lines"][0]["quantity"] = -rng.randint(1, 3)
            value = orjson.dumps(obj)
        else:  # unknown_currency: schema-valid, but no rate exists for it
            obj["currency"] = rng.choice(UNKNOWN_CURRENCIES)
            value = orjson.dumps(obj)
        return SimRecord(kind, key, value, False, None, t, defect)


def bisect_choice(rng: random.Random, cum: Sequence[float]) -> int:
    """Index drawn with the weights whose running sums are ``cum`` (zero weights never)."""
    return bisect_right(cum, rng.random() * cum[-1])


class _Timeline(_DecisionStream):
    """Every customer's life from start_ms on, in event-time order."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim, "timeline", 1.0)
        rng = self.rng
        self.until = sim.cfg.start_ms
        self.outbox: deque[SimRecord] = deque()
        self.profiles: _Profiles | None = None
        for c in self.custs:
            p = c.profile
            self.push(p.first_order_at_ms, _OP_PURCHASE, c.idx, c.home)
            if c.style in ("fade", "silent") and c.churn_at is not None:
                # Churners are unhappier before they leave (see module docstring).
                if rng.random() < 0.5:
                    at = c.churn_at - int(rng.uniform(3, 30) * DAY)
                    if at > p.first_order_at_ms:
                        self.push(at, _OP_TICKET, c.idx, (rng.random() < 0.85, None))
                if rng.random() < 0.35:
                    at = c.churn_at - int(rng.uniform(1, 25) * DAY)
                    if at > p.first_order_at_ms:
                        self.push(at, _OP_SURVEY, c.idx, ("nps", "relationship", "detractor",
                                                          None))
        if sim.cfg.customer_events:  # after the others: their pushes stay as they were
            self.profiles = _Profiles("timeline", sim.cfg, self.id_base)
            self.profiles.schedule(self.custs, sim.cfg,
                                   lambda t, idx, f: self.push(t, _OP_PROFILE, idx, f))

    def next_order(self, c: _Cust, t: int) -> None:
        """Schedule the customer's next order after the one at ``t`` (or none: they left)."""
        if c.segment == "one_time":
            return
        rng = self.rng
        d = self._d(c.idx)
        k = 0
        if c.style == "fade" and c.churn_at is not None and t >= c.churn_at:
            d.fade_k += 1
            k = d.fade_k
            if k > 1 and rng.random() < 0.3:
                return  # the last faded order
        day = t // DAY
        gap = c.gap * rng.lognormvariate(-c.sigma * c.sigma / 2, c.sigma)
        gap *= _SEASON[_month_index(day)] * c.growth**k
        if gap > 400:
            return
        channel = self.order_channel(c)
        nday = day + max(1, round(gap))
        if channel == "store" and _weekday(nday) <= 2 and rng.random() < 0.3:
            nday += 5 - _weekday(nday)  # shop on Saturday instead
        at = _time_of_day(rng, nday, channel)
        if c.style == "silent" and c.churn_at is not None and at >= c.churn_at:
            return
        self.push(at, _OP_PURCHASE, c.idx, channel)

    def run(self, until_ms: int) -> Iterator[SimRecord]:
        outbox, heap = self.outbox, self.heap
        rate, bad_random = self.cfg.malformed_rate, self.bad_rng.random
        while True:
            while outbox and outbox[0].at_ms < until_ms:
                yield outbox.popleft()
            if outbox or not heap or heap[0][0] >= until_ms:
                break
            t, _, op, idx, payload = heapq.heappop(heap)
            c = self.custs[idx]
            if op == _OP_PROFILE:  # its own RNGs and ids: the rest is not affected
                assert self.profiles is not None
                outbox.extend(self.profiles.record(t, c, payload))
                continue
            ev = self.process(t, op, idx, payload)
            if op == _OP_PURCHASE:
                self.next_order(c, t)
            outbox.append(SimRecord(ev.event_kind, c.key, encode(ev), True, ev, t))
            if rate > 0:  # malformed records ride along, from their own RNG
                while bad_random() < rate:
                    outbox.append(self.malformed(ev, t, c.key))
        self.until = max(self.until, until_ms)


class _Live(_DecisionStream):
    """The live sampler: activity-weighted customers, current times, bounded follow-ups."""

    MAX_PENDING = 200_000

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim, "live", sim.cfg.live_time_scale)
        self.weights_day: int | None = None
        self.cum: list[float] = []
        self.eligible: list[int] = []
        self.profiles = (_Profiles("live", sim.cfg, self.id_base)
                         if sim.cfg.customer_events else None)

    def has_room(self) -> bool:
        return len(self.heap) < self.MAX_PENDING

    def _weights(self, at_ms: int) -> None:
        day = at_ms // DAY
        if day == self.weights_day:
            return
        self.weights_day = day
        eligible, weights = [], []
        for c in self.custs:
            w = c.weight if c.segment != "one_time" else 1.0 / self.cfg.acquisition_days
            if c.profile.first_order_at_ms > at_ms and not c.profile.established:
                continue  # not acquired yet
            if c.churn_at is not None and at_ms >= c.churn_at and c.style != "one_time":
                w = 0.0 if c.style == "silent" else w / 4
            if w > 0:
                eligible.append(c.idx)
                weights.append(w)
        if not eligible:  # before anyone was acquired: treat everyone as a customer
            eligible = [c.idx for c in self.custs]
            weights = [c.weight for c in self.custs]
        self.eligible, self.cum = eligible, list(accumulate(weights))

    def sample(self, n: int, at_ms: int, spread_ms: int) -> list[SimRecord]:
        if n <= 0 or not self.custs:
            return []
        self._weights(at_ms)
        rng, bad_rng = self.rng, self.bad_rng
        lo = at_ms - spread_ms
        out: list[SimRecord] = []
        rate = self.cfg.malformed_rate
        profiles = self.profiles
        while len(out) < n:
            if profiles is not None and profiles.rng.random() < LIVE_CUSTOMER_RECORD_RATE:
                # a consent change or a move, from the profiles' own RNG (the rest unchanged)
                prng = profiles.rng
                c = self.custs[self.eligible[bisect_choice(prng, self.cum)]]
                fields = (profiles.consent(c, every=False) if prng.random() < 0.6 else
                          {"source": "app", "kind": "profile_update",
                           "time_zone": profiles.time_zone()})
                out += profiles.record(lo + int(prng.random() * spread_ms), c, fields)
                continue
            if rate > 0 and bad_rng.random() < rate:
                c = self.custs[self.eligible[bisect_choice(bad_rng, self.cum)]]
                t = lo + int(bad_rng.random() * spread_ms)
                out.append(self.malformed(self._template(c, t), t, c.key))
                continue
            if self.heap and self.heap[0][0] < at_ms:  # a due follow-up
                t, _, op, idx, payload = heapq.heappop(self.heap)
                t = max(t, lo)
            else:  # a customer turns up now
                idx = self.eligible[bisect_choice(rng, self.cum)]
                c = self.custs[idx]
                t = lo + int(rng.random() * spread_ms)
                x = rng.random()
                if x < 0.03:
                    bad = rng.random() < (0.6 if self.mood(c, self._d(idx), t) == "unhappy"
                                          else SLOW_TICKET_RATE)
                    op, payload = _OP_TICKET, (bad, None)
                elif x < 0.05:
                    op, payload = _OP_SURVEY, ("nps", "relationship", None, None)
                else:
                    op, payload = _OP_PURCHASE, self.order_channel(c)
            ev = self.process(t, op, idx, payload)
            out.append(SimRecord(ev.event_kind, self.custs[idx].key, encode(ev), True, ev, t))
        out.sort(key=lambda r: r.at_ms)
        return out

    def _template(self, c: _Cust, t: int) -> Event:
        """A throwaway valid event to corrupt (drawn from bad_rng; no state touched)."""
        rng = self.bad_rng
        kind = rng.choices((PURCHASE, TICKET, SURVEY, REDEMPTION), weights=(70, 15, 12, 3))[0]
        base: dict[str, Any] = {"event_id": "", "customer_id": c.cid, "occurred_at": t}
        if kind == PURCHASE:
            cat = rng.choice(CATEGORIES)
            sku, price = rng.choice(CATALOGUE[cat])
            line = PurchaseLine(sku=sku, category=cat, quantity=1, unit_price_minor=price)
            return Purchase(**base, source="pos", order_id=f"ord-{self.id_base}bad",
                            channel="store", kind="purchase", amount_minor=price,
                            currency=self.cfg.currency, lines=(line,), store_id=c.store)
        if kind == TICKET:
            return SupportTicket(**base, source="crm", ticket_id=f"tkt-{self.id_base}bad",
                                 status="opened", priority="normal", channel="email",
                                 category="other", sentiment=-0.3)
        if kind == SURVEY:
            return Survey(**base, source="survey-tool", survey_id=f"srv-{self.id_base}bad",
                          kind=rng.choice(("nps", "csat", "ces")), score=1,
                          touchpoint="relationship")
        return Redemption(**base, source="app", reward_id="RW-COFFEE", points=100)


class Simulator:
    """Deterministic retail traffic for one ``SimConfig`` (see the module docstring)."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        rng = random.Random(f"customer-pulse/customers/{cfg.seed}")
        self._custs = [_Cust(i, rng, cfg) for i in range(cfg.customers)]
        self._timeline = _Timeline(self)
        self._live: _Live | None = None

    def events_until(self, until_ms: int) -> Iterator[SimRecord]:
        """All records with event time in [previous until, until_ms), in event-time order.

        Lazy; call repeatedly with growing ``until_ms`` to advance time. Consecutive calls
        concatenate to exactly what one call would give (also if a previous iterator was
        abandoned half-way: what it did not yield comes first next time).
        """
        return self._timeline.run(until_ms)

    @property
    def until_ms(self) -> int:
        """How far ``events_until`` has advanced the timeline."""
        return self._timeline.until

    def history(self, days: float) -> list[SimRecord]:
        """Everything from ``start_ms`` over ``days`` days. Pure: does not advance this
        simulator (it replays a fresh one with the same config)."""
        fresh = Simulator(self.cfg)
        return list(fresh.events_until(self.cfg.start_ms + int(days * DAY)))

    def sample_events(self, n: int, at_ms: int, spread_ms: int = 2 * MINUTE) -> list[SimRecord]:
        """``n`` records with event times in [at_ms - spread_ms, at_ms), sorted by time, for a
        fixed-rate load generator. Customers are drawn by activity weight (orders per day;
        churned customers silent or slowed, not-yet-acquired ones absent); most visits are
        orders, whose follow-ups (ticket lifecycles, refunds, surveys, redemptions) come out
        in later calls once due (delays divided by ``live_time_scale``). Deterministic for a
        given sequence of calls; independent of ``events_until``. ``malformed_rate`` applies.
        """
        if self._live is None:
            self._live = _Live(self)
        return self._live.sample(n, at_ms, spread_ms)

    def profile(self, customer_id: str) -> CustomerProfile:
        """Ground truth for one customer. ``KeyError`` for an id the simulator never uses."""
        try:
            idx = int(customer_id[1:]) - 1
        except ValueError:
            raise KeyError(customer_id) from None
        if not customer_id.startswith("C") or not 0 <= idx < len(self._custs):
            raise KeyError(customer_id)
        c = self._custs[idx]
        if c.cid != customer_id:
            raise KeyError(customer_id)
        return c.profile

    def profiles(self) -> list[CustomerProfile]:
        return [c.profile for c in self._custs]
