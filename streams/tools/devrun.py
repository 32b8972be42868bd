"""``pulse dev``: the whole pipeline on one machine, with a live summary.

Starts a Tansu broker and a redis-server on free loopback ports, creates the topics,
launches ``pulse worker`` as a child process, runs the simulator in this process, and every
few seconds prints what the worker's own ``/metrics`` says (so the summary shows events
that went all the way through: consumed, applied, committed). Ctrl-C or ``--duration``
stops everything; children die with us even on SIGKILL (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from processors import kpi
from processors.rules import Rules
from streams.errors import EXIT_HALTED
from streams.rules_file import load_rules
from streams.settings import PLAIN_TRANSPORT, Settings, to_env
from streams.tools.devstack import (
    Child,
    Stack,
    _die_with_parent,
    free_port,
    running_stack,
    start_redis,
    wait_port,
)
from streams.tools.simulate import SimulationRun
from streams.worker.admin import create_topics
from streams.worker.kpis import counts_from_scrape


def scrape(url: str, timeout: float = 5.0, token: str = ""
           ) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text from ``url`` -> sample name -> labels -> value (``token``: the
    PULSE_METRICS_TOKEN, if set)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: dict[tuple[tuple[str, str], ...], float], **match: str) -> float:
    return sum(v for labels, v in samples.items()
               if all(dict(labels).get(k) == want for k, want in match.items()))


def start_worker(settings: Settings, workdir: Path, name: str = "worker",
                 extra_env: dict[str, str] | None = None, args: Sequence[str] = ()) -> Child:
    """``pulse worker [args]`` as a child process, once its web port listens."""
    env = dict(os.environ)
    env.update(to_env(settings))
    env.update(extra_env or {})
    log_path = workdir / f"{name}.log"
    logf = open(log_path, "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([sys.executable, "-m", "streams.tools.cli", "worker", *args], env=env,
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent, cwd=workdir)
    logf.close()
    child = Child(name, settings.web_port, proc, log_path)
    try:
        wait_port(settings.web_port, timeout=60, proc=proc)
    except Exception as exc:
        child.stop()
        raise RuntimeError(f"worker did not start: {exc}\n{child.log_tail()}") from exc
    return child


CLOCKS = {
    "live": "time-driven changes at the wall clock; the simulated history is a replay on its "
            "own clock",
    "event": "time follows the events only, as in a replay into an empty system",
}


class DevRun:
    def __init__(self, base: Settings, *, simulate: bool, customers: int, rate: float,
                 history_days: int, malformed_rate: float, interval: float,
                 customer_events: bool = True) -> None:
        self.base = base
        self.customer_events = customer_events
        self.simulate = simulate
        self.customers = customers
        self.rate = rate
        self.history_days = history_days
        self.malformed_rate = malformed_rate
        self.interval = interval

    def main(self, duration: float | None) -> int:
        interrupted = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal interrupted
            interrupted = True
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_signal)
        workdir = Path(".pulse/dev").resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"pulse dev: starting Tansu and redis-server (logs in {workdir})", flush=True)
        # Tansu keeps its topics in memory: Redis data of an earlier run would not match them
        shutil.rmtree(workdir / "appendonlydir", ignore_errors=True)
        code = 0
        with running_stack(workdir=workdir, appendfsync="always") as stack:
            self.stack = stack
            settings = self.base.with_(kafka_bootstrap=stack.kafka_bootstrap,
                                       redis_url=stack.redis_url, web_port=free_port(),
                                       **PLAIN_TRANSPORT)
            asyncio.run(create_topics(settings))
            print(f"redis-server started (pid {stack.redis.proc.pid}, append-only file in "
                  f"{workdir})", flush=True)
            self.worker = start_worker(settings, workdir)
            print(f"worker started (pid {self.worker.proc.pid})", flush=True)
            try:
                self._banner(settings)
                try:
                    asyncio.run(self._loop(settings, duration))
                except KeyboardInterrupt:
                    print("\ninterrupted; stopping", flush=True)
                except Halt as exc:
                    print(str(exc), flush=True)
                    code = exc.code
                final = self._summary(settings, None)
                print(f"final: {final}", flush=True)
            finally:
                self.worker.stop(timeout=15)
                print(f"worker stopped (exit {self.worker.proc.returncode}); stopping the stack",
                      flush=True)
        return code

    def _supervise(self, settings: Settings) -> None:
        """Restart a worker or a redis-server that died (Redis comes back with its data
        from the append-only file); a worker that halted on state loss is not restarted."""
        stack: Stack = self.stack
        if not stack.redis.alive():
            print(f"redis-server exited (code {stack.redis.proc.returncode}); restarting it on "
                  f"port {stack.redis.port} with its append-only file", flush=True)
            stack.redis = start_redis(stack.workdir, stack.redis.port, "always")
            print(f"redis-server restarted (pid {stack.redis.proc.pid})", flush=True)
        worker = self.worker
        if worker.alive():
            return
        code = worker.proc.returncode
        if code == EXIT_HALTED:
            raise Halt(f"the worker halted (exit {code}), not restarting it:\n"
                       f"{worker.log_tail(5)}")
        now = time.monotonic()
        self.restarts = [t for t in getattr(self, "restarts", []) if now - t < 60] + [now]
        if len(self.restarts) > 5:
            raise Halt(f"the worker crashed 6 times in a minute; giving up:\n"
                       f"{worker.log_tail()}", 1)
        print(f"worker exited (code {code}); restarting it (log: {worker.log_path})", flush=True)
        self.worker = start_worker(settings, self.stack.workdir,
                                   f"worker-{len(self.restarts)}")
        print(f"worker restarted (pid {self.worker.proc.pid})", flush=True)

    def _banner(self, s: Settings) -> None:
        print("stack ready:", flush=True)
        print(f"  PULSE_KAFKA_BOOTSTRAP={s.kafka_bootstrap}")
        print(f"  PULSE_REDIS_URL={s.redis_url}")
        print(f"  PULSE_PARTITIONS={s.partitions}")
        print(f"  PULSE_CLOCK={s.clock} ({CLOCKS[s.clock]})")
        print(f"  metrics:  http://{s.web_host}:{s.web_port}/metrics")
        print(f"  customer: http://{s.web_host}:{s.web_port}/customers/<id>", flush=True)

    async def _loop(self, settings: Settings, duration: float | None) -> None:
        sim = None
        task = None
        if self.simulate:
            sim = SimulationRun(settings, customers=self.customers, rate=self.rate,
                                history_days=self.history_days,
                                malformed_rate=self.malformed_rate,
                                customer_events=self.customer_events)
            task = asyncio.create_task(sim.run(None))
        started = time.monotonic()
        prev: dict[str, float] | None = None
        try:
            while duration is None or time.monotonic() - started < duration:
                await asyncio.sleep(min(self.interval, max(0.1, (duration or 1e9)
                                                            - (time.monotonic() - started))))
                await asyncio.to_thread(self._supervise, settings)
                if task is not None and task.done() and task.exception():
                    raise task.exception()  # type: ignore[misc]
                prev = self._print(settings, prev, sim)
        finally:
            if sim is not None and task is not None:
                sim.stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
                print(f"simulator: {sim.summary()}", flush=True)
            # let the worker drain what was produced before the final summary
            for _ in range(30):
                await asyncio.sleep(0.5)
                try:
                    if self._counts(settings)["lag"] == 0:
                        break
                except OSError:
                    pass

    def _print(self, settings: Settings, prev: dict[str, float] | None,
               sim: SimulationRun | None) -> dict[str, float]:
        try:
            now = self._counts(settings)
        except OSError as exc:
            print(f"(metrics not reachable yet: {exc})", flush=True)
            return prev or {}
        line = self._summary(settings, now, prev)
        if sim is not None:
            day = time.strftime("%Y-%m-%d", time.gmtime(sim.sim_time_ms / 1000))
            line += f" | sim {sim.phase} {day}"
        print(line, flush=True)
        return now

    def _counts(self, settings: Settings) -> dict[str, float]:
        m = scrape(f"http://{settings.web_host}:{settings.web_port}/metrics",
                   token=settings.metrics_token)
        ev = m.get("pulse_events_total", {})
        c: dict[str, float] = {"t": time.monotonic()}
        for short, topic in (("purchases", settings.topic("purchases")),
                             ("tickets", settings.topic("tickets")),
                             ("surveys", settings.topic("surveys")),
                             ("redemptions", settings.topic("redemptions")),
                             ("customers", settings.topic("customers"))):
            c[short] = total(ev, topic=topic, outcome="processed")
        c["dead"] = total(m.get("pulse_deadletter_total", {}))
        out = m.get("pulse_outputs_total", {})
        c["alerts"] = total(out, topic=settings.topic("alerts"))
        c["ledger"] = total(out, topic=settings.topic("points"))
        c["dup"] = total(ev, outcome="duplicate")
        c["lag"] = total(m.get("pulse_consumer_lag_records", {}))
        try:
            report = kpi.report(counts_from_scrape(m, self._rules(settings)),
                                self._rules(settings))
        except Exception:  # KPIs not reported yet (no events in the window)
            report = {}
        for name in ("nps", "csat", "ces", "active_customers"):
            if report.get(name) is not None:
                c[f"kpi:{name}"] = float(report[name])  # type: ignore[arg-type]
        c["at_risk"] = total(m.get("pulse_kpi_at_risk_customers", {}), level="high")
        c["points_outstanding"] = total(m.get("pulse_kpi_points_outstanding", {}))
        return c

    def _rules(self, settings: Settings) -> Rules:
        if not hasattr(self, "_rules_cache"):
            self._rules_cache = load_rules(settings.rules_file or None)
        return self._rules_cache

    def _summary(self, settings: Settings, now: dict[str, float] | None,
                 prev: dict[str, float] | None = None) -> str:
        if now is None:
            try:
                now = self._counts(settings)
            except OSError as exc:
                return f"metrics unavailable: {exc}"
        parts = []
        dt = (now["t"] - prev["t"]) if prev else 0.0
        for k in ("purchases", "tickets", "surveys", "redemptions", "customers"):
            rate = f" ({(now[k] - prev.get(k, 0)) / dt:,.0f}/s)" if prev and dt > 0 else ""
            label = "customer records" if k == "customers" else k
            parts.append(f"{label} {now.get(k, 0):,.0f}{rate}")
        parts.append(f"dead letters {now['dead']:,.0f}")
        parts.append(f"duplicates {now['dup']:,.0f}")
        parts.append(f"alerts {now['alerts']:,.0f}")
        parts.append(f"ledger entries {now['ledger']:,.0f}")
        parts.append(f"lag {now['lag']:,.0f}")
        if "kpi:nps" in now:
            parts.append(f"NPS {now['kpi:nps']:+.1f}")
        if "kpi:csat" in now:
            parts.append(f"CSAT {now['kpi:csat']:.2f}")
        if now.get("at_risk"):
            parts.append(f"high-risk customers {now['at_risk']:,.0f}")
        if now.get("points_outstanding"):
            parts.append(f"points outstanding {now['points_outstanding']:,.0f}")
        return " | ".join(parts)


class Halt(Exception):
    """The dev stack stops: its worker halted on purpose (state loss, offset reset), or kept
    crashing."""

    def __init__(self, message: str, code: int = EXIT_HALTED) -> None:
        super().__init__(message)
        self.code = code
