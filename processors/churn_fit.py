"""Fitting the churn score's purchase model (MBG/NBD) to a purchase history.

Theory of operation
-------------------
The churn score's purchase model (processors/churn.py) has four population parameters,
``churn.model`` ``rate_shape`` (r), ``rate_scale_days`` (alpha), ``dropout_a`` (a) and
``dropout_b`` (b). Each customer is summarised as of a cutoff by the same three figures the
score uses: ``x`` = repeat purchase days (purchase days - 1), ``t_x`` = days from the first
to the last purchase, ``T`` = days from the first purchase to the cutoff. The MBG/NBD
likelihood of one customer (Batislam, Denizel and Filiztekin 2007, eq. 4) is closed form::

    L = G(r + x) alpha^r / G(r)  *  B(a, b + x + 1) / B(a, b)
        * [ (alpha + T)^-(r + x)  +  a / (b + x) * (alpha + t_x)^-(r + x) ]

(``G`` the gamma function, ``B`` the beta function): the first term of the bracket is
"still active at T", the second "dropped out right after the last purchase". ``fit``
maximises the sum of ``ln L`` over the customers with scipy's L-BFGS-B on the logarithms of
the parameters, inside the ranges the rules file accepts (``BOUNDS``), from a few starting
points (the best one wins): the result can always be written into a rules file.

``fit_weights`` fits the rest of the score (``z = bias + model_weight * logit(P_buy) +
sum_k w_k * s_k``, processors/churn.py) as a logistic regression: given each customer's
unweighted parts as of an earlier cutoff (``processors.churn.model.signal_strengths``) and whether
they then bought nothing for ``horizon_days``, it maximises the Bernoulli log-likelihood of
those outcomes with a weak normal prior (sd ``PRIOR_SD``) around the starting values, inside
the ranges the rules accept (``WEIGHT_BOUNDS``), by L-BFGS-B. A signal that is on for
fewer than ``MIN_ON`` customers cannot be estimated and keeps its starting weight.

``expected_repeat`` is the model's forecast of a customer's repeat purchase days in the
``t`` days after the cutoff given ``(x, t_x, T)`` (Wagner and Hoppe 2008; the calibration vs
holdout report compares it with what customers did). Everything here is pure: arrays in,
numbers out; time is in days.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

PARAMS: tuple[str, ...] = ("r", "alpha", "a", "b")
# The rules file's names of PARAMS (churn.model) and the ranges it accepts (processors/rules.py
# ChurnModel): the fit stays inside them so that its result always loads.
RULE_FIELDS: dict[str, str] = {"r": "rate_shape", "alpha": "rate_scale_days",
                               "a": "dropout_a", "b": "dropout_b"}
BOUNDS: dict[str, tuple[float, float]] = {"r": (0.01, 100.0), "alpha": (0.1, 3650.0),
                                          "a": (0.01, 100.0), "b": (0.01, 100.0)}

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Params:
    r: float
    alpha: float  # days
    a: float
    b: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.r, self.alpha, self.a, self.b)

    def as_rules(self) -> dict[str, float]:
        """``churn.model`` fields (rounded to 6 significant digits)."""
        return {RULE_FIELDS[k]: float(f"{v:.6g}") for k, v in zip(PARAMS, self.as_tuple(),
                                                                    strict=True)}


@dataclass(frozen=True)
class Fit:
    params: Params
    log_likelihood: float  # the sum over the customers at the optimum
    customers: int
    converged: bool
    at_bound: tuple[str, ...]  # parameters that ended on an edge of BOUNDS
    message: str


class FitError(ValueError):
    """The data cannot identify the model (no customers, nobody came back, ...)."""


def summaries(x: ArrayLike, t_x: ArrayLike, big_t: ArrayLike
              ) -> tuple[Floats, Floats, Floats]:
    """The three summaries as float arrays, checked: ``x >= 0``, ``0 <= t_x <= T``. (With
    ``x == 0``, ``t_x`` may be a fraction of a day: orders on the first purchase day only; the
    score sees them so too.)"""
    xs, txs, ts = (np.asarray(v, dtype=np.float64) for v in (x, t_x, big_t))
    if not xs.shape == txs.shape == ts.shape or xs.ndim != 1:
        raise ValueError("x, t_x and T must be 1-d arrays of the same length")
    if np.any(xs < 0) or np.any(txs < 0) or np.any(txs > ts):
        raise ValueError("need x >= 0 and 0 <= t_x <= T")
    return xs, txs, ts


def log_likelihood(params: Params | Sequence[float] | Floats, x: ArrayLike, t_x: ArrayLike,
                   big_t: ArrayLike) -> Floats:
    """``ln L`` of each customer (see the module doc)."""
    r, alpha, a, b = (float(v) for v in (params.as_tuple() if isinstance(params, Params)
                                         else params))
    xs, txs, ts = (np.asarray(v, dtype=np.float64) for v in (x, t_x, big_t))
    rx = r + xs
    a1 = gammaln(rx) - gammaln(r) + r * np.log(alpha)
    a2 = (gammaln(a + b) + gammaln(b + xs + 1) - gammaln(b) - gammaln(a + b + xs + 1))
    a3 = -rx * np.log(alpha + ts)
    # ln of the bracket over its first term: ln(1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x))
    a4 = np.log(a) - np.log(b + xs) + rx * (np.log(alpha + ts) - np.log(alpha + txs))
    return np.asarray(a1 + a2 + a3 + np.logaddexp(a4, 0.0), dtype=np.float64)


def _starts(xs: Floats, ts: Floats) -> list[tuple[float, float, float, float]]:
    # the project's defaults, and from the data (the mean repeat rate as r / alpha) with a
    # moderate, a near-all-or-nothing (a, b small) and a rare drop out: the likelihood can
    # have local optima on the edges of the dropout parameters
    rate = max(float(xs.sum() / max(ts.sum(), 1e-9)), 1e-6)
    alpha = min(max(1.0 / rate, 0.2), 3000.0)
    return [(0.25, 60.0, 0.8, 2.5), (1.0, alpha, 1.0, 3.0), (1.0, alpha, 0.05, 0.05),
            (1.0, alpha, 0.5, 20.0)]


def fit(x: ArrayLike, t_x: ArrayLike, big_t: ArrayLike) -> Fit:
    """Maximum-likelihood ``(r, alpha, a, b)`` for the customers' summaries."""
    xs, txs, ts = summaries(x, t_x, big_t)
    n = xs.size
    if n == 0:
        raise FitError("no customers with a purchase before the cutoff")
    if not np.any(xs > 0):
        raise FitError("no customer bought on more than one day before the cutoff: the "
                       "purchase rate cannot be estimated")
    lo = np.log([BOUNDS[k][0] for k in PARAMS])
    hi = np.log([BOUNDS[k][1] for k in PARAMS])

    def neg(logp: Floats) -> float:
        v = -float(log_likelihood(np.exp(logp), xs, txs, ts).sum()) / n
        return v if math.isfinite(v) else 1e300

    best = None
    for start in _starts(xs, ts):
        s = np.clip(np.log(start), lo, hi)
        res = minimize(neg, s, method="L-BFGS-B", bounds=list(zip(lo, hi, strict=True)),
                       options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    p = np.exp(best.x)
    edge = tuple(k for k, v, l_, h in zip(PARAMS, best.x, lo, hi, strict=True)
                 if v - l_ < 1e-6 or h - v < 1e-6)
    params = Params(*(float(v) for v in p))
    ll = float(log_likelihood(params, xs, txs, ts).sum())
    return Fit(params, ll, n, bool(best.success), edge, str(best.message))


def p_alive(params: Params, x: ArrayLike, t_x: ArrayLike, big_t: ArrayLike) -> Floats:
    """P(still active at T | x, t_x, T)."""
    r, alpha, a, b = params.as_tuple()
    xs, txs, ts = (np.asarray(v, dtype=np.float64) for v in (x, t_x, big_t))
    lod = np.log(a) - np.log(b + xs) + (r + xs) * (np.log(alpha + ts) - np.log(alpha + txs))
    return np.asarray(1.0 / (1.0 + np.exp(lod)), dtype=np.float64)


def expected_repeat(params: Params, t: float, x: ArrayLike, t_x: ArrayLike,
                    big_t: ArrayLike) -> Floats:
    """Expected repeat purchase days in ``(T, T + t]`` given ``(x, t_x, T)`` (Wagner and
    Hoppe 2008, eq. 10; ``a == 1`` is a removable singularity, nudged off)."""
    r, alpha, a, b = params.as_tuple()
    if abs(a - 1.0) < 1e-6:
        a = 1.0 + 1e-6
    xs, txs, ts = (np.asarray(v, dtype=np.float64) for v in (x, t_x, big_t))
    hyp = hyp2f1(r + xs, b + xs + 1, a + b + xs, t / (alpha + ts + t))
    body = (a + b + xs) / (a - 1) * (1 - hyp * ((alpha + ts) / (alpha + ts + t)) ** (r + xs))
    return np.asarray(body * p_alive(Params(r, alpha, a, b), xs, txs, ts), dtype=np.float64)


@dataclass(frozen=True)
class Bucket:
    label: str  # "0", "1", ..., "7+" repeat purchase days before the cutoff
    customers: int
    actual: float  # mean repeat purchase days in the holdout
    expected: float  # mean of expected_repeat


def holdout_report(params: Params, t: float, x: ArrayLike, t_x: ArrayLike, big_t: ArrayLike,
                   holdout: ArrayLike, top: int = 7) -> list[Bucket]:
    """Calibration vs holdout: per bucket of ``x`` (``0 .. top-1`` and ``top+``), the mean
    actual (``holdout``: purchase days in the ``t`` days after the cutoff) and expected repeat
    purchase days. Empty buckets are left out; the last row is "all"."""
    xs, txs, ts = (np.asarray(v, dtype=np.float64) for v in (x, t_x, big_t))
    act = np.asarray(holdout, dtype=np.float64)
    exp = expected_repeat(params, t, xs, txs, ts)
    rows = []
    for k in range(top + 1):
        sel = xs >= k if k == top else xs == k
        if sel.any():
            rows.append(Bucket(f"{k}+" if k == top else str(k), int(sel.sum()),
                               float(act[sel].mean()), float(exp[sel].mean())))
    if xs.size:
        rows.append(Bucket("all", int(xs.size), float(act.mean()), float(exp.mean())))
    return rows


# -- the score's weights ------------------------------------------------------------------

# ChurnRules.model_weight, .bias and every ChurnWeights field (processors/rules.py): the ranges
# the rules file accepts
WEIGHT_BOUNDS: dict[str, tuple[float, float]] = {"model_weight": (0.0, 10.0),
                                                 "bias": (-20.0, 20.0)}
SIGNAL_BOUNDS = (0.0, 10.0)
PRIOR_SD = 3.0  # log-odds: keeps weights of rare signals finite, negligible for common ones
MIN_ON = 30  # customers with a signal on, for its weight to be fitted


@dataclass(frozen=True)
class WeightFit:
    values: dict[str, float]  # model_weight, bias and every signal's weight (fitted or kept)
    fitted: tuple[str, ...]  # the signals whose weight was fitted (the others kept theirs)
    on: dict[str, int]  # customers with each signal on (strength != 0)
    log_loss: float  # mean per customer at the optimum (natural log)
    start_log_loss: float  # the same with the starting values
    customers: int
    churned: int  # customers who bought nothing in the period
    converged: bool
    at_bound: tuple[str, ...]  # at the top of its range (model_weight, bias: either end)
    message: str


def fit_weights(purchase: ArrayLike, signals: Mapping[str, ArrayLike], churned: ArrayLike,
                start: Mapping[str, float]) -> WeightFit:
    """``model_weight``, ``bias`` and the weights of ``signals`` (name -> strengths) for the
    outcomes ``churned`` (see the module doc); ``start`` holds every one of them (the rules'
    values): the prior's centre and what a signal on for too few customers keeps."""
    lz = np.asarray(purchase, dtype=np.float64)
    y = np.asarray(churned, dtype=np.float64)
    n = lz.size
    names = list(signals)
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in signals.items()}
    if y.shape != lz.shape or any(c.shape != lz.shape for c in cols.values()):
        raise ValueError("purchase, every signal and churned must have the same length")
    if n == 0:
        raise FitError("no customers with a purchase before the earlier cutoff")
    churners = int(y.sum())
    if churners in (0, n):
        raise FitError("every customer " + ("bought nothing" if churners else "bought again")
                       + " in the period the weights are fitted to")
    on = {k: int(np.count_nonzero(cols[k])) for k in names}
    free = [k for k in names if on[k] >= MIN_ON]
    kept = [k for k in names if k not in free]
    offset = sum((start[k] * cols[k] for k in kept), np.zeros(n))
    order = ["bias", "model_weight", *free]
    x = np.column_stack([np.ones(n), lz, *(cols[k] for k in free)])
    theta0 = np.array([start[k] for k in order], dtype=np.float64)
    bounds = [WEIGHT_BOUNDS.get(k, SIGNAL_BOUNDS) for k in order]
    prior = 1.0 / (PRIOR_SD**2 * n)

    def loss(theta: Floats) -> tuple[float, Floats]:
        z = x @ theta + offset
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow
        nll = float(np.mean(np.logaddexp(0.0, z) - y * z))
        d = theta - theta0
        return (nll + 0.5 * prior * float(d @ d),
                np.asarray(x.T @ (p - y) / n + prior * d, dtype=np.float64))

    s0 = np.clip(theta0, [b[0] for b in bounds], [b[1] for b in bounds])
    res = minimize(loss, s0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-9})
    values = dict(start)
    values.update({k: float(v) for k, v in zip(order, res.x, strict=True)})
    # a signal's weight at 0 says the signal does not help here: only the other edges warn
    edge = tuple(k for k, v, (lo, hi) in zip(order, res.x, bounds, strict=True)
                 if hi - v < 1e-6 or (k in WEIGHT_BOUNDS and v - lo < 1e-6))

    def mean_loss(theta: Floats) -> float:
        z = x @ theta + offset
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    return WeightFit(values, tuple(free), on, mean_loss(res.x), mean_loss(theta0), n, churners,
                     bool(res.success), edge, str(res.message))
