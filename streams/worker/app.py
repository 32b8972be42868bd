"""The Faust application: the shell around the batch engine.

Faust gives the worker lifecycle and signals, the web server (``/metrics``, the customer
API), timers and supervision. The input topics do not flow through Faust Streams: a Faust
agent costs ~220 µs of CPU per event before our code runs (shared/TANSU.md), so they are
consumed in batches by ``EngineService``, a ``mode.Service`` that owns the engine's aiokafka
consumer in its own consumer group (DESIGN.md "Hot path").
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import faust
from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processors.rules import Rules
from streams.errors import Halted
from streams.kafka_client import faust_credentials
from streams.settings import Settings
from streams.worker.api import auth_middleware
from streams.worker.api import install as install_api
from streams.worker.engine import Engine
from streams.worker.kpis import KpiCollector
from streams.worker.metrics import Metrics
from streams.worker.operations import OperationsProducer

log = logging.getLogger(__name__)


class EngineService(Service):
    """Runs the engine inside the Faust worker; a crash of the engine stops the worker. Stops
    the API's producer of member operations (started at the first one) with it."""

    def __init__(self, engine: Engine, operations: OperationsProducer, **kwargs: Any) -> None:
        self.engine = engine
        self.operations = operations
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self.engine.start()

    async def on_stop(self) -> None:
        self.engine.request_stop()
        try:
            await self.engine.stop()
        finally:
            await self.operations.stop()

    @Service.task
    async def _consume(self) -> None:
        try:
            while not self.should_stop:
                await self.engine.step()
        except Halted as exc:  # on purpose: a clean stop, then `pulse worker` exits with 4
            log.error("worker halted: %s", exc)
            os.kill(os.getpid(), signal.SIGTERM)
        except Exception as exc:
            if self.engine.stopping:  # Redis away while we were asked to stop
                log.warning("engine stopped with %r", exc)
                return
            log.exception("engine failed; stopping the worker")
            await self.crash(exc)


def create_app(settings: Settings, rules: Rules, metrics: Metrics | None = None) -> faust.App:
    metrics = metrics or Metrics.create()
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_url,
        store="memory://",
        autodiscover=False,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=2.0,
        consumer_auto_offset_reset="earliest",
        broker_credentials=faust_credentials(settings),
        web_application_options={"middlewares": [auth_middleware(settings)]},
    )
    engine = Engine(settings, rules, metrics)
    app.pulse_engine = engine  # type: ignore[attr-defined]
    app.pulse_metrics = metrics  # type: ignore[attr-defined]
    # KPI gauges: this worker's partitions' KPI counters, read from Redis at each scrape
    kpis = KpiCollector(engine, rules, metrics)
    metrics.registry.register(kpis)
    app.pulse_kpis = kpis  # type: ignore[attr-defined]

    operations = OperationsProducer(settings)

    class BoundEngineService(EngineService):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(engine, operations, **kwargs)

    app.service(BoundEngineService)

    @app.page("/metrics")  # type: ignore[arg-type]
    async def metrics_view(self: Any, request: web.Request) -> web.Response:
        await kpis.refresh()
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # /healthz: 200 only while consuming and committing (or idle without lag), else 503 with
    # the reason (streams/worker/health.py); /readyz: started, joined, fences loaded, not halted
    @app.page("/healthz")  # type: ignore[arg-type]
    async def health_view(self: Any, request: web.Request) -> web.Response:
        ok, reason = engine.health.verdict()
        return self.json({"ok": ok, "reason": reason, "partitions": engine.owned_partitions,
                          "batches": engine.batches, "lag": engine.health.lag},
                         status=200 if ok else 503)

    @app.page("/readyz")  # type: ignore[arg-type]
    async def ready_view(self: Any, request: web.Request) -> web.Response:
        ok, reason = engine.health.readiness()
        return self.json({"ok": ok, "reason": reason, "partitions": engine.owned_partitions},
                         status=200 if ok else 503)

    install_api(app, engine, settings, rules, operations)  # /customers/..., /openapi.json

    return app
