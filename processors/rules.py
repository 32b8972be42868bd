"""Rules are data: one validated, immutable configuration for every processor.

Theory of operation
-------------------
The rules file (YAML or TOML, read by the shell) is a nested mapping. ``parse_rules`` maps
it onto the nested frozen dataclasses below, driven only by their type hints:

* supported types: ``int``, ``float``, ``bool``, ``str``, ``Decimal``, ``Literal[...]``,
  ``X | None``, ``Mapping[K, V]``, ``tuple[X, ...]`` and nested dataclasses;
* per-value checks ride on the type as ``Annotated[int, ge(0)]`` (also inside mappings and
  tuples, e.g. on mapping keys); cross-field checks are a ``_problems()`` method yielding
  ``(relative path, message)``;
* a section (dataclass) that is given only partly keeps the defaults of the fields it does
  not name; a mapping or tuple that is given replaces the default entirely;
* an empty section (``loyalty:`` with nothing under it, i.e. ``None``) means all defaults;
* unknown keys, wrong types and failed checks raise ``RulesError`` whose message starts
  with the dotted path of the field: ``support.sla.urgent.first_response_hours: ...``,
  ``fx.usd: ...``, ``loyalty.tiers[1].min_spend: ...``.

Later sections (loyalty, churn, kpi) only declare dataclasses here; the validator needs no
change. ``processors/default_rules.yaml`` documents every field; a unit test checks that it
parses to exactly ``DEFAULT_RULES``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from processors.errors import RulesError
from processors.timeutil import DAY_MS, HOUR_MS

# -- value checks (used inside Annotated[...]) ---------------------------------------------


@dataclass(frozen=True)
class Check:
    ok: Callable[[Any], bool]
    says: str  # what the value must be, e.g. "must be >= 0"


def ge(lo: float) -> Check:
    return Check(lambda v: v >= lo, f"must be >= {lo}")


def gt(lo: float) -> Check:
    return Check(lambda v: v > lo, f"must be > {lo}")


def between(lo: float, hi: float) -> Check:
    return Check(lambda v: lo <= v <= hi, f"must be between {lo} and {hi}")


_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
CURRENCY = Check(lambda v: bool(_CURRENCY_RE.match(v)), "must be a three-letter ISO-4217 code")

MAX_LATENESS_MS = 30 * DAY_MS  # bounds the dedup window and the day-bucket horizon


# -- sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlaTarget:
    """Service levels of one ticket priority, in hours from the ticket being opened."""

    first_response_hours: Annotated[float, gt(0)]
    resolution_hours: Annotated[float, gt(0)]

    @property
    def first_response_ms(self) -> int:
        return round(self.first_response_hours * HOUR_MS)

    @property
    def resolution_ms(self) -> int:
        return round(self.resolution_hours * HOUR_MS)

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.resolution_hours < self.first_response_hours:
            yield "resolution_hours", "must be >= first_response_hours"


@dataclass(frozen=True)
class SupportSla:
    urgent: SlaTarget = field(default_factory=lambda: SlaTarget(1.0, 8.0))
    high: SlaTarget = field(default_factory=lambda: SlaTarget(4.0, 24.0))
    normal: SlaTarget = field(default_factory=lambda: SlaTarget(24.0, 72.0))
    low: SlaTarget = field(default_factory=lambda: SlaTarget(72.0, 168.0))

    def of(self, priority: str) -> SlaTarget:
        target: SlaTarget = getattr(self, priority)
        return target


@dataclass(frozen=True)
class SupportRules:
    sla: SupportSla = field(default_factory=SupportSla)
    # Open tickets remembered per customer; opening one more evicts the oldest open ticket.
    max_open_tickets: Annotated[int, between(1, 1000)] = 20


@dataclass(frozen=True)
class SurveyRules:
    # Rolling CSAT and CES = mean of the latest N answers of that kind (by occurred_at).
    rolling_answers: Annotated[int, between(1, 50)] = 5


NAME = Check(lambda v: bool(v.strip()), "must not be empty")


@dataclass(frozen=True)
class LoyaltyTier:
    """One tier: reached when the rolling 12-month net spend (reporting-currency units, the
    365-day window of the customer state) is at least ``min_spend``."""

    name: Annotated[str, NAME]
    min_spend: Annotated[Decimal, ge(0)]
    multiplier: Annotated[Decimal, gt(0)] = Decimal(1)


@dataclass(frozen=True)
class GoodwillPoints:
    """Service-recovery points per SLA breach, by the priority of the ticket event."""

    urgent: Annotated[int, between(0, 1_000_000)] = 200
    high: Annotated[int, between(0, 1_000_000)] = 100
    normal: Annotated[int, between(0, 1_000_000)] = 50
    low: Annotated[int, between(0, 1_000_000)] = 25

    def of(self, priority: str) -> int:
        points: int = getattr(self, priority)
        return points


def _default_tiers() -> tuple[LoyaltyTier, ...]:
    return (LoyaltyTier("bronze", Decimal(0), Decimal(1)),
            LoyaltyTier("silver", Decimal(500), Decimal("1.25")),
            LoyaltyTier("gold", Decimal(1500), Decimal("1.5")),
            LoyaltyTier("platinum", Decimal(5000), Decimal(2)))


@dataclass(frozen=True)
class LoyaltyRules:
    """Points, tiers, bonuses, refunds, expiry (processors/loyalty/; documented field by
    field in default_rules.yaml)."""

    points_per_unit: Annotated[Decimal, ge(0)] = Decimal(1)
    category_multipliers: Mapping[Annotated[str, NAME], Annotated[Decimal, ge(0)]] = field(
        default_factory=lambda: MappingProxyType({"beauty": Decimal(2),
                                                  "electronics": Decimal("0.5")}))
    tiers: tuple[LoyaltyTier, ...] = field(default_factory=_default_tiers)
    downgrade_grace_days: Annotated[int, between(0, 3650)] = 90
    max_points_per_event: Annotated[int, between(1, 10**9)] = 10_000
    survey_bonus_points: Annotated[int, between(0, 1_000_000)] = 25
    survey_memory_days: Annotated[int, between(1, 3650)] = 90
    survey_memory_max: Annotated[int, between(1, 100)] = 8
    service_recovery_points: GoodwillPoints = field(default_factory=GoodwillPoints)
    refund_window_days: Annotated[int, between(1, 3650)] = 90
    max_remembered_orders: Annotated[int, between(0, 1000)] = 16
    max_remembered_lines: Annotated[int, between(0, 500)] = 20
    allow_negative_balance: bool = False
    allow_negative_adjustments: bool = False  # may an operator's debit exceed the balance?
    expiry_months: Annotated[int, between(0, 120)] = 12
    expiry_notice_days: Annotated[int, between(0, 365)] = 30

    def _problems(self) -> Iterator[tuple[str, str]]:
        if not self.tiers:
            yield "tiers", "must list at least one tier"
            return
        if self.tiers[0].min_spend != 0:
            yield "tiers[0].min_spend", "must be 0 (the first tier is where every member starts)"
        for i in range(1, len(self.tiers)):
            if self.tiers[i].min_spend <= self.tiers[i - 1].min_spend:
                yield f"tiers[{i}].min_spend", f"must be greater than tiers[{i - 1}].min_spend"
        names = [t.name for t in self.tiers]
        for i, name in enumerate(names):
            if name in names[:i]:
                yield f"tiers[{i}].name", f"{name!r} is used by an earlier tier"
        if self.expiry_months and self.expiry_notice_days >= 28 * self.expiry_months:
            yield "expiry_notice_days", "must be shorter than expiry_months"


@dataclass(frozen=True)
class ReferralRules:
    """The referral programme (processors/referral/; documented field by field in
    default_rules.yaml and README "Referral programme")."""

    enabled: bool = True
    referrer_points: Annotated[int, between(0, 1_000_000)] = 500
    referred_points: Annotated[int, between(0, 1_000_000)] = 250
    min_purchase: Annotated[Decimal, ge(0)] = Decimal(20)  # reporting-currency units
    purchase_within_days: Annotated[int, between(1, 3650)] = 30
    return_window_days: Annotated[int, between(0, 3650)] = 30
    max_rewarded_per_period: Annotated[int, between(0, 1000)] = 10
    period_days: Annotated[int, between(1, 3650)] = 365


@dataclass(frozen=True)
class ChurnModel:
    """The purchase model (MBG/NBD, processors/churn/): P(no purchase within horizon_days).
    Purchase rates are gamma(rate_shape, rate_scale_days) across customers; after each
    purchase a customer drops out with a probability that is beta(dropout_a, dropout_b)."""

    horizon_days: Annotated[float, between(1, 3650)] = 90.0
    rate_shape: Annotated[float, between(0.01, 100)] = 0.25
    rate_scale_days: Annotated[float, between(0.1, 3650)] = 60.0
    dropout_a: Annotated[float, between(0.01, 100)] = 0.8
    dropout_b: Annotated[float, between(0.01, 100)] = 2.5


@dataclass(frozen=True)
class ChurnWeights:
    """Log-odds added to the purchase model by each signal at full strength (0 turns it off).
    ``low_value`` and ``repeat_purchases`` are per unit of a log scale instead (see
    processors/churn/) and are off by default: ``pulse fit churn`` turns them on."""

    overdue: Annotated[float, between(0, 10)] = 0.25
    frequency_down: Annotated[float, between(0, 10)] = 0.5
    spend_down: Annotated[float, between(0, 10)] = 0.25
    urgent_ticket: Annotated[float, between(0, 10)] = 1.5
    reopened_ticket: Annotated[float, between(0, 10)] = 1.0
    sla_breach: Annotated[float, between(0, 10)] = 1.0
    negative_sentiment: Annotated[float, between(0, 10)] = 0.5
    nps_detractor: Annotated[float, between(0, 10)] = 2.0
    low_csat: Annotated[float, between(0, 10)] = 0.75
    high_effort: Annotated[float, between(0, 10)] = 1.0
    low_value: Annotated[float, between(0, 10)] = 0.0
    repeat_purchases: Annotated[float, between(0, 10)] = 0.0


@dataclass(frozen=True)
class ChurnLevel:
    """A risk level is entered when the score reaches ``enter`` and left below ``exit``."""

    enter: Annotated[float, between(0, 1)]
    exit: Annotated[float, between(0, 1)]

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.exit > self.enter:
            yield "exit", "must be <= enter"


@dataclass(frozen=True)
class ChurnRules:
    """Churn score, levels and alerts (processors/churn/; every field documented in
    default_rules.yaml)."""

    model: ChurnModel = field(default_factory=ChurnModel)
    weights: ChurnWeights = field(default_factory=ChurnWeights)
    # the score's log-odds are bias + model_weight * the purchase model's + the weighted
    # signals; (1, 0) leaves the purchase model as it is. ``pulse fit churn`` fits them.
    model_weight: Annotated[float, between(0, 10)] = 1.0
    bias: Annotated[float, between(-20, 20)] = 0.0
    # spend per purchase day (reporting currency, minor units) at which low_value adds 0
    value_reference_minor: Annotated[int, between(1, 10**12)] = 5000
    overdue_from: Annotated[float, between(0, 100)] = 1.5
    overdue_full: Annotated[float, between(0, 100)] = 4.0
    overdue_min_purchase_days: Annotated[int, between(2, 1000)] = 5
    trend_min_orders: Annotated[int, between(1, 1000)] = 3
    trend_min_drop: Annotated[float, between(0, 0.99)] = 0.2
    urgent_priorities: tuple[Literal["low", "normal", "high", "urgent"], ...] = ("urgent",)
    service_memory_days: Annotated[int, between(1, 3650)] = 90
    survey_memory_days: Annotated[int, between(1, 3650)] = 180
    negative_sentiment_below: Annotated[float, between(-0.99, 1)] = -0.2
    low_csat_below: Annotated[float, between(1.01, 5)] = 3.0
    high_effort_ces_below: Annotated[float, between(1.01, 7)] = 4.0
    medium: ChurnLevel = field(default_factory=lambda: ChurnLevel(0.7, 0.6))
    high: ChurnLevel = field(default_factory=lambda: ChurnLevel(0.9, 0.8))
    cooldown_days: Annotated[int, between(1, 3650)] = 30
    recovered_messages: bool = True
    max_reasons: Annotated[int, between(1, 20)] = 3
    min_reason_weight: Annotated[float, between(0, 1)] = 0.01
    check_horizon_days: Annotated[int, between(1, 3650)] = 730

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.overdue_full <= self.overdue_from:
            yield "overdue_full", "must be greater than overdue_from"
        if self.high.enter <= self.medium.enter:
            yield "high.enter", "must be greater than medium.enter"
        if self.high.exit < self.medium.exit:
            yield "high.exit", "must be >= medium.exit"


# A channel or touchpoint name as a KPI label: also part of Redis field names (':'-separated)
KPI_LABEL = Check(lambda v: bool(re.match(r"^[a-z0-9][a-z0-9_.-]{0,39}$", v)),
                  "must be 1-40 lower-case letters, digits, '_', '.' or '-'")


@dataclass(frozen=True)
class KpiRules:
    """KPI gauges (processors/kpi.py): the rolling window, the CLTV lifespan cap, and the
    channel and touchpoint names reported by name (any other is reported as "other", which
    keeps Prometheus label cardinality bounded whatever producers send)."""

    window_days: Annotated[int, between(1, 180)] = 30
    lifespan_cap_days: Annotated[int, between(1, 36500)] = 3650
    channels: tuple[Annotated[str, KPI_LABEL], ...] = (
        "store", "web", "app", "phone", "email", "chat")
    touchpoints: tuple[Annotated[str, KPI_LABEL], ...] = (
        "checkout", "web_checkout", "app_checkout", "store_visit", "delivery", "support",
        "relationship")

    def channel(self, name: str) -> str:
        return name if name in self.channels else "other"

    def touchpoint(self, name: str) -> str:
        return name if name in self.touchpoints else "other"

    def _problems(self) -> Iterator[tuple[str, str]]:
        for what, names in (("channels", self.channels), ("touchpoints", self.touchpoints)):
            if len(set(names)) != len(names):
                yield what, "must not list a name twice"
            if "other" in names:
                yield what, "must not list 'other' (it stands for every unlisted name)"


# The message kinds of the engagement layer, in priority order (processors/engagement/):
# when several are due together, or one falls inside min_days_between_messages of the last
# message sent, the earlier in this list wins.
TRIGGER_KINDS: tuple[str, ...] = ("points_expiry", "birthday", "tier_upgrade", "anniversary",
                                  "replenishment")
SEGMENTS: tuple[str, ...] = ("lapsed", "new", "one_time", "at_risk", "big_spender", "loyal",
                             "active", "inactive", "prospect")


@dataclass(frozen=True)
class SegmentRules:
    """The segment definitions (processors/engagement/segments.py; every field documented in
    default_rules.yaml). Days are event-time days of 24 h."""

    new_days: Annotated[int, between(1, 3650)] = 30
    active_days: Annotated[int, between(1, 3650)] = 90
    lapsed_days: Annotated[int, between(2, 3650)] = 180
    loyal_min_purchase_days: Annotated[int, between(2, 1000)] = 5
    loyal_min_span_days: Annotated[int, between(1, 3650)] = 180
    big_spender_min_spend: Annotated[Decimal, gt(0)] = Decimal(2000)
    at_risk_level: Literal["medium", "high"] = "medium"

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.lapsed_days <= self.active_days:
            yield "lapsed_days", "must be greater than active_days"


OFFER = Check(lambda v: bool(re.match(r"^[a-z0-9][a-z0-9_.-]{0,63}$", v)),
              "must be 1-64 lower-case letters, digits, '_', '.' or '-'")


@dataclass(frozen=True)
class TriggerRule:
    """One proactive message: on or off, and the message/offer type suggested with it."""

    enabled: bool = True
    offer: Annotated[str, OFFER] = "message"


@dataclass(frozen=True)
class ReplenishmentRule:
    """The replenishment nudge: silence past ``overdue_factor`` x the customer's own mean
    gap between purchase days, for customers with ``min_purchase_days``, while the churn
    level is at most ``max_churn_level`` and no churn alert went out in that silence. With
    ``quiets_churn_alert`` a churn alert that the nudged silence alone would raise later is
    withheld (the level still rises)."""

    enabled: bool = True
    offer: Annotated[str, OFFER] = "replenishment_reminder"
    overdue_factor: Annotated[float, between(1, 100)] = 1.5
    min_purchase_days: Annotated[int, between(2, 1000)] = 3
    max_churn_level: Literal["low", "medium"] = "low"
    quiets_churn_alert: bool = True


@dataclass(frozen=True)
class EngagementRules:
    """Segments and proactive messages (processors/engagement/; every field documented in
    default_rules.yaml)."""

    segments: SegmentRules = field(default_factory=SegmentRules)
    segment_changes: bool = True  # segment changes on the engagement topic
    local_hour: Annotated[int, between(0, 23)] = 9  # birthdays, anniversaries: local time
    birthday: TriggerRule = field(
        default_factory=lambda: TriggerRule(True, "birthday_gift"))
    anniversary: TriggerRule = field(
        default_factory=lambda: TriggerRule(True, "anniversary_thank_you"))
    replenishment: ReplenishmentRule = field(default_factory=ReplenishmentRule)
    points_expiry: TriggerRule = field(
        default_factory=lambda: TriggerRule(True, "use_your_points"))
    tier_upgrade: TriggerRule = field(
        default_factory=lambda: TriggerRule(True, "tier_welcome"))
    min_days_between_messages: Annotated[int, between(0, 365)] = 7

    def trigger(self, kind: str) -> TriggerRule | ReplenishmentRule:
        rule: TriggerRule | ReplenishmentRule = getattr(self, kind)
        return rule


# Illustrative static rates: units of EUR per 1 unit of the currency. Configure real ones.
_DEFAULT_FX: dict[str, Decimal] = {
    "EUR": Decimal("1"),
    "USD": Decimal("0.92"),
    "GBP": Decimal("1.17"),
    "CHF": Decimal("1.05"),
    "SEK": Decimal("0.088"),
    "NOK": Decimal("0.086"),
    "DKK": Decimal("0.134"),
    "PLN": Decimal("0.23"),
    "JPY": Decimal("0.0061"),
    "CAD": Decimal("0.68"),
}
# ISO-4217 exponents (digits after the decimal point). Wider than _DEFAULT_FX so that adding
# a rate usually needs no exponent.
_DEFAULT_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        ("EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CAD", "AUD", "NZD", "CZK",
         "HUF", "RON", "BGN", "TRY", "MXN", "BRL", "CNY", "HKD", "SGD", "INR", "ZAR", "ILS",
         "AED", "SAR", "THB", "MYR", "PHP"),
        2,
    ),
    **dict.fromkeys(("JPY", "KRW", "ISK", "CLP", "VND", "IDR", "UGX", "XOF", "XAF"), 0),
    **dict.fromkeys(("BHD", "KWD", "OMR", "JOD", "TND", "IQD", "LYD"), 3),
}


@dataclass(frozen=True)
class Rules:
    reporting_currency: Annotated[str, CURRENCY] = "EUR"
    fx: Mapping[Annotated[str, CURRENCY], Annotated[Decimal, gt(0)]] = field(
        default_factory=lambda: MappingProxyType(dict(_DEFAULT_FX))
    )
    minor_units: Mapping[Annotated[str, CURRENCY], Annotated[int, between(0, 4)]] = field(
        default_factory=lambda: MappingProxyType(dict(_DEFAULT_MINOR_UNITS))
    )
    allowed_lateness_ms: Annotated[int, between(0, MAX_LATENESS_MS)] = 8 * DAY_MS
    late_arrival_ms: Annotated[int, between(0, 10 * 365 * DAY_MS)] = DAY_MS
    dedup_window_max: Annotated[int, between(1, 10_000)] = 64
    support: SupportRules = field(default_factory=SupportRules)
    surveys: SurveyRules = field(default_factory=SurveyRules)
    loyalty: LoyaltyRules = field(default_factory=LoyaltyRules)
    churn: ChurnRules = field(default_factory=ChurnRules)
    kpi: KpiRules = field(default_factory=KpiRules)
    engagement: EngagementRules = field(default_factory=EngagementRules)
    referral: ReferralRules = field(default_factory=ReferralRules)

    def _problems(self) -> Iterator[tuple[str, str]]:
        rate = self.fx.get(self.reporting_currency)
        if rate != 1:
            yield "fx", f"must list the reporting currency {self.reporting_currency} at rate 1"
        for cur in self.fx:
            if cur not in self.minor_units:
                yield "minor_units", f"has no exponent for {cur} (listed in fx)"


# -- the generic validator ---------------------------------------------------------------------

T = TypeVar("T")


def parse_rules(mapping: Mapping[str, Any] | None) -> Rules:
    """Validate a parsed rules file. ``None`` or ``{}`` gives the documented defaults."""
    return parse_section(Rules, mapping)


def parse_section(cls: type[T], mapping: Mapping[str, Any] | None, path: str = "") -> T:
    """The generic validator: map a nested mapping onto the frozen dataclass ``cls``."""
    value: T = _parse(cls, mapping, path, None)
    _validate(cls, value, path)
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def _shown(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def _bad(path: str, what: str, value: Any) -> RulesError:
    return RulesError(path or "(root)", f"{what}, got {_shown(value)}")


def _parse(tp: Any, value: Any, path: str, base: Any) -> Any:
    """Convert ``value`` to type ``tp``; ``base`` is the default it overrides (sections)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _parse(get_args(tp)[0], value, path, base)
    if dataclasses.is_dataclass(tp):
        return _parse_section(tp, value, path, base)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        if len(options) != 1:
            raise TypeError(f"unsupported rules type {tp!r} at {path}")
        return _parse(options[0], value, path, base)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed or type(value) is bool:
            raise _bad(path, f"must be one of {', '.join(map(str, allowed))}", value)
        return value
    if origin is Mapping:
        kt, vt = get_args(tp)
        if not isinstance(value, Mapping):
            raise _bad(path, "must be a mapping", value)
        return MappingProxyType(
            {
                _parse(kt, k, _join(path, k), None): _parse(vt, v, _join(path, k), None)
                for k, v in value.items()
            }
        )
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise _bad(path, "must be a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif len(args) != len(value):
            raise _bad(path, f"must have exactly {len(args)} items", value)
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_parse(a, v, f"{path}[{i}]", None) for i, (a, v) in pairs)
    return _parse_scalar(tp, value, path)


def _parse_scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is bool:
        if type(value) is not bool:
            raise _bad(path, "must be true or false", value)
        return value
    if tp is int:
        if type(value) is not int:
            raise _bad(path, "must be an integer", value)
        return value
    if tp is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise _bad(path, "must be a finite number", value)
        return float(value)
    if tp is Decimal:
        if type(value) not in (int, float, str, Decimal):
            raise _bad(path, "must be a decimal number", value)
        try:
            d = Decimal(repr(value) if type(value) is float else value)
        except InvalidOperation:
            raise _bad(path, "must be a decimal number", value) from None
        if not d.is_finite():
            raise _bad(path, "must be a finite decimal number", value)
        return d
    if tp is str:
        if type(value) is not str:
            raise _bad(path, "must be a string", value)
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported rules type {tp!r} at {path}")


def _parse_section(cls: Any, value: Any, path: str, base: Any) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _bad(path, "must be a mapping (a section)", value)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            known = ", ".join(fields) or "none: this section is not configurable yet"
            raise RulesError(_join(path, key), f"unknown field (known: {known})")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if base is not None:
            default = getattr(base, name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if name in value:
            kwargs[name] = _parse(hints[name], value[name], _join(path, name), default)
        elif default is dataclasses.MISSING:
            raise RulesError(_join(path, name), "required field is missing")
        else:
            kwargs[name] = default
    return cls(**kwargs)


def _validate(tp: Any, value: Any, path: str) -> None:
    """Run every ``Annotated`` check and ``_problems()`` over a parsed value (defaults too)."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *checks = get_args(tp)
        _validate(base, value, path)
        for c in checks:
            if isinstance(c, Check) and not c.ok(value):
                raise _bad(path, c.says, value)
    elif dataclasses.is_dataclass(tp):
        hints = _hints(tp)  # type: ignore[arg-type]  # tp is a dataclass type here
        for f in dataclasses.fields(tp):
            _validate(hints[f.name], getattr(value, f.name), _join(path, f.name))
        problems = getattr(value, "_problems", None)
        for rel, message in problems() if problems else ():
            raise RulesError(_join(path, rel), message)
    elif origin in (Union, types.UnionType):
        if value is not None:
            (arg,) = [a for a in get_args(tp) if a is not type(None)]
            _validate(arg, value, path)
    elif origin is Mapping:
        kt, vt = get_args(tp)
        for k, v in value.items():
            _validate(kt, k, _join(path, k))
            _validate(vt, v, _join(path, k))
    elif origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        for i, (a, v) in enumerate(zip(args, value, strict=True)):
            _validate(a, v, f"{path}[{i}]")


# -- constants derived from rules --------------------------------------------------------------

R = TypeVar("R")
D = TypeVar("D")


def per_rules(build: Callable[[R], D]) -> Callable[[R], D]:
    """Memoise ``build(rules)`` per rules object, for constants the hot path derives from the
    rules (processors ask for them on every event). By identity, since rules hold dicts and
    do not hash; the object is kept with its value so its id cannot be reused by another.
    The last hit is checked first: a worker runs one rules object."""
    cache: dict[int, tuple[Any, D]] = {}
    last: list[Any] = [None, None]

    def get(rules: R) -> D:
        if rules is last[0]:
            return last[1]
        hit = cache.get(id(rules))
        if hit is None or hit[0] is not rules:
            if len(cache) >= 16:
                cache.clear()
            hit = cache[id(rules)] = (rules, build(rules))
        last[0], last[1] = hit
        return hit[1]

    get.__doc__ = build.__doc__
    return get


DEFAULT_RULES: Rules = parse_rules({})
