"""Export rows: columns from one list, times in RFC 3339 UTC, money as major-unit strings."""

from __future__ import annotations

import csv
import io
import json

import pytest

from processors.customer import apply, view
from processors.rules import DEFAULT_RULES, parse_rules
from processors.state import CustomerState
from schemas.events import Purchase, SupportTicket, Survey
from streams.worker.views import (
    COLUMNS,
    HEADER,
    csv_cell,
    export_row,
    money,
    render,
    state_row,
    write_csv,
    write_jsonl,
)

DAY = 86_400_000
MAR1 = 1_772_323_200_000  # 2026-03-01T00:00:00Z
APR1 = MAR1 + 31 * DAY


def history() -> CustomerState:
    """Two purchases, a refund, an open urgent ticket, an NPS and two CSAT answers."""
    events = [
        Purchase("e1", "C1", MAR1, "pos", "o1", "store", "purchase", 4250, "EUR"),
        Purchase("e2", "C1", MAR1 + 9 * DAY + 12 * 3_600_000, "pos", "o2", "web", "purchase",
                 1999, "USD"),  # 2026-03-10T12:00Z, 19.99 USD = 18.3908 EUR -> 18.39
        Purchase("e3", "C1", MAR1 + 11 * DAY, "pos", "o1", "store", "refund", 500, "EUR"),
        SupportTicket("t1", "C1", MAR1 + 12 * DAY, "crm", "T-1", "opened", "urgent", "email",
                      "delivery", -0.25),
        Survey("s1", "C1", MAR1 + 13 * DAY, "app", "S-1", "nps", 6, "checkout"),
        Survey("s2", "C1", MAR1 + 13 * DAY, "app", "S-2", "csat", 4, "checkout"),
        Survey("s3", "C1", MAR1 + 14 * DAY, "app", "S-3", "csat", 5, "checkout"),
    ]
    state = None
    for ev in events:
        state = apply(state, ev, DEFAULT_RULES, 0).state
    assert state is not None
    return state


def test_the_columns_are_views_fields_in_views_order() -> None:
    fields = list(view(CustomerState("x"), DEFAULT_RULES, 0))
    assert [c.field for c in COLUMNS] == fields, (
        "view() changed: add its new fields to streams/worker/views.py COLUMNS (one line each)")
    assert len(set(HEADER)) == len(HEADER)


def test_the_required_columns_and_their_export_names() -> None:
    for name in ("customer_id", "first_purchase_at", "last_purchase_at", "purchase_count",
                 "purchase_days", "total_spend", "average_order_value",
                 "days_since_last_purchase", "orders_30d", "spend_365d", "net_spend_90d"):
        assert name in HEADER
    assert not [h for h in HEADER if h.endswith("_minor")]  # money columns are major units


@pytest.mark.parametrize(("minor", "exponent", "text"), [
    (4250, 2, "42.50"), (5, 2, "0.05"), (0, 2, "0.00"), (-105, 2, "-1.05"),
    (1500, 0, "1500"), (1234, 3, "1.234"), (123_456_789_012_345, 2, "1234567890123.45"),
])
def test_money_is_an_exact_major_unit_string(minor: int, exponent: int, text: str) -> None:
    assert money(minor, exponent) == text


def test_an_export_row_worked_out_by_hand() -> None:
    row = state_row(history(), DEFAULT_RULES, APR1)
    assert list(row) == list(HEADER)
    expected = {
        "customer_id": "C1",
        "as_of": "2026-04-01T00:00:00.000Z",
        "max_event_at": "2026-03-15T00:00:00.000Z",
        "reporting_currency": "EUR",
        "first_purchase_at": "2026-03-01T00:00:00.000Z",
        "last_purchase_at": "2026-03-10T12:00:00.000Z",
        "days_since_last_purchase": 21.5,  # 03-10 12:00 -> 04-01 00:00
        "purchase_count": 2,
        "refund_count": 1,
        "purchase_days": 2,
        "gross_spend": "60.89",  # 42.50 + 18.39
        "refunds": "5.00",
        "total_spend": "55.89",
        "average_order_value": "30.44",  # 6089 / 2 = 3044.5 -> half to even: 3044
        "mean_interpurchase_gap_days": 9.0,
        # 30 days as of 04-01 are the days 03-03 .. 04-01: not the 03-01 purchase
        "orders_30d": 1, "spend_30d": "18.39", "refunds_30d": "5.00", "net_spend_30d": "13.39",
        "orders_90d": 2, "spend_90d": "60.89", "refunds_90d": "5.00", "net_spend_90d": "55.89",
        "open_tickets": 1,
        "open_ticket_ids": ["T-1"],
        "open_urgent_tickets": 1,
        "tickets_opened": 1,
        "sla_breaches": 2,  # urgent: first response 1 h and resolution 8 h both passed
        "open_tickets_breaching_sla": 1,
        "last_sentiment": -0.25,
        "last_sentiment_at": "2026-03-13T00:00:00.000Z",
        "nps_score": 6,
        "nps_class": "detractor",
        "nps_at": "2026-03-14T00:00:00.000Z",
        "csat_rolling": 4.5,
        "csat_answers": 2,
        "ces_rolling": None,
        "surveys_answered": 3,
    }
    assert {k: row[k] for k in expected} == expected


def test_a_customer_without_purchases_has_empty_purchase_cells() -> None:
    state = apply(None, Survey("s", "C2", MAR1, "app", "S", "ces", 3, "chat"), DEFAULT_RULES,
                  0).state
    row = state_row(state, DEFAULT_RULES, MAR1)
    assert row["first_purchase_at"] is None
    assert row["days_since_last_purchase"] is None
    assert row["average_order_value"] is None
    assert row["total_spend"] == "0.00"
    out = io.StringIO()
    write_csv([row], out)
    parsed = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert parsed["first_purchase_at"] == ""
    assert parsed["average_order_value"] == ""
    assert parsed["ces_rolling"] == "3"
    assert parsed["open_ticket_ids"] == ""


def test_money_uses_the_reporting_currencys_exponent() -> None:
    rules = parse_rules({"reporting_currency": "JPY", "fx": {"JPY": "1", "EUR": "160"}})
    state = apply(None, Purchase("e", "C", MAR1, "pos", "o", "store", "purchase", 4250, "EUR"),
                  rules, 0).state
    row = export_row(view(state, rules, MAR1), rules)
    assert (row["total_spend"], row["reporting_currency"]) == ("6800", "JPY")  # 42.50 * 160


@pytest.mark.parametrize(("value", "cell"), [
    (None, ""), (0, "0"), (12.0, "12"), (20.3125, "20.3125"), (-0.0, "0"), (1 / 3, "0.3333"),
    ("42.50", "42.50"), (["T-1", "T-2"], "T-1;T-2"), ([], ""), (True, "true"),
])
def test_csv_cells(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


def test_csv_and_jsonl_writers() -> None:
    row = state_row(history(), DEFAULT_RULES, APR1)
    out = io.StringIO()
    assert write_csv([row, row], out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == ",".join(HEADER)
    assert lines[1].startswith("C1,2026-04-01T00:00:00.000Z,2026-03-15T00:00:00.000Z,EUR,")
    assert ",55.89,30.44,9," in lines[1]
    out = io.StringIO()
    assert write_jsonl([row], out) == 1
    obj = json.loads(out.getvalue())
    assert list(obj) == list(HEADER)
    assert (obj["total_spend"], obj["ces_rolling"], obj["open_ticket_ids"]) == (
        "55.89", None, ["T-1"])


def test_render_groups_and_aligns() -> None:
    row = state_row(history(), DEFAULT_RULES, APR1)
    text = render(row, "the customer's latest event")
    lines = text.splitlines()
    assert lines[:3] == [
        "customer C1",
        "as of 2026-04-01T00:00:00.000Z (the customer's latest event)",
        "latest event 2026-03-15T00:00:00.000Z; money in EUR",
    ]
    groups = [ln for ln in lines if ln and not ln.startswith(" ")][3:]
    assert groups == ["purchases", "windows", "support", "surveys", "loyalty", "churn",
                      "engagement", "referral", "profile"]
    fields = [ln for ln in lines if ln.startswith("  ")]
    values_at = {len(ln) - len(ln.lstrip(" ").split(":", 1)[1].lstrip()) for ln in fields}
    assert len(values_at) == 1  # every value starts in the same column
    assert "  total_spend:" in text and "55.89 EUR" in text
    assert "  ces_rolling:" in text and text.split("  ces_rolling:")[1].split("\n")[0].strip() \
        == "-"
    assert "open_ticket_ids:" in text and "T-1" in text
