"""The churn score's AUC with fitted (``pulse fit churn``) and default purchase-model parameters,
next to the plain BG/NBD expected-purchases ranking and the baselines (README, "Fitting the
purchase model to your history").

    .venv/bin/python bench/churn_fit.py cdnow            # CDNOW, shipped with lifetimes
    .venv/bin/python bench/churn_fit.py sim 5000         # the simulator's default traffic

CDNOW: the full master file (23,570 customers who first bought in Q1 1997, purchases to
1998-06-30) converted to the replay CSV format; cutoff 1997-10-01 (39 weeks of calibration,
39 of holdout). Simulator: seed 7, first purchases over 270 days, 540 days, cutoff at day
270. Target: no purchase in the holdout. Needs the dev dependencies (lifetimes).
"""

from __future__ import annotations

import csv
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import lifetimes
import numpy as np
from lifetimes import BetaGeoFitter
from lifetimes.utils import ConvergenceError
from scipy.optimize import minimize
from scipy.stats import rankdata

from processors.churn import purchase_summary
from processors.churn_fit import Params, fit, p_alive
from processors.rules import DEFAULT_RULES, Rules
from processors.timeutil import DAY_MS
from schemas.codec import parse_when
from streams.tools.evaluate import auc, merged, read_events, replay, score_replayed, write_history
from streams.tools.fit import fitted_rules
from streams.tools.simulator import SimConfig, Simulator

DEFAULT = Params(0.25, 60.0, 0.8, 2.5)


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


def _with(rules: Rules, horizon: float, weights_off: bool = False) -> Rules:
    churn = replace(rules.churn, model=replace(rules.churn.model, horizon_days=horizon))
    if weights_off:
        churn = replace(churn, weights=replace(
            churn.weights, **{f.name: 0.0 for f in fields(churn.weights)}))
    return replace(rules, churn=churn)


def main(files: list[str], cutoff: int) -> None:
    rules = DEFAULT_RULES
    kinds = ("purchase", "ticket", "survey")
    rep = replay(merged([read_events(f, k, rules) for f, k in zip(files, kinds, strict=False)]),
                 rules, cutoff)
    assert rep.history_end is not None
    days = (rep.history_end + 1 - cutoff) / DAY_MS
    ids, xs, txs, ts = [], [], [], []
    for cid, st in rep.states.items():
        s = purchase_summary(st, rules, cutoff)
        if s:
            ids.append(cid)
            xs.append(s[0])
            txs.append(s[1])
            ts.append(s[2])
    f = fit(xs, txs, ts)
    print(f"{len(ids)} customers, holdout {days:.1f} days; fit {f.params}, "
          f"log-likelihood {f.log_likelihood:.2f}, at bound {f.at_bound}")
    for horizon in (90.0, float(round(days))):
        for off in (False, True):
            base = _with(rules, horizon, off)
            ev = score_replayed(rep, fitted_rules(base, f.params), days,
                                default_rules=fitted_rules(base, DEFAULT))
            what = "purchase model alone" if off else "whole score"
            print(f"horizon_days {horizon:g}, {what}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in ev.aucs().items() if v is not None))
    labels = {s.customer_id: s.churned for s in ev.samples}
    y = np.array([labels[c] for c in ids])
    x_, tx_, t_ = np.array(xs, float), np.array(txs), np.array(ts)
    for penalizer in (0.0, 0.001):  # lifetimes' own remedy when its fit does not converge
        try:
            bg = BetaGeoFitter(penalizer_coef=penalizer).fit(x_, tx_, t_)
        except ConvergenceError:
            print(f"plain BG/NBD (lifetimes), penalizer {penalizer}: did not converge")
            continue
        e = bg.conditional_expected_number_of_purchases_up_to_time(days, x_, tx_, t_)
        print(f"plain BG/NBD (lifetimes), penalizer {penalizer}, expected purchases: AUC "
              f"{auc(list(-e), list(y)):.4f}")
        break

    # the ceiling of the MBG/NBD form on this data: parameters searched for the holdout AUC
    # itself (an oracle, not a method)
    pos, neg = int(y.sum()), int((~y).sum())

    def neg_auc(lp: np.ndarray) -> float:
        r, al, a, b = np.exp(lp)
        pa = p_alive(Params(r, al, a, b), x_, tx_, t_)
        q = ((al + t_) / (al + t_ + days)) ** (r + x_)
        ranks = rankdata(1 - pa * (1 - q))
        return -float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))

    best = min((minimize(neg_auc, np.log(s), method="Nelder-Mead", options={"maxiter": 400})
                for s in (DEFAULT.as_tuple(), f.params.as_tuple())), key=lambda r: r.fun)
    print(f"MBG/NBD purchase model with AUC-searched parameters (oracle): AUC {-best.fun:.4f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        if sys.argv[1:2] == ["cdnow"]:
            main(*cdnow(Path(tmp)))
        else:
            main(*simulated(Path(tmp), int(sys.argv[2]) if len(sys.argv) > 2 else 5000))
