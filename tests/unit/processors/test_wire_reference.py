"""``processors.wire`` against straightforward reference codecs, on random states.

``wire.dumps`` (and ``loyalty.to_wire``) are written for speed: straight-line, records
flattened in bulk. The references here are the plain versions they replaced (a loop over
``wire``'s field tables, ``itertools.chain.from_iterable``): the bytes must be the same for
any state, including ones no history produces (zeros, None, -0.0, huge ints, every field
at once). ``wire.loads`` is checked the same way, on valid bytes and on malformed ones (the
same ``WireError`` message, or the same state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from itertools import chain
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from processors import profile, wire
from processors.churn import wire as churn_wire
from processors.churn.records import LEVELS, ChurnState
from processors.engagement import record as engagement_record
from processors.engagement.record import WIRE_KINDS, WIRE_SEGMENTS, Engagement
from processors.errors import WireError
from processors.loyalty import wire as loyalty_wire
from processors.loyalty.records import LinePoints, LoyaltyState, OrderPoints, SurveyMark
from processors.profile import Consent, Profile
from processors.referral import record as referral_record
from processors.state import Answer, CustomerState, DayBucket, OpenTicket, Seen
from schemas.events import CONSENT_CHANNELS

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the references -----------------------------------------------------------------------------


def ref_loyalty(ly: LoyaltyState) -> list[Any]:
    orders: list[int] = []
    for o in ly.orders:
        orders += o[:6]
        orders.append(len(o.lines))
        orders += chain.from_iterable(o.lines)
    out = [ly.balance, ly.lifetime_points, ly.tier, ly.tier_since, ly.qualified_until,
           ly.last_activity_at, int(ly.noticed), orders,
           list(chain.from_iterable(ly.surveys))]
    return [*out, list(ly.expired)] if ly.expired else out


def ref_dumps(state: CustomerState) -> bytes:
    out: dict[str, Any] = {"v": wire.VERSION, "c": state.customer_id}
    for name, key in wire._OPTIONALS.items():
        if getattr(state, name) is not None:
            out[key] = getattr(state, name)
    for name, key in wire._COUNTERS.items():
        if getattr(state, name):
            out[key] = getattr(state, name)
    if state.last_sentiment is not None:
        out["ls"] = state.last_sentiment
    if any(state.kind_max):  # the fifth (customer records), sixth (referral records) when set
        km = state.kind_max
        out["km"] = list(km if km[5] else km[:5] if km[4] else km[:4])
    for key, records in (("d", state.days), ("s", state.seen), ("cs", state.csat),
                         ("ce", state.ces)):
        if records:
            out[key] = list(chain.from_iterable(records))
    if state.open_tickets:
        out["ot"] = [[o.ticket_id, o.opened_at, o.priority, int(o.responded)]
                     for o in state.open_tickets]
    if state.loyalty is not None:
        out["ly"] = ref_loyalty(state.loyalty)
    if state.churn is not None:
        out["ch"] = churn_wire.to_wire(state.churn, state.max_event_at)
    if state.engagement is not None:
        e = state.engagement
        seg = 0 if e.segment is None else WIRE_SEGMENTS.index(e.segment) + 1
        kind = 0 if e.last_message is None else WIRE_KINDS.index(e.last_message) + 1
        out["en"] = [seg, *e[1:10], kind, *([e.nudge_sent_for] if e.nudge_sent_for else [])]
    if state.referral is not None:
        r = state.referral
        out["ref"] = [r.status, r.order_id, r.at, r.paid, r.refunded, r.credited, r.rewarded,
                      r.clawed, list(chain.from_iterable(r.recent))]
    if state.profile is not None:
        p = state.profile
        consent: list[int] = []
        for at in sorted({c.at for c in p.consent}):  # per time: which channels, which in
            named = [CONSENT_CHANNELS.index(c.channel) for c in p.consent if c.at == at]
            opted = [CONSENT_CHANNELS.index(c.channel) for c in p.consent
                     if c.at == at and c.opted_in]
            consent += [at, sum(1 << i for i in named), sum(1 << i for i in opted)]
        out["pf"] = [p.signup_at, p.referred_by, p.birth_date, p.birth_date_at, p.time_zone,
                     p.time_zone_at, consent]
    return orjson.dumps(out)


def _int(value: Any, key: str) -> int:
    if type(value) is not int:
        raise WireError(f"state field {key!r}: expected an integer, got {value!r}")
    return value


def _records(value: Any, key: str, width: int, make: Callable[..., Any]) -> tuple[Any, ...]:
    if type(value) is not list or len(value) % width:
        raise WireError(f"state field {key!r}: expected a flat list of {width}-tuples")
    if not all(type(x) is int for x in value):
        raise WireError(f"state field {key!r}: expected integers, got {value!r:.80}")
    return tuple(make(*value[i:i + width]) for i in range(0, len(value), width))


def _ticket(value: Any) -> OpenTicket:
    if (type(value) is not list or len(value) != 4 or type(value[0]) is not str
            or type(value[2]) is not str or value[3] not in (0, 1)):
        raise WireError(f"state field 'ot': malformed open ticket {value!r}")
    return OpenTicket(value[0], _int(value[1], "ot"), value[2], bool(value[3]))


def ref_loads(data: bytes) -> CustomerState:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"state is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise WireError("state must be a JSON object")
    if (v := obj.get("v")) != wire.VERSION:
        raise WireError(f"state version {v!r} is not supported (expected {wire.VERSION})")
    unknown = set(obj) - wire._KNOWN
    if unknown:
        raise WireError(f"state has unknown fields {sorted(unknown)}")
    if type(obj.get("c")) is not str:
        raise WireError("state field 'c' (customer_id) must be a string")
    kwargs: dict[str, Any] = {"customer_id": obj["c"]}
    for name, key in wire._SCALARS.items():
        if key in obj:
            kwargs[name] = _int(obj[key], key)
    if "ls" in obj:
        if type(obj["ls"]) is not float:
            raise WireError(f"state field 'ls': expected a float, got {obj['ls']!r}")
        kwargs["last_sentiment"] = obj["ls"]
    if "d" in obj:
        kwargs["days"] = _records(obj["d"], "d", 4, DayBucket)
    if "s" in obj:
        kwargs["seen"] = _records(obj["s"], "s", 3, Seen)
    if "km" in obj:
        km = obj["km"]
        if type(km) is not list or len(km) not in (4, 5, 6) or not all(type(x) is int for x in km):
            raise WireError(f"state field 'km': expected 4 to 6 integers, got {km!r:.80}")
        kwargs["kind_max"] = tuple(km) + (0,) * (6 - len(km))
    if "cs" in obj:
        kwargs["csat"] = _records(obj["cs"], "cs", 2, Answer)
    if "ce" in obj:
        kwargs["ces"] = _records(obj["ce"], "ce", 2, Answer)
    if "ot" in obj:
        if type(obj["ot"]) is not list:
            raise WireError("state field 'ot': expected a list")
        kwargs["open_tickets"] = tuple(_ticket(o) for o in obj["ot"])
    if "ly" in obj:
        kwargs["loyalty"] = loyalty_wire.from_wire(obj["ly"])
    if "ch" in obj:
        kwargs["churn"] = churn_wire.from_wire(obj["ch"], kwargs.get("max_event_at"))
    if "en" in obj:  # (its own checks: tests/unit/processors/engagement/test_record.py)
        kwargs["engagement"] = engagement_record.from_wire(obj["en"])
    if "ref" in obj:  # (its own checks: tests/unit/processors/referral/test_record.py)
        kwargs["referral"] = referral_record.from_wire(obj["ref"])
    if "pf" in obj:
        kwargs["profile"] = profile.from_wire(obj["pf"])  # (its own checks: test_profile.py)
    return CustomerState(**kwargs)


# -- random states ------------------------------------------------------------------------------

# zeros and small values often (defaults are left out), times and sums within +-2**53 (the
# churn record stores differences of times), dedup keys up to 2**64 - 1
INTS = st.one_of(st.just(0), st.integers(-3, 3), st.integers(-(2**53), 2**53))
OPT = st.none() | INTS
KEYS = st.integers(0, 2**64 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def _few(strategy: st.SearchStrategy[Any], n: int = 6) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(strategy, max_size=n).map(tuple)


LOYALTY = st.builds(
    LoyaltyState, INTS, INTS, st.integers(0, 5), INTS, OPT, INTS, st.booleans(),
    _few(st.builds(OrderPoints, INTS, INTS, INTS, INTS, INTS, INTS,
                   _few(st.builds(LinePoints, INTS, INTS, INTS, INTS), 4))),
    _few(st.builds(SurveyMark, INTS, INTS)), st.just(()) | st.tuples(INTS, INTS, INTS))
CHURN = st.builds(
    ChurnState, st.floats(0, 1), st.sampled_from(LEVELS), INTS, INTS, INTS, INTS,
    st.booleans(), INTS, INTS, INTS, st.booleans()).map(  # level_since <= at, as ever
        lambda ch: replace(ch, level_since=min(ch.level_since, ch.at)))
PROFILE = st.builds(
    Profile, OPT, st.none() | st.text(max_size=6), st.none() | st.text(max_size=7), OPT,
    st.none() | st.text(max_size=8), OPT,
    st.dictionaries(st.sampled_from(CONSENT_CHANNELS), st.tuples(st.booleans(), INTS)).map(
        lambda d: tuple(Consent(c, *d[c]) for c in sorted(d))))


def _state(customer_id: str, **fields: Any) -> CustomerState:
    # not st.builds(CustomerState, ...): hypothesis reads the class's signature, which
    # msgspec makes from the resolved annotations, and LoyaltyState / ChurnState are
    # TYPE_CHECKING-only names in processors.state
    return CustomerState(customer_id, **fields)


STATES = st.builds(
    _state, st.text(max_size=8),
    max_event_at=OPT,
    kind_max=st.tuples(INTS, INTS, INTS, INTS, INTS, INTS)
    | st.tuples(INTS, INTS, INTS, INTS, INTS, st.just(0))
    | st.tuples(INTS, INTS, INTS, INTS, st.just(0), st.just(0)) | st.just((0,) * 6),
    first_purchase_at=OPT, last_purchase_at=OPT, purchase_count=INTS, refund_count=INTS,
    gross_spend_minor=INTS, refunds_minor=INTS, archived_purchase_days=INTS,
    days=_few(st.builds(DayBucket, INTS, INTS, INTS, INTS), 14),
    tickets_opened=INTS, tickets_reopened=INTS, tickets_dropped=INTS, sla_breaches=INTS,
    open_tickets=_few(st.builds(OpenTicket, st.text(max_size=4), INTS, st.text(max_size=4),
                                st.booleans()), 3),
    last_sentiment=st.none() | FLOATS, last_sentiment_at=OPT, nps_score=OPT, nps_at=OPT,
    csat=_few(st.builds(Answer, INTS, INTS), 3), ces=_few(st.builds(Answer, INTS, INTS), 3),
    surveys_answered=INTS, seen=_few(st.builds(Seen, INTS, KEYS, st.integers(0, 4))),
    loyalty=st.none() | LOYALTY, churn=st.none() | CHURN, profile=st.none() | PROFILE,
    engagement=st.none() | st.builds(
        Engagement, st.none() | st.sampled_from(WIRE_SEGMENTS), *[st.integers(0, 2**53)] * 9,
        st.none() | st.sampled_from(WIRE_KINDS), st.just(0) | st.integers(0, 2**53)),
    referral=st.none() | st.builds(
        referral_record.ReferralState, st.integers(0, 4), st.none() | st.text(max_size=4),
        INTS, INTS, INTS, INTS, INTS, INTS,
        _few(st.builds(referral_record.Rewarded, INTS, INTS, INTS), 3)))


def _outcome(decode: Callable[[bytes], CustomerState], data: bytes) -> str:
    try:
        return repr(decode(data))  # repr: also the types (-0.0 stays -0.0, True is not 1)
    except WireError as exc:
        return f"WireError: {exc}"


@SETTINGS
@given(STATES)
@example(CustomerState("", max_event_at=0, nps_score=0, last_sentiment=-0.0))
@example(CustomerState("c", kind_max=(0, 0, 0, 1, 0, 0), seen=(Seen(0, 2**64 - 1, 3),),
                       loyalty=LoyaltyState(), churn=ChurnState()))
@example(CustomerState("c", kind_max=(0, 0, 0, 0, 1, 0), seen=(Seen(1, 2, 4),),
                       profile=Profile(consent=(Consent("email", False, 0),))))
@example(CustomerState("c", profile=Profile()))
def test_dumps_is_the_reference_and_loads_reads_it_back(state: CustomerState) -> None:
    data = wire.dumps(state)
    assert data == ref_dumps(state)
    assert _outcome(wire.loads, data) == _outcome(ref_loads, data)


# -- malformed input ----------------------------------------------------------------------------

JSON_SCALARS = st.sampled_from([None, True, False, 0, 1, -1, 2**64 - 1, 0.0, -0.0, 1.5, "", "1"])
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=5), max_leaves=12)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid state with one or two changes: an item of a list (at any depth) replaced or
    added, or a field replaced, removed or added."""
    obj: dict[str, Any] = orjson.loads(wire.dumps(draw(STATES)))
    for _ in range(draw(st.integers(1, 2))):
        how = draw(st.sampled_from(["item", "item", "item", "append", "field", "delete"]))
        lists = sorted(k for k, v in obj.items() if type(v) is list and v)
        if how in ("item", "append") and lists:
            value = obj[draw(st.sampled_from(lists))]
            while draw(st.booleans()) and (inner := [x for x in value if type(x) is list]):
                value = draw(st.sampled_from(inner))
            if how == "item" and value:
                value[draw(st.integers(0, len(value) - 1))] = draw(JSON)
            else:
                value.append(draw(JSON))
            continue
        key = draw(st.sampled_from(sorted(wire._KNOWN | {"zz"})))
        if how == "delete":
            obj.pop(key, None)
        else:
            obj[key] = draw(JSON)
    return orjson.dumps(obj)


@SETTINGS
@given(mutated())
@example(b'{"v":1,"c":"x","d":[1,2,3,true]}')
@example(b'{"v":1,"c":"x","s":[1,2,3],"km":[1,2,3,false]}')
@example(b'{"v":1,"c":"x","km":[1,2,3,4,5,6]}')
@example(b'{"v":1,"c":"x","km":[1,2,3]}')
@example(b'{"v":1,"c":"x","zz":1,"yy":2,"m":null}')
def test_loads_refuses_what_the_reference_refuses(data: bytes) -> None:
    assert _outcome(wire.loads, data) == _outcome(ref_loads, data)


@pytest.mark.parametrize("data", [b"", b"[]", b'{"v":2}', b'{"v":1,"c":1}'])
def test_loads_refuses_the_basics_like_the_reference(data: bytes) -> None:
    assert _outcome(wire.loads, data).startswith("WireError")
    assert _outcome(wire.loads, data) == _outcome(ref_loads, data)
