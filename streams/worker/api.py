"""The worker's customer API: reads, member operations, ``/openapi.json``, bearer tokens.

* ``GET /customers/{id}`` returns what ``pulse customer`` shows, from the same function
  (``streams.worker.views.load_view``): the export row (RFC 3339 times, major-unit money) as of
  the partition clock unless ``?as_of=`` says otherwise, and the latest ledger entries.
  ``GET .../ledger`` the latest entries (``?since=``, ``?event_id=``: an operation's outcome);
  ``GET .../export`` everything held about the customer (``streams/worker/access.py``).
* ``POST .../adjustments``, ``POST .../redemptions``, ``POST .../erasure``: member
  operations, validated and produced to their input topic (``streams/worker/operations.py``),
  answered ``202`` with the event id; the worker applies them (README "Member operations").
* The id is the percent-decoded rest of the *raw* request path, so any id works once
  URL-encoded (``/``, ``{``, ``}``, spaces, ``%``); a raw ``/`` before a resource name
  (``route_of``) separates the two. Errors are ``{"error": ...}`` with a 4xx/5xx status.
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
from urllib.parse import quote, unquote

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError
from faust.web import View

from processors.errors import WireError
from processors.rules import Rules
from schemas.codec import MAX_ID_LEN, InvalidEvent, format_time, parse_time, parse_when
from schemas.events import ADJUSTMENT, REDEMPTION
from streams.settings import Settings, api_tokens, is_loopback
from streams.worker.access import ledger_of, subject_access
from streams.worker.openapi import document
from streams.worker.operations import (
    ERASURE,
    SOURCE_API,
    Operation,
    OperationError,
    OperationsProducer,
    build,
)
from streams.worker.partitioning import owner
from streams.worker.store import LEDGER_KEEP, RETRIABLE
from streams.worker.views import load_view

CUSTOMERS = "/customers/"
RESOURCES = frozenset({"ledger", "export", "adjustments", "redemptions", "erasure"})
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


def route_of(raw_path: str) -> tuple[str | None, str]:
    """``(customer id, sub-resource)`` of a raw ``/customers/<id>[/<resource>]`` path: the id
    percent-decoded (``None`` when it is not one), the resource one of ``RESOURCES`` or
    ``""``. A raw ``/`` before a known resource name separates them; anywhere else it is part
    of the id (``/customers/a/b`` is customer ``a/b``; ``x/ledger`` is written ``x%2Fledger``)."""
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith(CUSTOMERS):
        return None, ""
    rest, resource = path[len(CUSTOMERS):], ""
    head, sep, last = rest.rpartition("/")
    if sep and head and last in RESOURCES:
        rest, resource = head, last
    try:
        cid = unquote(rest, errors="strict")
    except UnicodeDecodeError:
        return None, resource
    if not cid or len(cid) > MAX_ID_LEN or cid.isspace():
        return None, resource
    return cid, resource


def customer_id_of(raw_path: str) -> str | None:
    """The customer id in a raw ``/customers/<id>`` path (percent-decoded), or ``None``."""
    return route_of(raw_path)[0]


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


def install(app: Any, engine: Any, settings: Settings, rules: Rules,
            producer: OperationsProducer) -> None:
    """Register ``/customers/...`` and ``/openapi.json`` on the Faust app."""
    spec = document()

    @app.page("/openapi.json")
    async def openapi_view(self: Any, request: web.Request) -> web.Response:
        return web.json_response(spec)

    class Customers(View):
        """``/customers/<id>[/<resource>]``: the id and resource come from the raw path."""

        async def get(self, request: web.Request, **_: Any) -> web.Response:
            return await _answer(request, "GET")

        async def post(self, request: web.Request, **_: Any) -> web.Response:
            return await _answer(request, "POST")

    async def _answer(request: web.Request, method: str) -> web.Response:
        cid, resource = route_of(request.raw_path)
        handler = ROUTES.get((method, resource))
        if handler is None:
            allowed = sorted(m for m, r in ROUTES if r == resource)
            return _error(405, f"{method} is not allowed here (allowed: {', '.join(allowed)})")
        if cid is None:
            return _error(400, f"not a customer id (1-{MAX_ID_LEN} characters, URL-encoded)")
        if engine.store is None:
            return _error(503, "engine not started")
        try:
            return await handler(request, cid)
        except _Refused as exc:
            return _error(exc.status, exc.why)
        except WireError as exc:
            return _error(500, f"stored state unreadable: {exc}")
        except RETRIABLE as exc:  # Redis away: the worker retries; the caller may too
            return _error(503, f"Redis unavailable: {exc}")

    def _now_ms() -> int:
        return int(engine.wall_clock() * 1000)

    async def customer_view(request: web.Request, cid: str) -> web.Response:
        as_of = _time_query(request, "as_of")
        got = await load_view(engine.store, settings, rules, cid, as_of, _now_ms())
        if got is None:
            raise _Refused(404, f"no customer {cid}")
        return web.json_response({"customer": got.row, "ledger": got.ledger})

    async def ledger_view(request: web.Request, cid: str) -> web.Response:
        since = _time_query(request, "since")
        entries = await ledger_of(engine.store, settings, cid)
        if entries is None:
            raise _Refused(404, f"no customer {cid}")
        event_id = request.query.get("event_id")
        picked = [e for e in entries
                  if (since is None or parse_time(e["occurred_at"]) >= since)
                  and (event_id is None or e.get("event_id") == event_id)]
        return web.json_response({"customer_id": cid, "entries": picked, "kept": LEDGER_KEEP})

    async def export_view(request: web.Request, cid: str) -> web.Response:
        doc = await subject_access(engine.store, settings, rules, cid, _now_ms())
        if doc is None:
            raise _Refused(404, f"no customer {cid}")
        return web.json_response(doc)

    def operation(kind: str) -> Any:
        async def post(request: web.Request, cid: str) -> web.Response:
            try:
                body = orjson.loads(await request.read())
                op = build(kind, cid, body, at=_now_ms(), source=SOURCE_API,
                           topics=engine.topics)
            except orjson.JSONDecodeError as exc:
                return _error(400, f"the body is not JSON: {exc}")
            except OperationError as exc:
                return _error(400, str(exc))
            if kind != ERASURE and await engine.store.get_state(
                    owner(cid, settings.partitions), cid) is None:
                raise _Refused(404, f"no customer {cid}")  # (an erasure is taken anyway)
            return await _produce(op)
        return post

    async def _produce(op: Operation) -> web.Response:
        try:
            partition, offset = await producer.send(op)
        except (KafkaError, TimeoutError, OSError) as exc:
            return _error(503, f"Kafka did not acknowledge it ({type(exc).__name__}): retry "
                               "with the same idempotency key, it is applied once")
        quoted = quote(op.customer_id, safe="")
        outcome = (f"{CUSTOMERS}{quoted}" if op.kind == ERASURE  # 404 once applied
                   else f"{CUSTOMERS}{quoted}/ledger?event_id={op.event_id}")
        return web.json_response({
            "event_id": op.event_id, "customer_id": op.customer_id, "kind": op.kind,
            "topic": op.topic, "partition": partition, "offset": offset,
            "occurred_at": format_time(op.occurred_at), "entry_ids": list(op.entry_ids),
            "outcome": outcome,
        }, status=202)

    ROUTES: dict[tuple[str, str], Any] = {
        ("GET", ""): customer_view,
        ("GET", "ledger"): ledger_view,
        ("GET", "export"): export_view,
        ("POST", "adjustments"): operation(ADJUSTMENT),
        ("POST", "redemptions"): operation(REDEMPTION),
        ("POST", "erasure"): operation(ERASURE),
    }

    # a regex that takes the rest of the path (slashes, braces): the id comes from the raw path
    app.page("/customers/{customer_id:.+}")(Customers)


class _Refused(Exception):
    """A request answered with an error status and its reason."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


def _time_query(request: web.Request, name: str) -> int | None:
    """A time query parameter (RFC 3339 or YYYY-MM-DD), or ``None`` when absent."""
    text = request.query.get(name)
    try:
        return parse_when(text, name) if text else None
    except InvalidEvent as exc:
        raise _Refused(400, exc.message) from None


def _error(status: int, why: str) -> web.Response:
    return web.json_response({"error": why}, status=status)
