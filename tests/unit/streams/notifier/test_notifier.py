"""The notifier's pure parts: the webhooks file, filters, envelopes, backoff, Retry-After,
the commit frontier; and the CLI's answer to a bad file."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from streams.notifier.config import WebhooksConfigError, load_webhooks, parse_webhooks
from streams.notifier.messages import (
    DeadLetter,
    cloud_event,
    is_backfill,
    output_id,
    parse_dead_letter,
    wants,
)
from streams.notifier.offsets import PartitionTrack
from streams.notifier.retry import (
    backoff_ceiling,
    backoff_delay,
    classify,
    next_step,
    parse_retry_after,
)
from streams.tools.cli import cli

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def endpoint(**over: Any) -> dict[str, Any]:
    return {"name": "crm", "url": "https://crm.example/hooks", "secret": SECRET,
            "streams": {"alerts": {"levels": ["high"]}}, **over}


def parse(*endpoints: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return parse_webhooks({"endpoints": list(endpoints)}, env or {})


# -- the webhooks file ----------------------------------------------------------------------


@pytest.mark.parametrize(("data", "message"), [
    ({}, "'endpoints:' list"),
    ({"endpoints": []}, "endpoints: must be a non-empty list"),
    ({"endpoints": [endpoint()], "extra": 1}, "unknown top-level key 'extra'"),
    ({"endpoints": ["crm"]}, "endpoints[0]: must be a mapping"),
    ({"endpoints": [endpoint(name="a b")]}, "endpoints[0].name:"),
    ({"endpoints": [endpoint(), endpoint()]}, "endpoints[1].name: 'crm' is used twice"),
    ({"endpoints": [endpoint(url="ftp://x")]}, "endpoints[0].url: required, an http://"),
    ({"endpoints": [endpoint(urll="x")]}, "endpoints[0].urll: unknown key"),
    ({"endpoints": [endpoint(streams={})]}, "endpoints[0].streams: required"),
    ({"endpoints": [endpoint(streams={"alert": None})]}, "streams.alert: unknown stream"),
    ({"endpoints": [endpoint(streams={"alerts": {"levels": ["urgent"]}})]},
     "streams.alerts.levels: unknown value 'urgent' (known: low, medium, high)"),
    ({"endpoints": [endpoint(streams={"alerts": {"rules": ["earn"]}})]},
     "streams.alerts.rules: unknown filter (known: levels, kinds)"),
    ({"endpoints": [endpoint(streams={"points": {"rules": "earn"}})]},
     "streams.points.rules: must be a non-empty list"),
    ({"endpoints": [endpoint(streams={"points": {"rules": ["expiry_notise"]}})]},
     "unknown value 'expiry_notise'"),
    ({"endpoints": [endpoint(streams={"points": [1]})]}, "streams.points: must be a mapping"),
    ({"endpoints": [endpoint(streams={"engagement": {"consent_channels": ["mail"]}})]},
     "streams.engagement.consent_channels: unknown value 'mail' (known: email, sms, push, "
     "post, phone)"),
    ({"endpoints": [endpoint(streams={"engagement": {"kinds": ["alert"]}})]},
     "streams.engagement.kinds: unknown value 'alert' (known: segment_change, points_expiry"),
    ({"endpoints": [endpoint(timeout_s=0)]}, "endpoints[0].timeout_s: 0 out of range"),
    ({"endpoints": [endpoint(timeout_s="5s")]}, "endpoints[0].timeout_s: must be"),
    ({"endpoints": [endpoint(max_attempts=2.5)]}, "endpoints[0].max_attempts: must be an int"),
    ({"endpoints": [endpoint(rate_limit_per_s=-1)]}, "rate_limit_per_s: -1 out of range"),
    ({"endpoints": [endpoint(include_backfill="yes")]}, "include_backfill: must be true"),
    ({"endpoints": [endpoint(backoff_initial_s=5, backoff_max_s=1)]},
     "backoff_max_s: must be at least backoff_initial_s"),
    ({"endpoints": [{k: v for k, v in endpoint().items() if k != "secret"}]},
     "exactly one of secret, secret_file, secret_env"),
    ({"endpoints": [endpoint(secret_env="X")]}, "exactly one of secret"),
    ({"endpoints": [endpoint(secret="s3cr3t-value")]}, "must start with 'whsec_'"),
    ({"endpoints": [endpoint(secret="whsec_!!notbase64!!")]}, "must be base64"),
    ({"endpoints": [endpoint(secret="whsec_" + base64.b64encode(b"short").decode())]},
     "24 to 64 bytes (it holds 5)"),
])
def test_bad_webhooks_file_names_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(WebhooksConfigError) as err:
        parse_webhooks(data, {})
    assert message in str(err.value)
    assert "s3cr3t-value" not in str(err.value) and "notbase64" not in str(err.value)


def test_defaults_and_secret_sources(tmp_path: Path) -> None:
    (tmp_path / "crm.secret").write_text(SECRET + "\n")
    no_secret = {k: v for k, v in endpoint().items() if k != "secret"}
    cfg = parse_webhooks({"endpoints": [
        endpoint(name="inline"),
        no_secret | {"name": "file", "secret_file": "crm.secret"},  # relative to the YAML
        no_secret | {"name": "env", "secret_env": "HOOK_SECRET"},
    ]}, {"HOOK_SECRET": SECRET}, base=tmp_path)
    assert [e.secret for e in cfg.endpoints] == [SECRET] * 3
    e = cfg.endpoints[0]
    assert SECRET not in repr(e) and SECRET not in repr(cfg)
    assert (e.timeout_s, e.rate_limit_per_s, e.include_backfill, e.max_attempts) == \
        (10.0, 0.0, False, 6)
    with pytest.raises(WebhooksConfigError, match="secret_env: environment variable HOOK"):
        parse(no_secret | {"secret_env": "HOOK_SECRET"})
    with pytest.raises(WebhooksConfigError, match=r"secret_file: cannot read .*nope"):
        parse_webhooks({"endpoints": [no_secret | {"secret_file": "nope"}]}, {}, base=tmp_path)


def test_load_webhooks_reports_yaml_errors_with_the_file(tmp_path: Path) -> None:
    p = tmp_path / "hooks.yaml"
    p.write_text("endpoints:\n  - name: [unclosed\n")
    with pytest.raises(WebhooksConfigError, match=r"hooks.yaml: not valid YAML \(line \d\)"):
        load_webhooks(p)
    with pytest.raises(WebhooksConfigError, match="cannot read"):
        load_webhooks(tmp_path / "missing.yaml")


def test_cli_bad_webhooks_file_is_exit_2_with_one_line(tmp_path: Path) -> None:
    p = tmp_path / "hooks.yaml"
    p.write_text(f"endpoints:\n  - name: crm\n    url: https://x\n    secret: {SECRET}\n"
                 "    streams: {alerts: {levels: [hihg]}}\n")
    for args in (["notifier"], ["notifier", "redrive"]):
        result = CliRunner().invoke(cli, args, env={"PULSE_WEBHOOKS_FILE": str(p)})
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "endpoints[0].streams.alerts.levels" in lines[0]
        assert "hihg" in lines[0] and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["notifier"], env={"PULSE_WEBHOOKS_FILE": ""})
    assert result.exit_code == 2 and "PULSE_WEBHOOKS_FILE is not set" in result.output


# -- filters, ids, envelopes ----------------------------------------------------------------

ALERT = {"alert_id": "C1:alert:high@1", "kind": "alert", "customer_id": "C1", "level": "high",
         "occurred_at": "2026-11-30T10:00:00.000Z", "score": 0.93}
ENTRY = {"entry_id": "ev-9:tier_change", "customer_id": "C1", "rule": "tier_change",
         "points": 0, "occurred_at": "2026-11-30T10:00:00.000Z"}


CONSENT = {"email": True, "sms": False, "push": None, "post": None, "phone": None}
BDAY = {"message_id": "msg-1", "kind": "birthday", "marketing": True, "consent": CONSENT}
CHANGE = {"change_id": "seg-1", "kind": "segment_change", "marketing": False,
          "consent": CONSENT}


@pytest.mark.parametrize(("streams", "stream", "record", "backfill", "include", "expected"), [
    ({"alerts": {"levels": ["high"]}}, "alerts", ALERT, False, False, True),
    ({"alerts": {"levels": ["high"]}}, "alerts", ALERT | {"level": "medium"}, False, False,
     False),
    ({"alerts": {"kinds": ["recovered"]}}, "alerts", ALERT, False, False, False),
    ({"alerts": None}, "alerts", ALERT | {"level": "low", "kind": "recovered"}, False, False,
     True),
    ({"alerts": None}, "points", ENTRY, False, False, False),
    ({"points": {"rules": ["expiry_notice", "tier_change"]}}, "points", ENTRY, False, False,
     True),
    ({"points": {"rules": ["expiry_notice"]}}, "points", ENTRY, False, False, False),
    ({"points": None}, "points", ENTRY, True, False, False),  # backfill skipped by default
    ({"points": None}, "points", ENTRY, True, True, True),  # include_backfill: true
    ({"engagement": None}, "engagement", {"message_id": "m"}, False, False, True),
    # engagement: kinds, and consent for the endpoint's channels (as of the record's time)
    ({"engagement": {"kinds": ["birthday"]}}, "engagement", BDAY, False, False, True),
    ({"engagement": {"kinds": ["segment_change"]}}, "engagement", BDAY, False, False, False),
    ({"engagement": {"consent_channels": ["email"]}}, "engagement", BDAY, False, False, True),
    ({"engagement": {"consent_channels": ["sms"]}}, "engagement", BDAY, False, False, False),
    ({"engagement": {"consent_channels": ["push"]}}, "engagement", BDAY, False, False, False),
    ({"engagement": {"consent_channels": ["email", "sms"]}}, "engagement", BDAY, False, False,
     False),
    ({"engagement": {"consent_channels": ["sms"]}}, "engagement", CHANGE, False, False, True),
    ({"engagement": {"consent_channels": ["email"]}}, "engagement", {"message_id": "m"}, False,
     False, False),  # a record that does not say is marketing, without consent
    ({"engagement": {"consent_channels": ["email"]}}, "engagement", BDAY, True, False, False),
])
def test_wants(streams: dict[str, Any], stream: str, record: dict[str, Any], backfill: bool,
               include: bool, expected: bool) -> None:
    ep = parse(endpoint(streams=streams, include_backfill=include)).endpoints[0]
    assert wants(ep, stream, record, backfill) is expected


@pytest.mark.parametrize(("record", "headers", "expected"), [
    (ENTRY, [], False),
    (ENTRY | {"backfill": True}, [], True),
    (ENTRY | {"backfill": False}, [], False),
    (ENTRY, [("pulse.backfill", b"1")], True),
    (ENTRY, [("pulse.backfill", b"0")], False),
    (ENTRY | {"backfill": "yes"}, [], False),
])
def test_backfill_marker(record: dict[str, Any], headers: list[tuple[str, bytes]],
                         expected: bool) -> None:
    assert is_backfill(record, headers) is expected


@pytest.mark.parametrize(("stream", "record", "expected"), [
    ("alerts", ALERT, "C1:alert:high@1"),
    ("points", ENTRY, "ev-9:tier_change"),
    ("points", {"customer_id": "C1"}, None),
    ("engagement", {"trigger_id": "t-1", "id": "x"}, "t-1"),
    ("engagement", {"message_id": ""}, None),
])
def test_output_id(stream: str, record: dict[str, Any], expected: str | None) -> None:
    assert output_id(stream, record) == expected


@pytest.mark.parametrize(("stream", "record", "type_"), [
    ("alerts", ALERT, "com.customer-pulse.churn.alert"),
    ("alerts", ALERT | {"kind": "recovered"}, "com.customer-pulse.churn.recovered"),
    ("points", ENTRY, "com.customer-pulse.points.entry"),
    ("engagement", {"kind": "birthday", "customer_id": "C1"},
     "com.customer-pulse.engagement.birthday"),
    ("engagement", {"kind": "a.b/c"}, "com.customer-pulse.engagement.message"),
])
def test_cloud_event(stream: str, record: dict[str, Any], type_: str) -> None:
    ev = orjson.loads(cloud_event(stream, "churn-alerts", record, "id-1"))
    assert ev["specversion"] == "1.0" and ev["id"] == "id-1" and ev["type"] == type_
    assert ev["source"] == "/customer-pulse/churn-alerts"
    assert ev["datacontenttype"] == "application/json" and ev["data"] == record
    assert ev.get("subject") == record.get("customer_id")
    assert ev.get("time") == record.get("occurred_at")


def test_dead_letter_round_trip() -> None:
    dl = DeadLetter(endpoint="crm", webhook_id=ENTRY["entry_id"], stream="points",
                    topic="points-accruals", partition=2, offset=41, record=ENTRY, attempts=6,
                    reason="retries_exhausted", last_error="HTTP 503: down",
                    failed_at="2026-12-01T10:00:00.000Z")
    assert parse_dead_letter(dl.value()) == dl
    headers = dict(dl.headers("run-1"))
    assert headers["pulse.notify.endpoint"] == b"crm"
    assert headers["pulse.notify.attempts"] == b"6"
    assert headers["pulse.notify.error"] == b"HTTP 503: down"
    for bad in (b"", b"[1]", b"{}", orjson.dumps(orjson.loads(dl.value()) | {"stream": "x"})):
        assert parse_dead_letter(bad) is None


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [
    (200, "delivered"), (204, "delivered"), (299, "delivered"), (301, "rejected"),
    (400, "rejected"), (401, "rejected"), (404, "rejected"), (408, "rejected"),
    (410, "rejected"), (429, "retry"), (500, "retry"), (503, "retry"), (599, "retry"),
    (None, "retry"), (0, "rejected"),  # 0: the request could not be sent at all
])
def test_classify(status: int | None, kind: str) -> None:
    assert classify(status) == kind


@pytest.mark.parametrize(("attempt", "ceiling"), [
    (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (60, 10.0), (500, 10.0),
])
def test_backoff_doubles_up_to_the_max(attempt: int, ceiling: float) -> None:
    assert backoff_ceiling(attempt, 0.5, 10.0) == ceiling
    assert backoff_delay(attempt, 0.5, 10.0, 0.0) == 0.0  # full jitter: from 0 ...
    assert backoff_delay(attempt, 0.5, 10.0, 0.5) == ceiling / 2  # ... to the ceiling
    assert backoff_delay(attempt, 0.5, 10.0, 0.999) < ceiling


NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("-5", None), ("1.5", None),
    ("soon", None), ("", None),
    (format_datetime(datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC), usegmt=True), 30.0),
    ("Tue, 01 Dec 2026 12:02:00 GMT", 120.0),
    ("Tue, 01 Dec 2026 11:00:00 GMT", 0.0),  # in the past: now
    ("Tuesday, 01-Dec-26 12:00:10 GMT", 10.0),  # RFC 850, still accepted by RFC 9110
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(("status", "attempt", "retry_after", "action", "delay", "reason"), [
    (204, 1, None, "delivered", 0.0, ""),
    (404, 1, None, "deadletter", 0.0, "rejected"),
    (400, 1, 5.0, "deadletter", 0.0, "rejected"),
    (500, 1, None, "retry", 0.5, ""),  # draw 0.5 of the 1 s ceiling
    (None, 3, None, "retry", 2.0, ""),  # timeout: 0.5 * 4 s
    (503, 5, None, "deadletter", 0.0, "retries_exhausted"),
    (429, 1, 7.0, "retry", 7.0, ""),  # Retry-After wins over the backoff
    (429, 2, None, "retry", 1.0, ""),
    (429, 1, 120.0, "deadletter", 0.0, "retry_after_too_long"),  # max is 60
    (429, 5, 1.0, "deadletter", 0.0, "retries_exhausted"),
    (503, 1, 30.0, "retry", 0.5, ""),  # Retry-After is honoured on 429 only
])
def test_next_step(status: int | None, attempt: int, retry_after: float | None, action: str,
                   delay: float, reason: str) -> None:
    step = next_step(status, attempt, 5, retry_after, 1.0, 60.0, 0.5)
    assert (step.action, step.delay_s, step.reason) == (action, delay, reason)


# -- the commit frontier --------------------------------------------------------------------


def test_frontier_waits_for_every_endpoint_of_every_earlier_record() -> None:
    t = PartitionTrack()
    t.add(10, 2)  # two endpoints
    t.add(11, 0)  # nobody wants it
    t.add(12, 1)
    assert t.frontier is None and t.pending == 3
    t.done(12)
    assert t.frontier is None  # 10 still open at one endpoint
    t.done(10)
    assert t.frontier is None
    t.done(10)
    assert t.frontier == 13 and t.pending == 0
    t.add(20, 0)  # a gap (compacted or skipped offsets) is fine
    assert t.frontier == 21


def test_frontier_refuses_what_would_corrupt_it() -> None:
    t = PartitionTrack()
    t.add(5, 1)
    with pytest.raises(ValueError, match="offsets must grow"):
        t.add(5, 1)
    t.done(5)
    t.add(6, 0)
    with pytest.raises(KeyError):
        t.done(5)  # already past the frontier
    t.add(7, 1)
    t.done(7)
    assert t.frontier == 8


# -- the rate limit -------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "acquires", "waits"), [
    (0.0, 5, []),  # unlimited
    (2.0, 2, []),  # a burst of up to the rate
    (2.0, 3, [0.5]),  # then one token every 1/rate s
    (2.0, 5, [0.5, 0.5, 0.5]),
    (0.5, 2, [2.0]),  # below 1/s: a burst of 1
])
async def test_rate_limiter_spaces_requests(rate: float, acquires: int, waits: list[float]
                                            ) -> None:
    from streams.notifier.delivery import RateLimiter

    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:  # time passes only when the limiter waits
        slept.append(round(s, 6))
        now[0] += s

    limiter = RateLimiter(rate, clock=lambda: now[0], sleep=fake_sleep)
    for _ in range(acquires):
        await limiter.acquire()
    assert slept == waits

