"""Member operations through a real `pulse worker`, the real broker and Redis (README "Member
operations"): a redemption and an adjustment POSTed, answered 202, applied once even when
retried with the same idempotency key after the worker was SIGKILLed; the outcome read
back; user errors as 4xx JSON bodies matching the OpenAPI document; the `pulse` commands;
subject access (GET /customers/{id}/export = `pulse customer ID --json`)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from processors import wire
from schemas.codec import encode
from schemas.events import Purchase, PurchaseLine
from streams.settings import Settings
from streams.tools.devrun import start_worker
from streams.tools.devstack import free_port
from streams.worker.keys import Keys
from streams.worker.openapi import document
from streams.worker.topics import Topics
from tests.integration.helpers import produce, read_topic, wait_until
from tests.integration.test_api import pulse

TOKEN = "members-token-0123456789abcdef"
DAY = 86_400_000


def call(url: str, body: Any = None, token: str = TOKEN, raw: bytes | None = None
         ) -> tuple[int, Any]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """``body`` must match the document's schema for ``method path`` answering ``status``."""
    response = doc["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    registry = Registry().with_resource("urn:api", Resource.from_contents(
        doc, default_specification=DRAFT202012))
    ref = schema["$ref"].replace("#", "urn:api#", 1)
    Draft202012Validator({"$ref": ref}, registry=registry,
                         format_checker=Draft202012Validator.FORMAT_CHECKER).validate(body)


async def fence_offset(redis_client: Any, settings: Settings, topic: str, partition: int
                       ) -> int:
    v = await redis_client.hget(Keys(settings.redis_prefix).fence(partition),
                                Keys.offset_field(topic))
    return -1 if v is None else int(v)


async def test_operations_apply_once_across_a_sigkill_and_are_read_back(
        settings: Settings, tmp_path: Path, redis_client: Any) -> None:
    s = settings.with_(web_port=free_port(), api_tokens=TOKEN, instance_id="members-worker")
    topics = Topics.from_settings(s)
    doc = document()
    base = f"http://127.0.0.1:{s.web_port}/customers"
    now = int(time.time() * 1000)
    # 100.00 EUR of groceries earns 100 points (the default rules: 1 pt/EUR)
    purchase = Purchase("m-p1", "M 1", now - 2 * DAY, "pos", "o-1", "store", "purchase", 10000,
                        "EUR", (PurchaseLine("sku", "grocery", 1, 10000),))
    await produce(s, [(topics.purchases, b"M 1", encode(purchase))])
    url = f"{base}/{quote('M 1', safe='')}"
    worker = start_worker(s, tmp_path, "worker-0")
    try:
        await wait_until(lambda: call(url)[0] == 200, timeout=60, what="the customer")
        assert call(url)[1]["customer"]["points_balance"] == 100

        # a redemption, applied
        req = {"reward_id": "mug", "points": 30, "idempotency_key": "till-7/0001"}
        code, first = call(f"{url}/redemptions", req)
        assert code == 202, first
        check(doc, "/customers/{customer_id}/redemptions", "post", 202, first)
        event_id = first["event_id"]
        assert first["entry_ids"][0] == f"{event_id}:redemption"

        def outcome() -> list[dict[str, Any]]:
            got = call(f"http://127.0.0.1:{s.web_port}{first['outcome']}")
            assert got[0] == 200, got
            check(doc, "/customers/{customer_id}/ledger", "get", 200, got[1])
            return list(got[1]["entries"])

        await wait_until(lambda: bool(outcome()), timeout=30, what="the redemption's entry")
        assert [(e["rule"], e["points"], e["balance_after"]) for e in outcome()] == [
            ("redemption", -30, 70)]

        # the worker dies; meanwhile an operator credits goodwill from the command line
        worker.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(worker.proc.wait, 10)
        goodwill = ["--points", "25", "--operator", "agent-jane", "--reason",
                    "parcel arrived damaged", "--idempotency-key", "call-42"]
        rc, out, err = await pulse(s, "points", "adjust", "M 1", *goodwill)
        assert rc == 0, (out, err)
        adjustment_id = out.split("event ", 1)[1].split()[0]
        # the worker is back; the till, unsure, sends the redemption again, and the
        # operator's tool the adjustment (the same idempotency key: the same event)
        worker = start_worker(s, tmp_path, "worker-1")
        code, again = call(f"{url}/redemptions", req)
        if code == 503:  # the web server answers before the engine has started: retry
            assert again == {"error": "engine not started"}, again
            await wait_until(lambda: call(url)[0] == 200, timeout=60, what="the engine")
            code, again = call(f"{url}/redemptions", req)
        assert code == 202 and again["event_id"] == event_id, again
        assert (again["partition"], again["offset"]) != (first["partition"], first["offset"])

        adjust = {"points": 25, "operator": "agent-jane", "reason": "parcel arrived damaged",
                  "idempotency_key": "call-42"}
        code, credited = call(f"{url}/adjustments", adjust)
        assert code == 202 and credited["event_id"] == adjustment_id, credited
        check(doc, "/customers/{customer_id}/adjustments", "post", 202, credited)

        async def covered() -> bool:
            return (await fence_offset(redis_client, s, topics.redemptions, again["partition"])
                    >= again["offset"] and await fence_offset(
                        redis_client, s, topics.adjustments, credited["partition"])
                    >= credited["offset"])

        await wait_until(covered, timeout=60, what="the retries applied")
        assert [e["rule"] for e in outcome()] == ["redemption"]  # once
        code, got = call(f"{url}/ledger?event_id={adjustment_id}")
        assert code == 200 and [(e["rule"], e["points"], e["reason"]) for e in got["entries"]] \
            == [("adjustment", 25, 'adjustment by agent-jane: "parcel arrived damaged": +25 pts')]
        assert call(url)[1]["customer"]["points_balance"] == 95  # 100 - 30 + 25, each once

        # a debit the balance cannot cover: rejected, with the reason, readable afterwards
        code, debit = call(f"{url}/adjustments", {**adjust, "points": -500,
                                                   "idempotency_key": "fix-1"})
        assert code == 202
        await wait_until(lambda: bool(call(f"http://127.0.0.1:{s.web_port}"
                                           f"{debit['outcome']}")[1]["entries"]),
                         timeout=30, what="the debit's outcome")
        [rejected] = call(f"http://127.0.0.1:{s.web_port}{debit['outcome']}")[1]["entries"]
        assert (rejected["entry_id"], rejected["points"]) == (debit["entry_ids"][1], 0)
        assert rejected["reason"].endswith(
            "-500 pts not applied: the balance is 95 pts, a debit may not take it below 0")
        ledger = await read_topic(s, topics.points, expect=2)
        ids = [json.loads(r.value)["entry_id"] for r in ledger]
        assert ids.count(f"{event_id}:redemption") >= 1  # a re-sent duplicate has the same id
        assert {i for i in ids if i.startswith(event_id)} == {f"{event_id}:redemption"}

        # user errors: 4xx with a JSON body the document describes
        path = "/customers/{customer_id}/redemptions"
        for body, status, says in (
                ({**req, "points": 0}, 400, "points: must be between 1"),
                ({**req, "coupon": "x"}, 400, "unknown field 'coupon'"),
                ({k: v for k, v in req.items() if k != "idempotency_key"}, 400,
                 "idempotency_key: required")):
            code, got = call(f"{url}/redemptions", body)
            assert (code, got["error"][:len(says)]) == (status, says), got
            check(doc, path, "post", status, got)
        code, got = call(f"{url}/redemptions", raw=b"{not json")
        assert code == 400 and got["error"].startswith("the body is not JSON")
        code, got = call(f"{base}/nobody/redemptions", req)
        assert code == 404 and got == {"error": "no customer nobody"}
        check(doc, path, "post", 404, got)
        code, got = call(f"{url}/redemptions", req, token="wrong-token-0123456789")
        assert code == 401
        check(doc, path, "post", 401, got)
        code, got = call(f"{url}/ledger", req)  # POST where only GET is served
        assert code == 405 and "GET" in got["error"]
        code, got = call(f"{url}/ledger?since=yesterday")
        assert code == 400 and "since" in got["error"]

        # the same operations from the command line
        rc, out, err = await pulse(s, "rewards", "redeem", "M 1", "--reward", "tv",
                                   "--points", "1000", "--idempotency-key", "cli-1", "--wait")
        assert rc == 1, (out, err)
        assert "rejected: reward tv not redeemed: it costs 1000 pts, the balance is 95 pts" in out
        rc, out, err = await pulse(s, "rewards", "redeem", "nobody", "--reward", "tv",
                                   "--points", "5")
        assert rc == 2 and "unknown customer 'nobody'" in err and "Traceback" not in err
        assert err.count("\n") <= 2
        rc, out, err = await pulse(s, "rewards", "redeem", "M 1", "--reward", "tv",
                                   "--points", "0")
        assert rc == 2 and err.startswith("error: points: must be between 1")

        # subject access: the API and the command give the same document
        code, export = call(f"{url}/export")
        assert code == 200, export
        check(doc, "/customers/{customer_id}/export", "get", 200, export)
        rc, out, err = await pulse(s, "customer", "M 1", "--json")
        assert rc == 0, err
        from_cli = json.loads(out)
        for d in (export, from_cli):
            d.pop("generated_at")
        assert from_cli == export
        assert export["customer"]["points_balance"] == 95
        assert [e["rule"] for e in export["ledger"]][:4] == [
            "redemption_rejected", "adjustment_rejected", "adjustment", "redemption"]
        stored = await redis_client.get(Keys(s.redis_prefix).customer(
            again["partition"], "M 1"))
        assert wire.loads(stored).customer_id == "M 1"
        assert export["stored"]["state"] == json.loads(stored)
    finally:
        worker.stop()
