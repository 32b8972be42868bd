"""One settings object, read from the environment (``PULSE_*``).

Every setting is documented in the README ("Settings"). A wrong value stops start-up with
``SettingsError`` naming the variable, never a traceback from deep inside a client library.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit


class SettingsError(ValueError):
    """A ``PULSE_*`` variable has a value we cannot use."""


_HOSTPORT = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._\-]{1,200}$")


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "pulse"
    partitions: int = 4
    replication_factor: int = 1
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    app_id: str = "customer-pulse"
    group_id: str = "customer-pulse-engine"
    topic_prefix: str = ""
    topic_purchases: str = "purchases"
    topic_tickets: str = "support-tickets"
    topic_surveys: str = "surveys"
    topic_redemptions: str = "redemptions"
    topic_deadletter: str = "deadletter"
    topic_alerts: str = "churn-alerts"
    topic_points: str = "points-accruals"
    rules_file: str = ""  # empty: the documented defaults (processors/default_rules.yaml)
    batch_max_records: int = 1000  # also bounds how long one batch holds the event loop
    batch_timeout_ms: int = 100
    # decoded customer states a worker keeps between batches (0: off). Only the owner of a
    # partition writes its states, so a cached state is the committed one; a worker that
    # loses a partition drops its cache.
    state_cache_customers: int = 50_000  # ~4.4 KB each decoded: ~220 MB
    # Python's youngest-generation GC threshold in a worker (0: Python's own, 700). The
    # cache keeps ~10^6 live objects, which the default makes the collector rescan: a
    # quarter of the CPU per event and ~0.2 s pauses (bench/hotpath.py prints GC time).
    gc_young_threshold: int = 50_000
    max_record_bytes: int = 64 * 1024
    commit_interval_s: float = 1.0
    align_idle_s: float = 2.0  # longest an input topic with unread records holds the others
    clock: str = "live"  # live: wall clock also advances idle partitions; event: event time only
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    instance_id: str = ""  # static group membership (faster restart after a crash)
    log_level: str = "INFO"
    # recovery (README "Recovery"): what to do when Redis lost a partition's state, or a
    # stored offset is outside what the broker holds; how long commands retry at start
    on_state_loss: str = "halt"  # halt | rebuild
    on_offset_reset: str = "reset"  # reset | halt
    connect_timeout_s: float = 30.0

    def topic(self, name: str) -> str:
        """Full topic name for one of the ``topic_*`` fields (``purchases``, ``deadletter``...)."""
        return self.topic_prefix + getattr(self, f"topic_{name}")

    @property
    def kafka_url(self) -> str:
        return f"kafka://{self.kafka_bootstrap}"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def redact_url(url: str) -> str:
    """``url`` with its password masked (``redis://:***@host:6379/0``): anything that prints
    or logs a URL goes through this."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _env_name(field: str) -> str:
    return "PULSE_" + field.upper()


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate settings from ``PULSE_*`` variables (unset ones keep defaults)."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for f in fields(Settings):
        name = _env_name(f.name)
        if name not in env:
            continue
        raw = env[name].strip()
        default = f.default
        try:
            if isinstance(default, bool):
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError:
            kind = type(default).__name__
            article = "an" if kind == "int" else "a"
            raise SettingsError(f"{name}={raw!r}: must be {article} {kind}") from None
    settings = Settings(**values)  # type: ignore[arg-type]
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    def bad(field: str, why: str) -> SettingsError:
        value = getattr(s, field)
        if field.endswith("_url"):
            value = redact_url(value)
        return SettingsError(f"{_env_name(field)}={value!r}: {why}")

    for hp in s.kafka_bootstrap.split(","):
        if not _HOSTPORT.match(hp.strip()):
            raise bad("kafka_bootstrap", "must be host:port (comma-separated for several)")
    url = urlparse(s.redis_url)
    if url.scheme not in ("redis", "rediss", "unix") or (url.scheme != "unix" and not url.hostname):
        raise bad("redis_url", "must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379/0")
    if not 1 <= s.partitions <= 10_000:
        raise bad("partitions", "must be between 1 and 10000")
    if not 1 <= s.replication_factor <= 32:
        raise bad("replication_factor", "must be between 1 and 32")
    if not 1 <= s.web_port <= 65535:
        raise bad("web_port", "must be a TCP port (1-65535)")
    for f in fields(Settings):
        is_topic = f.name.startswith("topic_") and f.name != "topic_prefix"
        if is_topic and not _TOPIC.match(s.topic_prefix + getattr(s, f.name)):
            raise bad(f.name, "must be a Kafka topic name (letters, digits, '.', '_', '-')")
    if not re.match(r"^[A-Za-z0-9_\-.]{1,64}$", s.redis_prefix):
        raise bad("redis_prefix", "must be 1-64 letters, digits, '_', '-' or '.'")
    if not 1 <= s.batch_max_records <= 100_000:
        raise bad("batch_max_records", "must be between 1 and 100000")
    if not 0 <= s.state_cache_customers <= 100_000_000:
        raise bad("state_cache_customers", "must be between 0 and 100000000")
    if not 0 <= s.gc_young_threshold <= 10_000_000:
        raise bad("gc_young_threshold", "must be between 0 and 10000000")
    if not 0 <= s.batch_timeout_ms <= 60_000:
        raise bad("batch_timeout_ms", "must be between 0 and 60000")
    if not 1024 <= s.max_record_bytes <= 16 * 1024 * 1024:
        raise bad("max_record_bytes", "must be between 1024 and 16777216")
    if not 0.05 <= s.commit_interval_s <= 600:
        raise bad("commit_interval_s", "must be between 0.05 and 600 seconds")
    if s.group_id == s.app_id:
        raise bad("group_id", "must differ from PULSE_APP_ID (Faust's own consumer group)")
    if not 0 <= s.align_idle_s <= 600:
        raise bad("align_idle_s", "must be between 0 and 600 seconds")
    if s.clock not in ("live", "event"):
        raise bad("clock", "must be 'live' or 'event'")
    if not 1.0 <= s.session_timeout_s <= 300:
        raise bad("session_timeout_s", "must be between 1 and 300 seconds")
    if not 0.1 <= s.heartbeat_interval_s < s.session_timeout_s:
        raise bad("heartbeat_interval_s", "must be at least 0.1 s and below the session timeout")
    if s.rules_file and not Path(s.rules_file).is_file():
        raise bad("rules_file", "no such file")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise bad("log_level", "must be DEBUG, INFO, WARNING or ERROR")
    if s.on_state_loss not in ("halt", "rebuild"):
        raise bad("on_state_loss", "must be 'halt' or 'rebuild'")
    if s.on_offset_reset not in ("reset", "halt"):
        raise bad("on_offset_reset", "must be 'reset' or 'halt'")
    if not 0 <= s.connect_timeout_s <= 3600:
        raise bad("connect_timeout_s", "must be between 0 and 3600 seconds")


def to_env(s: Settings) -> dict[str, str]:
    """The ``PULSE_*`` variables that reproduce ``s`` (for child processes)."""
    return {_env_name(f.name): str(getattr(s, f.name)) for f in fields(Settings)}
