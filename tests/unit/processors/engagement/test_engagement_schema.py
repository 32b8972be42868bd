"""The engagement topic's contract (schemas/json/engagement.schema.json) holds for what the
layer writes: every record of random histories, the examples, the backfill marker."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from jsonschema import Draft202012Validator

from processors.engagement.record import WIRE_KINDS, WIRE_SEGMENTS
from processors.rules import SEGMENTS, TRIGGER_KINDS
from processors.timeutil import DAY_MS
from tests.paths import ROOT
from tests.unit.processors.engagement.fixtures import process
from tests.unit.processors.fixtures import SETTINGS, History, histories

SCHEMA = json.loads((ROOT / "schemas" / "json" / "engagement.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(record: dict[str, Any]) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(record)]


def test_the_schema_is_valid_and_its_examples_too() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    for example in SCHEMA["examples"]:
        assert errors(example) == []


def test_the_names_are_the_rules_names() -> None:
    change, message = SCHEMA["oneOf"]
    assert change["properties"]["segment"]["enum"] == list(SEGMENTS)
    assert message["properties"]["kind"]["enum"] == list(TRIGGER_KINDS)
    assert set(WIRE_SEGMENTS) == set(SEGMENTS) and set(WIRE_KINDS) == set(TRIGGER_KINDS)


@SETTINGS
@given(h=histories())
def test_every_record_written_satisfies_the_schema(h: History) -> None:
    run = process(list(h.events), h.rules,
                  until=max(e.occurred_at for e in h.events) + 800 * DAY_MS)
    for record in run.engagement:
        assert errors(record) == [], record
        assert errors({**record, "backfill": True}) == []
        assert errors({**record, "consent": {}}) != []
