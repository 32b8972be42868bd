"""``processors.churn_fit.fit_weights`` and ``pulse fit churn``'s weights: known weights
recovered from outcomes drawn from the logistic model, the same optimum as an independent
Newton (IRLS) logistic regression, and the command end to end on a history where spend per
purchase day drives who comes back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from processors.churn_fit import MIN_ON, FitError, Params, fit_weights
from processors.rules import ChurnRules
from processors.timeutil import DAY_MS
from schemas.codec import format_time
from streams.rules_file import load_rules
from streams.tools.cli import cli
from tests.unit.processors.churn.fixtures import history_file

T0 = 1_704_067_200_000  # 2024-01-01
TRUTH = {"bias": 0.8, "model_weight": 0.6, "urgent": 1.2, "value": 0.3, "repeat": 0.7}


def _draw(n: int, seed: int, helps: float = 0.0
          ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Outcomes drawn from the logistic model with TRUTH's weights, and ``helps`` on a
    signal "helps" (negative: it lowers the risk, which the rules' ranges do not allow)."""
    rng = np.random.default_rng(seed)
    purchase = rng.normal(0.5, 1.5, n)
    signals = {"urgent": (rng.random(n) < 0.3).astype(float),
               "value": rng.uniform(-2, 2, n),
               "repeat": -np.log1p(rng.poisson(2.0, n)),
               "helps": (rng.random(n) < 0.5).astype(float),
               "rare": np.r_[np.ones(MIN_ON - 1), np.zeros(n - MIN_ON + 1)]}
    z = (TRUTH["bias"] + TRUTH["model_weight"] * purchase + helps * signals["helps"]
         + sum(TRUTH[k] * signals[k] for k in ("urgent", "value", "repeat")))
    churned = rng.random(n) < 1 / (1 + np.exp(-z))
    return purchase, signals, churned


START = {"bias": 0.0, "model_weight": 1.0, "urgent": 0.0, "value": 0.0, "repeat": 0.0,
         "helps": 0.0, "rare": 2.5}


def test_known_weights_are_recovered() -> None:
    purchase, signals, churned = _draw(40_000, seed=1)
    wf = fit_weights(purchase, signals, churned, START)
    assert wf.converged
    for k, v in TRUTH.items():
        assert wf.values[k] == pytest.approx(v, abs=0.08), k
    assert wf.values["helps"] == pytest.approx(0.0, abs=0.05)
    # on for fewer than MIN_ON customers: kept as it was, not estimated
    assert wf.values["rare"] == 2.5 and "rare" not in wf.fitted and wf.on["rare"] == MIN_ON - 1
    assert wf.log_loss < wf.start_log_loss
    assert (wf.customers, wf.churned) == (40_000, int(churned.sum()))


def test_a_signal_that_lowers_the_risk_stops_at_zero() -> None:
    purchase, signals, churned = _draw(20_000, seed=4, helps=-0.8)
    wf = fit_weights(purchase, signals, churned, START)
    assert wf.values["helps"] == 0.0  # the lower edge of the rules' range: no warning for it
    assert wf.at_bound == ()
    assert wf.values["urgent"] == pytest.approx(TRUTH["urgent"], abs=0.1)


def _irls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Plain Newton-Raphson logistic regression (unbounded, no prior): an independent check."""
    w = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ w)))
        step = np.linalg.solve(x.T @ (x * (p * (1 - p))[:, None]), x.T @ (y - p))
        w += step
        if np.abs(step).max() < 1e-12:
            break
    return w


def test_an_interior_optimum_is_the_plain_logistic_regressions() -> None:
    purchase, signals, churned = _draw(20_000, seed=2)
    use = {k: signals[k] for k in ("urgent", "value", "repeat")}  # all with positive weights
    wf = fit_weights(purchase, use, churned, {k: START[k] for k in
                                              ("bias", "model_weight", *use)})
    x = np.column_stack([np.ones(purchase.size), purchase, *use.values()])
    ref = _irls(x, churned.astype(float))
    got = [wf.values[k] for k in ("bias", "model_weight", *use)]
    # the weak prior moves the optimum by far less than its standard error (~0.03)
    assert got == pytest.approx(list(ref), abs=2e-3)


def test_weights_stay_in_the_ranges_the_rules_accept() -> None:
    rng = np.random.default_rng(3)
    n = 5_000
    strong = (rng.random(n) < 0.2).astype(float)
    churned = strong > 0  # the signal alone decides: its likelihood grows without bound
    churned[:3] = True
    wf = fit_weights(rng.normal(0, 1, n), {"strong": strong}, churned,
                     {"bias": 0.0, "model_weight": 1.0, "strong": 1.0})
    assert wf.values["strong"] <= 10.0 and "strong" in wf.at_bound
    assert -20 <= wf.values["bias"] <= 20 and 0 <= wf.values["model_weight"] <= 10


def test_one_outcome_cannot_be_fitted() -> None:
    with pytest.raises(FitError, match="bought nothing"):
        fit_weights([0.1, 0.2], {}, [True, True], {"bias": 0.0, "model_weight": 1.0})
    with pytest.raises(FitError, match="bought again"):
        fit_weights([0.1, 0.2], {}, [False, False], {"bias": 0.0, "model_weight": 1.0})
    with pytest.raises(ValueError, match="same length"):
        fit_weights([0.1, 0.2], {"a": [1.0]}, [False, True],
                    {"bias": 0.0, "model_weight": 1.0, "a": 0.0})


def test_fit_churn_fits_the_weights_and_the_worker_scores_with_them(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    # customers whose spend per visit predicts coming back
    history_file(history, Params(1.0, 25.0, 1.0, 3.0), 1500, 540, seed=11, value_effect=1.5)
    out = tmp_path / "rules.yaml"
    runner = CliRunner()
    res = runner.invoke(cli, ["fit", "churn", "--history", str(history), "--cutoff",
                              format_time(T0 + 270 * DAY_MS), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "score weights fitted to the 90 days before the cutoff (from 2024-06-29" in res.output
    churn = yaml.safe_load(out.read_text())["churn"]
    assert churn["weights"]["low_value"] > 0.3  # spend per purchase day matters here
    assert churn["weights"]["urgent_ticket"] == 1.5  # never on: kept
    assert 20_00 < churn["value_reference_minor"] < 40_00  # the median, in euro cents
    rules = load_rules(out)  # what PULSE_RULES_FILE would load
    assert rules.churn.weights.low_value == churn["weights"]["low_value"]
    auc = {ln.rsplit(None, 1)[0].strip(): float(ln.split()[-1])
           for ln in res.output.splitlines() if ln.startswith("    ") and ln[-1].isdigit()
           and ln.split()[-1].startswith("0.")}
    assert auc["fitted score"] > auc["default parameters"] + 0.01
    assert auc["fitted score"] > auc["fitted purchase model, the rules' weights"]
    # pulse evaluate churn scores with the same rules: the same AUC
    res2 = runner.invoke(cli, ["evaluate", "churn", "--history", str(history), "--cutoff",
                               format_time(T0 + 270 * DAY_MS), "--horizon", "270",
                               "--rules", str(out)])
    assert res2.exit_code == 0, res2.output
    line = next(ln for ln in res2.output.splitlines() if "(fitted) parameters" in ln)
    assert float(line.split()[-1]) == auc["fitted score"]
    # --model-only: the purchase model alone, the weights left as the rules have them
    only = tmp_path / "only.yaml"
    res3 = runner.invoke(cli, ["fit", "churn", "--history", str(history), "--cutoff",
                               format_time(T0 + 270 * DAY_MS), "--model-only", "--output",
                               str(only)])
    assert res3.exit_code == 0, res3.output
    assert "score weights not fitted: --model-only" in res3.output
    assert set(yaml.safe_load(only.read_text())["churn"]) == {"model"}
    assert load_rules(only).churn.weights == ChurnRules().weights
