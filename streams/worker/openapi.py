"""The worker's HTTP API described in OpenAPI 3.1, served at ``/openapi.json``.

The customer schema is built from ``streams.worker.views.COLUMNS`` (the one list of export
columns), so the document cannot drift from what ``GET /customers/{id}`` and ``pulse
customer --json`` return; ``tests/integration/test_api.py`` validates real responses
against it.
"""

from __future__ import annotations

from typing import Any

from schemas.codec import MAX_ADJUST_POINTS, MAX_ID_LEN, MAX_REDEEM_POINTS, MAX_TEXT_LEN
from streams.worker.views import BOOL, COLUMNS, INT, LIST, MONEY, NUMBER, TIME

_NULLABLE_BY_FORMAT: dict[str, dict[str, Any]] = {
    TIME: {"type": ["string", "null"], "format": "date-time",
           "description": "RFC 3339 UTC with milliseconds"},
    MONEY: {"type": ["string", "null"], "pattern": r"^-?\d+(\.\d+)?$",
            "description": "major-unit decimal in the reporting currency"},
    NUMBER: {"type": ["number", "null"]},
    INT: {"type": ["integer", "null"]},
    BOOL: {"type": ["boolean", "null"]},
    LIST: {"type": "array", "items": {"type": "string"}},
}
_ALWAYS_SET = {"customer_id", "as_of", "reporting_currency"}


def _column_schema(name: str, fmt: str) -> dict[str, Any]:
    schema = dict(_NULLABLE_BY_FORMAT.get(fmt, {"type": ["string", "null"]}))
    if name in _ALWAYS_SET:
        schema["type"] = "string"
    return schema


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


UNAUTHORIZED = {**_error("missing or unknown bearer token"),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}}
CUSTOMER_ID = {"name": "customer_id", "in": "path", "required": True,
               "description": "Any customer id (1-128 characters), percent-encoded: `/`, `{`, "
                              "`}`, spaces and `%` must be encoded.",
               "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN}}
_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN, "pattern": r"\S"}
_IDEMPOTENCY_KEY = {**_ID, "description": "Any unique string (e.g. a UUID). A retry with the "
                    "same key gives the same event id, which the worker applies once."}


def _time_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string"}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _operation(op_id: str, summary: str, request: str) -> dict[str, Any]:
    """A POST of a member operation (README "Member operations")."""
    return {"post": {
        "operationId": op_id, "summary": summary, "security": [{"apiToken": []}],
        "parameters": [CUSTOMER_ID],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{request}"}}}},
        "responses": {
            "202": _json("Accepted", "produced to its topic (acks=all); the worker applies it "
                                     "once, and its ledger entry is the outcome"),
            "400": _error("the body is not JSON or a field is invalid (named in the error)"),
            "401": UNAUTHORIZED,
            "404": _error("no such customer"),
            "405": _error("method not allowed on this path"),
            "503": _error("the engine has not started, or Kafka or Redis is unavailable: "
                          "retry with the same idempotency key"),
        },
    }}


def _member_operations() -> dict[str, Any]:
    """The paths of member operations and the per-customer reads beside them."""
    return {
        "/customers/{customer_id}/ledger": {"get": {
            "operationId": "getLedger",
            "summary": "The customer's latest ledger entries (the outcome of an operation)",
            "security": [{"apiToken": []}],
            "parameters": [
                CUSTOMER_ID,
                _time_param("since", "Only entries whose occurred_at is at or after this time "
                                     "(RFC 3339 with offset, or YYYY-MM-DD)."),
                {"name": "event_id", "in": "query", "required": False,
                 "description": "Only the entries this event caused (the event_id of a 202).",
                 "schema": {"type": "string"}},
            ],
            "responses": {"200": _json("Ledger", "the entries, newest first"),
                          "400": _error("bad customer id or since"), "401": UNAUTHORIZED,
                          "404": _error("no such customer"),
                          "503": _error("the engine has not started, or Redis is unavailable")},
        }},
        "/customers/{customer_id}/export": {"get": {
            "operationId": "getSubjectAccess",
            "summary": "Everything held about the customer (GDPR Art. 15), as `pulse customer "
                       "ID --json`",
            "security": [{"apiToken": []}],
            "parameters": [CUSTOMER_ID],
            "responses": {"200": _json("SubjectAccess", "the document"),
                          "400": _error("bad customer id"), "401": UNAUTHORIZED,
                          "404": _error("nothing is held about this customer"),
                          "503": _error("the engine has not started, or Redis is unavailable")},
        }},
        "/customers/{customer_id}/adjustments": _operation(
            "adjustPoints", "Credit or debit points (goodwill, correction)", "AdjustmentRequest"),
        "/customers/{customer_id}/redemptions": _operation(
            "redeemReward", "Redeem a reward with points", "RedemptionRequest"),
        "/customers/{customer_id}/erasure": _operation(
            "eraseCustomer", "Erase everything held about the customer (GDPR Art. 17); "
            "taken for an unknown customer too (the receipt then says nothing was held)",
            "ErasureRequest"),
    }


def _operation_schemas(ledger_entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "AdjustmentRequest": {
            "type": "object", "additionalProperties": False,
            "required": ["points", "operator", "reason", "idempotency_key"],
            "properties": {
                "points": {"type": "integer", "minimum": -MAX_ADJUST_POINTS,
                           "maximum": MAX_ADJUST_POINTS, "not": {"const": 0},
                           "description": "positive: credit; negative: debit"},
                "operator": {**_ID, "description": "who makes it (named in the ledger)"},
                "reason": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LEN,
                           "pattern": r"\S", "description": "why (quoted in the ledger)"},
                "idempotency_key": _IDEMPOTENCY_KEY,
            },
        },
        "RedemptionRequest": {
            "type": "object", "additionalProperties": False,
            "required": ["reward_id", "points", "idempotency_key"],
            "properties": {
                "reward_id": _ID,
                "points": {"type": "integer", "minimum": 1, "maximum": MAX_REDEEM_POINTS},
                "idempotency_key": _IDEMPOTENCY_KEY,
            },
        },
        "ErasureRequest": {
            "type": "object", "additionalProperties": False,
            "required": ["idempotency_key"],
            "properties": {"idempotency_key": _IDEMPOTENCY_KEY},
        },
        "Accepted": {
            "type": "object",
            "required": ["event_id", "customer_id", "kind", "topic", "partition", "offset",
                         "occurred_at", "entry_ids", "outcome"],
            "properties": {
                "event_id": {"type": "string", "description": "derived from the idempotency "
                             "key: the same on a retry"},
                "customer_id": {"type": "string"},
                "kind": {"type": "string", "enum": ["adjustment", "redemption", "erasure"]},
                "topic": {"type": "string"}, "partition": {"type": "integer"},
                "offset": {"type": "integer"},
                "occurred_at": {"type": "string", "format": "date-time"},
                "entry_ids": {"type": "array", "items": {"type": "string"},
                              "description": "the ledger entries that can answer it (none "
                              "for an erasure: its receipt goes to the audit topic)"},
                "outcome": {"type": "string", "description": "where to read the answer (an "
                            "erasure: the customer's path, 404 once applied)"},
            },
        },
        "Ledger": {
            "type": "object", "required": ["customer_id", "entries", "kept"],
            "properties": {
                "customer_id": {"type": "string"},
                "entries": {"type": "array", "items": ledger_entry},
                "kept": {"type": "integer", "description": "how many latest entries the "
                         "worker keeps per customer"},
            },
        },
        "SubjectAccess": {
            "type": "object",
            "required": ["customer_id", "generated_at", "customer", "ledger", "churn",
                         "segment", "stored", "elsewhere"],
            "additionalProperties": False,
            "properties": {
                "customer_id": {"type": "string"},
                "generated_at": {"type": "string", "format": "date-time"},
                "customer": {"$ref": "#/components/schemas/CustomerRow"},
                "ledger": {"type": "array", "items": ledger_entry},
                "churn": {"type": "object", "required": ["score", "level", "reasons"],
                          "properties": {"score": {"type": ["number", "null"]},
                                         "level": {"type": ["string", "null"]},
                                         "reasons": {"type": "array",
                                                     "items": {"type": "string"}}}},
                "segment": {"type": ["string", "null"], "description": "the customer's "
                            "engagement segment (the row's segment column; README Engagement)"},
                "stored": {"type": "object",
                           "required": ["state", "ledger_entries_kept",
                                        "next_time_driven_change_at", "time_driven_failures"],
                           "properties": {
                               "state": {"type": "object", "description": "the state as "
                                         "stored (keys: processors/wire.py)"},
                               "ledger_entries_kept": {"type": "integer"},
                               "next_time_driven_change_at": {"type": ["string", "null"],
                                                              "format": "date-time"},
                               "time_driven_failures": {"type": "integer"}}},
                "elsewhere": {"type": "string", "description": "what else holds the "
                              "customer's data (Kafka topics) and for how long"},
            },
        },
    }


def document() -> dict[str, Any]:
    customer_row = {
        "type": "object",
        "description": "The customer as of `as_of`: the row of `pulse customers export` and "
                       "`pulse customer --json` (times RFC 3339 UTC, money major units).",
        "required": [c.name for c in COLUMNS],
        "additionalProperties": False,
        "properties": {c.name: _column_schema(c.name, c.fmt) for c in COLUMNS},
    }
    ledger_entry = {
        "type": "object",
        "required": ["entry_id", "customer_id", "points", "rule", "reason", "balance_after",
                     "occurred_at"],
        "properties": {
            "entry_id": {"type": "string"},
            "customer_id": {"type": "string"},
            "points": {"type": "integer"},
            "rule": {"type": "string"},
            "reason": {"type": "string"},
            "balance_after": {"type": "integer"},
            "tier_after": {"type": ["string", "null"]},
            "occurred_at": {"type": "string", "format": "date-time"},
            "event_id": {"type": ["string", "null"]},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "customer-pulse worker API",
            "version": "1",
            "description": "A worker's customer view and operational endpoints. With "
                           "PULSE_API_TOKENS set, every path except /openapi.json and the "
                           "operational ones needs `Authorization: Bearer <token>`; the "
                           "operational ones (/metrics, /healthz, /readyz) need "
                           "PULSE_METRICS_TOKEN when that is set.",
        },
        "paths": {
            "/customers/{customer_id}": {
                "get": {
                    "operationId": "getCustomer",
                    "summary": "One customer: state as of a time and the latest ledger entries",
                    "security": [{"apiToken": []}],
                    "parameters": [
                        CUSTOMER_ID,
                        _time_param("as_of", "Evaluate at this event time (RFC 3339 with "
                                    "offset, or YYYY-MM-DD = midnight UTC). Default: the "
                                    "partition clock (now in live mode), as `pulse customer`."),
                    ],
                    "responses": {
                        "200": {"description": "the customer",
                                "content": {"application/json": {"schema": {
                                    "$ref": "#/components/schemas/CustomerView"}}}},
                        "400": _error("bad customer id or as_of"),
                        "401": UNAUTHORIZED,
                        "404": _error("no such customer"),
                        "503": _error("the worker's engine has not started"),
                    },
                },
            },
            **_member_operations(),
            "/openapi.json": {
                "get": {"operationId": "getOpenApi", "summary": "This document", "security": [],
                        "responses": {"200": {"description": "OpenAPI 3.1 document",
                                              "content": {"application/json": {
                                                  "schema": {"type": "object"}}}}}},
            },
            "/metrics": {
                "get": {"operationId": "getMetrics", "summary": "Prometheus metrics",
                        "security": [{}, {"metricsToken": []}],
                        "responses": {"200": {"description": "text exposition format",
                                              "content": {"text/plain": {
                                                  "schema": {"type": "string"}}}},
                                      "401": UNAUTHORIZED}},
            },
            "/healthz": {
                "get": {"operationId": "getHealth", "summary": "Liveness (see the README)",
                        "security": [{}, {"metricsToken": []}],
                        "responses": {
                            "200": {"description": "healthy",
                                    "content": {"application/json": {
                                        "schema": {"type": "object"}}}},
                            "401": UNAUTHORIZED,
                            "503": {"description": "not healthy, with the reason",
                                    "content": {"application/json": {
                                        "schema": {"type": "object"}}}}}},
            },
        },
        "components": {
            "securitySchemes": {
                "apiToken": {"type": "http", "scheme": "bearer",
                             "description": "one of PULSE_API_TOKENS"},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "PULSE_METRICS_TOKEN, when set"},
            },
            "schemas": {
                "CustomerView": {
                    "type": "object",
                    "required": ["customer", "ledger"],
                    "additionalProperties": False,
                    "properties": {
                        "customer": {"$ref": "#/components/schemas/CustomerRow"},
                        "ledger": {"type": "array", "description": "latest entries, newest "
                                   "first (the worker keeps the last 10)",
                                   "items": {"$ref": "#/components/schemas/LedgerEntry"}},
                    },
                },
                "CustomerRow": customer_row,
                "LedgerEntry": ledger_entry,
                **_operation_schemas({"$ref": "#/components/schemas/LedgerEntry"}),
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
            },
        },
    }
