"""``processors.churn_fit`` and ``pulse fit churn``: the MBG/NBD likelihood against hand-worked
values, the maximum-likelihood fit against lifetimes' ModifiedBetaGeoFitter (a maintained
implementation of the same model) and against known parameters, and the command end to end:
history file -> fitted rules file -> ``pulse evaluate churn`` with both AUCs."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from lifetimes import ModifiedBetaGeoFitter

from processors.churn.model import purchase_summary
from processors.churn_fit import (
    BOUNDS,
    PARAMS,
    FitError,
    Params,
    expected_repeat,
    fit,
    log_likelihood,
)
from processors.rules import DEFAULT_RULES
from processors.timeutil import DAY_MS
from schemas.codec import parse_when
from streams.rules_file import load_rules
from streams.tools.cli import cli
from streams.tools.evaluate import merged, read_events, replay
from streams.tools.simulator import SimConfig, Simulator
from tests.unit.processors.churn.fixtures import history_file

T0 = 1_704_067_200_000  # 2024-01-01


def _by_hand(r: float, alpha: float, a: float, b: float, x: int, tx: float, t: float) -> float:
    """ln L written out with math.gamma (Batislam et al. 2007, eq. 4), for small x."""
    g = math.gamma
    first = g(r + x) * alpha**r / g(r)
    beta = (g(a + b) * g(b + x + 1)) / (g(b) * g(a + b + x + 1))  # B(a, b+x+1) / B(a, b)
    bracket = (alpha + t) ** -(r + x) + a / (b + x) * (alpha + tx) ** -(r + x)
    return math.log(first * beta * bracket)


@pytest.mark.parametrize(("params", "x", "tx", "t", "expected"), [
    # r = a = b = alpha = 1, one-time buyer seen for 1 day:
    # 1 * 1/2 * (1/2 + 1/1) = 0.75
    ((1.0, 1.0, 1.0, 1.0), 0, 0.0, 1.0, math.log(0.75)),
    # r = 1, alpha = 1, a = 1, b = 1, x = 1, t_x = 1, T = 3: G(2)/G(1) * 1 *
    # B(1, 3)/B(1, 1) = 1/3;  bracket (4^-2 + 1/2 * 2^-2) = 1/16 + 1/8 = 3/16  -> 1/16
    ((1.0, 1.0, 1.0, 1.0), 1, 1.0, 3.0, math.log(1 / 16)),
    # r = 2, alpha = 2: G(2)/G(2) * 2^2 = 4; a = 2, b = 1, x = 0: B(2, 2)/B(2, 1) = (1/6)/(1/2)
    # = 1/3; bracket (2 + 2)^-2 + 2/1 * 2^-2 = 1/16 + 1/2 = 9/16  -> 4 * 1/3 * 9/16 = 3/4
    ((2.0, 2.0, 2.0, 1.0), 0, 0.0, 2.0, math.log(0.75)),
])
def test_log_likelihood_hand_computed(params: tuple[float, ...], x: int, tx: float, t: float,
                                      expected: float) -> None:
    got = log_likelihood(params, [x], [tx], [t])
    assert got[0] == pytest.approx(expected, rel=1e-12)
    assert got[0] == pytest.approx(_by_hand(*params, x, tx, t), rel=1e-12)


@pytest.mark.parametrize("params", [(0.25, 60.0, 0.8, 2.5), (0.5, 6.0, 1.3, 0.7)])
@pytest.mark.parametrize(("x", "tx", "t"), [(0, 0.0, 5.0), (3, 40.0, 100.0), (7, 7.0, 7.0)])
def test_log_likelihood_matches_the_formula_written_out(params: tuple[float, ...], x: int,
                                                        tx: float, t: float) -> None:
    assert log_likelihood(params, [x], [tx], [t])[0] == pytest.approx(
        _by_hand(*params, x, tx, t), rel=1e-10)


def _mbg_histories(params: Params, n: int, calib: float, holdout: float, seed: int
                   ) -> tuple[list[int], list[float], list[float], list[int]]:
    """Customers drawn from the MBG/NBD process itself: first purchase at 0, Poisson purchases
    at rate lambda ~ gamma(r, 1/alpha), after each purchase (the first too) a drop out with
    probability p ~ beta(a, b). Returns x, t_x, T (= calib) and the holdout purchase counts."""
    rng = random.Random(seed)
    xs, txs, ts, hold = [], [], [], []
    for _ in range(n):
        lam = rng.gammavariate(params.r, 1 / params.alpha)
        p = rng.betavariate(params.a, params.b)
        t, times = 0.0, []
        while rng.random() >= p:
            t += rng.expovariate(lam)
            if t > calib + holdout:
                break
            times.append(t)
        before = [s for s in times if s <= calib]
        xs.append(len(before))
        txs.append(before[-1] if before else 0.0)
        ts.append(calib)
        hold.append(len(times) - len(before))
    return xs, txs, ts, hold


def test_the_fit_recovers_known_parameters() -> None:
    truth = Params(0.6, 40.0, 0.9, 2.2)
    xs, txs, ts, hold = _mbg_histories(truth, 6000, 270.0, 270.0, seed=5)
    got = fit(xs, txs, ts)
    assert got.converged and not got.at_bound
    for name in ("r", "alpha", "a", "b"):
        assert getattr(got.params, name) == pytest.approx(getattr(truth, name), rel=0.25), name
    # and the truth is less likely than the optimum, but not by much
    truth_ll = float(log_likelihood(truth, xs, txs, ts).sum())
    assert truth_ll <= got.log_likelihood < truth_ll + 15
    # the holdout forecast (a < 1 here: the closed form's continuation) matches the draws
    expected = float(expected_repeat(got.params, 270.0, xs, txs, ts).sum())
    assert expected == pytest.approx(sum(hold), rel=0.1)


def _lifetimes(xs: list[int], txs: list[float], ts: list[float]) -> Params:
    m = ModifiedBetaGeoFitter().fit(np.asarray(xs, float), np.asarray(txs), np.asarray(ts))
    p = m.params_
    return Params(float(p["r"]), float(p["alpha"]), float(p["a"]), float(p["b"]))


def test_the_fit_agrees_with_lifetimes_on_mbg_data() -> None:
    xs, txs, ts, _ = _mbg_histories(Params(0.3, 20.0, 1.5, 4.0), 3000, 200.0, 0.0, seed=9)
    ours, theirs = fit(xs, txs, ts), _lifetimes(xs, txs, ts)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(ours.params, name) == pytest.approx(getattr(theirs, name), rel=1e-3)
    assert ours.log_likelihood >= float(log_likelihood(theirs, xs, txs, ts).sum()) - 1e-6
    assert expected_repeat(ours.params, 50.0, xs[:20], txs[:20], ts[:20]) == pytest.approx(
        ModifiedBetaGeoFitter().fit(np.asarray(xs, float), np.asarray(txs), np.asarray(ts))
        .conditional_expected_number_of_purchases_up_to_time(
            50.0, np.asarray(xs[:20], float), np.asarray(txs[:20]), np.asarray(ts[:20])),
        rel=2e-3)


def _sim_summaries(customers: int, days: int) -> tuple[list[int], list[float], list[float]]:
    sim = Simulator(SimConfig(start_ms=T0, customers=customers, seed=4, acquisition_days=120))
    events = [r.event for r in sim.events_until(T0 + days * DAY_MS) if r.valid and r.event]
    cutoff = T0 + days * DAY_MS
    rep = replay(iter(sorted(events, key=lambda e: e.occurred_at)), DEFAULT_RULES, cutoff)
    out: tuple[list[int], list[float], list[float]] = ([], [], [])
    for state in rep.states.values():
        s = purchase_summary(state, DEFAULT_RULES, cutoff)
        if s is not None:
            for col, v in zip(out, s, strict=True):
                col.append(v)  # type: ignore[arg-type]
    return out


def test_the_fit_on_simulated_traffic_is_the_best_point_in_range() -> None:
    """The simulator is not an MBG/NBD process and its optimum can lie outside the ranges the
    rules accept (lifetimes, unbounded, drives a and b towards 0 here): our fit must be at
    least as likely as lifetimes' point clipped into the ranges and as every point of a
    coarse grid over them (an independent brute-force check of the optimiser)."""
    xs, txs, ts = _sim_summaries(400, 200)
    ours = fit(xs, txs, ts)
    theirs = _lifetimes(xs, txs, ts)
    clipped = [min(max(v, BOUNDS[k][0]), BOUNDS[k][1])
               for k, v in zip(PARAMS, theirs.as_tuple(), strict=True)]
    assert ours.log_likelihood >= float(log_likelihood(clipped, xs, txs, ts).sum()) - 1e-6
    axes = [np.geomspace(*BOUNDS[k], 9) for k in PARAMS]
    grid = np.array(np.meshgrid(*axes, indexing="ij")).reshape(4, -1).T
    best = max(float(log_likelihood(p, xs, txs, ts).sum()) for p in grid)
    assert ours.log_likelihood >= best


def test_the_fit_needs_repeat_buyers() -> None:
    with pytest.raises(FitError, match="more than one day"):
        fit([0, 0], [0.0, 0.0], [10.0, 20.0])
    with pytest.raises(FitError, match="no customers"):
        fit([], [], [])
    with pytest.raises(ValueError, match="t_x"):
        fit([0, 1], [0.0, 11.0], [10.0, 10.0])
    with pytest.raises(ValueError, match="x >= 0"):
        fit([-1, 1], [0.0, 1.0], [10.0, 10.0])


def test_fit_then_evaluate_end_to_end(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history_file(history, Params(0.8, 30.0, 1.0, 3.0), 1500, 360, seed=2)
    existing = tmp_path / "rules.yaml"
    existing.write_text("churn:\n  cooldown_days: 45\n  model:\n    horizon_days: 180\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["fit", "churn", "--history", str(history), "--cutoff",
                              "2024-06-29", "--output", str(existing)])
    assert res.exit_code == 0, res.output
    for words in ("rate_shape (r)", "log-likelihood", "calibration vs holdout",
                  "fitted parameters", "default parameters", "wrote the fit to"):
        assert words in res.output
    # 360 days of history, horizon_days 180: too short for the weights' time split
    assert "score weights not fitted: the weights need 360 days of history" in res.output
    rules = load_rules(existing)  # what PULSE_RULES_FILE would load
    assert rules.churn.cooldown_days == 45 and rules.churn.model.horizon_days == 180
    model = yaml.safe_load(existing.read_text())["churn"]["model"]
    assert model["rate_shape"] == pytest.approx(0.8, rel=0.35)
    assert model["dropout_b"] == pytest.approx(3.0, rel=0.5)
    res = runner.invoke(cli, ["evaluate", "churn", "--history", str(history), "--cutoff",
                              "2024-06-29", "--horizon", "180", "--rules", str(existing)])
    assert res.exit_code == 0, res.output
    fitted = [ln for ln in res.output.splitlines() if "(fitted) parameters" in ln]
    default = [ln for ln in res.output.splitlines() if "default parameters" in ln]
    assert len(fitted) == 1 and len(default) == 1
    assert 0.5 < float(fitted[0].split()[-1]) <= 1 and 0.5 < float(default[0].split()[-1]) <= 1
    # without a fitted rules file the output is as before: one churn-score line
    res = runner.invoke(cli, ["evaluate", "churn", "--history", str(history), "--cutoff",
                              "2024-06-29", "--horizon", "180"])
    assert "default parameters" not in res.output and "churn score " in res.output


def test_fit_user_errors_are_one_line(tmp_path: Path) -> None:
    history = tmp_path / "h.csv"
    history.write_text("customer_id,occurred_at,amount\nA,2024-01-01,5.00\nB,2024-01-02,5.00\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["fit", "churn", "--history", str(history)])
    assert res.exit_code == 2 and "more than one day" in res.output
    assert "Traceback" not in res.output
    good = tmp_path / "g.csv"
    history_file(good, Params(0.8, 30.0, 1.0, 3.0), 200, 200, seed=3)
    res = runner.invoke(cli, ["fit", "churn", "--history", str(good), "--output",
                              str(tmp_path / "rules.toml")])
    assert res.exit_code == 2 and "YAML" in res.output
    res = runner.invoke(cli, ["fit", "churn", "--history", str(good), "--output",
                              str(tmp_path / "missing" / "rules.yaml")])
    assert res.exit_code == 2 and "cannot write" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("churn:\n  model:\n    horizon_days: 0\n")  # the loader refuses it
    res = runner.invoke(cli, ["fit", "churn", "--history", str(good), "--output", str(bad)])
    assert res.exit_code == 2 and "would not load" in res.output and "horizon_days" in res.output
    assert bad.read_text() == "churn:\n  model:\n    horizon_days: 0\n"  # left as it was
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".pulse-rules-")]


def test_the_summaries_are_the_scores_own(tmp_path: Path) -> None:
    """purchase_summary counts purchase days (two orders on one day are one), as the score."""
    path = tmp_path / "h.csv"
    path.write_text("customer_id,occurred_at,amount\nA,2024-01-01T10:00:00Z,5.00\n"
                    "A,2024-01-01T15:00:00Z,5.00\nA,2024-01-11T12:00:00Z,5.00\n")
    cutoff = parse_when("2024-01-21")
    rep = replay(merged([read_events(str(path), "purchase", DEFAULT_RULES)]), DEFAULT_RULES,
                 cutoff)
    assert purchase_summary(rep.states["A"], DEFAULT_RULES, cutoff) == (
        1, pytest.approx(10 + 2 / 24), pytest.approx(20 - 10 / 24))
