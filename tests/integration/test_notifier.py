"""`pulse notifier` as a real process against a real HTTP receiver (aiohttp, in this test).

The receiver checks every request's signature with the `standardwebhooks` verifier, fails
on purpose (500s, a request it answers too late, a 429 with Retry-After), and records what
it accepted by webhook-id. Alerts and ledger entries are produced straight into the output
topics, built by the processors' own output types.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from hashlib import blake2b
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from processors.churn.explain import Reason
from processors.churn.layer import ChurnAlert
from processors.loyalty.ledger import LedgerEntry
from streams.notifier.service import NotifierTopics
from streams.settings import Settings, to_env
from streams.tools.devrun import scrape, total
from streams.tools.devstack import Child, _die_with_parent, free_port
from streams.worker.admin import create_topics
from tests.integration.helpers import header, read_topic, wait_until

pytestmark = pytest.mark.integration

T0 = 1_790_000_000_000
LEVELS = ("low", "medium", "high")
RULES = ("earn", "expiry_notice", "tier_change", "redemption", "refund")


def secret(n: int) -> str:
    return "whsec_" + base64.b64encode(bytes([n]) * 32).decode()


def alert(i: int) -> dict[str, Any]:
    level = LEVELS[i % 3]
    return ChurnAlert(
        alert_id="churn-" + blake2b(f"C{i:04d}|{level}|{i}".encode(), digest_size=10).hexdigest(),
        customer_id=f"C{i:04d}",
        kind="recovered" if i % 7 == 6 else "alert", level=level, previous_level="low",
        score=0.71 + (i % 20) / 100,
        reasons=(Reason("overdue", "overdue 3.1x the usual gap (62 days since the last "
                        "purchase, usually every 20)", 3.1, 0.6),),
        suggested_action="win_back_offer", cause_event_id=f"ev-{i}",
        occurred_at=T0 + i * 60_000).as_dict()


def entry(i: int) -> dict[str, Any]:
    rule = RULES[i % len(RULES)]
    return LedgerEntry(
        entry_id=f"ev-{i}:{rule}", customer_id=f"C{i % 50:04d}", points=10 * (i % 9),
        rule=rule, reason=f"order o-{i}: 42.50 EUR x 1 pt/EUR = 42 pts", balance_after=420 + i,
        tier_after="silver", occurred_at=T0 + i * 60_000, event_id=f"ev-{i}").as_dict()


class Receiver:
    """Webhook receiver: /hook/{endpoint}. ``plans[endpoint](webhook_id, attempt)`` returns
    None (accept) or (status, headers, delay_s) to fail that attempt."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.verifiers = {name: Webhook(s) for name, s in secrets.items()}
        self.got: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list))
        self.attempts: Counter[tuple[str, str]] = Counter()
        self.bad_signatures = 0
        self.plans: dict[str, Callable[[str, int], tuple[int, dict[str, str], float] | None]] = {}
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        wid = request.headers.get("webhook-id", "")
        self.attempts[(name, wid)] += 1
        plan = self.plans.get(name)
        fail = plan(wid, self.attempts[(name, wid)]) if plan else None
        if fail is not None:
            status, headers, delay = fail
            await asyncio.sleep(delay)
            return web.Response(status=status, headers=headers, text="not now")
        try:
            payload = self.verifiers[name].verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=401)
        self.got[name][wid].append(payload)
        return web.Response(status=204)

    def ids(self, name: str) -> set[str]:
        return set(self.got[name])

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook/{name}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def send(settings: Settings, records: list[tuple[str, dict[str, Any] | bytes,
                                                        list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for topic, value, headers in records:
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            key = value.get("customer_id", "x").encode() if isinstance(value, dict) else b"x"
            await producer.send_and_wait(topic, raw, key=key, headers=headers)
    finally:
        await producer.stop()


def notifier_env(settings: Settings, webhooks: Path, port: int,
                 extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(to_env(settings.with_(webhooks_file=str(webhooks), notifier_web_port=port)))
    env.update(extra or {})
    return env


async def start_notifier(env: dict[str, str], workdir: Path, name: str) -> Child:
    port = int(env["PULSE_NOTIFIER_WEB_PORT"])
    log = workdir / f"{name}.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "streams.tools.cli", "notifier"], env=env,
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent, cwd=workdir)
    child = Child(name, port, proc, log)

    def up() -> bool:
        assert proc.poll() is None, f"notifier exited {proc.returncode}:\n{child.log_tail()}"
        with contextlib.suppress(OSError):
            return bool(health(port)["status"] == "ok")
        return False

    await wait_until(up, timeout=60, what=f"{name} consuming")
    return child


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        return dict(json.loads(r.read()))


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.tools.cli", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def write_yaml(path: Path, endpoints: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"endpoints": endpoints}))
    return path


async def notifier_setup(settings: Settings) -> tuple[Settings, NotifierTopics]:
    """The test's settings with a notifier group of its own, and the topics created."""
    s = settings.with_(notifier_group_id=f"{settings.group_id}-notifier")
    await create_topics(s)
    return s, NotifierTopics.from_settings(s)


async def test_every_record_once_despite_failures_and_a_kill9(settings: Settings,
                                                               tmp_path: Path):
    s, topics = await notifier_setup(settings)
    (tmp_path / "crm.secret").write_text(secret(1) + "\n")
    webhooks = write_yaml(tmp_path / "webhooks.yaml", [
        {"name": "crm", "url": "", "secret_file": "crm.secret",
         "streams": {"alerts": {"levels": ["high"]},
                     "points": {"rules": ["expiry_notice", "tier_change"]}},
         "timeout_s": 0.5, "max_attempts": 8, "backoff_initial_s": 0.05,
         "backoff_max_s": 2, "concurrency": 2},
        {"name": "all", "url": "", "secret_env": "ALL_HOOK_SECRET",
         "streams": {"alerts": None, "points": {}},
         "rate_limit_per_s": 40, "timeout_s": 2, "max_attempts": 8,
         "backoff_initial_s": 0.05, "backoff_max_s": 1},
    ])
    async with Receiver({"crm": secret(1), "all": secret(2)}) as rx:
        spec = yaml.safe_load(webhooks.read_text())
        for ep in spec["endpoints"]:
            ep["url"] = rx.url(ep["name"])
        webhooks.write_text(yaml.safe_dump(spec))
        fail_ids: dict[str, tuple[int, dict[str, str], float]] = {}

        def crm_plan(wid: str, n: int) -> tuple[int, dict[str, str], float] | None:
            if n == 1 and wid in fail_ids:
                return fail_ids[wid]
            return (500, {}, 0.0) if n <= 2 and hash(wid) % 4 == 0 else None

        rx.plans["crm"] = crm_plan
        rx.plans["all"] = lambda wid, n: (503, {}, 0.0) if n == 1 and hash(wid) % 5 == 0 \
            else None

        alerts = [alert(i) for i in range(60)]
        entries = [entry(i) for i in range(150)]
        backfill = [dict(alert(1000 + i), backfill=True) for i in range(3)] + \
            [dict(entry(1000 + i), backfill=True) for i in range(3)]
        backfill_by_header = [entry(2000 + i) for i in range(3)]
        want_crm = {a["alert_id"] for a in alerts if a["level"] == "high"} | \
            {e["entry_id"] for e in entries if e["rule"] in ("expiry_notice", "tier_change")}
        want_all = {a["alert_id"] for a in alerts} | {e["entry_id"] for e in entries}
        high = sorted(a["alert_id"] for a in alerts if a["level"] == "high")
        fail_ids[high[0]] = (429, {"Retry-After": "1"}, 0.0)
        fail_ids[high[1]] = (504, {}, 1.5)  # answered after the endpoint's 0.5 s timeout

        first = [(topics.alerts, a, []) for a in alerts[:30]] + \
            [(topics.points, e, []) for e in entries[:75]]
        await send(s, [*first, (topics.alerts, b"not json", []),
                       *[(topics.alerts if "alert_id" in r else topics.points, r, [])
                         for r in backfill],
                       *[(topics.points, r, [("pulse.backfill", b"1")])
                         for r in backfill_by_header]])

        env = notifier_env(s, webhooks, free_port(), {"ALL_HOOK_SECRET": secret(2)})
        n1 = await start_notifier(env, tmp_path, "notifier-1")
        try:
            await wait_until(lambda: len(rx.ids("all")) >= 40, timeout=60,
                             what="deliveries under way")
            n1.proc.send_signal(signal.SIGKILL)  # mid-stream: "all" is rate-limited to 40/s
            n1.proc.wait(10)
            assert len(rx.ids("all")) < len(want_all)
            await send(s, [(topics.alerts, a, []) for a in alerts[30:]] +
                       [(topics.points, e, []) for e in entries[75:]])
            n2 = await start_notifier(env, tmp_path, "notifier-2")
            try:
                await wait_until(lambda: rx.ids("all") >= want_all and rx.ids("crm") >= want_crm,
                                 timeout=90, what="every record at both endpoints")
                await asyncio.sleep(1.0)  # anything extra would arrive now
                metrics = scrape(f"http://127.0.0.1:{n2.port}/metrics")
            finally:
                n2.proc.send_signal(signal.SIGTERM)
                assert n2.proc.wait(20) == 0, n2.log_tail()
        finally:
            n1.stop()

    # exactly the wanted ids: nothing filtered-out, no backfill, each verified
    assert rx.ids("crm") == want_crm
    assert rx.ids("all") == want_all
    assert rx.bad_signatures == 0
    by_id = {a["alert_id"]: a for a in alerts} | {e["entry_id"]: e for e in entries}
    for name in ("crm", "all"):
        for wid, bodies in rx.got[name].items():
            for ev in bodies:  # duplicates after the kill are the same event
                assert ev["id"] == wid and ev["data"] == by_id[wid]
                assert ev["specversion"] == "1.0" and ev["subject"] == by_id[wid]["customer_id"]
                assert ev["time"] == by_id[wid]["occurred_at"]
                assert ev["type"] == ("com.customer-pulse.points.entry" if "entry_id" in ev["data"]
                                      else f"com.customer-pulse.churn.{by_id[wid]['kind']}")
    # the planned failures were retried until they went through
    assert rx.attempts[("crm", high[0])] >= 2 and rx.attempts[("crm", high[1])] >= 2
    # the restarted notifier's own metrics: retries and deliveries by endpoint
    assert total(metrics["pulse_notifier_deliveries_total"], endpoint="crm",
                 outcome="delivered") > 0
    assert total(metrics.get("pulse_notifier_retries_total", {}), endpoint="all") > 0
    # the SIGTERMed notifier committed everything: a third run has nothing to send
    before = sum(len(v) for v in rx.got["all"].values())
    async with Receiver({"crm": secret(1), "all": secret(2)}) as rx2:
        spec = yaml.safe_load(webhooks.read_text())
        for ep in spec["endpoints"]:
            ep["url"] = rx2.url(ep["name"])
        webhooks.write_text(yaml.safe_dump(spec))
        n3 = await start_notifier(env, tmp_path, "notifier-3")
        try:
            # alerts, points and engagement (create_topics makes all three)
            await wait_until(lambda: health(n3.port)["partitions"] == 3 * s.partitions,
                             timeout=60, what="notifier-3 assigned")
            await asyncio.sleep(1.5)
        finally:
            n3.stop()
        assert sum(rx2.attempts.values()) == 0, (before, rx2.attempts)


async def test_dead_endpoint_deadletters_without_holding_others_and_redrive(
        settings: Settings, tmp_path: Path):
    s, topics = await notifier_setup(settings)
    async with Receiver({"dead": secret(3), "ok": secret(4)}) as rx:
        webhooks = write_yaml(tmp_path / "webhooks.yaml", [
            {"name": "dead", "url": rx.url("dead"), "secret": secret(3),
             "streams": {"points": None, "engagement": None}, "timeout_s": 0.3,
             "max_attempts": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.1,
             "circuit_failures": 3, "circuit_open_s": 600, "queue_depth": 5,
             "concurrency": 1},
            {"name": "ok", "url": rx.url("ok"), "secret": secret(4),
             "streams": {"points": None, "engagement": None}},
        ])
        # dead and slow: every attempt times out, or (once the test is done waiting) fails
        rx.plans["dead"] = lambda wid, n: (500, {}, 0.6)
        # (create_topics made the engagement topic too)
        entries = [entry(i) for i in range(40)]
        message = {"message_id": "C0001:birthday@2026", "kind": "birthday",
                   "customer_id": "C0001", "occurred_at": "2026-12-01T09:00:00.000Z",
                   "marketing_consent": True}
        await send(s, [(topics.points, e, []) for e in entries] +
                   [(topics.engagement, message, [])])
        want = {e["entry_id"] for e in entries} | {message["message_id"]}
        env = notifier_env(s, webhooks, free_port())
        n = await start_notifier(env, tmp_path, "notifier")
        try:
            await wait_until(lambda: rx.ids("ok") == want, timeout=60,
                             what="the healthy endpoint got everything")
            dead = await read_topic(s, topics.deadletter, expect=len(want), timeout=60)
            metrics = scrape(f"http://127.0.0.1:{n.port}/metrics")
        finally:
            n.proc.send_signal(signal.SIGTERM)
            assert n.proc.wait(20) == 0, n.log_tail()
        assert len(dead) == len(want)
        assert not rx.got["dead"]
        # the dead endpoint did not hold up the healthy one: with one delivery at a time and
        # a queue of 5, "ok" got all 41 records while "dead" was tried only for the 3
        # dead letters in a row that opened its circuit (2 attempts each)
        assert sum(n for (name, _), n in rx.attempts.items() if name == "dead") == 6
        envelopes = [json.loads(r.value) for r in dead]
        assert {e["webhook_id"] for e in envelopes} == want
        by_id = {e["entry_id"]: e for e in entries} | {message["message_id"]: message}
        for r, env_ in zip(dead, envelopes, strict=True):
            assert header(r, "pulse.notify.endpoint") == env_["endpoint"] == "dead"
            assert env_["record"] == by_id[env_["webhook_id"]]
            assert env_["reason"] in ("retries_exhausted", "circuit_open")
            assert "timeout after 0.3 s" in env_["last_error"]
            if env_["reason"] == "retries_exhausted":
                assert env_["attempts"] == 2 == int(header(r, "pulse.notify.attempts") or 0)
        assert total(metrics["pulse_notifier_deliveries_total"], endpoint="dead",
                     outcome="deadletter") == len(want)
        assert total(metrics["pulse_notifier_deadletter_total"], endpoint="dead",
                     reason="retries_exhausted") == 3
        assert total(metrics["pulse_notifier_circuit_open"], endpoint="dead") == 1

        # the endpoint is fixed: redrive delivers every dead letter once
        del rx.plans["dead"]
        code, out = await run_cli(env, "notifier", "redrive", "--endpoint", "dead")
        assert code == 0, out
        assert f"dead: {len(want)} dead letters read, {len(want)} delivered" in out
        assert rx.ids("dead") == want
        assert all(len(v) == 1 for v in rx.got["dead"].values())
        ev = rx.got["dead"][message["message_id"]][0]
        assert ev["type"] == "com.customer-pulse.engagement.birthday" and ev["data"] == message
        # a second redrive has nothing left to send
        code, out = await run_cli(env, "notifier", "redrive")
        assert code == 0 and "dead: 0 dead letters read" in out, out
        assert all(len(v) == 1 for v in rx.got["dead"].values())


def _engagement(mid: str, kind: str, email: bool | None) -> dict[str, Any]:
    marketing = kind != "segment_change"
    record: dict[str, Any] = {
        "kind": kind, "customer_id": "C0007", "occurred_at": "2026-03-10T08:00:00.000Z",
        "marketing": marketing,
        "consent": {"email": email, "sms": None, "push": None, "post": None, "phone": None}}
    record["message_id" if marketing else "change_id"] = mid
    return record


async def test_marketing_goes_only_to_channels_the_customer_opted_in_to(
        settings: Settings, tmp_path: Path):
    """An endpoint that reaches customers by e-mail gets the birthday of a customer who had
    opted in, not of one who opted out or was never asked (counted ``no_consent``); a
    segment change (not marketing) goes whatever the consent."""
    s, topics = await notifier_setup(settings)
    async with Receiver({"mail": secret(5), "crm": secret(6)}) as rx:
        webhooks = write_yaml(tmp_path / "webhooks.yaml", [
            {"name": "mail", "url": rx.url("mail"), "secret": secret(5),
             "streams": {"engagement": {"consent_channels": ["email"]}}},
            {"name": "crm", "url": rx.url("crm"), "secret": secret(6),
             "streams": {"engagement": {"kinds": ["segment_change"]}}},
        ])
        records = [_engagement("msg-in", "birthday", True),
                   _engagement("msg-out", "birthday", False),
                   _engagement("msg-never", "birthday", None),
                   _engagement("seg-1", "segment_change", False)]
        await send(s, [(topics.engagement, r, []) for r in records])
        n = await start_notifier(notifier_env(s, webhooks, free_port()), tmp_path, "notifier")
        try:
            await wait_until(lambda: rx.ids("mail") == {"msg-in", "seg-1"}
                             and rx.ids("crm") == {"seg-1"}, timeout=60,
                             what="the deliveries the consent allows")
            await asyncio.sleep(1.0)  # nothing more comes
            metrics = scrape(f"http://127.0.0.1:{n.port}/metrics")
        finally:
            n.proc.send_signal(signal.SIGTERM)
            assert n.proc.wait(20) == 0, n.log_tail()
    assert rx.ids("mail") == {"msg-in", "seg-1"} and rx.ids("crm") == {"seg-1"}
    assert total(metrics["pulse_notifier_records_total"], topic=topics.engagement,
                 outcome="no_consent") == 2


async def test_the_readme_receiver_accepts_our_deliveries_and_refuses_forgeries(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver example of the README ("Notifications"), run as written, behind a real
    server, gets one delivery from an EndpointWorker; a wrong secret is refused (401, so a
    dead letter with reason 'rejected', no retry)."""
    from streams.notifier.config import parse_webhooks
    from streams.notifier.delivery import EndpointWorker, Job
    from streams.notifier.messages import DeadLetter, cloud_event
    from streams.worker.metrics import NotifierMetrics

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("A receiver, in a few")[1].split("```python\n")[1].split("```")[0]
    code = code.split("app = web.Application()")[0]  # everything but starting the server
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", secret(7))
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    app = web.Application()
    app.add_routes([web.post("/hooks/pulse", scope["receive"])])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    dead: list[DeadLetter] = []

    async def dead_letter(dl: DeadLetter) -> None:
        dead.append(dl)

    cfg = parse_webhooks({"endpoints": [
        {"name": n, "url": f"http://127.0.0.1:{port}/hooks/pulse", "secret": secret(k),
         "streams": {"alerts": None}, "max_attempts": 3, "backoff_initial_s": 0.01}
        for n, k in (("right", 7), ("wrong", 8))]}, {})
    a = alert(2)
    try:
        for ep in cfg.endpoints:
            w = EndpointWorker(ep, NotifierMetrics.create(), dead_letter)
            await w.start()
            try:
                job = Job(stream="alerts", topic="churn-alerts", partition=0, offset=0, record=a,
                          webhook_id=a["alert_id"], timestamp_ms=T0,
                          body=cloud_event("alerts", "churn-alerts", a, a["alert_id"]))
                assert await w.deliver(job) is (ep.name == "right")
                assert await w.deliver(job) is (ep.name == "right")  # a redelivery: dropped
                if ep.name == "right":  # an id no HTTP header can carry: rejected, no retry
                    job.webhook_id = "C1:expiry_notice\r\nx: y"
                    assert await w.deliver(job) is False
            finally:
                await w.stop()
    finally:
        await runner.cleanup()
    assert scope["seen"] == {a["alert_id"]}
    assert [(d.endpoint, d.reason, d.attempts) for d in dead] == \
        [("right", "rejected", 1)] + [("wrong", "rejected", 1)] * 2
    assert dead[0].last_error.startswith("cannot send: ")
    assert [d.last_error for d in dead[1:]] == ["HTTP 401"] * 2
