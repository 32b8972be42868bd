"""One settings object, read from the environment (``PULSE_*``).

Every setting is documented in the README ("Settings"). A wrong value stops start-up with
``SettingsError`` naming the variable, never a traceback from deep inside a client library.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
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
    topic_customers: str = "customers"  # signups, profile updates, consent, erasure requests
    topic_adjustments: str = "adjustments"  # points adjustments (README "Member operations")
    # the referral programme's own records (README "Referral programme"): written and read
    # by the workers
    topic_referrals: str = "referrals"
    topic_audit: str = "audit"  # erasure receipts (README "Member operations"), kept forever
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
    # an event dated more than this after the wall clock is dead-lettered (from_future): a
    # till whose clock is wrong must not move anyone else's time. A day covers a time zone
    # sent as UTC by mistake (up to 14 h) and clock drift; anything later is not a real event
    max_future_skew_s: float = 86_400.0
    # outputs of events (or time-driven changes) older than this are marked backfill, and so
    # is everything a replay causes: a notifier skips stale "we miss you" messages
    backfill_after_s: float = 86_400.0
    # a replay that sent nothing for this long without its end marker ends anyway
    replay_idle_end_s: float = 600.0
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    instance_id: str = ""  # static group membership (faster restart after a crash)
    # `pulse worker`: engine processes under one supervisor ("auto": the CPUs available,
    # at most the partitions); 1 runs the worker in the command's own process, no supervisor
    processes: str = "1"
    stop_timeout_s: float = 25.0  # supervisor: a process not stopped after SIGTERM is killed
    log_level: str = "INFO"
    # security (README "Security"): Kafka TLS/SASL, Redis password/TLS, API bearer tokens.
    # The secrets (SECRETS) may also come from a file named by PULSE_<NAME>_FILE.
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (SASL_* only)
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""  # empty: the system's CAs
    kafka_ssl_certfile: str = ""  # client certificate (mutual TLS)
    kafka_ssl_keyfile: str = ""
    kafka_ssl_check_hostname: bool = True
    redis_password: str = ""  # overrides a password in PULSE_REDIS_URL
    redis_ssl_ca_certs: str = ""  # rediss:// only; empty: the system's CAs
    redis_ssl_certfile: str = ""
    redis_ssl_keyfile: str = ""
    api_tokens: str = ""  # comma-separated bearer tokens for /customers/{id}
    metrics_token: str = ""  # bearer token for /metrics, /healthz, /readyz (empty: open)
    # the key of the keyed hash (HMAC-SHA256) that names an erased customer in the erasure
    # receipts; empty: a key generated once and kept in Redis (streams/worker/erasure.py)
    erasure_key: str = ""

    # pulse notifier (streams/notifier/): webhooks file, its own group, topics, web port
    webhooks_file: str = ""
    notifier_group_id: str = "customer-pulse-notifier"
    topic_notifications_deadletter: str = "notifications-deadletter"
    topic_engagement: str = "engagement"  # written by the engagement layer (a later issue)
    notifier_web_port: int = 6067

    # recovery (README "Recovery"): what to do when Redis lost a partition's state, or a
    # stored offset is outside what the broker holds; how long commands retry at start
    on_state_loss: str = "halt"  # halt | rebuild
    on_offset_reset: str = "reset"  # reset | halt
    connect_timeout_s: float = 30.0

    def __repr__(self) -> str:
        """Never shows a secret: a secret field is ``'***'`` when set, the Redis URL's
        password is masked."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRETS and value:
                value = "***"
            elif f.name == "redis_url":
                value = redact_url(value)
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    def topic(self, name: str) -> str:
        """Full topic name for one of the ``topic_*`` fields (``purchases``, ``deadletter``...)."""
        return self.topic_prefix + getattr(self, f"topic_{name}")

    @property
    def kafka_url(self) -> str:
        return f"kafka://{self.kafka_bootstrap}"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


SECRETS = frozenset({"kafka_sasl_password", "redis_password", "api_tokens", "metrics_token",
                     "erasure_key"})
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
MIN_TOKEN_CHARS = 16
# the Kafka/Redis transport security fields at their defaults: for the embedded dev stack,
# which is plaintext on loopback whatever the environment says about production
PLAIN_TRANSPORT: dict[str, object] = {
    "kafka_security_protocol": "PLAINTEXT", "kafka_sasl_mechanism": "",
    "kafka_sasl_username": "", "kafka_sasl_password": "", "kafka_ssl_cafile": "",
    "kafka_ssl_certfile": "", "kafka_ssl_keyfile": "", "redis_password": "",
    "redis_ssl_ca_certs": "", "redis_ssl_certfile": "", "redis_ssl_keyfile": "",
}


def redact_url(url: str) -> str:
    """``url`` with its password masked (``redis://:***@host:6379/0``); anything that
    prints or logs a URL goes through this."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<unparsable URL>"
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _env_name(field: str) -> str:
    return "PULSE_" + field.upper()


def _secret_file(name: str, path: str) -> str:
    """A secret from the file named by ``<name>_FILE`` (a Kubernetes secret volume):
    the file's text without its trailing newline."""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable text"
        raise SettingsError(f"{name}_FILE={path!r}: {why}") from None


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate settings from ``PULSE_*`` variables (unset ones keep defaults).
    A secret may also come from ``PULSE_<NAME>_FILE``, never from both."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for f in fields(Settings):
        name = _env_name(f.name)
        if f.name in SECRETS and f"{name}_FILE" in env:
            if env.get(name, "").strip():
                raise SettingsError(f"{name} and {name}_FILE are both set: keep one")
            values[f.name] = _secret_file(name, env[f"{name}_FILE"]).strip()
            continue
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
            if f.name in SECRETS:  # never echo a secret
                raise SettingsError(f"{name}: not a valid value") from None
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
    if not 1 <= s.max_future_skew_s <= 366 * 86_400:
        raise bad("max_future_skew_s", "must be between 1 and 31622400 seconds (366 days)")
    if not 0 <= s.backfill_after_s <= 3650 * 86_400:
        raise bad("backfill_after_s", "must be between 0 and 315360000 seconds (10 years)")
    if not 1 <= s.replay_idle_end_s <= 30 * 86_400:
        raise bad("replay_idle_end_s", "must be between 1 and 2592000 seconds (30 days)")
    if not 1.0 <= s.session_timeout_s <= 300:
        raise bad("session_timeout_s", "must be between 1 and 300 seconds")
    if not 0.1 <= s.heartbeat_interval_s < s.session_timeout_s:
        raise bad("heartbeat_interval_s", "must be at least 0.1 s and below the session timeout")
    if s.rules_file and not Path(s.rules_file).is_file():
        raise bad("rules_file", "no such file")
    if not 0 <= s.notifier_web_port <= 65535:
        raise bad("notifier_web_port", "must be a TCP port (0-65535)")
    if s.notifier_group_id in (s.group_id, s.app_id) or not s.notifier_group_id:
        raise bad("notifier_group_id", "must be set and differ from PULSE_GROUP_ID and "
                  "PULSE_APP_ID (the notifier is its own consumer group)")
    if s.webhooks_file and not Path(s.webhooks_file).is_file():
        raise bad("webhooks_file", "no such file")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise bad("log_level", "must be DEBUG, INFO, WARNING or ERROR")
    if s.on_state_loss not in ("halt", "rebuild"):
        raise bad("on_state_loss", "must be 'halt' or 'rebuild'")
    if s.on_offset_reset not in ("reset", "halt"):
        raise bad("on_offset_reset", "must be 'reset' or 'halt'")
    if s.processes != "auto" and not (re.fullmatch(r"[0-9]{1,4}", s.processes)
                                      and 1 <= int(s.processes) <= 1024):
        raise bad("processes", "must be 'auto' or a number of processes between 1 and 1024")
    if not 1 <= s.stop_timeout_s <= 3600:
        raise bad("stop_timeout_s", "must be between 1 and 3600 seconds")
    if not 0 <= s.connect_timeout_s <= 3600:
        raise bad("connect_timeout_s", "must be between 0 and 3600 seconds")
    _validate_security(s, bad)


def _validate_security(s: Settings, bad: Callable[[str, str], SettingsError]) -> None:
    """Kafka TLS/SASL, Redis TLS and API token settings. A message never shows a secret."""
    if s.kafka_security_protocol not in SECURITY_PROTOCOLS:
        raise bad("kafka_security_protocol", f"must be one of {', '.join(SECURITY_PROTOCOLS)}")
    if s.kafka_security_protocol.startswith("SASL_"):
        if s.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise bad("kafka_sasl_mechanism", f"must be one of {', '.join(SASL_MECHANISMS)} "
                      f"with PULSE_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}")
        if not s.kafka_sasl_username:
            raise SettingsError("PULSE_KAFKA_SASL_USERNAME is required with SASL")
        if not s.kafka_sasl_password:
            raise SettingsError("PULSE_KAFKA_SASL_PASSWORD (or PULSE_KAFKA_SASL_PASSWORD_FILE) "
                                "is required with SASL")
    elif s.kafka_sasl_mechanism:
        raise bad("kafka_sasl_mechanism", "needs PULSE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT "
                  "or SASL_SSL")
    # (TLS file settings, whether TLS is on, what turns it on, the client certificate)
    tls = (
        (("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"),
         s.kafka_security_protocol.endswith("SSL"),
         "PULSE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL", "kafka_ssl_certfile"),
        (("redis_ssl_ca_certs", "redis_ssl_certfile", "redis_ssl_keyfile"),
         s.redis_url.startswith("rediss://"), "a rediss:// PULSE_REDIS_URL", "redis_ssl_certfile"),
    )
    for names, tls_on, turned_on_by, certfile in tls:
        for name in names:
            path = getattr(s, name)
            if path and not tls_on:
                raise bad(name, f"needs {turned_on_by}")
            if path and not Path(path).is_file():
                raise bad(name, "no such file")
        if getattr(s, names[2]) and not getattr(s, certfile):
            raise bad(names[2], f"needs {_env_name(certfile)} (the client certificate)")
    for name in ("api_tokens", "metrics_token"):
        tokens = api_tokens(getattr(s, name))
        if any(len(t) < MIN_TOKEN_CHARS or not t.isprintable() or " " in t for t in tokens):
            raise SettingsError(f"{_env_name(name)}: every token must be at least "
                                f"{MIN_TOKEN_CHARS} printable characters without spaces")


def api_tokens(value: str) -> tuple[str, ...]:
    """The comma-separated tokens of ``PULSE_API_TOKENS`` (several during a rotation)."""
    return tuple(t.strip() for t in value.split(",") if t.strip())


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def to_env(s: Settings) -> dict[str, str]:
    """The ``PULSE_*`` variables that reproduce ``s`` (for child processes)."""
    return {_env_name(f.name): str(getattr(s, f.name)) for f in fields(Settings)}
