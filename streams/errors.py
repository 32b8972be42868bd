"""What a `pulse` command says when something outside it is wrong, and its exit code.

Exit codes (README "Commands"): 0 ok, 1 partial (some input rejected), 2 usage or bad
setting, 3 a dependency (Kafka, Redis) unreachable or refused us, 4 the worker halted on
detected state loss or an offset reset. Every message is one or two lines naming what failed
and the setting to check; a URL is shown with its password masked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from streams.settings import Settings, redact_url

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_DEPENDENCY = 3
EXIT_HALTED = 4


class PulseError(Exception):
    """An error with a readable message and the exit code of the command."""

    exit_code = 1


class DependencyDown(PulseError):
    """Kafka or Redis could not be reached, or refused us."""

    exit_code = EXIT_DEPENDENCY


class Halted(PulseError):
    """The worker stopped on purpose: a partition's state is lost or an offset is out of
    range, and the settings say to stop rather than to repair."""

    exit_code = EXIT_HALTED


def redis_down(settings: Settings, exc: BaseException) -> DependencyDown:
    import redis.exceptions as rx

    where = redact_url(settings.redis_url)
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError) or \
            "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
        return DependencyDown(f"Redis at {where} refused our credentials: {_short(exc)}\n"
                              "check the password in PULSE_REDIS_URL")
    return DependencyDown(f"Redis unreachable at {where}: {_short(exc)}\n"
                          "check PULSE_REDIS_URL and that redis-server is running")


def kafka_down(settings: Settings, exc: BaseException | None = None) -> DependencyDown:
    why = f": {_short(exc)}" if exc is not None else ""
    return DependencyDown(f"Kafka unreachable at {settings.kafka_bootstrap}{why}\n"
                          "check PULSE_KAFKA_BOOTSTRAP and that the broker is running")


def as_pulse_error(settings: Settings | None, exc: BaseException) -> PulseError | None:
    """The readable form of a client library's connection error, or None if it is not one."""
    import redis.exceptions as rx
    from aiokafka.errors import KafkaConnectionError, KafkaError

    if settings is None:
        from streams.settings import Settings as _S

        settings = _S()
    if isinstance(exc, PulseError):
        return exc
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError | rx.AuthenticationError
                  | rx.AuthorizationError) or (isinstance(exc, rx.ResponseError)
                                               and "NOAUTH" in str(exc)):
        return redis_down(settings, exc)
    if isinstance(exc, kafka_auth_errors()):
        return DependencyDown(f"Kafka at {settings.kafka_bootstrap} refused us: {_short(exc)}\n"
                              "check the PULSE_KAFKA_SASL_* / PULSE_KAFKA_SSL_* settings and the "
                              "broker's ACLs")
    if isinstance(exc, KafkaConnectionError) or (
            isinstance(exc, KafkaError) and "connect" in str(exc).lower()):
        return kafka_down(settings, exc)
    if isinstance(exc, ConnectionError | OSError) and "Connect call failed" in str(exc):
        return kafka_down(settings, exc)
    return None


def kafka_auth_errors() -> tuple[type[BaseException], ...]:
    import aiokafka.errors as kx

    return (kx.AuthenticationFailedError, kx.AuthenticationMethodNotSupported,
            kx.SaslAuthenticationFailed, kx.UnsupportedSaslMechanismError,
            kx.IllegalSaslStateError, kx.TopicAuthorizationFailedError,
            kx.GroupAuthorizationFailedError, kx.ClusterAuthorizationFailedError)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


class RateLimit(logging.Filter):
    """Lets one record per message template through every ``every_s`` seconds and says how
    many were held back: a client that cannot reach its broker logs a reconnect attempt
    every few hundred milliseconds (aiokafka: "Unable connect to node ..."), which would
    bury everything else."""

    def __init__(self, every_s: float = 30.0, names: tuple[str, ...] = ("aiokafka", "kafka"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self.names = names
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.names):
            return True
        key = (record.name, record.msg)
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        held = last[1] if last is not None else 0
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.every_s:.0f} s)"
        return True


def limit_client_logs(every_s: float = 30.0) -> None:
    """Rate-limit the Kafka client library's records on every root handler."""
    flt = RateLimit(every_s)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)


def configure_logging(level: str, tag: str = "") -> None:
    """The root logger at ``level`` (PULSE_LOG_LEVEL) with one line format (``tag`` in
    brackets after the level: which process of ``pulse worker --processes N`` wrote it);
    the Kafka clients and Faust at WARNING or above, and aiokafka's reconnect storm limited."""
    where = f"[{tag}] " if tag else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s",
    )
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    limit_client_logs()  # aiokafka's reconnect storm: one line per kind every 30 s
