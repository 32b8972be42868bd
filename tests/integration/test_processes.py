"""`pulse worker --processes N` (issue 17 point 6): N engine processes in one consumer group
under one supervisor (streams/worker/supervisor.py), through the real broker and Redis.

The reference is one engine process on the same input, into its own Redis prefix and group:
the customers export of the supervised run must equal it, row for row, also when one child
is SIGKILLed mid-load and started again by the supervisor."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from processors.rules import DEFAULT_RULES
from streams.errors import EXIT_HALTED
from streams.kafka_client import client_kwargs
from streams.settings import Settings
from streams.tools.devrun import scrape, start_worker, total
from streams.tools.devstack import Child, free_port
from streams.worker.topics import Topics
from streams.worker.views import load_rows
from tests.integration.helpers import (
    as_records,
    differing,
    fences,
    produce,
    running_engine,
    wait_applied,
    wait_until,
)
from tests.integration.history import history

N_EVENTS, N_CUSTOMERS = 3000, 300
OPS_TOKEN, API_TOKEN = "ops-token-0123456789abcdef", "api-token-0123456789abcdef"
STOP_BOUND_S = 20.0  # SIGTERM to exit, all children committed (PULSE_STOP_TIMEOUT_S: 25)


def ask(port: int, path: str, token: str = "", body: Any = None
        ) -> tuple[int, dict[str, Any]]:
    """GET ``path``, or POST ``body`` as JSON."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def split_between_both(port: int, token: str = "") -> bool:
    """Ready, and each of the two processes owns partitions."""
    try:
        status, body = ask(port, "/readyz", token)
    except OSError:
        return False
    return status == 200 and all(p["partitions"] for p in body["processes"])


async def reference_rows(settings: Settings, records: list[tuple[str, bytes, bytes]],
                         as_of: int) -> list[dict[str, Any]]:
    """The export of one engine process over the same input (own group, own prefix)."""
    ref = settings.with_(group_id=settings.group_id + "-ref", redis_prefix="ref")
    async with running_engine(ref):
        await wait_applied(ref, records)
    return (await load_rows(ref, DEFAULT_RULES, as_of)).rows


# The columns that depend on the order in which the topics' events met, which a partition
# moving mid-load changes (tests/integration/history.py, ``comparable``): the churn level
# keeps its hysteresis; the segment reads it (at risk) and the engagement record keeps when
# each segment and message came. The churn score, a function of the rest, is compared.
ORDER_DEPENDENT = frozenset({"churn_level", "segment", "segment_tags", "segment_since",
                             "last_message", "last_message_at"})


def differences(rows: list[dict[str, Any]], ref: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(customer, column, ours, reference) where the exports differ, ``ORDER_DEPENDENT``
    aside."""
    assert [r["customer_id"] for r in rows] == [r["customer_id"] for r in ref]
    return [(a["customer_id"], k, a[k], b[k]) for a, b in zip(rows, ref, strict=True)
            for k in a if k not in ORDER_DEPENDENT and a[k] != b[k]]


async def supervised(settings: Settings, tmp_path: Path, name: str, **changes: Any
                     ) -> tuple[Settings, Child]:
    s = settings.with_(web_port=free_port(), **changes)
    sup = start_worker(s, tmp_path, name, args=("--processes", "2"))
    await wait_until(lambda: split_between_both(s.web_port, s.metrics_token), timeout=90,
                     what="both processes ready, each with partitions")
    return s, sup


async def stop_within_bound(sup: Child) -> float:
    started = time.monotonic()
    sup.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(sup.proc.wait, STOP_BOUND_S + 10)
    took = time.monotonic() - started
    assert code == 0, sup.log_tail()
    assert took < STOP_BOUND_S, (took, sup.log_tail())
    return took


async def test_two_processes_equal_one_and_stop_cleanly_on_sigterm(settings, tmp_path: Path):
    events = history(N_EVENTS, N_CUSTOMERS, seed=17)
    records = as_records(settings, events)
    as_of = max(e.occurred_at for e in events)
    # with tokens: the supervisor needs the metrics token to scrape its processes, and
    # forwards the caller's token to the customer API
    s, sup = await supervised(settings, tmp_path, "sup", metrics_token=OPS_TOKEN,
                              api_tokens=API_TOKEN)
    try:
        await produce(settings, records)
        await wait_applied(s, records)
        rows = (await load_rows(s, DEFAULT_RULES, as_of)).rows
        m = await asyncio.to_thread(scrape, f"http://127.0.0.1:{s.web_port}/metrics",
                                    token=OPS_TOKEN)
        assert ask(s.web_port, "/metrics")[0] == 401
        for row in rows[:4]:  # round robin over the two processes
            status, got = ask(s.web_port, f"/customers/{row['customer_id']}", API_TOKEN)
            assert status == 200 and got["customer"]["purchase_count"] == row["purchase_count"]
        assert ask(s.web_port, f"/customers/{rows[0]['customer_id']}")[0] == 401
        assert ask(s.web_port, "/customers/nobody%2Fhere", API_TOKEN) == (
            404, {"error": "no customer nobody/here"})
        # a member operation (README "Member operations") through the supervisor: the
        # erasure of a customer nobody knows (it changes no row, here or in the reference)
        path, erase = "/customers/nobody-at-all/erasure", {"idempotency_key": "sup-1"}
        first, again = (ask(s.web_port, path, API_TOKEN, erase) for _ in range(2))
        assert first[0] == again[0] == 202  # (a process each: round robin)
        assert first[1]["event_id"] == again[1]["event_id"]  # the same event
        assert ask(s.web_port, path, API_TOKEN, {"points": 1})[0] == 400
    except BaseException:
        sup.stop()
        raise

    # both processes worked, each counted under its own label, nothing twice
    events_total = m["pulse_events_total"]
    for p in ("0", "1"):
        assert total(events_total, process=p, outcome="processed") > 0, p
    assert total(events_total) == len(records)
    assert m["pulse_worker_process_up"] == {(("process", "0"),): 1.0, (("process", "1"),): 1.0}
    # the KPI gauges: one series per partition on the one endpoint, and they add up
    customers = m["pulse_kpi_customers"]
    assert sorted(dict(labels)["partition"] for labels in customers) == ["0", "1", "2", "3"]
    assert all("process" not in dict(labels) for labels in customers)
    assert sum(customers.values()) == len(rows)

    took = await stop_within_bound(sup)
    log = sup.log_path.read_text()
    for tag in ("[supervisor]", "[process 0]", "[process 1]"):
        assert tag in log, tag
    assert "process 0 stopped (exit code 0)" in log and "process 1 stopped (exit code 0)" in log
    # each child committed its partitions' offsets to Kafka before leaving (fence + 1)
    topics = Topics.from_settings(s)
    fence = await fences(s, topics)
    admin = AIOKafkaAdminClient(**client_kwargs(s))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(
            s.group_id, partitions=[TopicPartition(t, p) for t, p in fence])
    finally:
        await admin.close()
    for (t, p), f in fence.items():
        if f >= 0:
            assert committed[TopicPartition(t, p)].offset == f + 1, (t, p, took)

    assert differences(rows, await reference_rows(settings, records, as_of)) == []


async def test_a_killed_process_is_restarted_and_nothing_counts_twice(settings, tmp_path: Path):
    events = history(N_EVENTS * 2, N_CUSTOMERS, seed=18)
    records = as_records(settings, events)
    as_of = max(e.occurred_at for e in events)
    # static membership (one id per child: "<PULSE_INSTANCE_ID>-<index>"): the child started
    # again takes its partitions back without a rebalance of the other
    s, sup = await supervised(settings, tmp_path, "sup", instance_id="procs")
    try:
        async def producer() -> None:  # ~4 s of traffic: the kill lands in the middle of it
            for i in range(0, len(records), 500):
                await produce(settings, records[i:i + 500])
                await asyncio.sleep(0.3)

        prod = asyncio.create_task(producer())
        await wait_until(lambda: total(scrape(f"http://127.0.0.1:{s.web_port}/metrics").get(
            "pulse_events_total", {}), process="1") > 0, timeout=30, what="process 1 working")
        _, body = ask(s.web_port, "/healthz")
        os.kill(body["processes"][1]["pid"], signal.SIGKILL)

        def down() -> bool:
            status, body = ask(s.web_port, "/healthz")
            return status == 503 and "killed by SIGKILL" in body["processes"][1]["reason"]

        await wait_until(down, timeout=5, interval=0.05, what="the death shown in /healthz")
        await prod
        await wait_until(lambda: ask(s.web_port, "/healthz")[1]["processes"][1]["restarts"] == 1
                         and ask(s.web_port, "/readyz")[0] == 200, timeout=60,
                         what="process 1 started again and ready")
        await wait_applied(s, records, timeout=90)
        rows = (await load_rows(s, DEFAULT_RULES, as_of)).rows
        m = await asyncio.to_thread(scrape, f"http://127.0.0.1:{s.web_port}/metrics")
        assert m["pulse_worker_process_restarts_total"][(("process", "1"),)] == 1.0
        await stop_within_bound(sup)
    finally:
        sup.stop()
    log = sup.log_path.read_text()
    assert re.search(r"process 1 exited \(killed by SIGKILL\) after \d+ s; restarting it in "
                     r"1 s", log), log[-3000:]
    assert differences(rows, await reference_rows(settings, records, as_of)) == []
    assert await differing(s, events) == []


async def test_a_halted_process_stops_the_supervisor_with_its_code(settings, tmp_path: Path):
    # Kafka's committed offsets say work was done that Redis does not have: state lost
    events = history(600, 100, seed=19)
    records = as_records(settings, events)
    await produce(settings, records)
    async with running_engine(settings):
        await wait_applied(settings, records)
        await asyncio.sleep(1.0)  # the group's offsets mirror the fence every 0.2 s
    client = aioredis.Redis.from_url(settings.redis_url)
    await client.flushall()
    await client.aclose()

    s = settings.with_(web_port=free_port())
    sup = start_worker(s, tmp_path, "sup", args=("--processes", "2"))
    try:
        code = await asyncio.to_thread(sup.proc.wait, 90)
    finally:
        sup.stop()
    log = sup.log_path.read_text()
    assert code == EXIT_HALTED, log[-3000:]
    assert re.search(r"pulse worker halted: process \d halted \(exit code 4; its log says "
                     r"why\): stopping the others", log), log[-3000:]
    assert "STATE LOST" in log


# -- the supervisor's own rules, with stand-in children (real processes, seconds) --------------

# a child: "exit N", "ignore SIGTERM", or "fail twice, then run": argv[-1] is its index
CHILD = """
import os, signal, sys, time
what, index = sys.argv[1], int(sys.argv[-1])
if what == "ignore-term" and index == 1:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if what.startswith("exit-"):
    sys.exit(int(what[5:]))
if what == "flaky" and index == 0:
    count = os.path.join(os.environ["STAND_IN_DIR"], "starts")
    n = int(open(count).read()) if os.path.exists(count) else 0
    open(count, "w").write(str(n + 1))
    if n < 2:
        sys.exit(1)
open(os.path.join(os.environ["STAND_IN_DIR"], f"ready-{index}"), "w").close()
time.sleep(60)
"""


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              caplog: pytest.LogCaptureFixture) -> Path:
    monkeypatch.setenv("STAND_IN_DIR", str(tmp_path))
    caplog.set_level(logging.INFO, logger="streams.worker.supervisor")
    return tmp_path


def stand_in(what: str, settings: Settings, **options: Any) -> Any:
    from streams.worker.supervisor import Supervisor

    s = settings.with_(web_port=free_port(), stop_timeout_s=1.0)
    return Supervisor(s, 2, command=[sys.executable, "-c", CHILD, what],
                      backoff=(0.01, 0.05), **options)


async def running(sup: Any, where: Path) -> None:
    """Both stand-ins started and past their set-up (signal handlers)."""
    await wait_until(lambda: all(c.alive for c in sup.children) and all(
        (where / f"ready-{c.index}").exists() for c in sup.children), timeout=20,
        what="both stand-ins running")


async def test_children_that_keep_failing_make_the_supervisor_give_up(settings, stand_ins,
                                                                      caplog):
    sup = stand_in("exit-3", settings, max_failures=2)
    code = await asyncio.wait_for(sup.run(), 30)
    assert code == 3
    assert re.fullmatch(r"process \d exited 3 times in a row \(last: exit code 3\); giving up",
                        sup.reason), sup.reason
    assert "restarting it in 0 s (restart 2 of at most 2 in a row)" in caplog.text


async def test_a_halted_child_stops_the_others_with_exit_4(settings, stand_ins, caplog):
    sup = stand_in("exit-4", settings)
    assert await asyncio.wait_for(sup.run(), 30) == EXIT_HALTED
    assert sup.reason.endswith("halted (exit code 4; its log says why): stopping the others")
    assert "restarting" not in caplog.text


async def test_sigterm_kills_a_child_that_does_not_stop_and_exits_0(settings, stand_ins,
                                                                    caplog):
    sup = stand_in("ignore-term", settings)
    task = asyncio.create_task(sup.run())
    await running(sup, stand_ins)
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler, on this loop
    assert await asyncio.wait_for(task, 15) == 0
    assert time.monotonic() - started < 5  # PULSE_STOP_TIMEOUT_S=1, then SIGKILL
    assert "process 1 did not stop within 1 s: killed" in caplog.text
    assert "process 0 stopped (killed by SIGTERM)" in caplog.text
    assert "process 1 stopped (killed by SIGKILL)" in caplog.text
    assert [c.alive for c in sup.children] == [False, False]


async def test_a_child_that_failed_is_started_again_and_counted(settings, stand_ins, caplog):
    sup = stand_in("flaky", settings)
    task = asyncio.create_task(sup.run())
    try:
        await wait_until(lambda: sup.children[0].restarts == 2 and sup.children[0].alive,
                         timeout=15, what="process 0 started a third time")
        await running(sup, stand_ins)
        status, body = await asyncio.to_thread(ask, sup.settings.web_port, "/healthz")
        assert status == 503 and body["processes"][0]["restarts"] == 2
        m = await asyncio.to_thread(scrape, f"http://127.0.0.1:{sup.settings.web_port}/metrics")
        assert m["pulse_worker_process_restarts_total"] == {
            (("process", "0"),): 2.0, (("process", "1"),): 0.0}
        assert m["pulse_worker_process_up"] == {
            (("process", "0"),): 0.0, (("process", "1"),): 0.0}
    finally:
        sup._on_signal(signal.SIGTERM)
        assert await asyncio.wait_for(task, 15) == 0
    assert caplog.text.count("process 0 exited (exit code 1)") == 2
