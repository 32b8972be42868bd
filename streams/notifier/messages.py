"""Pure parts of a delivery: which stream a record is, its id, who wants it, the body sent,
and the dead-letter envelope. No I/O, no clock (times come in as arguments).

The body is a CloudEvents 1.0 event in structured JSON form: ``id`` is the output's own
deterministic id (``alert_id``, ``entry_id``) and equals the ``webhook-id`` header, so a
receiver that stores either drops redeliveries; ``time`` is the output's event time
(``occurred_at``), ``subject`` the customer id and ``data`` the output exactly as the worker
wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streams.notifier.config import ALERTS, ENGAGEMENT, POINTS, Endpoint

BACKFILL_HEADER = "pulse.backfill"
TYPE_PREFIX = "com.customer-pulse"
# the output's deterministic id, per stream; engagement records name theirs with the first of
# these fields present (that layer's records are defined by a later issue)
ID_FIELDS: Mapping[str, tuple[str, ...]] = {
    ALERTS: ("alert_id",),
    POINTS: ("entry_id",),
    ENGAGEMENT: ("message_id", "trigger_id", "change_id", "id"),
}
# dead-letter headers (the value is a JSON envelope holding the original record)
H_ENDPOINT, H_ATTEMPTS, H_ERROR = "pulse.notify.endpoint", "pulse.notify.attempts", \
    "pulse.notify.error"
H_REASON, H_WEBHOOK_ID, H_TOPIC = "pulse.notify.reason", "pulse.notify.webhook_id", \
    "pulse.notify.topic"
H_RUN = "pulse.notify.run"  # the process that wrote it (redrive stops at its own records)

Headers = Sequence[tuple[str, bytes]]


def decode(value: bytes | None) -> dict[str, Any] | None:
    """The output record as a JSON object, or None when it is not one."""
    if not value:
        return None
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def is_backfill(record: Mapping[str, Any], headers: Headers) -> bool:
    """Marked as caused by history: ``"backfill": true`` or the header ``pulse.backfill=1``."""
    if record.get("backfill") is True:
        return True
    return any(k == BACKFILL_HEADER and v == b"1" for k, v in headers)


def output_id(stream: str, record: Mapping[str, Any]) -> str | None:
    for name in ID_FIELDS[stream]:
        v = record.get(name)
        if isinstance(v, str) and v:
            return v
    return None


def wants(endpoint: Endpoint, stream: str, record: Mapping[str, Any], backfill: bool,
          consent: bool = True) -> bool:
    """Whether ``endpoint`` is configured to receive this record (``consent=False``: leaving
    the consent check of engagement records aside, to tell why a record went nowhere)."""
    if backfill and not endpoint.include_backfill:
        return False
    f = endpoint.streams.get(stream)
    if f is None:
        return False
    if stream == ALERTS:
        return ((not f.levels or record.get("level") in f.levels)
                and (not f.kinds or record.get("kind") in f.kinds))
    if stream == POINTS:
        return not f.rules or record.get("rule") in f.rules
    if f.kinds and record.get("kind") not in f.kinds:
        return False
    return not consent or not lacks_consent(f.consent_channels, record)


def lacks_consent(channels: Sequence[str], record: Mapping[str, Any]) -> bool:
    """An engagement record that is marketing (``"marketing"`` is not ``false``: a record
    that does not say counts as marketing) whose ``consent``, as of its own time, is not an
    opt-in (``true``) for each of ``channels``: opted out, or nothing on record. Segment
    changes (``marketing: false``) are CRM information, and churn alerts (their own stream)
    are for service teams: neither is held back."""
    if not channels or record.get("marketing") is False:
        return False
    consent = record.get("consent")
    if not isinstance(consent, Mapping):
        return True
    return any(consent.get(c) is not True for c in channels)


def event_type(stream: str, record: Mapping[str, Any]) -> str:
    """``com.customer-pulse.churn.alert`` / ``.churn.recovered`` / ``.points.entry`` /
    ``.engagement.<kind>``."""
    if stream == ALERTS:
        kind = record.get("kind")
        return f"{TYPE_PREFIX}.churn.{kind if kind == 'recovered' else 'alert'}"
    if stream == POINTS:
        return f"{TYPE_PREFIX}.points.entry"
    kind = record.get("kind")
    ok = isinstance(kind, str) and kind.replace("_", "").isalnum() and len(kind) <= 40
    return f"{TYPE_PREFIX}.engagement.{kind if ok else 'message'}"


def cloud_event(stream: str, topic: str, record: Mapping[str, Any], event_id: str) -> bytes:
    """The request body: a CloudEvents 1.0 structured-mode JSON event."""
    ev: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": f"/customer-pulse/{topic}",
        "type": event_type(stream, record),
    }
    subject = record.get("customer_id")
    if isinstance(subject, str):
        ev["subject"] = subject
    when = record.get("occurred_at")
    if isinstance(when, str):
        ev["time"] = when
    ev["datacontenttype"] = "application/json"
    ev["data"] = record
    return orjson.dumps(ev)


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that was given up on: what goes to ``notifications-deadletter``."""

    endpoint: str
    webhook_id: str
    stream: str
    topic: str  # the output topic it came from
    partition: int
    offset: int
    record: Mapping[str, Any]
    attempts: int
    reason: str  # rejected, retries_exhausted, retry_after_too_long, circuit_open
    last_error: str
    failed_at: str  # RFC 3339, when it was given up on

    def value(self) -> bytes:
        return orjson.dumps({
            "endpoint": self.endpoint, "webhook_id": self.webhook_id, "stream": self.stream,
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "attempts": self.attempts, "reason": self.reason, "last_error": self.last_error,
            "failed_at": self.failed_at, "record": self.record,
        })

    def headers(self, run_id: str) -> list[tuple[str, bytes]]:
        return [(H_ENDPOINT, self.endpoint.encode()), (H_WEBHOOK_ID, self.webhook_id.encode()),
                (H_ATTEMPTS, str(self.attempts).encode()), (H_REASON, self.reason.encode()),
                (H_ERROR, self.last_error.encode()[:1000]), (H_TOPIC, self.topic.encode()),
                (H_RUN, run_id.encode())]


def parse_dead_letter(value: bytes | None) -> DeadLetter | None:
    """A dead letter read back for ``redrive``; None if it is not one of ours."""
    d = decode(value)
    if d is None:
        return None
    try:
        src = d["source"]
        out = DeadLetter(endpoint=d["endpoint"], webhook_id=d["webhook_id"], stream=d["stream"],
                         topic=src["topic"], partition=int(src["partition"]),
                         offset=int(src["offset"]), record=d["record"],
                         attempts=int(d["attempts"]), reason=d["reason"],
                         last_error=d["last_error"], failed_at=d["failed_at"])
    except (KeyError, TypeError, ValueError):
        return None
    ok = (all(isinstance(x, str) for x in (out.endpoint, out.webhook_id, out.stream, out.topic))
          and out.stream in ID_FIELDS and isinstance(out.record, dict))
    return out if ok else None


def header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode(errors="replace")
    return None
