"""deploy/ and docker-compose.yml: promtool checks and unit tests, PromQL names only what
the app exports, Grafana provisioning agrees with the dashboards and with the compose file.

promtool comes with the Debian package `prometheus` (.ci/system-deps installs it); a
machine without it fails here with the install line, it does not skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from processors.rules import DEFAULT_RULES
from streams.worker.kpis import KpiCollector
from streams.worker.metrics import Metrics, SupervisorMetrics
from tests.paths import ROOT

PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: it comes with the Debian package prometheus "
                    "(sudo apt-get install -y prometheus, or `make system-deps`)", pytrace=False)
    return path


def run_promtool(*args: str | Path, stdin: str | None = None) -> str:
    r = subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True,
                       input=stdin, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{out}"
    return out


# -- promtool ----------------------------------------------------------------------------------


def test_prometheus_config_is_valid() -> None:
    out = run_promtool("check", "config", PROM / "prometheus.yml")
    assert "SUCCESS" in out and f"{len(RULE_FILES)} rule files found" in out


def test_rules_are_valid() -> None:
    assert {p.name for p in RULE_FILES} == {"pulse-kpis.yml", "pulse-pipeline.yml",
                                            "pulse-alerts.yml"}
    run_promtool("check", "rules", *RULE_FILES)


@pytest.mark.parametrize("path", RULE_TESTS, ids=[p.name for p in RULE_TESTS])
def test_promtool_rule_unit_tests(path: Path) -> None:
    run_promtool("test", "rules", path)


def test_every_rule_file_is_loaded_and_every_alert_is_tested() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert sorted(config["rule_files"]) == sorted(f"rules/{p.name}" for p in RULE_FILES)
    alerts = {r["alert"] for _, r in rules() if "alert" in r}
    assert alerts >= {"PulseConsumerLagGrowing", "PulseDeadLetterRate", "PulseNoEvents",
                      "PulseNpsDrop", "PulseAtRiskSpike"}
    tested = {t["alertname"] for p in RULE_TESTS
              for group in yaml.safe_load(p.read_text())["tests"]
              for t in group.get("alert_rule_test", [])}
    assert tested == alerts


# -- every PromQL expression names what the app exports ----------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range selectors (incl. Grafana's $__rate_interval)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\d+[smhdwy]\b", " ", e)
    e = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", e)  # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group().lower() in _KEYWORDS:
            continue  # a function or an aggregation
        names.add(m.group())
    return names


def test_the_name_extractor() -> None:
    assert metric_names('100 * (sum by (touchpoint) (max by (partition, touchpoint) '
                        '(pulse_kpi_survey_responses{kind="nps", class="promoter"})))') == \
        {"pulse_kpi_survey_responses"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__rate_interval])))"
                        " / on() group_left y offset 1d > bool 1e3") == {"x_bucket", "y"}
    assert metric_names('pulse:nps{touchpoint="all"} < (pulse:nps offset 1d) - 10') == \
        {"pulse:nps"}


def exported() -> set[str]:
    """Sample names of a live registry: the pipeline metrics and the KPI collector."""
    registry = CollectorRegistry()
    Metrics.create(registry)
    SupervisorMetrics.create(registry)  # `pulse worker --processes N`'s own
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",), "summary": ("_sum", "_count", "")}
    names = {fam.name + sfx for fam in registry.collect() for sfx in suffixes[fam.type]}
    collector = KpiCollector(None, DEFAULT_RULES)  # type: ignore[arg-type]  # describe only
    names |= {fam.name for fam in collector.describe()}
    return names | {"up"}  # Prometheus' own per target


def rules() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, r) for p in RULE_FILES
            for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for t in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']}", t["expr"]))
    return out


def test_every_promql_expression_names_only_exported_or_recorded_metrics() -> None:
    recorded = {r["record"] for _, r in rules() if "record" in r}
    known = exported() | recorded
    exprs = [(f"{f}: {r.get('record') or r.get('alert')}", r["expr"]) for f, r in rules()]
    exprs += dashboard_exprs()
    assert len(exprs) > 60
    unknown = {(where, n) for where, e in exprs for n in metric_names(e) if n not in known}
    assert not unknown, f"PromQL names metrics nobody exports: {sorted(unknown)}"
    # and every KPI component the app exports is used by a rule or the dashboard
    used = {n for _, e in exprs for n in metric_names(e)}
    kpi_names = {n for n in exported() if n.startswith("pulse_kpi_")}
    unused = kpi_names - used - {"pulse_kpi_as_of_timestamp_seconds", "pulse_kpi_refunds",
                                 "pulse_kpi_tickets_opened", "pulse_kpi_tickets_reopened",
                                 "pulse_kpi_reporting_currency_info"}
    assert not unused


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool checks the syntax of each dashboard query as a recording rule."""
    exprs = [e.replace("$__rate_interval", "5m") for _, e in dashboard_exprs()]
    doc = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(doc))
    run_promtool("check", "rules", path)


# -- Grafana provisioning ----------------------------------------------------------------------


def test_grafana_provisioning_and_dashboards_agree() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/customer-pulse.yml").read_text())
    (prov,) = provider["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{prov['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert DASHBOARDS, "no dashboard"
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"]
        titles = {p["title"] for p in dash["panels"]}
        assert {"NPS", "CSAT", "CES", "Retention rate", "Churn rate", "CLTV",
                "Consumer lag by topic", "Dead letters by reason"} <= titles
        for p in dash["panels"]:
            if p["type"] != "row":
                assert p["datasource"] == DS_VARIABLE, p["title"]
                assert p["targets"], p["title"]
                for target in p["targets"]:
                    assert target.get("datasource", DS_VARIABLE) == DS_VARIABLE, p["title"]


DS_VARIABLE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboards_import_into_any_grafana(path: Path) -> None:
    """No datasource uid is hard-coded: a datasource variable (what provisioning resolves to
    the default Prometheus) and an import input (what Grafana's import asks for)."""
    text = path.read_text()
    dash = json.loads(text)
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] not in text
    (var,) = [v for v in dash["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    (inp,) = dash["__inputs"]
    assert inp == inp | {"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}
    uids = {m for m in re.findall(r'"uid": "([^"]*)"', text)} - {dash["uid"]}
    assert uids == {"${DS_PROMETHEUS}"}


# -- docker-compose ----------------------------------------------------------------------------


def test_docker_compose_is_the_production_shaped_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "simulator", "prometheus", "grafana", "notifier",
            "webhook-receiver"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    env = services["worker"]["environment"]
    assert services["worker"]["command"] == ["pulse", "worker"]
    assert env["PULSE_WEB_HOST"] == "0.0.0.0"
    assert env["PULSE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["PULSE_REDIS_URL"].startswith("redis://redis:")
    # every engine process owns whole partitions: more than the partitions would sit idle
    engines = int(env["PULSE_PROCESSES"]) * services["worker"]["deploy"]["replicas"]
    assert engines <= int(env["PULSE_PARTITIONS"])
    scrape = yaml.safe_load((PROM / "prometheus.yml").read_text())["scrape_configs"]
    (job,) = [j for j in scrape if j["job_name"] == "pulse-worker"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == int(env["PULSE_WEB_PORT"])
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert services["simulator"]["command"][:2] == ["pulse", "simulate"]
    for svc in services.values():
        build = svc.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), vol


def compose_services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port(s), container port) of each published port."""
    out = []
    for p in service.get("ports", []):
        parts = str(p).split(":")
        assert len(parts) == 3, f"{p}: name the host address (127.0.0.1:HOST:CONTAINER)"
        out.append((parts[0], parts[1], parts[2]))
    return out


def test_docker_compose_publishes_to_loopback_only() -> None:
    services = compose_services()
    ports = {name: published(svc) for name, svc in services.items()}
    assert all(addr == "127.0.0.1" for p in ports.values() for addr, _, _ in p), ports
    assert ("127.0.0.1", "9090", "9090") in ports["prometheus"]
    assert ("127.0.0.1", "3000", "3000") in ports["grafana"]
    assert ("127.0.0.1", "6379", "6379") in ports["redis"]
    # the worker's API, one host port per replica of the range
    (api,) = ports["worker"]
    first, _, last = api[1].partition("-")
    env = services["worker"]["environment"]
    assert api[2] == env["PULSE_WEB_PORT"] and int(last) - int(first) + 1 == int(
        env["PULSE_PARTITIONS"])
    assert not ports["webhook-receiver"] and not ports["notifier"]


def test_kafka_is_reachable_from_the_host_on_its_external_listener() -> None:
    kafka = compose_services()["kafka"]
    env = kafka["environment"]
    listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(advertised) == {"PLAINTEXT", "EXTERNAL"} and "EXTERNAL" in protocols
    host, port = advertised["EXTERNAL"].rsplit(":", 1)
    assert host == "127.0.0.1" and listeners["EXTERNAL"] == f":{port}"
    assert ("127.0.0.1", port, port) in published(kafka)
    assert advertised["PLAINTEXT"] == compose_services()["worker"]["environment"][
        "PULSE_KAFKA_BOOTSTRAP"]


def test_prometheus_and_grafana_are_not_open() -> None:
    services = compose_services()
    assert not any("enable-lifecycle" in arg for arg in services["prometheus"]["command"])
    env = services["grafana"]["environment"]
    assert str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:-[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"])
    assert str(env["GF_USERS_ALLOW_SIGN_UP"]).lower() == "false"


def test_the_notifier_delivers_to_the_demo_receiver() -> None:
    services = compose_services()
    notifier, receiver = services["notifier"], services["webhook-receiver"]
    assert notifier["command"] == ["pulse", "notifier"]
    env = notifier["environment"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in notifier["volumes"]}
    hooks = yaml.safe_load((ROOT / mounted[env["PULSE_WEBHOOKS_FILE"]]).read_text())
    (endpoint,) = hooks["endpoints"]
    assert endpoint["url"].startswith(f"http://webhook-receiver:{receiver['environment']['RECEIVER_PORT']}/")
    secret_var = endpoint["secret_env"]
    assert env[secret_var] == receiver["environment"][secret_var]
    assert receiver["command"][:2] == ["python", "/app/deploy/webhook-receiver/receiver.py"]
    dockerfile = (ROOT / "deploy/docker/worker.Dockerfile").read_text()
    assert "COPY deploy/webhook-receiver ./deploy/webhook-receiver" in dockerfile
    scrape = yaml.safe_load((PROM / "prometheus.yml").read_text())["scrape_configs"]
    (job,) = [j for j in scrape if j["job_name"] == "pulse-notifier"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["notifier"] and sd["port"] == int(env["PULSE_NOTIFIER_WEB_PORT"])
