"""All Prometheus metrics, declared once (the faust ``PrometheusMonitor`` habit).

Names follow Prometheus conventions: ``pulse_`` prefix, base units in the name, ``_total``
for counters. Labels are low-cardinality only: topic, partition, outcome, reason. Never a
customer id.
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics(NamedTuple):
    events: Counter
    deadletters: Counter
    outputs: Counter
    batch_size: Histogram
    batch_duration: Histogram
    latency: Histogram
    redis_rtt: Histogram
    consumer_lag: Gauge
    event_time_lag: Gauge
    partitions_owned: Gauge
    fence_conflicts: Counter
    state_losses: Counter
    offset_out_of_range: Counter
    redis_up: Gauge
    redis_down_seconds: Counter
    tick_failures: Counter
    registry: CollectorRegistry

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        r = registry if registry is not None else CollectorRegistry()
        return cls(
            events=Counter(
                "pulse_events_total",
                "Input records handled, by topic and outcome (processed, duplicate, "
                "redelivered, rerouted, deadletter).",
                ["topic", "outcome"],
                registry=r,
            ),
            deadletters=Counter(
                "pulse_deadletter_total",
                "Records sent to the dead-letter topic, by source topic and reason.",
                ["topic", "reason"],
                registry=r,
            ),
            outputs=Counter(
                "pulse_outputs_total",
                "Records produced to output topics (alerts, ledger entries, dead letters, "
                "re-routed events), counted when Kafka acknowledged them.",
                ["topic"],
                registry=r,
            ),
            batch_size=Histogram(
                "pulse_batch_records",
                "Records per consumed batch.",
                buckets=BATCH_BUCKETS,
                registry=r,
            ),
            batch_duration=Histogram(
                "pulse_batch_duration_seconds",
                "Wall time to process one batch: decode, load, apply, commit, send.",
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            latency=Histogram(
                "pulse_processing_latency_seconds",
                "From the record's Kafka timestamp to its state change committed in Redis.",
                ["topic"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            redis_rtt=Histogram(
                "pulse_redis_roundtrip_seconds",
                "Redis round-trip time by operation (load, commit, ack).",
                ["op"],
                buckets=RTT_BUCKETS,
                registry=r,
            ),
            consumer_lag=Gauge(
                "pulse_consumer_lag_records",
                "Records behind the partition's high watermark, per input topic partition.",
                ["topic", "partition"],
                registry=r,
            ),
            event_time_lag=Gauge(
                "pulse_event_time_lag_seconds",
                "Wall clock minus the newest event time applied on the partition.",
                ["partition"],
                registry=r,
            ),
            partitions_owned=Gauge(
                "pulse_partitions_owned",
                "Partitions (state shards) this worker owns.",
                registry=r,
            ),
            fence_conflicts=Counter(
                "pulse_fence_conflicts_total",
                "Batches discarded because another worker had taken the partition over.",
                registry=r,
            ),
            state_losses=Counter(
                "pulse_state_loss_total",
                "Partitions whose state Redis lost (fence missing or behind Kafka's committed "
                "offsets), by partition and the action taken (halt, rebuild).",
                ["partition", "action"],
                registry=r,
            ),
            offset_out_of_range=Counter(
                "pulse_offset_out_of_range_total",
                "Stored fences that do not fit the partition: beyond_end (topic recreated, "
                "broker lost data), replaced (the record at the fence is another one: topic "
                "recreated) or below_start (retention deleted unprocessed records).",
                ["topic", "partition", "kind"],
                registry=r,
            ),
            redis_up=Gauge(
                "pulse_redis_up",
                "1 while the worker reaches Redis, 0 while it retries.",
                registry=r,
            ),
            redis_down_seconds=Counter(
                "pulse_redis_down_seconds_total",
                "Time the worker spent unable to reach Redis (counted when it comes back).",
                registry=r,
            ),
            tick_failures=Counter(
                "pulse_tick_failures_total",
                "Time-driven changes that raised, by outcome: retried (later, with backoff) "
                "or parked (the customer's time-driven work stopped, a dead letter written).",
                ["outcome"],
                registry=r,
            ),
            registry=r,
        )


class SupervisorMetrics(NamedTuple):
    """``pulse worker --processes N``'s own series (streams/worker/supervisor.py), served
    beside its children's merged ones (those carry the label ``process``)."""

    processes: Gauge
    process_up: Gauge
    restarts: Counter
    registry: CollectorRegistry

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> SupervisorMetrics:
        r = registry if registry is not None else CollectorRegistry()
        by_process = ["process"]
        return cls(
            Gauge("pulse_worker_processes",
                  "Engine processes this worker runs (PULSE_PROCESSES).", registry=r),
            Gauge("pulse_worker_process_up",
                  "1 when the engine process answered this scrape, 0 when it did not "
                  "(exited, starting again, or not answering).", by_process, registry=r),
            Counter("pulse_worker_process_restarts",
                    "Engine processes started again after they exited.", by_process,
                    registry=r),
            r,
        )


class NotifierMetrics(NamedTuple):
    """``pulse notifier``'s own metrics (its own process and registry). Label ``endpoint`` is
    an endpoint's configured name, a handful at most."""

    records: Counter
    deliveries: Counter
    attempt_duration: Histogram
    delivery_latency: Histogram
    retries: Counter
    deadletters: Counter
    queue_depth: Gauge
    circuit_open: Gauge
    registry: CollectorRegistry

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> NotifierMetrics:
        r = registry if registry is not None else CollectorRegistry()
        return cls(
            records=Counter(
                "pulse_notifier_records_total",
                "Output records read, by topic and outcome (dispatched, unwanted, backfill, "
                "no_consent, undecodable).",
                ["topic", "outcome"],
                registry=r,
            ),
            deliveries=Counter(
                "pulse_notifier_deliveries_total",
                "Deliveries finished, by endpoint and outcome (delivered, deadletter).",
                ["endpoint", "outcome"],
                registry=r,
            ),
            attempt_duration=Histogram(
                "pulse_notifier_attempt_duration_seconds",
                "Duration of one HTTP attempt (request to response, timeout or error).",
                ["endpoint"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            delivery_latency=Histogram(
                "pulse_notifier_delivery_latency_seconds",
                "From the output's Kafka timestamp to its delivery (retries included).",
                ["endpoint"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            retries=Counter(
                "pulse_notifier_retries_total",
                "Attempts that will be retried, by endpoint and cause (5xx, 429, timeout, "
                "connection).",
                ["endpoint", "cause"],
                registry=r,
            ),
            deadletters=Counter(
                "pulse_notifier_deadletter_total",
                "Deliveries sent to the notifications dead-letter topic, by endpoint and "
                "reason (rejected, retries_exhausted, retry_after_too_long, circuit_open).",
                ["endpoint", "reason"],
                registry=r,
            ),
            queue_depth=Gauge(
                "pulse_notifier_queue_depth",
                "Deliveries waiting in an endpoint's queue (bounded by its queue_depth).",
                ["endpoint"],
                registry=r,
            ),
            circuit_open=Gauge(
                "pulse_notifier_circuit_open",
                "1 while an endpoint's circuit is open (new deliveries dead-lettered at once).",
                ["endpoint"],
                registry=r,
            ),
            registry=r,
        )
