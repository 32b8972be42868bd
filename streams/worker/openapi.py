"""The worker's HTTP API described in OpenAPI 3.1, served at ``/openapi.json``.

The customer schema is built from ``streams.worker.views.COLUMNS`` (the one list of export
columns), so the document cannot drift from what ``GET /customers/{id}`` and ``pulse
customer --json`` return; ``tests/integration/test_api.py`` validates real responses
against it.
"""

from __future__ import annotations

from typing import Any

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
                        {"name": "customer_id", "in": "path", "required": True,
                         "description": "Any customer id (1-128 characters), percent-encoded: "
                                        "`/`, `{`, `}`, spaces and `%` must be encoded.",
                         "schema": {"type": "string", "minLength": 1, "maxLength": 128}},
                        {"name": "as_of", "in": "query", "required": False,
                         "description": "Evaluate at this event time (RFC 3339 with offset, or "
                                        "YYYY-MM-DD = midnight UTC). Default: the partition "
                                        "clock (now in live mode), as `pulse customer`.",
                         "schema": {"type": "string"}},
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
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
            },
        },
    }
