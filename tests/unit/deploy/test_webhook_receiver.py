"""deploy/webhook-receiver/receiver.py, the docker-compose stack's demo receiver: deliveries
signed by the reference Standard Webhooks library (``standardwebhooks``) pass, forged, stale
and tampered ones do not, and a redelivered ``webhook-id`` is recognised. Over real HTTP on
loopback."""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from types import ModuleType

import pytest
from standardwebhooks import Webhook

from tests.paths import ROOT

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()


@pytest.fixture(scope="module")
def receiver() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "receiver", ROOT / "deploy" / "webhook-receiver" / "receiver.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def signed(body: bytes, msg_id: str, at: float, secret: str = SECRET) -> dict[str, str]:
    stamp = datetime.fromtimestamp(int(at), tz=UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at)),
            "webhook-signature": Webhook(secret).sign(msg_id, stamp, body.decode()),
            "content-type": "application/json"}


BODY = json.dumps({"specversion": "1.0", "type": "com.customer-pulse.churn.alert",
                   "id": "alert-1", "subject": "c-42",
                   "data": {"customer_id": "c-42", "level": "high"}}).encode()


def test_verify_accepts_the_reference_signature_only(receiver: ModuleType) -> None:
    key = receiver.secret_key(SECRET)
    now = time.time()
    assert receiver.verify(key, signed(BODY, "m1", now), BODY, now) is None
    # several signatures (secret rotation): one match is enough
    h = signed(BODY, "m1", now)
    h["webhook-signature"] = signed(BODY, "m1", now, OTHER)["webhook-signature"] + " " + \
        h["webhook-signature"]
    assert receiver.verify(key, h, BODY, now) is None
    assert receiver.verify(key, signed(BODY, "m1", now, OTHER), BODY, now) == \
        "no matching v1 signature"
    assert receiver.verify(key, signed(BODY, "m1", now), BODY + b" ", now) == \
        "no matching v1 signature"
    assert receiver.verify(key, signed(BODY, "m2", now) | {"webhook-id": "m3"}, BODY, now) == \
        "no matching v1 signature"
    assert "5 minutes" in receiver.verify(key, signed(BODY, "m1", now - 301), BODY, now)
    assert receiver.verify(key, {}, BODY, now).startswith("missing")


def test_a_bad_secret_is_refused_without_showing_it(receiver: ModuleType) -> None:
    for bad in ("whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(receiver.BadSecret) as err:
            receiver.secret_key(bad)
        assert bad[6:] not in str(err.value)
    assert receiver.main({"DEMO_WEBHOOK_SECRET": ""}) == 2


@pytest.fixture
def server(receiver: ModuleType) -> Iterator[str]:
    srv = receiver.serve("127.0.0.1", 0, receiver.secret_key(SECRET))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url + "/webhooks", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_over_http_delivered_once_duplicates_dropped_forgeries_refused(
        server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="webhook-receiver")
    headers = signed(BODY, "alert-1", time.time())
    assert post(server, BODY, headers) == (204, "")
    assert post(server, BODY, headers) == (200, "duplicate\n")
    assert post(server, BODY, signed(BODY, "alert-2", time.time(), OTHER))[0] == 401
    assert post(server, BODY, {"content-type": "application/json"})[0] == 400
    assert post(server, b"not json", signed(b"not json", "x", time.time()))[0] == 400
    with urllib.request.urlopen(server + "/healthz", timeout=5) as resp:
        assert resp.status == 200
    lines = [r.getMessage() for r in caplog.records]
    assert sum("received alert-1 com.customer-pulse.churn.alert subject=c-42 high" in line
               for line in lines) == 1
    assert not any(SECRET[6:] in line for line in lines)
