"""Kafka over TLS and over SASL_SSL, Redis over TLS with a password, the API's tokens.

A CA made here (trustme) signs a server certificate for 127.0.0.1 and a client
certificate. Kafka: Tansu 0.6.0 can neither serve TLS nor accept a SASL login here (see
tests/integration/kafka_front_door.py), so a front door sits before each Tansu, which
advertises the door's port: one serves TLS and *requires* a client certificate (mutual
TLS), the other serves TLS and requires a SCRAM-SHA-512 login checked by ``scramp``'s
server side. Redis: a redis-server serving TLS only, with ``requirepass``. A real ``pulse
worker`` (the Faust app and the engine) runs against each, events produced over the same
transport land in Redis, and the customer API answers only with a token. A wrong CA, a
missing client certificate, a wrong SASL or Redis password, a wrong Redis CA, and a login
the real Tansu refuses (``--authentication``) each give one line naming the setting and
exit code 3, never a traceback or a secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from schemas.codec import encode
from schemas.events import Purchase, PurchaseLine
from streams.settings import Settings, to_env
from streams.tools.devrun import start_worker
from streams.tools.devstack import Child, free_port, start_redis, start_tansu
from streams.worker.store import Store
from streams.worker.topics import Topics
from tests.integration.helpers import produce, wait_until
from tests.integration.kafka_front_door import KafkaFrontDoor

ROOT = Path(__file__).resolve().parents[2]
REDIS_PASSWORD = "redis-pw-7f3a9c1e5b"
API_TOKEN_OLD, API_TOKEN_NEW = "api-token-old-0123456789", "api-token-new-9876543210"
METRICS_TOKEN = "metrics-token-abcdef012345"
SASL_USER, SASL_PASSWORD = "pulse-worker", "sasl-pw-2b8e4d6f0a"
T0 = 1_790_000_000_000


@dataclass
class Pki:
    dir: Path
    ca: Path
    other_ca: Path
    client_cert: Path
    client_key: Path
    server_cert: Path
    server_key: Path
    mtls: ssl.SSLContext  # server side, client certificate required
    tls: ssl.SSLContext  # server side, no client certificate


@dataclass
class SecureStack:
    pki: Pki
    mtls_port: int  # Kafka: TLS with a client certificate
    sasl_port: int  # Kafka: TLS and a SCRAM-SHA-512 login
    redis_port: int
    sasl_door: KafkaFrontDoor

    def settings(self, n: int, transport: str = "mtls") -> Settings:
        s = Settings(
            kafka_bootstrap=f"127.0.0.1:{self.mtls_port}", kafka_security_protocol="SSL",
            kafka_ssl_cafile=str(self.pki.ca), kafka_ssl_certfile=str(self.pki.client_cert),
            kafka_ssl_keyfile=str(self.pki.client_key),
            redis_url=f"rediss://127.0.0.1:{self.redis_port}/0",
            redis_ssl_ca_certs=str(self.pki.ca), redis_password=REDIS_PASSWORD,
            partitions=2, topic_prefix=f"sec{n}-", group_id=f"sec-{n}", app_id=f"sec-app-{n}",
            session_timeout_s=6.0, heartbeat_interval_s=0.5, batch_timeout_ms=50,
            commit_interval_s=0.2, clock="event", web_port=free_port(),
        )
        if transport == "sasl_ssl":
            s = s.with_(kafka_bootstrap=f"127.0.0.1:{self.sasl_port}",
                        kafka_security_protocol="SASL_SSL", kafka_ssl_certfile="",
                        kafka_ssl_keyfile="", kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username=SASL_USER, kafka_sasl_password=SASL_PASSWORD)
        return s


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("pulse-worker")
    files = {"ca": ca.cert_pem, "other_ca": other.cert_pem,
             "client_cert": client.cert_chain_pems[0], "client_key": client.private_key_pem,
             "server_cert": server.cert_chain_pems[0], "server_key": server.private_key_pem}
    for name, blob in files.items():
        blob.write_to_path(str(d / f"{name}.pem"))
    contexts = []
    for verify in (ssl.CERT_REQUIRED, ssl.CERT_NONE):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.configure_cert(ctx)
        ca.configure_trust(ctx)
        ctx.verify_mode = verify
        contexts.append(ctx)
    return Pki(d, *(d / f"{name}.pem" for name in files), *contexts)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def secure(pki: Pki) -> Iterator[SecureStack]:
    mtls_port, sasl_port = free_port(), free_port()
    brokers: list[Child] = []
    redis = start_redis(pki.dir, password=REDIS_PASSWORD, name="redis-tls",
                        tls=(pki.server_cert, pki.server_key, pki.ca))
    try:
        brokers.append(start_tansu(pki.dir, advertised_port=mtls_port, name="tansu-mtls"))
        brokers.append(start_tansu(pki.dir, advertised_port=sasl_port, name="tansu-sasl"))
        with KafkaFrontDoor(brokers[0].port, mtls_port, tls=pki.mtls), \
                KafkaFrontDoor(brokers[1].port, sasl_port, tls=pki.tls,
                               scram=("SCRAM-SHA-512", {SASL_USER: SASL_PASSWORD})) as door:
            yield SecureStack(pki, mtls_port, sasl_port, redis.port, door)
    finally:
        for child in (*brokers, redis):
            child.stop()


async def pulse(settings: Settings, *args: str, env: dict[str, str] | None = None
                ) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.tools.cli", *args, cwd=ROOT,
        env={**os.environ, **to_env(settings), **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def get(url: str, token: str = "") -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def one_line_error(code: int, err: str, *, names: str, secret: str = "") -> None:
    assert code == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0]
    assert "Traceback" not in err
    if secret:
        assert secret not in err


@pytest.mark.parametrize("transport", ["mtls", "sasl_ssl"])
async def test_worker_end_to_end_over_tls_with_secured_redis(secure: SecureStack, tmp_path: Path,
                                                             transport: str) -> None:
    n = 1 if transport == "mtls" else 3
    settings = secure.settings(n, transport).with_(
        api_tokens=f"{API_TOKEN_OLD},{API_TOKEN_NEW}", metrics_token=METRICS_TOKEN)
    # the passwords reach the worker through files, as Kubernetes secrets would
    secrets = {"PULSE_REDIS_PASSWORD_FILE": REDIS_PASSWORD,
               "PULSE_KAFKA_SASL_PASSWORD_FILE": settings.kafka_sasl_password}
    env = {}
    for name, value in secrets.items():
        if value:
            (tmp_path / name).write_text(value + "\n")
            env[name] = str(tmp_path / name)
    logins_before = len(secure.sasl_door.logins)
    worker = start_worker(settings.with_(redis_password="", kafka_sasl_password=""), tmp_path,
                          f"worker-{transport}", extra_env=env)
    base = f"http://127.0.0.1:{settings.web_port}"
    try:
        def owns_all() -> bool:
            code, body = get(f"{base}/healthz", METRICS_TOKEN)
            return code == 200 and len(json.loads(body)["partitions"]) == settings.partitions

        await wait_until(owns_all, timeout=60, what=f"the {transport} worker to own every "
                                                    "partition")
        topics = Topics.from_settings(settings)
        events = [Purchase(f"tls-{i}", f"C{i % 5}", T0 + i * 1000, "pos", f"o-{i}", "store",
                           "purchase", 1250, "EUR", (PurchaseLine("sku", "grocery", 1, 1250),))
                  for i in range(20)]
        await produce(settings, [(topics.purchases, e.customer_id.encode(), encode(e))
                                 for e in events])  # over the same transport

        store = Store.from_settings(settings)  # rediss:// with the CA and the password
        try:
            async def landed() -> bool:
                from processors import wire
                from streams.worker.partitioning import owner

                counts = []
                for c in range(5):
                    raw = await store.get_state(owner(f"C{c}", settings.partitions), f"C{c}")
                    counts.append(0 if raw is None else wire.loads(raw).purchase_count)
                return counts == [4] * 5

            await wait_until(landed, timeout=60, what="the states in the TLS Redis")
        finally:
            await store.close()

        # the API: a token from the list (both during a rotation), the ops token apart
        assert get(f"{base}/customers/C1")[0] == 401
        assert get(f"{base}/customers/C1", "not-a-token-at-all-xx")[0] == 401
        for token in (API_TOKEN_OLD, API_TOKEN_NEW):
            code, body = get(f"{base}/customers/C1", token)
            assert code == 200, body
            assert json.loads(body)["customer"]["purchase_count"] == 4
        assert get(f"{base}/metrics")[0] == 401
        assert get(f"{base}/metrics", API_TOKEN_NEW)[0] == 401
        code, body = get(f"{base}/metrics", METRICS_TOKEN)
        assert code == 200 and b"pulse_events_total" in body
        assert get(f"{base}/openapi.json")[0] == 200  # the document is public
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    for secret in (REDIS_PASSWORD, SASL_PASSWORD, API_TOKEN_OLD, API_TOKEN_NEW, METRICS_TOKEN):
        assert secret not in log
    logins = secure.sasl_door.logins[logins_before:]
    if transport == "sasl_ssl":  # every connection logged in, the worker's and ours
        assert len(logins) >= 3 and all(ok for _, ok in logins)
        assert {user for user, _ in logins} == {SASL_USER}
    else:
        assert logins == []


async def test_a_refused_certificate_or_password_is_one_line(secure: SecureStack) -> None:
    settings = secure.settings(2)
    code, _, err = await pulse(settings.with_(kafka_ssl_cafile=str(secure.pki.other_ca)),
                               "topics", "create")
    one_line_error(code, err, names="PULSE_KAFKA_SSL_CAFILE")
    code, _, err = await pulse(settings.with_(kafka_ssl_certfile="", kafka_ssl_keyfile=""),
                               "topics", "create")
    one_line_error(code, err, names="PULSE_KAFKA_SSL_CERTFILE")
    code, _, err = await pulse(settings.with_(kafka_ssl_cafile="/etc/hostname"),
                               "topics", "create")
    assert code == 2 and "PULSE_KAFKA_SSL_CAFILE" in err and "Traceback" not in err
    sasl = secure.settings(2, "sasl_ssl")
    wrong = "not-the-sasl-password"
    code, _, err = await pulse(sasl.with_(kafka_sasl_password=wrong), "topics", "create")
    one_line_error(code, err, names="PULSE_KAFKA_SASL_PASSWORD", secret=wrong)
    assert secure.sasl_door.logins[-1] == (SASL_USER, False)  # refused by the SCRAM check
    code, _, err = await pulse(sasl.with_(kafka_sasl_mechanism="SCRAM-SHA-256"),
                               "topics", "create")
    one_line_error(code, err, names="PULSE_KAFKA_SASL_MECHANISM", secret=SASL_PASSWORD)

    wrong = "not-the-redis-password"
    code, _, err = await pulse(settings.with_(redis_password=wrong), "customer", "C1")
    one_line_error(code, err, names="PULSE_REDIS_PASSWORD", secret=wrong)
    code, _, err = await pulse(settings.with_(redis_ssl_ca_certs=str(secure.pki.other_ca)),
                               "customer", "C1")
    one_line_error(code, err, names="PULSE_REDIS_SSL_CA_CERTS", secret=REDIS_PASSWORD)


async def test_a_sasl_login_tansu_refuses_is_one_line(tmp_path: Path) -> None:
    """Tansu itself with --authentication: it runs the SCRAM exchange and refuses the
    login (it keeps no credentials in this build, see kafka_front_door.py)."""
    tansu = start_tansu(tmp_path, authentication=True, name="tansu-sasl")
    try:
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            settings = Settings(kafka_bootstrap=tansu.address,
                                kafka_security_protocol="SASL_PLAINTEXT",
                                kafka_sasl_mechanism=mechanism, kafka_sasl_username=SASL_USER,
                                kafka_sasl_password=SASL_PASSWORD)
            code, _, err = await pulse(settings, "topics", "create")
            one_line_error(code, err, names="PULSE_KAFKA_SASL_PASSWORD", secret=SASL_PASSWORD)
            assert mechanism in err
        # without SASL, the same broker closes the connection: the message says what to set
        code, _, err = await pulse(Settings(kafka_bootstrap=tansu.address), "topics", "create")
        one_line_error(code, err, names="PULSE_KAFKA_SECURITY_PROTOCOL")
    finally:
        tansu.stop()
