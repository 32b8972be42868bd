"""``pulse evaluate churn``: the AUC formula, the replay to the cutoff, the command, and the
behaviour that matters: on a realistic simulated history the score beats both baselines."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from processors.churn.explain import score
from processors.customer import apply
from processors.rules import DEFAULT_RULES
from processors.timeutil import DAY_MS
from schemas.codec import parse_when
from streams.tools.cli import cli
from streams.tools.evaluate import (
    auc,
    evaluate,
    history_row,
    merged,
    read_events,
    replay,
    run,
    write_history,
)
from streams.tools.replay import ReplayError
from streams.tools.simulator import SimConfig, Simulator
from tests import builders

T0 = 1_704_067_200_000  # 2024-01-01


@pytest.mark.parametrize(("scores", "labels", "expected"), [
    ([1, 2, 3, 4], [False, False, True, True], 1.0),
    ([4, 3, 2, 1], [False, False, True, True], 0.0),
    ([5, 5, 5, 5], [True, False, True, False], 0.5),  # all tied: a coin toss
    ([1, 2, 2, 3], [False, True, False, True], 0.875),  # (1 + 0.5 + 1 + 1) / 4 pairs
    ([0.3, 0.1, 0.2], [True, False, False], 1.0),
    ([1, 1, 2, 2, 3], [False, True, False, True, True], (0.5 + 0 + 1 + 0.5 + 1 + 1) / 6),
])
def test_auc_is_the_rank_formula_with_ties_as_halves(scores: list[float], labels: list[bool],
                                                     expected: float) -> None:
    assert auc(scores, labels) == pytest.approx(expected)


def test_auc_needs_both_classes() -> None:
    assert auc([1, 2], [True, True]) is None
    assert auc([], []) is None
    with pytest.raises(ValueError, match="differ"):
        auc([1], [True, False])


HISTORY = """customer_id,occurred_at,amount
A,2024-01-01,10.00
A,2024-01-15,12.00
A,2024-02-01,11.00
A,2024-02-20,9.00
B,2024-01-05,50.00
B,2024-01-06,-80.00
C,2024-01-20,5.00
C,2024-03-20,6.00
A,2024-03-10,10.00
D,2024-03-25,7.00
"""


def _write(tmp_path: Path, text: str, name: str = "history.csv") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_replay_to_the_cutoff_labels_and_baselines(tmp_path: Path) -> None:
    path = _write(tmp_path, HISTORY)
    parsed = read_events(path, "purchase", DEFAULT_RULES)
    cutoff = parse_when("2024-03-01")
    ev = evaluate(merged([parsed]), DEFAULT_RULES, cutoff, 20)
    by = {s.customer_id: s for s in ev.samples}
    # A and C buy within 20 days after the cutoff; B does not; D first bought after it
    assert sorted(by) == ["A", "B", "C"]
    assert {c: s.churned for c, s in by.items()} == {"A": False, "B": True, "C": False}
    assert by["A"].purchases == 4 and by["A"].days_since_last_purchase == 10.0
    assert ev.rejected == {"invalid": 1}  # B's refund exceeds what B spent
    assert ev.applied == {"purchase": 6}
    # the score is churn.score of the replayed state as of the cutoff (the export's value)
    state = None
    for e in parsed.events:
        if e.customer_id == "A" and e.occurred_at < cutoff:
            state = apply(state, e, DEFAULT_RULES, e.occurred_at - DAY_MS).state
    assert state is not None
    assert by["A"].score == score(state, DEFAULT_RULES, cutoff).score


def test_the_replay_runs_the_time_driven_changes_as_the_worker_does() -> None:
    """The replay is the worker's shard transaction: silence has its effects by the cutoff
    (here: A's points expire after 12 months without activity while B keeps buying; the
    partition's clock, B's purchases, makes it due), not only events."""
    events = [builders.purchase(f"b{d}", T0 + d * DAY_MS, cid="B") for d in range(0, 420, 7)]
    events.insert(1, builders.purchase("a1", T0 + DAY_MS, 5000, cid="A"))
    rep = replay(events, DEFAULT_RULES, T0 + 430 * DAY_MS)
    a, b = rep.states["A"].loyalty, rep.states["B"].loyalty
    assert a is not None and b is not None
    assert a.lifetime_points > 0 and a.balance == 0  # expired
    assert b.balance > 0
    assert rep.applied == {"purchase": len(events)}


@pytest.mark.parametrize("at_day", [0, 9, 180, 365, 600])
def test_the_snapshot_is_a_replay_up_to_its_time(at_day: int) -> None:
    """``snapshot_at``: the states as a replay up to that time leaves them (its last batch
    and the time-driven changes it ran included), and the replay to the cutoff unchanged."""
    sim = Simulator(SimConfig(start_ms=T0, customers=60, seed=3, acquisition_days=90))
    events = [r.event for r in sim.events_until(T0 + 400 * DAY_MS) if r.valid and r.event]
    events.sort(key=lambda e: e.occurred_at)
    at = T0 + at_day * DAY_MS + 1
    cutoff = T0 + 380 * DAY_MS
    both = replay(iter(events), DEFAULT_RULES, cutoff, snapshot_at=min(at, cutoff))
    alone = replay(iter(events), DEFAULT_RULES, min(at, cutoff))
    assert both.snapshot == alone.states
    assert both.states == replay(iter(events), DEFAULT_RULES, cutoff).states
    assert both.snapshot is not None and (len(both.snapshot) < len(both.states)) is (
        at_day < 100)


def test_the_command_prints_the_three_aucs(tmp_path: Path) -> None:
    path = _write(tmp_path, HISTORY)
    out, err = io.StringIO(), io.StringIO()
    code = run(path, cutoff=parse_when("2024-03-01"), horizon_days=20, rules=DEFAULT_RULES,
               stdout=out, stderr=err)
    assert code == 0
    text = out.getvalue()
    for words in ("ROC AUC", "churn score", "recency baseline", "purchase-count baseline",
                  "customers scored: 3", "rejected: 1 (invalid 1)"):
        assert words in text
    assert "warning" not in text
    out = io.StringIO()
    run(path, cutoff=parse_when("2024-03-20"), horizon_days=30, rules=DEFAULT_RULES,
        as_json=True, stdout=out, stderr=err)
    result = json.loads(out.getvalue())
    assert set(result["auc"]) == {"churn_score", "recency", "purchase_count"}
    assert "warning" not in out.getvalue()
    text = io.StringIO()
    run(path, cutoff=parse_when("2024-03-20"), horizon_days=30, rules=DEFAULT_RULES,
        stdout=text, stderr=err)
    assert "warning: the history ends" in text.getvalue()


def test_the_cli(tmp_path: Path) -> None:
    path = _write(tmp_path, HISTORY)
    runner = CliRunner()
    res = runner.invoke(cli, ["evaluate", "churn", "--history", path, "--cutoff", "2024-03-01",
                              "--horizon", "30", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["customers"] == 3
    res = runner.invoke(cli, ["evaluate", "churn", "--history", path, "--cutoff", "March",
                              "--horizon", "30"])
    assert res.exit_code == 2 and "--cutoff" in res.output
    res = runner.invoke(cli, ["evaluate", "churn", "--history", path, "--cutoff", "1969-12-31",
                              "--horizon", "30"])
    assert res.exit_code == 2 and "must not be before 1970-01-01T00:00:00Z" in res.output
    res = runner.invoke(cli, ["evaluate", "churn", "--history", path, "--cutoff", "1970-01-01",
                              "--horizon", "30", "--json"])
    assert res.exit_code == 0, res.output  # a valid cutoff: nobody bought before it
    assert json.loads(res.output)["cutoff"] == "1970-01-01T00:00:00.000Z"
    bad = _write(tmp_path, "customer,when\nA,2024-01-01\n", "bad.csv")
    res = runner.invoke(cli, ["evaluate", "churn", "--history", bad, "--cutoff", "2024-03-01",
                              "--horizon", "30"])
    assert res.exit_code == 2 and "missing required column" in res.output


def test_usage_errors() -> None:
    with pytest.raises(ReplayError, match="horizon"):
        run("x.csv", cutoff=T0, horizon_days=0, rules=DEFAULT_RULES)


def test_history_rows_round_trip_through_the_replay_parser(tmp_path: Path) -> None:
    sim = Simulator(SimConfig(start_ms=T0, customers=40, seed=3))
    events = [r.event for r in sim.events_until(T0 + 120 * DAY_MS) if r.event is not None]
    paths = write_history(events, tmp_path, DEFAULT_RULES)
    back = merged([read_events(str(paths[k]), k, DEFAULT_RULES) for k in paths])
    kept = [e for e in events if e.event_kind != "redemption"]
    key = lambda e: (e.occurred_at, e.event_id)  # noqa: E731
    got = sorted(back, key=key)
    assert [history_row(e, DEFAULT_RULES) for e in got] == \
        [history_row(e, DEFAULT_RULES) for e in sorted(kept, key=key)]


def test_on_a_simulated_history_the_score_beats_both_baselines(tmp_path: Path) -> None:
    """Behaviour, not timing: 1000 simulated customers over 500 days (one-time buyers,
    rhythms of days to months, fades, silences), scored on day 410 for the next 90 days."""
    start = 1_672_531_200_000  # 2023-01-01
    sim = Simulator(SimConfig(start_ms=start, customers=1000, seed=11))
    paths = write_history((r.event for r in sim.events_until(start + 500 * DAY_MS)
                           if r.event is not None), tmp_path, DEFAULT_RULES)
    out = io.StringIO()
    run(str(paths["purchase"]), tickets=str(paths["ticket"]), surveys=str(paths["survey"]),
        cutoff=start + 410 * DAY_MS, horizon_days=90, rules=DEFAULT_RULES, as_json=True,
        stdout=out, stderr=io.StringIO())
    result = json.loads(out.getvalue())
    a = result["auc"]
    print(f"\nsimulated history: {result['customers']} customers, AUC {a}")
    assert result["customers"] > 900 and result["rejected"] == {}
    assert a["churn_score"] > a["recency"] and a["churn_score"] > a["purchase_count"]
