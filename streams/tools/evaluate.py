"""``pulse evaluate churn``: how well the churn score predicts who buys nothing next.

Theory of operation
-------------------
1. Read the history files with ``pulse replay``'s readers and ``RowParser`` (the same
   columns, the same rejections): purchases (``--history``; customer_id, occurred_at,
   amount, ...) and, optionally, tickets and surveys. Events of all files are merged in
   event time (stable: a file's own order is kept for equal times).
2. Replay the events before the cutoff in that order through the worker's own shard
   transaction (streams/worker/transaction.py), as one partition in event-clock mode, in
   batches of ``BATCH`` events: the same processors (``processors.customer.FULL``), the
   same clocks, and the same time-driven changes (``tick``) up to the partition's newest
   event time minus ``allowed_lateness_ms``, for the batch's customers and those whose
   change is due (the due set is a dict here, a sorted set in Redis there). Dead-lettered
   events (a refund larger than the net spend, an unknown currency, ...) are counted by
   reason.
3. Score every customer who bought before the cutoff with ``processors.churn.explain.score(state,
   rules, cutoff)`` -- the value ``pulse customers export --as-of`` shows as
   ``churn_score`` for the same history -- and label them "churned" when they make no
   purchase in ``[cutoff, cutoff + horizon)``.
4. Report ROC AUC of the score, of the plain recency baseline (days since the last
   purchase) and of the purchase-count baseline (fewer purchases = more risk).

``auc`` is the rank formula (Mann-Whitney U): the probability that a random churned
customer scores above a random retained one, ties counting one half (average ranks).
"""

from __future__ import annotations

import csv
import heapq
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from aiokafka.structs import ConsumerRecord

from processors.churn.explain import score
from processors.customer import FULL
from processors.rules import ChurnModel, ChurnRules, Rules
from processors.state import CustomerState
from processors.timeutil import DAY_MS
from schemas.codec import format_time
from schemas.events import PURCHASE, SURVEY, TICKET, Event, Purchase
from streams.settings import Settings
from streams.tools.replay import (
    SHOW_REJECTED,
    Parsed,
    ReplayError,
    RowParser,
    detect_format,
    parse_rows,
    read_csv,
    read_jsonl,
)
from streams.worker.store import ShardMeta
from streams.worker.transaction import Context, Item, ShardTransaction

EXIT_OK, EXIT_USAGE = 0, 2
BATCH = 1000  # events a shard transaction (the result does not depend on it)


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """ROC AUC of ``scores`` for the positive ``labels``; ties count one half. ``None``
    when one class is empty."""
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    order = sorted(range(len(scores)), key=scores.__getitem__)
    pos = sum(1 for y in labels if y)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1  # ranks are 1-based; a tie shares the average
        rank_sum += avg * sum(1 for k in order[i:j + 1] if labels[k])
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


@dataclass(frozen=True)
class Sample:
    customer_id: str
    score: float
    days_since_last_purchase: float
    purchases: int
    churned: bool  # no purchase within the horizon after the cutoff
    default_score: float | None = None  # with the default parameters (when compared)


@dataclass
class Evaluation:
    cutoff: int
    horizon_days: float
    samples: list[Sample] = field(default_factory=list)
    applied: Counter[str] = field(default_factory=Counter)  # accepted events by kind
    rejected: Counter[str] = field(default_factory=Counter)  # by reason (rows and events)
    without_purchase: int = 0  # customers with events before the cutoff but no purchase
    history_end: int | None = None  # newest event time in the files

    @property
    def churned(self) -> int:
        return sum(1 for s in self.samples if s.churned)

    def aucs(self) -> dict[str, float | None]:
        labels = [s.churned for s in self.samples]
        out = {
            "churn_score": auc([s.score for s in self.samples], labels),
            "recency": auc([s.days_since_last_purchase for s in self.samples], labels),
            "purchase_count": auc([-s.purchases for s in self.samples], labels),
        }
        if self.compared:
            out["churn_score_default_model"] = auc(
                [s.default_score or 0.0 for s in self.samples], labels)
        return out

    @property
    def compared(self) -> bool:
        """Whether the samples carry the score with the default parameters too."""
        return bool(self.samples) and self.samples[0].default_score is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": format_time(self.cutoff),
            "horizon_days": self.horizon_days,
            "customers": len(self.samples),
            "churned": self.churned,
            "customers_without_purchase": self.without_purchase,
            "events_applied": dict(self.applied),
            "rejected": dict(self.rejected),
            "history_end": None if self.history_end is None else format_time(self.history_end),
            "auc": self.aucs(),
        }


@dataclass
class Replayed:
    """The customers' states as of a cutoff, and their purchases after it."""

    cutoff: int
    states: dict[str, CustomerState] = field(default_factory=dict)
    after: dict[str, list[int]] = field(default_factory=dict)  # purchase times >= cutoff
    # the states as of an earlier time (``replay``'s ``snapshot_at``): the events before it
    snapshot: dict[str, CustomerState] | None = None
    applied: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    history_end: int | None = None


def replay(events: Iterable[Event], rules: Rules, cutoff: int, *,
           snapshot_at: int | None = None) -> Replayed:
    """Replay ``events`` (in event-time order) up to ``cutoff``; keep the purchase times
    after it, and with ``snapshot_at`` (<= ``cutoff``) the states as of that time too (the
    same as replaying up to it: states are immutable, the snapshot is a copy of the map)."""
    out = Replayed(cutoff)
    ctx = Context.from_settings(Settings(clock="event"), rules, FULL)
    topic_of = {kind: topic for topic, kind in ctx.topics.inputs.items()}
    meta = ShardMeta(0)
    due: dict[str, int] = {}  # customer -> its next time-driven change (the due set)
    batch: list[Item] = []
    newest: int | None = None
    for ev in events:
        t = ev.occurred_at
        newest = t if newest is None or t > newest else newest
        if snapshot_at is not None and t >= snapshot_at and out.snapshot is None:
            if batch:  # (the batch a replay up to snapshot_at would end with)
                _apply(ctx, meta, batch, out, due, cutoff)
                batch = []
            out.snapshot = dict(out.states)
        if t >= cutoff:
            if isinstance(ev, Purchase) and ev.kind == "purchase":
                out.after.setdefault(ev.customer_id, []).append(t)
            continue
        record = ConsumerRecord(topic_of[ev.event_kind], 0, len(batch), t, 0, None, b"", None,
                                0, 0, ())
        batch.append((t, ev, record, None, None))
        if len(batch) == BATCH:
            _apply(ctx, meta, batch, out, due, cutoff)
            batch = []
    if batch:
        _apply(ctx, meta, batch, out, due, cutoff)
    out.history_end = newest
    if snapshot_at is not None and out.snapshot is None:
        out.snapshot = dict(out.states)
    return out


def _apply(ctx: Context, meta: ShardMeta, batch: list[Item], out: Replayed,
           due: dict[str, int], cutoff: int) -> None:
    """One batch through the shard transaction, as the worker runs it (the wall clock,
    which only decides the backfill marker of outputs, is the cutoff)."""
    txn = ShardTransaction(ctx, meta, batch, wall_ms=cutoff, mono=0.0)
    scanned = [cid for cid, at in due.items() if at <= txn.upto]
    states = out.states
    res = txn.run({cid: states.get(cid) for cid in (*txn.customers(), *scanned)}, scanned)
    states.update(res.states)
    for cid, at in res.commit.due.items():
        if at is None:
            due.pop(cid, None)
        else:
            due[cid] = at
    meta.high.update(res.commit.high)
    meta.tick_failures = res.tick_failures
    inputs = ctx.topics.inputs
    for (topic, outcome), n in res.counts.items():
        if outcome == "processed":
            out.applied[inputs[topic]] += n
    for d in res.dead:
        out.rejected[d.reason] += 1


def evaluate(events: Iterable[Event], rules: Rules, cutoff: int, horizon_days: float, *,
             default_rules: Rules | None = None) -> Evaluation:
    """Replay ``events`` (in event-time order) up to ``cutoff`` and score as of it."""
    return score_replayed(replay(events, rules, cutoff), rules, horizon_days,
                          default_rules=default_rules)


def score_replayed(rep: Replayed, rules: Rules, horizon_days: float, *,
                   default_rules: Rules | None = None) -> Evaluation:
    """Score every customer who bought before the cutoff (and with ``default_rules`` too,
    when given: the comparison of fitted and default parameters)."""
    cutoff = rep.cutoff
    out = Evaluation(cutoff, horizon_days, applied=Counter(rep.applied),
                     rejected=Counter(rep.rejected), history_end=rep.history_end)
    end = cutoff + int(horizon_days * DAY_MS)
    bought = {cid for cid, times in rep.after.items() if min(times) < end}
    for cid in sorted(rep.states):
        state = rep.states[cid]
        if state.last_purchase_at is None:
            out.without_purchase += 1
            continue
        default = (None if default_rules is None
                   else score(state, default_rules, cutoff).score)
        out.samples.append(Sample(cid, score(state, rules, cutoff).score,
                                  (cutoff - state.last_purchase_at) / DAY_MS,
                                  state.purchase_count, cid not in bought, default))
    return out


def with_default_parameters(rules: Rules) -> Rules | None:
    """``rules`` with what ``pulse fit churn`` fits at the defaults (the purchase model's
    parameters, same horizon; the weights, ``model_weight``, ``bias`` and
    ``value_reference_minor``), or ``None`` when ``rules`` already has them: what fitted
    parameters are compared with."""
    cr = rules.churn
    d = ChurnRules()
    default = replace(cr, model=ChurnModel(horizon_days=cr.model.horizon_days),
                      weights=d.weights, model_weight=d.model_weight, bias=d.bias,
                      value_reference_minor=d.value_reference_minor)
    if cr == default:
        return None
    return replace(rules, churn=default)


# -- files -----------------------------------------------------------------------------------


def read_events(path: str, kind: str, rules: Rules, *, fmt: str | None = None,
                currency: str | None = None) -> Parsed:
    """One history file -> its events (sorted by time) and rejections, like ``pulse replay``."""
    fmt = detect_format(path, fmt)
    parser = RowParser(kind, rules, currency=currency, source="evaluate")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = read_csv(handle, parser.spec) if fmt == "csv" else read_jsonl(handle)
            return parse_rows(rows, parser, keep=SHOW_REJECTED)
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror}") from None


def merged(parsed: Iterable[Parsed]) -> Iterator[Event]:
    return heapq.merge(*(p.events for p in parsed), key=_occurred_at)


def _occurred_at(ev: Event) -> int:
    return ev.occurred_at


def render(ev: Evaluation, files: Sequence[str]) -> str:
    a = ev.aucs()
    n = len(ev.samples)
    lines = [
        f"churn evaluation: {', '.join(files)}",
        f"  cutoff {format_time(ev.cutoff)}, horizon {ev.horizon_days:g} days",
        f"  events applied: {sum(ev.applied.values())} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(ev.applied.items())) + ")",
    ]
    if ev.rejected:
        lines.append(f"  rejected: {sum(ev.rejected.values())} ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(ev.rejected.items())) + ")")
    share = f" ({ev.churned / n:.1%})" if n else ""
    lines += [
        f"  customers scored: {n} (bought before the cutoff); no purchase within the "
        f"horizon: {ev.churned}{share}",
        "  ROC AUC for 'no purchase within the horizon':",
    ]
    names = {"churn_score": "churn score", "recency": "recency baseline (days since last "
             "purchase)", "purchase_count": "purchase-count baseline (fewer = riskier)"}
    if ev.compared:  # a rules file with fitted purchase-model parameters
        names = {"churn_score": "churn score, the rules' (fitted) parameters",
                 "churn_score_default_model": "churn score, default parameters",
                 **{k: v for k, v in names.items() if k != "churn_score"}}
    for key, label in names.items():
        v = a[key]
        lines.append(f"    {label:<{max(48, len(label))}s} {'n/a' if v is None else f'{v:.4f}'}")
    s, r, c = a["churn_score"], a["recency"], a["purchase_count"]
    if s is not None and r is not None and c is not None:
        verdict = "beats" if s > max(r, c) else "does NOT beat"
        lines.append(f"  the score {verdict} both baselines (by {s - r:+.4f} and {s - c:+.4f})")
    if ev.history_end is not None and ev.history_end < ev.cutoff + ev.horizon_days * DAY_MS:
        lines.append(f"  warning: the history ends at {format_time(ev.history_end)}, before "
                     "cutoff + horizon: customers may look churned only because the data ends")
    return "\n".join(lines)


def run(history: str, *, cutoff: int, horizon_days: float, rules: Rules,
        tickets: str | None = None, surveys: str | None = None, fmt: str | None = None,
        currency: str | None = None, as_json: bool = False, stdout: IO[str] | None = None,
        stderr: IO[str] | None = None) -> int:
    """The whole command; returns the exit code. Raises ``ReplayError`` for usage errors."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if not horizon_days > 0:
        raise ReplayError("--horizon must be a positive number of days")
    parsed, rejected, names = read_histories(history, tickets, surveys, rules, fmt=fmt,
                                             currency=currency, stderr=stderr)
    result = evaluate(merged(parsed), rules, cutoff, horizon_days,
                      default_rules=with_default_parameters(rules))
    result.rejected.update(rejected)
    stdout.write((json.dumps(result.as_dict()) if as_json else render(result, names)) + "\n")
    return EXIT_OK


def read_histories(history: str, tickets: str | None, surveys: str | None, rules: Rules, *,
                   fmt: str | None, currency: str | None, stderr: IO[str]
                   ) -> tuple[list[Parsed], Counter[str], list[str]]:
    """The purchase, ticket and survey files (the last two optional) -> their parsed events,
    the row rejections by reason (each one reported on ``stderr``) and the file names."""
    files = [(history, PURCHASE), (tickets, TICKET), (surveys, SURVEY)]
    parsed = []
    rejected: Counter[str] = Counter()
    for path, kind in files:
        if path is None:
            continue
        p = read_events(path, kind, rules, fmt=fmt, currency=currency)
        parsed.append(p)
        rejected.update(p.by_reason)
        for r in p.rejected:
            stderr.write(f"{path}: rejected {r}\n")
    return parsed, rejected, [p for p, _ in files if p is not None]


# -- simulated histories (tuning, tests) ---------------------------------------------------------

HISTORY_COLUMNS: dict[str, tuple[str, ...]] = {
    PURCHASE: ("event_id", "customer_id", "occurred_at", "amount", "currency", "order_id",
               "channel", "store_id"),
    TICKET: ("event_id", "customer_id", "occurred_at", "ticket_id", "status", "priority",
             "channel", "category", "sentiment"),
    SURVEY: ("event_id", "customer_id", "occurred_at", "kind", "score", "survey_id",
             "touchpoint"),
}


def history_row(ev: Event, rules: Rules) -> dict[str, Any]:
    """An event as a row of the history CSV format (``pulse replay`` columns)."""
    row: dict[str, Any] = {"event_id": ev.event_id, "customer_id": ev.customer_id,
                           "occurred_at": format_time(ev.occurred_at)}
    if isinstance(ev, Purchase):
        exp = rules.minor_units[ev.currency]
        sign = "-" if ev.kind == "refund" else ""
        whole, frac = divmod(ev.amount_minor, 10**exp) if exp else (ev.amount_minor, 0)
        amount = f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"
        row.update(amount=amount, currency=ev.currency, order_id=ev.order_id,
                   channel=ev.channel, store_id=ev.store_id or "")
    else:
        for name in HISTORY_COLUMNS[ev.event_kind][3:]:
            value = getattr(ev, name)
            row[name] = "" if value is None else value
    return row


def write_history(events: Iterable[Event], directory: Path, rules: Rules) -> dict[str, Path]:
    """Write events as one CSV file per kind (purchase, ticket, survey) in ``directory``;
    redemptions are left out (the replay format has none). Returns the paths by kind."""
    paths = {k: directory / f"{k}s.csv" for k in HISTORY_COLUMNS}
    handles = {k: p.open("w", encoding="utf-8", newline="") for k, p in paths.items()}
    try:
        writers = {k: csv.DictWriter(h, HISTORY_COLUMNS[k]) for k, h in handles.items()}
        for w in writers.values():
            w.writeheader()
        for ev in events:
            writer = writers.get(ev.event_kind)
            if writer is not None:
                writer.writerow(history_row(ev, rules))
    finally:
        for h in handles.values():
            h.close()
    return paths
