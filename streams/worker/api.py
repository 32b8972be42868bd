"""The worker's customer API: ``GET /customers/{id}``, ``/openapi.json``, bearer tokens.

* ``/customers/{id}`` returns what ``pulse customer`` shows, from the same function
  (``streams.worker.views.load_view``): the export row (RFC 3339 times, major-unit money) as of
  the partition clock unless ``?as_of=`` says otherwise, and the latest ledger entries.
  The id is the percent-decoded rest of the *raw* request path, so any id works once
  URL-encoded (``/``, ``{``, ``}``, spaces, ``%``).
* Tokens: with ``PULSE_API_TOKENS`` set, every path needs ``Authorization: Bearer <one of
  them>``, except ``/openapi.json`` and the operational paths (``/metrics``, ``/healthz``,
  ``/readyz``), which need ``PULSE_METRICS_TOKEN`` when that is set and are open otherwise.
  Several tokens at once make rotation possible (add the new one, move clients, drop the
  old one). Tokens are compared in constant time and never logged.
* ``exposure_error``: a worker bound beyond loopback without tokens would hand customer
  data to anyone who can reach it; ``pulse worker`` refuses to start (exit 2).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from processors.errors import WireError
from processors.rules import Rules
from schemas.codec import MAX_ID_LEN, InvalidEvent
from streams.settings import Settings, api_tokens, is_loopback
from streams.worker.openapi import document
from streams.worker.store import RETRIABLE
from streams.worker.views import load_view

CUSTOMERS = "/customers/"
OPEN_PATHS = frozenset({"/openapi.json"})
OPS_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def exposure_error(settings: Settings) -> str | None:
    """Why the worker must not start with these settings, or ``None``."""
    if is_loopback(settings.web_host) or api_tokens(settings.api_tokens):
        return None
    return (f"PULSE_WEB_HOST={settings.web_host} serves customer data beyond this machine "
            "without authentication: set PULSE_API_TOKENS (or PULSE_API_TOKENS_FILE), or "
            "bind PULSE_WEB_HOST=127.0.0.1")


def customer_id_of(raw_path: str) -> str | None:
    """The customer id in a raw ``/customers/<id>`` path (percent-decoded), or ``None``."""
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith(CUSTOMERS):
        return None
    try:
        cid = unquote(path[len(CUSTOMERS):], errors="strict")
    except UnicodeDecodeError:
        return None
    if not cid or len(cid) > MAX_ID_LEN or cid.isspace():
        return None
    return cid


def _bearer_ok(request: web.Request, tokens: tuple[str, ...]) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    given_b = given.strip().encode()
    ok = False
    for token in tokens:  # no early exit: the time taken does not say which token matched
        ok |= hmac.compare_digest(given_b, token.encode())
    return ok


def auth_middleware(settings: Settings) -> Any:
    """aiohttp middleware enforcing the tokens (see the module doc)."""
    api = api_tokens(settings.api_tokens)
    ops = api_tokens(settings.metrics_token)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        needed = () if path in OPEN_PATHS else ops if path in OPS_PATHS else api
        if needed and not _bearer_ok(request, needed):
            return web.json_response(
                {"error": "missing or unknown bearer token"}, status=401,
                headers={"WWW-Authenticate": 'Bearer realm="customer-pulse"'})
        return await handler(request)

    return require_token


def install(app: Any, engine: Any, settings: Settings, rules: Rules) -> None:
    """Register ``/customers/{id}`` and ``/openapi.json`` on the Faust app."""
    spec = document()

    @app.page("/openapi.json")
    async def openapi_view(self: Any, request: web.Request) -> web.Response:
        return web.json_response(spec)

    # a regex that takes the rest of the path (slashes, braces): the id comes from the raw path
    @app.page("/customers/{customer_id:.+}")
    async def customer_view(self: Any, request: web.Request, **_: Any) -> web.Response:
        cid = customer_id_of(request.raw_path)
        if cid is None:
            return _error(400, f"not a customer id (1-{MAX_ID_LEN} characters, URL-encoded)")
        store = engine.store
        if store is None:
            return _error(503, "engine not started")
        q = request.query.get("as_of")
        try:
            as_of = _parse_as_of(q) if q else None
        except InvalidEvent as exc:
            return _error(400, exc.message)
        try:
            now_ms = int(engine.wall_clock() * 1000)
            got = await load_view(store, settings, rules, cid, as_of, now_ms)
        except WireError as exc:
            return _error(500, f"stored state unreadable: {exc}")
        except RETRIABLE as exc:  # Redis away: the worker retries; the caller may too
            return _error(503, f"Redis unavailable: {exc}")
        if got is None:
            return _error(404, f"no customer {cid}")
        return web.json_response({"customer": got.row, "ledger": got.ledger})


def _parse_as_of(text: str) -> int:
    from schemas.codec import parse_when

    return parse_when(text, "as_of")


def _error(status: int, why: str) -> web.Response:
    return web.json_response({"error": why}, status=status)
