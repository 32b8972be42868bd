"""Security settings, secrets kept out of sight, client arguments, the API's pure parts."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from faust.auth import SASLCredentials, SSLCredentials

from processors.rules import DEFAULT_RULES
from streams.kafka_client import client_kwargs, faust_credentials, ssl_context
from streams.redis_client import client_kwargs as redis_kwargs
from streams.settings import Settings, SettingsError, from_env, redact_url
from streams.worker.api import customer_id_of, exposure_error
from streams.worker.engine import Engine, _Shard
from streams.worker.store import ShardMeta
from streams.worker.views import partition_clock

SECRET = "s3cret-value-0123456789"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def test_a_secret_comes_from_its_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(f"{SECRET}\n")
    s = from_env({"PULSE_API_TOKENS_FILE": str(f), "PULSE_REDIS_PASSWORD_FILE": str(f)})
    assert (s.api_tokens, s.redis_password) == (SECRET, SECRET)
    # an empty variable next to the file does not count (child processes get every name)
    assert from_env({"PULSE_API_TOKENS": "", "PULSE_API_TOKENS_FILE": str(f)}).api_tokens == SECRET


@pytest.mark.parametrize(("env", "says"), [
    ({"PULSE_API_TOKENS": SECRET, "PULSE_API_TOKENS_FILE": "/x"}, "both set"),
    ({"PULSE_METRICS_TOKEN_FILE": "/nonexistent/token"}, "PULSE_METRICS_TOKEN_FILE="),
    ({"PULSE_API_TOKENS": "short"}, "at least 16"),
    ({"PULSE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "PULSE_KAFKA_SECURITY_PROTOCOL='TLS'"),
    ({"PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PULSE_KAFKA_SASL_USERNAME": "u",
      "PULSE_KAFKA_SASL_PASSWORD": SECRET}, "PULSE_KAFKA_SASL_MECHANISM"),
    ({"PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PULSE_KAFKA_SASL_MECHANISM": "PLAIN",
      "PULSE_KAFKA_SASL_USERNAME": "u"}, "PULSE_KAFKA_SASL_PASSWORD"),
    ({"PULSE_KAFKA_SSL_CAFILE": "/etc/hostname"}, "needs PULSE_KAFKA_SECURITY_PROTOCOL=SSL"),
    ({"PULSE_KAFKA_SECURITY_PROTOCOL": "SSL", "PULSE_KAFKA_SSL_CAFILE": "/nonexistent.pem"},
     "no such file"),
    ({"PULSE_REDIS_SSL_CA_CERTS": "/etc/hostname"}, "rediss://"),
    ({"PULSE_REDIS_URL": "rediss://r:6380/0", "PULSE_REDIS_SSL_KEYFILE": "/etc/hostname"},
     "PULSE_REDIS_SSL_CERTFILE"),
])
def test_a_wrong_security_setting_is_named_without_its_secret(env: dict[str, str],
                                                              says: str) -> None:
    with pytest.raises(SettingsError) as err:
        from_env(env)
    assert says in str(err.value)
    assert SECRET not in str(err.value)


def test_repr_and_urls_never_show_a_secret() -> None:
    s = Settings(redis_url="redis://user:hunter2-pass@r:6379/0", redis_password=SECRET,
                 api_tokens=f"{SECRET},other-token-0123456789", metrics_token=SECRET,
                 kafka_sasl_password=SECRET)
    text = repr(s) + str(s)
    assert SECRET not in text and "hunter2" not in text and "other-token" not in text
    assert "redis://user:***@r:6379/0" in text
    assert redact_url("rediss://:pw@h:1/0") == "rediss://:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


def test_kafka_client_arguments(ca_file: str) -> None:
    assert client_kwargs(Settings()) == {"bootstrap_servers": "127.0.0.1:9092",
                                         "security_protocol": "PLAINTEXT"}
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                 kafka_sasl_username="pulse", kafka_sasl_password=SECRET,
                 kafka_ssl_cafile=ca_file, kafka_ssl_check_hostname=False)
    kw = client_kwargs(s)
    assert (kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"],
            kw["sasl_plain_password"]) == ("SASL_SSL", "SCRAM-SHA-512", "pulse", SECRET)
    ctx = kw["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname is False
    assert len(ctx.get_ca_certs()) == 1  # the CA file, not the system's
    creds = faust_credentials(s)
    assert isinstance(creds, SASLCredentials) and creds.protocol.value == "SASL_SSL"
    assert creds.mechanism.value == "SCRAM-SHA-512" and creds.password == SECRET
    tls = faust_credentials(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file))
    assert isinstance(tls, SSLCredentials) and tls.context.check_hostname is True
    assert faust_credentials(Settings()) is None


def test_an_unusable_ca_file_names_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(SettingsError, match="PULSE_KAFKA_SSL_CAFILE"):
        ssl_context(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(bad)))


def test_redis_client_arguments(ca_file: str) -> None:
    assert redis_kwargs(Settings()) == {}
    kw = redis_kwargs(Settings(redis_url="rediss://r:6380/0", redis_password=SECRET,
                               redis_ssl_ca_certs=ca_file))
    assert kw == {"password": SECRET, "ssl_cert_reqs": "required", "ssl_ca_certs": ca_file}


@pytest.mark.parametrize(("raw", "cid"), [
    ("/customers/C1", "C1"),
    ("/customers/a%2Fb", "a/b"),
    ("/customers/a/b", "a/b"),
    ("/customers/C%7B1%7D?as_of=2026-01-01", "C{1}"),
    ("/customers/with%20space", "with space"),
    ("/customers/100%25", "100%"),
    ("/customers/caf%C3%A9", "caf\u00e9"),
    ("/customers/", None),
    ("/customers/%20", None),
    ("/customers/%FF", None),
    ("/customers/" + "x" * 129, None),
    ("/metrics", None),
])
def test_customer_id_is_the_decoded_raw_path(raw: str, cid: str | None) -> None:
    assert customer_id_of(raw) == cid


@pytest.mark.parametrize(("host", "tokens", "refused"), [
    ("127.0.0.1", "", False), ("::1", "", False), ("localhost", "", False),
    ("0.0.0.0", "", True), ("10.1.2.3", "", True), ("0.0.0.0", SECRET, False),
])
def test_serving_beyond_loopback_needs_tokens(host: str, tokens: str, refused: bool) -> None:
    error = exposure_error(Settings(web_host=host, api_tokens=tokens))
    assert (error is not None) == refused
    if error:
        assert "PULSE_API_TOKENS" in error


@pytest.mark.parametrize("clock", ["live", "event"])
@pytest.mark.parametrize("wall_s", [1.0, 9_000.0])
def test_the_views_default_as_of_is_the_engines_partition_clock(clock: str,
                                                                wall_s: float) -> None:
    high = {"purchases": 5_000_000, "surveys": 7_000_000}
    e = Engine(Settings(clock=clock), DEFAULT_RULES, wall_clock=lambda: wall_s)
    e._shards[0] = _Shard(ShardMeta(0, high=dict(high)))
    e._shards[1] = _Shard(ShardMeta(1))
    wall_ms = int(wall_s * 1000)
    assert partition_clock(high.values(), clock, wall_ms) == e.clock(0)
    assert partition_clock([], clock, wall_ms) == e.clock(1)


def test_the_dev_stack_transport_is_the_plain_default() -> None:
    from streams.settings import PLAIN_TRANSPORT

    assert all(getattr(Settings(), k) == v for k, v in PLAIN_TRANSPORT.items())
    assert not any(k in ("api_tokens", "metrics_token") for k in PLAIN_TRANSPORT)
