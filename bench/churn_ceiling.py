"""How far can *any* ranking built from purchase history go on CDNOW? A learned ceiling for the
churn score's AUC (issue 16, point 4), not a method the product uses.

    make bench-ceiling        # or: .venv-peers/bin/python bench/churn_ceiling.py [CDNOW_master.txt]

Reads CDNOW's master file (23,570 customers who first bought in Q1 1997; by default the copy
shipped with ``lifetimes`` in .venv), cuts at 1997-10-01 (39 weeks of calibration, 39 of
holdout) and labels each customer "no purchase in the holdout", as ``bench/churn_fit.py``
does. From the calibration only it builds every per-customer feature we could think of —
BG/NBD's (repeat days, recency, age), spend (mean, total, first order), quantity (CDs, which
the product's events do not carry), recent counts (30/60/90/180 days), gap statistics (mean,
spread, last, silence over usual gap) — and fits gradient-boosted trees (scikit-learn),
scoring each customer out of fold (5-fold cross-validation). Prints the AUC per feature set.
Needs scikit-learn (bench/peers-requirements.txt, the venv of ``make bench-peers``), not a
product dependency. Numbers, never assertions.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

CUTOFF = date(1997, 10, 1)


def _default_file() -> Path:
    """CDNOW as shipped with ``lifetimes`` (a dev dependency: in .venv, not in .venv-peers)."""
    root = Path(__file__).resolve().parent.parent
    found = sorted(root.glob(".venv/lib/python*/site-packages/lifetimes/datasets/CDNOW_master.txt"))
    if not found:
        sys.exit("bench/churn_ceiling.py: CDNOW_master.txt not found; run `make install` (it "
                 "installs lifetimes, which ships it) or pass the file's path")
    return found[0]


def features(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    days: dict[str, dict[int, list[float]]] = defaultdict(dict)  # customer -> day -> [cds, $]
    bought_later: set[str] = set()
    cut = CUTOFF.toordinal()
    with path.open() as f:
        for line in f:
            cid, day, cds, value = line.split()
            if not day.isdigit():
                continue
            d = date(int(day[:4]), int(day[4:6]), int(day[6:])).toordinal()
            if d >= cut:
                bought_later.add(cid)
                continue
            acc = days[cid].setdefault(d, [0.0, 0.0])
            acc[0] += float(cds)
            acc[1] += float(value)
    names = ["repeat_days", "age", "recency", "silence", "mean_spend", "total_spend",
             "first_spend", "cds", "mean_cds", "first_cds", "n30", "n60", "n90", "n180",
             "gap_mean", "gap_sd", "gap_last", "overdue"]
    rows, labels = [], []
    for cid, by_day in days.items():
        ds = sorted(by_day)
        spend = [by_day[d][1] for d in ds]
        cds = [by_day[d][0] for d in ds]
        gaps = np.diff(ds) if len(ds) > 1 else np.array([])
        gap_mean = float(gaps.mean()) if gaps.size else -1.0
        silence = cut - ds[-1]
        rows.append([
            len(ds) - 1, cut - ds[0], ds[-1] - ds[0], silence, float(np.mean(spend)),
            sum(spend), spend[0], sum(cds), float(np.mean(cds)), cds[0],
            *(sum(1 for d in ds if d >= cut - k) for k in (30, 60, 90, 180)),
            gap_mean, float(gaps.std(ddof=1)) if gaps.size > 1 else -1.0,
            float(gaps[-1]) if gaps.size else -1.0,
            silence / max(gap_mean, 1.0) if gaps.size else -1.0,
        ])
        labels.append(cid not in bought_later)
    return names, np.array(rows), np.array(labels)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else _default_file()
    names, x, y = features(path)
    print(f"{len(y)} customers, {y.mean():.1%} without a purchase in the holdout")
    print(f"recency alone (days of silence): AUC {roc_auc_score(y, x[:, 3]):.4f}")
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    sets = {
        "BG/NBD's inputs (repeat days, age, recency)": names[:4],
        "+ spend": names[:7],
        "+ spend, quantity": names[:10],
        "+ spend, recent counts, gaps": names[:7] + names[10:],
        "everything": names,
    }
    for label, cols in sets.items():
        idx = [names.index(c) for c in cols]
        model = HistGradientBoostingClassifier(max_iter=1500, learning_rate=0.01,
                                               max_leaf_nodes=15, random_state=0)
        p = cross_val_predict(model, x[:, idx], y, cv=folds, method="predict_proba")[:, 1]
        print(f"gradient-boosted trees, {label}: AUC {roc_auc_score(y, p):.4f} (out of fold)")


if __name__ == "__main__":
    main()
