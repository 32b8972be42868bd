"""Compact, versioned byte encoding of ``CustomerState`` (the value stored in Redis).

Theory of operation: one orjson object with short keys; fields at their default (None for
optional values, 0 for counters, empty for collections) are left out; records are flattened
into int lists (``km`` = newest event time per kind, ``d`` = day buckets as ``day, orders,
spend, refunds`` quadruples, ``s`` = dedup window as ``at, key, kind`` triples, ``cs``/``ce``
= survey answers as ``at, score`` pairs);
``ot`` = open tickets as ``[ticket_id, opened_at, priority, responded]``; then each
layer's record under its ``wire_key``, in registry order (``processors/registry.py``):
``ly`` = the points account (``processors.loyalty.wire``), ``ch`` = the churn record
(``processors.churn.wire``), ``en`` = the engagement record
(``processors.engagement.record.to_wire``); ``pf`` = the profile
(``processors.profile.to_wire``). ``v`` is the
format version: ``loads`` refuses any other version and any malformed value with
``WireError`` rather than guessing, and ``loads(dumps(s)) == s`` for every state. A change
to the state's fields bumps ``VERSION`` (and ``loads`` keeps reading the old one,
upgrading it), unless it is additive: the fifth and sixth kinds of ``kind_max`` (customer
and referral records), ``pf`` and ``en`` came within version 1. ``km`` is written with four
entries while the fifth and sixth are 0 (five while the sixth is), so a state without
customer or referral records has the bytes it always had, and states written before load
unchanged; an older reader refuses a state that has either (wrong
``km`` length, unknown field) rather than misread it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import chain, repeat
from typing import Any

import orjson

from processors import profile
from processors.errors import WireError
from processors.registry import LAYERS
from processors.state import Answer, CustomerState, DayBucket, OpenTicket, Seen

VERSION = 1

# state field -> wire key: optional ints (default None; 0 is a value, e.g. an NPS of 0) ...
# (``loads`` reads these tables; ``dumps`` writes them through code generated from them)
_OPTIONALS: dict[str, str] = {
    "max_event_at": "m",
    "first_purchase_at": "fp",
    "last_purchase_at": "lp",
    "last_sentiment_at": "la",
    "nps_score": "ns",
    "nps_at": "na",
}
# ... and counters (default 0)
_COUNTERS: dict[str, str] = {
    "purchase_count": "pc",
    "refund_count": "rc",
    "gross_spend_minor": "gs",
    "refunds_minor": "rf",
    "archived_purchase_days": "ad",
    "tickets_opened": "to",
    "tickets_reopened": "tr",
    "tickets_dropped": "td",
    "sla_breaches": "sb",
    "surveys_answered": "sa",
}
_SCALARS = {**_OPTIONALS, **_COUNTERS}
# the layers that keep a record: (state field, wire key, to_wire, from_wire), registry order;
# their keys come after the base fields (a layer's from_wire sees those decoded: ``base``)
_WIRED: tuple[tuple[str, str, Callable[[Any, CustomerState], Any],
                    Callable[[Any, Mapping[str, Any]], Any]], ...] = tuple(
    (layer.field, layer.wire_key, layer.to_wire, layer.from_wire) for layer in LAYERS
    if layer.field is not None and layer.wire_key is not None)
_KNOWN = frozenset({"v", "c", "km", "d", "s", "cs", "ce", "ot", "ls", "pf",
                    *(key for _, key, _, _ in _WIRED), *_SCALARS.values()})

_new = tuple.__new__  # _new(DayBucket, (day, ...)): the record without its Python __new__


def _scalar_writer() -> Callable[[CustomerState, dict[str, Any]], None]:
    """``write(state, out)``: the scalars of ``_OPTIONALS`` and ``_COUNTERS`` into ``out``,
    in table order, as straight-line code generated from the tables (half the cost of a
    getattr loop over them; the same technique as schemas.frozen)."""
    lines = ["def write(s, out):"]
    for name, key in _OPTIONALS.items():
        lines += [f"    if (x := s.{name}) is not None:", f"        out[{key!r}] = x"]
    for name, key in _COUNTERS.items():
        lines += [f"    if x := s.{name}:", f"        out[{key!r}] = x"]
    env: dict[str, Any] = {}
    exec("\n".join(lines), env)
    write: Callable[[CustomerState, dict[str, Any]], None] = env["write"]
    return write


_write_scalars = _scalar_writer()


def dumps(state: CustomerState) -> bytes:
    # Runs once per changed customer per batch; ``list(chain(*records))`` flattens the
    # records, and orjson writes the plain tuple ``kind_max`` as the same array a list would.
    out: dict[str, Any] = {"v": VERSION, "c": state.customer_id}
    _write_scalars(state, out)
    if (f := state.last_sentiment) is not None:
        out["ls"] = f
    if any(km := state.kind_max):
        # four while there is no customer record, five while there is no referral record
        out["km"] = km if km[5] else km[:5] if km[4] else km[:4]
    if days := state.days:
        out["d"] = list(chain(*days))
    if seen := state.seen:
        out["s"] = list(chain(*seen))
    if csat := state.csat:
        out["cs"] = list(chain(*csat))
    if ces := state.ces:
        out["ce"] = list(chain(*ces))
    if state.open_tickets:
        out["ot"] = [
            [o.ticket_id, o.opened_at, o.priority, int(o.responded)] for o in state.open_tickets
        ]
    for field, key, to_wire, _ in _WIRED:  # the layers' records (ly, ch), registry order
        if (record := getattr(state, field)) is not None:
            out[key] = to_wire(record, state)
    if state.profile is not None:  # processors.profile.to_wire
        out["pf"] = profile.to_wire(state.profile)
    return orjson.dumps(out)


def _int(value: Any, key: str) -> int:
    if type(value) is not int:
        raise WireError(f"state field {key!r}: expected an integer, got {value!r}")
    return value


def _records(value: Any, key: str, width: int, make: type[tuple[Any, ...]]) -> tuple[Any, ...]:
    if type(value) is not list or len(value) % width:
        raise WireError(f"state field {key!r}: expected a flat list of {width}-tuples")
    if list(map(type, value)).count(int) != len(value):  # each exactly an int, not a bool
        raise WireError(f"state field {key!r}: expected integers, got {value!r:.80}")
    it = iter(value)  # make(*group) for each consecutive group of ``width``
    return tuple(map(_new, repeat(make), zip(*([it] * width), strict=False)))


def _ticket(value: Any) -> OpenTicket:
    if (
        type(value) is not list
        or len(value) != 4
        or type(value[0]) is not str
        or type(value[2]) is not str
        or value[3] not in (0, 1)
    ):
        raise WireError(f"state field 'ot': malformed open ticket {value!r}")
    return OpenTicket(value[0], _int(value[1], "ot"), value[2], bool(value[3]))


def loads(data: bytes) -> CustomerState:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"state is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise WireError("state must be a JSON object")
    if obj.get("v") != VERSION:
        raise WireError(f"state version {obj.get('v')!r} is not supported (expected {VERSION})")
    if not _KNOWN.issuperset(obj):
        raise WireError(f"state has unknown fields {sorted(set(obj) - _KNOWN)}")
    cid = obj.get("c")
    if type(cid) is not str:
        raise WireError("state field 'c' (customer_id) must be a string")
    kwargs: dict[str, Any] = {"customer_id": cid}
    for name, key in _SCALARS.items():
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
        if type(km) is not list or not 4 <= len(km) <= 6 or list(map(type, km)).count(
                int) != len(km):
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
    for field, key, _, from_wire in _WIRED:
        if key in obj:
            kwargs[field] = from_wire(obj[key], kwargs)
    if "pf" in obj:
        kwargs["profile"] = profile.from_wire(obj["pf"])
    return CustomerState(**kwargs)  # a msgspec Struct: as cheap as evolve(blank, kwargs)
