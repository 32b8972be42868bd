"""A demo webhook receiver for `pulse notifier` (docker-compose.yml runs it in the project image).

It checks each delivery the way any receiver should: the Standard Webhooks signature
(``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, key = the bytes after
``whsec_``), a timestamp within five minutes, and the ``webhook-id`` against the ids it has
already seen (the notifier delivers at least once). Then it logs one line per message.
Standard library only, so it runs anywhere; the tests sign with the reference library.

Settings (environment):
  RECEIVER_SECRET_ENV  the variable holding the whsec_ secret (default DEMO_WEBHOOK_SECRET)
  RECEIVER_HOST        bind address (default 127.0.0.1; the compose stack uses 0.0.0.0)
  RECEIVER_PORT        port (default 8080)

Answers: 204 delivered, 200 duplicate (already seen), 400 missing headers or not JSON,
401 bad signature or stale timestamp, 413 body over 1 MiB; SIGTERM stops it; GET /healthz 200.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from typing import Any

log = logging.getLogger("webhook-receiver")

TOLERANCE_S = 300
MAX_BODY = 1 << 20
SEEN_IDS = 100_000


class BadSecret(ValueError):
    """The configured secret is not a Standard Webhooks secret (the value is never shown)."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret."""
    body = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret("the secret must be whsec_ followed by base64") from None
    if len(key) < 16:
        raise BadSecret("the secret must hold at least 16 bytes")
    return key


def verify(key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """Why the delivery is not authentic, or None when it is."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp = h.get("webhook-id"), h.get("webhook-timestamp")
    sigs = h.get("webhook-signature")
    if not (msg_id and stamp and sigs):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        ts = int(stamp)
    except ValueError:
        return "webhook-timestamp is not an integer"
    if abs(now - ts) > TOLERANCE_S:
        return "webhook-timestamp is more than 5 minutes away from now"
    expected = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    for versioned in sigs.split():
        version, _, sig = versioned.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            return None
    return "no matching v1 signature"


class SeenIds:
    """The last ``size`` webhook ids, to drop redeliveries."""

    def __init__(self, size: int = SEEN_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = Lock()

    def first_time(self, msg_id: str) -> bool:
        with self._lock:
            if msg_id in self._ids:
                self._ids.move_to_end(msg_id)
                return False
            self._ids[msg_id] = None
            if len(self._ids) > self._size:
                self._ids.popitem(last=False)
            return True


def summary(message: Any) -> str:
    """One log line's worth of a CloudEvents-shaped message: its type and subject."""
    if not isinstance(message, dict):
        return "(not a JSON object)"
    data = message.get("data")
    if not isinstance(data, dict):
        data = {}
    kind = message.get("type", "?")
    subject = message.get("subject") or data.get("customer_id", "?")
    detail = data.get("level") or data.get("rule") or ""
    return f"{kind} subject={subject}" + (f" {detail}" if detail else "")


def make_handler(key: bytes, seen: SeenIds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pulse-demo-receiver"

        def _answer(self, code: int, text: str = "") -> None:
            payload = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        def do_GET(self) -> None:
            self._answer(200, "ok\n") if self.path == "/healthz" else self._answer(404)

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self._answer(413, "body too large (or no length)\n")
                return
            body = self.rfile.read(length)
            why = verify(key, dict(self.headers.items()), body, time.time())
            if why is not None:
                log.warning("rejected a delivery: %s", why)
                self._answer(400 if why.startswith("missing") else 401, why + "\n")
                return
            msg_id = self.headers["webhook-id"]
            try:
                message = json.loads(body)
            except ValueError:
                self._answer(400, "body is not JSON\n")
                return
            if not seen.first_time(msg_id):
                log.info("duplicate %s (already delivered, dropped)", msg_id)
                self._answer(200, "duplicate\n")
                return
            log.info("received %s %s", msg_id, summary(message))
            self._answer(204)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per delivery is logged above; no access log

    return Handler


def serve(host: str, port: int, key: bytes) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(key, SeenIds()))


def main(env: Mapping[str, str] = os.environ) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    name = env.get("RECEIVER_SECRET_ENV", "DEMO_WEBHOOK_SECRET")
    if not env.get(name):
        print(f"webhook-receiver: set {name} to the endpoint's whsec_ secret", file=sys.stderr)
        return 2
    try:
        key = secret_key(env[name])
        port = int(env.get("RECEIVER_PORT", "8080"))
    except (BadSecret, ValueError) as exc:
        print(f"webhook-receiver: {name} or RECEIVER_PORT: {exc}", file=sys.stderr)
        return 2
    server = serve(env.get("RECEIVER_HOST", "127.0.0.1"), port, key)
    log.info("listening on %s:%d", *server.server_address[:2])
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
