"""The customer API of a real `pulse worker`: tokens, any customer id, the OpenAPI document
checked against real responses, and the same view, as-of and units as `pulse customer`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from schemas.codec import encode
from schemas.events import Purchase, PurchaseLine
from streams.settings import Settings, to_env
from streams.tools.devrun import start_worker
from streams.tools.devstack import free_port
from streams.worker.openapi import document
from streams.worker.topics import Topics
from streams.worker.views import load_ledger
from tests.integration.helpers import produce, wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "api-token-0123456789abcdef"
T0 = 1_790_000_000_000
# ids the old route pattern answered 404 for, and some ordinary ones
IDS = ["C{1}", "a/b", "with space", "100%", "caf\u00e9-\u00fc", "{p0}", "plain-42"]


def get(url: str, token: str = TOKEN) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def check(doc: dict[str, Any], path: str, status: int, body: Any) -> None:
    """``body`` must match the document's schema for ``GET path`` answering ``status``."""
    response = doc["paths"][path]["get"]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    registry = Registry().with_resource("urn:api", Resource.from_contents(
        doc, default_specification=DRAFT202012))
    ref = schema["$ref"].replace("#", "urn:api#", 1) if "$ref" in schema else None
    Draft202012Validator({"$ref": ref} if ref else schema, registry=registry,
                         format_checker=Draft202012Validator.FORMAT_CHECKER).validate(body)


async def pulse(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.tools.cli", *args, cwd=ROOT,
        env={**os.environ, **to_env(settings)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_customer_api_matches_its_document_and_the_cli(settings: Settings,
                                                             tmp_path: Path) -> None:
    settings = settings.with_(web_port=free_port(), api_tokens=TOKEN)
    worker = start_worker(settings, tmp_path, "worker-api")
    base = f"http://127.0.0.1:{settings.web_port}"
    try:
        code, served = get(f"{base}/openapi.json", token="")
        assert code == 200 and served == json.loads(json.dumps(document()))
        validate_spec(served)  # a valid OpenAPI 3.1 document

        topics = Topics.from_settings(settings)
        events = [Purchase(f"api-{i}", cid, T0 + i * 3_600_000, "pos", f"o-{i}", "store",
                           "purchase", 4250, "EUR", (PurchaseLine("sku", "grocery", 1, 4250),))
                  for i, cid in enumerate(IDS * 2)]
        await produce(settings, [(topics.purchases, e.customer_id.encode(), encode(e))
                                 for e in events])

        def url(cid: str) -> str:
            return f"{base}/customers/{quote(cid, safe='')}"

        await wait_until(lambda: all(get(url(c))[0] == 200 for c in IDS), timeout=60,
                         what="every customer on the API")
        for cid in IDS:
            code, body = get(url(cid))
            check(served, "/customers/{customer_id}", 200, body)
            row = body["customer"]
            assert (row["customer_id"], row["purchase_count"], row["total_spend"]) == (
                cid, 2, "85.00")  # major units, as the CLI and the export
            assert [e["entry_id"] for e in body["ledger"]] == [
                e["entry_id"] for e in await load_ledger(settings, cid)]
            assert body["ledger"], "purchases earned points"
            # the same default as-of (the partition clock) and units as `pulse customer`
            rc, out, err = await pulse(settings, "customer", cid, "--json")
            assert rc == 0, err
            assert json.loads(out)["customer"] == row  # the subject-access document's row

        code, body = get(url("a/b") + "?as_of=2030-01-01")
        assert code == 200 and body["customer"]["as_of"] == "2030-01-01T00:00:00.000Z"
        for path_url, status in ((url("a/b") + "?as_of=soon", 400), (url("nobody"), 404)):
            code, body = get(path_url)
            assert code == status, body
            check(served, "/customers/{customer_id}", status, body)
        code, body = get(url("a/b"), token="")
        assert code == 401
        check(served, "/customers/{customer_id}", 401, body)
        code, body = get(url("a/b"), token=TOKEN + "x")
        assert code == 401
        assert get(f"{base}/healthz", token="")[0] == 200  # no PULSE_METRICS_TOKEN: open
    finally:
        worker.stop()


async def test_worker_refuses_to_serve_beyond_loopback_without_tokens(settings: Settings
                                                                      ) -> None:
    code, _, err = await pulse(settings.with_(web_host="0.0.0.0"), "worker")
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "PULSE_API_TOKENS" in err
    assert "Traceback" not in err
