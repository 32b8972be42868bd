"""``pulse replay``: backfill history from CSV or JSONL exports (POS, helpdesk, survey tool).

Theory of operation
-------------------
Pure part (no I/O, unit-tested without services):

* ``read_csv`` / ``read_jsonl`` turn lines of text into ``(line number, row)`` pairs, where a
  row maps column names to cells (CSV: strings; JSONL: JSON values, non-integral numbers
  read as ``Decimal`` so that ``42.50`` stays exact). A CSV header without a required column
  is a ``ReplayError`` (a usage error: no row could be replayed); a JSONL line that is not a
  JSON object becomes a ``Rejection``.
* ``RowParser.parse(row)`` builds the wire dict of one event and hands it to the same
  codec the engine uses (``schemas.codec.decode_obj``), so a bad row is rejected with the
  codec's reason and message. Amounts are major units converted to minor units exactly
  (``Fraction``; an amount that would need rounding is rejected); a negative amount is a
  refund of its absolute value. A customer row's consent is one column a channel
  (``consent_email`` ...: true/false, yes/no, 1/0, in/out; blank: not named). A row without
  an ``event_id`` gets a deterministic one:
  ``replay-`` + the first 20 hex digits of ``sha1("<kind>|<normalized row>|<n>")``, where
  the normalized row is the row's known, non-empty cells (event_id excluded), sorted by
  column, and ``n`` counts earlier identical rows in the file. Two identical rows are two
  events; replaying the same file again produces the same ids, which the engine drops
  (duplicates within its dedup window, ``too_late`` dead letters beyond it).
* ``parse_rows`` collects events and rejections and sorts the events by ``occurred_at``
  (stable: rows with the same time keep the file's order, e.g. a refund after its
  purchase). Several files are merged in event time (``merged``): a customer's history is
  applied in the order it happened, whatever file and order its rows came in, and the
  replay's clock (README "Time") only moves forward.

I/O part: ``send`` produces the events with ``BatchProducer`` (key = customer id, murmur2
owner partition, like the engine), ``emit`` writes ``customer_id<TAB>json`` lines,
``Progress`` draws a bar on stderr, ``run`` ties them together for the CLI.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import heapq
import io
import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

from processors.errors import UNKNOWN_CURRENCY
from processors.rules import Rules
from schemas.codec import (
    MALFORMED_JSON,
    MAX_NAME_LEN,
    NOT_AN_OBJECT,
    SCHEMA,
    InvalidEvent,
    decode_obj,
    encode,
    is_currency_code,
    to_rfc3339,
)
from schemas.events import CONSENT_CHANNELS, CUSTOMER, PURCHASE, SURVEY, TICKET, Event
from streams.settings import Settings
from streams.worker.replays import HEADER_REPLAY, send_end_marker

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_SEND_FAILED = 0, 1, 2, 3
# A replay flushes every topic's pending records together this often: a topic partition's
# batch otherwise waits for 1,000 records of its own, and a sparse kind (surveys) would reach
# the workers weeks of event time behind a dense one (purchases).
FLUSH_EVERY = 500
EXIT_WAIT_TIMEOUT = 5  # --wait: the workers did not report every partition in time
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SHOW_REJECTED = 5  # rejected lines quoted in the summary
UNSPECIFIED = "unspecified"  # ticket channel/category and survey touchpoint when not given
MAX_AMOUNT_DIGITS = 20  # |amount| < 10**20 major units before we even try to convert


class ReplayError(ValueError):
    """The file or an option cannot be replayed at all (exit 2), as opposed to a bad row."""


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str  # the codec's (or processors') reason, e.g. schema_violation
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.message}"


@dataclass(frozen=True)
class Spec:
    """The columns of one file kind."""

    kind: str  # the codec's event kind
    required: tuple[str, ...]
    optional: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


SPECS: dict[str, Spec] = {
    PURCHASE: Spec(PURCHASE, ("customer_id", "occurred_at", "amount"),
                   ("event_id", "order_id", "channel", "store_id", "currency")),
    TICKET: Spec(TICKET, ("customer_id", "occurred_at", "ticket_id", "status", "priority"),
                 ("event_id", "channel", "category", "sentiment")),
    SURVEY: Spec(SURVEY, ("customer_id", "occurred_at", "kind", "score"),
                 ("event_id", "survey_id", "touchpoint", "comment")),
    CUSTOMER: Spec(CUSTOMER, ("customer_id", "occurred_at", "kind"),
                   ("event_id", "referred_by", "birth_date", "time_zone",
                    *(f"consent_{c}" for c in CONSENT_CHANNELS))),
}
# consent cells: what a spreadsheet or a CRM export writes for yes and no
_YES = frozenset({"true", "yes", "y", "1", "in", "opted_in", "opt-in"})
_NO = frozenset({"false", "no", "n", "0", "out", "opted_out", "opt-out"})

_PLAIN_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_INTEGER = re.compile(r"[+-]?\d+")


# -- pure: cells -> wire values ----------------------------------------------------------------


def _bad(path: str, what: str, value: Any) -> InvalidEvent:
    shown = repr(str(value) if isinstance(value, Decimal) else value)
    return InvalidEvent(SCHEMA, f"{path}: {what}, got {shown[:60]}")


def to_minor(value: Any, exponent: int, currency: str, path: str = "purchase.amount") -> int:
    """Major units (``"42.50"``, ``42.5``, ``-3``) -> signed integer minor units, exactly.

    An amount with more significant decimals than the currency has is rejected, never
    rounded (``"42.505"`` EUR); trailing zeros lose nothing and are accepted (``"1000.00"``
    JPY = 1000)."""
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise _bad(path, "must be a plain decimal number such as 42.50", value)
        whole, _, frac = value.lstrip("+-").partition(".")
        frac = frac.rstrip("0")
        if len(frac) <= exponent and len(whole) <= MAX_AMOUNT_DIGITS:  # the common case
            minor = int((whole or "0") + frac.ljust(exponent, "0"))
            return -minor if value.startswith("-") else minor
        d = Decimal(value)
    elif type(value) in (int, Decimal):
        d = Decimal(value)
    else:
        raise _bad(path, "must be a decimal number", value)
    if not d.is_finite() or (d and d.adjusted() >= MAX_AMOUNT_DIGITS):
        raise _bad(path, "must be a finite decimal number of sensible size", value)
    exact = Fraction(d) * 10**exponent
    if exact.denominator != 1:
        raise InvalidEvent(SCHEMA, f"{path}: {str(value)!r} has more decimals than {currency} "
                                   f"allows ({exponent}); amounts are never rounded")
    return int(exact)


def _text(value: Any) -> Any:
    """Cell -> string for a text field; a JSON integer id becomes its digits; anything
    else is left for the codec to reject with its own message."""
    if type(value) is int or type(value) is Decimal:
        return str(value)
    return value


def _integer(value: Any) -> Any:
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    if type(value) is Decimal:
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _number(value: Any) -> Any:
    if isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value):
        return float(value)
    if type(value) is Decimal:
        return float(value)
    return value


def _cell(row: Mapping[str, Any], name: str) -> Any:
    """A cell, stripped; ``None`` when absent, null or blank."""
    v = row.get(name)
    if isinstance(v, str):
        v = v.strip()
        return v or None
    return v


def derive_event_id(kind: str, normalized: str, nth: int) -> str:
    digest = hashlib.sha1(f"{kind}|{normalized}|{nth}".encode()).hexdigest()
    return f"replay-{digest[:20]}"


class RowParser:
    """One file's rows -> typed events. Stateful only in counting identical rows."""

    def __init__(self, kind: str, rules: Rules, *, currency: str | None = None,
                 source: str = "replay") -> None:
        if kind not in SPECS:
            raise ReplayError(f"unknown kind {kind!r} (known: {', '.join(SPECS)})")
        self.spec = SPECS[kind]
        self.rules = rules
        self.currency = currency or rules.reporting_currency
        if self.currency not in rules.fx:
            raise ReplayError(f"--currency {self.currency}: no rate in the rules "
                              f"(known: {', '.join(sorted(rules.fx))})")
        if not source.strip() or len(source) > MAX_NAME_LEN:
            raise ReplayError(f"--source {source!r}: must be 1-{MAX_NAME_LEN} characters")
        self.source = source
        self._identical: Counter[str] = Counter()

    def parse(self, row: Mapping[str, Any]) -> Event:
        """Raises ``InvalidEvent`` (reason + message) for a row that cannot be an event."""
        kind = self.spec.kind
        cells = {c: v for c in self.spec.columns if (v := _cell(row, c)) is not None}
        event_id = cells.pop("event_id", None)
        if event_id is None:
            normalized = "\x1f".join(f"{k}={cells[k]}" for k in sorted(cells))
            nth = self._identical[normalized]
            self._identical[normalized] += 1
            event_id = derive_event_id(kind, normalized, nth)
        obj: dict[str, Any] = {"event_id": _text(event_id), "source": self.source}
        for name in ("customer_id", "occurred_at"):
            if name in cells:
                obj[name] = _text(cells[name])
        if "occurred_at" in obj:
            obj["occurred_at"] = to_rfc3339(obj["occurred_at"])
        if kind == PURCHASE:
            self._purchase(cells, obj)
        elif kind == TICKET:
            self._ticket(cells, obj)
        elif kind == SURVEY:
            self._survey(cells, obj)
        else:
            self._customer(cells, obj)
        return decode_obj(kind, obj)

    def _purchase(self, cells: dict[str, Any], obj: dict[str, Any]) -> None:
        if "amount" not in cells:
            raise InvalidEvent(SCHEMA, "purchase.amount: required field is missing")
        currency = _text(cells.get("currency", self.currency))
        if type(currency) is not str or not is_currency_code(currency):
            raise _bad("purchase.currency", "must be a three-letter ISO-4217 code", currency)
        if currency not in self.rules.fx:
            known = ", ".join(sorted(self.rules.fx))
            raise InvalidEvent(UNKNOWN_CURRENCY, f"purchase.currency: {currency!r} has no rate "
                                                 f"in the rules (known: {known})")
        signed = to_minor(cells["amount"], self.rules.minor_units[currency], currency)
        obj.update(
            order_id=_text(cells.get("order_id", obj["event_id"])),
            channel=_text(cells.get("channel", "store")),
            kind="refund" if signed < 0 else "purchase",
            amount_minor=abs(signed),
            currency=currency,
        )
        if "store_id" in cells:
            obj["store_id"] = _text(cells["store_id"])

    def _ticket(self, cells: dict[str, Any], obj: dict[str, Any]) -> None:
        for name in ("ticket_id", "status", "priority"):
            if name in cells:
                obj[name] = _text(cells[name])
        obj["channel"] = _text(cells.get("channel", UNSPECIFIED))
        obj["category"] = _text(cells.get("category", UNSPECIFIED))
        if "sentiment" in cells:
            obj["sentiment"] = _number(cells["sentiment"])

    def _survey(self, cells: dict[str, Any], obj: dict[str, Any]) -> None:
        if "kind" in cells:
            obj["kind"] = _text(cells["kind"])
        if "score" in cells:
            obj["score"] = _integer(cells["score"])
        obj["survey_id"] = _text(cells.get("survey_id", obj["event_id"]))
        obj["touchpoint"] = _text(cells.get("touchpoint", UNSPECIFIED))
        if "comment" in cells:
            obj["comment"] = _text(cells["comment"])


    def _customer(self, cells: dict[str, Any], obj: dict[str, Any]) -> None:
        for name in ("kind", "referred_by", "birth_date", "time_zone"):
            if name in cells:
                obj[name] = _text(cells[name])
        named = [c for c in CONSENT_CHANNELS if f"consent_{c}" in cells]
        if named and obj.get("kind") != "consent":
            raise _bad(f"customer.consent_{named[0]}", "only a row of kind consent may have "
                       "consent cells", cells[f"consent_{named[0]}"])
        if named:
            obj["channels"] = {c: _consent(cells[f"consent_{c}"], c) for c in named}


def _consent(value: Any, channel: str) -> Any:
    if type(value) is bool:
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise _bad(f"customer.consent_{channel}", "must be true or false (yes/no, 1/0, in/out)",
               value)


# -- pure: text -> rows ------------------------------------------------------------------------


def detect_format(path: str, given: str | None) -> str:
    if given:
        return given
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ReplayError(f"cannot tell the format of {path!r} from its extension "
                          f"({', '.join(FORMATS)}); pass --format csv or --format jsonl")
    return fmt


def read_csv(lines: Iterable[str], spec: Spec) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with a header line. Line numbers are where each row starts."""
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise ReplayError("the file is empty (a CSV file needs a header line)") from None
    except csv.Error as exc:
        raise ReplayError(f"line 1 (header): {exc}") from None
    names = [h.strip().lower() for h in header]
    missing = [c for c in spec.required if c not in names]
    if missing:
        raise ReplayError(
            f"line {reader.line_num} (header): missing required column"
            f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} for --kind {spec.kind} "
            f"(found: {', '.join(n for n in names if n) or 'none'})"
        )
    end = reader.line_num
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ReplayError(f"line {start}: not valid CSV: {exc}") from None
        end = reader.line_num
        if any(c.strip() for c in cells):
            yield start, dict(zip(names, cells, strict=False))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_jsonl(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | Rejection]]:
    """One JSON object a line; blank lines are skipped."""
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            yield n, Rejection(n, MALFORMED_JSON, f"line is not valid JSON: {exc}")
            continue
        if type(obj) is not dict:
            yield n, Rejection(n, NOT_AN_OBJECT,
                               f"line must be a JSON object, got {type(obj).__name__}")
            continue
        yield n, obj


@dataclass
class Parsed:
    events: list[Event] = field(default_factory=list)  # sorted by occurred_at (stable)
    rejected: list[Rejection] = field(default_factory=list)  # in line order, maybe capped
    by_reason: Counter[str] = field(default_factory=Counter)
    rows: int = 0

    @property
    def rejected_count(self) -> int:
        return sum(self.by_reason.values())


def parse_rows(rows: Iterable[tuple[int, Mapping[str, Any] | Rejection]], parser: RowParser,
               tick: Callable[[], None] = lambda: None, keep: int | None = None) -> Parsed:
    """Parse every row; keep the first ``keep`` rejections (all when ``None``), count all."""
    out = Parsed()
    for line, row in rows:
        out.rows += 1
        tick()
        if not isinstance(row, Rejection):
            try:
                out.events.append(parser.parse(row))
                continue
            except InvalidEvent as exc:
                row = Rejection(line, exc.reason, exc.message)
        out.by_reason[row.reason] += 1
        if keep is None or len(out.rejected) < keep:
            out.rejected.append(row)
    out.events.sort(key=_occurred_at)
    return out


def _occurred_at(event: Event) -> int:
    return event.occurred_at


def emit_line(event: Event) -> bytes:
    """``customer_id<TAB>wire json`` (the JSON never contains a raw tab: split on the last)."""
    return event.customer_id.encode() + b"\t" + encode(event) + b"\n"


def summary(path: str, kind: str, parsed: Parsed, done: int, where: str) -> str:
    lines = [f"{path} ({kind}): {parsed.rows} rows read, {done} {where}, "
             f"{parsed.rejected_count} rejected"]
    if parsed.rejected:
        lines.append("rejected by reason:")
        lines += [f"  {reason:<20s} {n}" for reason, n in sorted(parsed.by_reason.items())]
        shown = parsed.rejected[:SHOW_REJECTED]
        lines.append(f"first rejected line{'s' if len(shown) > 1 else ''}:")
        lines += [f"  {r}" for r in shown]
    return "\n".join(lines)


# -- I/O -----------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal, redrawn at most ``hz`` times a second."""

    def __init__(self, stream: IO[str], label: str, total: int | None = None, *,
                 enabled: bool | None = None, hz: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.enabled = stream.isatty() if enabled is None else enabled
        self.interval = 1.0 / hz
        self.clock = clock
        self.count = 0
        self.started = clock()
        self._drawn = float("-inf")
        self.draws = 0

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.enabled:
            now = self.clock()
            if now - self._drawn >= self.interval:
                self._draw(now)

    def render(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        if self.total:
            frac = min(self.count / self.total, 1.0)
            bar = "#" * int(frac * 24)
            return (f"{self.label} [{bar:<24s}] {self.count:,}/{self.total:,} "
                    f"{frac:6.1%} {rate:,.0f} rows/s")
        return f"{self.label} {self.count:,} rows {rate:,.0f} rows/s"

    def _draw(self, now: float) -> None:
        self._drawn = now
        self.draws += 1
        self.stream.write("\r" + self.render(now) + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()


def infer_kind(path: str, fmt: str, head: str) -> str:
    """The kind of a file from its columns (CSV header, or the first JSONL object's keys):
    a ``ticket_id`` makes tickets, a ``score`` surveys, an ``amount`` purchases, any of
    ``referred_by``, ``birth_date``, ``time_zone``, ``consent_*`` customer records."""
    if fmt == "csv":
        try:
            names = {h.strip().lower() for h in next(csv.reader([head]))}
        except (StopIteration, csv.Error):
            names = set()
    else:
        try:
            obj = json.loads(head)
        except ValueError:
            obj = None
        names = {str(k).lower() for k in obj} if isinstance(obj, dict) else set()
    found = [k for k, col in ((TICKET, "ticket_id"), (SURVEY, "score"), (PURCHASE, "amount"))
             if col in names]
    if names & {"referred_by", "birth_date", "time_zone"} or any(
            n.startswith("consent_") for n in names):
        found.append(CUSTOMER)
    if len(found) != 1:
        raise ReplayError(
            f"{path}: cannot tell whether its rows are purchases (an amount column), tickets "
            f"(ticket_id), surveys (score) or customer records (referred_by, birth_date, "
            f"time_zone, consent_*) from its {'header' if fmt == 'csv' else 'first line'}"
            f"; pass --kind")
    return found[0]


@dataclass
class Source:
    """One file of a replay: where it is, what it holds, what became of its rows."""

    path: str
    kind: str
    fmt: str
    parsed: Parsed = field(default_factory=Parsed)


def new_replay_id() -> str:
    return time.strftime("r%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def merged(sources: list[Source]) -> Iterator[tuple[str, Event]]:
    """Every source's events, merged in event time (stable: files in the order given, each
    in its own order at equal times), with their kind."""
    runs = [[(ev.occurred_at, i, n, src.kind, ev) for n, ev in enumerate(src.parsed.events)]
            for i, src in enumerate(sources)]
    for _t, _i, _n, kind, ev in heapq.merge(*runs):
        yield kind, ev


async def send(settings: Settings, events: Iterable[tuple[str, Event]], *, replay_id: str,
               rate: float = 0.0, tick: Callable[[], None] = lambda: None) -> int:
    """Produce ``(kind, event)`` pairs in order to their kinds' input topics, each marked
    with the replay's id, then the replay's end marker on every partition of every input
    topic (streams.worker.replays); ``rate`` events/s (0: no limit). Creates the topics first, so
    a replay before any worker started still gets co-partitioned topics rather than
    broker-default ones. Returns the number of events sent."""
    from streams.worker.admin import create_topics
    from streams.worker.producer import BatchProducer
    from streams.worker.topics import Topics

    await create_topics(settings)
    topics = Topics.from_settings(settings)
    by_kind = {kind: topic for topic, kind in topics.inputs.items()}
    headers = [(HEADER_REPLAY, replay_id.encode())]
    end_ms = 0
    async with BatchProducer(settings, settings.partitions,
                             client_id="pulse-replay") as out:
        started = time.monotonic()
        i = 0
        for kind, ev in events:
            i += 1
            await out.send(by_kind[kind], ev.customer_id.encode(), encode(ev), headers=headers)
            end_ms = max(end_ms, ev.occurred_at)
            tick()
            if i % FLUSH_EVERY == 0:  # every topic's records leave together, in time order
                await out.flush()
            if rate > 0:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0.02:
                    await out.flush()
                    await asyncio.sleep(ahead)
        await send_end_marker(out, list(topics.inputs), settings.partitions, replay_id, end_ms)
        return i


@dataclass
class Outcomes:
    """What the workers did with a replay's records, summed over the partitions."""

    counts: Counter[str] = field(default_factory=Counter)
    ended: int = 0  # partitions where the replay has ended
    partitions: int = 0

    @property
    def done(self) -> bool:
        return self.ended >= self.partitions

    def lines(self) -> list[str]:
        c = self.counts
        dead = {k.split(":", 1)[1]: n for k, n in c.items() if k.startswith("deadletter:")}
        out = [f"worker: {c['applied']} applied, {c['duplicate']} duplicate, "
               f"{sum(dead.values())} dead-lettered"
               + ("" if self.done else
                  f" (the replay has ended on {self.ended} of {self.partitions} partitions)")]
        out += [f"  dead-lettered {reason:<18s} {n}" for reason, n in sorted(dead.items())]
        if dead:
            out.append("  (pulse deadletters --reason REASON lists them)")
        return out


async def wait_outcomes(settings: Settings, replay_id: str, timeout_s: float,
                        poll_s: float = 0.5) -> Outcomes:
    """Poll the outcome counters the workers keep in Redis until the replay has ended on
    every partition (or ``timeout_s`` passed)."""
    from streams.redis_client import connect
    from streams.worker.keys import Keys

    keys = Keys(settings.redis_prefix)
    client = connect(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with client.pipeline(transaction=False) as pipe:
                for p in range(settings.partitions):
                    pipe.hgetall(keys.replay_outcome(p, replay_id))
                hashes = await pipe.execute()
            got = Outcomes(partitions=settings.partitions)
            for h in hashes:
                for k, v in h.items():
                    name = k.decode()
                    if name == "ended":
                        got.ended += 1
                    else:
                        got.counts[name] += int(v)
            if got.done or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(poll_s)
    finally:
        await client.aclose()


def _read(src: Source, rules: Rules, *, currency: str | None, source: str,
          stderr: IO[str]) -> None:
    parser = RowParser(src.kind, rules, currency=currency, source=source)
    reading = Progress(stderr, f"reading {src.path}")
    if src.path == "-":
        handle: IO[str] = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    else:
        handle = open(src.path, encoding="utf-8-sig", newline="")  # noqa: SIM115 (closed below)
    try:
        rows = read_csv(handle, parser.spec) if src.fmt == "csv" else read_jsonl(handle)
        src.parsed = parse_rows(rows, parser, reading.update, keep=SHOW_REJECTED)
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{src.path} is not UTF-8 text: {exc}") from None
    finally:
        reading.close()
        if src.path != "-":
            handle.close()


def sources_of(paths: list[str], kinds: list[str], fmt: str | None) -> list[Source]:
    """One ``Source`` a path: ``kinds`` has one kind for all files, one a file, or none (each
    file's kind from its columns)."""
    if not paths:
        raise ReplayError("no file given")
    if paths.count("-") > 1:
        raise ReplayError("standard input ('-') can be read once")
    if len(kinds) not in (0, 1, len(paths)):
        raise ReplayError(f"--kind given {len(kinds)} times for {len(paths)} files: give it "
                          "once (all files), once a file (in order), or not at all (each "
                          "file's kind from its columns)")
    out = []
    for i, path in enumerate(paths):
        f = detect_format(path, fmt)
        if kinds:
            kind = kinds[0] if len(kinds) == 1 else kinds[i]
        elif path == "-":
            kind = PURCHASE
        else:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                try:
                    head = next((line for line in handle if line.strip()), "")
                except UnicodeDecodeError as exc:
                    raise ReplayError(f"{path} is not UTF-8 text: {exc}") from None
            kind = infer_kind(path, f, head)
        out.append(Source(path, kind, f))
    return out


def run(paths: list[str] | str, *, kind: str | list[str] | None = None, fmt: str | None,
        rules: Rules, settings: Settings, currency: str | None = None, source: str = "replay",
        emit: str | None = None, rate: float = 0.0, wait: float | None = None,
        stdout: IO[bytes] | None = None, stderr: IO[str] | None = None) -> int:
    """The whole command; returns the exit code. Raises ``ReplayError`` for usage errors.
    ``wait``: after sending, wait up to that many seconds for the workers' outcomes."""
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr
    paths = [paths] if isinstance(paths, str) else list(paths)
    kinds = [] if kind is None else [kind] if isinstance(kind, str) else list(kind)
    sources = sources_of(paths, kinds, fmt)
    for src in sources:
        _read(src, rules, currency=currency, source=source, stderr=stderr)
    total = sum(len(src.parsed.events) for src in sources)
    rejected = sum(src.parsed.rejected_count for src in sources)
    sending = Progress(stderr, "emitting" if emit else "sending", total)
    if emit:
        try:
            for _kind, ev in merged(sources):
                stdout.write(emit_line(ev))
                sending.update()
            stdout.flush()
        except BrokenPipeError:  # `pulse replay --emit jsonl f.csv | head`: not an error
            sending.close()
            return EXIT_OK
        sending.close()
        for src in sources:
            stderr.write(summary(src.path, src.kind, src.parsed, len(src.parsed.events),
                                 "emitted") + "\n")
        return EXIT_REJECTED if rejected else EXIT_OK
    from streams.worker.topics import Topics

    topics = Topics.from_settings(settings)
    replay_id = new_replay_id()
    sent = 0
    try:
        if total:
            sent = asyncio.run(send(settings, merged(sources), replay_id=replay_id, rate=rate,
                                    tick=sending.update))
    except Exception as exc:  # broker unreachable, topic mismatch: nothing to retry here
        sending.close()
        stderr.write(f"error: sending to {settings.kafka_bootstrap} failed after queuing "
                     f"{sending.count} of {total} events: {exc!r}\n"
                     "(re-running is safe: the event ids are the same every time)\n")
        return EXIT_SEND_FAILED
    sending.close()
    lines = [summary(src.path, src.kind, src.parsed, len(src.parsed.events),
                     f"sent to {topics.for_kind(src.kind)}") for src in sources]
    if len(sources) > 1:
        lines.append(f"replay {replay_id}: {sent} events sent merged in event time from "
                     f"{len(sources)} files, {rejected} rows rejected")
    else:
        lines.append(f"replay {replay_id}")
    stdout.write(("\n".join(lines) + "\n").encode())
    stdout.flush()
    if wait is None:
        return EXIT_REJECTED if rejected else EXIT_OK
    try:
        got = asyncio.run(wait_outcomes(settings, replay_id, wait))
    except Exception as exc:  # Redis unreachable
        stderr.write(f"error: cannot read the workers' outcomes from Redis "
                     f"(PULSE_REDIS_URL): {exc}\n")
        return EXIT_SEND_FAILED
    stdout.write(("\n".join(got.lines()) + "\n").encode())
    stdout.flush()
    if not got.done:
        stderr.write(f"error: the workers did not finish replay {replay_id} within {wait:g} s "
                     "(are they running? it goes on without you: run pulse deadletters "
                     "later)\n")
        return EXIT_WAIT_TIMEOUT
    dead = sum(n for k, n in got.counts.items() if k.startswith("deadletter:"))
    return EXIT_REJECTED if rejected or dead else EXIT_OK
