"""Before a command starts for real: are Kafka and Redis there, is the web port free?

``pulse worker`` retries the connections for ``PULSE_CONNECT_TIMEOUT_S`` (a worker started
with its dependencies, e.g. by an orchestrator, should not die because Redis came up a few
seconds later), then fails with one readable message (streams/errors.py). Wrong credentials
are not retried: waiting does not fix them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import redis.asyncio as aioredis
import redis.exceptions as rx

from streams.errors import PulseError, kafka_down, redis_down
from streams.settings import Settings, redact_url

log = logging.getLogger(__name__)


class BadSetting(PulseError):
    exit_code = 2


async def wait_redis(settings: Settings, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    warned = False
    while True:
        client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
        try:
            await client.ping()
            return
        except (rx.AuthenticationError, rx.AuthorizationError) as exc:
            raise redis_down(settings, exc) from None
        except rx.ResponseError as exc:  # NOAUTH: a password is required
            raise redis_down(settings, exc) from None
        except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise redis_down(settings, exc) from None
            if not warned:
                log.warning("waiting up to %.0f s for Redis at %s (%s)", timeout,
                            redact_url(settings.redis_url), exc)
                warned = True
            await asyncio.sleep(0.5)
        finally:
            await client.aclose()


async def wait_kafka(settings: Settings, timeout: float) -> None:
    from aiokafka.errors import KafkaConnectionError

    from streams.admin import _admin

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # one line of ours instead of one per attempt
    log.warning("connecting to Kafka at %s (up to %.0f s)", settings.kafka_bootstrap, timeout)
    try:
        admin = await _admin(settings, timeout=timeout)
    except KafkaConnectionError as exc:
        raise kafka_down(settings, exc) from None
    finally:
        quiet.setLevel(level)
    await admin.close()


async def wait_dependencies(settings: Settings) -> None:
    started = time.monotonic()
    await wait_redis(settings, settings.connect_timeout_s)
    await wait_kafka(settings, max(0.0, settings.connect_timeout_s - (time.monotonic() - started)))


def check_web(settings: Settings) -> None:
    """The worker's HTTP server can listen where the settings say."""
    try:
        infos = socket.getaddrinfo(settings.web_host, settings.web_port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BadSetting(f"PULSE_WEB_HOST={settings.web_host!r}: not a host name or address of "
                         f"this machine ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise BadSetting(f"PULSE_WEB_PORT={settings.web_port}: cannot listen on "
                             f"{settings.web_host}:{settings.web_port} ({exc.strerror}); "
                             "choose a free port (or PULSE_WEB_HOST)") from None
