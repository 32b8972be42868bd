"""The streaming export's churn_score as of a time equals what `pulse evaluate churn`
computes for the same history: the engine and the offline evaluation run the same
processors on the same events (here: a simulated year written in the replay CSV format)."""

from __future__ import annotations

from pathlib import Path

from processors.rules import DEFAULT_RULES
from processors.timeutil import DAY_MS
from schemas.codec import encode
from streams.tools.evaluate import evaluate, merged, read_events, write_history
from streams.tools.simulator import SimConfig, Simulator
from streams.worker.topics import Topics
from streams.worker.views import load_rows
from tests.integration.helpers import counter_value, produce, running_engine, wait_until

START = 1_735_689_600_000  # 2025-01-01T00:00:00Z
CUTOFF = START + 300 * DAY_MS


async def test_export_churn_score_equals_evaluate(settings, tmp_path: Path) -> None:
    sim = Simulator(SimConfig(customers=300, seed=5, start_ms=START))
    history = [r.event for r in sim.events_until(CUTOFF + 90 * DAY_MS)
               if r.valid and r.event is not None and r.kind != "redemption"]
    paths = write_history(history, tmp_path, DEFAULT_RULES)
    parsed = [read_events(str(paths[k]), k, DEFAULT_RULES) for k in ("purchase", "ticket",
                                                                      "survey")]
    offline = evaluate(merged(parsed), DEFAULT_RULES, CUTOFF, 90)
    assert len(offline.samples) > 100

    # the engine gets what the files hold up to the cutoff, through the replay parser
    before = sorted((e for p in parsed for e in p.events if e.occurred_at < CUTOFF),
                    key=lambda e: e.occurred_at)
    topics = Topics.from_settings(settings)
    async with running_engine(settings) as engine:
        await produce(settings, [(topics.for_kind(e.event_kind), e.customer_id.encode(),
                                  encode(e)) for e in before])
        await wait_until(
            lambda: counter_value(engine.metrics, "pulse_events_total", outcome="processed")
            + counter_value(engine.metrics, "pulse_events_total", outcome="deadletter")
            >= len(before), timeout=90, what="the history up to the cutoff")
        rows = {r["customer_id"]: r for r in (await load_rows(settings, DEFAULT_RULES,
                                                              CUTOFF)).rows}
    for s in offline.samples:
        assert rows[s.customer_id]["churn_score"] == s.score, s.customer_id
