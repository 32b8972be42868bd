"""KPI gauges on ``/metrics``: the KPI counters of this worker's partitions, read at scrape.

Theory of operation
-------------------
The engine adds every event's KPI increments (``processors/kpi.py``) to two Redis hashes
per partition in the same atomic commit as the state change, so the counters in Redis are
exact and survive restarts. ``KpiCollector.refresh`` (awaited by the ``/metrics`` handler
just before rendering; asynchronous, so the event loop keeps running) makes two pipelined
round trips: the newest applied event time of every partition (the fences), then, for each
partition this worker owns, its level hash and its day counters summed over the window by
the Lua script below. The window ends on the day of the newest event time of all
partitions, or of the wall clock in live mode, so every worker uses the same window
whatever partitions it owns. ``collect`` then serves the snapshot (prometheus_client calls
it synchronously).

Why Lua: a partition's day hash holds thousands of fields (2 x window_days days) and
redis-py's pure-Python reply parser costs ~20 us a field, which would hold the event loop
for tens of milliseconds per partition at every scrape; the script returns a few hundred
sums instead. It is the twin of ``processors.kpi.window`` (the pure reference the unit
tests check by hand); tests/integration/test_kpis.py checks that both agree.

Exported are the KPI *components* -- counts and sums, one series per partition (label
``partition``) -- never ratios, because ratios of different partitions cannot be combined.
PromQL forms the KPIs (``deploy/prometheus/rules/pulse-kpis.yml``): ``max by (partition,
...)`` keeps one series per partition when two workers both exported it around a rebalance,
then ``sum`` adds the partitions. So every KPI is right whatever the number of workers.

Day fields too old for any window are deleted by the script as it reads: the Redis hashes
stay bounded by ``2 x kpi.window_days`` days of counters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from processors import kpi
from processors.rules import Rules
from processors.timeutil import day_of
from streams.worker.keys import Keys

if TYPE_CHECKING:
    from streams.worker.engine import Engine
    from streams.worker.metrics import Metrics

log = logging.getLogger(__name__)


class Spec(NamedTuple):
    """One exported family: the counter it comes from and how."""

    key: str  # the counter's name in processors/kpi.py (first element of a Counts key)
    metric: str
    labels: tuple[str, ...]  # after "partition"
    help: str
    scale: str = ""  # "money": minor units -> major; "ms": milliseconds -> seconds


SPECS: tuple[Spec, ...] = (
    Spec("sv", "pulse_kpi_survey_responses", ("kind", "class", "touchpoint"),
         "Survey responses in the window, by kind (nps, csat, ces), answer class "
         "(nps: promoter 9-10, passive 7-8, detractor 0-6; csat: satisfied 4-5, neutral 3, "
         "dissatisfied 1-2; ces: low_effort 5-7, neutral 4, high_effort 1-3) and touchpoint."),
    Spec("ss", "pulse_kpi_survey_scores", ("kind", "touchpoint"),
         "Sum of the scores of the survey responses in the window (CES = scores / responses)."),
    Spec("ord", "pulse_kpi_orders", ("channel",), "Purchases in the window."),
    Spec("rev", "pulse_kpi_revenue", ("channel",),
         "Gross purchase amount in the window, in the reporting currency "
         "(pulse_kpi_reporting_currency_info).", "money"),
    Spec("ref", "pulse_kpi_refunds", ("channel",),
         "Refunded amount in the window, in the reporting currency.", "money"),
    Spec("active", "pulse_kpi_active_customers", (),
         "Customers with a purchase in the window (E, customers at the end)."),
    Spec("start", "pulse_kpi_period_start_customers", (),
         "Customers active at the window's start, i.e. with a purchase in the window before "
         "it (S)."),
    Spec("new", "pulse_kpi_new_customers", (),
         "Customers whose first purchase is in the window (N)."),
    Spec("lost", "pulse_kpi_lost_customers", (),
         "Customers active at the window's start with no purchase since."),
    Spec("top", "pulse_kpi_tickets_opened", ("channel",), "Tickets opened in the window."),
    Spec("tre", "pulse_kpi_tickets_reopened", ("channel",), "Tickets reopened in the window."),
    Spec("sla", "pulse_kpi_sla_deadlines", ("channel",),
         "SLA deadlines (first response, resolution) settled in the window."),
    Spec("slb", "pulse_kpi_sla_breaches", ("channel",),
         "SLA deadlines settled in the window that were missed."),
    Spec("frc", "pulse_kpi_first_responses", ("channel",),
         "First responses to tickets in the window."),
    Spec("frw", "pulse_kpi_first_response_wait_seconds", ("channel",),
         "Sum of the waits from ticket opened to first response, for the first responses "
         "in the window.", "ms"),
    Spec("pti", "pulse_kpi_points_issued", (), "Loyalty points issued in the window."),
    Spec("ptr", "pulse_kpi_points_redeemed", (), "Loyalty points redeemed in the window."),
    Spec("ptx", "pulse_kpi_points_forfeited", (),
         "Loyalty points expired or clawed back by refunds in the window."),
    Spec("customers", "pulse_kpi_customers", (), "Customers with at least one accepted event."),
    Spec("tier", "pulse_kpi_customers_by_tier", ("tier",), "Loyalty members by tier."),
    Spec("risk", "pulse_kpi_at_risk_customers", ("level",), "Customers by churn-risk level."),
    Spec("points", "pulse_kpi_points_outstanding", (),
         "Loyalty points outstanding (sum of balances: the liability)."),
    Spec("open", "pulse_kpi_open_tickets", ("priority",), "Open support tickets."),
    Spec("seg", "pulse_kpi_customers_by_segment", ("segment",),
         "Customers by engagement segment (processors/engagement: lapsed, new, one_time, "
         "at_risk, big_spender, loyal, active, inactive, prospect)."),
)
SPEC_BY_KEY = {s.key: s for s in SPECS}
# counters exported together, zero-filled, so that PromQL ratios always find both sides
_GROUPS = {**dict.fromkeys(kpi.PURCHASE_FIELDS, kpi.PURCHASE_FIELDS),
           **dict.fromkeys(kpi.TICKET_FIELDS, kpi.TICKET_FIELDS)}
_ALWAYS = (*kpi.CUSTOMER_SETS, *kpi.POINTS_FIELDS, "customers", "points")

WINDOW = "pulse_kpi_window_seconds"
LIFESPAN_CAP = "pulse_kpi_lifespan_cap_seconds"
AS_OF = "pulse_kpi_as_of_timestamp_seconds"
CURRENCY_INFO = "pulse_kpi_reporting_currency_info"
APPLIED_EVENT_TIME = "pulse_applied_event_time_seconds"


def exported_names() -> list[str]:
    """Every family name the collector exports (gauges: sample name = family name)."""
    return [*(s.metric for s in SPECS), WINDOW, LIFESPAN_CAP, AS_OF, CURRENCY_INFO,
            APPLIED_EVENT_TIME]


def _zero_fill(counts: kpi.Counts) -> kpi.Counts:
    out = dict(counts)
    for key in list(counts):
        name = key[0]
        if name == "sv" and len(key) == 4:
            for cls in kpi.ANSWER_CLASSES.get(key[1], ()):
                out.setdefault(("sv", key[1], cls, key[3]), 0)
            out.setdefault(("ss", key[1], key[3]), 0)
        elif name in _GROUPS and len(key) == 2:
            for other in _GROUPS[name]:
                out.setdefault((other, key[1]), 0)
    for name in _ALWAYS:
        out.setdefault((name,), 0)
    return out


def families(parts: Mapping[int, kpi.Counts], rules: Rules, as_of_ms: int | None,
             applied: Mapping[int, Mapping[str, int]] | None = None) -> list[Metric]:
    """The metric families for partition -> counts (``kpi.window`` + ``kpi.levels``)."""
    unit = 10 ** rules.minor_units[rules.reporting_currency]
    fams = {s.key: GaugeMetricFamily(s.metric, s.help, labels=["partition", *s.labels])
            for s in SPECS}
    for p, counts in sorted(parts.items()):
        for key, value in sorted(_zero_fill(counts).items()):
            spec = SPEC_BY_KEY.get(key[0])
            if spec is None or len(key) != len(spec.labels) + 1:
                continue  # a counter of another version: not ours to show
            v = value / unit if spec.scale == "money" else (
                value / 1000 if spec.scale == "ms" else float(value))
            fams[key[0]].add_metric([str(p), *key[1:]], v)
    out: list[Metric] = list(fams.values())
    out.append(GaugeMetricFamily(WINDOW, "Length of the rolling KPI window (seconds; whole "
                                 "UTC days).", value=rules.kpi.window_days * 86_400))
    out.append(GaugeMetricFamily(LIFESPAN_CAP, "Longest customer lifespan CLTV assumes "
                                 "(seconds).", value=rules.kpi.lifespan_cap_days * 86_400))
    info = GaugeMetricFamily(CURRENCY_INFO, "Currency of the KPI money gauges.",
                             labels=["currency"])
    info.add_metric([rules.reporting_currency], 1)
    out.append(info)
    if as_of_ms is not None:
        out.append(GaugeMetricFamily(AS_OF, "End of the KPI window: newest applied event "
                                     "time (or now in live mode), Unix seconds.",
                                     value=as_of_ms / 1000))
    ev = GaugeMetricFamily(APPLIED_EVENT_TIME, "Newest event time committed per input topic "
                           "partition (Unix seconds); time() minus it is the event-time lag.",
                           labels=["topic", "partition"])
    for p, highs in sorted((applied or {}).items()):
        for topic, t in sorted(highs.items()):
            ev.add_metric([topic, str(p)], t / 1000)
    out.append(ev)
    return out


# The window sums of one partition's day counters (see processors.kpi.window, its twin).
# KEYS[1] the day-counter hash; ARGV[1] the as-of UTC day A, ARGV[2] window_days W.
# Deletes the fields of days <= A - 2W (no window reads them again) and returns
# {deleted, "active", E, "start", S, "lost", L, name, sum, name, sum, ...} where name is a
# field without its day ("ord:web") summed over the days in (A - W, A].
WINDOW_LUA = """
local a, w = tonumber(ARGV[1]), tonumber(ARGV[2])
local lo, lo2 = a - w, a - 2 * w
local sums, stale = {}, {}
local active, start, lost = 0, 0, 0
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local f = flat[i]
  local c = string.find(f, ':', 1, true)
  local d = tonumber(string.sub(f, 1, c - 1))
  if d <= lo2 then
    stale[#stale + 1] = f
  elseif d <= a then
    local rest = string.sub(f, c + 1)
    local v = tonumber(flat[i + 1])
    if string.sub(rest, 1, 4) == 'act:' then
      local len = tonumber(string.sub(rest, 5))
      if d > lo then
        if len > a - d then active = active + v end
      else
        if len > lo - d then start = start + v end
        if len > a - d then lost = lost + v end
      end
    elseif d > lo then
      sums[rest] = (sums[rest] or 0) + v
    end
  end
end
for i = 1, #stale, 1000 do
  redis.call('HDEL', KEYS[1], unpack(stale, i, math.min(i + 999, #stale)))
end
local out = {#stale, 'active', active, 'start', start, 'lost', lost}
for k, v in pairs(sums) do
  out[#out + 1] = k
  out[#out + 1] = v
end
return out
"""


def _window_reply(reply: list[Any]) -> tuple[kpi.Counts, int]:
    counts: kpi.Counts = {("new",): 0}
    for i in range(1, len(reply), 2):
        name = reply[i].decode() if isinstance(reply[i], bytes) else str(reply[i])
        counts[tuple(name.split(":"))] = int(reply[i + 1])
    return counts, int(reply[0])


class KpiCollector(Collector):
    """Reads this worker's KPI counters from Redis on ``refresh``; serves them on collect."""

    def __init__(self, engine: Engine, rules: Rules, metrics: Metrics | None = None, *,
                 wall_clock: Callable[[], float] = time.time, timeout_s: float = 2.0) -> None:
        self.engine = engine
        self.rules = rules
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.timeout_s = timeout_s
        self.parts: dict[int, kpi.Counts] = {}  # the last snapshot, per owned partition
        self.as_of_ms: int | None = None
        self._families: list[Metric] = families({}, rules, None)
        self._script: Any = None
        self.failures = 0
        self.deleted = 0  # stale day fields deleted so far

    def describe(self) -> Iterable[Metric]:
        return families({}, self.rules, 0)

    def collect(self) -> Iterable[Metric]:
        return list(self._families)

    async def refresh(self) -> None:
        """Read the fences, then the owned partitions' KPI counters; on a Redis error keep
        serving the pipeline metrics alone (and count the failure)."""
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self._refresh(), self.timeout_s)
        except Exception as exc:  # Redis away: /metrics still serves the pipeline metrics
            self.failures += 1
            self._families = families({}, self.rules, None)
            log.warning("KPI read from Redis failed: %r", exc)
        finally:
            if self.metrics is not None:
                self.metrics.redis_rtt.labels("kpi").observe(time.perf_counter() - t0)

    async def _refresh(self) -> None:
        engine = self.engine
        store = engine.store
        if store is None:
            return
        if self._script is None:
            self._script = store.redis.register_script(WINDOW_LUA)
        owned = engine.owned_partitions
        topics = list(engine.topics.inputs)
        keys = store.keys
        async with store.redis.pipeline(transaction=False) as pipe:
            for p in range(engine.settings.partitions):
                pipe.hmget(keys.fence(p), [Keys.high_field(t) for t in topics])
            fences = await pipe.execute()
        highs = [int(v) for vals in fences for v in vals if v is not None]
        as_of = max(highs) if highs else None
        if engine.settings.clock == "live":  # the wall clock alone: no event date moves it
            as_of = int(self.wall_clock() * 1000)
        async with store.redis.pipeline(transaction=False) as pipe:
            for p in owned:
                pipe.hgetall(keys.kpi_prefix(p) + kpi.GAUGES)
                if as_of is not None:
                    await self._script(keys=[keys.kpi_prefix(p) + kpi.DAYS],
                                       args=[day_of(as_of), self.rules.kpi.window_days],
                                       client=pipe)
            res = await pipe.execute()
        step = 1 if as_of is None else 2
        parts: dict[int, kpi.Counts] = {}
        for i, p in enumerate(owned):
            counts = kpi.levels(res[step * i])
            if as_of is not None:
                window, deleted = _window_reply(res[step * i + 1])
                counts.update(window)
                self.deleted += deleted
            parts[p] = counts
        applied = {p: {t: int(v) for t, v in zip(topics, fences[p], strict=True)
                       if v is not None} for p in owned}
        self.parts, self.as_of_ms = parts, as_of
        self._families = families(parts, self.rules, as_of, applied)


def counts_from_scrape(samples: Mapping[str, Mapping[tuple[tuple[str, str], ...], float]],
                       rules: Rules) -> kpi.Counts:
    """Inverse of ``families`` over scraped samples (``streams.tools.devrun.scrape``), combined
    over partitions, keeping one value per partition: feed it to ``kpi.report``."""
    unit = 10 ** rules.minor_units[rules.reporting_currency]
    seen: dict[tuple[str, ...], dict[str, int]] = {}
    for spec in SPECS:
        for labels, value in samples.get(spec.metric, {}).items():
            d = dict(labels)
            key = (spec.key, *(d.get(lbl, "") for lbl in spec.labels))
            scale = unit if spec.scale == "money" else 1000 if spec.scale == "ms" else 1
            seen.setdefault(key, {})[d.get("partition", "")] = round(value * scale)
    return {key: sum(per_part.values()) for key, per_part in seen.items()}
