"""The JSON Schemas (the contract with producers) and the codec (both its paths) agree.

Every golden event (``tests/golden/``) goes through both ``jsonschema`` (draft 2020-12, with
the format checker) and ``schemas.codec.decode``: valid ones are accepted by both, invalid
ones rejected by both, and the codec's reason and field path are the ones the corpus names.
Codec-only checks (the size limit, bytes that are not UTF-8, lone surrogate escapes) are
marked as such. Hypothesis then generates typed events and arbitrary field values to look for
any input on which the two disagree.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError

from schemas import codec, events
from schemas.codec import InvalidEvent, decode, encode
from schemas.contract import SCHEMA_FILES, load_schema, schema_path
from tests.paths import GOLDEN

KINDS = events.EVENT_KINDS
SCHEMAS = {kind: load_schema(kind) for kind in KINDS}
VALIDATORS = {
    kind: Draft202012Validator(s, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for kind, s in SCHEMAS.items()
}
# Without format assertion (the 2020-12 default): the patterns alone must carry every rule.
PLAIN_VALIDATORS = {kind: Draft202012Validator(s) for kind, s in SCHEMAS.items()}
DATACLASSES = {
    events.PURCHASE: events.Purchase,
    events.TICKET: events.SupportTicket,
    events.SURVEY: events.Survey,
    events.REDEMPTION: events.Redemption,
    events.CUSTOMER: events.CustomerEvent,
    events.ADJUSTMENT: events.Adjustment,
    events.REFERRAL: events.Referral,
}
NOT_JSON = ("<not JSON>",)


# ------------------------------------------------------------------------ helpers


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN/Infinity; JSON does not


def schema_errors(kind: str, raw: bytes, validators: dict[str, Any] = VALIDATORS) -> set[tuple]:
    """Instance paths the JSON Schema objects to; empty means accepted."""
    try:
        instance = json.loads(raw, parse_constant=_no_constants)
    except ValueError:  # includes UnicodeDecodeError
        return {NOT_JSON}
    return {_error_path(e) for e in validators[kind].iter_errors(instance)}


def _error_path(err: ValidationError) -> tuple:
    path = tuple(err.absolute_path)
    if err.validator == "required":  # reported on the parent object: name the missing field
        missing = [name for name in err.validator_value if name not in err.instance]
        return (*path, missing[0])
    return path


def field_path(field: str) -> tuple:
    """'purchase.lines[0].quantity' -> ('lines', 0, 'quantity'), a jsonschema instance path."""
    _, _, rest = field.partition(".")
    return tuple(int(i) if i else name for name, i in re.findall(r"(\w+)|\[(\d+)\]", rest))


def _load_invalid(path: Path) -> dict[str, Any]:
    case = json.loads(path.read_text(encoding="utf-8"))
    if "raw_file" in case:
        case["bytes"] = (path.parent / case["raw_file"]).read_bytes()
    else:
        case["bytes"] = case["raw"].encode("utf-8", "surrogatepass")
    return case


VALID = sorted((GOLDEN / "valid").glob("*.json"))
INVALID = sorted((GOLDEN / "invalid").glob("*.json"))


def _kind_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


# ------------------------------------------------------------------------ the golden corpus


def test_corpus_covers_every_kind() -> None:
    assert {_kind_of(p) for p in VALID} == set(KINDS)
    assert {_kind_of(p) for p in INVALID} == set(KINDS)
    assert len(VALID) >= 20 and len(INVALID) >= 80


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_event_is_accepted_by_both(path: Path) -> None:
    kind, raw = _kind_of(path), path.read_bytes()
    event = decode(kind, raw)
    assert event.event_kind == kind
    assert schema_errors(kind, raw) == set()
    # Round trip: what we write is what we read, and it is itself valid against the contract.
    again = encode(event)
    assert decode(kind, again) == event
    assert schema_errors(kind, again) == set()


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_event_is_rejected_by_both(path: Path) -> None:
    case = _load_invalid(path)
    kind, raw, field = case["kind"], case["bytes"], case["field"]
    assert kind == _kind_of(path) and case["why"]

    with pytest.raises(InvalidEvent) as caught:
        decode(kind, raw)
    assert caught.value.reason == case["reason"], caught.value.message
    if field is not None:
        assert caught.value.message.startswith(f"{field}:"), caught.value.message

    if case.get("codec_only"):
        return  # bytes-level rules: a JSON Schema validator never sees them
    objections = schema_errors(kind, raw)
    assert objections, "the JSON Schema accepts what the codec rejects"
    if field is not None:
        assert field_path(field) in objections, objections


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_patterns_alone_give_the_same_verdict(path: Path) -> None:
    """Format assertion is off by default in 2020-12: the verdict must not depend on it."""
    if path.parent.name == "valid":
        kind, raw = _kind_of(path), path.read_bytes()
    else:
        case = _load_invalid(path)
        kind, raw = case["kind"], case["bytes"]
    assert bool(schema_errors(kind, raw)) == bool(schema_errors(kind, raw, PLAIN_VALIDATORS))


# ------------------------------------------------------------------------ codec-only limits


def test_size_limit_is_codec_only() -> None:
    base = (GOLDEN / "valid" / "purchase-basic.json").read_bytes().strip()
    skeleton = base[:-1] + b', "pad": ""}'
    at_limit = skeleton[:-2] + b"x" * (codec.MAX_RECORD_BYTES - len(skeleton)) + b'"}'
    assert len(at_limit) == codec.MAX_RECORD_BYTES
    decode("purchase", at_limit)
    over = at_limit[:-2] + b'x"}'
    with pytest.raises(InvalidEvent) as caught:
        decode("purchase", over)
    assert caught.value.reason == codec.TOO_LARGE
    assert schema_errors("purchase", over) == set()  # size is a transport rule, not a schema one


def test_tombstone_is_malformed() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode("purchase", None)
    assert caught.value.reason == codec.MALFORMED_JSON


def _line(quantity: int = 1, unit_price_minor: int = 0) -> dict[str, Any]:
    return {"sku": "s", "category": "c", "quantity": quantity, "unit_price_minor": unit_price_minor}


BOUNDARIES = [  # (kind, field, last accepted value, first rejected value or None)
    ("purchase", "customer_id", "c" * codec.MAX_ID_LEN, "c" * (codec.MAX_ID_LEN + 1)),
    ("purchase", "channel", "c" * codec.MAX_NAME_LEN, "c" * (codec.MAX_NAME_LEN + 1)),
    ("purchase", "amount_minor", codec.MAX_AMOUNT_MINOR, codec.MAX_AMOUNT_MINOR + 1),
    ("purchase", "lines", [_line()] * codec.MAX_LINES, None),  # 501: golden too-many-lines
    ("purchase", "lines", [_line(quantity=codec.MAX_QUANTITY)], [_line(codec.MAX_QUANTITY + 1)]),
    (
        "purchase",
        "lines",
        [_line(unit_price_minor=codec.MAX_UNIT_PRICE_MINOR)],
        [_line(unit_price_minor=codec.MAX_UNIT_PRICE_MINOR + 1)],
    ),
    ("survey", "comment", "x" * codec.MAX_COMMENT_LEN, "x" * (codec.MAX_COMMENT_LEN + 1)),
    ("redemption", "points", codec.MAX_REDEEM_POINTS, codec.MAX_REDEEM_POINTS + 1),
    ("customer", "referred_by", "r" * codec.MAX_ID_LEN, "r" * (codec.MAX_ID_LEN + 1)),
    ("customer", "birth_date", f"{codec.MIN_BIRTH_YEAR}-01-01",
     f"{codec.MIN_BIRTH_YEAR - 1}-12-31"),
    ("customer", "birth_date", f"{codec.MAX_BIRTH_YEAR}-12-31",
     f"{codec.MAX_BIRTH_YEAR + 1}-01-01"),
    ("customer", "birth_date", "2096-02-29", "2100-02-29"),
    ("customer", "time_zone", "America/Argentina/ComodRivadavia", "A" * (codec.MAX_NAME_LEN + 1)),
    ("adjustment", "points", codec.MAX_ADJUST_POINTS, codec.MAX_ADJUST_POINTS + 1),
    ("adjustment", "points", -codec.MAX_ADJUST_POINTS, -codec.MAX_ADJUST_POINTS - 1),
    ("adjustment", "points", -1, 0),
    ("adjustment", "reason", "x" * codec.MAX_TEXT_LEN, "x" * (codec.MAX_TEXT_LEN + 1)),
    ("ticket", "occurred_at", "2099-12-31T23:59:59.999-23:59", "2100-01-01T00:00:00+23:59"),
    ("ticket", "occurred_at", "1970-01-01T23:59:00+23:59", "1970-01-01T23:58:59.999+23:59"),
    ("ticket", "occurred_at", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999Z"),
    ("ticket", "occurred_at", "1970-01-01T00:00:00-23:59", "1969-12-31T23:59:59.999-23:59"),
]


@pytest.mark.parametrize(("kind", "field", "ok", "bad"), BOUNDARIES, ids=lambda v: str(v)[:20])
def test_limits_are_the_same_on_both_sides(kind: str, field: str, ok: Any, bad: Any) -> None:
    base = json.loads((GOLDEN / "valid" / f"{kind}-basic.json").read_bytes())
    accepted = json.dumps({**base, field: ok}).encode()
    event = decode(kind, accepted)
    assert schema_errors(kind, accepted) == set()
    assert decode(kind, encode(event)) == event
    if bad is not None:
        rejected = json.dumps({**base, field: bad}).encode()
        with pytest.raises(InvalidEvent):
            decode(kind, rejected)
        assert schema_errors(kind, rejected)


# ------------------------------------------------------------------------ the schema files


@pytest.mark.parametrize("kind", KINDS)
def test_schema_file_is_a_valid_2020_12_schema(kind: str) -> None:
    schema = SCHEMAS[kind]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://customer-pulse.example/schemas/{SCHEMA_FILES[kind]}"
    assert schema["title"] and schema["description"]
    assert schema_path(kind).name == SCHEMA_FILES[kind]
    assert json.loads(schema_path(kind).read_text(encoding="utf-8")) == schema


def test_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match="'order'"):
        load_schema("order")


def _properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, sub in schema.get("properties", {}).items():
        found.append((name, sub))
        found += [(f"{name}.{n}", s) for n, s in _properties(sub.get("items", {}))]
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_every_property_is_described(kind: str) -> None:
    for name, sub in _properties(SCHEMAS[kind]):
        assert len(sub.get("description", "")) > 10, f"{kind}: {name} has no description"


@pytest.mark.parametrize("kind", KINDS)
def test_schema_examples_are_valid_for_both(kind: str) -> None:
    examples = SCHEMAS[kind]["examples"]
    assert examples
    for example in examples:
        raw = orjson.dumps(example)
        decode(kind, raw)
        assert schema_errors(kind, raw) == set()


def _required_fields(cls: type) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_required_and_properties_match_the_dataclass(kind: str) -> None:
    schema, cls = SCHEMAS[kind], DATACLASSES[kind]
    assert schema["required"] == _required_fields(cls)
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(cls)}
    if kind == events.PURCHASE:
        line = schema["properties"]["lines"]["items"]
        assert line["required"] == _required_fields(events.PurchaseLine)
        assert set(line["properties"]) == {f.name for f in dataclasses.fields(events.PurchaseLine)}


def test_schema_constants_are_the_codec_constants() -> None:
    p, t, s, r, c, a = (SCHEMAS[k] for k in (events.PURCHASE, events.TICKET, events.SURVEY,
                                             events.REDEMPTION, events.CUSTOMER,
                                             events.ADJUSTMENT))
    for schema in SCHEMAS.values():
        assert schema["$defs"]["id"]["maxLength"] == codec.MAX_ID_LEN
        assert schema["$defs"]["name"]["maxLength"] == codec.MAX_NAME_LEN
        assert schema["$defs"]["timestamp"] == p["$defs"]["timestamp"]
    lines = p["properties"]["lines"]
    assert lines["maxItems"] == codec.MAX_LINES
    assert lines["items"]["properties"]["quantity"]["maximum"] == codec.MAX_QUANTITY
    assert lines["items"]["properties"]["unit_price_minor"]["maximum"] == (
        codec.MAX_UNIT_PRICE_MINOR
    )
    assert p["properties"]["amount_minor"]["maximum"] == codec.MAX_AMOUNT_MINOR
    assert p["properties"]["store_id"]["maxLength"] == codec.MAX_NAME_LEN
    assert r["properties"]["points"]["maximum"] == codec.MAX_REDEEM_POINTS
    assert a["properties"]["points"]["maximum"] == codec.MAX_ADJUST_POINTS
    assert a["properties"]["points"]["minimum"] == -codec.MAX_ADJUST_POINTS
    assert a["$defs"]["text"]["maxLength"] == codec.MAX_TEXT_LEN
    assert s["properties"]["comment"]["maxLength"] == codec.MAX_COMMENT_LEN
    assert tuple(p["properties"]["kind"]["enum"]) == events.PURCHASE_KINDS
    assert tuple(t["properties"]["status"]["enum"]) == events.TICKET_STATUSES
    assert tuple(t["properties"]["priority"]["enum"]) == events.TICKET_PRIORITIES
    assert tuple(s["properties"]["kind"]["enum"]) == events.SURVEY_KINDS
    scales = {
        rule["if"]["properties"]["kind"]["const"]: (
            rule["then"]["properties"]["score"]["minimum"],
            rule["then"]["properties"]["score"]["maximum"],
        )
        for rule in s["allOf"]
    }
    assert scales == events.SURVEY_SCALES
    cp = c["properties"]
    assert tuple(cp["kind"]["enum"]) == events.CUSTOMER_KINDS
    assert tuple(cp["channels"]["propertyNames"]["enum"]) == events.CONSENT_CHANNELS
    assert cp["referred_by"]["maxLength"] == codec.MAX_ID_LEN
    assert cp["time_zone"]["maxLength"] == codec.MAX_NAME_LEN
    optional = ("referred_by", "birth_date", "time_zone", "channels")
    allowed = {
        rule["if"]["properties"]["kind"]["const"]: tuple(
            f for f in optional if rule["then"]["properties"].get(f) != {"type": "null"})
        for rule in c["allOf"]
    }
    assert allowed == events.CUSTOMER_FIELDS
    rf = SCHEMAS[events.REFERRAL]
    assert tuple(rf["properties"]["kind"]["enum"]) == events.REFERRAL_KINDS
    assert rf["$defs"]["text"]["maxLength"] == codec.MAX_TEXT_LEN
    assert rf["allOf"][0]["if"]["properties"]["kind"]["const"] == events.REFUSED


def test_every_known_time_zone_is_accepted_by_both() -> None:
    """The codec's zone list is a subset of what the schema's pattern allows; and the
    zones producers use most are in it on this host."""
    known = codec.known_time_zones()
    assert {"UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"} <= known
    assert "localtime" not in known and len(known) > 300
    pattern = re.compile(SCHEMAS["customer"]["properties"]["time_zone"]["pattern"])
    assert all(pattern.search(z) and len(z) <= codec.MAX_NAME_LEN for z in known)


@pytest.mark.parametrize("kind", events.CUSTOMER_KINDS)
def test_a_field_another_kind_carries_is_refused_by_both(kind: str) -> None:
    base = json.loads((GOLDEN / "valid" / "customer-basic.json").read_bytes())
    values = {"referred_by": "cust-000042", "birth_date": "--05-17", "time_zone": "UTC",
              "channels": {"email": True}}
    needs = {events.PROFILE_UPDATE: {"time_zone": "UTC"},
             events.CONSENT: {"channels": {"sms": False}}}
    for field, value in values.items():
        record = {k: v for k, v in base.items() if k not in values}
        record.update(kind=kind, **needs.get(kind, {}))
        record[field] = value
        raw = json.dumps(record).encode()
        if field in events.CUSTOMER_FIELDS[kind]:
            assert decode("customer", raw).kind == kind
            assert schema_errors("customer", raw) == set()
        else:
            with pytest.raises(InvalidEvent, match=f"customer.{field}: must be absent or null"):
                decode("customer", raw)
            assert schema_errors("customer", raw) == {(field,)}


# ------------------------------------------------------------------------ properties

_chars = st.characters(exclude_categories=["Cs"])  # lone surrogates are not Unicode text


def _nonblank(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_chars, min_size=1, max_size=max_size).filter(lambda s: bool(s.strip()))


ids, names = _nonblank(codec.MAX_ID_LEN), _nonblank(codec.MAX_NAME_LEN)
# From 1970-01-01T00:00:00Z (epoch ms 0) to the year 2099 *as written*: with a -23:59 offset,
# up to a day into 2100 in UTC.
_EDGE = (23 * 60 + 59) * 60_000
_first, _last = codec.MIN_TIME_MS, codec.MAX_TIME_MS + _EDGE - 1
_times = st.integers(_first, _last) | st.sampled_from(
    [
        _first,
        1,
        _EDGE,
        codec.MAX_TIME_MS - 1,
        codec.MAX_TIME_MS,
        _last,
    ]
)
_envelope = {
    "event_id": ids,
    "customer_id": ids,
    "occurred_at": _times,
    "source": names,
}
_lines = st.builds(
    events.PurchaseLine,
    sku=ids,
    category=names,
    quantity=st.integers(1, codec.MAX_QUANTITY),
    unit_price_minor=st.integers(0, codec.MAX_UNIT_PRICE_MINOR),
)
purchases = st.builds(
    events.Purchase,
    **_envelope,
    order_id=ids,
    channel=names,
    kind=st.sampled_from(events.PURCHASE_KINDS),
    amount_minor=st.integers(0, codec.MAX_AMOUNT_MINOR),
    currency=st.from_regex(r"[A-Z]{3}", fullmatch=True),
    lines=st.lists(_lines, max_size=4).map(tuple),
    store_id=st.none() | names,
)
tickets = st.builds(
    events.SupportTicket,
    **_envelope,
    ticket_id=ids,
    status=st.sampled_from(events.TICKET_STATUSES),
    priority=st.sampled_from(events.TICKET_PRIORITIES),
    channel=names,
    category=names,
    sentiment=st.none() | st.floats(-1.0, 1.0),
)
surveys = st.sampled_from(events.SURVEY_KINDS).flatmap(
    lambda kind: st.builds(
        events.Survey,
        **_envelope,
        survey_id=ids,
        kind=st.just(kind),
        score=st.integers(*events.SURVEY_SCALES[kind]),
        touchpoint=names,
        comment=st.none() | st.text(_chars, max_size=200),
    )
)
redemptions = st.builds(
    events.Redemption,
    **_envelope,
    reward_id=ids,
    points=st.integers(1, codec.MAX_REDEEM_POINTS),
)
_birth_dates = st.dates(
    __import__("datetime").date(codec.MIN_BIRTH_YEAR, 1, 1),
    __import__("datetime").date(codec.MAX_BIRTH_YEAR, 12, 31),
).flatmap(lambda d: st.sampled_from([d.isoformat(), "--" + d.isoformat()[5:]]))
_zones = st.sampled_from(sorted(codec.known_time_zones()))


@st.composite
def customer_events(draw: st.DrawFn) -> events.CustomerEvent:
    kind = draw(st.sampled_from(events.CUSTOMER_KINDS))
    customer_id = draw(ids)
    fields: dict[str, Any] = {}
    if kind == events.SIGNUP:
        fields["referred_by"] = draw(st.none() | ids.filter(lambda r: r != customer_id))
    if kind in (events.SIGNUP, events.PROFILE_UPDATE):
        fields["birth_date"] = draw(st.none() | _birth_dates)
        fields["time_zone"] = draw(st.none() | _zones)
        if kind == events.PROFILE_UPDATE and fields["birth_date"] is None:
            fields["time_zone"] = draw(_zones)
    if kind == events.CONSENT:
        chosen = draw(st.dictionaries(st.sampled_from(events.CONSENT_CHANNELS), st.booleans(),
                                      min_size=1))
        fields["channels"] = tuple(sorted(chosen.items()))
    return events.CustomerEvent(
        draw(ids), customer_id, draw(_times), draw(names), kind, **fields)  # type: ignore[arg-type]


adjustments = st.builds(
    events.Adjustment,
    **_envelope,
    points=st.integers(-codec.MAX_ADJUST_POINTS, codec.MAX_ADJUST_POINTS).filter(bool),
    operator=ids,
    reason=_nonblank(codec.MAX_TEXT_LEN),
)


@st.composite
def referrals(draw: st.DrawFn) -> events.Referral:
    kind = draw(st.sampled_from(events.REFERRAL_KINDS))
    referrer = draw(ids)
    referred = draw(ids.filter(lambda r: r != referrer))
    return events.Referral(
        draw(ids), referrer if kind in events.TO_REFERRER else referred, draw(_times),
        draw(names), kind, referrer, referred, draw(ids),  # type: ignore[arg-type]
        draw(_nonblank(codec.MAX_TEXT_LEN)) if kind == events.REFUSED else None)


any_event = st.one_of(purchases, tickets, surveys, redemptions, customer_events(),
                       adjustments, referrals())


@settings(deadline=None)
@given(any_event)
def test_generated_events_round_trip_and_satisfy_the_schema(event: events.Event) -> None:
    raw = encode(event)
    assert decode(event.event_kind, raw) == event
    assert schema_errors(event.event_kind, raw) == set()


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_chars, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=5,
)
_near_values = st.one_of(  # values close to the edges of the rules, where engines differ
    st.integers(-2, 12),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 3.0, 1.5, 1e23, True, False, "", " ", "\u3000"]),
    st.floats(-1.5, 1.5),
    st.from_regex(r"[A-Za-z]{2,4}\n?", fullmatch=True),
    st.from_regex(
        r"(19|20|21)\d\d-[01]\d-[0-3]\d[Tt ][0-2]\d:[0-6]\d:[0-6]\d(\.\d{1,10})?"
        r"([Zz]|[+-][0-2]\d:?[0-6]\d)?\n?",
        fullmatch=True,
    ),
)
_MISSING = object()


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    data=st.data(),
    value=st.just(_MISSING) | _near_values | _json_values,
)
def test_codec_and_schema_agree_on_any_field_value(kind: str, data: Any, value: Any) -> None:
    """Differential test: change one field of a valid event; both accept or both reject."""
    event = json.loads((GOLDEN / "valid" / f"{kind}-basic.json").read_bytes())
    fields = sorted(SCHEMAS[kind]["properties"])
    if kind == events.PURCHASE:
        fields += ["lines[0].sku", "lines[0].quantity", "lines[1].unit_price_minor"]
    field = data.draw(st.sampled_from(fields), label="field")
    target, key = event, field
    if field.startswith("lines["):
        target, key = event["lines"][int(field[6])], field.split(".")[1]
    if value is _MISSING:
        target.pop(key, None)
    else:
        target[key] = value
    raw = json.dumps(event, ensure_ascii=False).encode()
    try:
        decode(kind, raw)
        codec_ok = True
    except InvalidEvent as exc:
        if exc.reason == codec.UNKNOWN_TIME_ZONE:  # the codec's own rule: the zone database
            assert field == "time_zone" and schema_errors(kind, raw) == set(), exc
            return
        if exc.message.startswith(("referral.customer_id: a ",
                                   "referral.referred: must not be the referrer")):
            # the codec's own rules: fields compared with each other
            assert field in ("customer_id", "referrer", "referred"), exc
            assert schema_errors(kind, raw) == set(), exc
            return
        codec_ok = False
    assert codec_ok == (schema_errors(kind, raw) == set()), (field, value)



@given(st.integers(min_value=-30_610_224_000_000, max_value=253_402_300_799_999))
def test_format_time_is_rfc3339_utc_with_milliseconds(ms: int) -> None:
    # the fast path (cached date, arithmetic time of day) against datetime's own rendering,
    # for the years 1000-9999
    from datetime import UTC, datetime, timedelta

    expected = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    assert codec.format_time(ms) == expected


@given(st.integers(min_value=codec.MIN_TIME_MS, max_value=codec.MAX_TIME_MS - 1))
def test_format_time_parses_back(ms: int) -> None:
    assert codec.parse_time(codec.format_time(ms)) == ms



_UNICODE_DIGITS = {"3": "\u0663", "9": "\uff19"}  # Arabic-Indic 3, fullwidth 9: also \\d


@given(st.integers(1998, 2101), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
       st.integers(0, 61), st.integers(0, 61), st.none() | st.integers(0, 999),
       st.sets(st.integers(0, 22)))
def test_parse_time_utc_shortcut_agrees_with_the_general_path(
    y: int, mo: int, d: int, h: int, mi: int, s: int, ms: int | None, unicode_at: set[int]
) -> None:
    # "...Z" takes the shortcut (digits read off the bytes); the same instant written
    # "+00:00" takes datetime.fromisoformat: the same instant from both, or a rejection from
    # both. Digits other than 0-9 are not RFC 3339's DIGIT: rejected by both
    value = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    value += "" if ms is None else f".{ms:03d}"
    value = "".join(_UNICODE_DIGITS.get(c, c) if i in unicode_at else c
                    for i, c in enumerate(value))

    def parsed(v: str) -> int | None:
        try:
            return codec.parse_time(v)
        except codec.InvalidEvent:
            return None

    assert parsed(value + "Z") == parsed(value + "+00:00")
    if any(c in _UNICODE_DIGITS.values() for c in value):
        assert parsed(value + "Z") is None


def test_the_1970_floor_agrees_for_every_offset() -> None:
    """Every offset the wire format allows, at instants around 1970-01-01T00:00:00Z: the
    pattern (what a producer's validator runs) and the codec accept exactly the times that
    are not before the epoch in UTC and are written in 1970 or later."""
    from datetime import UTC, datetime, timedelta, timezone

    pattern = re.compile(SCHEMAS["purchase"]["$defs"]["timestamp"]["pattern"])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    checked = accepted = 0
    for minutes in range(-(23 * 60 + 59), 23 * 60 + 60):
        tz = timezone(timedelta(minutes=minutes))
        for ms in (-_EDGE - 60_000, -60_001, -60_000, -1, 0, 1, 59_999, 60_000, _EDGE):
            local = (epoch + timedelta(milliseconds=ms)).astimezone(tz)
            text = local.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            expected = ms >= 0 and local.year >= 1970
            try:
                codec_ok = codec.parse_time(text) == ms
            except InvalidEvent as exc:
                codec_ok = False
                assert "1970-01-01T00:00:00Z" in exc.message, exc.message
            assert codec_ok == expected, text
            assert bool(pattern.search(text)) == expected, text
            checked += 1
            accepted += expected
    assert checked == 2879 * 9 and 0 < accepted < checked
