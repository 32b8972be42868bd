"""``pulse worker --processes N``: N engine processes in one consumer group, one supervisor.

Theory of operation
-------------------
One engine process does about one core's worth of work (the per-event path is Python), so a
machine with several cores runs several. Each child is an ordinary ``pulse worker`` (started
as ``pulse worker --process-index I``): its own Kafka consumer in ``PULSE_GROUP_ID``, its own
Redis connections and state cache, its own Faust shell. Partitions move between children
exactly as between workers on different machines, and the fences and the atomic commit keep
every event's effect exactly once through those moves (DESIGN.md, guarantee 1): the
supervisor knows nothing of partitions and does no stream work.

* **One address.** The supervisor listens on ``PULSE_WEB_HOST:PULSE_WEB_PORT`` as a single
  worker does, so scrape configurations, probes and Services are the same for 1 or N
  processes (``auto`` makes N a property of the machine, which a manifest cannot list).
  Each child listens on 127.0.0.1 at a free port, with the same tokens. ``/metrics`` scrapes
  every child at request time and merges (``merge``): a child's series gain the label
  ``process`` (its index), so counters stay monotonic per child across restarts; the KPI
  families (``kpis.exported_names()``), which every child reads from the same Redis counters
  for the partitions it owns, keep one series per label set (the highest), so one scrape
  counts each partition once even while two children both report it around a rebalance.
  ``/healthz`` and ``/readyz`` are 200 when every child answers 200, and list each child
  (``combine``). The customer API (its member operations' POSTs too) is forwarded to a
  child, round robin: any child answers for any customer (the state is in Redis).
* **Restarts.** A child that exits is started again after a backoff (1 s, doubling to 30 s);
  after ``MAX_FAILURES`` restarts in a row (a child that ran ``STABLE_AFTER_S`` starts a new
  row) the supervisor gives up: it stops the others and exits with the child's code (1 for a
  signal). A child that exits with ``EXIT_HALTED`` (state loss or an offset reset, README
  "Recovery") stops the supervisor with that code: started again it would halt again.
* **Stopping.** SIGTERM or SIGINT: SIGTERM to every child (each commits and leaves the group),
  SIGKILL to any still running after ``PULSE_STOP_TIMEOUT_S``, exit 0. A second signal kills
  them at once. Children die with the supervisor even if it is SIGKILLed (PR_SET_PDEATHSIG);
  the fences make that as safe as any crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from yarl import URL

from streams.errors import EXIT_HALTED
from streams.settings import Settings, api_tokens
from streams.worker.api import auth_middleware
from streams.worker.kpis import exported_names
from streams.worker.metrics import SupervisorMetrics

log = logging.getLogger(__name__)

MAX_FAILURES = 5  # restarts in a row before giving up
STABLE_AFTER_S = 60.0  # a child that ran this long and exits starts a new row
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 30.0
ASK_TIMEOUT_S = 5.0  # one request to a child (its /metrics reads the KPIs from Redis: 2 s)
PROCESS_LABEL = "process"
SHARED_FAMILIES = frozenset(exported_names())  # the KPI families: one series per label set

_LIBC: Any = None
with contextlib.suppress(OSError):
    _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: nothing is loaded after fork


# -- how many ----------------------------------------------------------------------------------


def cgroup_cpu_limit(proc_cgroup: Path = Path("/proc/self/cgroup"),
                     root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU limit of this process's cgroup in CPUs (a container's ``--cpus``, a
    Kubernetes ``limits.cpu``), or None without one. cgroup v2 ``cpu.max``, or v1 quota."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        try:
            if controllers == "":  # v2: "max 100000" or "150000 100000"
                quota, period = (root / rel / "cpu.max").read_text().split()[:2]
                if quota != "max":
                    return int(quota) / int(period)
            elif "cpu" in controllers.split(","):
                base = root / controllers
                quota_us = int((base / rel / "cpu.cfs_quota_us").read_text())
                period_us = int((base / rel / "cpu.cfs_period_us").read_text())
                if quota_us > 0:
                    return quota_us / period_us
        except (OSError, ValueError):
            continue
    return None


def available_cpus() -> int:
    """The CPUs this process may use: its CPU affinity, and at most its cgroup's limit
    (rounded down, at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, int(limit)))
    return max(1, n)


def resolve_processes(value: str, partitions: int, cpus: Callable[[], int] = available_cpus
                      ) -> tuple[int, str]:
    """(processes, why) for ``PULSE_PROCESSES`` / ``--processes`` (validated already):
    ``auto`` is the CPUs available, at most the partitions (a process owns whole partitions:
    more would sit idle)."""
    if value != "auto":
        return int(value), f"{value} asked"
    n = cpus()
    return min(n, partitions), f"auto: {n} CPUs available, {partitions} partitions"


# -- what the supervisor serves (pure) --------------------------------------------------------


def merge(texts: Mapping[int, str], shared: frozenset[str] = SHARED_FAMILIES) -> list[Metric]:
    """The children's Prometheus texts (index -> text) as one list of families: every sample
    labelled ``process``, except in the ``shared`` families, which keep one sample per name
    and label set (the highest value)."""
    fams: dict[str, Metric] = {}
    best: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}  # shared sample -> position
    for index, text in sorted(texts.items()):
        for fam in text_string_to_metric_families(text):
            out = fams.get(fam.name)
            if out is None:
                out = fams[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for s in fam.samples:
                if fam.name not in shared:
                    out.samples.append(s._replace(labels={**s.labels, PROCESS_LABEL: str(index)}))
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                at = best.get(key)
                if at is None:
                    best[key] = len(out.samples)
                    out.samples.append(s)
                elif s.value > out.samples[at].value:
                    out.samples[at] = s
    return list(fams.values())


@dataclass
class Answer:
    """What the supervisor knows of one child for ``/healthz`` or ``/readyz``."""

    process: int
    pid: int | None
    restarts: int
    status: int | None = None  # the child's HTTP status; None: not running or not answering
    body: Mapping[str, Any] | None = None
    why_not: str = ""  # when status is None: why (exited, starting, not answering)


def combine(answers: Sequence[Answer], what: str) -> tuple[bool, dict[str, Any]]:
    """(ok, body) of the supervisor's ``/healthz`` or ``/readyz`` (``what``: healthy,
    ready): ok when every child answered 200. ``partitions`` is the union of the children's,
    ``lag`` and ``batches`` their sums."""
    rows, bad, parts = [], [], set()
    lag = batches = 0
    for a in answers:
        body = dict(a.body or {})
        ok = a.status == 200 and bool(body.get("ok"))
        reason = str(body.get("reason", "")) if a.status is not None else a.why_not
        owned = list(body.get("partitions") or [])
        parts.update(owned)
        lag += int(body.get("lag") or 0)
        batches += int(body.get("batches") or 0)
        rows.append({"process": a.process, "pid": a.pid, "ok": ok, "reason": reason,
                     "partitions": owned, "restarts": a.restarts})
        if not ok:
            bad.append(f"process {a.process}: {reason or 'not ' + what}")
    ok = bool(answers) and not bad
    reason = f"all {len(answers)} processes {what}" if ok else "; ".join(bad) or "no process"
    out: dict[str, Any] = {"ok": ok, "reason": reason, "partitions": sorted(parts)}
    if what == "healthy":
        out.update(lag=lag, batches=batches)
    out["processes"] = rows
    return ok, out


def describe_exit(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


# -- the supervisor ---------------------------------------------------------------------------


@dataclass
class Child:
    index: int
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    failures: int = 0  # exits in a row
    restarts: int = 0
    last_exit: int | None = None
    restart_at: float | None = None  # while waiting to be started again

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec: no imports
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


class Supervisor:
    """Runs ``processes`` children until a signal, a halted child or too many failures;
    ``run`` returns the exit code."""

    def __init__(self, settings: Settings, processes: int, *,
                 command: Sequence[str] = (sys.executable, "-m", "streams.tools.cli", "worker"),
                 clock: Callable[[], float] = time.monotonic, max_failures: int = MAX_FAILURES,
                 backoff: tuple[float, float] = (BACKOFF_FIRST_S, BACKOFF_MAX_S),
                 stable_after_s: float = STABLE_AFTER_S) -> None:
        self.settings = settings
        self.command = list(command)  # a child runs it with "--process-index I" added
        self.clock = clock
        self.max_failures = max_failures
        self.backoff = backoff
        self.stable_after_s = stable_after_s
        self.children = [Child(i) for i in range(processes)]
        self.metrics = SupervisorMetrics.create()
        self.metrics.processes.set(processes)
        for c in self.children:  # every series from the start (rate() needs the zero)
            self.metrics.process_up.labels(str(c.index)).set(0)
            self.metrics.restarts.labels(str(c.index))
        self.exit_code = 0
        self.reason = ""  # why the supervisor stopped, when it was not asked to
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._next = 0  # round robin of the customer API
        tokens = api_tokens(settings.metrics_token)
        self._ops_headers = {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT_S))
        runner = web.AppRunner(self.web_app(), access_log=None)
        await runner.setup()
        s = self.settings
        await web.TCPSite(runner, s.web_host, s.web_port).start()
        log.info("supervising %d engine processes; /metrics, /healthz, /readyz and the API on "
                 "%s:%d", len(self.children), s.web_host, s.web_port)
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        try:
            await self._stop.wait()
        finally:
            await self._stop_children()
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self._stop_children()  # one a watcher was starting meanwhile
            await runner.cleanup()
            await self._session.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return self.exit_code

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self._stop.is_set():
            log.warning("%s again: killing the processes now", name)
            self._force.set()
            return
        log.info("%s: stopping the processes (each commits and leaves the group)", name)
        self._stop.set()

    def _finish(self, code: int, reason: str) -> None:
        if not self._stop.is_set():
            self.exit_code, self.reason = code, reason
            log.error("%s", reason)
            self._stop.set()

    async def _spawn(self, child: Child) -> None:
        child.port = _free_port()
        env = dict(os.environ)
        env.update(PULSE_WEB_HOST="127.0.0.1", PULSE_WEB_PORT=str(child.port))
        if self.settings.instance_id:  # static membership: one id per child
            env["PULSE_INSTANCE_ID"] = f"{self.settings.instance_id}-{child.index}"
        child.proc = await asyncio.create_subprocess_exec(
            *self.command, "--process-index", str(child.index), env=env,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent)
        child.started_at = self.clock()
        log.info("process %d started (pid %d, http://127.0.0.1:%d)", child.index,
                 child.proc.pid, child.port)

    async def _watch(self, child: Child) -> None:
        while not self._stop.is_set():
            await self._spawn(child)
            assert child.proc is not None
            code = await child.proc.wait()
            child.last_exit = code
            if self._stop.is_set():
                return
            i = child.index
            if code == EXIT_HALTED:
                self._finish(EXIT_HALTED, f"process {i} halted (exit code {code}; its log says "
                             "why): stopping the others")
                return
            ran = self.clock() - child.started_at
            child.failures = 1 if ran >= self.stable_after_s else child.failures + 1
            if child.failures > self.max_failures:
                self._finish(code if 0 < code < EXIT_HALTED else 1,
                             f"process {i} exited {child.failures} times in a row (last: "
                             f"{describe_exit(code)}); giving up")
                return
            first, longest = self.backoff
            delay = min(longest, first * 2 ** (child.failures - 1))
            log.error("process %d exited (%s) after %.0f s; restarting it in %.0f s (restart "
                      "%d of at most %d in a row)", i, describe_exit(code), ran, delay,
                      child.failures, self.max_failures)
            child.restart_at = self.clock() + delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            child.restart_at = None
            if not self._stop.is_set():
                child.restarts += 1
                self.metrics.restarts.labels(str(i)).inc()

    async def _stop_children(self) -> None:
        running = [c for c in self.children if c.alive]
        if not running:
            return
        timeout = self.settings.stop_timeout_s
        log.info("stopping %d processes (SIGTERM; SIGKILL after %.0f s)", len(running), timeout)
        for c in running:
            _send(c, signal.SIGTERM)
        waits = {asyncio.ensure_future(c.proc.wait()): c for c in running if c.proc}
        force = asyncio.ensure_future(self._force.wait())
        pending = set(waits)
        deadline = self.clock() + timeout
        while pending and not force.done() and self.clock() < deadline:
            _, pending = await asyncio.wait(pending | {force}, timeout=deadline - self.clock(),
                                            return_when=asyncio.FIRST_COMPLETED)
            pending.discard(force)
        forced = force.done()
        force.cancel()
        for fut in pending:
            c = waits[fut]
            if forced:
                log.warning("process %d killed (a second signal)", c.index)
            else:
                log.error("process %d did not stop within %.0f s: killed", c.index, timeout)
            _send(c, signal.SIGKILL)
        if pending:
            await asyncio.wait(pending, timeout=10)
        for c in running:
            log.info("process %d stopped (%s)", c.index, describe_exit(
                c.proc.returncode if c.proc else None))

    # -- HTTP -------------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        app = web.Application(middlewares=[auth_middleware(self.settings)])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/{tail:.*}", self._forward)
        app.router.add_post("/{tail:.*}", self._forward)  # member operations
        return app

    async def _ask(self, child: Child, path: str, headers: Mapping[str, str],
                   method: str = "GET", body: bytes | None = None
                   ) -> tuple[int, bytes, Mapping[str, str]]:
        assert self._session is not None
        url = URL(f"http://127.0.0.1:{child.port}{path}", encoded=True)
        async with self._session.request(method, url, headers=dict(headers),
                                         data=body) as resp:
            return resp.status, await resp.read(), dict(resp.headers)

    async def _ask_all(self, path: str) -> list[tuple[Child, Any]]:
        running = [c for c in self.children if c.alive]
        got = await asyncio.gather(*(self._ask(c, path, self._ops_headers) for c in running),
                                   return_exceptions=True)
        return list(zip(running, got, strict=True))

    async def _metrics(self, request: web.Request) -> web.Response:
        texts = {}
        for c, got in await self._ask_all("/metrics"):
            if not isinstance(got, BaseException) and got[0] == 200:
                texts[c.index] = got[1].decode()
        for c in self.children:
            self.metrics.process_up.labels(str(c.index)).set(1 if c.index in texts else 0)
        registry = CollectorRegistry()
        registry.register(_Families([*merge(texts), *self.metrics.registry.collect()]))
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, path: str, what: str) -> web.Response:
        got = {c.index: r for c, r in await self._ask_all(path)} if not self._stop.is_set() \
            else {}
        answers = []
        for c in self.children:
            a = Answer(c.index, c.proc.pid if c.alive and c.proc else None, c.restarts)
            r = got.get(c.index)
            if self._stop.is_set():
                a.why_not = "stopping"
            elif r is None:
                wait = max(0.0, (c.restart_at or self.clock()) - self.clock())
                a.why_not = f"{describe_exit(c.last_exit)}; starting again in {wait:.0f} s"
            elif isinstance(r, BaseException):
                a.why_not = "starting" if self.clock() - c.started_at < 120 and isinstance(
                    r, aiohttp.ClientConnectionError) else f"not answering ({type(r).__name__})"
            else:
                a.status = r[0]
                with contextlib.suppress(ValueError):
                    a.body = orjson.loads(r[1])
            answers.append(a)
        ok, body = combine(answers, what)
        return web.json_response(body, status=200 if ok else 503)

    async def _healthz(self, request: web.Request) -> web.Response:
        return await self._health("/healthz", "healthy")

    async def _readyz(self, request: web.Request) -> web.Response:
        return await self._health("/readyz", "ready")

    async def _forward(self, request: web.Request) -> web.Response:
        """The customer API and anything else a worker serves, from a running child. A POST
        (a member operation) that a child did not take is tried on the next one: its
        idempotency key makes a second try harmless."""
        running = [c for c in self.children if c.alive]
        self._next += 1
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "accept", "content-type")}
        body = await request.read() if request.method == "POST" else None
        for k in range(len(running)):
            c = running[(self._next + k) % len(running)]
            try:
                status, answer, got = await self._ask(c, request.raw_path, headers,
                                                      request.method, body)
            except (TimeoutError, aiohttp.ClientError):
                continue  # starting or gone: the next one
            keep = {k: v for k, v in got.items() if k.lower() in ("content-type",
                                                                  "www-authenticate")}
            return web.Response(status=status, body=answer, headers=keep)
        return web.json_response({"error": "no worker process is answering"}, status=503)


def _send(child: Child, sig: int) -> None:
    if child.proc is not None and child.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, sig)
