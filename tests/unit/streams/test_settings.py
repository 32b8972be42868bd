"""Settings come from PULSE_* variables; a wrong value names the variable."""

from __future__ import annotations

import pytest

from streams.settings import Settings, SettingsError, from_env, to_env


def test_defaults_without_environment() -> None:
    s = from_env({})
    assert s == Settings()
    assert s.topic("purchases") == "purchases"


def test_values_are_parsed_by_type() -> None:
    s = from_env({"PULSE_KAFKA_BOOTSTRAP": "k1:9092,k2:9093", "PULSE_PARTITIONS": "12",
                  "PULSE_COMMIT_INTERVAL_S": "0.5", "PULSE_TOPIC_PREFIX": "prod.",
                  "PULSE_CLOCK": "event"})
    assert (s.kafka_bootstrap, s.partitions, s.commit_interval_s, s.clock) == (
        "k1:9092,k2:9093", 12, 0.5, "event")
    assert s.topic("deadletter") == "prod.deadletter"


@pytest.mark.parametrize(("var", "value", "says"), [
    ("PULSE_PARTITIONS", "four", "must be an int"),
    ("PULSE_PARTITIONS", "0", "between 1 and 10000"),
    ("PULSE_KAFKA_BOOTSTRAP", "localhost", "host:port"),
    ("PULSE_REDIS_URL", "http://x:1", "redis://"),
    ("PULSE_WEB_PORT", "70000", "TCP port"),
    ("PULSE_TOPIC_PURCHASES", "bad topic!", "Kafka topic name"),
    ("PULSE_CLOCK", "wall", "'live' or 'event'"),
    ("PULSE_COMMIT_INTERVAL_S", "soon", "must be a float"),
    ("PULSE_GROUP_ID", "customer-pulse", "must differ from PULSE_APP_ID"),
    ("PULSE_RULES_FILE", "/nonexistent/rules.yaml", "no such file"),
    ("PULSE_HEARTBEAT_INTERVAL_S", "30", "below the session timeout"),
    ("PULSE_GC_YOUNG_THRESHOLD", "-1", "between 0 and 10000000"),
    ("PULSE_NOTIFIER_GROUP_ID", "customer-pulse-engine", "differ from PULSE_GROUP_ID"),
    ("PULSE_NOTIFIER_GROUP_ID", "customer-pulse", "differ from PULSE_GROUP_ID and PULSE_APP_ID"),
    ("PULSE_NOTIFIER_GROUP_ID", "", "must be set"),
    ("PULSE_NOTIFIER_WEB_PORT", "65536", "TCP port"),
    ("PULSE_WEBHOOKS_FILE", "/nonexistent/webhooks.yaml", "no such file"),
    ("PULSE_TOPIC_NOTIFICATIONS_DEADLETTER", "dead letters", "Kafka topic name"),
    ("PULSE_TOPIC_ENGAGEMENT", "a/b", "Kafka topic name"),
])
def test_a_wrong_value_names_the_variable(var: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as err:
        from_env({var: value})
    assert str(err.value).startswith(f"{var}=")
    assert says in str(err.value)


def test_to_env_round_trips() -> None:
    s = Settings(partitions=7, topic_prefix="x-", clock="event", align_idle_s=0.5)
    assert from_env(to_env(s)) == s


def test_gc_tuning_sets_the_thresholds_or_leaves_them() -> None:
    import gc

    from streams.worker.engine import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, 20, 100)
    finally:
        gc.set_threshold(*before)
