"""Pure parts of issue 12: the state-loss rule, URL masking, the log rate limit, health."""

from __future__ import annotations

import logging

import pytest

from streams.errors import RateLimit
from streams.settings import SettingsError, from_env, redact_url
from streams.worker.health import STALL_AFTER_S, Health
from streams.worker.recovery import lost_topics


@pytest.mark.parametrize("committed,fence_next,start,lost", [
    ({"a": None}, {}, {"a": 0}, {}),  # never processed
    ({"a": 0}, {}, {"a": 0}, {}),  # committed at the start: nothing done yet (a rebuild)
    ({"a": 120}, {}, {"a": 0}, {"a": 120}),  # Redis empty, Kafka says work was done
    ({"a": 120}, {"a": 120}, {"a": 0}, {}),  # in step
    ({"a": 100}, {"a": 120}, {"a": 0}, {}),  # Kafka's mirror lags the fence: normal
    ({"a": 130}, {"a": 120}, {"a": 0}, {"a": 130}),  # Redis went back in time
    ({"a": 50}, {}, {"a": 50}, {}),  # retention: the start is where Kafka committed
    ({"a": 1, "b": 9}, {"a": 1}, {}, {"b": 9}),
])
def test_lost_topics(committed, fence_next, start, lost):
    assert lost_topics(committed, fence_next, start) == lost


@pytest.mark.parametrize("url,shown", [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("rediss://user:p%40ss@h:6380/1", "rediss://user:***@h:6380/1"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("redis://user@h/0", "redis://user@h/0"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_settings_error_masks_the_password():
    with pytest.raises(SettingsError) as err:
        from_env({"PULSE_REDIS_URL": "http://:hunter2@h:1/0"})
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


@pytest.mark.parametrize("env", [{"PULSE_ON_STATE_LOSS": "ignore"},
                                 {"PULSE_ON_OFFSET_RESET": "skip"},
                                 {"PULSE_CONNECT_TIMEOUT_S": "-1"},
                                 {"PULSE_WEB_PORT": "0"}])
def test_recovery_settings_checked(env):
    with pytest.raises(SettingsError, match=next(iter(env))):
        from_env(env)


def _record(msg: str, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)


def test_rate_limit_holds_back_a_storm_and_counts_it():
    now = [0.0]
    flt = RateLimit(every_s=30, clock=lambda: now[0])
    passed = [flt.filter(_record("Unable connect to %s")) for _ in range(50)]
    assert passed.count(True) == 1
    assert flt.filter(_record("other", name="streams.worker.engine"))  # ours: never limited
    now[0] = 31.0
    r = _record("Unable connect to %s")
    assert flt.filter(r) and "49 more like this" in r.msg


def test_health_verdicts():
    now = [100.0]
    h = Health(clock=lambda: now[0])
    assert h.verdict() == (False, "starting")
    h.started = h.assigned = True
    h.last_step = h.last_commit = h.assigned_at = 100.0
    assert h.verdict()[0] and h.readiness() == (True, "ready")
    h.redis_failed(ConnectionError("refused"))
    now[0] = 110.0
    ok, why = h.verdict()
    assert not ok and "Redis down for 10 s" in why
    assert h.readiness()[0], "ready is not healthy: the worker can still serve its API"
    h.redis_ok()
    assert h.redis_down_seconds == 10.0 and h.verdict()[0]
    h.lag, h.last_step = 500, now[0] + STALL_AFTER_S
    now[0] += STALL_AFTER_S + 1
    ok, why = h.verdict()
    assert not ok and "not committing: 500 records behind" in why
    h.lag = 0
    assert h.verdict() == (True, "idle, no lag")
    h.halted = "state lost in Redis for partitions [1]"
    assert h.verdict() == (False, "halted: state lost in Redis for partitions [1]")
    assert not h.readiness()[0]


def test_client_errors_become_one_readable_message():
    import aiokafka.errors as kx
    import redis.exceptions as rx

    from streams.errors import as_pulse_error
    from streams.settings import Settings

    s = Settings(redis_url="redis://:pw@h:1/0", kafka_bootstrap="k:9")
    cases = [(rx.ConnectionError("Error 111 connecting"), 3, "Redis unreachable at redis://:***@"),
             (rx.AuthenticationError("invalid password"), 3, "refused our credentials"),
             (kx.KafkaConnectionError("Unable to bootstrap"), 3, "Kafka unreachable at k:9"),
             (kx.SaslAuthenticationFailed("bad"), 3, "Kafka at k:9 refused us")]
    for exc, code, words in cases:
        err = as_pulse_error(s, exc)
        assert err is not None and err.exit_code == code and words in str(err), (exc, err)
        assert "pw" not in str(err) and len(str(err).splitlines()) <= 2
    assert as_pulse_error(s, ValueError("a bug")) is None  # a bug keeps its traceback
