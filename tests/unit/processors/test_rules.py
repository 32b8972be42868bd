"""Rules are data: defaults, the documented default file, errors that name the field, money."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import yaml

import processors
from processors.errors import Rejected, RulesError
from processors.money import to_reporting_minor
from processors.rules import DEFAULT_RULES, Rules, ge, parse_rules, parse_section
from processors.timeutil import DAY_MS, HOUR_MS

DEFAULT_FILE = Path(processors.__file__).parent / "default_rules.yaml"


def test_defaults() -> None:
    r = DEFAULT_RULES
    assert r == parse_rules({}) == parse_rules(None)
    assert r.reporting_currency == "EUR"
    assert set(r.fx) == {"EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "JPY", "CAD"}
    assert r.fx["EUR"] == 1 and isinstance(r.fx["USD"], Decimal)
    assert r.minor_units["JPY"] == 0 and r.minor_units["EUR"] == 2
    assert r.allowed_lateness_ms == 8 * DAY_MS and r.late_arrival_ms == DAY_MS
    assert r.dedup_window_max == 64
    sla = r.support.sla
    assert [(sla.of(p).first_response_ms, sla.of(p).resolution_ms)
            for p in ("urgent", "high", "normal", "low")] == [
        (1 * HOUR_MS, 8 * HOUR_MS), (4 * HOUR_MS, 24 * HOUR_MS),
        (24 * HOUR_MS, 72 * HOUR_MS), (72 * HOUR_MS, 168 * HOUR_MS)]
    assert r.support.max_open_tickets == 20
    assert r.surveys.rolling_answers == 5


def test_default_file_documents_exactly_the_defaults() -> None:
    text = DEFAULT_FILE.read_text()
    assert parse_rules(yaml.safe_load(text)) == DEFAULT_RULES
    # every field of every section appears in the file
    def names(obj: Any) -> set[str]:
        out: set[str] = set()
        for f in getattr(obj, "__dataclass_fields__", {}):
            out.add(f)
            out |= names(getattr(obj, f))
        return out
    missing = {n for n in names(DEFAULT_RULES) if f"{n}:" not in text}
    assert not missing


def test_partial_section_keeps_the_other_defaults() -> None:
    r = parse_rules({"support": {"sla": {"urgent": {"first_response_hours": 0.5}}},
                     "loyalty": None})
    assert r.support.sla.urgent.first_response_ms == HOUR_MS // 2
    assert r.support.sla.urgent.resolution_hours == 8
    assert r.support.sla.high == DEFAULT_RULES.support.sla.high
    assert r.support.max_open_tickets == 20


def test_a_given_mapping_replaces_the_default() -> None:
    r = parse_rules({"reporting_currency": "USD", "fx": {"USD": 1, "EUR": "1.08"},
                     "minor_units": {"USD": 2, "EUR": 2}})
    assert dict(r.fx) == {"USD": Decimal(1), "EUR": Decimal("1.08")}


BAD = [
    ({"nope": 1}, "nope: unknown field"),
    ({"support": {"slas": {}}}, "support.slas: unknown field"),
    ({"loyalty": {"points": 1}}, "loyalty.points: unknown field"),
    ({"support": {"sla": {"urgent": {"first_response_hours": -1}}}},
     "support.sla.urgent.first_response_hours: must be > 0"),
    ({"support": {"sla": {"high": {"resolution_hours": 2}}}},
     "support.sla.high.resolution_hours: must be >= first_response_hours"),
    ({"support": {"sla": {"critical": {}}}}, "support.sla.critical: unknown field"),
    ({"support": {"max_open_tickets": 0}}, "support.max_open_tickets: must be between 1"),
    ({"support": "yes"}, "support: must be a mapping"),
    ({"allowed_lateness_ms": True}, "allowed_lateness_ms: must be an integer"),
    ({"allowed_lateness_ms": 1.5}, "allowed_lateness_ms: must be an integer"),
    ({"allowed_lateness_ms": 31 * DAY_MS}, "allowed_lateness_ms: must be between 0 and"),
    ({"dedup_window_max": 0}, "dedup_window_max: must be between 1"),
    ({"reporting_currency": "eur"}, "reporting_currency: must be a three-letter ISO-4217"),
    ({"fx": {"usd": 1, "EUR": 1}}, "fx.usd: must be a three-letter ISO-4217 code"),
    ({"fx": {"EUR": 1, "USD": 0}}, "fx.USD: must be > 0"),
    ({"fx": {"EUR": 1, "USD": "abc"}}, "fx.USD: must be a decimal number"),
    ({"fx": {"EUR": 1, "USD": "NaN"}}, "fx.USD: must be a finite decimal number"),
    ({"fx": {"USD": 1}}, "fx: must list the reporting currency EUR at rate 1"),
    ({"fx": ["EUR"]}, "fx: must be a mapping"),
    ({"fx": {"EUR": 1, "ABC": 2}}, "minor_units: has no exponent for ABC"),
    ({"minor_units": {"EUR": 5}}, "minor_units.EUR: must be between 0 and 4"),
    ({"surveys": {"rolling_answers": "5"}}, "surveys.rolling_answers: must be an integer"),
]


@pytest.mark.parametrize(("mapping", "message"), BAD)
def test_bad_field_is_named(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(RulesError) as exc:
        parse_rules(mapping)
    assert str(exc.value).startswith(message)
    assert exc.value.path == message.split(":")[0]


def test_root_must_be_a_mapping() -> None:
    with pytest.raises(RulesError, match=r"^\(root\): must be a mapping"):
        parse_rules(["a"])  # type: ignore[arg-type]


# -- the generic validator, on the kind of section later issues will declare --------------


@dataclass(frozen=True)
class Tier:
    name: str
    min_spend: Annotated[int, ge(0)]
    multiplier: float = 1.0


@dataclass(frozen=True)
class Loyaltyish:
    tiers: tuple[Tier, ...] = field(default_factory=lambda: (Tier("base", 0),))
    mode: Literal["strict", "lenient"] = "strict"
    grace_days: int | None = None
    enabled: bool = True


def test_generic_validator_maps_nested_types() -> None:
    got = parse_section(Loyaltyish, {"tiers": [{"name": "a", "min_spend": 0},
                                               {"name": "b", "min_spend": 10, "multiplier": 2}],
                                     "mode": "lenient", "grace_days": None, "enabled": False})
    assert got == Loyaltyish((Tier("a", 0), Tier("b", 10, 2.0)), "lenient", None, False)
    assert parse_section(Loyaltyish, {}) == Loyaltyish()


GENERIC_BAD = [
    ({"tiers": [{"name": "a", "min_spend": 0}, {"name": "b", "min_spend": -1}]},
     "loyalty.tiers[1].min_spend: must be >= 0"),
    ({"tiers": [{"min_spend": 1}]}, "loyalty.tiers[0].name: required field is missing"),
    ({"tiers": [{"name": "a", "min_spend": 1, "x": 1}]}, "loyalty.tiers[0].x: unknown field"),
    ({"tiers": {"name": "a"}}, "loyalty.tiers: must be a list"),
    ({"mode": "loose"}, "loyalty.mode: must be one of strict, lenient"),
    ({"grace_days": "3"}, "loyalty.grace_days: must be an integer"),
    ({"enabled": 1}, "loyalty.enabled: must be true or false"),
]


@pytest.mark.parametrize(("mapping", "message"), GENERIC_BAD)
def test_generic_validator_names_the_path(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(RulesError) as exc:
        parse_section(Loyaltyish, mapping, "loyalty")
    assert str(exc.value).startswith(message)


# -- money -------------------------------------------------------------------------------------

HALF = parse_rules({"fx": {"EUR": 1, "USD": "0.5"}})
YEN = parse_rules({"reporting_currency": "JPY", "fx": {"JPY": 1, "EUR": "163.5", "KWD": 500},
                   "minor_units": {"JPY": 0, "EUR": 2, "KWD": 3}})

MONEY = [
    (DEFAULT_RULES, 12345, "EUR", 12345),
    (DEFAULT_RULES, 12345, "USD", 11357),  # 113.574 EUR
    (DEFAULT_RULES, 1000, "JPY", 610),  # exponent 0 -> 2: 1000 yen = 6.10 EUR
    (HALF, 1, "USD", 0),  # 0.5 -> 0 (half to even)
    (HALF, 3, "USD", 2),  # 1.5 -> 2
    (HALF, 5, "USD", 2),  # 2.5 -> 2
    (HALF, 7, "USD", 4),  # 3.5 -> 4
    (YEN, 1, "EUR", 2),  # 0.01 EUR = 1.635 yen
    (YEN, 1001, "KWD", 500),  # 1.001 KWD = 500.5 yen -> 500
    (YEN, 3001, "KWD", 1500),  # 1500.5 -> 1500
    (YEN, 0, "EUR", 0),
]


@pytest.mark.parametrize(("rules", "amount", "currency", "expected"), MONEY)
def test_to_reporting_minor(rules: Rules, amount: int, currency: str, expected: int) -> None:
    assert to_reporting_minor(amount, currency, rules) == expected


def test_unknown_currency_is_rejected_not_guessed() -> None:
    with pytest.raises(Rejected) as exc:
        to_reporting_minor(100, "HUF", DEFAULT_RULES)  # has an exponent, but no rate
    assert exc.value.reason == "unknown_currency"
    assert "HUF" in exc.value.message


def test_per_rules_builds_once_per_rules_object() -> None:
    from processors.rules import per_rules

    built: list[object] = []

    @per_rules
    def derive(rules: Rules) -> tuple[int, int]:
        built.append(rules)
        return rules.allowed_lateness_ms, len(built)

    other = parse_rules({"allowed_lateness_ms": 3_600_000})
    first = derive(DEFAULT_RULES)
    assert derive(DEFAULT_RULES) == first and first[1] == 1
    assert derive(other) == (other.allowed_lateness_ms, 2)
    assert derive(DEFAULT_RULES) == first  # kept, not rebuilt
    assert built == [DEFAULT_RULES, other]
