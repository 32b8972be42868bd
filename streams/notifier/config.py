"""The webhooks file (``PULSE_WEBHOOKS_FILE``): a top-level ``endpoints:`` list, validated.

Every mistake is reported as one line naming the field (``endpoints[1].streams.alerts.levels``)
and what would be right, so ``pulse notifier`` can stop with exit code 2 instead of a
traceback. Secrets are Standard Webhooks secrets (``whsec_`` + base64 of 24-64 random bytes),
given inline (``secret``), from a file (``secret_file``, e.g. a Kubernetes secret) or from an
environment variable (``secret_env``); they are never part of a message or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from processors.churn.layer import ALERT, RECOVERED
from processors.churn.records import LEVELS
from processors.engagement.outputs import SEGMENT_CHANGE
from processors.loyalty.ledger import (
    EARN,
    EXPIRY,
    EXPIRY_NOTICE,
    REDEMPTION,
    REDEMPTION_REJECTED,
    REFUND,
    SERVICE_RECOVERY,
    SURVEY_BONUS,
    TIER_CHANGE,
)
from processors.rules import TRIGGER_KINDS
from schemas.events import CONSENT_CHANNELS

ALERTS, POINTS, ENGAGEMENT = "alerts", "points", "engagement"
STREAMS = (ALERTS, POINTS, ENGAGEMENT)
ALERT_KINDS = (ALERT, RECOVERED)
ENGAGEMENT_KINDS = (SEGMENT_CHANGE, *TRIGGER_KINDS)
LEDGER_RULES = (EARN, REFUND, SURVEY_BONUS, SERVICE_RECOVERY, REDEMPTION, REDEMPTION_REJECTED,
                TIER_CHANGE, EXPIRY_NOTICE, EXPIRY)
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
SECRET_PREFIX = "whsec_"


class WebhooksConfigError(ValueError):
    """The webhooks file is unusable; the message names the field."""


@dataclass(frozen=True)
class StreamFilter:
    """Which records of one stream an endpoint wants; an empty tuple means all."""

    levels: tuple[str, ...] = ()  # alerts
    kinds: tuple[str, ...] = ()  # alerts: alert, recovered; engagement: ENGAGEMENT_KINDS
    rules: tuple[str, ...] = ()  # ledger entries
    # engagement: the marketing channels the endpoint reaches customers through; a marketing
    # record goes only if the customer had opted in to each of them as of its time
    consent_channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    secret: str = field(repr=False)  # whsec_...; never printed
    streams: Mapping[str, StreamFilter]
    timeout_s: float = 10.0
    rate_limit_per_s: float = 0.0  # 0: unlimited
    include_backfill: bool = False
    max_attempts: int = 6
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    concurrency: int = 4
    queue_depth: int = 1000
    circuit_failures: int = 5  # consecutive dead letters that open the circuit (0: never)
    circuit_open_s: float = 30.0


@dataclass(frozen=True)
class WebhooksConfig:
    endpoints: tuple[Endpoint, ...]

    def endpoint(self, name: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.name == name), None)


# key -> (type, default, check, what a right value is)
_NUMBERS: dict[str, tuple[type, Any, Any, str]] = {
    "timeout_s": (float, 10.0, lambda v: 0 < v <= 300, "a number of seconds in (0, 300]"),
    "rate_limit_per_s": (float, 0.0, lambda v: 0 <= v <= 100_000,
                         "requests per second, 0 (unlimited) to 100000"),
    "max_attempts": (int, 6, lambda v: 1 <= v <= 30, "an integer from 1 to 30"),
    "backoff_initial_s": (float, 1.0, lambda v: 0 < v <= 3600, "seconds in (0, 3600]"),
    "backoff_max_s": (float, 60.0, lambda v: 0 < v <= 86_400, "seconds in (0, 86400]"),
    "concurrency": (int, 4, lambda v: 1 <= v <= 256, "an integer from 1 to 256"),
    "queue_depth": (int, 1000, lambda v: 1 <= v <= 1_000_000, "an integer from 1 to 1000000"),
    "circuit_failures": (int, 5, lambda v: 0 <= v <= 1_000_000,
                         "an integer, 0 (never open) or more"),
    "circuit_open_s": (float, 30.0, lambda v: 0 < v <= 86_400, "seconds in (0, 86400]"),
}
_SECRET_KEYS = ("secret", "secret_file", "secret_env")
_ENDPOINT_KEYS = {"name", "url", "streams", "include_backfill", *_SECRET_KEYS, *_NUMBERS}
_FILTER_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    ALERTS: {"levels": LEVELS, "kinds": ALERT_KINDS}, POINTS: {"rules": LEDGER_RULES},
    ENGAGEMENT: {"kinds": ENGAGEMENT_KINDS, "consent_channels": CONSENT_CHANNELS}}


def load_webhooks(path: str | Path, env: Mapping[str, str] | None = None) -> WebhooksConfig:
    """Read, parse and validate the file; ``WebhooksConfigError`` names what is wrong."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise WebhooksConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise WebhooksConfigError(f"{p}: not valid YAML{at}") from None
    try:
        return parse_webhooks(data, os.environ if env is None else env, base=p.parent)
    except WebhooksConfigError as exc:
        raise WebhooksConfigError(f"{p}: {exc}") from None


def parse_webhooks(data: Any, env: Mapping[str, str], base: Path = Path(".")
                   ) -> WebhooksConfig:
    if not isinstance(data, dict) or "endpoints" not in data:
        raise WebhooksConfigError("the top level must be a mapping with an 'endpoints:' list")
    extra = set(data) - {"endpoints"}
    if extra:
        raise WebhooksConfigError(f"unknown top-level key {sorted(extra)[0]!r} "
                                  "(only 'endpoints')")
    raw = data["endpoints"]
    if not isinstance(raw, list) or not raw:
        raise WebhooksConfigError("endpoints: must be a non-empty list of endpoints")
    endpoints = tuple(_endpoint(item, f"endpoints[{i}]", env, base) for i, item in enumerate(raw))
    seen: set[str] = set()
    for i, e in enumerate(endpoints):
        if e.name in seen:
            raise WebhooksConfigError(f"endpoints[{i}].name: {e.name!r} is used twice")
        seen.add(e.name)
    return WebhooksConfig(endpoints)


def _endpoint(item: Any, at: str, env: Mapping[str, str], base: Path) -> Endpoint:
    if not isinstance(item, dict):
        raise WebhooksConfigError(f"{at}: must be a mapping (name, url, streams, secret...)")
    unknown = set(item) - _ENDPOINT_KEYS
    if unknown:
        raise WebhooksConfigError(f"{at}.{sorted(unknown)[0]}: unknown key (known: "
                                  f"{', '.join(sorted(_ENDPOINT_KEYS))})")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise WebhooksConfigError(f"{at}.name: required, 1-64 letters, digits, '_', '-', '.'")
    url = item.get("url")
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise WebhooksConfigError(f"{at}.url: required, an http:// or https:// URL")
    numbers: dict[str, Any] = {}
    for key, (kind, default, ok, what) in _NUMBERS.items():
        v = item.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or (kind is int and
                                                                    not isinstance(v, int)):
            raise WebhooksConfigError(f"{at}.{key}: must be {what}")
        if not ok(v):
            raise WebhooksConfigError(f"{at}.{key}: {v!r} out of range, must be {what}")
        numbers[key] = kind(v)
    if numbers["backoff_max_s"] < numbers["backoff_initial_s"]:
        raise WebhooksConfigError(f"{at}.backoff_max_s: must be at least backoff_initial_s")
    backfill = item.get("include_backfill", False)
    if not isinstance(backfill, bool):
        raise WebhooksConfigError(f"{at}.include_backfill: must be true or false")
    return Endpoint(name=name, url=url, secret=_secret(item, at, env, base),  # type: ignore[arg-type]
                    streams=_streams(item.get("streams"), f"{at}.streams"),
                    include_backfill=backfill, **numbers)


def _streams(raw: Any, at: str) -> dict[str, StreamFilter]:
    if not isinstance(raw, dict) or not raw:
        raise WebhooksConfigError(f"{at}: required, a mapping with one or more of "
                                  f"{', '.join(STREAMS)} (e.g. 'alerts: {{levels: [high]}}')")
    out: dict[str, StreamFilter] = {}
    for stream, spec in raw.items():
        if stream not in _FILTER_KEYS:
            raise WebhooksConfigError(f"{at}.{stream}: unknown stream (known: "
                                      f"{', '.join(STREAMS)})")
        spec = {} if spec is None or spec == "all" else spec
        if not isinstance(spec, dict):
            raise WebhooksConfigError(f"{at}.{stream}: must be a mapping of filters "
                                      "({} or 'all' for every record)")
        allowed = _FILTER_KEYS[stream]
        values: dict[str, tuple[str, ...]] = {}
        for key, listed in spec.items():
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                raise WebhooksConfigError(f"{at}.{stream}.{key}: unknown filter (known: {known})")
            if not isinstance(listed, list) or not listed:
                raise WebhooksConfigError(f"{at}.{stream}.{key}: must be a non-empty list")
            for v in listed:
                if v not in allowed[key]:
                    raise WebhooksConfigError(f"{at}.{stream}.{key}: unknown value {v!r} "
                                              f"(known: {', '.join(allowed[key])})")
            values[key] = tuple(listed)
        out[stream] = StreamFilter(**values)
    return out


def _secret(item: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> str:
    given = [k for k in _SECRET_KEYS if k in item]
    if len(given) != 1:
        raise WebhooksConfigError(f"{at}: exactly one of secret, secret_file, secret_env "
                                  "is required (a whsec_... Standard Webhooks secret)")
    key = given[0]
    source = item[key]
    if not isinstance(source, str) or not source:
        raise WebhooksConfigError(f"{at}.{key}: must be a non-empty string")
    if key == "secret_file":
        path = Path(source) if Path(source).is_absolute() else base / source
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise WebhooksConfigError(f"{at}.secret_file: cannot read {path}: "
                                      f"{exc.strerror}") from None
    elif key == "secret_env":
        if source not in env or not env[source].strip():
            raise WebhooksConfigError(f"{at}.secret_env: environment variable {source} "
                                      "is not set")
        value = env[source].strip()
    else:
        value = source
    why = secret_problem(value)
    if why:
        raise WebhooksConfigError(f"{at}.{key}: {why}")  # the value itself is never shown
    return value


def secret_problem(value: str) -> str | None:
    """Why ``value`` is not a usable Standard Webhooks secret, or None."""
    if not value.startswith(SECRET_PREFIX):
        return "the secret must start with 'whsec_' (Standard Webhooks format)"
    body = value[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "the part after 'whsec_' must be base64"
    if not 24 <= len(key) <= 64:
        return f"the secret must hold 24 to 64 bytes (it holds {len(key)})"
    return None
