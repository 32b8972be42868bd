"""The shard transaction: what one batch does to one partition, decided without I/O.

Theory of operation (README "How it works"; in the spirit of Quix Streams'
``PartitionTransaction``, the one object through which a partition's writes pass):

* **In.** The records alignment released for one partition, in the order they are applied
  (``Item``: decoded events, and records already decided at ingest: dead letters,
  re-routes, replay end markers); the states of the customers at hand (those of the
  records, and those whose time-driven change is due); the shard's metadata as last
  committed (``ShardMeta``: generation, offsets and per-topic event clocks, the replays
  under way and who waits on them, tick failures); the worker's ``Context`` (rules,
  transitions, topics, Redis key names, clock mode, tick guard). Wall-clock and monotonic
  time are arguments.
* **Out** (``ShardResult``). The ``ShardCommit`` that ``commit_batch.lua`` writes atomically
  (states, offsets and clocks of the fence, KPI increments, due-set changes, ledger,
  outbox); the outputs to send once it is written; what the shard adopts then (the decoded
  states, the replay schedule, the tick failures); a tally for the metrics and the logs.
* **No I/O inside**: no Redis, no Kafka, no clock, no metrics, no logging, and the inputs
  are left as they were (the metadata the batch changes is copied). So the engine's batch is
  load -> transaction -> commit -> send -> Kafka commit, a refused commit leaves the shard as
  it was, and ``pulse evaluate churn``, the benchmarks and the tests run the same transaction
  without a broker or Redis. The one memory it touches outside itself is the tick guard's
  time of each customer's next try (streams/worker/poison.py).

Unlike Quix's transaction, it is not a key-value cache the caller reads and writes through
and then flushes: our processors are whole-state functions, so the transaction runs the whole
batch in one call (``run``, once) and hands the engine the writes instead of making them.

What ``run`` decides, in order:

1. Every item in turn. A dead letter or re-route decided at ingest goes to the outbox in its
   place. A replay's end marker notes the topic it came on; once it came on every input
   topic the replay names, the replay ends here. An event moves its topic's clock on and is
   applied with its schedule's clock: live traffic with the wall clock (live mode) or the
   partition's newest event time (event mode), a replayed record with its replay's clock,
   which it moves on. Just before it, the customer's time-driven changes due by its event
   time run (what silence did first). ``Rejected`` and any other exception make a dead
   letter (the partition goes on); a duplicate changes nothing. An erasure request
   (``erasure_requested`` on the customers topic) erases the customer instead (``_erase``,
   streams/worker/erasure.py): no state from there on, its keys deleted in the commit,
   tombstones and a receipt in the outbox.
2. Replays that sent nothing here for ``replay_idle_end_s`` end too. An ended replay's fence
   fields go and its customers join the live schedule.
3. The time-driven changes of every customer at hand, up to its schedule's horizon:
   ``upto`` on the live schedule (live mode: the wall clock; event mode: the partition's
   newest event time minus the lateness, so nothing still acceptable can predate them), a
   replay's clock minus the lateness for a customer waiting on that replay. A tick that
   raises goes to the tick guard: retried with backoff, then parked with a dead letter.
4. The next due time of every customer due or changed, in its schedule's due set (a parked
   customer leaves it); a customer whose schedule changed leaves the old one.

Outputs caused by history (a replay, or older than ``backfill_after``) are marked backfill.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from processors import wire
from processors.customer import Step, Transitions
from processors.errors import Rejected
from processors.rules import Rules
from processors.state import CustomerState
from schemas.events import Event
from streams.settings import Settings
from streams.worker import erasure
from streams.worker.erasure import is_erasure
from streams.worker.keys import Keys
from streams.worker.outbox import OutMsg
from streams.worker.poison import TickFailure, TickGuard
from streams.worker.replays import HEADER_BACKFILL, ReplayEnd, ShardReplays
from streams.worker.store import ShardCommit, ShardMeta
from streams.worker.topics import Topics

# One record released for the transaction: (event time, event or None, record, output or
# None, replay). A record that is not applied (a dead letter or a re-route decided at
# ingest) carries its output, and the event time of the record before it in its topic so
# that it keeps its place in the topic's order. ``replay``: the id of the replay that sent
# it (None: live traffic), or for a control record (event and output None) the replay end
# marker it carries.
Item = tuple[int, Event | None, ConsumerRecord, OutMsg | None, "str | ReplayEnd | None"]

NEVER = -(2**62)  # an event time before any other
DEADLETTER_KEEP_BYTES = 900 * 1024  # larger originals are truncated to stay under Kafka's 1 MB
PROCESSING_ERROR = "processing_error"
_BACKFILL = ((HEADER_BACKFILL, b"1"),)


@dataclass(frozen=True)
class Context:
    """What every transaction of a worker shares."""

    rules: Rules
    transitions: Transitions  # processors.customer.FULL; STATE_ONLY for bench/
    topics: Topics
    keys: Keys  # the names of the keys the commit increments (KPIs, replay outcomes, ...)
    ticks: TickGuard
    live: bool  # PULSE_CLOCK=live: the wall clock drives live traffic's time
    backfill_after_ms: int  # outputs older than this (wall clock) are marked backfill
    replay_idle_end_s: float  # a replay that sent nothing for this long ends
    erasure_key: bytes = b""  # the key of the erasure receipts' keyed hash (erasure.py)

    @classmethod
    def from_settings(cls, settings: Settings, rules: Rules, transitions: Transitions,
                      ticks: TickGuard | None = None, keys: Keys | None = None,
                      erasure_key: bytes = b"") -> Context:
        topics = Topics.from_settings(settings)
        return cls(rules, transitions, topics,
                   keys if keys is not None else Keys(settings.redis_prefix),
                   ticks if ticks is not None else TickGuard(topics.deadletter),
                   settings.clock == "live", int(settings.backfill_after_s * 1000),
                   settings.replay_idle_end_s, erasure_key)


@dataclass(frozen=True)
class DeadLetter:
    """An event the transaction dead-lettered (its record is in the outbox already)."""

    record: ConsumerRecord
    reason: str
    message: str
    error: BaseException | None = None  # processing_error: what the processors raised


@dataclass(frozen=True)
class EndedReplay:
    replay_id: str
    clock: int  # the newest event time it applied here
    idle_s: float | None = None  # ended because it sent nothing for this long (no marker)


@dataclass
class ShardResult:
    commit: ShardCommit  # ``trim`` and ``stamps`` are the engine's to fill in
    outputs: list[OutMsg]  # what the outbox holds, in order: send once committed
    states: dict[str, CustomerState]  # every state at hand after the batch
    replays: ShardReplays  # the shard's replays once committed
    tick_failures: dict[str, int]  # the shard's tick failures once committed
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (topic, outcome)
    dead: list[DeadLetter] = field(default_factory=list)
    ticks_failed: list[TickFailure] = field(default_factory=list)
    ended: list[EndedReplay] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)  # customers erased (none cached any more)


def dead_letter(topic: str, r: ConsumerRecord, reason: str, message: str) -> OutMsg:
    """The dead-letter record of ``r``: its original bytes, and where and why in headers."""
    value = r.value if r.value is not None else b""
    headers = [
        ("pulse.dlq.reason", reason.encode()),
        ("pulse.dlq.message", message.encode()[:2000]),
        ("pulse.dlq.topic", r.topic.encode()),
        ("pulse.dlq.partition", str(r.partition).encode()),
        ("pulse.dlq.offset", str(r.offset).encode()),
        ("pulse.dlq.timestamp", str(r.timestamp).encode()),
    ]
    if len(value) > DEADLETTER_KEEP_BYTES:
        headers.append(("pulse.dlq.truncated_from", str(len(value)).encode()))
        value = value[:DEADLETTER_KEEP_BYTES]
    return OutMsg(topic, r.key, value, None, tuple(headers))


def output_record(topics: Topics, output: Any, backfill: bool = False) -> OutMsg:
    """A processor output (ledger entry, alert, ...) -> the record that carries it.
    Outputs caused by history carry ``"backfill": true`` and the header pulse.backfill."""
    topic = getattr(topics, output.stream)
    if backfill:
        doc = output.as_dict()
        doc["backfill"] = True
        return OutMsg(topic, output.customer_id.encode(), orjson.dumps(doc), None, _BACKFILL)
    return OutMsg(topic, output.customer_id.encode(), orjson.dumps(output.as_dict()))


class ShardTransaction:
    """One batch of one partition (see the module doc). Build it with the items before
    loading (``customers``, ``upto`` and ``replay_upto`` say what to load), then ``run``
    it once with the loaded states."""

    def __init__(self, ctx: Context, meta: ShardMeta, items: Sequence[Item] = (), *,
                 wall_ms: int, mono: float, upto: int | None = None) -> None:
        self.ctx = ctx
        self.meta = meta
        self.partition = meta.partition
        self.items = items
        self.wall_ms = wall_ms  # the wall clock, epoch ms
        self.mono = mono  # monotonic seconds: replay idleness, tick retries
        # how far the live schedule's time-driven changes run (``upto``: a caller's own
        # horizon instead, e.g. the end of a history)
        self.upto = self._live_upto() if upto is None else upto
        self._ran = False

    def customers(self) -> set[str]:
        """The customers of the batch's events."""
        return {it[1].customer_id for it in self.items if it[1] is not None}

    @property
    def replay_upto(self) -> dict[str, int]:
        """How far the time-driven changes of a replay's customers run, by replay."""
        lateness = self.ctx.rules.allowed_lateness_ms
        return {rid: c - lateness for rid, c in self.meta.replays.clocks.items()}

    def _live_upto(self) -> int:
        if self.ctx.live:
            return self.wall_ms
        newest = max((it[0] for it in self.items if it[1] is not None), default=NEVER)
        newest = max(newest, max(self.meta.high.values(), default=NEVER))
        return newest - self.ctx.rules.allowed_lateness_ms

    # -- the batch -------------------------------------------------------------------------

    def run(self, states: Mapping[str, CustomerState | None], due: Sequence[str] = ()
            ) -> ShardResult:
        """Apply the items, then the time-driven changes. ``states``: every customer of the
        items and of ``due`` (``None``: no state yet); ``due``: the customers found due
        on the live or a replay's schedule."""
        if self._ran:
            raise RuntimeError("a shard transaction runs once")
        self._ran = True
        ctx, meta, p = self.ctx, self.meta, self.partition
        self._rules = ctx.rules
        self._states: dict[str, CustomerState | None] = dict(states)
        self._changed: set[str] = set()
        self._out: list[OutMsg] = []
        self._ledger: list[tuple[str, bytes]] = []
        self._incs: dict[tuple[str, str], int] = defaultdict(int)  # one HINCRBY a field
        self._kpi_prefix = ctx.keys.kpi_prefix(p)
        self._stale_before = self.wall_ms - ctx.backfill_after_ms
        self._dues: dict[str, tuple[Any, int | None]] = {}  # cid -> (state, next due)
        self._failures = dict(meta.tick_failures)  # poison.py: bounded retries, then parked
        self._fail_key = ctx.keys.tick_failures(p)
        self._replays = meta.replays.copy()
        self._touched: dict[str, str | None] = {}  # customer -> replay of its latest event
        self._ended: list[str] = []  # replays whose end marker came on every listed topic
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._dead_letters: list[DeadLetter] = []
        self._ticks_failed: list[TickFailure] = []
        self._erased: dict[str, None] = {}  # in order, once each
        offsets, high = self._apply_items()
        fence, fence_del, ended = self._end_replays()
        due_now, due_on, unscheduled = self._schedule(due)
        at_hand: dict[str, Any] = self._states  # (a changed customer always has a state)
        commit = ShardCommit(
            partition=p,
            expected_gen=meta.gen,
            offsets=offsets,
            high=high,
            states={cid: wire.dumps(at_hand[cid]) for cid in self._changed},
            outbox=[msg.pack() for msg in self._out],
            increments=[(k, f, d) for (k, f), d in self._incs.items() if d],
            due=due_now,
            ledger=self._ledger,
            due_on=due_on,
            unscheduled=unscheduled,
            fence=fence,
            fence_del=fence_del,
            released=[e.replay_id for e in ended],
            erased=list(self._erased),
            replay_dues=sorted({*meta.replays.clocks, *self._replays.clocks})
            if self._erased else [],
        )
        return ShardResult(
            commit, self._out,
            {cid: st for cid, st in self._states.items() if st is not None},
            self._replays, self._failures, self._counts, self._dead_letters,
            self._ticks_failed, ended, list(self._erased))

    def _apply_items(self) -> tuple[dict[str, int], dict[str, int]]:
        """Step 1 of the module doc. Returns the offsets and the topics' clocks."""
        apply, timed = self.ctx.transitions.apply, self.ctx.transitions.timed
        rules, states, changed = self._rules, self._states, self._changed
        replays, touched, out = self._replays, self._touched, self._out
        sched = replays.scheduled  # customer -> replay whose clock it waits on
        counts = self._counts
        live, wall_ms, mono = self.ctx.live, self.wall_ms, self.mono
        offsets: dict[str, int] = {}
        high = dict(self.meta.high)
        part_high = max(high.values(), default=NEVER)
        for t, ev, r, msg, rid in self.items:
            topic = r.topic
            offsets[topic] = r.offset
            if ev is None:
                if msg is not None:  # a dead letter or a re-route, decided at ingest
                    out.append(msg)
                    if type(rid) is str:
                        self._outcome(rid, _outcome_of(msg))
                elif isinstance(rid, ReplayEnd):  # a control record: a replay's end marker
                    got = replays.ended.setdefault(rid.replay_id, set())
                    got.add(topic)
                    replays.clocks.setdefault(rid.replay_id, NEVER)
                    inputs = self.ctx.topics.inputs
                    if all(x in got for x in rid.topics if x in inputs):
                        self._ended.append(rid.replay_id)
                continue
            cid = ev.customer_id
            if t > high.get(topic, NEVER):
                high[topic] = t
            if t > part_high:
                part_high = t
            if is_erasure(ev):
                self._erase(ev, topic, rid)
                continue
            if rid is None:
                clock = wall_ms if live else part_high
            else:  # replayed history: applied on the replay's own clock
                clock = replays.clocks.get(rid, NEVER)  # type: ignore[arg-type]
                if t > clock:
                    replays.clocks[rid] = clock = t  # type: ignore[index]
                replays.last_seen[rid] = mono  # type: ignore[index]
            if timed:
                self._catch_up(cid, t, rid is not None)  # what silence did before this event
            try:
                step = apply(states[cid], ev, rules, clock)
            except Rejected as exc:
                self._dead(r, exc.reason, exc.message, None, rid)
                continue
            except Exception as exc:  # a bug must not stop the pipeline: dead-letter the event
                self._dead(r, PROCESSING_ERROR, repr(exc), exc, rid)
                continue
            if step.duplicate:
                counts[(topic, "duplicate")] += 1
                if rid is not None:
                    self._outcome(rid, "duplicate")  # type: ignore[arg-type]
                continue
            counts[(topic, "processed")] += 1
            if rid is not None:
                self._outcome(rid, "applied")  # type: ignore[arg-type]
            states[cid] = step.state
            changed.add(cid)
            if rid is not None or sched or touched:  # only replays make it a question
                touched[cid] = rid  # type: ignore[assignment]
            self._emit(step, rid is not None)
        return offsets, high

    def _end_replays(self) -> tuple[dict[str, str | int], list[str], list[EndedReplay]]:
        """Step 2: the replays that ended here. Returns the fence fields to set and to
        delete, and the ended replays."""
        replays, ended = self._replays, self._ended
        idle: dict[str, float] = {}
        if len(replays.clocks) > len(ended):
            for rid in replays.idle(self.mono, self.ctx.replay_idle_end_s, exclude=ended):
                idle[rid] = self.mono - replays.last_seen[rid]
                ended.append(rid)
        fence: dict[str, str | int] = {}
        fence_del: list[str] = []
        out = []
        for rid in dict.fromkeys(ended):  # the replay is over here: its customers go live
            out.append(EndedReplay(rid, max(replays.clocks.get(rid, 0), 0), idle.get(rid)))
            replays.clocks.pop(rid, None)
            replays.ended.pop(rid, None)
            replays.last_seen.pop(rid, None)
            fence_del += [ShardReplays.CLOCK + rid, ShardReplays.ENDED + rid]
            self._outcome(rid, "ended")
        for rid in replays.clocks:
            fence.update(replays.fence_fields(rid))
        return fence, fence_del, out

    def _schedule(self, due: Sequence[str]
                  ) -> tuple[dict[str, int | None], dict[str, str], list[tuple[str | None, str]]]:
        """Steps 3 and 4: the time-driven changes, then the due sets. Returns the next due
        time by customer, the replay each one waits on (absent: the live schedule), and the
        (schedule, customer) pairs that left a schedule."""
        states, replays = self._states, self._replays
        sched = replays.scheduled
        timed = self.ctx.transitions.timed
        parked, failures = self.ctx.ticks.parked, self._failures
        due_now: dict[str, int | None] = {}
        due_on: dict[str, str] = {}
        unscheduled: list[tuple[str | None, str]] = []
        if not self._touched and not sched:  # no replay here: everyone is on the live schedule
            if timed:
                for cid in list(states):
                    self._catch_up(cid, self.upto)
            for cid in (*due, *self._changed):  # scanned entries are rewritten: stale ones go
                state = states.get(cid)
                due_now[cid] = None if state is None or parked(failures, cid) \
                    else self._due_of(cid, state)
            return due_now, due_on, unscheduled
        schedule = self._schedule_of
        if timed:
            lateness = self._rules.allowed_lateness_ms
            for cid in list(states):
                rid = schedule(cid)
                if rid is None:
                    self._catch_up(cid, self.upto)
                else:
                    self._catch_up(cid, replays.clocks[rid] - lateness, True)
        for cid in (*due, *self._changed):
            state = states.get(cid)
            at = None if state is None or parked(failures, cid) else self._due_of(cid, state)
            due_now[cid] = at
            rid, was = schedule(cid), sched.get(cid)
            if rid != was:
                unscheduled.append((was, cid))
            if rid is not None:
                due_on[cid] = rid
                if at is not None:
                    sched[cid] = rid
                    continue
            sched.pop(cid, None)
        for cid in [c for c, rid in sched.items() if rid not in replays.clocks]:
            del sched[cid]  # their schedule was merged into the live one
        return due_now, due_on, unscheduled

    # -- pieces ----------------------------------------------------------------------------

    def _erase(self, ev: Event, topic: str, rid: str | ReplayEnd | None) -> None:
        """The customer stops existing here (streams/worker/erasure.py): no state, nothing
        of theirs for Redis from this batch (their ledger entries so far are dropped; the
        outputs already in the outbox go out, followed by the tombstones), the level gauges
        without them, a receipt. A later event of the batch starts a fresh state."""
        cid = ev.customer_id
        ctx, states = self.ctx, self._states
        state = states.get(cid)
        states[cid] = None
        self._changed.discard(cid)
        self._dues.pop(cid, None)
        self._failures.pop(cid, None)
        self._touched.pop(cid, None)
        self._replays.scheduled.pop(cid, None)
        self._ledger = [(c, e) for c, e in self._ledger if c != cid]
        self._erased.pop(cid, None)
        self._erased[cid] = None
        if state is not None:
            incs, prefix = self._incs, self._kpi_prefix
            for d in erasure.level_deltas(state, self._rules, ev.occurred_at):
                incs[(prefix + d.bucket, d.field)] += d.delta
        tombstones = ctx.topics.customer_outputs
        key = cid.encode()
        self._out += [OutMsg(t, key, b"", None, (), True) for t in tombstones]
        doc = erasure.receipt(ctx.erasure_key, ev, state, self.wall_ms, tombstones)
        self._out.append(OutMsg(ctx.topics.audit, doc["customer_hash"].encode(),
                                erasure.receipt_bytes(doc)))
        self._counts[(topic, "processed")] += 1
        if rid is not None:
            self._outcome(rid, "applied")  # type: ignore[arg-type]

    def _schedule_of(self, cid: str) -> str | None:
        """The replay whose clock the customer's time-driven changes wait on (None: live)."""
        touched, replays = self._touched, self._replays
        s = touched[cid] if cid in touched else replays.scheduled.get(cid)
        return s if s in replays.clocks else None

    def _catch_up(self, cid: str, until: int, backfill: bool = False) -> None:
        """Run the customer's time-driven changes due at or before ``until``."""
        states = self._states
        state = states.get(cid)
        ticks, failures, p = self.ctx.ticks, self._failures, self.partition
        if state is None or ticks.blocked(p, failures, cid, self.mono):
            return
        at = self._due_of(cid, state)
        if at is None or at > until:
            return
        tick, rules = self.ctx.transitions.tick, self._rules
        for _ in range(16):  # each tick moves the next due time on; bound it anyway
            if at is None or at > until:
                return
            try:
                step = tick(state, rules, at)
            except Exception as exc:  # a bug must not stop the pipeline
                failure = ticks.failed(p, failures, cid, at, exc, self._incs, self._fail_key,
                                       self.mono)
                self._ticks_failed.append(failure)
                if failure.dead is not None:
                    self._out.append(failure.dead)
                return
            if failures:
                ticks.succeeded(p, failures, cid, self._incs, self._fail_key)
            state = states[cid] = step.state
            self._changed.add(cid)
            self._emit(step, backfill)
            nxt = self._due_of(cid, state)
            if nxt is not None and nxt <= at:
                return
            at = nxt

    def _due_of(self, cid: str, state: CustomerState) -> int | None:
        known = self._dues.get(cid)
        if known is not None and known[0] is state:
            return known[1]
        at = self.ctx.transitions.next_due(state, self._rules)
        self._dues[cid] = (state, at)
        return at

    def _emit(self, step: Step, backfill: bool) -> None:
        stale_before, out = self._stale_before, self._out
        outputs: tuple[Any, ...] = step.outputs  # each one has occurred_at too
        for output in outputs:
            msg = output_record(self.ctx.topics, output,
                                backfill or output.occurred_at < stale_before)
            out.append(msg)
            if output.stream == "points":
                self._ledger.append((output.customer_id, msg.value))
        incs, prefix = self._incs, self._kpi_prefix
        for d in step.kpi:
            incs[(prefix + d.bucket, d.field)] += d.delta

    def _outcome(self, rid: str, what: str) -> None:
        """Count what became of a replay's record (``pulse replay --wait`` reads it)."""
        self._incs[(self.ctx.keys.replay_outcome(self.partition, rid), what)] += 1

    def _dead(self, r: ConsumerRecord, reason: str, message: str,
              error: BaseException | None, rid: str | ReplayEnd | None) -> None:
        self._out.append(dead_letter(self.ctx.topics.deadletter, r, reason, message))
        self._dead_letters.append(DeadLetter(r, reason, message, error))
        if rid is not None:
            self._outcome(rid, f"deadletter:{reason}")  # type: ignore[arg-type]


def _outcome_of(msg: OutMsg) -> str:
    """A replay record's outcome counter for a record decided at ingest."""
    for k, v in msg.headers:
        if k == "pulse.dlq.reason":
            return f"deadletter:{v.decode()}"
    return "rerouted"

