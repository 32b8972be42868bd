"""A real Prometheus (Debian package prometheus) scraping a real `pulse worker` every second,
with the recording rules of deploy/prometheus: after a known set of survey answers, its
HTTP API returns exactly the NPS, CSAT and CES worked out by hand below. The worker's live
/metrics passes `promtool check metrics`.

Answers in the window (one customer each, spread over the 4 partitions):
  NPS checkout 10, 9, 9, 8      support 10, 7, 6, 0
      promoters 4 (10 9 9 10), passives 2 (8 7), detractors 2 (6 0), n 8
      NPS all = 100 x (4 - 2) / 8 = 25;  checkout 100 x (3 - 0) / 4 = 75;
      support 100 x (1 - 2) / 4 = -25
  CSAT support 5, 4, 4, 3, 2, 1, 5, 4: 4-5 answers 5 of 8 = 0.625
  CES checkout 7, 6, 5, 3, 2: (7 + 6 + 5 + 3 + 2) / 5 = 23 / 5 = 4.6
Not counted: an NPS 0 forty days before the newest answer (outside the 30-day window) and a
producer retry of one answer (same event id).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from schemas.codec import encode
from schemas.events import Survey
from streams.settings import Settings
from streams.tools.devrun import scrape, start_worker, total
from streams.tools.devstack import Child, _spawn, free_port
from streams.worker.topics import Topics
from tests.integration.helpers import produce, wait_until

ROOT = Path(__file__).resolve().parents[2]
T_END = 1_746_100_800_000  # 2025-05-01T12:00:00Z
DAY = 86_400_000
NPS_ALL, NPS_CHECKOUT, NPS_SUPPORT = 25.0, 75.0, -25.0
CSAT, CES = 0.625, 4.6

README_NPS = (  # the PromQL the README shows, without the recording rules
    '100 * (sum(max by (partition, touchpoint) (pulse_kpi_survey_responses{kind="nps", '
    'class="promoter"})) - sum(max by (partition, touchpoint) (pulse_kpi_survey_responses'
    '{kind="nps", class="detractor"}))) / sum(max by (partition, touchpoint, class) '
    '(pulse_kpi_survey_responses{kind="nps"}))')


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: it comes with the Debian package prometheus "
                    "(sudo apt-get install -y prometheus, or `make system-deps`)", pytrace=False)
    return path


def answers() -> list[Survey]:
    out = []
    i = 0

    def add(kind: str, touchpoint: str, scores: tuple[int, ...], at: int) -> None:
        nonlocal i
        for score in scores:
            out.append(Survey(f"prom-{i}", f"pc-{i:03d}", at + i * 1000, "survey-tool",
                              f"srv-{i}", kind, score, touchpoint))  # type: ignore[arg-type]
            i += 1

    add("nps", "support", (0,), T_END - 40 * DAY)  # outside the window
    add("nps", "checkout", (10, 9, 9, 8), T_END - DAY)
    add("nps", "support", (10, 7, 6, 0), T_END - DAY)
    add("csat", "support", (5, 4, 4, 3, 2, 1, 5, 4), T_END - 3600_000)
    add("ces", "checkout", (7, 6, 5, 3, 2), T_END - 60_000)
    out.append(out[3])  # a producer retry
    return out


def query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def start_prometheus(tmp: Path, worker_port: int) -> tuple[Child, int]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy/prometheus/rules/pulse-kpis.yml"),
                       str(ROOT / "deploy/prometheus/rules/pulse-pipeline.yml")],
        "scrape_configs": [{"job_name": "pulse-worker", "scrape_interval": "1s",
                            "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [binary("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn"]
    return _spawn("prometheus", argv, port, tmp), port


async def test_real_prometheus_reads_the_exact_nps_csat_ces(settings: Settings,
                                                            tmp_path: Path) -> None:
    promtool = binary("promtool")
    binary("prometheus")
    s = settings.with_(web_port=free_port())
    topics = Topics.from_settings(s)
    events = answers()
    worker = start_worker(s, tmp_path, "worker")
    prometheus = None
    try:
        metrics_url = f"http://127.0.0.1:{s.web_port}/metrics"

        def processed() -> float:
            return total(scrape(metrics_url).get("pulse_events_total", {}), outcome="processed")

        await produce(s, [(topics.surveys, e.customer_id.encode(), encode(e)) for e in events])
        await wait_until(lambda: processed() == len(events) - 1, timeout=90,
                         what="the worker applied every answer")

        text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
        assert "pulse_kpi_survey_responses{" in text
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                              text=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr

        prometheus, port = start_prometheus(tmp_path, s.web_port)

        async def value(promql: str, want: float) -> None:
            def ok() -> bool:
                try:
                    result = query(port, promql)
                except OSError:  # 503 until the TSDB is ready
                    return False
                return len(result) == 1 and float(result[0]["value"][1]) == want
            try:
                await wait_until(ok, timeout=60, interval=0.5, what=promql)
            except AssertionError:
                raise AssertionError(f"{promql}: {query(port, promql)} != {want}\n"
                                     f"{prometheus.log_tail() if prometheus else ''}") from None

        await value('pulse:nps{touchpoint="all"}', NPS_ALL)
        await value('pulse:nps{touchpoint="checkout"}', NPS_CHECKOUT)
        await value('pulse:nps{touchpoint="support"}', NPS_SUPPORT)
        await value(README_NPS, NPS_ALL)
        await value('pulse:csat_ratio{touchpoint="all"}', CSAT)
        await value('pulse:ces_score{touchpoint="all"}', CES)
        await value('pulse:ces_score{touchpoint="checkout"}', CES)
        await value('sum(pulse_events_total{outcome="processed"})', len(events) - 1)
        await value('sum(pulse_events_total{outcome="duplicate"})', 1)
        await value("max(pulse_kpi_as_of_timestamp_seconds)",
                    max(e.occurred_at for e in events) / 1000)
    finally:
        if prometheus is not None:
            prometheus.stop()
        worker.stop(timeout=15)
