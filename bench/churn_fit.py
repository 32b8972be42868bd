"""The churn score fitted by ``pulse fit churn`` against the default parameters, the plain BG/NBD
expected-purchases ranking and the baselines, out of sample (README, "Fitting the churn score
to your history").

    .venv/bin/python bench/churn_fit.py cdnow            # CDNOW, shipped with lifetimes
    .venv/bin/python bench/churn_fit.py sim 20000        # the simulator's default traffic

CDNOW: the full master file (23,570 customers who first bought in Q1 1997, purchases to
1998-06-30) converted to the replay CSV format; cutoff 1997-10-01 (39 weeks of calibration,
39 of holdout). Simulator: seed 7, first purchases over 270 days, 540 days, cutoff at day
270. Target: no purchase in the holdout. Needs the dev dependencies (lifetimes).

What is fitted sees only the history before the cutoff (``streams.tools.fit.fit_replayed``,
the code of ``pulse fit churn``); every AUC is on the holdout, scored by the worker's own
``processors.churn.explain.score`` with the fitted rules. The customer split fits on the customers
of one half (by a hash of the id) and scores the other half, both ways round. Two oracles
are printed as ceilings, not methods: the MBG/NBD purchase model with its parameters
searched for the holdout AUC, and the score's weights fitted (``fit_weights``) to the
holdout's outcomes themselves.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from hashlib import blake2b
from pathlib import Path

import lifetimes
import numpy as np
from lifetimes import BetaGeoFitter
from lifetimes.utils import ConvergenceError
from scipy.optimize import minimize
from scipy.stats import rankdata

from processors.churn.model import purchase_summary, signal_strengths
from processors.churn_fit import Params, fit_weights, p_alive
from processors.rules import DEFAULT_RULES
from processors.timeutil import DAY_MS
from schemas.codec import parse_when
from streams.tools.evaluate import auc, merged, read_events, replay, score_replayed, write_history
from streams.tools.fit import fit_replayed, fitted_rules, split_time
from streams.tools.simulator import SimConfig, Simulator


def cdnow(directory: Path) -> tuple[list[str], int]:
    src = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"
    out = directory / "cdnow.csv"
    with src.open() as f, out.open("w", newline="") as o:
        w = csv.writer(o)
        w.writerow(["event_id", "customer_id", "occurred_at", "amount", "currency"])
        for i, line in enumerate(f):
            cid, day, _, value = line.split()
            if day.isdigit():  # (skips the header line)
                w.writerow([f"cdnow-{i}", cid, f"{day[:4]}-{day[4:6]}-{day[6:]}T12:00:00Z",
                            value, "USD"])
    return [str(out)], parse_when("1997-10-01")


def simulated(directory: Path, customers: int) -> tuple[list[str], int]:
    start = parse_when("2024-01-01")
    sim = Simulator(SimConfig(start_ms=start, customers=customers, seed=7,
                              acquisition_days=270))
    paths = write_history((r.event for r in sim.events_until(start + 540 * DAY_MS)
                           if r.valid and r.event), directory, DEFAULT_RULES)
    return [str(paths[k]) for k in ("purchase", "ticket", "survey")], start + 270 * DAY_MS


def _half(cid: str) -> bool:
    return blake2b(cid.encode(), digest_size=1).digest()[0] < 128


def _auc_of(scores: dict[str, float], labels: dict[str, bool], ids: list[str]) -> float:
    v = auc([scores[c] for c in ids], [labels[c] for c in ids])
    assert v is not None
    return v


def main(files: list[str], cutoff: int) -> None:
    rules = DEFAULT_RULES
    kinds = ("purchase", "ticket", "survey")
    rep = replay(merged([read_events(f, k, rules) for f, k in zip(files, kinds, strict=False)]),
                 rules, cutoff, snapshot_at=split_time(rules, cutoff))
    assert rep.history_end is not None
    days = (rep.history_end + 1 - cutoff) / DAY_MS
    full = fit_replayed(rep, rules)
    assert full.weights is not None, full.skipped
    cr = full.rules.churn
    print(f"{len(rep.states)} customers, holdout {days:.1f} days; purchase model "
          f"{full.model.params}, log-likelihood {full.model.log_likelihood:.2f}; weights: "
          f"model_weight {cr.model_weight:.4g}, bias {cr.bias:.4g}, "
          + ", ".join(f"{k} {v:.4g}" for k, v in full.weights.values.items()
                      if k in full.weights.fitted)
          + f"; value_reference_minor {cr.value_reference_minor}")
    m = cr.model
    chosen = Params(m.rate_shape, m.rate_scale_days, m.dropout_a, m.dropout_b)
    print(f"purchase model in the score: {full.model_in_score} ({chosen}); log loss on the "
          f"split {full.weights.log_loss:.5f}, with the other "
          f"{full.other.log_loss if full.other else float('nan'):.5f}")
    model_only = fitted_rules(rules, full.model.params)
    ev = {name: score_replayed(rep, r, days) for name, r in
          (("fitted", full.rules), ("model_only", model_only), ("default", rules))}
    labels = {s.customer_id: s.churned for s in ev["default"].samples}
    scores = {name: {s.customer_id: s.score for s in e.samples} for name, e in ev.items()}
    base = ev["default"].aucs()
    ids = sorted(labels)
    print(f"AUC, all {len(ids)} customers ({sum(labels.values())} churned): fitted score "
          f"{_auc_of(scores['fitted'], labels, ids):.4f}, fitted purchase model with the "
          f"default weights {_auc_of(scores['model_only'], labels, ids):.4f}, default "
          f"{base['churn_score']:.4f}, recency {base['recency']:.4f}, purchase count "
          f"{base['purchase_count']:.4f}")

    # the customer split: fit on one half, score the other
    for fit_on in (True, False):
        train = {c for c in rep.states if _half(c) == fit_on}
        half = fit_replayed(rep, rules, customers=train)
        test = [c for c in ids if c not in train]
        got = {s.customer_id: s.score for s in score_replayed(rep, half.rules, days).samples}
        print(f"customer split, fit on {len(train)}, scored {len(test)}: fitted score "
              f"{_auc_of(got, labels, test):.4f}, default "
              f"{_auc_of(scores['default'], labels, test):.4f}, fitted on all "
              f"{_auc_of(scores['fitted'], labels, test):.4f}")

    xs, txs, ts, y, parts = [], [], [], [], []
    for cid in ids:
        st = rep.states[cid]
        s = purchase_summary(st, rules, cutoff)
        p = signal_strengths(st, fitted_rules(rules, chosen,
                                              value_reference=cr.value_reference_minor), cutoff)
        assert s is not None and p is not None
        xs.append(s[0])
        txs.append(s[1])
        ts.append(s[2])
        y.append(labels[cid])
        parts.append(p)
    x_, tx_, t_, y_ = np.array(xs, float), np.array(txs), np.array(ts), np.array(y)
    for penalizer in (0.0, 0.001):  # lifetimes' own remedy when its fit does not converge
        try:
            bg = BetaGeoFitter(penalizer_coef=penalizer).fit(x_, tx_, t_)
        except ConvergenceError:
            print(f"plain BG/NBD (lifetimes), penalizer {penalizer}: did not converge")
            continue
        e = bg.conditional_expected_number_of_purchases_up_to_time(days, x_, tx_, t_)
        print(f"plain BG/NBD (lifetimes), penalizer {penalizer}, expected purchases: AUC "
              f"{auc(list(-e), list(y_)):.4f}")
        break

    # oracles: fitted to the holdout itself (ceilings, not methods)
    pos, neg = int(y_.sum()), int((~y_).sum())

    def neg_auc(lp: np.ndarray) -> float:
        r, al, a, b = np.exp(lp)
        pa = p_alive(Params(r, al, a, b), x_, tx_, t_)
        q = ((al + t_) / (al + t_ + days)) ** (r + x_)
        ranks = rankdata(1 - pa * (1 - q))
        return -float((ranks[y_].sum() - pos * (pos + 1) / 2) / (pos * neg))

    best = min((minimize(neg_auc, np.log(s), method="Nelder-Mead", options={"maxiter": 400})
                for s in ((0.25, 60.0, 0.8, 2.5), full.model.params.as_tuple())),
               key=lambda r: r.fun)
    print(f"oracle: MBG/NBD purchase model with AUC-searched parameters: AUC {-best.fun:.4f}")
    names = [k for k in parts[0] if k != "purchase_model"]
    start = {"model_weight": 1.0, "bias": 0.0, **dict.fromkeys(names, 0.0)}
    wf = fit_weights([p["purchase_model"] for p in parts],
                     {k: [p[k] for p in parts] for k in names}, y_, start)
    z = [wf.values["bias"] + wf.values["model_weight"] * p["purchase_model"]
         + sum(wf.values[k] * p[k] for k in names) for p in parts]
    print(f"oracle: the score's weights fitted to the holdout's outcomes: AUC "
          f"{auc(z, list(y_)):.4f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        if sys.argv[1:2] == ["cdnow"]:
            main(*cdnow(Path(tmp)))
        else:
            main(*simulated(Path(tmp), int(sys.argv[2]) if len(sys.argv) > 2 else 5000))
