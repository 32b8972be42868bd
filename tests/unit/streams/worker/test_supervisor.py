"""The pure parts of `pulse worker --processes N` (streams/worker/supervisor.py): how many
processes, the merged /metrics, the combined /healthz and /readyz. The processes themselves
run in tests/integration/test_processes.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from processors.rules import DEFAULT_RULES
from streams.settings import SettingsError, from_env
from streams.worker.kpis import families
from streams.worker.metrics import Metrics
from streams.worker.supervisor import (
    Answer,
    _Families,
    cgroup_cpu_limit,
    combine,
    describe_exit,
    merge,
    resolve_processes,
)


def child_text(processed: float, kpi_customers: dict[int, int]) -> str:
    """A child's /metrics: its pipeline counters and the KPI gauges of its partitions."""
    m = Metrics.create()
    m.events.labels("purchases", "processed").inc(processed)
    m.partitions_owned.set(len(kpi_customers))
    m.latency.labels("purchases").observe(0.03)
    parts = {p: {("customers",): n} for p, n in kpi_customers.items()}
    m.registry.register(_Families(families(parts, DEFAULT_RULES, 1_767_225_600_000)))
    return generate_latest(m.registry).decode()


def samples(fams, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for f in fams for s in f.samples
            if s.name == name}


def test_merge_labels_each_child_and_keeps_one_kpi_series_per_partition():
    # partition 1 moved from child 0 to child 1: both report it in this scrape
    merged = merge({0: child_text(10, {0: 5, 1: 7}), 1: child_text(4, {1: 7, 2: 3, 3: 1})})
    assert samples(merged, "pulse_events_total") == {
        (("outcome", "processed"), ("process", "0"), ("topic", "purchases")): 10.0,
        (("outcome", "processed"), ("process", "1"), ("topic", "purchases")): 4.0}
    assert samples(merged, "pulse_partitions_owned") == {
        (("process", "0"),): 2.0, (("process", "1"),): 3.0}
    assert samples(merged, "pulse_kpi_customers") == {
        (("partition", "0"),): 5.0, (("partition", "1"),): 7.0, (("partition", "2"),): 3.0,
        (("partition", "3"),): 1.0}
    assert sum(samples(merged, "pulse_kpi_customers").values()) == 16  # not 23
    assert samples(merged, "pulse_kpi_as_of_timestamp_seconds") == {(): 1_767_225_600.0}
    # histograms keep their shape per child
    buckets = samples(merged, "pulse_processing_latency_seconds_bucket")
    assert len(buckets) == 2 * 13 and all(("process", "0") in k or ("process", "1") in k
                                          for k in buckets)


def test_merged_families_render_as_valid_prometheus_text():
    registry = CollectorRegistry()
    registry.register(_Families(merge({0: child_text(1, {0: 1}), 1: child_text(2, {1: 2})})))
    text = generate_latest(registry).decode()
    again = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert again["pulse_events"] == "counter"
    assert again["pulse_processing_latency_seconds"] == "histogram"
    assert again["pulse_kpi_customers"] == "gauge"
    assert 'pulse_events_total{outcome="processed",process="1",topic="purchases"} 2.0' in text


def test_merge_of_nothing_is_nothing():
    assert merge({}) == []


def test_a_kpi_value_read_twice_keeps_the_highest():
    merged = merge({0: child_text(0, {3: 40}), 1: child_text(0, {3: 41})})
    assert samples(merged, "pulse_kpi_customers") == {(("partition", "3"),): 41.0}


def body(ok: bool, reason: str, parts: list[int], lag: int = 0) -> dict:
    return {"ok": ok, "reason": reason, "partitions": parts, "lag": lag, "batches": 3}


def test_healthy_when_every_child_is():
    ok, out = combine([Answer(0, 11, 0, 200, body(True, "consuming", [0, 1], 5)),
                       Answer(1, 12, 2, 200, body(True, "idle, no lag", [2, 3]))], "healthy")
    assert ok and out["reason"] == "all 2 processes healthy"
    assert out["partitions"] == [0, 1, 2, 3] and out["lag"] == 5 and out["batches"] == 6
    assert [p["restarts"] for p in out["processes"]] == [0, 2]


def test_one_child_down_or_unhealthy_makes_the_whole_unhealthy_and_says_which():
    ok, out = combine([Answer(0, 11, 0, 200, body(True, "consuming", [0, 1, 2, 3])),
                       Answer(1, None, 1, why_not="killed by SIGKILL; starting again in 2 s")],
                      "healthy")
    assert not ok and out["reason"] == "process 1: killed by SIGKILL; starting again in 2 s"
    ok, out = combine([Answer(0, 11, 0, 503, body(False, "Redis down for 3 s", [0, 1])),
                       Answer(1, 12, 0, 200, body(True, "consuming", [2, 3]))], "healthy")
    assert not ok and out["reason"] == "process 0: Redis down for 3 s"
    assert out["processes"][0]["ok"] is False and out["processes"][1]["ok"] is True


def test_ready_needs_every_child_ready_and_has_no_lag_fields():
    ok, out = combine([Answer(0, 11, 0, 200, {"ok": True, "reason": "ready",
                                              "partitions": [0, 1]}),
                       Answer(1, 12, 0, 503, {"ok": False, "reason": "waiting for the "
                                              "consumer group's assignment", "partitions": []})],
                      "ready")
    assert not ok and "lag" not in out
    assert out["reason"] == "process 1: waiting for the consumer group's assignment"
    assert not combine([], "ready")[0]


@pytest.mark.parametrize(("value", "cpus", "partitions", "expected"), [
    ("auto", 2, 4, 2), ("auto", 16, 4, 4), ("auto", 1, 4, 1), ("3", 16, 4, 3), ("1", 2, 4, 1),
    ("8", 2, 4, 8),  # asked for: the command warns that some will stand by
])
def test_how_many_processes(value, cpus, partitions, expected):
    assert resolve_processes(value, partitions, lambda: cpus)[0] == expected


def test_the_cgroup_cpu_limit(tmp_path: Path):
    own = tmp_path / "cgroup"
    root = tmp_path / "fs"
    (root / "kubepods/pod1").mkdir(parents=True)
    own.write_text("0::/kubepods/pod1\n")
    (root / "kubepods/pod1/cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(own, root) == 1.5
    (root / "kubepods/pod1/cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(own, root) is None
    # cgroup v1: the cpu controller's quota
    (root / "cpu,cpuacct/docker/abc").mkdir(parents=True)
    own.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("200000\n")
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(own, root) == 2.0
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(own, root) is None
    assert cgroup_cpu_limit(tmp_path / "missing", root) is None


def test_exits_are_described_for_people():
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(None) == "running"


@pytest.mark.parametrize("value", ["0", "two", "-1", "1025", "2.5", "auto2", "٣"])
def test_a_wrong_processes_setting_names_the_variable(value):
    with pytest.raises(SettingsError, match=r"^PULSE_PROCESSES=.*'auto' or a number"):
        from_env({"PULSE_PROCESSES": value})


@pytest.mark.parametrize("value", ["auto", "1", "4"])
def test_processes_setting(value):
    assert from_env({"PULSE_PROCESSES": value}).processes == value
