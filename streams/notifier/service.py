"""The notifier process (``pulse notifier``) and ``pulse notifier redrive``.

Plain asyncio with an aiokafka consumer and an aiohttp web server, not a Faust app: the
notifier needs one consumer with its own group, manual commits at a frontier that Faust's
acks do not express (a record is finished only when every endpoint is done with it), and a
``/metrics`` page; Faust would add a second consumer group (its own), its topics and its
~220 us a record (shared/TANSU.md) for none of that.

Output topics are subscribed by pattern, so the ``engagement`` topic is picked up when the
engagement layer creates it (within ``metadata_max_age_ms``) and its absence is no error.
A new notifier group starts at the beginning of the topics' retention.

Shutdown (SIGTERM, SIGINT): stop reading, give queued deliveries up to ``DRAIN_S`` to
finish, cancel the rest, commit the frontier (what is finished), leave the group. What was
cancelled is read again by the next notifier and re-sent with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.kafka_client import client_kwargs
from streams.notifier.config import ALERTS, ENGAGEMENT, POINTS, WebhooksConfig
from streams.notifier.delivery import EndpointWorker, Job
from streams.notifier.messages import (
    H_ENDPOINT,
    H_RUN,
    DeadLetter,
    cloud_event,
    decode,
    header,
    is_backfill,
    output_id,
    parse_dead_letter,
    wants,
)
from streams.notifier.offsets import PartitionTrack
from streams.settings import Settings
from streams.worker.admin import _admin
from streams.worker.metrics import NotifierMetrics

log = logging.getLogger(__name__)
DRAIN_S = 5.0  # how long a stopping notifier lets queued deliveries finish


def kafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection arguments of every Kafka client of the notifier: the project's one
    builder (TLS, SASL; README "Security")."""
    return client_kwargs(settings)


@dataclass(frozen=True)
class NotifierTopics:
    alerts: str
    points: str
    engagement: str
    deadletter: str

    @classmethod
    def from_settings(cls, s: Settings) -> NotifierTopics:
        return cls(alerts=s.topic("alerts"), points=s.topic("points"),
                   engagement=s.topic("engagement"),
                   deadletter=s.topic("notifications_deadletter"))

    @property
    def sources(self) -> dict[str, str]:
        """Output topic -> stream."""
        return {self.alerts: ALERTS, self.points: POINTS, self.engagement: ENGAGEMENT}

    @property
    def pattern(self) -> str:
        return "^(" + "|".join(re.escape(t) for t in self.sources) + ")$"


async def ensure_deadletter_topic(settings: Settings) -> None:
    """Create ``notifications-deadletter`` when missing (retries the connection ~20 s; raises
    ``KafkaConnectionError`` when Kafka stays unreachable)."""
    topic = NotifierTopics.from_settings(settings).deadletter
    admin = await _admin(settings)
    try:
        if topic not in set(await admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, settings.partitions,
                                                    settings.replication_factor)])
    finally:
        await admin.close()


class DeadLetterWriter:
    """Produces dead letters and waits for Kafka's ack (a delivery is finished, and its
    offset committable, only once its dead letter is stored)."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.settings = settings
        self.topic = NotifierTopics.from_settings(settings).deadletter
        self.run_id = run_id
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        s = self.settings
        self.producer = AIOKafkaProducer(**kafka_kwargs(s), acks="all",
                                         client_id=f"{s.notifier_group_id}-deadletter")
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def __call__(self, dl: DeadLetter) -> None:
        assert self.producer is not None
        key = dl.record.get("customer_id")
        while True:  # Kafka down: hold the delivery (and the commit frontier) until it is back
            try:
                await self.producer.send_and_wait(
                    self.topic, dl.value(), key=key.encode() if isinstance(key, str) else None,
                    headers=dl.headers(self.run_id))
                return
            except KafkaError as exc:
                log.error("cannot write to %s (%s); retrying", self.topic, exc)
                await asyncio.sleep(1.0)


@dataclass
class _Tracks:
    by_tp: dict[TopicPartition, PartitionTrack] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)

    def get(self, tp: TopicPartition) -> PartitionTrack:
        t = self.by_tp.get(tp)
        if t is None:
            t = self.by_tp[tp] = PartitionTrack()
        return t

    def to_commit(self, only: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        tps = self.by_tp if only is None else [tp for tp in only if tp in self.by_tp]
        out = {}
        for tp in tps:
            f = self.by_tp[tp].frontier
            if f is not None and f != self.committed.get(tp):
                out[tp] = f
        return out

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            t = self.by_tp.pop(tp, None)
            if t is not None:
                t.revoked = True
            self.committed.pop(tp, None)


async def _commit(consumer: AIOKafkaConsumer, tracks: _Tracks,
                  only: Iterable[TopicPartition] | None = None) -> None:
    offsets = tracks.to_commit(only)
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
        tracks.committed.update(offsets)
    except KafkaError as exc:  # a rebalance in progress: the next commit catches up
        log.warning("offset commit failed (%s); will retry", exc)


class Notifier:
    def __init__(self, settings: Settings, config: WebhooksConfig,
                 metrics: NotifierMetrics | None = None) -> None:
        self.settings = settings
        self.config = config
        self.metrics = metrics or NotifierMetrics.create()
        self.topics = NotifierTopics.from_settings(settings)
        self.run_id = uuid.uuid4().hex
        self.dead_letters = DeadLetterWriter(settings, self.run_id)
        self.workers = [EndpointWorker(e, self.metrics, self.dead_letters)
                        for e in config.endpoints]
        self.tracks = _Tracks()
        self.consumer: AIOKafkaConsumer | None = None
        self._stop = asyncio.Event()
        self._web: web.AppRunner | None = None
        self.consuming = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._shutdown()  # what did start, stops
            raise

    async def _start(self) -> None:
        s = self.settings
        await ensure_deadletter_topic(s)
        await self.dead_letters.start()
        for w in self.workers:
            await w.start()
        self.consumer = AIOKafkaConsumer(
            **kafka_kwargs(s), group_id=s.notifier_group_id,
            client_id=f"{s.notifier_group_id}-{self.run_id[:8]}",
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(max(s.session_timeout_s, 2.0) * 1000),
            max_poll_interval_ms=600_000,  # a full endpoint queue may hold the reader a while
            metadata_max_age_ms=30_000,  # notices a new (engagement) topic within 30 s
            max_poll_records=500)
        await self.consumer.start()
        self.consumer.subscribe(pattern=self.topics.pattern, listener=_Listener(self))
        await self._start_web()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consume until ``request_stop``; then drain, commit and stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        consume = asyncio.create_task(self._consume(), name="notifier-consume")
        committer = asyncio.create_task(self._commit_loop(), name="notifier-commit")
        stop = asyncio.create_task(self._stop.wait())
        workers = [t for w in self.workers for t in w.tasks]
        try:
            done, _ = await asyncio.wait({consume, stop, *workers},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            own: list[asyncio.Task[Any]] = [consume, committer, stop]
            for t in own:
                t.cancel()
            for t in own:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self._shutdown()
        for t in done:  # the reader or an endpoint's task died: not a clean stop
            if t is not stop and not t.cancelled() and t.exception():
                raise t.exception()  # type: ignore[misc]

    async def _shutdown(self) -> None:
        self.consuming = False
        deadline = time.monotonic() + DRAIN_S
        while not all(w.idle() for w in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for w in self.workers:
            await w.stop()
        if self.consumer is not None:
            await _commit(self.consumer, self.tracks)
            await self.consumer.stop()
        await self.dead_letters.stop()
        if self._web is not None:
            await self._web.cleanup()
        if self.tracks.by_tp:
            log.info("notifier stopped; offsets committed on %d partitions",
                     len(self.tracks.committed))

    # -- reading and dispatching --------------------------------------------------------

    async def _consume(self) -> None:
        assert self.consumer is not None
        self.consuming = True
        while True:
            batch = await self.consumer.getmany(timeout_ms=500, max_records=500)
            for tp, records in batch.items():
                track = self.tracks.get(tp)
                for r in records:
                    await self._dispatch(r, track)

    async def _dispatch(self, r: ConsumerRecord, track: PartitionTrack) -> None:
        if r.value is None:  # a tombstone (an erased customer): nothing to deliver
            self.metrics.records.labels(r.topic, "tombstone").inc()
            track.add(r.offset, 0)
            return
        stream = self.topics.sources.get(r.topic)
        record = decode(r.value)
        wid = output_id(stream, record) if stream and record is not None else None
        if stream is None or record is None or wid is None:
            log.warning("%s/%d/%d: not an output record with an id; skipped", r.topic,
                        r.partition, r.offset)
            self.metrics.records.labels(r.topic, "undecodable").inc()
            track.add(r.offset, 0)
            return
        headers = list(r.headers or ())
        backfill = is_backfill(record, headers)
        targets = [w for w in self.workers if wants(w.endpoint, stream, record, backfill)]
        if not targets:
            outcome = "backfill" if backfill and any(
                wants(w.endpoint, stream, record, False) for w in self.workers) else \
                "no_consent" if any(wants(w.endpoint, stream, record, backfill, consent=False)
                                    for w in self.workers) else "unwanted"
            self.metrics.records.labels(r.topic, outcome).inc()
            track.add(r.offset, 0)
            return
        self.metrics.records.labels(r.topic, "dispatched").inc()
        track.add(r.offset, len(targets))
        body = cloud_event(stream, r.topic, record, wid)
        for w in targets:
            await w.put(Job(stream=stream, topic=r.topic, partition=r.partition, offset=r.offset,
                            record=record, webhook_id=wid, body=body,
                            timestamp_ms=r.timestamp, track=track))

    async def _commit_loop(self) -> None:
        assert self.consumer is not None
        while True:
            await asyncio.sleep(self.settings.commit_interval_s)
            await _commit(self.consumer, self.tracks)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.consumer is not None:
            await _commit(self.consumer, self.tracks, revoked)
        self.tracks.drop(revoked)

    # -- HTTP: /metrics, /healthz ------------------------------------------------------

    async def _start_web(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", self._healthz)
        self._web = web.AppRunner(app, access_log=None)
        await self._web.setup()
        site = web.TCPSite(self._web, self.settings.web_host, self.settings.notifier_web_port)
        await site.start()

    async def _metrics_page(self, _request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.metrics.registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    async def _healthz(self, _request: web.Request) -> web.Response:
        assigned = self.consumer.assignment() if self.consumer is not None else set()
        body = {"status": "ok" if self.consuming else "starting", "partitions": len(assigned),
                "endpoints": {w.name: w.status() for w in self.workers}}
        return web.json_response(body, status=200 if self.consuming else 503)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.notifier.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("notifier assigned %d partitions", len(assigned))


# -- redrive --------------------------------------------------------------------------------


@dataclass
class RedriveResult:
    endpoint: str
    read: int = 0  # dead letters of this endpoint read
    delivered: int = 0
    deadlettered: int = 0  # failed again: back in the dead-letter topic


async def redrive(settings: Settings, config: WebhooksConfig, names: Iterable[str]
                  ) -> list[RedriveResult]:
    """Send the dead letters of the named endpoints again, with their original
    ``webhook-id``. Each endpoint has its own consumer group
    (``<notifier group>-redrive-<endpoint>``), so a dead letter is redriven once per run
    that reaches it; one that fails again is appended to the topic and read by the next run.
    A run stops at the end of the topic, or at the first dead letter it wrote itself."""
    await ensure_deadletter_topic(settings)
    out = []
    for name in names:
        endpoint = config.endpoint(name)
        assert endpoint is not None
        out.append(await _redrive_endpoint(settings, config, name))
    return out


async def _redrive_endpoint(settings: Settings, config: WebhooksConfig, name: str
                            ) -> RedriveResult:
    topic = NotifierTopics.from_settings(settings).deadletter
    endpoint = config.endpoint(name)
    assert endpoint is not None
    run_id = uuid.uuid4().hex
    writer = DeadLetterWriter(settings, run_id)
    worker = EndpointWorker(endpoint, NotifierMetrics.create(), writer)
    consumer = AIOKafkaConsumer(**kafka_kwargs(settings),
                                group_id=f"{settings.notifier_group_id}-redrive-{name}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    result = RedriveResult(name)
    tracks = _Tracks()
    try:
        await writer.start()
        await worker.start()
        await consumer.start()
        await consumer.topics()  # metadata for the partition count
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                         or ())]
        consumer.assign(tps)
        finished: set[TopicPartition] = set()
        idle_rounds = 0
        while len(finished) < len(tps):
            batch = await consumer.getmany(*[tp for tp in tps if tp not in finished],
                                           timeout_ms=300, max_records=500)
            idle_rounds = 0 if batch else idle_rounds + 1
            for tp, records in batch.items():
                track = tracks.get(tp)
                for r in records:
                    if tp in finished:
                        break
                    if header(r.headers or (), H_RUN) == run_id:
                        finished.add(tp)  # our own re-dead-lettered records: next run
                        break
                    dl = parse_dead_letter(r.value)
                    if dl is None or header(r.headers or (), H_ENDPOINT) != name \
                            or dl.endpoint != name:
                        track.add(r.offset, 0)
                        continue
                    result.read += 1
                    track.add(r.offset, 1)
                    await worker.put(Job(
                        stream=dl.stream, topic=dl.topic, partition=dl.partition,
                        offset=r.offset, record=dict(dl.record), webhook_id=dl.webhook_id,
                        body=cloud_event(dl.stream, dl.topic, dl.record, dl.webhook_id),
                        timestamp_ms=r.timestamp, track=track, attempts_before=dl.attempts))
            for tp in tps:
                hw = consumer.highwater(tp)
                if tp not in finished and hw is not None and await consumer.position(tp) >= hw:
                    finished.add(tp)
            if idle_rounds >= 5:  # nothing more for 1.5 s: caught up whatever the highwater
                finished.update(tps)
        while not worker.idle():
            await asyncio.sleep(0.05)
        await _commit(consumer, tracks)
    finally:
        await worker.stop()
        await consumer.stop()
        await writer.stop()
    result.delivered, result.deadlettered = worker.delivered, worker.deadlettered
    return result
