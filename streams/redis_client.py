"""The one place that turns settings into a Redis client (password, TLS).

``connect(settings)`` is used by the Store (engine, export, ``pulse customer``). The
password comes from ``PULSE_REDIS_PASSWORD`` (or ``_FILE``) when set, else from the URL;
TLS (``rediss://``) takes the CA, client certificate and key settings. ``check(settings)``
pings once and turns a refusal into one line naming the setting (``RedisSetupError``).
Nothing here prints the password or the URL's password (``redact_url``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rerr

from streams.settings import Settings, redact_url


class RedisSetupError(RuntimeError):
    """Redis cannot be used with these settings; the message names what to fix."""


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``redis.asyncio.Redis.from_url`` beyond the URL."""
    kw: dict[str, Any] = {}
    if settings.redis_password:
        kw["password"] = settings.redis_password
    if settings.redis_url.startswith("rediss://"):
        kw["ssl_cert_reqs"] = "required"
        if settings.redis_ssl_ca_certs:
            kw["ssl_ca_certs"] = settings.redis_ssl_ca_certs
        if settings.redis_ssl_certfile:
            kw["ssl_certfile"] = settings.redis_ssl_certfile
            kw["ssl_keyfile"] = settings.redis_ssl_keyfile or None
    return kw


def connect(settings: Settings, **extra: Any) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.redis_url, **client_kwargs(settings), **extra)


def explain(settings: Settings, exc: BaseException) -> str:
    where = f"Redis at {redact_url(settings.redis_url)}"
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return (f"{where}: the server's certificate is not trusted; check "
                "PULSE_REDIS_SSL_CA_CERTS (and that the certificate names the URL's host)")
    if isinstance(cause, ssl.SSLError) or "SSL" in text:
        return (f"{where}: TLS handshake failed; check the rediss:// URL, "
                "PULSE_REDIS_SSL_CA_CERTS and PULSE_REDIS_SSL_CERTFILE/_KEYFILE")
    if isinstance(exc, rerr.AuthenticationError | rerr.AuthenticationWrongNumberOfArgsError) or (
            isinstance(exc, rerr.ResponseError) and "NOAUTH" in text):
        return (f"{where} refused our credentials: check PULSE_REDIS_PASSWORD (or "
                "PULSE_REDIS_PASSWORD_FILE, or the password in PULSE_REDIS_URL)")
    why = text.splitlines()[0] if text else type(exc).__name__
    return (f"Redis unreachable at {redact_url(settings.redis_url)} ({why}): check "
            "PULSE_REDIS_URL and that redis-server is running")


async def check(settings: Settings, timeout: float = 15.0) -> None:
    """PING with the configured password and TLS, retrying for up to ``timeout`` seconds
    while Redis is unreachable; a refused password or certificate is not retried."""
    client = connect(settings, socket_connect_timeout=5)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            try:
                await client.ping()
                return
            except (rerr.AuthenticationError, rerr.ResponseError) as exc:
                raise RedisSetupError(explain(settings, exc)) from None
            except (rerr.ConnectionError, OSError) as exc:
                cause = exc.__cause__ or exc.__context__
                if isinstance(cause, ssl.SSLError) or "SSL" in str(exc) \
                        or loop.time() >= deadline:
                    raise RedisSetupError(explain(settings, exc)) from None
                await asyncio.sleep(0.3)
    finally:
        await client.aclose()
