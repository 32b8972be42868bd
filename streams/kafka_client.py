"""The one place that turns settings into Kafka client arguments (TLS, SASL).

Every Kafka client of the project is built from ``client_kwargs(settings)``: the engine's
consumer and producer, ``BatchProducer`` (replay, simulate), the admin client, and the
Faust app through ``faust_credentials(settings)``. ``check(settings)`` connects once
before a command starts its clients and turns what the broker or the TLS handshake said
into one line naming the setting to fix (``KafkaSetupError``); aiokafka alone would only
say "Unable to bootstrap" and log the cause.

Secrets (the SASL password) go into the client arguments and nowhere else: no message
here contains one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from streams.settings import Settings, SettingsError


class KafkaSetupError(RuntimeError):
    """The broker cannot be used with these settings; the message names what to fix."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (``None`` otherwise): the CA file (or the
    system's CAs), hostname verification, and a client certificate for mutual TLS."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    try:
        ctx = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"PULSE_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile!r}: "
                            f"not a PEM CA certificate ({_why(exc)})") from None
    ctx.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        try:
            ctx.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                f"PULSE_KAFKA_SSL_CERTFILE={settings.kafka_ssl_certfile!r} / "
                f"PULSE_KAFKA_SSL_KEYFILE={settings.kafka_ssl_keyfile!r}: not a PEM certificate "
                f"and its key ({_why(exc)})") from None
    return ctx


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for any client: bootstrap servers, security protocol,
    TLS context, SASL mechanism and credentials."""
    kw: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    ctx = ssl_context(settings)
    if ctx is not None:
        kw["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL_"):
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        kw["sasl_plain_password"] = settings.kafka_sasl_password
    return kw


def faust_credentials(settings: Settings) -> Any:
    """The same security for the Faust app (``broker_credentials``), or ``None``."""
    from faust.auth import SASLCredentials, SSLCredentials

    ctx = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        return SASLCredentials(username=settings.kafka_sasl_username,
                               password=settings.kafka_sasl_password,
                               ssl_context=ctx, mechanism=settings.kafka_sasl_mechanism)
    if ctx is not None:
        return SSLCredentials(ctx)
    return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message or exc.reason or "certificate verify failed")
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.__class__.__name__)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def explain(settings: Settings, exc: BaseException) -> str:
    """One line saying which setting to look at for a failure to connect."""
    from aiokafka.errors import UnsupportedSaslMechanismError

    where = f"Kafka at {settings.kafka_bootstrap}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "hostname" in str(exc.verify_message or "") or "IP address" in str(exc):
            return (f"{where}: the broker's certificate does not name this host "
                    f"({_why(exc)}); fix PULSE_KAFKA_BOOTSTRAP or the certificate "
                    "(PULSE_KAFKA_SSL_CHECK_HOSTNAME=false turns the check off)")
        return (f"{where}: the broker's certificate is not trusted ({_why(exc)}); "
                "check PULSE_KAFKA_SSL_CAFILE")
    if isinstance(exc, ssl.SSLError):
        return (f"{where}: TLS handshake failed ({_why(exc)}); check "
                "PULSE_KAFKA_SECURITY_PROTOCOL, PULSE_KAFKA_SSL_CAFILE and, if the broker "
                "asks for a client certificate, PULSE_KAFKA_SSL_CERTFILE/_KEYFILE")
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (f"{where} does not offer SASL mechanism {settings.kafka_sasl_mechanism}; "
                "set PULSE_KAFKA_SASL_MECHANISM to one it offers")
    if settings.kafka_security_protocol.startswith("SASL_") and _is_auth_failure(exc):
        return (f"{where}: the broker refused the {settings.kafka_sasl_mechanism} login of "
                f"{settings.kafka_sasl_username!r}; check PULSE_KAFKA_SASL_USERNAME and "
                "PULSE_KAFKA_SASL_PASSWORD (or _FILE), and PULSE_KAFKA_SASL_MECHANISM")
    if _is_closed(exc):
        if settings.kafka_security_protocol.endswith("SSL"):
            return (f"{where} closed the connection after the TLS handshake: it may want a "
                    "client certificate (PULSE_KAFKA_SSL_CERTFILE, PULSE_KAFKA_SSL_KEYFILE) "
                    "signed by a CA it trusts, or SASL (PULSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL)")
        return (f"{where} closed the connection: if it expects TLS or SASL, set "
                f"PULSE_KAFKA_SECURITY_PROTOCOL (now {settings.kafka_security_protocol})")
    return (f"Kafka unreachable at {settings.kafka_bootstrap} ({_why(exc)}): check "
            "PULSE_KAFKA_BOOTSTRAP and that the broker is running")


def _is_closed(exc: BaseException) -> bool:
    """The broker accepted the TCP connection and then closed it: a refusal, not an outage."""
    from aiokafka.errors import KafkaConnectionError

    return isinstance(exc, KafkaConnectionError) and str(exc).rstrip().endswith("closed")


def _is_auth_failure(exc: BaseException) -> bool:
    from aiokafka import errors

    # aiokafka's SCRAM client raises KeyError/ValueError on a server's error message
    # instead of an authentication error; an unsupported mechanism is an auth failure too
    return isinstance(exc, errors.AuthenticationFailedError | errors.SaslAuthenticationFailed
                      | errors.UnsupportedSaslMechanismError | errors.IllegalSaslStateError
                      | KeyError | ValueError | AssertionError)


async def check(settings: Settings, timeout: float = 15.0) -> None:
    """Connect to a bootstrap server with the configured TLS and SASL, retrying for up to
    ``timeout`` seconds while it is unreachable; raise ``KafkaSetupError`` with one line
    (``explain``) when it refuses us or stays unreachable. A refused certificate or login,
    or a connection the broker closes, is not retried: it will not get better."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    kw = client_kwargs(settings)
    hosts = [hp.strip().rsplit(":", 1) for hp in settings.kafka_bootstrap.split(",")]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    while True:
        for host, port in hosts:
            try:
                conn = await create_conn(
                    host.strip("[]"), int(port), ssl_context=kw.get("ssl_context"),
                    security_protocol=kw["security_protocol"],
                    sasl_mechanism=kw.get("sasl_mechanism", "PLAIN"),
                    sasl_plain_username=kw.get("sasl_plain_username"),
                    sasl_plain_password=kw.get("sasl_plain_password"),
                    request_timeout_ms=int(min(timeout, 10.0) * 1000),
                )
            except Exception as exc:
                last = exc
                if isinstance(exc, ssl.SSLError) or _is_closed(exc) or (
                        settings.kafka_security_protocol.startswith("SASL_")
                        and _is_auth_failure(exc)):
                    raise KafkaSetupError(explain(settings, exc)) from None
                continue
            try:  # a real request: a broker that wants SASL answers ApiVersions, not this
                await conn.send(MetadataRequest([]))
            except Exception as exc:
                raise KafkaSetupError(explain(settings, exc)) from None
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
            return
        if loop.time() >= deadline:
            assert last is not None
            raise KafkaSetupError(explain(settings, last)) from None
        await asyncio.sleep(0.3)
