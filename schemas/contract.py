"""Where the language-neutral contract lives: one JSON Schema (draft 2020-12) per event kind.

The files in ``schemas/json/`` are package data, so they ship with the wheel and are read
through ``importlib.resources``. They and ``schemas.codec`` enforce the same rules;
``tests/unit/schemas/test_schemas.py`` runs the golden corpus under ``tests/golden/`` through both.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from schemas.events import ADJUSTMENT, CUSTOMER, PURCHASE, REDEMPTION, REFERRAL, SURVEY, TICKET

SCHEMA_FILES: dict[str, str] = {
    PURCHASE: "purchase.schema.json",
    TICKET: "support-ticket.schema.json",
    SURVEY: "survey.schema.json",
    REDEMPTION: "redemption.schema.json",
    CUSTOMER: "customer.schema.json",
    ADJUSTMENT: "adjustment.schema.json",
    REFERRAL: "referral.schema.json",
}


def _resource(kind: str) -> Any:
    try:
        name = SCHEMA_FILES[kind]
    except KeyError:
        known = ", ".join(SCHEMA_FILES)
        raise ValueError(f"unknown event kind {kind!r} (known: {known})") from None
    return files("schemas").joinpath("json", name)


def schema_path(kind: str) -> Path:
    """Filesystem path of the JSON Schema for an event kind (e.g. to hand to producers)."""
    return Path(str(_resource(kind)))


def load_schema(kind: str) -> dict[str, Any]:
    """The parsed JSON Schema for an event kind. A fresh dict on every call."""
    schema: dict[str, Any] = json.loads(_resource(kind).read_text(encoding="utf-8"))
    return schema
