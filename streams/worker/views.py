"""Customer rows for people and spreadsheets: ``pulse customers export``, ``pulse customer``.

Theory of operation
-------------------
``processors.customer.view(state, rules, as_of)`` gives one JSON-ready dict per customer as
of an event time, in epoch milliseconds and minor units. ``COLUMNS`` is the one list of
export columns, in ``view()``'s order: each maps a view field to an exported name, a format
and a group (for ``pulse customer``). Adding a column is one line here;
``tests/unit/streams/worker/test_export.py`` fails when ``view()`` has a field no column exports.

Formats: ``time`` -> RFC 3339 UTC with milliseconds; ``money`` -> a major-unit decimal
string in the reporting currency (``4250`` -> ``"42.50"``; the view field's ``_minor``
suffix is dropped from the name); ``number`` -> a float rounded to 4 decimals; ``int``,
``text``, ``bool`` and ``list`` as they are. ``None`` stays ``None``: an empty CSV cell, JSON null.
``export_row`` is pure; ``load_rows`` / ``load_row`` read Redis.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson

from processors import wire
from processors.customer import view
from processors.errors import WireError
from processors.rules import Rules
from processors.state import WINDOWS_DAYS, CustomerState
from schemas.codec import format_time
from schemas.events import CONSENT_CHANNELS
from streams.settings import Settings
from streams.worker.partitioning import owner
from streams.worker.store import Store

TEXT, INT, TIME, MONEY, NUMBER, LIST = "text", "int", "time", "money", "number", "list"
BOOL = "bool"
CUSTOMER, PURCHASES, WINDOWS, SUPPORT, SURVEYS = (
    "customer", "purchases", "windows", "support", "surveys")
NUMBER_DECIMALS = 4
LIST_SEPARATOR = ";"  # list cells in CSV (JSON keeps lists)
LOYALTY = "loyalty"
PROFILE = "profile"
ENGAGEMENT = "engagement"
REFERRAL = "referral"


@dataclass(frozen=True)
class Column:
    name: str  # exported name
    field: str  # view() key
    fmt: str
    group: str


def _c(field: str, fmt: str, group: str) -> Column:
    return Column(field.removesuffix("_minor") if fmt == MONEY else field, field, fmt, group)


def _window_columns(n: int) -> tuple[Column, ...]:
    return (
        _c(f"orders_{n}d", INT, WINDOWS),
        _c(f"spend_{n}d_minor", MONEY, WINDOWS),
        _c(f"refunds_{n}d_minor", MONEY, WINDOWS),
        _c(f"net_spend_{n}d_minor", MONEY, WINDOWS),
    )


COLUMNS: tuple[Column, ...] = (
    _c("customer_id", TEXT, CUSTOMER),
    _c("as_of", TIME, CUSTOMER),
    _c("max_event_at", TIME, CUSTOMER),
    _c("reporting_currency", TEXT, CUSTOMER),
    _c("first_purchase_at", TIME, PURCHASES),
    _c("last_purchase_at", TIME, PURCHASES),
    _c("days_since_last_purchase", NUMBER, PURCHASES),
    _c("purchase_count", INT, PURCHASES),
    _c("refund_count", INT, PURCHASES),
    _c("purchase_days", INT, PURCHASES),
    _c("gross_spend_minor", MONEY, PURCHASES),
    _c("refunds_minor", MONEY, PURCHASES),
    _c("total_spend_minor", MONEY, PURCHASES),
    _c("average_order_value_minor", MONEY, PURCHASES),
    _c("mean_interpurchase_gap_days", NUMBER, PURCHASES),
    *(c for n in WINDOWS_DAYS for c in _window_columns(n)),
    _c("open_tickets", INT, SUPPORT),
    _c("open_ticket_ids", LIST, SUPPORT),
    _c("open_urgent_tickets", INT, SUPPORT),
    _c("tickets_opened", INT, SUPPORT),
    _c("tickets_reopened", INT, SUPPORT),
    _c("tickets_dropped", INT, SUPPORT),
    _c("sla_breaches", INT, SUPPORT),
    _c("open_tickets_breaching_sla", INT, SUPPORT),
    _c("last_sentiment", NUMBER, SUPPORT),
    _c("last_sentiment_at", TIME, SUPPORT),
    _c("nps_score", INT, SURVEYS),
    _c("nps_class", TEXT, SURVEYS),
    _c("nps_at", TIME, SURVEYS),
    _c("csat_rolling", NUMBER, SURVEYS),
    _c("csat_answers", INT, SURVEYS),
    _c("ces_rolling", NUMBER, SURVEYS),
    _c("ces_answers", INT, SURVEYS),
    _c("surveys_answered", INT, SURVEYS),
    _c("points_balance", INT, LOYALTY),
    _c("lifetime_points", INT, LOYALTY),
    _c("tier", TEXT, LOYALTY),
    _c("tier_since", TIME, LOYALTY),
    _c("next_tier", TEXT, LOYALTY),
    _c("spend_to_next_tier_minor", MONEY, LOYALTY),
    _c("points_expiring", INT, LOYALTY),
    _c("expires_at", TIME, LOYALTY),
    _c("churn_score", NUMBER, "churn"),
    _c("churn_level", TEXT, "churn"),
    _c("churn_reasons", LIST, "churn"),
    _c("segment", TEXT, ENGAGEMENT),
    _c("segment_tags", LIST, ENGAGEMENT),
    _c("segment_since", TIME, ENGAGEMENT),
    _c("last_message", TEXT, ENGAGEMENT),
    _c("last_message_at", TIME, ENGAGEMENT),
    _c("referral_status", TEXT, REFERRAL),
    _c("referral_order_id", TEXT, REFERRAL),
    _c("referral_bonus_points", INT, REFERRAL),
    _c("referrals_rewarded", INT, REFERRAL),
    _c("referrals_clawed_back", INT, REFERRAL),
    _c("referrals_rewarded_in_period", INT, REFERRAL),
    _c("signup_at", TIME, PROFILE),
    _c("referred_by", TEXT, PROFILE),
    _c("birth_date", TEXT, PROFILE),
    _c("time_zone", TEXT, PROFILE),
    *(c for ch in CONSENT_CHANNELS
      for c in (_c(f"consent_{ch}", BOOL, PROFILE), _c(f"consent_{ch}_at", TIME, PROFILE))),
)
HEADER: tuple[str, ...] = tuple(c.name for c in COLUMNS)


# -- pure formatting -----------------------------------------------------------------------------


def money(minor: int, exponent: int) -> str:
    """Integer minor units -> major-unit decimal string, exact: (4250, 2) -> "42.50"."""
    return f"{Decimal(minor).scaleb(-exponent):f}"


def _format(fmt: str, value: Any, exponent: int) -> Any:
    if value is None:
        return None
    if fmt == TIME:
        return format_time(value)
    if fmt == MONEY:
        return money(value, exponent)
    if fmt == NUMBER:
        return round(float(value), NUMBER_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    if fmt == LIST:
        return list(value)
    return value


def export_row(view_row: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """One ``view()`` dict -> the export row (column name -> JSON-ready value), in order."""
    exponent = rules.minor_units[rules.reporting_currency]
    return {c.name: _format(c.fmt, view_row[c.field], exponent) for c in COLUMNS}


def state_row(state: CustomerState, rules: Rules, as_of: int) -> dict[str, Any]:
    return export_row(view(state, rules, as_of), rules)


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = f"{value:.{NUMBER_DECIMALS}f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    if isinstance(value, list):
        return LIST_SEPARATOR.join(str(v) for v in value)
    return str(value)


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    writer = csv.writer(out)
    writer.writerow(HEADER)
    n = 0
    for row in rows:
        writer.writerow([csv_cell(row[name]) for name in HEADER])
        n += 1
    return n


def json_line(row: dict[str, Any]) -> str:
    return orjson.dumps(row).decode()


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    n = 0
    for row in rows:
        out.write(json_line(row) + "\n")
        n += 1
    return n


def render(row: dict[str, Any], as_of_note: str = "") -> str:
    """One customer, readably: a header, then aligned ``field: value`` lines by group."""
    currency = row["reporting_currency"]
    width = max(len(c.name) for c in COLUMNS if c.group != CUSTOMER) + 1
    lines = [
        f"customer {row['customer_id']}",
        f"as of {row['as_of']}{f' ({as_of_note})' if as_of_note else ''}",
        f"latest event {row['max_event_at'] or '-'}; money in {currency}",
    ]
    group = CUSTOMER
    for c in COLUMNS:
        if c.group == CUSTOMER:
            continue
        if c.group != group:
            group = c.group
            lines += ["", group]
        value = row[c.name]
        if value is None or value == []:
            shown = "-"
        elif c.fmt == MONEY:
            shown = f"{value} {currency}"
        elif c.fmt == LIST:
            shown = ", ".join(map(str, value))
        else:
            shown = csv_cell(value)
        lines.append(f"  {c.name + ':':<{width}} {shown}")
    return "\n".join(lines)


# -- Redis ---------------------------------------------------------------------------------------


@dataclass
class Loaded:
    rows: list[dict[str, Any]]  # sorted by customer_id
    undecodable: list[str]  # "customer: why" for states wire.loads refused
    after_as_of: int  # customers with events later than as_of (their totals include them)


async def load_rows(settings: Settings, rules: Rules, as_of: int) -> Loaded:
    """Every customer's export row as of ``as_of`` (SCAN, never blocking Redis)."""
    store = Store.from_settings(settings)
    states: dict[str, bytes] = {}  # SCAN may return a key twice: keyed by customer
    try:
        async for chunk in store.scan_states():
            states.update(chunk)
    finally:
        await store.close()
    out = Loaded([], [], 0)
    for cid in sorted(states):
        try:
            state = wire.loads(states[cid])
        except WireError as exc:
            out.undecodable.append(f"{cid}: {exc}")
            continue
        if state.max_event_at is not None and state.max_event_at > as_of:
            out.after_as_of += 1
        out.rows.append(state_row(state, rules, as_of))
    return out


async def load_ledger(settings: Settings, customer_id: str) -> list[dict[str, Any]]:
    """The customer's latest ledger entries, newest first (the engine keeps the last few)."""
    store = Store.from_settings(settings)
    try:
        raw = await store.recent_ledger(owner(customer_id, settings.partitions), customer_id)
    finally:
        await store.close()
    return [orjson.loads(x) for x in raw]


def render_ledger(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "latest ledger entries: none"
    lines = ["latest ledger entries (newest first):"]
    for e in entries:
        lines.append(f"  {e.get('occurred_at', ''):24s} {e.get('points', 0):>+7} "
                     f"{e.get('rule', ''):20s} balance {e.get('balance_after', '')}: "
                     f"{e.get('reason', '')}")
    return "\n".join(lines)


def partition_clock(high: Iterable[int], clock: str, wall_ms: int) -> int:
    """The partition's clock from its fence (the newest event time applied per topic), as
    ``Engine.clock`` computes it for the partitions a worker owns: event mode, the newest
    event time applied; live mode, the wall clock alone (no event moves it). The default
    as-of of ``pulse customer`` and ``GET /customers/{id}`` (a unit test checks the two
    agree)."""
    return wall_ms if clock == "live" else max(high, default=0)


@dataclass
class CustomerView:
    """What ``pulse customer`` and ``GET /customers/{id}`` show: the export row as of
    ``as_of`` (the partition clock unless asked for another time) and the latest ledger
    entries, newest first."""

    row: dict[str, Any]
    ledger: list[dict[str, Any]]
    as_of_is_default: bool


async def load_view(store: Store, settings: Settings, rules: Rules, customer_id: str,
                    as_of: int | None, wall_ms: int) -> CustomerView | None:
    """One customer's view from Redis, or ``None`` if unknown (``WireError`` if its
    stored state cannot be read)."""
    partition = owner(customer_id, settings.partitions)
    raw = await store.get_state(partition, customer_id)
    if raw is None:
        return None
    state = wire.loads(raw)
    default = as_of is None
    if as_of is None:
        meta = await store.load_shard(partition)
        as_of = partition_clock(meta.high.values(), settings.clock, wall_ms)
    ledger = [orjson.loads(x) for x in await store.recent_ledger(partition, customer_id)]
    return CustomerView(state_row(state, rules, as_of), ledger, default)


async def load_customer(settings: Settings, rules: Rules, customer_id: str,
                        as_of: int | None, wall_ms: int) -> CustomerView | None:
    store = Store.from_settings(settings)
    try:
        return await load_view(store, settings, rules, customer_id, as_of, wall_ms)
    finally:
        await store.close()


async def load_state(settings: Settings, customer_id: str) -> CustomerState | None:
    """The customer's state from its owner partition's shard; ``None`` if unknown."""
    store = Store.from_settings(settings)
    try:
        raw = await store.get_state(owner(customer_id, settings.partitions), customer_id)
    finally:
        await store.close()
    return None if raw is None else wire.loads(raw)


def write_file(path: str, write: Any, rows: list[dict[str, Any]]) -> int:
    """Write to ``path`` through a temporary file renamed into place: an export that fails
    half-way never leaves a truncated file that looks complete."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            n: int = write(rows, f)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return n
