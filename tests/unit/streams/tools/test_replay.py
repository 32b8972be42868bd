"""``pulse replay``'s pure part: rows -> typed events, deterministic ids, clear rejections."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from processors.rules import DEFAULT_RULES, parse_rules
from schemas.codec import InvalidEvent, decode, parse_when
from schemas.events import Purchase, SupportTicket, Survey
from streams.tools.cli import cli
from streams.tools.replay import (
    SPECS,
    Progress,
    RowParser,
    parse_rows,
    read_csv,
    read_jsonl,
    to_minor,
)
from streams.worker.replays import BadControl, ReplayEnd, end_marker, headers_of, parse_control
from tests.paths import FIXTURES

MAR1 = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def purchase(**cells: object) -> Purchase:
    row = {"customer_id": "C1", "occurred_at": "2026-03-01", "amount": "42.50", **cells}
    ev = RowParser("purchase", DEFAULT_RULES).parse(row)
    assert isinstance(ev, Purchase)
    return ev


def rejected(file_kind: str = "purchase", /, **cells: object) -> InvalidEvent:
    base = {"customer_id": "C1", "occurred_at": "2026-03-01", "amount": "1"}
    row = {k: v for k, v in {**base, **cells}.items() if v is not None}
    with pytest.raises(InvalidEvent) as info:
        RowParser(file_kind, DEFAULT_RULES).parse(row)
    return info.value


def csv_lines(text: str) -> list[str]:
    return io.StringIO(text).readlines()


# -- times -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "ms"), [
    ("2026-03-01", MAR1),  # a date is midnight UTC
    ("2026-03-01T00:00:00Z", MAR1),
    ("2026-03-01T02:30:00+02:30", MAR1),  # the offset is applied
    ("2026-02-28T19:00:00-05:00", MAR1),  # ... across a day (and month) boundary
    ("2026-03-01T00:00:00.250Z", MAR1 + 250),
    ("1970-01-01", 0),  # history from the epoch on
    ("1970-01-01T01:00:00+01:00", 0),
    ("1989-12-31", 631_065_600_000),
    ("1999-12-31T23:59:59.999Z", 946_684_799_999),
])
def test_occurred_at_dates_and_timestamps(cell: str, ms: int) -> None:
    assert purchase(occurred_at=cell).occurred_at == ms
    assert parse_when(cell) == ms


@pytest.mark.parametrize(("cell", "says"), [
    ("2026-03-01 10:00:00", "must be an RFC 3339 date-time with an offset"),
    ("2026-03-01T10:00:00", "must be an RFC 3339 date-time with an offset"),  # no offset
    ("01/03/2026", "must be an RFC 3339 date-time with an offset"),
    ("2026-02-30", "is not a valid calendar date-time"),
    ("1969-12-31", "must not be before 1970-01-01T00:00:00Z"),
    ("1970-01-01T00:59:59+01:00", "must not be before 1970-01-01T00:00:00Z"),
])
def test_bad_times_are_rejected_with_the_codecs_message(cell: str, says: str) -> None:
    err = rejected(occurred_at=cell)
    assert err.reason == "schema_violation"
    assert err.message.startswith("purchase.occurred_at: " + says)


# -- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "currency", "minor"), [
    ("42.50", "EUR", 4250),
    ("42.5", "EUR", 4250),
    ("42.500", "EUR", 4250),  # trailing zeros lose nothing
    ("0.01", "EUR", 1),
    (".5", "EUR", 50),
    ("+3", "EUR", 300),
    ("5.", "EUR", 500),
    ("007.10", "EUR", 710),
    ("-0.00", "EUR", 0),
    ("-5.25", "EUR", -525),
    ("1000", "JPY", 1000),  # JPY has no minor unit
    ("1000.00", "JPY", 1000),
    ("1.234", "KWD", 1234),  # 3 decimals
    ("0.1", "EUR", 10),  # exact: no binary floating point anywhere
    ("12345678.99", "EUR", 1_234_567_899),
    (Decimal("19.99"), "USD", 1999),  # JSONL numbers arrive as Decimal
    (7, "EUR", 700),
])
def test_amount_conversion_is_exact(amount: object, currency: str, minor: int) -> None:
    assert to_minor(amount, DEFAULT_RULES.minor_units[currency], currency) == minor


@pytest.mark.parametrize(("amount", "currency", "says"), [
    ("42.505", "EUR", "'42.505' has more decimals than EUR allows (2); amounts are never rounded"),
    ("42.501", "EUR", "'42.501' has more decimals than EUR allows (2)"),
    ("1000.5", "JPY", "'1000.5' has more decimals than JPY allows (0)"),
    ("1.2345", "KWD", "has more decimals than KWD allows (3)"),
    ("42,50", "EUR", "must be a plain decimal number such as 42.50"),
    ("1e3", "EUR", "must be a plain decimal number"),
    ("€42.50", "EUR", "must be a plain decimal number"),
    ("NaN", "EUR", "must be a plain decimal number"),
    (True, "EUR", "must be a decimal number"),
    (4.5, "EUR", "must be a decimal number"),  # a binary float would not be exact
    (Decimal("1e30"), "EUR", "of sensible size"),
])
def test_amounts_that_would_need_rounding_or_guessing_are_rejected(
        amount: object, currency: str, says: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        to_minor(amount, DEFAULT_RULES.minor_units[currency], currency)
    assert info.value.reason == "schema_violation"
    assert info.value.message.startswith("purchase.amount: ")
    assert says in info.value.message


def test_42_5_accepted_but_42_505_rejected_as_rows() -> None:
    assert purchase(amount="42.5").amount_minor == 4250
    err = rejected(amount="42.505")
    assert (err.reason, err.message) == (
        "schema_violation",
        "purchase.amount: '42.505' has more decimals than EUR allows (2); amounts are never "
        "rounded",
    )


def test_amount_larger_than_the_codec_allows_is_the_codecs_rejection() -> None:
    err = rejected(amount="1000000000.01")  # 10**11 + 1 minor units
    assert err.message.startswith("purchase.amount_minor: must be between 0 and 100000000000")


def test_currency_per_row_default_and_unknown() -> None:
    assert purchase().currency == "EUR"  # the rules' reporting currency
    usd = RowParser("purchase", DEFAULT_RULES, currency="USD")
    assert usd.parse({"customer_id": "C", "occurred_at": "2026-03-01", "amount": "1"}
                     ).currency == "USD"  # type: ignore[union-attr]
    assert purchase(currency="JPY", amount="500").amount_minor == 500
    err = rejected(currency="XYZ")
    assert err.reason == "unknown_currency"
    assert "'XYZ' has no rate in the rules" in err.message
    err = rejected(currency="eur")
    assert err.reason == "schema_violation"
    assert err.message.startswith("purchase.currency: must be a three-letter ISO-4217 code")


def test_a_reporting_currency_with_no_decimals_converts_with_its_own_exponent() -> None:
    rules = parse_rules({"reporting_currency": "JPY", "fx": {"JPY": "1", "EUR": "160"}})
    p = RowParser("purchase", rules).parse({"customer_id": "C", "occurred_at": "2026-03-01",
                                            "amount": "1500"})
    assert (p.amount_minor, p.currency) == (1500, "JPY")  # type: ignore[union-attr]


# -- purchases, refunds, defaults -----------------------------------------------------------


def test_purchase_defaults() -> None:
    p = purchase()
    assert (p.kind, p.amount_minor, p.channel, p.store_id, p.source, p.lines) == (
        "purchase", 4250, "store", None, "replay", ())
    assert p.order_id == p.event_id  # no order id: the event id
    q = purchase(order_id="O-9", channel="web", store_id="S1")
    assert (q.order_id, q.channel, q.store_id) == ("O-9", "web", "S1")


def test_a_negative_amount_is_a_refund_of_its_absolute_value() -> None:
    r = purchase(amount="-5.25", order_id="O-1")
    assert (r.kind, r.amount_minor, r.order_id) == ("refund", 525, "O-1")
    assert purchase(amount="-0.00").kind == "purchase"  # zero is not negative


def test_the_source_is_the_option() -> None:
    p = RowParser("purchase", DEFAULT_RULES, source="pos-2025-export").parse(
        {"customer_id": "C", "occurred_at": "2026-03-01", "amount": "1"})
    assert p.source == "pos-2025-export"


def test_ticket_rows() -> None:
    parser = RowParser("ticket", DEFAULT_RULES)
    t = parser.parse({"customer_id": "C1", "occurred_at": "2026-03-01T10:00:00Z",
                      "ticket_id": "T-1", "status": "opened", "priority": "urgent"})
    assert isinstance(t, SupportTicket)
    assert (t.ticket_id, t.status, t.priority, t.channel, t.category, t.sentiment) == (
        "T-1", "opened", "urgent", "unspecified", "unspecified", None)
    t = parser.parse({"customer_id": "C1", "occurred_at": "2026-03-01", "ticket_id": "T-1",
                      "status": "resolved", "priority": "low", "channel": "email",
                      "category": "delivery", "sentiment": "-0.5"})
    assert (t.channel, t.category, t.sentiment) == ("email", "delivery", -0.5)  # type: ignore[union-attr]
    err = rejected("ticket", ticket_id="T", status="escalated", priority="low")
    assert err.message.startswith(
        "ticket.status: must be one of opened, responded, resolved, reopened, closed")


def test_survey_rows() -> None:
    parser = RowParser("survey", DEFAULT_RULES)
    s = parser.parse({"customer_id": "C1", "occurred_at": "2026-03-01", "kind": "nps",
                      "score": "9"})
    assert isinstance(s, Survey)
    assert (s.kind, s.score, s.touchpoint, s.survey_id) == ("nps", 9, "unspecified", s.event_id)
    s = parser.parse({"customer_id": "C1", "occurred_at": "2026-03-01", "kind": "csat",
                      "score": "4", "touchpoint": "checkout", "survey_id": "SV-1"})
    assert (s.score, s.touchpoint, s.survey_id) == (4, "checkout", "SV-1")  # type: ignore[union-attr]
    for score, says in (("11", "must be between 0 and 10"), ("9.5", "must be an integer")):
        err = rejected("survey", kind="nps", score=score)
        assert err.message.startswith(f"survey.score: {says}")
    err = rejected("survey", kind="ces", score="0")
    assert err.message.startswith("survey.score: must be between 1 and 7")


# -- deterministic event ids ----------------------------------------------------------------


ROW = {"customer_id": "C1", "occurred_at": "2026-03-01", "amount": "42.50"}


def ids(rows: list[dict[str, str]], kind: str = "purchase") -> list[str]:
    parser = RowParser(kind, DEFAULT_RULES)
    return [parser.parse(r).event_id for r in rows]


def test_identical_rows_are_distinct_events_with_stable_ids() -> None:
    first = ids([ROW, ROW, ROW])
    assert len(set(first)) == 3  # three purchases, not one
    assert ids([ROW, ROW, ROW]) == first  # a second replay: the same ids
    assert all(i.startswith("replay-") and len(i) == 27 for i in first)


def test_the_id_depends_on_the_content_and_the_duplicate_number_only() -> None:
    (a,) = ids([ROW])
    assert ids([{**ROW, "amount": "42.51"}, ROW]) == [ids([{**ROW, "amount": "42.51"}])[0], a]
    assert ids([{**ROW, "note": "unknown columns are not content"}]) == [a]
    assert ids([{"amount": " 42.50 ", "occurred_at": "2026-03-01", "customer_id": "C1",
                 "channel": ""}]) == [a]  # column order, blanks and padding do not matter
    assert ids([{**ROW, "channel": "store"}]) != [a]  # a cell given is content


def test_the_id_depends_on_the_file_kind() -> None:
    ticket = {"customer_id": "C1", "occurred_at": "2026-03-01", "ticket_id": "T",
              "status": "opened", "priority": "low"}
    survey = {"customer_id": "C1", "occurred_at": "2026-03-01", "kind": "nps", "score": "5"}
    assert len({ids([ROW])[0], ids([ticket], "ticket")[0], ids([survey], "survey")[0]}) == 3


def test_event_ids_given_by_the_file_are_kept() -> None:
    assert ids([{**ROW, "event_id": "E-1"}, {**ROW, "event_id": ""}])[0] == "E-1"
    assert ids([{**ROW, "event_id": ""}]) == ids([ROW])  # a blank id is derived


# -- files: CSV and JSONL -------------------------------------------------------------------


def test_csv_rows_with_line_numbers() -> None:
    text = ('Customer_ID , occurred_at,amount,channel\n'
            'C1,2026-03-01,1.00,"web\nshop"\n'  # a quoted newline: the row spans lines 2-3
            '\n'
            'C2,2026-03-02,2.00,\n')
    assert list(read_csv(csv_lines(text), SPECS["purchase"])) == [
        (2, {"customer_id": "C1", "occurred_at": "2026-03-01", "amount": "1.00",
             "channel": "web\nshop"}),
        (5, {"customer_id": "C2", "occurred_at": "2026-03-02", "amount": "2.00", "channel": ""}),
    ]


def test_a_csv_header_without_a_required_column_names_it_and_the_line() -> None:
    from streams.tools.replay import ReplayError

    with pytest.raises(ReplayError, match=r"^line 1 \(header\): missing required column "
                                          r"amount for --kind purchase \(found: customer_id, "
                                          r"occurred_at\)$"):
        list(read_csv(csv_lines("customer_id,occurred_at\nC1,2026-03-01\n"), SPECS["purchase"]))
    with pytest.raises(ReplayError, match="missing required columns ticket_id, status"):
        list(read_csv(csv_lines("customer_id,occurred_at,priority\n"), SPECS["ticket"]))
    with pytest.raises(ReplayError, match="the file is empty"):
        list(read_csv([], SPECS["purchase"]))


def test_a_short_csv_row_is_rejected_naming_the_field_and_line() -> None:
    text = "customer_id,occurred_at,amount\nC1,2026-03-01,1\nC2,2026-03-01\n,2026-03-01,1\n"
    parsed = parse_rows(read_csv(csv_lines(text), SPECS["purchase"]),
                        RowParser("purchase", DEFAULT_RULES))
    assert len(parsed.events) == 1
    assert [str(r) for r in parsed.rejected] == [
        "line 3: schema_violation: purchase.amount: required field is missing",
        "line 4: schema_violation: purchase.customer_id: required field is missing",
    ]


def test_jsonl_rows_and_bad_lines() -> None:
    lines = [
        '{"customer_id": "C1", "occurred_at": "2026-03-01", "amount": 42.50}\n',
        '\n',
        '{"customer_id": "C1", "occurred_at": "2026-03-01", "amount": "42.505"}\n',
        '{"customer_id": "C1", "occurred_at": "2026-03-01"\n',
        '[1, 2]\n',
        '{"customer_id": 17, "occurred_at": "2026-03-01", "amount": 1, "currency": "JPY"}\n',
        '{"customer_id": "C1", "occurred_at": "2026-03-01", "amount": NaN}\n',
        '{"occurred_at": "2026-03-01", "amount": 1}\n',
    ]
    parsed = parse_rows(read_jsonl(lines), RowParser("purchase", DEFAULT_RULES))
    assert [(e.customer_id, e.amount_minor) for e in parsed.events] == [  # type: ignore[union-attr]
        ("C1", 4250), ("17", 1)]
    assert [(r.line, r.reason) for r in parsed.rejected] == [
        (3, "schema_violation"), (4, "malformed_json"), (5, "not_an_object"),
        (7, "malformed_json"), (8, "schema_violation")]
    assert parsed.rejected[-1].message == "purchase.customer_id: required field is missing"
    assert parsed.by_reason == {"schema_violation": 2, "malformed_json": 2, "not_an_object": 1}
    assert parsed.rows == 7


def test_csv_and_jsonl_of_the_same_rows_give_the_same_events() -> None:
    csv_text = ("customer_id,occurred_at,amount,currency\n"
                "C1,2026-03-02T10:00:00+01:00,19.99,USD\nC1,2026-03-01,42.50,\n")
    jsonl = ['{"customer_id": "C1", "occurred_at": "2026-03-02T10:00:00+01:00", '
             '"amount": 19.99, "currency": "USD"}',
             '{"customer_id": "C1", "occurred_at": "2026-03-01", "amount": "42.50"}']
    a = parse_rows(read_csv(csv_lines(csv_text), SPECS["purchase"]),
                   RowParser("purchase", DEFAULT_RULES))
    b = parse_rows(read_jsonl(jsonl), RowParser("purchase", DEFAULT_RULES))
    assert a.events == b.events
    assert len(a.events) == 2


def test_events_are_sorted_by_time_and_stable_for_equal_times() -> None:
    rows = [
        {"customer_id": "C", "occurred_at": "2026-03-03", "amount": "1", "order_id": "late"},
        {"customer_id": "C", "occurred_at": "2026-03-01", "amount": "2", "order_id": "A"},
        {"customer_id": "C", "occurred_at": "2026-03-01T00:00:00Z", "amount": "-2",
         "order_id": "A"},  # the same instant: stays after its purchase
        {"customer_id": "C", "occurred_at": "2026-03-02", "amount": "3", "order_id": "mid"},
    ]
    parsed = parse_rows(enumerate(rows, 2), RowParser("purchase", DEFAULT_RULES))
    assert [(e.order_id, e.kind) for e in parsed.events] == [  # type: ignore[union-attr]
        ("A", "purchase"), ("A", "refund"), ("mid", "purchase"), ("late", "purchase")]


def test_rejections_can_be_capped_but_are_all_counted() -> None:
    rows = [(n, {"customer_id": "C", "occurred_at": "x", "amount": "1"}) for n in range(2, 12)]
    parsed = parse_rows(rows, RowParser("purchase", DEFAULT_RULES), keep=3)
    assert [r.line for r in parsed.rejected] == [2, 3, 4]
    assert parsed.rejected_count == 10


# -- progress bar ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_redraws_at_most_ten_times_a_second_and_shows_the_rate() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(out, "sending", 1000, enabled=True, clock=clock)
    for _ in range(500):  # 500 rows in 1 s: one update every 2 ms
        clock.t += 0.002
        bar.update()
    assert 9 <= bar.draws <= 11
    assert bar.render(clock.t) == "sending [############            ] 500/1,000  50.0% 500 rows/s"
    bar.close()
    assert out.getvalue().endswith("\x1b[K\n")


def test_progress_is_silent_when_not_a_terminal() -> None:
    out = io.StringIO()
    bar = Progress(out, "reading")
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""
    assert bar.render(bar.started + 1) == "reading 5 rows 5 rows/s"


# -- the command, without a broker (--emit) -------------------------------------------------


def test_emit_jsonl_writes_wire_events_sorted_and_exits_1_on_rejected_rows() -> None:
    result = CliRunner().invoke(
        cli, ["replay", str(FIXTURES / "replay_purchases.csv"), "--emit", "jsonl"], env={})
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 7
    events = []
    for line in lines:
        cid, _, value = line.rpartition("\t")
        ev = decode("purchase", value.encode())
        assert ev.customer_id == cid
        events.append(ev)
    assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)
    assert "8 rows read, 7 emitted, 1 rejected" in result.stderr
    assert ("line 5: schema_violation: purchase.amount: '42.505' has more decimals than EUR "
            "allows (2)") in result.stderr
    again = CliRunner().invoke(
        cli, ["replay", str(FIXTURES / "replay_purchases.csv"), "--emit", "jsonl"], env={})
    assert again.stdout == result.stdout  # deterministic ids


def test_emit_exits_0_when_every_row_is_good(tmp_path: Path) -> None:
    f = tmp_path / "s.ndjson"
    f.write_text(json.dumps({"customer_id": "C", "occurred_at": "2026-03-01", "kind": "nps",
                             "score": 10}) + "\n")
    result = CliRunner().invoke(cli, ["replay", str(f), "--kind", "survey", "--emit", "jsonl"],
                                env={})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('C\t{"event_id":"replay-')


@pytest.mark.parametrize(("args", "says"), [
    (["x.txt"], "cannot tell the format of"),
    (["p.csv", "--currency", "XYZ"], "--currency XYZ: no rate in the rules"),
    (["bad.csv"], "cannot tell whether its rows are purchases (an amount column)"),
    (["bad.csv", "--kind", "purchase"], "missing required column amount"),
    (["p.csv", "--kind", "purchase", "--kind", "ticket"], "--kind given 2 times for 1 files"),
    (["p.csv", "--kind", "refund"], "'refund' is not one of"),
    (["missing.csv"], "does not exist"),
    (["p.csv", "--rate", "-1"], "-1"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "x.txt").write_text("customer_id,occurred_at,amount\n")
    (tmp_path / "p.csv").write_text("customer_id,occurred_at,amount\n")
    (tmp_path / "bad.csv").write_text("customer_id,occurred_at,total\n")
    args = [str(tmp_path / args[0]), *args[1:]]
    result = CliRunner().invoke(cli, ["replay", *args, "--emit", "jsonl"], env={})
    assert result.exit_code == 2, result.output
    assert says in result.stderr


def test_several_files_are_merged_in_event_time_with_kinds_from_their_columns(
        tmp_path: Path) -> None:
    """``pulse replay purchases.csv tickets.csv surveys.jsonl`` sends one stream in event
    time, whatever order the files come in: each kind's rows take their place among the
    others (a replay of one kind after another would judge them against a clock the other
    kinds had already moved)."""
    (tmp_path / "p.csv").write_text("customer_id,occurred_at,amount\n"
                                   "C1,2026-03-05,10.00\nC1,2026-03-01,20.00\n")
    (tmp_path / "t.csv").write_text("customer_id,occurred_at,ticket_id,status,priority\n"
                                   "C1,2026-03-03,T1,opened,high\nC1,2026-03-06,T1,resolved,high\n")
    (tmp_path / "s.jsonl").write_text(json.dumps(
        {"customer_id": "C1", "occurred_at": "2026-03-02", "kind": "nps", "score": 3}) + "\n")
    files = [str(tmp_path / n) for n in ("t.csv", "s.jsonl", "p.csv")]
    result = CliRunner().invoke(cli, ["replay", *files, "--emit", "jsonl"], env={})
    assert result.exit_code == 0, result.output
    docs = [json.loads(line.rpartition("\t")[2]) for line in result.stdout.splitlines()]
    assert [d["occurred_at"][:10] for d in docs] == [
        "2026-03-01", "2026-03-02", "2026-03-03", "2026-03-05", "2026-03-06"]
    assert ["ticket_id" in d for d in docs] == [False, False, True, False, True]
    assert "t.csv (ticket): 2 rows read" in result.stderr
    assert "s.jsonl (survey): 1 rows read" in result.stderr
    # --kind once a file, in order, says the same thing
    paired = CliRunner().invoke(cli, ["replay", *files, "--kind", "ticket", "--kind", "survey",
                                      "--kind", "purchase", "--emit", "jsonl"], env={})
    assert paired.exit_code == 0 and paired.stdout == result.stdout


def test_end_marker_round_trips_and_bad_ones_are_refused() -> None:
    value, headers = end_marker("r1", ["purchases", "surveys"], 1_700_000_000_000)
    assert headers_of(headers) == ("r1", True)
    assert parse_control(value) == ReplayEnd("r1", ("purchases", "surveys"), 1_700_000_000_000)
    for bad, says in [(b"{", "not JSON"), (b'{"control": "other"}', "not a replay_end"),
                      (b'{"control": "replay_end", "topics": ["a"], "end_ms": 1}',
                       "without a replay_id"),
                      (b'{"control": "replay_end", "replay_id": "r", "topics": [], '
                       b'"end_ms": 1}', "list of topics"),
                      (b'{"control": "replay_end", "replay_id": "r", "topics": ["a"], '
                       b'"end_ms": "x"}', "integer end_ms")]:
        with pytest.raises(BadControl, match=says):
            parse_control(bad)


def test_historical_rows_from_1970_are_emitted_and_earlier_ones_rejected(tmp_path: Path) -> None:
    f = tmp_path / "old.csv"
    f.write_text("customer_id,occurred_at,amount\nC,1970-01-01,1.00\nC,1989-12-31,2.00\n"
                 "C,1969-12-31T23:59:59Z,3.00\n")
    result = CliRunner().invoke(cli, ["replay", str(f), "--emit", "jsonl"], env={})
    assert result.exit_code == 1, result.output  # one row rejected, the rest emitted
    times = [json.loads(line.split("\t", 1)[1])["occurred_at"]
             for line in result.stdout.splitlines()]
    assert times == ["1970-01-01T00:00:00.000Z", "1989-12-31T00:00:00.000Z"]
    assert "line 4: schema_violation: purchase.occurred_at: must not be before " \
        "1970-01-01T00:00:00Z" in result.stderr
