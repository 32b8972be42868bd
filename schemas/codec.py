"""Decode and validate event records: bytes in, a typed event or an ``InvalidEvent`` out.

Every record passes through here, so there are two paths that enforce exactly the rules of
the JSON Schema files next door (``tests/unit/schemas/test_schemas.py`` runs one corpus through the
decoder and the schemas and checks they agree):

* the fast path, ``decode_fast``: a ``msgspec`` decoder per kind, into ``Struct`` types
  whose constraints (types, lengths, ranges, enums, at most ``MAX_LINES`` lines) mirror the
  rules below, then what those cannot express, in Python: no blank strings, the currency
  code, the survey score's range for its kind, the timestamp (``parse_time``), which
  fields a customer record's kind allows, a birth date, a known time zone. It only
  ever *accepts*: any record it has the least doubt about - msgspec raises, a Python check
  fails, an unknown field is present - goes to
* the slow path, ``decode_python``: ``orjson.loads`` and hand-written checks. It decides
  every rejection, with its reason and message, and accepts what the fast path is stricter
  about (``3.0`` for an integer, a duplicated key whose first value is wrong, extra fields).

Whatever the fast path accepts, the slow path accepts as an equal event
(``tests/unit/schemas/test_codec_fastpath.py`` checks both on simulated and mutated records).
Unknown extra fields are allowed (schemas evolve additively), on the slow path: msgspec
skips an unknown field's value without checking all that orjson checks (UTF-8, numbers
that overflow to infinity), so the fast path's types forbid them.

An ``InvalidEvent`` carries a short machine-readable ``reason`` (the label of the
``pulse_deadletter_total`` counter) and a message a person can act on.

Two rules of the ``customer`` kind are the codec's alone (a JSON Schema cannot state them,
the golden files mark them ``codec_only``): ``referred_by`` must not be the record's own
``customer_id``, and ``time_zone`` must be a zone of the IANA database known here
(``known_time_zones``: the ``tzdata`` package and the host's zoneinfo files, which Python's
``zoneinfo`` would load); a well-formed name that is not one is refused with its own reason,
``unknown_time_zone``, so a producer (or a host with an outdated database) can be told apart
from a broken record.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from datetime import date as date_type
from functools import lru_cache
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta

from schemas.errors import DomainError
from schemas.events import (
    ADJUSTMENT,
    CONSENT,
    CONSENT_CHANNELS,
    CUSTOMER,
    CUSTOMER_FIELDS,
    CUSTOMER_KINDS,
    PROFILE_UPDATE,
    PURCHASE,
    PURCHASE_KINDS,
    REDEMPTION,
    REFERRAL,
    REFERRAL_KINDS,
    REFUSED,
    SIGNUP,
    SURVEY,
    SURVEY_KINDS,
    SURVEY_SCALES,
    TICKET,
    TICKET_PRIORITIES,
    TICKET_STATUSES,
    TO_REFERRER,
    Adjustment,
    CustomerEvent,
    Event,
    Purchase,
    PurchaseLine,
    Redemption,
    Referral,
    SupportTicket,
    Survey,
)
from schemas.frozen import constructor
from schemas.times import format_time  # the wire's time format (re-exported for streams/)

MAX_RECORD_BYTES = 64 * 1024
MAX_ID_LEN = 128
MAX_NAME_LEN = 64
MAX_COMMENT_LEN = 4000
MAX_LINES = 500
MAX_QUANTITY = 10_000
MAX_UNIT_PRICE_MINOR = 10**10
MAX_AMOUNT_MINOR = 10**11
MAX_REDEEM_POINTS = 10**9
MAX_ADJUST_POINTS = 10**9  # an adjustment's points: -10**9 to 10**9, never 0
MAX_TEXT_LEN = 500  # free text a person writes (an adjustment's reason)
MIN_YEAR, MAX_YEAR = 1970, 2099  # the year as written (the schema's pattern can only see that)
MIN_TIME_MS = 0  # 1970-01-01T00:00:00Z: no instant before it, whatever the offset written
MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z; an offset can put an event up to a
# day after it (the year as written counts at that end)

# RFC 3339 date-time (§5.6 ABNF, the JSON Schema "date-time" format): full date, "T", time,
# offset required. Always used with fullmatch: "$" alone would accept a trailing newline.
# ASCII: RFC 3339's DIGIT is 0-9, where a str pattern's \d would take any Unicode digit.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)


def is_currency_code(c: str) -> bool:
    """Three letters A-Z (the schema's ``^[A-Z]{3}$``; a third of a regex fullmatch's cost)."""
    return len(c) == 3 and c.isascii() and c.isalpha() and c.isupper()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date_type(1970, 1, 1).toordinal()

# Reasons (dead-letter counter labels). Keep this set small and stable.
TOO_LARGE = "too_large"
INVALID_UTF8 = "invalid_utf8"
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
SCHEMA = "schema_violation"
UNKNOWN_TIME_ZONE = "unknown_time_zone"  # a well-formed name the IANA database lacks


class InvalidEvent(DomainError, ValueError):
    """A record that cannot become an event. Never retriable: the bytes will not change."""


def _fail(path: str, what: str, value: Any) -> InvalidEvent:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return InvalidEvent(SCHEMA, f"{path}: {what}, got {shown}")


_MISSING = object()


def _str(obj: dict[str, Any], key: str, path: str, maxlen: int, optional: bool = False) -> Any:
    v = obj.get(key, _MISSING)
    if type(v) is str and 0 < len(v) <= maxlen and not v.isspace():
        return v  # the common case, decided without building any message
    if v is _MISSING or (optional and v is None):
        if optional:
            return None
        raise InvalidEvent(SCHEMA, f"{path}.{key}: required field is missing")
    if type(v) is not str:
        raise _fail(f"{path}.{key}", "must be a string", v)
    if not v.strip():
        raise _fail(f"{path}.{key}", "must not be empty or blank", v)
    if len(v) > maxlen:
        raise _fail(f"{path}.{key}", f"must be at most {maxlen} characters", v)
    return v


def _int(obj: dict[str, Any], key: str, path: str, lo: int, hi: int) -> int:
    v = obj.get(key, _MISSING)
    if type(v) is int and lo <= v <= hi:
        return v
    if v is _MISSING:
        raise InvalidEvent(SCHEMA, f"{path}.{key}: required field is missing")
    t = type(v)
    if t is float and v.is_integer():  # JSON Schema's "integer" admits 3.0
        v = int(v)
    elif t is not int:
        raise _fail(f"{path}.{key}", "must be an integer", v)
    if v < lo or v > hi:
        raise _fail(f"{path}.{key}", f"must be between {lo} and {hi}", v)
    return int(v)


def _enum(obj: dict[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> Any:
    v = obj.get(key, _MISSING)
    if v is _MISSING:
        raise InvalidEvent(SCHEMA, f"{path}.{key}: required field is missing")
    if type(v) is not str or v not in allowed:
        raise _fail(f"{path}.{key}", f"must be one of {', '.join(allowed)}", v)
    return v


@lru_cache(maxsize=8192)
def _utc_day(date: str) -> int:
    """'YYYY-MM-DD' -> days since 1970-01-01; -1 when it is not a calendar date."""
    try:
        return date_type.fromisoformat(date).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return -1


def parse_time(value: Any, path: str = "occurred_at") -> int:
    """RFC 3339 timestamp with an offset -> epoch milliseconds (UTC)."""
    if type(value) is not str or not _RFC3339.fullmatch(value):
        raise _fail(path, "must be an RFC 3339 date-time with an offset", value)
    n = len(value)
    if value[-1] == "Z" and value[10] == "T" and (n == 20 or (n == 24 and value[19] == ".")):
        # Fast path for the common UTC forms (what `encode` writes): the date part through a
        # cache, the time of day by arithmetic. Anything else takes the general path below.
        day = _utc_day(value[:10])
        # the pattern matched, so the digits are ASCII: read them off the bytes
        b = value.encode()  # (48 = ord("0"), so 528 = 48 * 11, 53328 = 48 * 1111 ...)
        hh, mm, ss = b[11] * 10 + b[12] - 528, b[14] * 10 + b[15] - 528, b[17] * 10 + b[18] - 528
        year = b[0] * 1000 + b[1] * 100 + b[2] * 10 + b[3] - 53328
        ms = b[20] * 100 + b[21] * 10 + b[22] - 5328 if n == 24 else 0
        if day >= 0 and hh < 24 and mm < 60 and ss < 60 and MIN_YEAR <= year <= MAX_YEAR:
            return day * 86_400_000 + ((hh * 60 + mm) * 60 + ss) * 1000 + ms
    text = value
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac.group(1)) > 6:  # datetime keeps microseconds; drop the rest
        text = text[: frac.start(1) + 6] + text[frac.end(1) :]
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise _fail(path, "is not a valid calendar date-time", value) from None
    if dt.year > MAX_YEAR:
        raise _fail(path, f"must be between the years {MIN_YEAR} and {MAX_YEAR} as written",
                    value)
    delta = dt - _EPOCH
    ms = delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    if dt.year < MIN_YEAR or ms < MIN_TIME_MS:  # negative epoch ms: before 1970 in UTC
        raise _fail(path, f"must not be before 1970-01-01T00:00:00Z (the year as written is "
                          f"{MIN_YEAR}-{MAX_YEAR})", value)
    return ms


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def to_rfc3339(value: Any) -> Any:
    """A date ``YYYY-MM-DD`` -> midnight UTC; anything else unchanged (the codec judges it)."""
    if isinstance(value, str) and _DATE.fullmatch(value):
        return value + "T00:00:00Z"
    return value


def parse_when(text: str, path: str = "time") -> int:
    """A date (midnight UTC) or an RFC 3339 timestamp with offset -> epoch ms.
    Raises ``InvalidEvent`` with the codec's message."""
    return parse_time(to_rfc3339(text.strip()), path)


def _envelope(obj: dict[str, Any], kind: str) -> tuple[str, str, int, str]:
    e, c, s = obj.get("event_id"), obj.get("customer_id"), obj.get("source")
    if (type(e) is str and 0 < len(e) <= MAX_ID_LEN and not e.isspace()
            and type(c) is str and 0 < len(c) <= MAX_ID_LEN and not c.isspace()
            and type(s) is str and 0 < len(s) <= MAX_NAME_LEN and not s.isspace()
            and "occurred_at" in obj):
        return e, c, parse_time(obj["occurred_at"], f"{kind}.occurred_at"), s
    event_id = _str(obj, "event_id", kind, MAX_ID_LEN)
    customer_id = _str(obj, "customer_id", kind, MAX_ID_LEN)
    if "occurred_at" not in obj:
        raise InvalidEvent(SCHEMA, f"{kind}.occurred_at: required field is missing")
    occurred_at = parse_time(obj["occurred_at"], f"{kind}.occurred_at")
    source = _str(obj, "source", kind, MAX_NAME_LEN)
    return event_id, customer_id, occurred_at, source


# the decoded events, built through their slots (schemas.frozen): the decoder gives every field
_line = constructor(PurchaseLine)
_purchase_event = constructor(Purchase)
_ticket_event = constructor(SupportTicket)
_survey_event = constructor(Survey)


def _purchase(obj: dict[str, Any]) -> Purchase:
    p = PURCHASE
    event_id, customer_id, occurred_at, source = _envelope(obj, p)
    raw_lines = obj.get("lines", [])
    if type(raw_lines) is not list:
        raise _fail(f"{p}.lines", "must be an array", raw_lines)
    if len(raw_lines) > MAX_LINES:
        raise _fail(f"{p}.lines", f"must have at most {MAX_LINES} items", len(raw_lines))
    lines = []
    for i, ln in enumerate(raw_lines):
        if type(ln) is dict:  # the common case first, without building paths
            sku, cat = ln.get("sku"), ln.get("category")
            q, u = ln.get("quantity"), ln.get("unit_price_minor")
            if (type(sku) is str and 0 < len(sku) <= MAX_ID_LEN and not sku.isspace()
                    and type(cat) is str and 0 < len(cat) <= MAX_NAME_LEN and not cat.isspace()
                    and type(q) is int and 1 <= q <= MAX_QUANTITY
                    and type(u) is int and 0 <= u <= MAX_UNIT_PRICE_MINOR):
                lines.append(_line(sku, cat, q, u))
                continue
        lp = f"{p}.lines[{i}]"
        if type(ln) is not dict:
            raise _fail(lp, "must be an object", ln)
        lines.append(
            PurchaseLine(
                sku=_str(ln, "sku", lp, MAX_ID_LEN),
                category=_str(ln, "category", lp, MAX_NAME_LEN),
                quantity=_int(ln, "quantity", lp, 1, MAX_QUANTITY),
                unit_price_minor=_int(ln, "unit_price_minor", lp, 0, MAX_UNIT_PRICE_MINOR),
            )
        )
    currency = obj.get("currency", _MISSING)
    if currency is _MISSING:
        raise InvalidEvent(SCHEMA, f"{p}.currency: required field is missing")
    if type(currency) is not str or not is_currency_code(currency):
        raise _fail(f"{p}.currency", "must be a three-letter ISO-4217 code", currency)
    return _purchase_event(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=occurred_at,
        source=source,
        order_id=_str(obj, "order_id", p, MAX_ID_LEN),
        channel=_str(obj, "channel", p, MAX_NAME_LEN),
        kind=_enum(obj, "kind", p, PURCHASE_KINDS),
        amount_minor=_int(obj, "amount_minor", p, 0, MAX_AMOUNT_MINOR),
        currency=currency,
        lines=tuple(lines),
        store_id=_str(obj, "store_id", p, MAX_NAME_LEN, optional=True),
    )


def _ticket(obj: dict[str, Any]) -> SupportTicket:
    t = TICKET
    event_id, customer_id, occurred_at, source = _envelope(obj, t)
    sentiment = obj.get("sentiment")
    if sentiment is not None:
        if type(sentiment) not in (int, float):
            raise _fail(f"{t}.sentiment", "must be a number", sentiment)
        if not -1.0 <= sentiment <= 1.0:
            raise _fail(f"{t}.sentiment", "must be between -1 and 1", sentiment)
        sentiment = float(sentiment)
    return _ticket_event(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=occurred_at,
        source=source,
        ticket_id=_str(obj, "ticket_id", t, MAX_ID_LEN),
        status=_enum(obj, "status", t, TICKET_STATUSES),
        priority=_enum(obj, "priority", t, TICKET_PRIORITIES),
        channel=_str(obj, "channel", t, MAX_NAME_LEN),
        category=_str(obj, "category", t, MAX_NAME_LEN),
        sentiment=sentiment,
    )


def _survey(obj: dict[str, Any]) -> Survey:
    s = SURVEY
    event_id, customer_id, occurred_at, source = _envelope(obj, s)
    kind = _enum(obj, "kind", s, SURVEY_KINDS)
    lo, hi = SURVEY_SCALES[kind]
    return _survey_event(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=occurred_at,
        source=source,
        survey_id=_str(obj, "survey_id", s, MAX_ID_LEN),
        kind=kind,
        score=_int(obj, "score", s, lo, hi),
        touchpoint=_str(obj, "touchpoint", s, MAX_NAME_LEN),
        comment=_comment(obj),
    )


def _comment(obj: dict[str, Any]) -> str | None:
    c = obj.get("comment")
    if c is None:
        return None
    if type(c) is not str:
        raise _fail("survey.comment", "must be a string", c)
    if len(c) > MAX_COMMENT_LEN:
        raise _fail("survey.comment", f"must be at most {MAX_COMMENT_LEN} characters", len(c))
    return c


def _redemption(obj: dict[str, Any]) -> Redemption:
    r = REDEMPTION
    event_id, customer_id, occurred_at, source = _envelope(obj, r)
    return Redemption(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=occurred_at,
        source=source,
        reward_id=_str(obj, "reward_id", r, MAX_ID_LEN),
        points=_int(obj, "points", r, 1, MAX_REDEEM_POINTS),
    )


# -- customer records (signup, profile_update, consent, erasure_requested)

MIN_BIRTH_YEAR, MAX_BIRTH_YEAR = 1900, 2099
# "--MM-DD" or "YYYY-MM-DD"; the calendar check is ``is_birth_date``'s
_BIRTH_DATE = re.compile(r"(?:--|(\d{4})-)(\d{2})-(\d{2})", re.ASCII)
# an IANA zone name: ASCII letters, digits, "_", "+", "-", in "/"-separated parts
_TIME_ZONE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*", re.ASCII)
_NOT_ZONES = frozenset({"localtime", "posixrules"})  # files of a zoneinfo directory, no zones


@lru_cache(maxsize=1)
def known_time_zones() -> frozenset[str]:
    """The IANA zone names ``time_zone`` may take: ``zoneinfo.available_timezones()`` (the
    ``tzdata`` package and the host's zoneinfo files), read once, less the host's own
    ``localtime`` link and anything that is not a well-formed name of at most
    ``MAX_NAME_LEN`` characters."""
    return frozenset(z for z in zoneinfo.available_timezones()
                     if z not in _NOT_ZONES and len(z) <= MAX_NAME_LEN and _TIME_ZONE.fullmatch(z))


def is_birth_date(value: str) -> bool:
    """``--MM-DD`` (any day some year has: ``--02-29`` too) or ``YYYY-MM-DD`` (a real date,
    years ``MIN_BIRTH_YEAR``-``MAX_BIRTH_YEAR`` as written)."""
    m = _BIRTH_DATE.fullmatch(value)
    if m is None:
        return False
    year = 2000 if m[1] is None else int(m[1])  # 2000: a leap year, for a month-day
    if not MIN_BIRTH_YEAR <= year <= MAX_BIRTH_YEAR:
        return False
    try:
        date_type(year, int(m[2]), int(m[3]))
    except ValueError:
        return False
    return True


def _birth_date(value: Any) -> str | None:
    if value is None or (type(value) is str and is_birth_date(value)):
        return value
    raise _fail(f"{CUSTOMER}.birth_date", f"must be a month-day --MM-DD or a date YYYY-MM-DD "
                f"(a real calendar date, years {MIN_BIRTH_YEAR}-{MAX_BIRTH_YEAR})", value)


def _time_zone(value: Any) -> str | None:
    if value is None or (type(value) is str and value in known_time_zones()):
        return value
    if type(value) is not str or len(value) > MAX_NAME_LEN or not _TIME_ZONE.fullmatch(value):
        raise _fail(f"{CUSTOMER}.time_zone", "must be an IANA time zone name such as "
                    f"Europe/Paris (at most {MAX_NAME_LEN} characters)", value)
    raise InvalidEvent(UNKNOWN_TIME_ZONE, f"{CUSTOMER}.time_zone: {value!r} is not a time zone "
                       "of the IANA database known here (e.g. Europe/Paris, America/New_York)")


def _channels(value: Any) -> tuple[tuple[str, bool], ...]:
    path = f"{CUSTOMER}.channels"
    if type(value) is not dict:
        raise _fail(path, f"must be an object of marketing channels ({', '.join(CONSENT_CHANNELS)}"
                    ") to true (opted in) or false (opted out)", value)
    if not value:
        raise _fail(path, "must name at least one channel", value)
    for name, opted_in in value.items():
        if name not in CONSENT_CHANNELS:
            raise _fail(path, f"unknown channel: the channels are {', '.join(CONSENT_CHANNELS)}",
                        name)
        if type(opted_in) is not bool:
            raise _fail(f"{path}.{name}", "must be true (opted in) or false (opted out)",
                        opted_in)
    return tuple(sorted(value.items()))


_OPTIONAL_CUSTOMER_FIELDS = ("referred_by", "birth_date", "time_zone", "channels")
_customer_event = constructor(CustomerEvent)


def _customer(obj: dict[str, Any]) -> CustomerEvent:
    c = CUSTOMER
    event_id, customer_id, occurred_at, source = _envelope(obj, c)
    kind = _enum(obj, "kind", c, CUSTOMER_KINDS)
    allowed = CUSTOMER_FIELDS[kind]
    for name in _OPTIONAL_CUSTOMER_FIELDS:
        if name not in allowed and obj.get(name) is not None:
            raise _fail(f"{c}.{name}", f"must be absent or null when kind is {kind}", obj[name])
    referred_by = _str(obj, "referred_by", c, MAX_ID_LEN, optional=True)
    if referred_by is not None and referred_by == customer_id:
        raise _fail(f"{c}.referred_by", "must not be the customer itself", referred_by)
    birth_date = _birth_date(obj.get("birth_date"))
    time_zone = _time_zone(obj.get("time_zone"))
    if kind == PROFILE_UPDATE and birth_date is None and time_zone is None:
        raise InvalidEvent(SCHEMA, f"{c}: a profile_update needs birth_date or time_zone")
    channels: tuple[tuple[str, bool], ...] = ()
    if kind == CONSENT:
        if obj.get("channels") is None:
            raise InvalidEvent(SCHEMA, f"{c}.channels: required field is missing")
        channels = _channels(obj["channels"])
    return _customer_event(event_id, customer_id, occurred_at, source, kind, referred_by,
                           birth_date, time_zone, channels)
def _adjustment(obj: dict[str, Any]) -> Adjustment:
    a = ADJUSTMENT
    envelope = _envelope(obj, a)  # event_id, customer_id, occurred_at, source: in field order
    points = _int(obj, "points", a, -MAX_ADJUST_POINTS, MAX_ADJUST_POINTS)
    if points == 0:
        raise _fail(f"{a}.points", "must not be 0", obj["points"])
    return Adjustment(*envelope, points, _str(obj, "operator", a, MAX_ID_LEN),
                      _str(obj, "reason", a, MAX_TEXT_LEN))



_referral_event = constructor(Referral)


def _referral_rules(customer_id: str, kind: str, referrer: str, referred: str,
                    reason: str | None) -> str | None:
    """What the schema cannot say about a referral record: None, or the problem."""
    if referrer == referred:
        return "referral.referred: must not be the referrer"
    if customer_id != (referrer if kind in TO_REFERRER else referred):
        who = "referrer" if kind in TO_REFERRER else "referred"
        return f"referral.customer_id: a {kind} record is keyed by the {who}"
    if (reason is not None) != (kind == REFUSED):
        return "referral.reason: required for refused, absent or null otherwise"
    return None


def _referral(obj: dict[str, Any]) -> Referral:
    r = REFERRAL
    event_id, customer_id, occurred_at, source = _envelope(obj, r)
    kind = _enum(obj, "kind", r, REFERRAL_KINDS)
    referrer = _str(obj, "referrer", r, MAX_ID_LEN)
    referred = _str(obj, "referred", r, MAX_ID_LEN)
    order_id = _str(obj, "order_id", r, MAX_ID_LEN)
    reason = _str(obj, "reason", r, MAX_TEXT_LEN, optional=True)
    problem = _referral_rules(customer_id, kind, referrer, referred, reason)
    if problem is not None:
        raise InvalidEvent(SCHEMA, problem)
    return _referral_event(event_id, customer_id, occurred_at, source, kind, referrer,
                           referred, order_id, reason)


_BUILDERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    PURCHASE: _purchase,
    TICKET: _ticket,
    SURVEY: _survey,
    REDEMPTION: _redemption,
    CUSTOMER: _customer,
    ADJUSTMENT: _adjustment,
    REFERRAL: _referral,
}


def decode_python(kind: str, data: bytes | None, max_bytes: int = MAX_RECORD_BYTES) -> Event:
    """``decode`` without the fast path: orjson and the hand-written checks above."""
    if data is None:
        raise InvalidEvent(MALFORMED_JSON, "record has no value (tombstone)")
    if len(data) > max_bytes:
        raise InvalidEvent(TOO_LARGE, f"record is {len(data)} bytes, limit is {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "utf-8" in msg.lower() or "surrogate" in msg.lower():
            raise InvalidEvent(INVALID_UTF8, f"record is not valid UTF-8: {msg}") from None
        raise InvalidEvent(MALFORMED_JSON, f"record is not valid JSON: {msg}") from None
    if type(obj) is not dict:
        raise InvalidEvent(NOT_AN_OBJECT, f"record must be a JSON object, got {type(obj).__name__}")
    return _BUILDERS[kind](obj)


# ------------------------------------------------------------------------ the fast path
# Struct types mirroring the rules above: a record they take, with the Python checks after
# them, is one the slow path accepts as the same event. Unknown fields are forbidden here
# (allowed on the slow path): msgspec skips an unknown value without validating its UTF-8 or
# rejecting numbers that overflow to infinity, as orjson does.

_Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN)]
_Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LEN)]
_SCORE_MIN = min(lo for lo, _ in SURVEY_SCALES.values())
_SCORE_MAX = max(hi for _, hi in SURVEY_SCALES.values())


class _Wire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    event_id: _Id
    customer_id: _Id
    occurred_at: str  # parse_time decides
    source: _Name


class _WireLine(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    sku: _Id
    category: _Name
    quantity: Annotated[int, Meta(ge=1, le=MAX_QUANTITY)]
    unit_price_minor: Annotated[int, Meta(ge=0, le=MAX_UNIT_PRICE_MINOR)]


class _WirePurchase(_Wire):
    order_id: _Id
    channel: _Name
    kind: Literal["purchase", "refund"]  # PURCHASE_KINDS
    amount_minor: Annotated[int, Meta(ge=0, le=MAX_AMOUNT_MINOR)]
    currency: str  # is_currency_code decides (msgspec's pattern is a re.search: "$" takes "\n")
    lines: Annotated[tuple[_WireLine, ...], Meta(max_length=MAX_LINES)] = ()
    store_id: _Name | None = None


class _WireTicket(_Wire):
    ticket_id: _Id
    status: Literal["opened", "responded", "resolved", "reopened", "closed"]  # TICKET_STATUSES
    priority: Literal["low", "normal", "high", "urgent"]  # TICKET_PRIORITIES
    channel: _Name
    category: _Name
    sentiment: Annotated[float, Meta(ge=-1.0, le=1.0)] | None = None  # an int becomes a float


class _WireSurvey(_Wire):
    survey_id: _Id
    kind: Literal["nps", "csat", "ces"]  # SURVEY_KINDS
    score: Annotated[int, Meta(ge=_SCORE_MIN, le=_SCORE_MAX)]  # the kind's scale: in Python
    touchpoint: _Name
    comment: Annotated[str, Meta(max_length=MAX_COMMENT_LEN)] | None = None


class _WireRedemption(_Wire):
    reward_id: _Id
    points: Annotated[int, Meta(ge=1, le=MAX_REDEEM_POINTS)]


class _WireCustomer(_Wire):
    kind: Literal["signup", "profile_update", "consent", "erasure_requested"]  # CUSTOMER_KINDS
    referred_by: _Id | None = None
    birth_date: str | None = None  # is_birth_date decides
    time_zone: str | None = None  # known_time_zones decides
    channels: dict[Literal["email", "sms", "push", "post", "phone"], bool] | None = None
class _WireAdjustment(_Wire):
    points: Annotated[int, Meta(ge=-MAX_ADJUST_POINTS, le=MAX_ADJUST_POINTS)]  # != 0: Python
    operator: _Id
    reason: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_LEN)]


_purchase_wire = msgspec.json.Decoder(_WirePurchase).decode
_ticket_wire = msgspec.json.Decoder(_WireTicket).decode
_survey_wire = msgspec.json.Decoder(_WireSurvey).decode
_redemption_wire = msgspec.json.Decoder(_WireRedemption).decode
_redemption_event = constructor(Redemption)
_customer_wire = msgspec.json.Decoder(_WireCustomer).decode
_adjustment_wire = msgspec.json.Decoder(_WireAdjustment).decode
_adjustment_event = constructor(Adjustment)


def _fast_purchase(data: bytes) -> Purchase | None:
    w = _purchase_wire(data)
    store_id = w.store_id
    if (w.event_id.isspace() or w.customer_id.isspace() or w.source.isspace()
            or w.order_id.isspace() or w.channel.isspace() or not is_currency_code(w.currency)
            or (store_id is not None and store_id.isspace())):
        return None
    lines = []
    for ln in w.lines:
        sku, category = ln.sku, ln.category
        if sku.isspace() or category.isspace():
            return None
        lines.append(_line(sku, category, ln.quantity, ln.unit_price_minor))
    return _purchase_event(
        w.event_id, w.customer_id, parse_time(w.occurred_at), w.source, w.order_id, w.channel,
        w.kind, w.amount_minor, w.currency, tuple(lines), store_id)


def _fast_ticket(data: bytes) -> SupportTicket | None:
    w = _ticket_wire(data)
    if (w.event_id.isspace() or w.customer_id.isspace() or w.source.isspace()
            or w.ticket_id.isspace() or w.channel.isspace() or w.category.isspace()):
        return None
    return _ticket_event(
        w.event_id, w.customer_id, parse_time(w.occurred_at), w.source, w.ticket_id, w.status,
        w.priority, w.channel, w.category, w.sentiment)


def _fast_survey(data: bytes) -> Survey | None:
    w = _survey_wire(data)
    lo, hi = SURVEY_SCALES[w.kind]
    if (w.event_id.isspace() or w.customer_id.isspace() or w.source.isspace()
            or w.survey_id.isspace() or w.touchpoint.isspace() or not lo <= w.score <= hi):
        return None
    return _survey_event(
        w.event_id, w.customer_id, parse_time(w.occurred_at), w.source, w.survey_id, w.kind,
        w.score, w.touchpoint, w.comment)


def _fast_redemption(data: bytes) -> Redemption | None:
    w = _redemption_wire(data)
    if (w.event_id.isspace() or w.customer_id.isspace() or w.source.isspace()
            or w.reward_id.isspace()):
        return None
    return _redemption_event(
        w.event_id, w.customer_id, parse_time(w.occurred_at), w.source, w.reward_id, w.points)


def _fast_customer(data: bytes) -> CustomerEvent | None:
    w = _customer_wire(data)
    kind, rb, bd, tz, ch = w.kind, w.referred_by, w.birth_date, w.time_zone, w.channels
    if w.event_id.isspace() or w.customer_id.isspace() or w.source.isspace():
        return None
    if kind == SIGNUP:
        if ch is not None or (rb is not None and (rb.isspace() or rb == w.customer_id)):
            return None
    elif kind == PROFILE_UPDATE:
        if rb is not None or ch is not None or (bd is None and tz is None):
            return None
    elif kind == CONSENT:
        if rb is not None or bd is not None or tz is not None or not ch:
            return None
    elif rb is not None or bd is not None or tz is not None or ch is not None:
        return None
    if (bd is not None and not is_birth_date(bd)) or (
            tz is not None and tz not in known_time_zones()):
        return None
    return _customer_event(
        w.event_id, w.customer_id, parse_time(w.occurred_at), w.source, kind, rb, bd, tz,
        tuple(sorted(ch.items())) if ch else ())
def _fast_adjustment(data: bytes) -> Adjustment | None:
    w = _adjustment_wire(data)
    if (w.event_id.isspace() or w.customer_id.isspace() or w.source.isspace()
            or w.operator.isspace() or w.reason.isspace() or w.points == 0):
        return None
    return _adjustment_event(
        w.event_id, w.customer_id, parse_time(w.occurred_at), w.source, w.points, w.operator,
        w.reason)


_FAST: dict[str, Callable[[bytes], Event | None]] = {
    PURCHASE: _fast_purchase,
    TICKET: _fast_ticket,
    SURVEY: _fast_survey,
    REDEMPTION: _fast_redemption,
    CUSTOMER: _fast_customer,
    ADJUSTMENT: _fast_adjustment,
}


def decode_fast(kind: str, data: bytes) -> Event | None:
    """The fast path alone: the event, or None where ``decode_python`` must decide (which
    includes every record that is invalid, and an unknown kind). Never raises."""
    fast = _FAST.get(kind)
    if fast is None:
        return None
    try:
        return fast(data)
    except (ValueError, RecursionError):
        # all ValueErrors: msgspec's DecodeError and ValidationError, UnicodeDecodeError
        # (invalid UTF-8 inside a field's string), InvalidEvent (from parse_time)
        return None


class _FastPathGate:
    """Whether to try the fast path for a kind. A producer that adds a field to every record
    (schemas evolve additively) makes the fast path decline records the slow path accepts:
    trying first would cost each of them ~30% more than the slow path alone. After
    ``MISSES`` valid records in a row that it declined, the kind skips the fast path for
    ``PAUSE`` records, then tries again. Only the speed depends on this: both paths give
    the same event or the same rejection."""

    MISSES = 32
    PAUSE = 4096

    def __init__(self) -> None:
        self.misses: dict[str, int] = {}  # only kinds with misses: empty in the common case
        self.paused: dict[str, int] = {}  # only paused kinds

    def open(self, kind: str) -> bool:
        left = self.paused.get(kind)
        if left is None:
            return True
        if left <= 1:
            del self.paused[kind]
        else:
            self.paused[kind] = left - 1
        return False

    def hit(self, kind: str) -> None:
        self.misses.pop(kind, None)

    def missed(self, kind: str) -> None:
        n = self.misses.get(kind, 0) + 1
        if n >= self.MISSES:
            self.paused[kind] = self.PAUSE
            del self.misses[kind]
        else:
            self.misses[kind] = n


_gate = _FastPathGate()


def decode(kind: str, data: bytes | None, max_bytes: int = MAX_RECORD_BYTES) -> Event:
    """Validate one record of the given event kind. Raises ``InvalidEvent``."""
    gate = _gate
    if data is None or len(data) > max_bytes or (gate.paused and not gate.open(kind)):
        return decode_python(kind, data, max_bytes)
    event = decode_fast(kind, data)
    if event is not None:
        if gate.misses:
            gate.hit(kind)
        return event
    event = decode_python(kind, data, max_bytes)  # raises for an invalid record
    gate.missed(kind)  # a valid record the fast path declined (an unknown field, 3.0...)
    return event


def decode_obj(kind: str, obj: Any) -> Event:
    """Validate an already-parsed JSON value (used by replay and tests)."""
    if type(obj) is not dict:
        raise InvalidEvent(NOT_AN_OBJECT, f"record must be a JSON object, got {type(obj).__name__}")
    return _BUILDERS[kind](obj)


_EDGE_OFFSET = timedelta(hours=23, minutes=59)  # the largest offset the wire format allows


def _wire_time(ms: int) -> str:
    """``format_time``, except within a day after the upper year bound: an instant in 2100 UTC
    may have been written in 2099 with an offset, and must be written so again."""
    if ms < MAX_TIME_MS:
        return format_time(ms)
    tz = timezone(-_EDGE_OFFSET)
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz).isoformat(timespec="milliseconds")


def encode(event: Event) -> bytes:
    """Typed event -> wire JSON (the inverse of ``decode``)."""
    return orjson.dumps(wire_dict(event))


def wire_dict(event: Event) -> dict[str, Any]:
    """Typed event -> the JSON object ``encode`` writes."""
    d: dict[str, Any] = {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "occurred_at": _wire_time(event.occurred_at),
        "source": event.source,
    }
    if isinstance(event, Purchase):
        d.update(
            order_id=event.order_id,
            channel=event.channel,
            kind=event.kind,
            amount_minor=event.amount_minor,
            currency=event.currency,
            lines=[
                {
                    "sku": ln.sku,
                    "category": ln.category,
                    "quantity": ln.quantity,
                    "unit_price_minor": ln.unit_price_minor,
                }
                for ln in event.lines
            ],
        )
        if event.store_id is not None:
            d["store_id"] = event.store_id
    elif isinstance(event, SupportTicket):
        d.update(
            ticket_id=event.ticket_id,
            status=event.status,
            priority=event.priority,
            channel=event.channel,
            category=event.category,
        )
        if event.sentiment is not None:
            d["sentiment"] = event.sentiment
    elif isinstance(event, Survey):
        d.update(survey_id=event.survey_id, kind=event.kind, score=event.score,
                 touchpoint=event.touchpoint)
        if event.comment is not None:
            d["comment"] = event.comment
    elif isinstance(event, Adjustment):
        d.update(points=event.points, operator=event.operator, reason=event.reason)
    elif isinstance(event, Redemption):
        d.update(reward_id=event.reward_id, points=event.points)
    elif isinstance(event, Referral):
        d.update(kind=event.kind, referrer=event.referrer, referred=event.referred,
                 order_id=event.order_id)
        if event.reason is not None:
            d["reason"] = event.reason
    else:
        d["kind"] = event.kind
        for name in ("referred_by", "birth_date", "time_zone"):
            if (value := getattr(event, name)) is not None:
                d[name] = value
        if event.channels:
            d["channels"] = dict(event.channels)
    return d
