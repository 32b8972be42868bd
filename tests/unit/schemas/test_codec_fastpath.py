"""The msgspec fast path of ``schemas.codec.decode`` changes nothing but the speed.

For every record, ``decode`` (fast path, then the slow path when it declines) must give
exactly what ``decode_python`` (orjson and the hand-written checks) gives: an equal event of
the same types (compared by ``repr`` as well, so ``1`` vs ``1.0`` or a list for a tuple
would show), or an ``InvalidEvent`` with the same reason and message. And whatever
``decode_fast`` accepts on its own, the slow path accepts as the same event.

The corpus: simulated traffic (valid and malformed), the golden files, hand-picked records
at the edges where msgspec and orjson differ, and Hypothesis mutations of valid records
(fields removed or replaced by wrong types, blank or boundary strings, boundary numbers,
floats for integers, booleans, nulls, bad timestamps, unicode, extra fields, duplicate keys,
raw JSON tokens that only some parsers take).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import codec, events
from schemas.codec import InvalidEvent, decode, decode_fast, decode_python
from streams.tools.simulator import SimConfig, Simulator
from tests.paths import GOLDEN

START = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY = 86_400_000


def outcome(fn: Callable[..., events.Event], kind: str, raw: bytes | None) -> tuple:
    try:
        event = fn(kind, raw)
    except InvalidEvent as exc:
        return ("rejected", exc.reason, exc.message)
    return ("accepted", type(event), repr(event), event)


def assert_same(kind: str, raw: bytes | None) -> tuple:
    """decode == decode_python on these bytes; returns (slow outcome, decode_fast's event)."""
    slow = outcome(decode_python, kind, raw)
    assert outcome(decode, kind, raw) == slow, raw
    fast = decode_fast(kind, raw) if raw is not None else None
    if fast is not None:
        assert slow[0] == "accepted", (raw, slow)
        assert (type(fast), repr(fast), fast) == slow[1:], raw
        if isinstance(fast, events.Purchase):
            assert type(fast.lines) is tuple
            assert all(type(ln) is events.PurchaseLine for ln in fast.lines)
    return slow, fast


# ------------------------------------------------------------------------ simulated traffic


@pytest.fixture(scope="module")
def simulated() -> list[Any]:
    sim = Simulator(SimConfig(customers=1500, seed=11, start_ms=START, malformed_rate=0.05,
                              customer_events=True))
    records = list(sim.events_until(START + 120 * DAY))
    records += Simulator(SimConfig(customers=500, seed=12, start_ms=START, malformed_rate=0.05,
                                   customer_events=True)).sample_events(1000, START + 30 * DAY)
    return records


def test_simulated_records_decode_the_same(simulated: list[Any]) -> None:
    kinds = {r.kind for r in simulated}
    # adjustments are made by people (the API, `pulse points adjust`), referral records by
    # the workers: not simulated
    assert kinds == set(events.EVENT_KINDS) - {events.ADJUSTMENT, events.REFERRAL}
    assert len(simulated) > 3000
    declined = []
    for r in simulated:
        slow, fast = assert_same(r.kind, r.value)
        if r.valid:  # (not all invalid ones are the codec's to reject: unknown currencies)
            assert slow[0] == "accepted" and slow[3] == r.event
            if fast is None:
                declined.append(r.value)
    # the fast path must actually take the traffic, or it is only overhead
    assert declined == []


# ------------------------------------------------------------------------ the golden corpus


def _golden() -> list[tuple[str, bytes]]:
    cases = [(p.name.split("-", 1)[0], p.read_bytes()) for p in (GOLDEN / "valid").glob("*.json")]
    for p in (GOLDEN / "invalid").glob("*.json"):
        case = json.loads(p.read_text(encoding="utf-8"))
        raw = ((p.parent / case["raw_file"]).read_bytes() if "raw_file" in case
               else case["raw"].encode("utf-8", "surrogatepass"))
        cases.append((case["kind"], raw))
    return sorted(cases)


@pytest.mark.parametrize(("kind", "raw"), _golden(), ids=lambda v: str(v)[:40])
def test_golden_records_decode_the_same(kind: str, raw: bytes) -> None:
    assert_same(kind, raw)


# ------------------------------------------------------------------------ the edges


def _basic(kind: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((GOLDEN / "valid" / f"{kind}-basic.json").read_bytes())
    return obj


def _with(of: str, /, **changes: Any) -> bytes:
    return json.dumps({**_basic(of), **changes}, ensure_ascii=False).encode()


def _record(of: str, /, **fields: Any) -> bytes:
    """The basic record's envelope (event_id, customer_id, occurred_at, source) and
    ``fields``."""
    envelope = ("event_id", "customer_id", "occurred_at", "source")
    return json.dumps({**{k: _basic(of)[k] for k in envelope}, **fields}).encode()


def _line(**changes: Any) -> bytes:
    base = _basic("purchase")
    base["lines"][0].update(changes)
    return json.dumps(base).encode()


def _splice(kind: str, text: str) -> bytes:
    """The basic record with raw JSON text inserted as its first members."""
    raw = json.dumps(_basic(kind)).encode()
    return b"{" + text.encode("utf-8", "surrogatepass") + b"," + raw[1:]


P, T, S, R, C = (events.PURCHASE, events.TICKET, events.SURVEY, events.REDEMPTION,
                 events.CUSTOMER)
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())  # all str.isspace

# (kind, bytes, does the fast path take it?)
EDGES: list[tuple[str, bytes | None, bool]] = [
    (P, json.dumps(_basic(P)).encode(), True),
    (P, _with(P, customer_id=" "), False),
    *[(P, _with(P, customer_id=c * 3), False) for c in WHITESPACE],
    (P, _with(P, customer_id="\u200b"), True),  # zero-width space is not whitespace to str
    (P, _with(P, event_id="e" * codec.MAX_ID_LEN), True),
    (P, _with(P, event_id="e" * (codec.MAX_ID_LEN + 1)), False),
    (P, _with(P, event_id="\U0001f600" * codec.MAX_ID_LEN), True),  # code points, not bytes
    (P, _with(P, event_id="\U0001f600" * (codec.MAX_ID_LEN + 1)), False),
    (P, _with(P, source=""), False),
    (P, _with(P, order_id="\t"), False),
    (P, _with(P, channel="\u3000"), False),
    (P, _with(P, store_id=None), True),
    (P, _with(P, store_id=" "), False),
    (P, _with(P, store_id=""), False),
    (P, _with(P, currency="EU"), False),
    (P, _with(P, currency="eur"), False),
    (P, _with(P, currency="EUR\n"), False),
    (P, _with(P, currency="ÉUR"), False),
    (P, _with(P, currency="\uff25UR"), False),  # fullwidth E: isupper and isalpha, not ASCII
    (P, _with(P, amount_minor=codec.MAX_AMOUNT_MINOR), True),
    (P, _with(P, amount_minor=codec.MAX_AMOUNT_MINOR + 1), False),
    (P, _with(P, amount_minor=2**64), False),
    (P, _with(P, amount_minor=10**30), False),
    (P, _with(P, amount_minor=4599.0), False),  # accepted, by the slow path
    (P, _with(P, amount_minor=True), False),
    (P, _with(P, kind="Purchase"), False),
    (P, _with(P, lines=[]), True),
    (P, _with(P, lines=None), False),
    (P, _with(P, lines={}), False),
    (P, _with(P, lines=[_basic(P)["lines"][0]] * codec.MAX_LINES), True),
    (P, _with(P, lines=[_basic(P)["lines"][0]] * (codec.MAX_LINES + 1)), False),
    (P, _line(sku=" "), False),
    (P, _line(category="\n"), False),
    (P, _line(quantity=0), False),
    (P, _line(quantity=2.0), False),
    (P, _line(quantity=False), False),
    (P, _line(unit_price_minor=-1), False),
    (P, _line(extra="x"), False),  # accepted, by the slow path
    (P, _line(extra="\ud800"), False),
    (P, _with(P, occurred_at="2024-02-29T00:00:00Z"), True),
    (P, _with(P, occurred_at="2023-02-29T00:00:00Z"), False),
    (P, _with(P, occurred_at="2100-01-01T00:00:00Z"), False),
    (P, _with(P, occurred_at="2024-05-17T14:03:22+02:00\n"), False),
    (P, _with(P, occurred_at="2024-05-17 14:03:22+02:00"), False),
    (P, _with(P, occurred_at=1715947402000), False),
    (P, _with(P, extra="fine"), False),  # accepted, by the slow path
    (P, _splice(P, '"extra":1e400'), False),  # orjson: infinity; msgspec would skip it
    (P, _splice(P, '"extra":-1E999'), False),
    (P, _splice(P, '"extra":"\\ud800"'), False),
    (P, _splice(P, '"extra":"\ud800"'), False),  # UTF-8-encoded surrogate: invalid UTF-8
    (P, _splice(P, '"extra":' + "[" * 2000 + "]" * 2000), False),
    (P, _splice(P, '"extra":' + "[" * 900 + "]" * 900), False),
    (P, _splice(P, '"extra":18446744073709551616'), False),
    (P, _splice(P, '"customer_id":" "'), True),  # duplicate key: the last one wins
    (P, _splice(P, '"customer_id":1'), False),  # ... and the first one is still checked
    (P, _splice(P, '"amount_minor":4.0'), False),
    (P, _splice(P, '"customer_id":"ok"') + b'\n', True),
    (P, json.dumps({**_basic(P), "customer_id": " "}).encode()[:-1] + b',"customer_id":"c"}',
     True),
    (P, json.dumps({**_basic(P), "customer_id": "c\ud800"}).encode(), False),  # "\ud800"
    (P, json.dumps(_basic(P)).encode() + b" x", False),
    (P, b"\xef\xbb\xbf" + json.dumps(_basic(P)).encode(), False),
    (P, b"[]", False),
    (P, b"null", False),
    (P, b"", False),
    (P, None, False),
    (P, _with(P, pad="x" * codec.MAX_RECORD_BYTES), False),
    (T, _with(T, sentiment=None), True),
    (T, _with(T, sentiment=1), True),  # an integer becomes a float on both paths
    (T, _with(T, sentiment=-1), True),
    (T, _with(T, sentiment=0), True),
    (T, _splice(T, '"sentiment":-0'), True),
    (T, _with(T, sentiment=-0.0), True),
    (T, _with(T, sentiment=1.0000001), False),
    (T, _splice(T, '"sentiment":1.00000000000000000001'), True),  # rounds to 1.0 on both
    (T, _splice(T, '"sentiment":0.1000000000000000055511151231257827021181583404541015625'),
     True),
    (T, _splice(T, '"sentiment":1e-400'), True),
    (T, _splice(T, '"sentiment":-1e-400'), True),
    (T, _splice(T, '"sentiment":1e400'), False),
    (T, _with(T, sentiment=True), False),
    (T, _with(T, sentiment="0.5"), False),
    (T, _with(T, status="OPENED"), False),
    (T, _with(T, priority=None), False),
    (T, _with(T, category="c" * codec.MAX_NAME_LEN), True),
    (T, _with(T, category="c" * (codec.MAX_NAME_LEN + 1)), False),
    (S, _with(S, kind="nps", score=0), True),
    (S, _with(S, kind="nps", score=10), True),
    (S, _with(S, kind="csat", score=0), False),
    (S, _with(S, kind="csat", score=6), False),
    (S, _with(S, kind="ces", score=7), True),
    (S, _with(S, kind="ces", score=8), False),
    (S, _with(S, score=3.0), False),
    (S, _with(S, comment=None), True),
    (S, _with(S, comment=""), True),
    (S, _with(S, comment="   "), True),  # a comment may be blank
    (S, _with(S, comment="x" * codec.MAX_COMMENT_LEN), True),
    (S, _with(S, comment="x" * (codec.MAX_COMMENT_LEN + 1)), False),
    (S, _with(S, comment=42), False),
    (S, _with(S, touchpoint="\u2028"), False),
    (R, _with(R, points=codec.MAX_REDEEM_POINTS), True),
    (R, _with(R, points=0), False),
    (R, _with(R, reward_id="  "), False),
    (R, _with(R, points=1e3), False),
    (C, _with(C), True),
    (C, _with(C, referred_by=None, birth_date=None, time_zone=None, channels=None), True),
    (C, _with(C, referred_by="cust-000123"), False),  # the customer itself
    (C, _with(C, referred_by=" "), False),
    (C, _with(C, referred_by="r" * codec.MAX_ID_LEN), True),
    (C, _with(C, referred_by="r" * (codec.MAX_ID_LEN + 1)), False),
    *[(C, _with(C, birth_date=d), ok) for d, ok in [
        ("--02-29", True), ("2000-02-29", True), ("1900-02-29", False), ("2023-02-29", False),
        ("--02-30", False), ("--05-17\n", False), ("--0\u0665-17", False),
        ("1899-12-31", False), (19880517, False)]],
    *[(C, _with(C, time_zone=z), ok) for z, ok in [
        ("UTC", True), ("America/Argentina/Buenos_Aires", True),
        ("Europe/Atlantis", False),  # unknown_time_zone, by the slow path
        ("europe/paris", False), ("localtime", False), ("../etc/passwd", False), ("", False)]],
    (C, _with(C, channels={"email": True}), False),  # not in a signup
    (C, _with(C, kind="profile_update", referred_by=None), True),
    (C, _with(C, kind="profile_update"), False),  # referred_by: a signup's only
    (C, _record(C, kind="profile_update", birth_date=None, time_zone=None), False),
    (C, _record(C, kind="profile_update", time_zone="UTC"), True),
    *[(C, _record(C, kind="consent", channels=ch), ok) for ch, ok in [
        ({"sms": False, "email": True}, True), ({}, False), ({"fax": True}, False),
        ({"email": 1}, False), (None, False)]],
    (C, _record(C, kind="consent", channels={"email": True}, time_zone="UTC"), False),
    (C, b'{"event_id": "e", "customer_id": "c", "occurred_at": "2024-01-01T00:00:00Z", '
        b'"source": "web", "kind": "consent", "channels": {"email": true, "email": false}}',
     True),  # a duplicated channel: the last one wins on both paths
    (C, b'{"event_id": "e", "customer_id": "c", "occurred_at": "2024-01-01T00:00:00Z", '
        b'"source": "web", "kind": "consent", "channels": {"email": 1, "email": false}}',
     False),  # ... and the first one is still checked (by the slow path)
    (C, _record(C, kind="erasure_requested"), True),
    (C, _record(C, kind="erasure_requested", birth_date="--01-01"), False),
    (C, _with(C, kind="Signup"), False),
    (C, _with(C, newsletter="x"), False),  # accepted, by the slow path
]


def _edge_id(kind: str, raw: bytes | None) -> str:
    """Where the record differs from the kind's basic one, e.g. 'purchase:"customer_id": " "'."""
    if raw is None:
        return f"{kind}:None"
    basic = json.dumps(_basic(kind)).encode()
    i = next((i for i, (a, b) in enumerate(zip(raw, basic, strict=False)) if a != b),
             min(len(raw), len(basic)))
    start = raw.rfind(b", ", 0, i) + 2 if raw.rfind(b", ", 0, i) >= 0 else 0
    return f"{kind}:{raw[start:start + 40]!r}"[:60]


@pytest.mark.parametrize(("kind", "raw", "fast"), EDGES,
                         ids=[_edge_id(k, r) for k, r, _ in EDGES])
def test_edges_decode_the_same(kind: str, raw: bytes | None, fast: bool) -> None:
    _, event = assert_same(kind, raw)
    assert (event is not None) == fast


@pytest.mark.parametrize("raw", [b"{", b"[]", b"{}", None])
def test_unknown_kind_fails_as_before(raw: bytes | None) -> None:
    def failure(fn: Callable[..., events.Event]) -> tuple:
        with pytest.raises(Exception) as caught:  # whatever it was, the same
            fn("order", raw)
        return type(caught.value), caught.value.args

    assert failure(decode) == failure(decode_python)


def test_fast_path_types_mirror_the_event_constants() -> None:
    def literal(cls: type, name: str) -> tuple[str, ...]:
        return typing.get_args(typing.get_type_hints(cls)[name])

    assert literal(codec._WirePurchase, "kind") == events.PURCHASE_KINDS
    assert literal(codec._WireTicket, "status") == events.TICKET_STATUSES
    assert literal(codec._WireTicket, "priority") == events.TICKET_PRIORITIES
    assert literal(codec._WireSurvey, "kind") == events.SURVEY_KINDS
    assert literal(codec._WireCustomer, "kind") == events.CUSTOMER_KINDS
    channels = typing.get_type_hints(codec._WireCustomer)["channels"]
    assert typing.get_args(typing.get_args(typing.get_args(channels)[0])[0]) == (
        events.CONSENT_CHANNELS)
    pairs = [(codec._WirePurchase, events.Purchase), (codec._WireTicket, events.SupportTicket),
             (codec._WireSurvey, events.Survey), (codec._WireRedemption, events.Redemption),
             (codec._WireLine, events.PurchaseLine),
             (codec._WireCustomer, events.CustomerEvent)]
    for wire, event in pairs:  # the same fields, in the same order (the builders rely on it)
        assert wire.__struct_fields__ == tuple(f.name for f in dataclasses.fields(event))


# ------------------------------------------------------------------------ mutations


class Raw(str):
    """JSON text written as is (what json.dumps cannot produce)."""


RAW_TOKENS = [
    "1e400", "-1e400", "1E+2", "3.0", "-0", "-0.0", "1e-400", "0.5e1", "1.0e0",
    "18446744073709551616", "9223372036854775808", "-9223372036854775809",
    "0.1000000000000000055511151231257827021181583404541015625",
    '"\\ud800"', '"\\udc00x"', '"a\\ud83d\\ude00"', '"\\u0041BC"', '"\\u3000"', '"\\u0000"',
    '"\\n"', '"EUR\\n"', "[" * 1100 + "]" * 1100, '"\udcff"', "NaN", "[]", "{}",
]

_all_chars = st.characters()  # lone surrogates included: encoded with surrogatepass
_spaces = st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=4)


def _sized(n: int) -> st.SearchStrategy[str]:
    return st.sampled_from(["x", " ", "\U0001f600", "é"]).map(lambda c: c * n)


_strings = st.one_of(
    st.text(max_size=6),
    st.text(_all_chars, max_size=6),
    _spaces,
    st.sampled_from([n for m in (codec.MAX_ID_LEN, codec.MAX_NAME_LEN, codec.MAX_COMMENT_LEN)
                     for n in (m, m + 1)]).flatmap(_sized),
    st.sampled_from(["EUR", "eur", "EU", "EURO", "ÉUR", "\uff25UR", "E1R",
                     *events.PURCHASE_KINDS, *events.TICKET_STATUSES, *events.TICKET_PRIORITIES,
                     *events.SURVEY_KINDS, "NPS", "purchase ",
                     *events.CUSTOMER_KINDS, *events.CONSENT_CHANNELS, "Europe/Paris", "UTC",
                     "Europe/Atlantis", "utc", "--02-29", "--02-30", "1988-02-29",
                     "2023-02-29", "--5-17", "cust-000123", "cust-000042"]),
    st.from_regex(
        r"(19|20|21)\d\d-[01]\d-[0-3]\d[Tt ][0-2]\d:[0-6]\d:[0-6]\d(\.\d{1,10})?"
        r"([Zz]|[+-][0-2]\d:?[0-6]\d)?\n?",
        fullmatch=True,
    ),
)
_numbers = st.one_of(
    st.integers(-2, 12),
    st.sampled_from([b + d for b in (codec.MAX_ID_LEN, codec.MAX_QUANTITY,
                                     codec.MAX_UNIT_PRICE_MINOR, codec.MAX_AMOUNT_MINOR,
                                     codec.MAX_REDEEM_POINTS, 2**63, 2**64) for d in (-1, 0, 1)]),
    st.integers(),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 3.0, 1.5, 1e23, 1e10, 10.0, 7.0]),
    st.floats(-1.5, 1.5),
    st.floats(allow_nan=False, allow_infinity=False),
)
_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | _numbers | _strings | st.sampled_from(RAW_TOKENS).map(Raw),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=4,
)
_EDGE = (23 * 60 + 59) * 60_000  # the largest offset: up to a day beyond the years as written


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    """RFC 3339 in the forms producers write: any offset, 0-9 fraction digits, Z or z."""
    ms = draw(st.integers(codec.MIN_TIME_MS - _EDGE, codec.MAX_TIME_MS + _EDGE)
              | st.integers(-_EDGE, _EDGE))  # around 1970-01-01T00:00:00Z
    offset = draw(st.sampled_from([0, 0, 60, -300, 330, 23 * 60 + 59, -(23 * 60 + 59)]))
    t = datetime.fromtimestamp(ms / 1000, timezone(timedelta(minutes=offset)))
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.integers(0, 9))
    if digits:
        text += "." + (f"{ms % 1000:03d}" + "".join(draw(st.lists(
            st.sampled_from("0123456789"), min_size=6, max_size=6))))[:digits]
    if offset == 0 and draw(st.booleans()):
        return text + draw(st.sampled_from("Zz"))
    sign, hm = ("-" if offset < 0 else "+"), divmod(abs(offset), 60)
    return f"{text}{sign}{hm[0]:02d}:{hm[1]:02d}"


def _like(old: Any) -> st.SearchStrategy[Any]:
    """Values of the same JSON type as ``old``, mostly near or inside the rules."""
    if isinstance(old, str):
        return st.one_of(
            _strings, _timestamps(), _spaces,
            st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=10),
            st.tuples(_spaces | st.just(""), st.just(old), _spaces | st.just("")).map("".join),
        )
    if isinstance(old, bool) or old is None:
        return _values
    if isinstance(old, int):
        return st.integers(old - 3, old + 3) | _numbers
    if isinstance(old, float):
        return st.floats(-1.0, 1.0) | st.integers(-1, 1) | _numbers
    return _values


_keys = st.sampled_from(
    sorted({f.name for cls in (events.Purchase, events.SupportTicket, events.Survey,
                               events.Redemption, events.PurchaseLine, events.CustomerEvent)
            for f in dataclasses.fields(cls)} | {"extra", "Customer_id", "lines "})
) | st.text(max_size=4)


def _dump(value: Any, ascii_only: bool) -> str:
    """JSON text of a value; dicts as lists of pairs may repeat keys."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{_dump(k, ascii_only)}:{_dump(v, ascii_only)}"
                              for k, v in value) + "}"
    if isinstance(value, dict):
        return _dump(Pairs(value.items()), ascii_only)
    if isinstance(value, list):
        return "[" + ",".join(_dump(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


class Pairs(list):  # type: ignore[type-arg]
    """A JSON object as (key, value) pairs, so that a key can appear twice."""


def _pairs(obj: dict[str, Any]) -> Pairs:
    return Pairs((k, Pairs(_pairs(v)) if isinstance(v, dict) else
                  [_pairs(x) if isinstance(x, dict) else x for x in v] if k == "lines" else v)
                 for k, v in obj.items())


def _bases() -> list[tuple[str, dict[str, Any]]]:
    sim = Simulator(SimConfig(customers=200, seed=3, start_ms=START, customer_events=True))
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in sim.events_until(START + 60 * DAY):
        if r.valid:  # customer records: some of each of their kinds
            sub = r.event.kind if isinstance(r.event, events.CustomerEvent) else ""
            if len(found.setdefault((r.kind, sub), [])) < 6:
                found[(r.kind, sub)].append(json.loads(r.value))
    bases = [(k, obj) for (k, _), objs in found.items() for obj in objs]
    return bases + [(k, _basic(k)) for k in events.EVENT_KINDS]


BASES = _bases()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    kind, obj = draw(st.sampled_from(BASES))
    if draw(st.integers(0, 9)) == 0:  # now and then a record of another kind
        kind = draw(st.sampled_from(events.EVENT_KINDS))
    record = _pairs(obj)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        target = record
        lines = [v for k, v in record if k == "lines" and isinstance(v, list)]
        if lines and lines[0] and draw(st.booleans()):
            items = [x for x in lines[0] if isinstance(x, Pairs)]
            if items:
                target = draw(st.sampled_from(items))
        channels = [v for k, v in record if k == "channels" and isinstance(v, Pairs)]
        if channels and draw(st.booleans()):  # a consent record's channels
            target = channels[0]
        op = draw(st.sampled_from(["remove", "set", "set", "set", "duplicate", "extra"]))
        if op == "extra" or not target:
            target.append((draw(_keys), draw(_values)))
            continue
        i = draw(st.integers(0, len(target) - 1))
        key, old = target[i]
        if op == "remove":
            del target[i]
        elif op == "set":
            target[i] = (key, draw(_like(old) if draw(st.integers(0, 4)) else _values))
        else:  # the same key again, before or after, with a new or the same value
            new = draw(_like(old) | st.just(old))
            target.insert(draw(st.sampled_from([i, i + 1, len(target)])), (key, new))
    text = _dump(record, ascii_only=draw(st.booleans()))
    return kind, text.encode("utf-8", "surrogatepass")


@settings(max_examples=2500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
@example((events.PURCHASE, _with(P, customer_id="   ")))
@example((events.SURVEY, _with(S, kind="csat", score=9)))
def test_mutated_records_decode_the_same(case: tuple[str, bytes]) -> None:
    assert_same(*case)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(events.EVENT_KINDS), st.binary(max_size=40) | st.text().map(str.encode))
def test_arbitrary_bytes_decode_the_same(kind: str, raw: bytes) -> None:
    assert_same(kind, raw)


# ------------------------------------------------------------------------ the gate


def test_gate_skips_the_fast_path_for_a_kind_whose_valid_records_it_keeps_declining(
    monkeypatch: pytest.MonkeyPatch, simulated: list[Any]
) -> None:
    gate = codec._FastPathGate()
    gate.MISSES, gate.PAUSE = 3, 5
    monkeypatch.setattr(codec, "_gate", gate)
    tried: list[str] = []

    def spy(kind: str, data: bytes) -> events.Event | None:
        tried.append(kind)
        return decode_fast(kind, data)

    monkeypatch.setattr(codec, "decode_fast", spy)
    valid = [r for r in simulated if r.kind == "purchase" and decode_fast(r.kind, r.value)]
    extra = [r.value[:-1] + b',"loyalty_card":"X1"}' for r in valid[:20]]  # a new field

    # an invalid record is not a miss: the fast path is right to decline it
    for _ in range(10):
        with pytest.raises(InvalidEvent):
            decode("purchase", b'{"event_id": 1}')
    assert len(tried) == 10 and not gate.paused.get("purchase")
    # a valid record accepted by the fast path resets the count of misses
    tried.clear()
    for raw in extra[:2]:
        assert decode("purchase", raw) == decode_python("purchase", raw)
    decode("purchase", valid[0].value)
    assert "purchase" not in gate.misses
    # three valid records in a row declined: the next five skip it, then it is tried again
    tried.clear()
    results = [decode("purchase", raw) for raw in extra[:3 + 5 + 1]]
    assert results == [decode_python("purchase", raw) for raw in extra[:9]]
    assert len(tried) == 3 + 1
    # other kinds are not affected
    ticket = next(r for r in simulated if r.kind == "ticket" and decode_fast(r.kind, r.value))
    tried.clear()
    decode("ticket", ticket.value)
    assert tried == ["ticket"]
