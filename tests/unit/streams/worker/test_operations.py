"""Member operations before they reach Kafka: request bodies -> events (the worker's own
decoder judges them), event ids from idempotency keys, the API's routes and its OpenAPI
document (README "Member operations")."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate as validate_spec

from schemas.codec import decode
from schemas.events import ADJUSTMENT, REDEMPTION, Adjustment, Redemption
from streams.settings import Settings
from streams.worker.api import RESOURCES, route_of
from streams.worker.openapi import document
from streams.worker.operations import OperationError, build, event_id_for
from streams.worker.topics import Topics

TOPICS = Topics.from_settings(Settings(topic_prefix="x-"))
AT = 1_790_000_000_000
ADJUST = {"points": 250, "operator": "agent-jane", "reason": "parcel arrived damaged",
          "idempotency_key": "k-1"}
REDEEM = {"reward_id": "coffee", "points": 40, "idempotency_key": "k-1"}


def test_an_adjustment_request_becomes_the_event_the_worker_decodes() -> None:
    op = build(ADJUSTMENT, "C1", ADJUST, at=AT, source="api", topics=TOPICS)
    assert (op.topic, op.customer_id, op.kind, op.occurred_at) == (
        "x-adjustments", "C1", ADJUSTMENT, AT)
    event = decode(ADJUSTMENT, op.value)
    assert event == Adjustment(op.event_id, "C1", AT, "api", 250, "agent-jane",
                               "parcel arrived damaged")
    assert op.entry_ids == (f"{op.event_id}:adjustment", f"{op.event_id}:adjustment_rejected")


def test_a_redemption_request_goes_to_the_redemptions_topic() -> None:
    op = build(REDEMPTION, "C1", REDEEM, at=AT, source="cli", topics=TOPICS)
    assert op.topic == "x-redemptions"
    assert decode(REDEMPTION, op.value) == Redemption(op.event_id, "C1", AT, "cli", "coffee", 40)
    assert op.entry_ids[0] == f"{op.event_id}:redemption"


def test_the_event_id_depends_on_kind_customer_and_key_only() -> None:
    a = build(ADJUSTMENT, "C1", ADJUST, at=AT, source="api", topics=TOPICS)
    retry = build(ADJUSTMENT, "C1", {**ADJUST, "points": 9}, at=AT + 60_000, source="cli",
                  topics=TOPICS)
    assert retry.event_id == a.event_id == event_id_for(ADJUSTMENT, "C1", "k-1")
    others = {event_id_for(ADJUSTMENT, "C2", "k-1"), event_id_for(ADJUSTMENT, "C1", "k-2"),
              event_id_for(REDEMPTION, "C1", "k-1"),
              event_id_for(ADJUSTMENT, "C1\0k", "\0-1")}  # no ambiguity at a separator
    assert event_id_for(ADJUSTMENT, "C1\0k", "\0-1") != event_id_for(ADJUSTMENT, "C1", "k\0\0-1")
    assert a.event_id not in others and len(others) == 4
    assert a.event_id.startswith("adj-") and len(a.event_id) <= 128


@pytest.mark.parametrize(("kind", "body", "says"), [
    (ADJUSTMENT, [], "the body must be a JSON object"),
    (ADJUSTMENT, {**ADJUST, "points": 0}, "points: must not be 0"),
    (ADJUSTMENT, {**ADJUST, "points": 2.5}, "points: must be an integer"),
    (ADJUSTMENT, {**ADJUST, "points": "250"}, "points: must be an integer"),
    (ADJUSTMENT, {**ADJUST, "points": 10**9 + 1}, "points: must be between"),
    (ADJUSTMENT, {**ADJUST, "reason": "  "}, "reason: must not be empty or blank"),
    (ADJUSTMENT, {**ADJUST, "reason": "x" * 501}, "reason: must be at most 500"),
    (ADJUSTMENT, {k: v for k, v in ADJUST.items() if k != "operator"}, "operator: required"),
    (ADJUSTMENT, {**ADJUST, "opertor": "x"}, "unknown field 'opertor'"),
    (ADJUSTMENT, {k: v for k, v in ADJUST.items() if k != "idempotency_key"},
     "idempotency_key: required"),
    (ADJUSTMENT, {**ADJUST, "idempotency_key": ""}, "idempotency_key: must be a string"),
    (ADJUSTMENT, {**ADJUST, "idempotency_key": "k" * 129}, "idempotency_key: must be"),
    (REDEMPTION, {**REDEEM, "points": -5}, "points: must be between 1"),
    (REDEMPTION, {**REDEEM, "reward_id": None}, "reward_id: must be a string"),
    (REDEMPTION, {**REDEEM, "operator": "x"}, "unknown field 'operator'"),
])
def test_a_bad_request_names_the_field(kind: str, body: Any, says: str) -> None:
    with pytest.raises(OperationError) as caught:
        build(kind, "C1", body, at=AT, source="api", topics=TOPICS)
    assert str(caught.value).startswith(says), str(caught.value)


@pytest.mark.parametrize(("raw", "route"), [
    ("/customers/C1", ("C1", "")),
    ("/customers/C1/ledger?since=2026-01-01", ("C1", "ledger")),
    ("/customers/C1/export", ("C1", "export")),
    ("/customers/C1/adjustments", ("C1", "adjustments")),
    ("/customers/C1/redemptions", ("C1", "redemptions")),
    ("/customers/a%2Fledger", ("a/ledger", "")),  # encoded: part of the id
    ("/customers/a/b/ledger", ("a/b", "ledger")),
    ("/customers/a/b", ("a/b", "")),  # an unknown resource name: part of the id
    ("/customers/ledger", ("ledger", "")),
    ("/customers/%FF/ledger", (None, "ledger")),
    ("/customers//ledger", ("/ledger", "")),
])
def test_routes_split_the_raw_path(raw: str, route: tuple[str | None, str]) -> None:
    assert route_of(raw) == route


def test_the_document_is_valid_and_describes_every_route() -> None:
    doc = document()
    validate_spec(doc)
    paths = doc["paths"]
    for resource in RESOURCES:
        path = f"/customers/{{customer_id}}/{resource}"
        assert path in paths, path
    for path in ("/customers/{customer_id}/adjustments", "/customers/{customer_id}/redemptions"):
        post = paths[path]["post"]
        assert set(post["responses"]) == {"202", "400", "401", "404", "405", "503"}
        assert post["requestBody"]["required"] is True
    body = doc["components"]["schemas"]["AdjustmentRequest"]
    assert set(body["required"]) == set(ADJUST)
    assert set(doc["components"]["schemas"]["RedemptionRequest"]["required"]) == set(REDEEM)
